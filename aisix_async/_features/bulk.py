"""The send streams: many recipients in, one outcome per chunk out, as each chunk settles.

Shape, and why: a stream is an async context manager that owns an anyio task group
(like anyio's ``as_completed``), so leaving the block cancels the work in flight and no
task outlives it. Inside, one producer reads the input lazily, plans chunks
(:mod:`.._core.chunking`) and hands each to a worker; a semaphore of ``max_concurrency``
chunks between the producer and the consumer is the backpressure: while the consumer
is slow, outcomes wait, workers wait, and the input is not read. Memory is therefore
bounded by concurrency x chunk size whatever the input's length. The window is also how
far dispatch runs ahead of the reader: up to ``max_concurrency`` chunks are sent before
a single outcome is read (16,000 numbers with the defaults), and their outcomes are in
``abandoned`` if the block is left without reading them.

Every recipient ends in exactly one outcome: accepted (with receipts), failed (nothing
went out: invalid, refused, or never sent), or unknown (the answer was lost, -10, -11, a
garbled answer, HTTP 502: it may have gone out and is never resent blindly).

Stopping: -9 (balance), an account-level refusal (0, -2, -3, -5, -6, -7, -8), a -1 that
never clears, or a gateway that cannot be reached stops dispatch at once. Requests
already on the wire finish; everything not yet dispatched, including the rest of the
input (which is still read, so that every recipient gets its outcome), is reported as
failed with :class:`NotSentError`. The caller can stop dispatch the same way with
``stream.stop()`` (Ctrl-C in the command line): from then on no request leaves, retries
included; a chunk waiting for its turn or for a retry is reported as not sent at once,
and only requests already written are let finish.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from contextlib import aclosing
from datetime import datetime
from decimal import Decimal
from itertools import islice
from types import TracebackType
from typing import Protocol

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from .._core.billing import NO_COST
from .._core.chunking import (
    BatchPlanner,
    OncePlanner,
    ParamPlanner,
    PlanItem,
    PlannedChunk,
    Planner,
    RejectedItem,
)
from .._core.errors import (
    AisixError,
    CampaignError,
    ClientClosedError,
    DeadlineExceededError,
    NotSentError,
    SendStoppedError,
    TransportError,
    ValidationError,
    concerns_the_account,
)
from .._core.models import SendReceipt
from .._core.options import SendOptions
from .._core.validate import (
    MIN_SCHEDULE_LEAD,
    check_not_mapping,
    check_param_row,
    check_template,
    render_template,
)
from .._gateway import Gateway, receipts_of
from .._mechanics.scheduler import AttemptTally, in_background
from .estimate import check_affordable

__all__ = [
    "BulkStats",
    "ChunkLedger",
    "OutcomeHook",
    "OutcomeStatus",
    "SendOutcome",
    "SendStream",
    "SendSummary",
    "batch_stream",
    "once_stream",
    "param_stream",
    "refuse_partial_drain",
    "send_to_the_end",
    "summarize_outcomes",
]

logger = logging.getLogger("aisix_async")


class OutcomeStatus(enum.Enum):
    """What became of a chunk's recipients."""

    #: The gateway accepted them; ``receipts`` say what it charged.
    ACCEPTED = "accepted"
    #: Nothing went out: invalid input, a refusal, or never sent.
    FAILED = "failed"
    #: The answer was lost or ambiguous: they may have been sent (and charged).
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class SendOutcome:
    """What became of one chunk (or of one invalid recipient) of a bulk send."""

    #: The chunk's number in the call (deterministic for the same input and chunk size).
    chunk: int
    #: 0-based positions of its recipients in the input.
    positions: tuple[int, ...]
    mobiles: tuple[str, ...]
    status: OutcomeStatus
    #: sendOnce, sendBatch or sendParam; None when no request was planned (invalid input).
    action: str | None
    #: sendOnce: one receipt for all its numbers; sendBatch/sendParam: one per mobile.
    receipts: tuple[SendReceipt, ...] = ()
    error: AisixError | None = None
    #: Requests made for this chunk (0: never sent).
    attempts: int = 0

    @property
    def sent(self) -> bool:
        """Whether a request was made for this chunk (refused or not)."""
        return self.attempts > 0

    @property
    def units(self) -> int:
        """Units the gateway charged for this chunk."""
        return sum(receipt.total for receipt in self.receipts)

    @property
    def cost(self) -> Decimal:
        """Yuan charged for this chunk."""
        return sum((r.total * r.price for r in self.receipts), NO_COST)


