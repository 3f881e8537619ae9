"""Report and reply streams: getSendState and getReply polled as queues, nothing lost.

The gateway hands each delivery report and each reply out exactly once (PROTOCOL-NOTES):
a record the SDK fetched and then dropped is gone for good. Everything here follows from
that:

* A fetched batch is parsed item by item. An item that does not parse becomes a
  :class:`MalformedRecord` (logged at WARNING with its raw attributes, counted, kept in
  ``stream.malformed``) and the rest of its batch is delivered as usual.
* A fetched batch is held by the stream from the moment its answer arrives, then moves
  to the stream's buffer, from which the consumer takes records. Leaving the ``async
  with`` block early (``break``, an error, a cancelled ``tracker.wait``) therefore leaves
  whatever was fetched but not yet yielded in ``stream.unread()`` (a held batch is
  parsed there).
* Closing the stream does not cancel a poll that is on the wire: its answer may already
  hold records the gateway will never send again. The poll gets ``close_grace`` seconds
  to finish, and its records go to ``unread()``, through the batch hook like every other
  batch: a campaign journals them even when a cancellation (a ``move_on_after``,
  Ctrl-C) closed the stream.
* A poll's answer is read only as far as its result code before the next poll may go
  out. Its items (the rest of the XML) are read, parsed into records and handed to the
  batch hook (``on_batch``, a campaign's journal write, if there is one) by a task of
  its own, once the next poll is written (or the poller stops short of writing one:
  it sleeps, waits for room, failed, or ends), so that none of it holds up fetching
  the next batch and all of it overlaps the gateway's time to prepare it: the reports
  come as fast as the gateway hands them out. Batches are still read and hooks run one
  at a time, in fetch order, and a batch is released to the reader only once its hook
  returned (``unread()`` reads a batch no task took yet). When a hook fails, the poll
  already on the wire is the last: its batch (at most one) is fetched, so it is handed
  to the reader too, unrecorded and logged as such, and the stream then ends with the
  hook's error.
* A poll whose answer is lost or garbled after the request was written is not retried
  by the client (see ``QUEUE_ACTIONS``): its records, if any, are gone, and a retry
  would only hide that. It is logged at ERROR and counted, and the stream goes on.
* An answer whose items turn out garbled (malformed or forbidden XML after a good
  result code) is what a garbled answer always was: a failed poll whose records are
  lost (the gateway will not send them again). It is logged at ERROR, counted in
  ``stats().errors``, its hook is not called, and the stream goes on, after the backoff
  a failed poll waits (counted from when it is found, one poll later than an answer
  garbled before its result code, since the next poll was out by then).

The poller is a task in the stream's own task group (the stream is an async context
manager, like anyio's ``as_completed``), so it cannot outlive the block. Its polls go
through ``Gateway.call``, hence through the client's scheduler like every other request.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Generic, TypeVar, cast

import anyio
import attrs
from anyio.abc import TaskGroup

from .._core.errors import (
    AisixError,
    EndpointError,
    ProtocolError,
    RateLimitedError,
    TransportError,
    ValidationError,
    ends_polling,
)
from .._core.models import DeliveryReport, MalformedRecord, Reply, parse_records
from .._core.options import PollOptions
from .._core.validate import check_number
from .._core.xml import LazyAnswer
from .._gateway import Gateway
from .._mechanics.scheduler import in_background

__all__ = [
    "RecordStream",
    "StreamStats",
    "watch_delivery_reports",
    "watch_replies",
]

logger = logging.getLogger("aisix_async")

#: The longest first wait after a failed poll of a queue that may hold records (seconds).
_RETRY_SOON = 0.1


_R = TypeVar("_R")


def _check_seconds(value: object, name: str, note: str = "") -> None:
    """Refuse ``value`` unless it is a number of seconds, 0 or more and finite
    (check_number refuses 0, which these options take)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 <= value < math.inf:
        raise ValidationError(f"{name} must be 0 or more seconds, and finite{note}, got {value!r}")


#: Called with each whole batch, in gateway order, before any of its records is yielded;
#: one call at a time, while the next batch may already be fetched.
BatchHook = Callable[[Sequence[_R | MalformedRecord]], Awaitable[None]]


