"""Reading a campaign's journal without sending anything: where it stands, its runs, a CSV.

``async with open_campaign_journal("spring-sale.db") as journal:`` needs no client and
no credentials: the journal alone says what was sent, what is unknown and what the
delivery reports said. It is opened as a send opens it (its lock, a schema-1 file
migrated), so nothing can drive the campaign while it is read; when another process
already drives it (a send, a reports follower), it is read without the lock, as
committed so far, and says so (``read_only``) rather than refusing.

A missing path is refused before anything is touched: opening a journal creates it when
missing, and an inspection must not leave an empty campaign file behind a typo.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, TextIO

import anyio
import anyio.to_thread

from .._core.errors import CampaignError
from .._core.spreadsheet import spreadsheet_safe
from . import sql
from .file import JournalInUse, journal_files, owner_only
from .journal import GATEWAY_META, CampaignRun, Journal, fingerprint
from .ledger import CampaignSummary, summarize

__all__ = ["CampaignJournal", "open_campaign_journal"]


class CampaignJournal:
    """A campaign's journal opened to read it: ``async with``, then ask it.

    Made by :func:`open_campaign_journal`. Inside the block: :attr:`definition`,
    :meth:`summary`, :meth:`runs` and :meth:`export_csv`.
    """

    #: The header of :meth:`export_csv`, one column per field of a recipient's line.
    EXPORT_COLUMNS: ClassVar[tuple[str, ...]] = sql.EXPORT_COLUMNS

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        #: True when another process held the journal, so it was opened without its lock:
        #: the figures are what that process had committed when they were read, and
        #: chunks shown in flight are on the wire.
        self.read_only = False
        #: Why it is read only (which process holds it), when it is.
        self.read_only_reason: str | None = None
        self._journal: Journal | None = None

    @staticmethod
    def files(path: str | os.PathLike[str]) -> tuple[Path, ...]:
        """The files the journal at ``path`` is made of, symlinks followed: the journal
        itself first, then the ones SQLite and the journal keep beside it (``-wal``,
        ``-shm``, ``-journal``, and the process lock ``.lock``), whether they exist now or
        not. Nothing is opened or created.

        A file your program writes must be none of them: SQLite removes its ``-wal``
        when the journal closes, and the lock is rewritten and removed, so what was
        written there is gone. Compare resolved paths (``os.path.realpath``).
        """
        return journal_files(path)

    @classmethod
    def export_would_overwrite(cls, path: str | os.PathLike[str]) -> bool:
        """Whether :meth:`export_csv` to ``path`` would replace something: True when it
        holds anything but an earlier export (a first line of :attr:`EXPORT_COLUMNS`)
        or nothing; False for a missing or empty file. Raises :class:`OSError` when the
        file cannot be read.
        """
        expected = ",".join(cls.EXPORT_COLUMNS).encode()
        try:
            with open(path, "rb") as existing:
                head = existing.readline(len(expected) + 2)
        except FileNotFoundError:
            return False
        return bool(head) and head.rstrip(b"\r\n") != expected

    def __repr__(self) -> str:
        return (
            f"<CampaignJournal {str(self.path)!r} open={self._journal is not None} "
            f"read_only={self.read_only}>"
        )

    async def __aenter__(self) -> CampaignJournal:
        if self._journal is not None:
            raise RuntimeError("a CampaignJournal can be entered only once at a time")
        if not await anyio.to_thread.run_sync(self._holds_something):
            raise CampaignError(f"{self.path}: no such campaign journal")
        try:
            self._journal = await Journal.open(self.path)
            self.read_only, self.read_only_reason = False, None
        except JournalInUse as busy:
            # A send (or a reports follower) drives it: read what it committed so far.
            self._journal = await Journal.open_read_only(self.path)
            self.read_only, self.read_only_reason = True, busy.reason
        return self

    def _holds_something(self) -> bool:
        # An empty file would be made a journal by opening it, as a missing one would.
        try:
            return self.path.is_file() and self.path.stat().st_size > 0
        except OSError:
            return False

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:
            await journal.aclose()

    def _opened(self) -> Journal:
        if self._journal is None:
            raise CampaignError("use the campaign journal inside 'async with' first")
        return self._journal

    @property
    def definition(self) -> Mapping[str, Any]:
        """What the campaign sends (action, account, content or template, cgid, csid,
        schedule, chunk size), as its first run recorded it; empty before any run."""
        return MappingProxyType(dict(self._opened().definition or {}))

    @property
    def gateway(self) -> str | None:
        """The gateway URL (its OpenApi endpoint) the campaign's last send went to;
        None when no send recorded one (journals written before this was kept)."""
        return self._opened().meta.get(GATEWAY_META)

    def summary(self) -> CampaignSummary:
        """Counts, money, delivery and the unknown, as the journal holds them now."""
        return summarize(self._opened())

    def check_definition(self, definition: Mapping[str, Any]) -> None:
        """Raise :class:`CampaignError` as a send of ``definition`` on this journal would
        (it records another campaign); nothing is written. ``definition`` is a send's
        :attr:`CampaignStream.definition`, which needs no open campaign:
        ``client.campaign(path).send_many(numbers, content).definition``."""
        wanted = dict(definition)
        self._opened().check_definition(fingerprint(wanted), wanted)

    async def take_reports_from(self, other: str | os.PathLike[str]) -> int:
        """Record the reports of this campaign that the journal at ``other`` holds as
        not its own; return how many there were.

        The gateway keeps one report queue for the account: following one campaign's
        reports while another campaign's are due takes theirs too, kept in the follower's
        journal as "not this campaign's" (the gateway hands each out once). This hands
        them to this campaign, which settles its recipients with them. ``other`` is only
        read (it may be in use); taken again, only what it fetched since is looked at.
        """
        journal = self._opened()
        if self.read_only:
            raise CampaignError(
                f"{self.path} is in use ({self.read_only_reason}): take reports into it "
                "once that process has ended"
            )
        source = Path(other)
        if not await anyio.to_thread.run_sync(source.is_file):
            raise CampaignError(f"{source}: no such campaign journal")
        held = await Journal.open_read_only(source)
        try:
            return await journal.take_reports(held)
        finally:
            await held.aclose()

    async def runs(self) -> list[CampaignRun]:
        """Every run recorded (sends, reports followers), oldest first."""
        return await self._opened().runs()

    async def export_csv(self, target: str | os.PathLike[str] | TextIO) -> int:
        """Write one CSV line per recipient the journal knows, in input order; return how
        many (the header line, :attr:`EXPORT_COLUMNS`, not counted).

        ``target`` is a path (created owner-only, 0600; an existing file only when it
        is empty or an earlier export, rewritten keeping its mode, else
        :class:`CampaignError`; UTF-8) or a text file open for
        writing (open it with ``newline=""``, as :mod:`csv` asks; it is written from a
        worker thread and left open). The lines are streamed from the journal a chunk at
        a time: a campaign of millions is never held in memory. Input no run has reached
        is not in the journal, so not in the export. A mobile, msgid or delivery code
        that a spreadsheet would run as a formula (``=...``; see
        :func:`aisix_async.validation.spreadsheet_safe`) is written after a ``'``.
        """
        journal = self._opened()
        if not isinstance(target, (str, os.PathLike)):
            return await self._write_csv(journal, target)
        handle = await anyio.to_thread.run_sync(self._create, Path(target))
        try:
            return await self._write_csv(journal, handle)
        finally:
            await anyio.to_thread.run_sync(handle.close)

    def _create(self, path: Path) -> TextIO:
        # Blocking (resolving, opening): called on a worker thread.
        own = self.files(self.path)
        found = os.path.realpath(path)
        if found == str(own[0]):
            raise CampaignError(f"{path} is the journal itself; export to another file")
        if found in map(str, own[1:]):
            # The export was written whole, then removed with the -wal as the journal
            # closed: "N recipients written" and no file (a user's trial).
            raise CampaignError(
                f"{path} is one of the files the journal keeps beside it (SQLite's, or its "
                "lock): it is removed when the journal closes; export to another file"
            )
        try:
            if self.export_would_overwrite(path):
                # Rewriting an earlier export is the usual use; anything else in the way
                # (the campaign's input, a key file) is refused: a mistyped path replaced
                # a user's 300,000-number input with the export (the command line
                # refused it).
                raise CampaignError(
                    f"{path} exists and is not an earlier export (its first line is not "
                    f"{','.join(self.EXPORT_COLUMNS)}): it would be overwritten; give "
                    "another path, or an open file to write over it on purpose"
                )
            # One line per recipient, phone numbers and all: a new file is its owner's
            # alone; an earlier export rewritten keeps the mode its owner gave it.
            return open(path, "w", encoding="utf-8", newline="", opener=owner_only)
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise CampaignError(f"cannot write the export {path}: {reason}") from None

    async def _write_csv(self, journal: Journal, handle: TextIO) -> int:
        writer = csv.writer(handle)
        await anyio.to_thread.run_sync(writer.writerow, self.EXPORT_COLUMNS)

        def write(row: Sequence[Any]) -> None:
            # The mobile (an invalid input line is kept as typed), the msgid and the
            # delivery code (the gateway's text) come from outside: a spreadsheet must
            # not run them. Position, status and time are ours.
            mobile, position, status, msgid, delivery, when = row
            writer.writerow(
                (
                    spreadsheet_safe(mobile),
                    position,
                    status,
                    spreadsheet_safe(msgid),
                    spreadsheet_safe(delivery),
                    when,
                )
            )

        return await journal.export(write)


def open_campaign_journal(path: str | os.PathLike[str]) -> CampaignJournal:
    """A campaign's journal to read, without a client: ``async with`` it to open it.

    Entering raises :class:`CampaignError` for a path that holds no journal (nothing is
    created), a file that is not one, or a damaged one. See :class:`CampaignJournal`.
    """
    return CampaignJournal(path)