#: ``send_all(on_outcome=...)``: called with every outcome of the send, once each.
OutcomeHook = Callable[[SendOutcome], None]


@attrs.frozen(kw_only=True)
class BulkStats:
    """A live snapshot of one bulk send, for progress displays."""

    #: Recipients with an outcome so far, and how they split.
    done: int
    accepted: int
    failed: int
    unknown: int
    #: Recipients the ledger said to skip: an earlier run's, accepted, failed for good or
    #: left unknown.
    skipped: int
    #: Requests this send made, -1 answers it got, and retries among its requests.
    requests: int
    rate_limited: int
    retries: int
    #: The client-wide concurrency limit and pace (requests/s, None: unpaced) now.
    limit: int
    pace: float | None
    #: This send's chunks on the wire or queued in the scheduler.
    in_flight: int
    #: Seconds since the send started.
    elapsed: float


@attrs.frozen(kw_only=True)
class SendSummary:
    """The end of a bulk send, for scripts: counts, money, and what needs attention."""

    accepted: int
    failed: int
    unknown: int
    units: int
    cost: Decimal
    #: Every failed and every unknown outcome (accepted ones are only counted).
    failed_outcomes: list[SendOutcome]
    unknown_outcomes: list[SendOutcome]
    elapsed: float
    stats: BulkStats

    @property
    def ok(self) -> bool:
        """True when every recipient was accepted."""
        return self.failed == 0 and self.unknown == 0


class ChunkLedger(Protocol):
    """A hook for resumable campaigns (the journal implements it).

    ``before_send`` is called for each planned chunk, in chunk order, before its first
    request; returning False skips it: no request, no outcome, no ``settle``, and its
    recipients are counted in ``BulkStats.skipped`` (they were settled in an earlier
    run). ``on_wire`` is awaited once per sent chunk, when the scheduler has given it
    its turn and right before its first request is written: only from then on may the
    gateway have seen it, so only then does a crash leave its fate unknown (a chunk
    merely queued behind the scheduler is safe to send again). ``off_wire`` is awaited
    when an attempt provably did nothing (-1, or a connection that never reached the
    gateway), so a crash while the chunk waits to be retried leaves it safe to resend
    as well. ``on_wire`` is awaited again before each retry. ``settle`` is called
    with every outcome (invalid recipients and chunks never sent included) before the
    stream yields it.
    """

    async def before_send(self, chunk: PlannedChunk) -> bool: ...

    async def on_wire(self, chunk: PlannedChunk) -> None: ...

    async def off_wire(self, chunk: PlannedChunk) -> None: ...

    async def settle(self, outcome: SendOutcome) -> None: ...


class _ChunkHooks:
    """The scheduler's dispatch hooks for one chunk: the stop switch and the ledger."""

    __slots__ = (
        "_ledger",
        "_stream",
        "chunk",
        "counted",
        "on_wire",
        "scope",
        "tally",
        "writing",
    )

    def __init__(self, stream: SendStream, chunk: PlannedChunk, ledger: ChunkLedger | None) -> None:
        self._stream = stream
        self._ledger = ledger
        self.chunk = chunk
        self.tally = AttemptTally()
        #: Whether the tally was added to the stream's counters (until then stats reads it).
        self.counted = False
        #: Cancelled by ``stop()`` while no request of the chunk is on the wire: a chunk
        #: queued for a slot, the pace or a retry's backoff must not wait for its turn
        #: only to be turned down then.
        self.scope = anyio.CancelScope()
        #: Whether a request for the chunk may have been written (and not provably refused):
        #: what its fate is if the stream is abandoned now.
        self.on_wire = False
        #: Whether the HTTP stack began writing the current attempt's request. While it
        #: has not (the request waits for a connection, or one is being made), an attempt
        #: cut off is known not to have reached the gateway, where the stack reports it
        #: (``Gateway.reports_writing``).
        self.writing = False

    async def before_dispatch(self) -> None:
        if self._stream.stopped_by is not None:
            raise _Stopped
        ledger = self._ledger
        if ledger is not None:
            # Recorded in our slot, right before the request is written: a crash before
            # this leaves the chunk "planned" (safely resent), one after it "in flight"
            # (unknown, never resent blindly).
            await ledger.on_wire(self.chunk)
        self.writing = False
        self.on_wire = True

    def began_writing(self) -> None:
        self.writing = True

    async def refused(self) -> None:
        self.on_wire = False
        ledger = self._ledger
        if ledger is not None:
            await ledger.off_wire(self.chunk)
        if self._stream.stopped_by is not None:
            # Dispatch stopped while this attempt was out: no retry may leave.
            raise _Stopped


