"""The client-wide scheduler: every request of a client takes its turn here.

The gateway limits an *account*, not a call, so one scheduler per client sees every
request (a single send from a web handler as much as a bulk chunk or a report poll), and
a -1 seen by one caller slows all of them.

How fast, and why: the gateway never says
what its limit is; its only signal is -1, "too fast". A token bucket behind it hides the
limit for a while (a burst is accepted), so the scheduler learns two things at once:

* a *concurrency limit* (AIMD): it starts modestly, grows by one per round trip while
  requests queue for a slot, and shrinks by a tenth on -1; ``max_concurrency`` caps it
  and also sizes the HTTP pool, so a request that has its slot always finds a connection;
* a *pace* (requests per second), unset until the first -1: then it is set just under
  the rate the gateway was seen to accept, grows additively while callers wait for it,
  and is cut multiplicatively on each new -1. Additive increase with multiplicative
  decrease is also what lets several processes sharing one account converge to fair
  shares with no coordinator. ``max_rate`` caps it.

The rate a cut starts from is what the gateway accepted just before the -1: the last
second's average, or the last fraction of a second when that is higher, because while
the rate climbs (the first second, a raised limit) the whole second lags behind it and a
cut from it would throw away most of the climb. Only a -1 for a request dispatched after
the last cut cuts again: the requests already in flight when the first -1 came back say
nothing new.

What is retried, and why:

* ``-1`` (too fast): the gateway refused before acting, so a resend is always safe. The
  rejected request waits a jittered backoff, then queues again.
* A connection that failed before the request was written: the gateway never saw it.
* For actions that change nothing (balance, lists, report polls): any transient failure.

A send whose answer was lost (read timeout, dropped connection, -10, -11, a garbled
answer) is never retried here: it is raised with ``outcome_unknown`` for the caller to
report. Retries are bounded by attempts and by time (counted from the first dispatch, so
time spent queueing behind other callers is not held against a request); each retry is
logged on ``aisix_async`` and handed to ``on_retry``.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import attrs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from ._errors import (
    AisixError,
    GatewayInternalError,
    ProtocolError,
    RateLimitedError,
    TransportError,
    ValidationError,
)
from ._validate import check_number

__all__ = [
    "AttemptTally",
    "DispatchHooks",
    "PaceSource",
    "RetryDetails",
    "RetryPolicy",
    "Scheduler",
    "SchedulerStats",
    "is_retryable",
]

_T = TypeVar("_T")
logger = logging.getLogger("aisix_async")


@attrs.frozen
class RetryPolicy:
    """How hard one request is retried: bounded by attempts and by time.

    Tests pass ``RetryPolicy(initial_backoff=0, max_backoff=0)`` (or small values) so
    nothing sleeps for real.
    """

    attempts: int = 10
    #: Seconds from a request's first dispatch to the last retry, backoff included.
    timeout: float = 120.0
    initial_backoff: float = 0.1
    max_backoff: float = 10.0


@attrs.frozen
class RetryDetails:
    """What a retry hook is told: which action, which attempt failed, how long we wait."""

    action: str
    attempt: int
    wait: float
    cause: AisixError


@attrs.frozen
class SchedulerStats:
    """A snapshot of the client-wide scheduler, for progress displays."""

    #: The current concurrency limit (requests allowed on the wire at once).
    limit: int
    #: Requests holding a slot now.
    in_flight: int
    #: -1 answers seen since the client was made.
    rate_limited: int
    #: Retries made since the client was made.
    retries: int
    #: The learned pace in requests per second (``max_rate`` applied), or None when unpaced.
    pace: float | None = None
    #: Request attempts dispatched since the client was made.
    requests: int = 0
    #: Requests waiting for a slot or for the pace.
    waiting: int = 0
    #: The HTTP stack of the client's requests, "httpx" or "httpx2" (None: a bare scheduler).
    http_stack: str | None = None


class AttemptTally:
    """Counts one caller's attempts and -1 answers (a bulk chunk reports them)."""

    __slots__ = ("attempts", "rate_limited")

    def __init__(self) -> None:
        self.attempts = 0
        self.rate_limited = 0


def is_retryable(error: BaseException, *, unsafe: bool) -> bool:
    """True when ``error`` may be retried for an action (``unsafe``: a send or updateKey)."""
    if isinstance(error, RateLimitedError):
        return True
    if isinstance(error, TransportError):
        return not error.request_sent or not unsafe
    if isinstance(error, (ProtocolError, GatewayInternalError)):
        return not unsafe
    return False