@attrs.frozen(kw_only=True)
class StreamStats:
    """Counters of one stream, for logs and progress displays."""

    polls: int
    empty_polls: int
    records: int
    malformed: int
    #: Polls that failed with a transient error and were retried after a backoff,
    #: answers whose items turned out garbled (their records lost) included.
    errors: int
    yielded: int


class RecordStream(Generic[_R]):
    """Records polled from one of the gateway's queues; ``async with`` it, then ``async for``.

    Polling adapts to the queue: an answer holding records is followed at once by the next
    poll (the gateway's page size is not published, so only an empty answer proves the
    queue drained), and an empty answer waits ``interval`` seconds. A transient failure
    (-1, a transport or protocol error, -10) is logged, counted in ``stats().errors`` and
    retried after a jittered backoff (half to all of a ceiling that doubles with each
    failure in a row, up to ``max_backoff``); the stream goes on. While the queue may
    hold records (no empty answer since records last came), the first retry comes
    within 0.1 s (or ``interval``, if shorter); after an empty answer, and for a -1 (the
    gateway asks for less haste), it waits ``interval``, as the next poll would have.
    A fatal account error (0, -2, -3, -5, -6, -7) ends the stream: the
    records already fetched are yielded first, then the ``async for`` raises that error.
    So does an :class:`EndpointError` (a wrong URL: HTTP 404 and the like) before any
    poll of the stream was answered; after one, it is retried as a transient failure.

    Unparseable items are not yielded: they are kept, in arrival order, in
    :attr:`malformed` (and handed to ``on_batch`` with their batch).

    With ``stop_when_idle``, the stream ends by itself once it has been idle that many
    seconds: idle is time in which the gateway answered and had nothing, counted since
    records last came (or the stream began), the time spent failing left out. Failures
    between batches therefore never end it while records keep coming. Failures alone, no
    poll answered, for ``stop_when_failing`` seconds (by default ``stop_when_idle``'s)
    end it with the last failure's error (a gateway out of reach does not hold it for
    ever; no backoff waits past that moment); a -1 never does: it backs off as ever. A
    poll that fails once the stream has been idle the whole time (the poll that would
    have confirmed it) ends it as idle, with a WARNING, not with its error.
    ``stop_when_idle=0`` reads the queue once: a failure then ends it with its error at
    once, unless ``stop_when_failing`` gives the pass time to retry it.

    The poller pauses while ``max_buffered`` records wait to be read, and a poll on the
    wire when the stream closes gets ``close_grace`` seconds to finish (its records go
    to :meth:`unread`).
    """

    def __init__(
        self,
        gateway: Gateway,
        action: str,
        from_item: Callable[[Mapping[str, str]], _R],
        options: PollOptions,
        on_batch: BatchHook[_R] | None = None,
        from_items: Callable[[Sequence[Mapping[str, str]]], list[_R] | None] | None = None,
    ) -> None:
        interval, max_backoff = options.interval, options.max_backoff
        stop_when_idle, close_grace = options.stop_when_idle, options.close_grace
        stop_when_failing = options.stop_when_failing
        max_buffered = options.max_buffered
        # 0 polled an empty queue without pause (hundreds of requests a second): the
        # gateway's answer to hammering may be harsher than -1.
        check_number(interval, "interval (seconds between polls of an empty queue)")
        if stop_when_idle is not None:
            # NaN never compares true: such a stream never ended (a user's trial), where
            # the command line refuses it; a string failed with a bare TypeError.
            _check_seconds(stop_when_idle, "stop_when_idle", " (None: never stop)")
        if stop_when_failing is not None:
            _check_seconds(
                stop_when_failing, "stop_when_failing", " (None: as long as stop_when_idle)"
            )
        # The others were taken as given: max_backoff=nan, max_buffered=-5 or 1.5 and
        # close_grace=-1 each ran with a meaning nobody asked for.
        check_number(max_backoff, "max_backoff (the longest wait after an error, seconds)")
        check_number(
            max_buffered, "max_buffered (records waiting to be read)", integer=True, minimum=1
        )
        _check_seconds(close_grace, "close_grace")
        self._gateway = gateway
        self._action = action
        self._from_item = from_item
        #: Reads a whole batch of usual items at once, if the record type can.
        self._from_items = from_items
        self._interval = interval
        self._max_backoff = max(max_backoff, interval)
        self._stop_when_idle = stop_when_idle
        #: How long polls may fail, none answered, before the stream ends with the error
        #: (None: for ever).
        self._stop_when_failing = stop_when_idle if stop_when_failing is None else stop_when_failing
        self._on_batch = on_batch
        self._close_grace = close_grace
        self._max_buffered = max(1, max_buffered)
        self._space = anyio.Event()
        #: True while the poller waits for room: only then must a read set ``_space``.
        self._space_wanted = False
        self._buffer: deque[_R] = deque()
        #: Batches fetched and not yet released to the reader, in fetch order: the one
        #: ``on_batch`` is writing, and the one fetched meanwhile (at most one).
        self._held: list[_Fetched[_R]] = []
        #: Set when the ``on_batch`` call under way returns; None before the first.
        self._written: anyio.Event | None = None
        #: Set once the batch fetched last may be read: the poll after it is written,
        #: or the poller will not write one now (see ``_let_read``).
        self._next_written = anyio.Event()
        #: Why the poller must back off before its next poll though that poll went well:
        #: an answer before it turned out garbled when its items were read.
        self._garbled: str | None = None
        #: What ``on_batch`` raised: the stream ends with it.
        self._hook_error: Exception | None = None
        #: The task group in which ``on_batch`` calls run beside the polling.
        self._writes: TaskGroup | None = None
        #: Items that could not be parsed, with their raw attributes, in arrival order.
        self.malformed: list[MalformedRecord] = []
        self._ready = anyio.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._task_group: TaskGroup | None = None
        self._idle_scope: anyio.CancelScope | None = None
        self._poll_scope: anyio.CancelScope | None = None
        #: The shielded batch writes under way (see _write), and when they must give up
        #: once the stream closes (inf: not closing).
        self._write_scopes: set[anyio.CancelScope] = set()
        self._writes_until = math.inf
        self._polls = 0
        self._empty_polls = 0
        self._records = 0
        self._errors = 0
        self._yielded = 0

    def __repr__(self) -> str:
        state = "ended" if self._ended else ("open" if self._task_group else "not entered")
        return (
            f"<RecordStream {self._action} {state}: {self._polls} polls, {self._records} "
            f"records, {self._yielded} yielded, {len(self._buffer)} buffered>"
        )

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> RecordStream[_R]:
        if self._task_group is not None:
            raise RuntimeError("a RecordStream can be entered only once")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._ended = True
        # The sleep between polls can go at once; a poll on the wire is let finish,
        # within the grace period, because its answer may hold records sent only once.
        self._space.set()
        if self._idle_scope is not None:
            self._idle_scope.cancel()
        if self._poll_scope is not None:
            self._poll_scope.deadline = min(
                self._poll_scope.deadline, anyio.current_time() + self._close_grace
            )
        # The batch writes are shielded (see _write), but not for ever: the poll's grace,
        # then as long again for the write of what it fetched.
        self._writes_until = anyio.current_time() + 2 * self._close_grace
        for scope in self._write_scopes:
            scope.deadline = min(scope.deadline, self._writes_until)
        assert self._task_group is not None
        # The poller never raises (its errors go to the reader), so an error from the
        # block is the caller's own: it must come out as itself, not wrapped in an
        # exception group by the task group. Only a cancellation is handed on, so the
        # task group can absorb the one aimed at it.
        if exc is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
            return await self._task_group.__aexit__(exc_type, exc, tb)
        await self._task_group.__aexit__(None, None, None)
        return None

    # -- reading ---------------------------------------------------------------------

    def __aiter__(self) -> RecordStream[_R]:
        return self

    async def __anext__(self) -> _R:
        while True:
            # Only synchronous code between a record leaving the buffer and it being
            # returned: a cancellation can never take a record out and lose it.
            if self._buffer:
                self._yielded += 1
                record = self._buffer.popleft()
                # Checked first: Event.set() on every record was a few ms per batch of
                # ten thousand, on the event loop the next batch is parsed on.
                if self._space_wanted and len(self._buffer) < self._max_buffered:
                    self._space_wanted = False
                    self._space.set()
                return record
            if self._ended and not self._held:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            if self._task_group is None:
                raise RuntimeError("use the stream inside 'async with' first")
            # A new event only once the last was set: two readers of one stream wait on
            # one event. Each made its own, and the one whose event was replaced waited
            # for ever (a user's trial).
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()

    def unread(self) -> list[_R]:
        """Records fetched but not yet yielded, in order: a new list at every call.

        Call it after leaving the block early (``break``, a timeout): the gateway will not
        send these records again, so they are the caller's to keep. It takes nothing away:
        a second call (a log line, then the save) returns the same records. While the
        block is still open they stay to be yielded in their turn.
        """
        # Read, not emptied: it emptied the buffer, and a user who counted the records
        # first (a log line) saved nothing after, losing records the gateway hands out
        # once. A batch still held is released to the buffer here, parsed now, as the
        # reader would get it.
        for fetched in [*self._held]:
            self._release(fetched)
        return [*self._buffer]

    def stats(self) -> StreamStats:
        """Counters so far."""
        return StreamStats(
            polls=self._polls,
            empty_polls=self._empty_polls,
            records=self._records,
            malformed=len(self.malformed),
            errors=self._errors,
            yielded=self._yielded,
        )

    # -- polling ---------------------------------------------------------------------

    async def _run(self) -> None:
        # Polls yield their place in the client's queues to callers waiting for one
        # answer (a web handler's); the batch hooks' tasks, started here, inherit it.
        with in_background():
            await self._run_polls()

    async def _run_polls(self) -> None:
        poll_error: Exception | None = None
        try:
            # The batch hooks run in a task group of their own, left only once the last
            # has returned: a poll error must not cancel a journal write under way.
            async with anyio.create_task_group() as writes:
                self._writes = writes
                try:
                    await self._poll_loop()
                except Exception as exc:
                    poll_error = exc
            # Errors belong to the reader's ``async for``, after the records fetched
            # before them; raised here they would only surface as an exception group.
            # A failed hook first: records may have gone by unrecorded.
            if self._hook_error is not None:
                if poll_error is not None:
                    logger.warning(
                        "%s: polling also failed (%s: %s) after a batch could not be recorded",
                        self._action,
                        type(poll_error).__name__,
                        poll_error,
                    )
                self._error = self._hook_error
            else:
                self._error = poll_error
        finally:
            # Whatever ends the poller (cancellation included) must wake the reader.
            self._finish()

    def _finish(self) -> None:
        # A batch the poller held when it was cancelled (waiting for the write before)
        # goes to the reader like the rest: fetched is fetched.
        for fetched in self._held:
            self._buffer.extend(self._records_of(fetched))
        self._held = []
        self._ended = True
        self._ready.set()

    async def _poll_loop(self) -> None:
        try:
            await self._polls_until_done()
        finally:
            # No poll follows: the batch fetched last needs none to go out first.
            self._let_read()

    async def _polls_until_done(self) -> None:
        stop_when_idle = self._stop_when_idle
        # Idle time is time in which the gateway answered and had nothing: the seconds
        # since records last came, less those spent failing. Counted from the stream's
        # start and each answer (``idle_from``); the failures' time is left out, so -10s
        # between batches (20% of the polls, in a user's trial) never end a stream
        # while records are still coming.
        idle = 0.0
        idle_from: float | None = anyio.current_time()
        # When the current run of failed polls began (None: the last poll was answered).
        # Failures alone for stop_when_failing seconds (stop_when_idle's, unless given)
        # end the stream with the last one's error: a gateway out of reach must not hold
        # --until-idle (or one pass) for ever.
        stop_when_failing = self._stop_when_failing
        failing_since: float | None = None
        # Failures in a row (a -10, a lost or garbled answer), for the backoff's growth.
        failures = 0
        # Whether the queue may hold records (no empty answer since records came, or no
        # answer yet): a failure then is retried soon, not after the empty queue's
        # interval (every -10 waited 5 s with 50,000 reports queued: a user's trial).
        more = True
        # Whether a poll of this stream was answered: until one is, an EndpointError (a
        # 404 and the like) means a wrong URL, and no waiting clears it; after one, the
        # same URL served the queue, so it is a gateway being redeployed or moved, and a
        # follower that runs for hours backs off rather than ends.
        answered = False
        while not self._stopping:
            # Backpressure: a reader that falls behind stops the polling, so the buffer
            # (records the gateway will not send again) stays bounded.
            if not await self._room():
                return
            polled_at = anyio.current_time()
            try:
                got = await self._poll_once()
            except AisixError as exc:
                if ends_polling(exc) or (isinstance(exc, EndpointError) and not answered):
                    raise
                now = anyio.current_time()
                if idle_from is not None:
                    # The wait before this poll was idle (after an empty answer); the
                    # poll and what follows until the next answer are not.
                    idle += polled_at - idle_from
                    idle_from = None
                if failing_since is None:
                    failing_since = polled_at
                limited = isinstance(exc, RateLimitedError)
                if stop_when_idle is not None and not more and idle >= stop_when_idle:
                    # The gateway answered "nothing" for the whole idle time; this poll
                    # was only to confirm it. The stream has been idle that long: it
                    # ends as idle, not with the error of a poll after the fact (one
                    # -10 there ended a follower whose every report was in).
                    logger.warning(
                        "%s: poll failed (%s: %s) after %.3f s with nothing to fetch; "
                        "the stream ends as idle",
                        self._action,
                        type(exc).__name__,
                        exc.message,
                        idle,
                    )
                    return
                if stop_when_failing is not None and not limited:
                    failing_for = now - failing_since
                    if failing_for >= stop_when_failing:
                        # A stream that ends when idle ends with the error when it could
                        # not poll for as long: a gateway out of reach would otherwise
                        # hold one pass (or --until-idle) for ever, backing off between
                        # failures. A -1 is an answer: it backs off as ever.
                        raise
                self._errors += 1
                failure: str | None = f"poll failed ({type(exc).__name__}: {exc.message})"
                # Written, then its answer lost or garbled: the records it held, if any,
                # are gone (the gateway hands each out once). Said at ERROR, as a batch
                # garbled after its head is; a poll that never went out loses nothing,
                # nor one refused before any gateway saw it (EndpointError).
                lost = (isinstance(exc, TransportError) and exc.request_sent) or (
                    isinstance(exc, ProtocolError) and not isinstance(exc, EndpointError)
                )
            else:
                answered = True
                limited = False
                failing_since = None
                now = anyio.current_time()
                if got:
                    idle, idle_from = 0.0, now
                else:
                    if idle_from is not None:
                        idle += now - idle_from
                    idle_from = now
                more = got
                failure, self._garbled = self._garbled, None
                lost = False
            if failure is not None:
                failures += 1
                wait = self._backoff(failures, soon=more and not limited)
                if stop_when_failing is not None and failing_since is not None and not limited:
                    # Not past the end of the failures' allowance: the poll then decides
                    # (a backoff of 20 s outlasted a 5 s --until-idle: a user's trial).
                    wait = min(wait, max(0.0, stop_when_failing - (now - failing_since)))
                logger.log(
                    logging.ERROR if lost else logging.WARNING,
                    "%s: %s; polling again in %.3f s (the stream goes on)",
                    self._action,
                    failure,
                    wait,
                )
                await self._idle(wait)
                continue
            failures = 0
            if got:
                # A queue that gave records may hold more: ask again at once.
                continue
            if stop_when_idle is not None:
                left = stop_when_idle - idle
                if left <= 0:
                    return
                await self._idle(min(self._interval, left))
            else:
                await self._idle(self._interval)

    def _backoff(self, failures: int, *, soon: bool) -> float:
        """The wait after ``failures`` failed polls in a row: jittered, doubling each time.

        ``soon``: the queue may hold records, so the first retry comes within
        ``_RETRY_SOON`` (or ``interval``, if shorter); otherwise (an empty answer came
        last, or a -1 asks for less haste) the first waits ``interval``, as the next poll
        of an empty queue would. Never more than ``max_backoff``.
        """
        first = min(_RETRY_SOON, self._interval) if soon else self._interval
        ceiling = min(first * 2 ** min(failures - 1, 64), self._max_backoff)
        # Half to all of it: streams that failed together do not come back together,
        # and none comes back at once.
        return random.uniform(ceiling / 2, ceiling)

    @property
    def _stopping(self) -> bool:
        """No poll may start: the stream is closing, or a batch could not be recorded."""
        return self._ended or self._hook_error is not None

    async def _room(self) -> bool:
        """Wait until the buffer has room; False when the stream must stop meanwhile."""
        while len(self._buffer) >= self._max_buffered and not self._stopping:
            # The reader waits for the batch fetched last: it must not wait for a poll.
            self._let_read()
            self._space = anyio.Event()
            self._space_wanted = True
            await self._space.wait()
        return not self._stopping

    async def _idle(self, seconds: float) -> None:
        # No poll for a while: the batch fetched last is read meanwhile.
        self._let_read()
        with anyio.CancelScope() as scope:
            self._idle_scope = scope
            if self._stopping:
                scope.cancel()
            await anyio.sleep(seconds)
        self._idle_scope = None

    def _let_read(self) -> None:
        """The batch fetched last may be read now: the next poll is written, or no poll
        will be written before the poller has waited (or it stopped)."""
        self._next_written.set()

    async def _poll_once(self) -> bool:
        """One poll; returns whether it fetched items (read or not)."""
        self._polls += 1
        # Shielded: cancelling the stream must not abandon an answer that may hold
        # records; __aexit__ bounds the wait with a deadline instead.
        try:
            with anyio.CancelScope(shield=True) as scope:
                self._poll_scope = scope
                answer = await self._gateway.poll(self._action, on_written=self._let_read)
        finally:
            # Where the HTTP stack does not report the request written (a caller's mock
            # transport), the answer or the error is the first sign that it was.
            self._let_read()
        self._poll_scope = None
        if scope.cancelled_caught:
            logger.error(
                "%s: a poll was abandoned after %.1f s at close; records it fetched are lost",
                self._action,
                self._close_grace,
            )
            return False
        if not answer.has_items:
            self._empty_polls += 1
            return False
        # Held from here (unread() returns it) until it is released to the reader. Read
        # by a task of its own, not here: the next poll goes out first, and the reading
        # of its items (expat's pass over the XML, the records, the hook's write, if any)
        # is done while the gateway prepares the next answer. Read here, ten thousand
        # items made the next poll wait for them.
        fetched: _Fetched[_R] = _Fetched(answer)
        self._held.append(fetched)
        # One batch at a time, in fetch order: this batch waits for the one before, whose
        # hook ran (or which was parsed) while this poll was on the wire. Shielded, as
        # that hook is (see _write): cancelled here, this batch would skip its own.
        if self._written is not None:
            with anyio.CancelScope(shield=True):
                await self._written.wait()
        if self._hook_error is not None:
            # Fetched while the batch before could not be recorded: the gateway will not
            # hand these out again, so they go to the reader, unrecorded, before the
            # hook's error ends the stream.
            self._release(fetched)
            logger.error(
                "%s: %d records fetched while the batch before could not be recorded "
                "(%s) are handed over unrecorded",
                self._action,
                len(fetched.records or ()),
                self._hook_error,
            )
            return True
        assert self._writes is not None
        written = self._written = anyio.Event()
        readable = self._next_written = anyio.Event()
        self._writes.start_soon(self._write, self._on_batch, fetched, written, readable)
        return True

    def _items_of(self, fetched: _Fetched[_R]) -> Sequence[Mapping[str, str]]:
        """A fetched batch's items, read now; none when the answer turns out garbled."""
        try:
            return fetched.answer.read_items()
        except ProtocolError as exc:
            error = exc
        # As a poll whose answer was garbled before its result code: failed, and the
        # records past the fault are lost. Said at ERROR: this answer held records (its
        # head says so). Those read whole before it (a body cut short) are kept: all of
        # them were lost, 2,000 at a time, though the gateway hands each out once (a
        # user's trial).
        kept = fetched.answer.salvaged
        self._errors += 1
        self._garbled = "an answer's items were garbled"
        logger.error(
            "%s: a poll's answer was garbled after its result code (%s); %s; the records "
            "past that point are lost (the gateway does not hand them out again); the "
            "stream goes on",
            self._action,
            error.message,
            f"the {len(kept)} records read whole before it are kept"
            if kept
            else "the records it held are lost",
        )
        return kept

    def _parse(self, fetched: _Fetched[_R]) -> tuple[list[_R | MalformedRecord], list[_R]]:
        """Read and parse a fetched batch: all of it (for the hook), and its good records."""
        items = self._items_of(fetched)
        parsed = parse_records(self._action, items, self._from_item, self._from_items)
        if MalformedRecord in set(map(type, parsed)):
            good: list[_R] = []
            for record in parsed:
                if isinstance(record, MalformedRecord):
                    self.malformed.append(record)
                else:
                    good.append(record)
        else:
            good = cast("list[_R]", list(parsed))
        self._records += len(good)
        return parsed, good

    def _records_of(self, fetched: _Fetched[_R]) -> list[_R]:
        """A held batch's records, parsed now if its task has not done so yet."""
        if fetched.records is None:
            fetched.records = self._parse(fetched)[1]
        return fetched.records

    async def _write(
        self,
        hook: BatchHook[_R] | None,
        fetched: _Fetched[_R],
        written: anyio.Event,
        readable: anyio.Event,
    ) -> None:
        try:
            # Shielded: a batch fetched is recorded (a campaign's journal write) even when
            # the stream is cancelled (a move_on_after, Ctrl-C) while it waits its turn:
            # the gateway will not hand these records out again, and a journal that
            # missed them would hold their recipients pending for good. The wait ends
            # when the next poll is written or the poller stops, which a cancellation
            # makes it do at once.
            with anyio.CancelScope(shield=True, deadline=self._writes_until) as scope:
                self._write_scopes.add(scope)
                # Not before the next poll is written: read first, this batch would delay
                # it (on an event loop, this task runs at the poller's first checkpoint,
                # before the request reaches the socket).
                await readable.wait()
                # Nothing awaited between this check and the parse: a batch taken by
                # unread() meanwhile was parsed there, and its hook is not called.
                if fetched.records is None and any(held is fetched for held in self._held):
                    batch, fetched.records = self._parse(fetched)
                    # A garbled answer has no batch to record (its error is logged).
                    if hook is not None and batch:
                        await hook(batch)
            self._write_scopes.discard(scope)
            if scope.cancelled_caught:
                logger.error(
                    "%s: a batch was not recorded within %.1f s of the close; its %d "
                    "records are handed over unrecorded (in unread())",
                    self._action,
                    2 * self._close_grace,
                    len(fetched.records or ()),
                )
        except Exception as exc:
            # The hook is the caller's (e.g. a journal write): its failure ends the
            # stream, rather than being retried like a failed poll while later batches
            # go by unrecorded. The poller may be sleeping, or waiting for the reader:
            # wake it to stop; a poll on the wire is let finish (its records are fetched).
            if fetched.records is None:
                # Not even parsed (a bug in the parser, not a bad item): nothing to hand
                # over, and parsing again on release would only raise again.
                fetched.records = []
            self._hook_error = exc
            self._space.set()
            if self._idle_scope is not None:
                self._idle_scope.cancel()
        finally:
            # Released even when the hook failed or the stream is closing: the records
            # are fetched, and unread() must be able to return them.
            self._release(fetched)
            written.set()

    def _release(self, fetched: _Fetched[_R]) -> None:
        """Hand a held batch to the reader (unless unread() released it meanwhile)."""
        for place, held in enumerate(self._held):
            if held is fetched:
                del self._held[place]
                self._buffer.extend(self._records_of(fetched))
                break
        self._ready.set()