class _Stopped(Exception):
    """Raised in place of a dispatch once the stream has stopped."""


# The cause of NotSentError for a chunk the stream took on and never dispatched, because
# its block was left early. One instance serves every such chunk: it carries no state.
_ABANDONED = AisixError("the send ended before this chunk's turn came")
# ... and for one whose turn had come, but whose request was cut off before a byte of it
# was written (it waited for a connection, or its connection was being made).
_CUT_BEFORE_WRITING = AisixError("the send ended before this chunk's request was written")


class _Counters:
    __slots__ = (
        "accepted",
        "failed",
        "in_flight",
        "rate_limited",
        "requests",
        "retries",
        "skipped",
        "unknown",
    )

    def __init__(self) -> None:
        self.accepted = self.failed = self.unknown = self.skipped = 0
        self.requests = self.rate_limited = self.retries = self.in_flight = 0


class SendStream:
    """``async with`` it, then ``async for outcome in it``; ``stats()`` is a live snapshot.

    Entering it starts sending: up to the client's ``max_concurrency`` chunks (16 sendOnce
    chunks of 1000 numbers by default) go out before the first outcome is read, and the
    next chunk only as an outcome is read. A block left without reading them has their
    outcomes in :attr:`abandoned`.
    """

    def __init__(
        self,
        gateway: Gateway,
        planner: Planner,
        source: Iterable[object] | AsyncIterable[object],
        *,
        cgid: int | None,
        csid: int | None,
        at: datetime | None,
        estimate: Iterable[tuple[str, int]] | None,
        check_balance: bool,
        ledger: ChunkLedger | None,
        deadline: float | None = None,
    ) -> None:
        self._gateway = gateway
        self._planner = planner
        self._source = source
        # Checked now, not at the first request (that would fail inside the stream's task
        # group); kept as a time too: a run that outlasts it stops (see _dispatch).
        self._cgid, self._csid, self._at = cgid, csid, gateway.schedule(at)
        self._at_time = at
        self._estimate = estimate
        self._check_balance = check_balance
        self._ledger = ledger
        #: Seconds from entering after which dispatch stops (SendOptions.deadline), and
        #: when that is on anyio's clock once entered.
        self._deadline = deadline
        self._stop_at = math.inf
        self._count = _Counters()
        self._stop: AisixError | None = None
        self._failure: BaseException | None = None
        self._started = time.monotonic()
        self._group: TaskGroup | None = None
        self._entered = False
        # Chunks between the producer and the consumer: the backpressure of the design.
        self._window = anyio.Semaphore(gateway.scheduler.max_concurrency)
        # Chunks planned and not settled yet, and outcomes not handed over yet: what the
        # stream owes its caller if the block is left early.
        self._open: dict[int, _ChunkHooks] = {}
        self._handed: dict[int, SendOutcome] = {}
        # Whether an outcome was handed out: drain() then could not summarise the send.
        self._iterated = False
        #: Outcomes of the chunks this stream had taken on but did not hand over, because
        #: its block was left early (``break``, an exception, a cancellation); set on exit.
        self.abandoned: list[SendOutcome] = []

    # -- the context manager -------------------------------------------------------

    async def __aenter__(self) -> SendStream:
        if self._entered:
            raise RuntimeError("a send stream can be entered only once")
        self._entered = True
        # Counted from here, as the deadline is: the balance check is part of the time the
        # send took (started after it, a send whose check queued 8 s behind other calls
        # said it took 0.001 s).
        self._started = time.monotonic()
        if self._deadline is not None:
            # Counted from here: the balance check is part of the time the caller gave.
            self._stop_at = anyio.current_time() + self._deadline
        if self._check_balance:
            await self._check_affordable_in_time()
        # Created only now: a stream never entered, or refused by the balance check, has
        # nothing to close.
        self._send, self._receive = anyio.create_memory_object_stream[SendOutcome]()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._produce)
        if self._stop_at != math.inf and self._stop is None:
            group.start_soon(self._stop_at_deadline)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group = self._group
        assert group is not None
        # Leaving early (break, an error in the body) ends the work in flight; after a full
        # iteration there is nothing left to cancel.
        group.cancel_scope.cancel()
        self._receive.close()
        try:
            # The body's own exception is not handed to the task group, which would wrap
            # it in an exception group: an error raised in the loop reaches the caller as
            # it was.
            await group.__aexit__(None, None, None)
        finally:
            self.abandoned = self._abandon()
        return None

    def _abandon(self) -> list[SendOutcome]:
        """The outcomes owed to the caller once the work is stopped: none after a full run.

        A chunk whose request may have been written is unknown (it may have been accepted
        and charged); one that never got that far was not sent. That includes a chunk
        whose turn had come but whose request the HTTP stack had not begun to write, where
        it reports that (see ``Gateway.reports_writing``): waiting for a connection, or
        making one, when it was cut off. (A user's trial, with an event loop stalled by a
        write to a full stdout: 200 recipients the gateway never saw were called unknown.)
        """
        owed = list(self._handed.values())
        reported = self._gateway.reports_writing
        for hooks in self._open.values():
            chunk, count = hooks.chunk, self._count
            cause = _ABANDONED
            if hooks.on_wire and not hooks.writing and reported:
                # Its last attempt never left: not a request made (nor a retry).
                hooks.on_wire = False
                hooks.tally.attempts -= 1
                if hooks.counted:  # counted as its call was cut off
                    count.requests -= 1
                    count.retries -= 1 if hooks.tally.attempts else 0
                cause = _CUT_BEFORE_WRITING
            if not hooks.counted:
                # Their attempts, counted live while open (see stats), stay counted.
                hooks.counted = True
                count.requests += hooks.tally.attempts
                count.rate_limited += hooks.tally.rate_limited
                count.retries += max(0, hooks.tally.attempts - 1)
            if hooks.on_wire:
                count.unknown += chunk.size
                error: AisixError = TransportError(
                    f"{chunk.action}: the send was abandoned while its request was on the "
                    "wire; the gateway may have acted on it",
                    request_sent=True,
                    outcome_unknown=True,
                )
                outcome = self._outcome(
                    chunk, OutcomeStatus.UNKNOWN, error=error, attempts=hooks.tally.attempts
                )
            else:
                count.failed += chunk.size
                outcome = self._not_sent(chunk, hooks.tally.attempts, cause)
            owed.append(outcome)
        self._open.clear()
        self._handed.clear()
        return sorted(owed, key=lambda outcome: outcome.chunk)

    async def _check_affordable_in_time(self) -> None:
        try:
            with anyio.CancelScope(deadline=self._stop_at):
                await self._check_affordable()
                return
        except DeadlineExceededError:
            # The stream gives these calls no deadline of their own: the one that passed
            # is the stream's, or an enclosing scope's, which is then cancelled. A stream
            # hears that cancellation (a move_on_after around it ends quietly, as it does
            # once sending began), not a single call's error.
            await anyio.lowlevel.checkpoint()
            if anyio.current_time() < self._stop_at:
                raise
        # The stream's own deadline passed before the check was done: nothing is sent,
        # and every recipient is reported not sent, as after a stop().
        self._stop_with(self._deadline_error("before the balance check was done"))

    def _deadline_error(self, when: str) -> SendStoppedError:
        return SendStoppedError(f"the send's deadline ({self._deadline:g} s) passed {when}")

    async def _stop_at_deadline(self) -> None:
        await anyio.sleep_until(self._stop_at)
        self._stop_with(self._deadline_error("while it was sending"))

    async def _check_affordable(self) -> None:
        if self._estimate is None:
            logger.info(
                "the input has no length: no balance check before sending; a -9 will "
                "stop the send and report every unsent recipient"
            )
            return
        await check_affordable(self._gateway, self._estimate, cgid=self._cgid, csid=self._csid)

    # -- iteration -----------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[SendOutcome]:
        return self

    async def __anext__(self) -> SendOutcome:
        if self._group is None:
            raise RuntimeError("use the stream in 'async with' before iterating it")
        try:
            outcome = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure from None
            raise StopAsyncIteration from None
        del self._handed[outcome.chunk]
        self._iterated = True
        return outcome

    def stats(self) -> BulkStats:
        """A frozen snapshot of this send, live: call it as often as you like."""
        count = self._count
        scheduler = self._gateway.scheduler
        # Chunks still being sent count their attempts so far: during a -1 storm a chunk
        # is retried for seconds, and figures that wait for it to settle would read 0.
        requests, rate_limited, retries = count.requests, count.rate_limited, count.retries
        for hooks in self._open.values():
            if hooks.counted:
                continue
            tally = hooks.tally
            requests += tally.attempts
            rate_limited += tally.rate_limited
            retries += max(0, tally.attempts - 1)
        return BulkStats(
            done=count.accepted + count.failed + count.unknown,
            accepted=count.accepted,
            failed=count.failed,
            unknown=count.unknown,
            skipped=count.skipped,
            requests=requests,
            rate_limited=rate_limited,
            retries=retries,
            limit=scheduler.limit,
            pace=scheduler.pace,
            in_flight=count.in_flight,
            elapsed=time.monotonic() - self._started,
        )

    @property
    def stopped_by(self) -> AisixError | None:
        """The error that stopped dispatch, if one did (a SendStoppedError after ``stop()``)."""
        return self._stop

    def stop(self, reason: str = "its caller stopped it") -> None:
        """Stop dispatch now; the requests already written finish and are reported.

        From this call on no request of this stream leaves, retries included. Chunks
        waiting for their turn (a concurrency slot, the pace, a retry's backoff) are
        reported at once as failed with :class:`NotSentError` (its ``cause`` a
        :class:`SendStoppedError`): nothing of them reached the gateway, so they are safe
        to send again. Keep iterating to collect the outcomes of the requests on the
        wire; the rest of the input is still read and reported as not sent, as after a
        -9. Or leave the block once ``stats.in_flight`` is 0: nothing is in doubt then,
        and the chunks not handed over yet are in ``abandoned``. Safe to call more than
        once, and from any task of the stream's event loop (a signal handler, a timeout).
        """
        self._stop_with(SendStoppedError(reason))

    def _stop_with(self, error: SendStoppedError) -> None:
        if self._stop is None:
            # Asked for by the caller (stop(), or the deadline it gave): not a warning.
            logger.info("bulk send: stopping dispatch: %s", error.message)
            self._stop = error
        for hooks in self._open.values():
            if not hooks.on_wire:
                hooks.scope.cancel()

    async def drain(self) -> SendSummary:
        """Iterate to the end and summarise (what ``send_all`` does), instead of iterating.

        Raises RuntimeError once outcomes were read: the summary would leave them out.
        """
        refuse_partial_drain(self._iterated)
        return await summarize_outcomes(self, self.stats)

    # -- the producer --------------------------------------------------------------

    async def _items(self) -> AsyncGenerator[PlanItem, None]:
        planner, source = self._planner, self._source
        if isinstance(source, AsyncIterable):
            async for item in source:
                for planned in planner.feed(item):
                    yield planned
        else:
            # Read in slices of one chunk: as lazy as item by item for memory, and lets
            # the planner check a slice of numbers at once.
            iterator, feed_many, size = iter(source), planner.feed_many, planner.chunk_size
            while True:
                batch: list[object] = []
                try:
                    batch.extend(islice(iterator, size))
                finally:
                    # Items read before the input failed are planned as if read one by one.
                    for planned in feed_many(batch):
                        yield planned
                if not batch:
                    break
        for planned in planner.finish():
            yield planned

    async def _produce(self) -> None:
        # Its chunks (in tasks started here, which inherit it) yield their place in the
        # client's queues to callers waiting for one answer (a web handler's).
        with in_background():
            await self._produce_chunks()

    async def _produce_chunks(self) -> None:
        async with self._send, anyio.create_task_group() as workers:
            try:
                async with aclosing(self._items()) as items:
                    async for item in items:
                        await self._dispatch(item, workers)
            except Exception as exc:
                # The input (or the ledger) failed: read nothing more. The chunks already
                # planned were read whole and are still sent; once they settle, the
                # consumer's iteration raises this error.
                self._failure = exc

    async def _dispatch(self, item: PlanItem, workers: TaskGroup) -> None:
        if isinstance(item, RejectedItem):
            await self._emit(
                SendOutcome(
                    chunk=item.index,
                    positions=(item.position,),
                    mobiles=(item.mobile,),
                    status=OutcomeStatus.FAILED,
                    action=None,
                    error=item.error,
                )
            )
            return
        if self._stop is None and self._at_time is not None:
            self._check_schedule(self._at_time)
        if self._stop is not None:
            await self._emit(self._not_sent(item, 0))
            return
        if self._ledger is not None and not await self._ledger.before_send(item):
            self._count.skipped += item.size
            return
        hooks = self._open[item.index] = _ChunkHooks(self, item, self._ledger)
        await self._window.acquire()
        workers.start_soon(self._work, hooks)

    async def _work(self, hooks: _ChunkHooks) -> None:
        try:
            self._count.in_flight += 1
            try:
                outcome: SendOutcome | None = None
                with hooks.scope:
                    outcome = await self._send_chunk(hooks)
                if outcome is None:
                    # stop() cancelled it while none of its requests was on the wire.
                    outcome = self._not_sent(hooks.chunk, hooks.tally.attempts)
            finally:
                self._count.in_flight -= 1
            del self._open[outcome.chunk]
            await self._emit(outcome)
        finally:
            self._window.release()

    async def _send_chunk(self, hooks: _ChunkHooks) -> SendOutcome:
        chunk, tally = hooks.chunk, hooks.tally
        fields = chunk.fields(cgid=self._cgid, csid=self._csid, at=self._at)
        try:
            try:
                answer = await self._gateway.call(
                    chunk.action, fields, tally=tally, hooks=hooks, on_writing=hooks.began_writing
                )
                receipts = receipts_of(answer, 1 if chunk.action == "sendOnce" else chunk.size)
            finally:
                count = self._count
                hooks.counted = True
                count.requests += tally.attempts
                count.rate_limited += tally.rate_limited
                count.retries += max(0, tally.attempts - 1)
        except _Stopped:
            return self._not_sent(chunk, tally.attempts)
        except AisixError as exc:
            if isinstance(exc, CampaignError) and not hooks.on_wire:
                # The ledger could not record that the request goes out, so it did not
                # (see before_dispatch); any earlier attempt was refused for certain, or
                # it would not have been tried again. Not sent, not "failed": a user's
                # trial counted a chunk stopped by a full disk among the refusals.
                return self._not_sent(chunk, tally.attempts, exc)
            if isinstance(exc, ClientClosedError):
                # A closed client sends nothing more: the rest is not sent, at once, not
                # refused chunk by chunk; and this chunk is not sent either, said as the
                # rest is (it was a bare ClientClosedError beside the rest's NotSentError).
                self._halt(exc)
                return self._not_sent(chunk, tally.attempts, exc)
            if exc.outcome_unknown:
                status = OutcomeStatus.UNKNOWN
            else:
                status = OutcomeStatus.FAILED
                if concerns_the_account(exc):
                    self._halt(exc)
            return self._outcome(chunk, status, error=exc, attempts=tally.attempts)
        return self._outcome(
            chunk, OutcomeStatus.ACCEPTED, receipts=tuple(receipts), attempts=tally.attempts
        )

    def _check_schedule(self, at: datetime) -> None:
        # The gateway refuses a schedule less than a minute ahead (-4): a run that outlasts
        # its own schedule sent every later chunk to be refused and counted failed for
        # good, and a campaign journal called itself complete (a user's trial). It stops
        # instead: the rest is not sent.
        if at - self._gateway.now() < MIN_SCHEDULE_LEAD:
            self._halt(
                SendStoppedError(
                    f"the scheduled time ({at.isoformat()}) is less than a minute away: the "
                    "gateway would refuse the rest of the send (-4)"
                )
            )

    def _halt(self, error: AisixError) -> None:
        if self._stop is None:
            logger.warning("bulk send: stopping dispatch: %s", error.message)
            self._stop = error

    def _outcome(
        self,
        chunk: PlannedChunk,
        status: OutcomeStatus,
        *,
        receipts: tuple[SendReceipt, ...] = (),
        error: AisixError | None = None,
        attempts: int = 0,
    ) -> SendOutcome:
        return SendOutcome(
            chunk=chunk.index,
            positions=chunk.positions,
            mobiles=chunk.mobiles,
            status=status,
            action=chunk.action,
            receipts=receipts,
            error=error,
            attempts=attempts,
        )

    def _not_sent(
        self, chunk: PlannedChunk, attempts: int, cause: AisixError | None = None
    ) -> SendOutcome:
        cause = cause or self._stop
        assert cause is not None
        return self._outcome(
            chunk, OutcomeStatus.FAILED, error=NotSentError(cause), attempts=attempts
        )

    async def _emit(self, outcome: SendOutcome) -> None:
        self._handed[outcome.chunk] = outcome
        count = self._count
        size = len(outcome.mobiles)
        if outcome.status is OutcomeStatus.ACCEPTED:
            count.accepted += size
        elif outcome.status is OutcomeStatus.FAILED:
            count.failed += size
        else:
            count.unknown += size
        if self._ledger is not None:
            await self._ledger.settle(outcome)
        await self._send.send(outcome)