class _SinceFirstDispatch(stop_base):
    """Stop once ``timeout`` seconds have passed since the request was first dispatched."""

    def __init__(self, timeout: float, started: list[float], clock: Callable[[], float]) -> None:
        self._timeout = timeout
        self._started = started
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return bool(self._started) and self._clock() - self._started[0] >= self._timeout


class DispatchHooks(Protocol):
    """What a caller hears about its request's attempts, inside the request's slot."""

    async def before_dispatch(self) -> None:
        """The turn has come and the request is about to be written; raise to give it up."""

    async def refused(self) -> None:
        """The gateway provably did nothing with this attempt (-1, or it never got it)."""


class SharedShare(Protocol):
    """A turn from a :class:`PaceSource`: the share of the pace this client may use."""

    @property
    def share(self) -> float: ...


class PaceSource(Protocol):
    """A pace kept beyond this client (``shared_limit``: see ``_shared_limit``).

    The scheduler asks it for each request's turn instead of pacing itself; when it has
    none to give (Redis down or slow) the scheduler paces itself, starting from the last
    share it was given. Concurrency and retries stay the scheduler's own.
    """

    async def take_turn(self) -> SharedShare | None:
        """Wait for this request's turn; None: pace it yourself this time."""

    async def refused(self, turn: Any) -> None:
        """A request dispatched at ``turn`` was answered -1."""


