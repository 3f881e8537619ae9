"""The campaign journal: what was sent, recorded where it outlives the process sending it.

A campaign that dies half way (killed, OOM, a deploy) must be resumable without charging
anyone twice or forgetting anyone. So every chunk is written here *before* its request
goes out, and its outcome once known, each in one transaction. What a resumed run does
with a chunk follows from what survived:

* no row, or ``planned``: never sent (planned chunks were waiting for the scheduler),
  send it;
* ``in_flight``: the process died after the chunk's request was about to be written and
  before its answer was recorded, so the gateway may or may not have accepted it: it
  becomes ``unknown`` and is listed (by input position; its numbers are not copied on
  the hot path, and a run that re-reads the unchanged input writes them down);
* ``accepted``: skip; ``failed``: resend only when the failure is harmless to retry
  (nothing reached the gateway, or it refused before acting), else skip;
* ``unknown``: skip, unless the caller asks for ``resend_unknown``.

Every statement runs on a worker thread (``writer``: group commit, one
connection), so the event loop never waits on the disk. A write that fails (a full disk
above all) breaks the journal for good: every later write raises the same
:class:`CampaignError` at once, so nothing is sent that could not be recorded first, and
nothing committed before is touched.

The file itself (format checks, schema, WAL, the process lock) is ``file``; the
SQL of each transaction is ``sql``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._core.billing import NO_COST
from .._core.errors import CampaignError
from .._core.models import DeliveryReport, MalformedRecord, Reply
from . import sql
from .file import (
    is_disk_full,
    open_file,
    open_read_only,
    release_lock,
)
from .writer import GroupWriter, ItemsHash, Job, resolve_hash

__all__ = [
    "GATEWAY_META",
    "CampaignRun",
    "ChunkResult",
    "ChunkRow",
    "ChunkState",
    "FoundHere",
    "Journal",
    "Verdict",
    "fingerprint",
]

_T = TypeVar("_T")

#: The meta key of the gateway URL the campaign's last send went to (its OpenApi URL).
GATEWAY_META = "gateway"


class ChunkState(str, enum.Enum):
    """Where a chunk stands in the journal."""

    PLANNED = "planned"
    IN_FLIGHT = "in_flight"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"


#: Told by :meth:`Journal.begin_chunk` of a chunk a stopped process left on the wire,
#: found again: its state now and its (input position, mobile) pairs.
FoundHere = Callable[[ChunkState, tuple[tuple[int, str], ...]], None]


#: Reports read from another journal, and recorded, at a time (see take_reports).
_TAKEN_A_BATCH = 10_000


def _take(
    conn: sqlite3.Connection,
    *,
    batch: list[DeliveryReport],
    key: str,
    last: int,
    lookup: sql.ReportLookup,
) -> sql.Ingested:
    # The reports and how far they were taken, in one transaction: taken again after a
    # crash, none is recorded twice.
    done = sql.record_reports(conn, batch, lookup, only_mine=True)
    sql.set_meta(conn, key, str(last))
    return done


class Verdict(enum.Enum):
    """What :meth:`Journal.begin_chunk` decided for a planned chunk."""

    SEND = "send"  # never sent before
    RETRY = "retry"  # failed harmlessly before: sent again
    RESEND_UNKNOWN = "resend_unknown"  # fate unknown: resent because the caller asked
    SKIP_ACCEPTED = "skip_accepted"
    SKIP_FAILED = "skip_failed"  # failed in a way a resend would not cure
    SKIP_UNKNOWN = "skip_unknown"  # may have gone out: never resent blindly

    @property
    def sends(self) -> bool:
        """True when the chunk goes out in this run."""
        return self in (Verdict.SEND, Verdict.RETRY, Verdict.RESEND_UNKNOWN)


@attrs.frozen
class ChunkResult:
    """A chunk's settled outcome, as the journal stores it."""

    state: ChunkState
    attempts: int = 0
    error_class: str | None = None
    error_message: str | None = None
    retryable: bool = False
    units: int = 0
    cost: Decimal = NO_COST
    receipts: tuple[dict[str, str], ...] = ()


#: How many msgids of reports counted apart a journal remembers, to let a chunk recorded
#: after its reports were fetched claim them.
_FOREIGN_MSGIDS_KEPT = 100_000