def refuse_partial_drain(iterated: bool) -> None:
    if iterated:
        raise RuntimeError(
            "drain() summarises a whole send: call it instead of iterating the stream, "
            "not after reading outcomes (count what you read, or read stats())"
        )


async def summarize_outcomes(
    outcomes: AsyncIterable[SendOutcome],
    stats: Callable[[], BulkStats],
    on_outcome: OutcomeHook | None = None,
) -> SendSummary:
    """Iterate ``outcomes`` to the end and summarise them (``drain()`` of both streams),
    passing each to ``on_outcome`` first, if given."""
    accepted = failed = unknown = units = 0
    cost = NO_COST
    failures: list[SendOutcome] = []
    unknowns: list[SendOutcome] = []
    async for outcome in outcomes:
        # Nothing awaited between the outcome's arrival and the hook: a cancellation
        # cannot land between them, so an outcome the stream handed over has been passed.
        if on_outcome is not None:
            on_outcome(outcome)
        size = len(outcome.mobiles)
        if outcome.status is OutcomeStatus.ACCEPTED:
            accepted += size
            units += outcome.units
            cost += outcome.cost
        elif outcome.status is OutcomeStatus.FAILED:
            failed += size
            failures.append(outcome)
        else:
            unknown += size
            unknowns.append(outcome)
    final = stats()
    return SendSummary(
        accepted=accepted,
        failed=failed,
        unknown=unknown,
        units=units,
        cost=cost,
        failed_outcomes=failures,
        unknown_outcomes=unknowns,
        elapsed=final.elapsed,
        stats=final,
    )