class Scheduler:
    """Runs each request attempt when its turn comes, retrying what is safe to retry."""

    #: Multiplicative decrease of the pace and the concurrency limit on a new -1.
    BETA = 0.9
    #: Window over which the accepted rate is measured when a -1 asks for a cut (s).
    WINDOW = 1.0
    #: The recent part of it that shows a climbing rate (s).
    SHORT_WINDOW = 0.4
    #: Below the rate of the last -1, the pace closes the gap with this time constant (s).
    RECOVERY = 0.5
    #: Above it, the excess doubles every half second (probing for a raised limit): with
    #: the cut measured where the climb got to (see ``_rate``), a limit raised from 20 to
    #: 80 requests/s is followed in about 4 s, where doubling every second took 7 s or
    #: more. Doubling faster gained nothing measurable and cost more -1 answers.
    PROBE = 2.0 * math.log(2.0)
    #: Accepted answers in the window needed before their rate is trusted as a ceiling.
    MIN_SAMPLES = 10

    def __init__(
        self,
        *,
        max_concurrency: int = 16,
        initial_concurrency: int | None = None,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        rate_step: float = 2.0,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryDetails], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: PaceSource | None = None,
    ) -> None:
        check_number(max_concurrency, "max_concurrency", integer=True, minimum=1)
        if max_rate is not None:
            check_number(max_rate, "max_rate (requests/s)")
        if initial_concurrency is not None:
            check_number(initial_concurrency, "initial_concurrency", integer=True, minimum=1)
        start = initial_concurrency if initial_concurrency is not None else min(4, max_concurrency)
        if not 1 <= start <= max_concurrency:
            raise ValidationError(
                f"initial_concurrency must run from 1 to max_concurrency ({max_concurrency}), "
                f"got {initial_concurrency!r}"
            )
        self._max = max_concurrency
        self._limit = float(start)
        self._max_rate = max_rate
        self._min_rate = min(min_rate, max_rate) if max_rate is not None else min_rate
        self._rate_step = rate_step
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._clock = clock
        # Concurrency: a FIFO of waiters, each woken when a slot frees for it.
        self._in_flight = 0
        self._slot_waiters: deque[anyio.Event] = deque()
        # Pace: None until the gateway first says -1; each dispatch reserves the next
        # 1/pace-second step, so waiters leave in arrival order and evenly spaced.
        self._pace: float | None = None
        self._ceiling = 0.0
        self._first_dispatch: float | None = None
        self._next_at = 0.0
        self._pace_waiting = 0
        self._last_cut = -math.inf
        self._accepted: deque[float] = deque()
        self._dispatched: deque[float] = deque()
        self._shared = shared
        # Counters for stats.
        self._requests = 0
        self._rate_limited = 0
        self._retries = 0

    # -- introspection -------------------------------------------------------------

    @property
    def max_concurrency(self) -> int:
        """The user's cap on concurrent requests (the HTTP pool has as many connections)."""
        return self._max

    @property
    def limit(self) -> int:
        """The current learned concurrency limit."""
        return max(1, int(self._limit))

    @property
    def pace(self) -> float | None:
        """The pace in force (requests/s): the learned one under ``max_rate``; None: unpaced."""
        if self._pace is None:
            return self._max_rate
        return self._pace if self._max_rate is None else min(self._pace, self._max_rate)

    def stats(self) -> SchedulerStats:
        """A snapshot for progress displays."""
        return SchedulerStats(
            limit=self.limit,
            in_flight=self._in_flight,
            rate_limited=self._rate_limited,
            retries=self._retries,
            pace=self.pace,
            requests=self._requests,
            waiting=len(self._slot_waiters) + self._pace_waiting,
        )

    # -- the concurrency limit -----------------------------------------------------

    async def _acquire_slot(self) -> bool:
        """Take a slot; return True when we had to wait for one (demand exceeds the limit)."""
        if self._in_flight < self.limit and not self._slot_waiters:
            self._in_flight += 1
            return False
        event = anyio.Event()
        self._slot_waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                # Woken and cancelled at once: the slot was handed to us; pass it on.
                self._release_slot()
            else:
                self._slot_waiters.remove(event)
            raise
        return True

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        # A slot is handed over by counting it before the waiter runs, so no newcomer can
        # take it in between (FIFO, no starvation).
        while self._slot_waiters and self._in_flight < self.limit:
            self._in_flight += 1
            self._slot_waiters.popleft().set()

    # -- the pace ------------------------------------------------------------------

    async def _await_pace(self) -> None:
        pace = self.pace
        if pace is None:
            return
        now = self._clock()
        at = max(now, self._next_at)
        self._next_at = at + 1.0 / pace
        if at > now:
            self._pace_waiting += 1
            try:
                await anyio.sleep(at - now)
            finally:
                self._pace_waiting -= 1
            if self._pace is not None:
                self._grow(self._pace)

    def _grow(self, pace: float) -> None:
        # Called once per dispatch that had to wait for the pace, i.e. for 1/pace seconds
        # of demand above the pace: an idle client never talks itself into a rate it has
        # not tried. The shape is CUBIC's: a quick return to the rate of the last -1, an
        # additive step (which is what makes clients sharing an account converge to fair
        # shares), and past that rate a probe that accelerates, so a raised limit is found
        # in seconds rather than minutes.
        gap = self._ceiling - pace
        per_second = self._rate_step + (gap / self.RECOVERY if gap > 0 else -gap * self.PROBE)
        self._pace = min(pace + per_second / pace, self._max_rate_or_inf)

    @property
    def _max_rate_or_inf(self) -> float:
        return self._max_rate if self._max_rate is not None else math.inf

    def _trim(self, times: deque[float], now: float) -> None:
        horizon = now - self.WINDOW
        while times and times[0] < horizon:
            times.popleft()

    def _on_accepted(self, waited_for_slot: bool) -> None:
        now = self._clock()
        self._accepted.append(now)
        self._trim(self._accepted, now)
        if waited_for_slot and self._limit < self._max:
            # +1 per round trip's worth of answers while requests queue for a slot.
            self._limit = min(float(self._max), self._limit + 1.0 / self._limit)
            self._wake()

    def _rate(self, times: deque[float], now: float, first: float) -> float:
        # The rate over the last second, or since the first dispatch if that is more
        # recent. While the rate is climbing (a raised limit being found, the first
        # second) that average lags behind it: the gateway was accepting more than the
        # second's average when it said -1. The last SHORT_WINDOW shows that once it
        # holds enough answers to be trusted; a bucket's burst can inflate it a little,
        # which the min with the pace in _on_rate_limited bounds.
        rate = len(times) / max(0.01, min(self.WINDOW, now - first))
        recent_from = max(first, now - self.SHORT_WINDOW)
        recent = len(times) - bisect.bisect_left(times, recent_from)
        if recent >= self.MIN_SAMPLES and now - recent_from > 0.01:
            rate = max(rate, recent / (now - recent_from))
        return rate

    def _on_rate_limited(self, dispatched_at: float) -> None:
        self._rate_limited += 1
        if dispatched_at < self._last_cut:
            return
        now = self._clock()
        self._last_cut = now
        self._trim(self._accepted, now)
        self._trim(self._dispatched, now)
        first = self._first_dispatch if self._first_dispatch is not None else now
        accepted_rate = self._rate(self._accepted, now, first)
        sending_rate = (
            self._pace if self._pace is not None else self._rate(self._dispatched, now, first)
        )
        base = min(accepted_rate, sending_rate) if accepted_rate > 0 else sending_rate
        # Too few answers to trust the rate (a burst, a slow start): probe from here as
        # if no limit were known, so an estimate that is far too low is soon outgrown.
        self._ceiling = base if len(self._accepted) >= self.MIN_SAMPLES else 0.0
        self._pace = max(self._min_rate, self.BETA * base)
        self._limit = max(1.0, self._limit * self.BETA)
        logger.info(
            "the gateway said -1 (too fast): pace now %.2f requests/s, concurrency limit %d",
            self._pace,
            self.limit,
        )

    # -- a pace shared with other clients ---------------------------------------------

    async def _shared_turn(self) -> SharedShare | None:
        if self._shared is None:
            return None
        turn = await self._shared.take_turn()
        if turn is not None:
            # Follow the share locally: stats show it, and should the source fail, this
            # client paces itself from there rather than from what it learned alone.
            self._pace = self._ceiling = turn.share
        return turn

    # -- running a request ---------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        policy = self._retry
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        # Full jitter: clients that were refused together must not come back together.
        return random.uniform(0, ceiling) if ceiling > 0 else 0.0

    def _before_sleep(self, action: str) -> Callable[[RetryCallState], None]:
        def hook(state: RetryCallState) -> None:
            outcome = state.outcome
            cause = outcome.exception() if outcome is not None else None
            assert isinstance(cause, AisixError)
            wait = state.upcoming_sleep
            self._retries += 1
            logger.info(
                "%s: attempt %d failed (%s); retrying in %.3f s",
                action,
                state.attempt_number,
                type(cause).__name__,
                wait,
            )
            if self._on_retry is not None:
                self._on_retry(RetryDetails(action, state.attempt_number, wait, cause))

        return hook

    async def _attempt(
        self,
        attempt: Callable[[], Awaitable[_T]],
        tally: AttemptTally | None,
        hooks: DispatchHooks | None,
        started: list[float],
    ) -> _T:
        waited = await self._acquire_slot()
        try:
            turn = await self._shared_turn()
            if turn is None:
                await self._await_pace()
            if hooks is not None:
                await hooks.before_dispatch()
            dispatched_at = self._clock()
            if not started:
                started.append(dispatched_at)
            if self._first_dispatch is None:
                self._first_dispatch = dispatched_at
            self._requests += 1
            self._dispatched.append(dispatched_at)
            self._trim(self._dispatched, dispatched_at)
            if tally is not None:
                tally.attempts += 1
            try:
                result = await attempt()
            except RateLimitedError:
                if tally is not None:
                    tally.rate_limited += 1
                self._on_rate_limited(dispatched_at)
                if turn is not None and self._shared is not None:
                    await self._shared.refused(turn)
                if hooks is not None:
                    await hooks.refused()
                raise
            except TransportError as exc:
                if not exc.request_sent and hooks is not None:
                    await hooks.refused()
                raise
            self._on_accepted(waited)
            return result
        finally:
            self._release_slot()

    async def run(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        action: str,
        unsafe: bool,
        tally: AttemptTally | None = None,
        hooks: DispatchHooks | None = None,
    ) -> _T:
        """Run ``attempt`` when its turn comes; retry it per the policy; raise its last error.

        ``tally``, when given, counts this request's attempts and -1 answers. ``hooks``
        (see :class:`DispatchHooks`) hear of each dispatch and of each attempt the
        gateway provably did nothing with. An
        error that is not retryable ends the run at once.
        """
        policy = self._retry
        started: list[float] = []
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: is_retryable(exc, unsafe=unsafe)),
            stop=stop_after_attempt(policy.attempts)
            | _SinceFirstDispatch(policy.timeout, started, self._clock),
            wait=self._wait,
            sleep=anyio.sleep,
            before_sleep=self._before_sleep(action),
            reraise=True,
        )
        try:
            async for try_state in retrying:
                with try_state:
                    return await self._attempt(attempt, tally, hooks, started)
        except RateLimitedError as exc:
            raise RateLimitedError(
                action,
                exc.code,
                detail=(
                    f"still refused after {retrying.statistics.get('attempt_number', 1)} "
                    "attempts; if it never clears, the account may be bound to another IP "
                    "address or limited to a time window"
                ),
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover
