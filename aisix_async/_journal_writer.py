"""The journal's writer: one SQLite connection, one thread of its own, group commit.

Kept apart from what the journal records because its concern is how writes reach the
disk without stalling the event loop or the requests waiting on them: every statement
runs on the journal's own thread, one call at a time (the connection is never used by
two threads at once), writes that arrive together share one transaction, the two writes
every chunk makes are gathered into one statement per kind, and the marks a request
waits for ("on the wire") go ahead of everything else. A write that fails breaks
the writer for good: every later write raises the same :class:`CampaignError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from . import _journal_sql as sql
from ._errors import CampaignError
from ._journal_file import is_disk_full

__all__ = ["GroupWriter", "ItemsHash", "Job", "resolve_hash"]

_T = TypeVar("_T")


#: What a chunk's input hashes to, or how to compute it (on the worker thread).
ItemsHash = str | Callable[[], str]


def resolve_hash(items_hash: ItemsHash) -> str:
    return items_hash if isinstance(items_hash, str) else items_hash()


class Job(Generic[_T]):
    """One write waiting for the next group commit.

    Either a ``body`` run on the connection, or a ``row`` of one of the two writes every
    chunk makes (``kind`` "in_flight", a :data:`sql.InFlight` whose hash may still be
    a callable, or "accepted", a :data:`sql.Accepted`), which a commit gathers into one
    statement.
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


def _caller_from_thread() -> Callable[[Callable[[], object]], object]:
    """How another thread asks the running event loop to call something soon."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio: the only other loop anyio runs on is trio's
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class _Call:
    __slots__ = ("arg", "done", "error", "fn", "result", "wake")

    def __init__(self, fn: Callable[[Any], Any], arg: Any, wake: Callable[..., object]) -> None:
        self.fn = fn
        self.arg = arg
        self.wake = wake
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class JournalThread:
    """A thread of the journal's own that runs calls one at a time, in order.

    Not ``anyio.to_thread``: a journal makes a trip per group commit, thousands a
    minute, and the generic hop (a limiter, a cancel scope, a future, a context copy)
    cost more CPU than the SQL it carried. Here a trip is a queue put and one callback.
    Daemon, so a journal left open cannot keep the process alive; SQLite's commits are
    atomic, so dying mid-write is a crash like any other.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._caller: Callable[[Callable[[], object]], object] | None = None

    async def run(self, fn: Callable[[Any], _T], arg: Any) -> _T:
        """``fn(arg)`` on the thread; the caller shields this if it must not be cut short."""
        if self._caller is None:
            # Started by the first call, from the event loop it will answer to.
            self._caller = _caller_from_thread()
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        call = _Call(fn, arg, self._caller)
        self._calls.put(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Let the thread (if started) end once the calls queued before are done."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call.result = call.fn(call.arg)
            except BaseException as exc:  # handed to the awaiting task, raised there
                call.error = exc
            # RuntimeError: the event loop is gone, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                call.wake(call.done.set)


class GroupWriter:
    """Commits jobs on the journal's connection; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._thread = JournalThread(f"aisix-journal {path.name}")
        self._broken: CampaignError | None = None
        self._pending: list[Job[Any]] = []
        self._writing = False
        self.closed = False

    async def close(self, close_sync: Callable[[], None]) -> None:
        """Refuse further writes, run ``close_sync`` after those queued, end the thread."""
        self.closed = True
        with anyio.CancelScope(shield=True):
            try:
                await self._thread.run(lambda _: close_sync(), None)
            finally:
                self._thread.stop()

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
                        batch = self._next_batch()
                        try:
                            await self._thread.run(self._commit, batch)
                        except Exception as exc:  # reported to every job of the batch
                            self._break(batch, exc)
                        for queued in batch:
                            queued.done.set()
                finally:
                    self._writing = False
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _next_batch(self) -> list[Job[Any]]:
        # Chunk writes hold a request's turn (the mark before it) or a finished chunk's
        # hand-over (its outcome): when other writes wait too, they take a trip of their
        # own (one statement) and the others follow. Chunk writes only concern their own
        # chunk, whose earlier writes are done, so moving them ahead reorders nothing.
        rows = [job for job in self._pending if job.kind is not None]
        if rows and len(rows) < len(self._pending):
            self._pending = [job for job in self._pending if job.kind is None]
            return rows
        batch, self._pending = self._pending, []
        return batch

    def _commit(self, batch: list[Job[Any]]) -> None:
        conn = self._conn
        if all(job.kind is not None for job in batch):
            values = _chunk_write_values(batch)
            if sql.fits_one_statement(values):
                # One statement is its own transaction: no BEGIN and COMMIT, each of
                # which would hand the GIL to the busy event loop and wait to get it back.
                sql.write_chunks(conn, values)
                return
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows: list[Job[Any]] = []
            for job in batch:
                if job.kind is not None:
                    rows.append(job)
                    continue
                # Rows gathered so far go first: jobs take effect in the order they came.
                sql.write_chunks(conn, _chunk_write_values(rows))
                rows.clear()
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
            sql.write_chunks(conn, _chunk_write_values(rows))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
            job.done.set()
        self._pending = []

    async def read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._thread.run(body, self._conn)


def _chunk_write_values(jobs: list[Job[Any]]) -> list[Any]:
    in_flight = [job.row for job in jobs if job.kind == "in_flight"]
    return sql.chunk_write_rows(
        [(index, action, p, resolve_hash(h)) for index, action, p, h in in_flight],
        [job.row for job in jobs if job.kind == "accepted"],
    )