@attrs.frozen
class CampaignRun:
    """One run recorded in a campaign's journal: a send, or a reports follower.

    Times are epoch seconds; ``ended_at`` is None while the run goes on, or when its
    process died before recording its end. ``pid`` is the process that ran it.
    """

    seq: int
    kind: str
    started_at: float
    ended_at: float | None
    pid: int | None


@attrs.frozen
class ChunkRow:
    """The journal's light view of one chunk, mirrored in memory for summaries."""

    index: int
    size: int
    state: ChunkState
    retryable: bool = False
    units: int = 0
    cost: Decimal = NO_COST
    reconciled: bool = False
    error_class: str | None = None


class Journal:
    """One open campaign journal: :meth:`open` it, :meth:`aclose` it.

    Reads for summaries come from an in-memory mirror (``rows``, ``unknown``,
    ``delivery``), updated only after the transaction that changes the file committed,
    so it never shows what the file does not hold.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: IO[str] | None) -> None:
        self.path = path
        self._conn = conn
        # None for a read-only view: it takes no lock, so it must release none (releasing
        # removes the sidecar file, which belongs to the process that holds it).
        self._lock = lock
        self._writer = GroupWriter(path, conn)
        #: Chunk index to its light row.
        self.rows: dict[int, ChunkRow] = {}
        #: Input position to mobile, for recipients whose fate is unknown.
        self.unknown: dict[int, str] = {}
        #: Recipients of this campaign with a final report, by operator code (upper case).
        self.delivery: dict[str, int] = {}
        #: Delivery reports recorded that are not this campaign's (kept, counted apart).
        self.foreign_reports = 0
        #: (position, mobile) of the recipients of chunks a stopped process left on the
        #: wire that reports stored before were found to prove sent, as this session
        #: re-read the input (see :func:`sql.claim_stored_reports`).
        self.claimed: list[tuple[int, str]] = []
        self._lookup = sql.ReportLookup()
        # Msgids of reports recorded in this session as not the campaign's, and where
        # this session's reports begin: a chunk recorded later claims its own (see
        # adopt_reports). Bounded: past the bound, early reports stay counted apart.
        self._foreign_msgids: dict[str, None] = {}
        self._session_seq = 0
        #: The ``meta`` table: what a run learned that the next may start from.
        self.meta: dict[str, str] = {}
        self.fingerprint: str | None = None
        self.definition: dict[str, Any] | None = None
        self.input_size: int | None = None
        #: One past the last input position of any chunk recorded: how far runs got.
        self.reached = 0
        #: Unknown chunks left in flight by a dead process, to their input positions,
        #: whose numbers come back when a run re-reads the input.
        self.unread: dict[int, tuple[int, ...]] = {}
        #: Chunks planned in this run and not yet recorded: (action, positions, hash of
        #: the items), written by mark_on_wire or settle_chunk.
        self._fresh: dict[int, tuple[str, Sequence[int], ItemsHash]] = {}

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, durable: bool = False) -> Journal:
        """Lock, open (or create) and check the journal at ``path``."""

        def run() -> Journal:
            conn, lock = open_file(Path(path), durable=durable)
            return cls._loaded(Path(path), conn, lock, prepare=sql.open_meta)

        try:
            return await anyio.to_thread.run_sync(run)
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise CampaignError(
                    f"the campaign journal {path} cannot be opened: the disk is full "
                    "(nothing recorded was lost)"
                ) from None
            raise CampaignError(
                f"{path} is damaged or not a campaign journal ({exc}); it was left untouched"
            ) from None

    @classmethod
    def _loaded(
        cls,
        path: Path,
        conn: sqlite3.Connection,
        lock: IO[str] | None,
        prepare: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Journal:
        """A journal over an open connection, its mirror loaded; closed again on failure."""
        journal = cls(path, conn, lock)
        try:
            if prepare is not None:
                prepare(conn)
            journal._load()
        except BaseException:
            journal._close_sync()
            raise
        return journal

    def _load(self) -> None:
        loaded = sql.load(self._conn)
        if loaded.campaign is not None:
            self.fingerprint, text, self.input_size = loaded.campaign
            self.definition = json.loads(text)
        for idx, size, state, retryable, units, cost, reconciled, error_class in loaded.chunks:
            self.rows[idx] = ChunkRow(
                idx,
                size,
                ChunkState(state),
                bool(retryable),
                units,
                Decimal(cost),
                bool(reconciled),
                error_class,
            )
        self.unknown = loaded.unknown
        self.unread = loaded.unread
        self._session_seq = loaded.last_seq
        tallies = loaded.tallies
        self.delivery = {
            name[len("final:") :]: n for name, n in tallies.items() if name.startswith("final:")
        }
        self.foreign_reports = tallies.get("foreign", 0)
        self.meta = loaded.meta
        self.reached = loaded.reached

    @classmethod
    async def open_read_only(cls, path: str | os.PathLike[str]) -> Journal:
        """Open a journal another process holds, to read its state as committed now.

        Nothing may be written through it; chunks shown in flight are on the wire.
        """

        def run() -> Journal:
            return cls._loaded(Path(path), open_read_only(Path(path)), None)

        try:
            return await anyio.to_thread.run_sync(run)
        except sqlite3.DatabaseError as exc:
            raise CampaignError(f"cannot read the campaign journal {path} ({exc})") from None

    async def aclose(self) -> None:
        """Close the connection and release the process lock (idempotent)."""
        if self._writer.closed:
            return
        await self._writer.close(self._close_sync)

    def _close_sync(self) -> None:
        try:
            self._conn.close()
        finally:
            if self._lock is not None:
                release_lock(self._lock)

    # -- writing -------------------------------------------------------------------

    async def _write(
        self, what: str, body: Callable[[sqlite3.Connection], _T], *, guarded: bool = True
    ) -> _T:
        return await self._writer.write(what, body, guarded=guarded)

    def check_definition(self, fingerprint: str, definition: dict[str, Any]) -> bool:
        """Refuse a definition that differs from the recorded one; writes nothing.

        True when the journal records this very definition, False when it records none
        yet. The one test :meth:`define` applies, so that a rehearsal (``aisix send
        --dry-run``) refuses exactly what the send would.
        """
        if self.fingerprint is None:
            return False
        if fingerprint != self.fingerprint:
            raise CampaignError(
                f"the journal {self.path} records another campaign "
                f"({_describe(self.definition)}) than the one asked for "
                f"({_describe(definition)}); resume with the same action, content, cgid, "
                "csid, schedule and chunk size, or use another journal file"
            )
        return True

    async def define(self, fingerprint: str, definition: dict[str, Any]) -> None:
        """Record the campaign's definition, or refuse one that differs from the recorded."""
        if self.check_definition(fingerprint, definition):
            return
        text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
        await self._write(
            "the campaign definition", lambda conn: sql.define(conn, fingerprint, text)
        )
        self.fingerprint, self.definition = fingerprint, definition

    async def set_meta(self, key: str, value: str) -> None:
        """Record ``value`` under ``key`` in the meta table (replacing what was there)."""
        if self.meta.get(key) == value:
            return

        await self._write(f"the journal's {key}", lambda conn: sql.set_meta(conn, key, value))
        self.meta[key] = value

    async def set_input_size(self, size: int) -> None:
        """Record that a run read the whole input, and how long it was."""
        if self.input_size == size:
            return
        if self.input_size is not None:
            raise CampaignError(
                f"the input now holds {size} items, but the journal {self.path} recorded "
                f"{self.input_size}: the campaign's input changed"
            )
        if self.reached > size:
            # An earlier run read further than this input goes: recorded as the whole
            # input, its size would leave the chunks beyond it never sent again and the
            # campaign never complete (nor resumable with the whole input).
            raise CampaignError(
                f"the input now ends after {size} items, but an earlier run of the journal "
                f"{self.path} read {self.reached} of them: the campaign's input changed "
                "(it is shorter); resume with the whole input"
            )
        await self._write("the input size", lambda conn: sql.set_input_size(conn, size))
        self.input_size = size

    async def begin_chunk(
        self,
        index: int,
        action: str,
        positions: Sequence[int],
        mobiles: Sequence[str],
        items_hash: ItemsHash,
        *,
        resend_unknown: bool,
        found: FoundHere | None = None,
    ) -> Verdict:
        """Decide whether a planned chunk goes out.

        A chunk the journal has never seen is simply sent, and written down only when it
        goes on the wire (:meth:`mark_on_wire`): until then the gateway cannot have seen
        it, so a crash that leaves no trace of it is harmless (the next run sends it),
        and the producer planning chunks never waits for the disk. A chunk seen before
        is checked against its record (a changed input is refused) and decided in one
        transaction.

        ``found`` is called, once that transaction has committed and the mirror shows
        it, when the chunk is one a stopped process left on the wire (in :attr:`unread`)
        and this run does not send it: with ``UNKNOWN`` and its (position, mobile) pairs
        just recorded, or ``ACCEPTED`` when stored reports proved it sent. Nothing else
        learns of them as they are found: no outcome of this run names them.
        """
        if index not in self.rows:
            if self.input_size is not None and positions[-1] >= self.input_size:
                # A run read the whole input before, and it ended short of this chunk: the
                # input grew. Refused before the chunk goes out, not when the longer input
                # has been read to its end (its extra recipients sent and charged by then).
                beyond = next(p for p in positions if p >= self.input_size)
                raise CampaignError(
                    f"the input now holds more than the {self.input_size} items the journal "
                    f"{self.path} recorded as the whole input (position {beyond} is beyond "
                    "its end): the campaign's input changed"
                )
            self._fresh[index] = (action, positions, items_hash)
            self.rows[index] = ChunkRow(index, len(positions), ChunkState.PLANNED)
            self.reached = max(self.reached, positions[-1] + 1)
            return Verdict.SEND

        def body(conn: sqlite3.Connection) -> tuple[str, bool | sql.Claimed]:
            return sql.begin_chunk(
                conn,
                self.path,
                index,
                action,
                positions,
                mobiles,
                resolve_hash(items_hash),
                resend_unknown=resend_unknown,
            )

        value, listed = await self._write(f"chunk {index} before sending it", body)
        verdict = Verdict(value)
        if isinstance(listed, sql.Claimed):
            # Reports fetched while its numbers were unknown proved it accepted.
            self.unread.pop(index, None)
            pairs = tuple(zip(positions, mobiles, strict=True))
            self.claimed.extend(pairs)
            row = self.rows[index]
            self.rows[index] = attrs.evolve(row, state=ChunkState.ACCEPTED, reconciled=True)
            self._claimed(listed)
            if found is not None:
                found(ChunkState.ACCEPTED, pairs)
        elif verdict.sends:
            self.rows[index] = ChunkRow(index, len(positions), ChunkState.PLANNED)
            self.unread.pop(index, None)
            for position in positions:
                self.unknown.pop(position, None)
        elif listed:
            self.unread.pop(index, None)
            pairs = tuple(zip(positions, mobiles, strict=True))
            self.unknown.update(pairs)
            if found is not None:
                found(ChunkState.UNKNOWN, pairs)
        return verdict

    async def mark_on_wire(self, index: int) -> None:
        """Record that chunk ``index`` is about to be written to the gateway."""
        fresh = self._fresh.pop(index, None)
        what = f"chunk {index} before its request"
        if fresh is None:
            await self._write(what, lambda conn: sql.mark_on_wire(conn, index), guarded=False)
        else:
            await self._writer.run(Job(what, kind="in_flight", row=(index, *fresh)))
        row = self.rows.get(index)
        if row is not None:
            self.rows[index] = ChunkRow(index, row.size, ChunkState.IN_FLIGHT)

    async def mark_planned(self, index: int) -> None:
        """Record that chunk ``index``'s last request provably did nothing (e.g. -1)."""
        await self._write(
            f"chunk {index} refused by the gateway", lambda conn: sql.mark_planned(conn, index)
        )
        row = self.rows.get(index)
        if row is not None and row.state is ChunkState.IN_FLIGHT:
            self.rows[index] = attrs.evolve(row, state=ChunkState.PLANNED)

    async def settle_chunk(
        self,
        index: int,
        action: str,
        positions: Sequence[int],
        mobiles: Sequence[str],
        result: ChunkResult,
    ) -> None:
        """Record a chunk's outcome with its msgids and unknown recipients, atomically.

        A chunk never begun (an input item refused before sending) is recorded here whole.
        """
        # A chunk that never went on the wire (dispatch stopped first) is recorded here,
        # with the hash that lets a resumed run check its input.
        fresh = self._fresh.pop(index, None)
        receipts = json.dumps(list(result.receipts)) if result.receipts else None
        msgids = sorted({r["msgid"] for r in result.receipts if r.get("msgid")})
        what = f"the outcome of chunk {index}"
        if fresh is None and result.state is ChunkState.ACCEPTED:
            # The common case, its chunk recorded already: one row of a shared statement.
            row = (
                index,
                result.attempts,
                result.units,
                str(result.cost),
                receipts,
                time.time(),
                mobiles,
            )
            await self._writer.run(
                Job(what, kind="accepted", row=(row, [(m, index) for m in msgids]))
            )
        else:
            items_hash: ItemsHash = "" if fresh is None else fresh[2]

            def body(conn: sqlite3.Connection) -> None:
                sql.settle_chunk(
                    conn,
                    index,
                    action,
                    positions,
                    mobiles,
                    state=result.state.value,
                    error_class=result.error_class,
                    error_message=result.error_message,
                    retryable=result.retryable,
                    attempts=result.attempts,
                    units=result.units,
                    cost=str(result.cost),
                    receipts=receipts,
                    msgids=msgids,
                    items_hash=resolve_hash(items_hash),
                )

            await self._write(what, body, guarded=False)
        self.rows[index] = ChunkRow(
            index,
            len(positions),
            result.state,
            result.retryable,
            result.units,
            result.cost,
            False,
            result.error_class,
        )
        if result.state is ChunkState.UNKNOWN:
            self.unknown.update(zip(positions, mobiles, strict=True))
        early = [m for m in msgids if m in self._foreign_msgids]
        if early and result.state is ChunkState.ACCEPTED:
            await self._adopt(index, early)

    async def _adopt(self, index: int, msgids: list[str]) -> None:
        """Claim the reports of ``msgids`` fetched before chunk ``index`` was recorded."""
        since = self._session_seq
        self._claimed(
            await self._write(
                f"reports fetched before chunk {index}'s outcome",
                lambda conn: sql.adopt_reports(conn, index, msgids, since),
            )
        )

    def _claimed(self, claimed: sql.Claimed) -> None:
        """Mirror in memory reports kept as not the campaign's that were made a chunk's."""
        self._add_finals(claimed.finals)
        self.foreign_reports -= claimed.moved

    def _add_finals(self, finals: dict[str, int]) -> None:
        for code, n in finals.items():
            self.delivery[code] = self.delivery.get(code, 0) + n

    async def record_reports(self, batch: Sequence[DeliveryReport | MalformedRecord]) -> list[int]:
        """Store fetched reports; reconcile the unknown chunks they prove accepted.

        Returns the indexes of the chunks reconciled; see :meth:`ingest_reports`.
        """
        return sorted((await self.ingest_reports(batch)).reconciled)

    async def ingest_reports(
        self, batch: Sequence[DeliveryReport | MalformedRecord]
    ) -> sql.Ingested:
        """Store fetched reports, telling the campaign's from the others, in one transaction.

        A report is the campaign's when the campaign sent its (msgid, mobile). A report
        whose msgid we never learned, for a mobile of exactly one chunk whose answer was
        lost, proves that chunk's request was accepted (the gateway accepts or refuses a
        request whole): the chunk is reconciled and the report is the campaign's. Every
        other report is kept as well and counted in :attr:`foreign_reports`. A
        recipient's first final report settles it (:attr:`delivery`, by code).
        """
        lookup = self._lookup
        done = await self._write(
            f"{len(batch)} delivery reports", lambda conn: sql.record_reports(conn, batch, lookup)
        )
        self._ingested(done)
        return done

    def _ingested(self, done: sql.Ingested) -> None:
        """Mirror in memory what a batch of reports did to the file."""
        self._add_finals(done.finals)
        self.foreign_reports += done.foreign
        if len(self._foreign_msgids) < _FOREIGN_MSGIDS_KEPT:
            self._foreign_msgids.update(dict.fromkeys(done.foreign_msgids))
        for index, positions in done.reconciled.items():
            for position in positions:
                self.unknown.pop(position, None)
            row = self.rows[index]
            self.rows[index] = attrs.evolve(row, state=ChunkState.ACCEPTED, reconciled=True)

    async def identity(self) -> str | None:
        """What tells this campaign from any other (see :func:`sql.campaign_identity`)."""
        return await self._writer.read(sql.campaign_identity)

    async def unclaimed_reports(self, after: int, limit: int) -> list[tuple[int, DeliveryReport]]:
        """Up to ``limit`` reports kept as not this campaign's, fetched after report
        ``after``, each with its place in fetch order."""
        return await self._writer.read(partial(sql.unclaimed_reports, after=after, limit=limit))

    async def take_reports(self, other: Journal) -> int:
        """Record the reports ``other`` holds as not its campaign's that are this one's.

        The gateway's report queue is the account's: a follower of one campaign takes the
        reports of every other campaign sent meanwhile on the account, and keeps them as
        not its own. This hands them over (``other`` is only read). Taken again later,
        only reports ``other`` fetched since are looked at. Returns how many were this
        campaign's.
        """
        if other.path.resolve() == self.path.resolve():
            raise CampaignError(f"{other.path} is this campaign's own journal")
        if self.unread:
            # Their numbers are not known yet, so their reports would be passed over, and
            # never looked at again (only what ``other`` fetches later is): the chunks
            # would stay unknown, and a resend would send them twice (a user's trial).
            waiting = sum(map(len, self.unread.values()))
            raise CampaignError(
                f"{waiting:,} recipients of {self.path} are known by input position only "
                "(chunks a stopped process left on the wire): resume its send first (the "
                "same aisix send --journal command), then take the reports, or theirs "
                "cannot be told apart"
            )
        identity = await other.identity()
        key = f"reports_taken:{identity or other.path.resolve()}"
        after = int(self.meta.get(key, "0"))
        lookup = self._lookup
        taken = 0
        while True:
            page = await other.unclaimed_reports(after, _TAKEN_A_BATCH)
            if not page:
                return taken
            after = page[-1][0]
            done = await self._write(
                f"{len(page)} reports taken from {other.path}",
                partial(
                    _take, batch=[report for _, report in page], key=key, last=after, lookup=lookup
                ),
            )
            self._ingested(done)
            self.meta[key] = str(after)
            taken += sum(done.mine)

    async def begin_run(self, kind: str) -> int:
        """Record that a run ("send", "reports") starts now; returns its number."""
        return await self._write(
            f"the start of a {kind} run", lambda conn: sql.begin_run(conn, kind, os.getpid())
        )

    async def end_run(self, seq: int) -> None:
        """Record that run ``seq`` ended now."""
        await self._write("the end of a run", lambda conn: sql.end_run(conn, seq))

    async def runs(self) -> list[CampaignRun]:
        """Every run recorded, oldest first."""
        found = await self._writer.read(sql.runs)
        return [
            CampaignRun(seq, kind, started, ended, pid) for seq, kind, started, ended, pid in found
        ]

    async def export(self, write: Callable[[Sequence[object]], object]) -> int:
        """Hand ``write`` one row per recipient the journal knows, in input order.

        Row: (mobile, position, status, msgid, delivery code, reported at as ISO 8601).
        Runs on the worker thread, one chunk at a time (the campaign is never held in
        memory); returns how many rows were written. See :func:`export_rows`.
        """
        return await self._writer.read(lambda conn: sql.export_rows(conn, write))

    async def record_replies(self, batch: Sequence[Reply | MalformedRecord]) -> None:
        """Store fetched replies before they are handed over."""
        await self._write(f"{len(batch)} replies", lambda conn: sql.record_replies(conn, batch))

    # -- reading back ----------------------------------------------------------------

    async def stored_reports(self) -> list[DeliveryReport]:
        """Every delivery report recorded, in the order fetched."""
        return await self._writer.read(sql.stored_reports)

    async def stored_replies(self) -> list[Reply]:
        """Every reply recorded, in the order fetched."""
        return await self._writer.read(sql.stored_replies)


def fingerprint(definition: dict[str, Any]) -> str:
    """The hash a journal keeps of a campaign's definition (its JSON, keys sorted)."""
    text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _describe(definition: dict[str, Any] | None) -> str:
    if not definition:
        return "nothing"
    return ", ".join(f"{key}={value!r}" for key, value in sorted(definition.items()))
