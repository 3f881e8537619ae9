"""The journal's writer: one SQLite connection, one worker thread, group commit.

Kept apart from what the journal records because its concern is how writes reach the
disk without stalling the event loop or the requests waiting on them: every statement
runs on a worker thread behind a one-slot limiter (the connection is never used by two
threads at once), writes that arrive together share one transaction, the two writes
every chunk makes are gathered into one statement per kind, and the marks a request
waits for ("on the wire") go ahead of everything else. The tasks whose writes wait send
them on their trips, each until its own is recorded, then hand that on to the next.
A write that fails breaks the writer for good: every later write raises the same
:class:`CampaignError` at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._core.errors import CampaignError
from . import sql
from .file import is_disk_full

__all__ = ["GroupWriter", "ItemsHash", "Job", "resolve_hash"]

_T = TypeVar("_T")


#: What a chunk's input hashes to, or how to compute it (on the worker thread).
ItemsHash = str | Callable[[], str]


def resolve_hash(items_hash: ItemsHash) -> str:
    return items_hash if isinstance(items_hash, str) else items_hash()


class Job(Generic[_T]):
    """One write waiting for the next group commit.

    Either a ``body`` run on the connection, or a ``row`` of one of the two writes every
    chunk makes (``kind`` "in_flight" or "accepted"), which a commit gathers into one
    statement per kind.
    """

    __slots__ = (
        "body",
        "done",
        "error",
        "finished",
        "guarded",
        "kind",
        "leads",
        "result",
        "row",
        "what",
    )

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
        # Set once its trip is over; ``done`` is also set to hand a waiting job the
        # writer (``leads``), before its own trip.
        self.finished = False
        self.leads = False
        self.result: _T | None = None
        self.error: BaseException | None = None


class GroupWriter:
    """Commits jobs on the journal's connection; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        # The worker threads' limiter for this connection: one call at a time, in order.
        self._limiter = anyio.CapacityLimiter(1)
        self._broken: CampaignError | None = None
        self._pending: list[Job[Any]] = []
        self._writing = False
        self.closed = False

    async def close(self, close_sync: Callable[[], None]) -> None:
        """Refuse further writes, then run ``close_sync`` once the thread is free."""
        self.closed = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close_sync, limiter=self._limiter)

    async def write(
        self, what: str, body: Callable[[sqlite3.Connection], _T], *, guarded: bool = True
    ) -> _T:
        """Run ``body`` in a committed transaction on the worker thread, then return."""
        return await self.run(Job(what, body, guarded=guarded))

    async def run(self, job: Job[_T]) -> _T:
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
        if self.closed:
            raise CampaignError(f"the campaign journal {self.path} is closed")
        self._pending.append(job)
        # Shielded: once queued, the write may commit whatever cancels the caller, and
        # the caller must not return (or update the mirror) before knowing which.
        with anyio.CancelScope(shield=True):
            if not self._writing:
                self._writing = True
                # Let the tasks already woken queue their writes first: a chunk's
                # outcome and the next chunk's "on the wire" mark, made a moment
                # apart, then share one trip instead of waiting one after another.
                await anyio.lowlevel.checkpoint()
                await self._drive(job)
            else:
                await job.done.wait()
                if job.leads and not job.finished:
                    await self._drive(job)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def _drive(self, job: Job[Any]) -> None:
        """Send the queued writes on their trips until ``job``'s is over, then hand the
        writer to the task of the next write waiting, if any.

        The writer is driven by the tasks whose writes it carries, one at a time, and
        each only until its own write is recorded: a task that drove it until nothing
        was left waiting held up its caller for as long as writes kept coming (at full
        speed, a chunk's outcome for a second or more, and its place among the chunks
        on their way with it).
        """
        try:
            while self._pending and not job.finished:
                batch = self._next_batch()
                try:
                    await anyio.to_thread.run_sync(self._commit, batch, limiter=self._limiter)
                except Exception as exc:  # reported to every job of the batch
                    self._break(batch, exc)
                for queued in batch:
                    queued.finished = True
                    queued.done.set()
        finally:
            if self._pending:
                heir = self._pending[0]
                heir.leads = True
                heir.done.set()
            else:
                self._writing = False

    def _next_batch(self) -> list[Job[Any]]:
        # "On the wire" marks hold a request's turn: they go first, in a trip of their
        # own (one statement, no BEGIN/COMMIT), and everything else in the next trip.
        urgent = [job for job in self._pending if job.kind == "in_flight"]
        if urgent and len(urgent) < len(self._pending) and len(urgent) <= sql.ROWS_PER_STATEMENT:
            self._pending = [job for job in self._pending if job.kind != "in_flight"]
            return urgent
        batch, self._pending = self._pending, []
        return batch

    def _commit(self, batch: list[Job[Any]]) -> None:
        conn = self._conn
        if len(batch) <= sql.ROWS_PER_STATEMENT and all(j.kind == "in_flight" for j in batch):
            # One statement is its own transaction: two statements, and two waits for
            # the GIL, fewer on the request's path.
            _apply_rows(conn, [job.row for job in batch], [])
            return
        with sql.immediate(conn):
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
                job.result, error = sql.in_savepoint(conn, job.body)
                if error is not None:
                    job.error = error
            _apply_rows(conn, wire, accepted)

    def _break(self, batch: list[Job[Any]], exc: Exception) -> None:
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
            job.finished = True
            job.done.set()
        self._pending = []

    async def read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(body, self._conn, limiter=self._limiter)


def _apply_rows(conn: sqlite3.Connection, wire: list[Any], accepted: list[Any]) -> None:
    """Write the gathered per-chunk rows, one statement per kind, and forget them."""
    if wire:
        chunks = [(index, action, p, resolve_hash(h)) for index, action, p, h in wire]
        sql.insert_chunks(conn, chunks, state="in_flight")
        wire.clear()
    if accepted:
        sql.settle_accepted(
            conn, [row for row, _ in accepted], [pair for _, pairs in accepted for pair in pairs]
        )
        accepted.clear()