class _Fetched(Generic[_R]):
    """A batch as fetched (its answer, items unread), and its records once parsed."""

    __slots__ = ("answer", "records")

    def __init__(self, answer: LazyAnswer) -> None:
        self.answer = answer
        self.records: list[_R] | None = None


def watch_delivery_reports(
    gateway: Gateway, options: PollOptions, on_batch: BatchHook[DeliveryReport] | None = None
) -> RecordStream[DeliveryReport]:
    """Stream delivery reports (getSendState); see :class:`RecordStream`.

    ``on_batch`` (async) receives each fetched batch whole, malformed items included,
    before its records are yielded: a place to persist them first. It runs while the
    next poll is on the wire, one call at a time, in fetch order. If it raises, no poll
    starts again: the batch the poll on the wire fetched meanwhile (at most one) is
    yielded without having been through ``on_batch`` (logged at ERROR), then the
    ``async for`` raises the hook's error.
    """
    return RecordStream(
        gateway,
        "getSendState",
        DeliveryReport.from_item,
        options,
        on_batch,
        from_items=DeliveryReport.from_items,
    )


def watch_replies(
    gateway: Gateway, options: PollOptions, on_batch: BatchHook[Reply] | None = None
) -> RecordStream[Reply]:
    """Stream replies (getReply); see :class:`RecordStream` and :func:`watch_delivery_reports`."""
    return RecordStream(gateway, "getReply", Reply.from_item, options, on_batch)