async def send_to_the_end(stream: SendStream, on_outcome: OutcomeHook | None) -> SendSummary:
    """``send_all``: enter ``stream``, drain it and summarise; every outcome to ``on_outcome``.

    When the send ends early (a cancellation, its input's error), the outcomes it owed
    (``stream.abandoned``: on the wire, settled and not handed over, never sent) are passed
    to ``on_outcome`` too, before the exception goes on: the hook has then seen every
    recipient the send took on, and the input's others were never read, so never sent.
    A hook that raises ends the send with its error and is not called again.
    """
    if on_outcome is not None and not callable(on_outcome):
        raise ValidationError(
            f"on_outcome must be a function (or None), got {type(on_outcome).__name__}"
        )
    hook_failed = False

    def passing(outcome: SendOutcome) -> None:
        nonlocal hook_failed
        assert on_outcome is not None
        try:
            on_outcome(outcome)
        except BaseException:
            hook_failed = True
            raise

    try:
        async with stream:
            return await summarize_outcomes(
                stream, stream.stats, None if on_outcome is None else passing
            )
    finally:
        # Only after an early end does the stream owe outcomes (after a full run
        # abandoned is empty). Called synchronously: a cancellation cannot cut it short.
        if on_outcome is not None and not hook_failed:
            for outcome in stream.abandoned:
                on_outcome(outcome)


