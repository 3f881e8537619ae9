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

Every statement runs on a worker thread behind a one-slot limiter, so the event loop
never waits on the disk and the single connection is never used by two threads at once.
A write that fails (a full disk above all) breaks the journal for good: every later write
raises the same :class:`CampaignError` at once, so nothing is sent that could not be
recorded first, and nothing committed before is touched.

The file itself (format checks, schema, WAL, the process lock) is ``_journal_file``.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from . import _journal_sql as sql
from ._errors import CampaignError
from ._journal_file import decode_positions, encode_positions, is_disk_full, open_file
from ._models import MalformedRecord, Reply, StateReport

__all__ = ["ChunkResult", "ChunkRow", "ChunkState", "Journal", "Verdict"]

_T = TypeVar("_T")


class ChunkState(str, enum.Enum):
    """Where a chunk stands in the journal."""

    PLANNED = "planned"
    IN_FLIGHT = "in_flight"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"


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
    cost: Decimal = Decimal(0)
    receipts: tuple[dict[str, str], ...] = ()


@attrs.frozen
class ChunkRow:
    """The journal's light view of one chunk, mirrored in memory for summaries."""

    index: int
    size: int
    state: ChunkState
    retryable: bool = False
    units: int = 0
    cost: Decimal = Decimal(0)
    reconciled: bool = False
    error_class: str | None = None


#: What a chunk's input hashes to, or how to compute it (on the worker thread).
ItemsHash = str | Callable[[], str]


def _resolve(items_hash: ItemsHash) -> str:
    return items_hash if isinstance(items_hash, str) else items_hash()


class _Job(Generic[_T]):
    """One write waiting for the next group commit.

    Either a ``body`` run on the connection, or a ``row`` of one of the two writes every
    chunk makes (``kind`` "in_flight" or "accepted"), which a commit gathers into one
    statement per kind.
    """

    __slots__ = ("body", "done", "error", "guarded", "kind", "result", "row", "what")

    def __init__(
        self,
        what: str,
        body: Callable[[sqlite3.Connection], _T] | None = None,
        *,
        guarded: bool = True,
        kind: str | None = None,
        row: Any = None,
    ) -> None:
        self.what = what
        self.body = body
        # Guarded jobs run in a savepoint, so a body that refuses (a changed input)
        # undoes only itself; the per-chunk hot path skips the two extra statements.
        self.guarded = guarded
        self.kind = kind
        self.row = row
        self.done = anyio.Event()
        self.result: _T | None = None
        self.error: BaseException | None = None