# -- building streams (what the client's send_*_many methods delegate to) ----------------


def _check_source(source: object, what: str) -> None:
    if isinstance(source, (str, bytes)):
        # A bare string would be read character by character.
        raise ValidationError(f"{what} must be an iterable of items, not one string")
    if not isinstance(source, (Iterable, AsyncIterable)):
        raise ValidationError(f"{what} must be an iterable or an async iterable")
    check_not_mapping(source, what)


def _stream(
    gateway: Gateway,
    planner: Planner,
    source: Iterable[object] | AsyncIterable[object],
    estimate: Iterable[tuple[str, int]] | None,
    sized: bool,
    options: SendOptions,
    ledger: ChunkLedger | None,
) -> SendStream:
    # Here, not at the first request: that one would fail inside the stream's task group.
    gateway.check_open()
    cgid, csid = gateway.targets(options.cgid, options.csid)
    return SendStream(
        gateway,
        planner,
        source,
        cgid=cgid,
        csid=csid,
        at=options.at,
        estimate=estimate,
        # An empty sized input needs no balance check (nor a request to make one).
        check_balance=options.check_balance and (estimate is not None or not sized),
        ledger=ledger,
        deadline=options.deadline,
    )


def once_stream(
    gateway: Gateway,
    numbers: Iterable[str] | AsyncIterable[str],
    content: str,
    options: SendOptions,
    ledger: ChunkLedger | None = None,
) -> SendStream:
    """The stream of ``send_many``; content and options are checked here, before sending."""
    _check_source(numbers, "numbers")
    # Refused here, not chunk by chunk (see Gateway.refuse_own_key).
    gateway.refuse_own_key("sendOnce", [content] if isinstance(content, str) else [])
    # A campaign's journal names a recipient by (chunk, number): no number twice in one.
    planner = OncePlanner(
        content,
        options.chunk_size_for("sendOnce"),
        numbering=gateway.numbers,
        distinct=ledger is not None,
    )
    sized = isinstance(numbers, Sized) and not isinstance(numbers, AsyncIterable)
    count = len(numbers) if sized else 0  # type: ignore[arg-type]
    estimate = [(content, count)] if count else None
    return _stream(gateway, planner, numbers, estimate, sized, options, ledger)


def _batch_texts(pairs: Sequence[object]) -> Iterator[tuple[str, int]]:
    # An estimate, not a check: items that will be refused are left out of it.
    for pair in pairs:
        if isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], str):
            yield pair[1], 1


def _param_texts(template: str, count: int, rows: Sequence[object]) -> Iterator[tuple[str, int]]:
    for index, row in enumerate(rows):
        try:
            _, values = check_param_row(template, count, row, index)
        except ValidationError:
            continue
        yield render_template(template, values), 1


def batch_stream(
    gateway: Gateway,
    pairs: Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]],
    options: SendOptions,
    ledger: ChunkLedger | None = None,
) -> SendStream:
    """The stream of ``send_batch_many``."""
    _check_source(pairs, "pairs")
    planner = BatchPlanner(
        options.chunk_size_for("sendBatch"), numbering=gateway.numbers, distinct=ledger is not None
    )
    sized = isinstance(pairs, Sequence)
    estimate = _batch_texts(pairs) if sized and len(pairs) else None  # type: ignore[arg-type]
    return _stream(gateway, planner, pairs, estimate, sized, options, ledger)


def param_stream(
    gateway: Gateway,
    template: str,
    rows: Iterable[tuple[str, Sequence[str]]] | AsyncIterable[tuple[str, Sequence[str]]],
    options: SendOptions,
    ledger: ChunkLedger | None = None,
) -> SendStream:
    """The stream of ``send_param_many``; the template is checked here, before sending."""
    _check_source(rows, "rows")
    gateway.refuse_own_key("sendParam", [template] if isinstance(template, str) else [])
    planner = ParamPlanner(
        template,
        options.chunk_size_for("sendParam"),
        numbering=gateway.numbers,
        distinct=ledger is not None,
    )
    text, count = check_template(template)
    sized = isinstance(rows, Sequence)
    estimate = _param_texts(text, count, rows) if sized and len(rows) else None  # type: ignore[arg-type]
    return _stream(gateway, planner, rows, estimate, sized, options, ledger)