class Journal:
    """One open campaign journal: :meth:`open` it, :meth:`aclose` it.

    Reads for summaries come from an in-memory mirror (``rows``, ``unknown``,
    ``delivery``), updated only after the transaction that changes the file committed,
    so it never shows what the file does not hold.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: IO[str]) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock
        self._limiter = anyio.CapacityLimiter(1)
        self._broken: CampaignError | None = None
        self._pending: list[_Job[Any]] = []
        self._writing = False
        self._closed = False
        #: Chunk index to its light row.
        self.rows: dict[int, ChunkRow] = {}
        #: Input position to mobile, for recipients whose fate is unknown.
        self.unknown: dict[int, str] = {}
        #: Operator code to how many delivery reports carried it.
        self.delivery: dict[str, int] = {}
        self.fingerprint: str | None = None
        self.definition: dict[str, Any] | None = None
        self.input_size: int | None = None
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
            journal = cls(Path(path), conn, lock)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    sql.recover_interrupted(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                journal._load()
            except BaseException:
                journal._close_sync()
                raise
            return journal

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

    def _load(self) -> None:
        conn = self._conn
        row = conn.execute("SELECT fingerprint, definition, input_size FROM campaign").fetchone()
        if row is not None:
            self.fingerprint, text, self.input_size = row
            self.definition = json.loads(text)
        for idx, size, state, retryable, units, cost, reconciled, error_class in conn.execute(
            "SELECT idx, size, state, retryable, units, cost, reconciled, error_class FROM chunks"
        ):
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
        self.unknown = dict(conn.execute("SELECT position, mobile FROM unknown"))
        self.unread = {
            idx: decode_positions(positions)
            for idx, positions in conn.execute(
                "SELECT idx, positions FROM chunks WHERE state='unknown' AND mobiles IS NULL"
            )
        }
        self.delivery = dict(
            conn.execute("SELECT code, count(*) FROM reports WHERE code != '' GROUP BY code")
        )

    async def aclose(self) -> None:
        """Close the connection and release the process lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            async with self._limiter:
                await anyio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        try:
            self._conn.close()
        finally:
            self._lock.close()

    # -- writing -------------------------------------------------------------------

    async def _write(
        self, what: str, body: Callable[[sqlite3.Connection], _T], *, guarded: bool = True
    ) -> _T:
        """Run ``body`` in a committed transaction on the worker thread, then return."""
        return await self._run(_Job(what, body, guarded=guarded))

    async def _run(self, job: _Job[_T]) -> _T:
        """Commit ``job`` (with whatever else is waiting) on the worker thread.

        Group commit: writes that arrive while one is on the thread wait, and the next
        trip takes them all in one transaction. Guarded bodies run in their own
        savepoint (one that refuses, e.g. a changed input, undoes only itself); the two
        writes every chunk makes are gathered into one statement per kind. Both count
        because each statement hands the GIL to a busy event loop and waits to get it
        back: at the gateway's full speed those waits, not SQLite, are the journal's cost.

        A failure of SQLite itself (a full disk above all) breaks the journal: this and
        every later write raise the same :class:`CampaignError`, as does an error raised
        by an unguarded body (a bug), which undoes the whole batch.
        """
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise CampaignError(f"the campaign journal {self.path} is closed")
        self._pending.append(job)
        # Shielded: once queued, the write may commit whatever cancels the caller, and
        # the caller must not return (or update the mirror) before knowing which.
        with anyio.CancelScope(shield=True):
            if self._writing:
                await job.done.wait()
            else:
                self._writing = True
                try:
                    # Let the tasks already woken queue their writes first: a chunk's
                    # outcome and the next chunk's "on the wire" mark, made a moment
                    # apart, then share one trip instead of waiting one after another.
                    await anyio.lowlevel.checkpoint()
                    while self._pending:
                        batch, self._pending = self._pending, []
                        try:
                            async with self._limiter:
                                await anyio.to_thread.run_sync(self._commit, batch)
                        except Exception as exc:  # reported to every job of the batch
                            self._break(batch, exc)
                        for queued in batch:
                            queued.done.set()
                finally:
                    self._writing = False
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _commit(self, batch: list[_Job[Any]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            wire: list[Any] = []
            accepted: list[Any] = []
            for job in batch:
                if job.kind == "in_flight":
                    wire.append(job.row)
                    continue
                if job.kind == "accepted":
                    accepted.append(job.row)
                    continue
                # Rows gathered so far go first: jobs take effect in the order they came.
                _apply_rows(conn, wire, accepted)
                assert job.body is not None
                if not job.guarded:
                    job.result = job.body(conn)
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.body(conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    job.error = exc
                conn.execute("RELEASE job")
            _apply_rows(conn, wire, accepted)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _break(self, batch: list[_Job[Any]], exc: Exception) -> None:
        reason = "the disk is full" if is_disk_full(exc) else f"{exc}"
        what = batch[0].what if len(batch) == 1 else f"{batch[0].what} (and {len(batch) - 1} more)"
        self._broken = CampaignError(
            f"the campaign journal {self.path} could not record {what}: {reason}. "
            "Everything recorded before is intact; the run stops rather than send "
            "what it cannot record. Fix the cause and run the campaign again to resume."
        )
        for job in batch:
            job.error = self._broken
        for job in self._pending:
            job.error = self._broken
            job.done.set()
        self._pending = []

    async def _read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        async with self._limiter:
            return await anyio.to_thread.run_sync(body, self._conn)

    async def define(self, fingerprint: str, definition: dict[str, Any]) -> None:
        """Record the campaign's definition, or refuse one that differs from the recorded."""
        if self.fingerprint is not None:
            if fingerprint != self.fingerprint:
                raise CampaignError(
                    f"the journal {self.path} records another campaign "
                    f"({_describe(self.definition)}) than the one asked for "
                    f"({_describe(definition)}); resume with the same action, content, cgid, "
                    "csid, schedule and chunk size, or use another journal file"
                )
            return
        text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
        await self._write(
            "the campaign definition", lambda conn: sql.define(conn, fingerprint, text)
        )
        self.fingerprint, self.definition = fingerprint, definition

    async def set_input_size(self, size: int) -> None:
        """Record that a run read the whole input, and how long it was."""
        if self.input_size == size:
            return
        if self.input_size is not None:
            raise CampaignError(
                f"the input now holds {size} items, but the journal {self.path} recorded "
                f"{self.input_size}: the campaign's input changed"
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
    ) -> Verdict:
        """Decide whether a planned chunk goes out.

        A chunk the journal has never seen is simply sent, and written down only when it
        goes on the wire (:meth:`mark_on_wire`): until then the gateway cannot have seen
        it, so a crash that leaves no trace of it is harmless (the next run sends it),
        and the producer planning chunks never waits for the disk. A chunk seen before
        is checked against its record (a changed input is refused) and decided in one
        transaction.
        """
        if index not in self.rows:
            self._fresh[index] = (action, positions, items_hash)
            self.rows[index] = ChunkRow(index, len(positions), ChunkState.PLANNED)
            return Verdict.SEND

        def body(conn: sqlite3.Connection) -> tuple[str, bool]:
            return sql.begin_chunk(
                conn,
                self.path,
                index,
                action,
                positions,
                mobiles,
                _resolve(items_hash),
                resend_unknown=resend_unknown,
            )

        value, listed = await self._write(f"chunk {index} before sending it", body)
        verdict = Verdict(value)
        if verdict.sends:
            self.rows[index] = ChunkRow(index, len(positions), ChunkState.PLANNED)
            self.unread.pop(index, None)
            for position in positions:
                self.unknown.pop(position, None)
        elif listed:
            self.unread.pop(index, None)
            self.unknown.update(zip(positions, mobiles, strict=True))
        return verdict

    async def mark_on_wire(self, index: int) -> None:
        """Record that chunk ``index`` is about to be written to the gateway."""
        fresh = self._fresh.pop(index, None)
        what = f"chunk {index} before its request"
        if fresh is None:
            await self._write(what, lambda conn: sql.mark_on_wire(conn, index), guarded=False)
        else:
            await self._run(_Job(what, kind="in_flight", row=(index, *fresh)))
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
            row = (index, result.attempts, result.units, str(result.cost), receipts, time.time())
            await self._run(_Job(what, kind="accepted", row=(row, [(m, index) for m in msgids])))
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
                    items_hash=_resolve(items_hash),
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

    async def record_reports(self, batch: Sequence[StateReport | MalformedRecord]) -> list[int]:
        """Store fetched reports; reconcile the unknown chunks they prove accepted.

        A report whose msgid we never learned, for a mobile of exactly one chunk whose
        answer was lost, proves that chunk's request was accepted: the gateway accepts or
        refuses a request whole. Returns the indexes of the chunks reconciled.
        """
        reconciled = await self._write(
            f"{len(batch)} delivery reports", lambda conn: sql.record_reports(conn, batch)
        )
        for item in batch:
            if isinstance(item, StateReport) and item.code:
                self.delivery[item.code] = self.delivery.get(item.code, 0) + 1
        for index, positions in reconciled.items():
            for position in positions:
                self.unknown.pop(position, None)
            row = self.rows[index]
            self.rows[index] = attrs.evolve(row, state=ChunkState.ACCEPTED, reconciled=True)
        return sorted(reconciled)

    async def record_replies(self, batch: Sequence[Reply | MalformedRecord]) -> None:
        """Store fetched replies before they are handed over."""
        await self._write(f"{len(batch)} replies", lambda conn: sql.record_replies(conn, batch))

    # -- reading back ----------------------------------------------------------------

    async def stored_reports(self) -> list[StateReport]:
        """Every delivery report recorded, in the order fetched."""
        return await self._read(sql.stored_reports)

    async def stored_replies(self) -> list[Reply]:
        """Every reply recorded, in the order fetched."""
        return await self._read(sql.stored_replies)


def _apply_rows(conn: sqlite3.Connection, wire: list[Any], accepted: list[Any]) -> None:
    """Write the gathered per-chunk rows, one statement per kind, and forget them."""
    if wire:
        now = time.time()
        sql.insert_in_flight(
            conn,
            [
                (index, action, p[0], p[-1], len(p), encode_positions(p), _resolve(h), now)
                for index, action, p, h in wire
            ],
        )
        wire.clear()
    if accepted:
        sql.settle_accepted(
            conn, [row for row, _ in accepted], [pair for _, pairs in accepted for pair in pairs]
        )
        accepted.clear()


def _describe(definition: dict[str, Any] | None) -> str:
    if not definition:
        return "nothing"
    return ", ".join(f"{key}={value!r}" for key, value in sorted(definition.items()))
