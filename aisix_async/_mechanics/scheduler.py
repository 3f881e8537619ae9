"""The client-wide scheduler: every request of a client takes its turn here.

The gateway limits an *account*, not a call, so one scheduler per client sees every
request (a single send from a web handler as much as a bulk chunk or a report poll), and
a -1 seen by one caller slows all of them.

How fast, and why: the gateway never says what its limit is; its only signal is -1, "too
fast", and an account that keeps meeting it risks harsher treatment. A token bucket
behind it hides the limit for a while (a burst is accepted). The scheduler learns:

* a *concurrency limit* (AIMD): a cold client starts with one request in flight and, while
  requests queue for a slot, adds one per accepted answer (slow start: it doubles every
  round trip, or every 0.1 s if longer, the requests spread evenly over the round trip so
  a small bucket is not met with a clump) until the first -1; after that one per round
  trip's worth of answers, and a tenth off on each cut, but never below what the pace
  needs for one round trip.
  ``max_concurrency`` caps it and also sizes the HTTP pool, so a request that has its slot
  always finds a connection;
* a *pace* (requests per second), unset until the first -1. That first -1 halves it from
  the rate it was sending at (what was accepted until then includes the burst). Between
  two -1 answers the bucket went from empty to empty, so what the gateway accepted in
  between, over that time, is its rate: each later cut puts the pace just under that rate
  (x0.9), which becomes the *ceiling*. While the rate climbs (a raised limit being found)
  the cycle's average lags, so the pace the last accepted request went out at is used.
  Only a -1 for a request dispatched after the last cut cuts again: the requests already
  in flight say nothing new about "too fast", and the next turn moves to one step of the
  new pace after the cut. They do measure the limit, though: they reach the bucket the
  cut found empty, so what it accepts of them between two of their -1 answers, over that
  time, is its rate. With many requests per round trip (16 or more accepted in the
  episode) that replaces an unsure estimate at once: after a cold start the pace goes
  just under the limit instead of halving and climbing back past it.

Between cuts the pace grows once per request that had to wait for it (an idle client
never talks itself into a rate it has not tried), and every step is a share of the pace
counted in requests, not seconds, so the controller behaves alike at 2 and at 500
requests/s (CUBIC's shape): back to the ceiling within a few dozen requests, a creep above
it whose excess doubles every 60 requests (so a burst of 5 is spent, and one -1 met,
about once per 150 requests; every 3 for a while after a drop, every 20 after a warm
start, or every second's worth if fewer), and once an excess of 15% is accepted with no
-1 (the limit went up) a fast probe doubling the excess every 6 requests. No probe
doubles faster than once per round trip's worth of requests: the answers that would say
"too fast" must have time to come back. ``max_rate`` caps the pace.

A :class:`RateState` (pace, concurrency, when it was learned) can be read from a scheduler
and handed to a new one, which starts just under that pace; an older state is trusted
less (see STATE_HALF_LIFE, STATE_MAX_AGE). Such a client starts at a full bucket, not an
empty one, so until its first -1 no excess it gets accepted proves anything short of
STATE_BURST seconds' worth (see _proven_above), and the rate read at that -1 is not
trusted: the next one measures the limit.

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
import contextlib
import contextvars
import functools
import itertools
import logging
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
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

from .._core.errors import (
    AisixError,
    CircuitOpenError,
    ClientClosedError,
    DeadlineExceededError,
    RateLimitedError,
    TransportError,
    ValidationError,
    is_retryable,
    result_of,
)
from .._core.validate import check_number
from .breaker import Breaker
from .hooks import log_hook_failure
from .outlive import AnsweredAfterCancel, CancelledOnWire, PendingAnswer

__all__ = [
    "QUEUE_PACE_MARGIN",
    "AttemptTally",
    "DispatchHooks",
    "PaceSource",
    "RateState",
    "RetryDetails",
    "RetryPolicy",
    "RunOfRefusals",
    "Scheduler",
    "SchedulerStats",
    "in_background",
]

_T = TypeVar("_T")
_W = TypeVar("_W")
logger = logging.getLogger("aisix_async")


@attrs.frozen
class RetryPolicy:
    """How hard one request is retried: bounded by attempts and by time.

    Tests pass ``RetryPolicy(initial_backoff=0, max_backoff=0)`` (or small values) so
    nothing sleeps for real.
    """

    attempts: int = 10
    #: Seconds from a request's first dispatch to the last retry, backoff included: no
    #: backoff sleeps past it.
    timeout: float = 120.0
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    #: Seconds a request is retried while the gateway cannot be reached at all (the
    #: connection itself fails, so nothing was sent), from the first such failure in a
    #: row; None: as long as ``timeout``. A gateway that refuses connections is rarely
    #: back within minutes, and a person waiting deserves an answer sooner.
    unreachable_timeout: float | None = None

    def __attrs_post_init__(self) -> None:
        # Checked when made, as every other setting is: attempts=-1 turned off the retry
        # of -1 answers without a word, and a negative or NaN timeout ended every retry.
        check_number(self.attempts, "RetryPolicy attempts", integer=True, minimum=1)
        check_number(self.timeout, "RetryPolicy timeout (s)")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not (type(value) in (int, float) and value == 0):  # no backoff is allowed
                check_number(value, f"RetryPolicy {name} (s)")
        if self.unreachable_timeout is not None:
            check_number(self.unreachable_timeout, "RetryPolicy unreachable_timeout (s)")


@attrs.frozen
class RetryDetails:
    """What a retry hook is told: which action, which attempt failed, how long we wait."""

    action: str
    attempt: int
    wait: float
    cause: AisixError


@attrs.frozen(kw_only=True)
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


@attrs.frozen
class _Learned:
    """What the controller had learned when a run of -1 answers began (see _storm_over)."""

    pace: float
    ceiling: float
    sure: bool
    measured: float
    limit: float
    unconfirmed_from: float


class AttemptTally:
    """Counts one caller's attempts and -1 answers (a bulk chunk reports them)."""

    __slots__ = ("attempts", "rate_limited")

    def __init__(self) -> None:
        self.attempts = 0
        self.rate_limited = 0


class _SinceFirstDispatch(stop_base):
    """Stop once ``timeout`` seconds have passed since the request was first dispatched."""

    def __init__(self, timeout: float, started: list[float], clock: Callable[[], float]) -> None:
        self._timeout = timeout
        self._started = started
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return bool(self._started) and self._clock() - self._started[0] >= self._timeout


def _unreachable(state: RetryCallState) -> bool:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None and outcome.failed else None
    return isinstance(error, TransportError) and not error.request_sent


class _WhileUnreachable(stop_base):
    """Stop once the connection has failed for ``timeout`` seconds in a row."""

    def __init__(self, timeout: float | None, clock: Callable[[], float]) -> None:
        self._timeout = timeout
        self._clock = clock
        #: When the current run of connection failures began (None: not in one).
        self.since: float | None = None

    def __call__(self, retry_state: RetryCallState) -> bool:
        if not _unreachable(retry_state):
            self.since = None
            return False
        now = self._clock()
        if self.since is None:
            self.since = now
        return self._timeout is not None and now - self.since >= self._timeout


class DispatchHooks(Protocol):
    """What a caller hears about its request's attempts, inside the request's slot."""

    async def before_dispatch(self) -> None:
        """The turn has come and the request is about to be written; raise to give it up."""

    async def refused(self) -> None:
        """The gateway provably did nothing with this attempt (-1, or it never got it)."""


#: The highest pace a RateState may hold (requests/s): far above any account's limit.
MAX_STATE_PACE = 100_000


@attrs.frozen(kw_only=True)
class RateState:
    """What a client learned about its account's limit, to start another client from.

    Small, frozen, and JSON-friendly: ``state.as_dict()`` serialises with :func:`json.dumps`
    and :meth:`from_dict` reads it back (checking every field). ``learned_at`` is wall-clock
    time (seconds since the epoch), so a state saved by one process means the same in another;
    a client started from an old state trusts it less the older it is.
    """

    #: The rate the gateway was found to accept (requests/s); None: no limit met yet.
    pace: float | None
    #: The concurrency limit the client had reached.
    concurrency: int
    #: When this was learned, in seconds since the epoch (``time.time()``).
    learned_at: float

    def __attrs_post_init__(self) -> None:
        # Made by hand too, not only read by from_dict: RateState(pace=nan) was taken and
        # then ignored, and RateState("5", "x", None) failed inside the client with a
        # TypeError (a user's trial).
        pace, concurrency, learned_at = self.pace, self.concurrency, self.learned_at
        if pace is not None:
            # Finite first: NaN is not "at most 0", and saying so would mislead.
            if isinstance(pace, float) and not math.isfinite(pace):
                raise ValidationError(f"rate state pace must be finite, got {pace!r}")
            check_number(pace, "rate state pace (requests/s)")
            if pace > MAX_STATE_PACE:
                # Not learned from any gateway: a client started from 1e308 opened at
                # 9e307 and met more -1 answers than a cold one (a user's trial).
                raise ValidationError(
                    f"rate state pace must be at most {MAX_STATE_PACE:,} requests/s (no "
                    f"gateway limit is learned that high), got {pace!r}"
                )
        check_number(concurrency, "rate state concurrency", integer=True, minimum=1)
        if (
            isinstance(learned_at, bool)
            or not isinstance(learned_at, (int, float))
            or not math.isfinite(learned_at)
        ):
            raise ValidationError(
                f"rate state learned_at must be a finite time (seconds since the epoch), "
                f"got {learned_at!r}"
            )
        # Written by a clock: after 1970. Checked as made, not only as read: a state made
        # with learned_at=0 was taken, then refused by from_dict once saved (a user's trial).
        check_number(learned_at, "rate state learned_at")

    def as_dict(self) -> dict[str, float | int | None]:
        """A plain dict for ``json.dumps``."""
        return {"pace": self.pace, "concurrency": self.concurrency, "learned_at": self.learned_at}

    @classmethod
    def from_dict(cls, data: object) -> RateState:
        """Read what :meth:`as_dict` wrote; a malformed record raises ValidationError."""
        if not isinstance(data, dict) or set(data) != {"pace", "concurrency", "learned_at"}:
            raise ValidationError(
                "a rate state must be a mapping of exactly pace, concurrency and learned_at"
            )
        pace, concurrency, learned_at = data["pace"], data["concurrency"], data["learned_at"]
        # Checked as made (see __attrs_post_init__).
        state = cls(pace=pace, concurrency=concurrency, learned_at=learned_at)
        return cls(
            pace=float(state.pace) if state.pace is not None else None,
            concurrency=int(state.concurrency),
            learned_at=float(state.learned_at),
        )


#: Whether the calls made in this context are a bulk send's or a stream's, which yield
#: their place in the scheduler's queues to the calls of a caller who waits for each
#: answer (see in_background).
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "aisix_async_background", default=False
)


@contextlib.contextmanager
def in_background() -> Iterator[None]:
    """Mark the calls made in this context (and the tasks it starts) as background work.

    A bulk send keeps as many requests queued as the client may have in flight: queued
    behind them in arrival order, a web handler's one-time password waited 4 s and its
    balance checks with 3 s deadlines all failed (a user's trial). Background callers take
    a slot or a turn only when no other caller waits for one; the pace is the same.
    """
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


class _Waiters:
    """Callers waiting for a slot or the gate: those not in the background first, each
    kind in arrival order."""

    def __init__(self) -> None:
        self._first: deque[anyio.Event] = deque()
        self._background: deque[anyio.Event] = deque()

    def __len__(self) -> int:
        return len(self._first) + len(self._background)

    def add(self) -> anyio.Event:
        event = anyio.Event()
        (self._background if _BACKGROUND.get() else self._first).append(event)
        return event

    def ahead(self) -> int:
        """How many a caller arriving now would wait behind (all, in the background)."""
        return len(self) if _BACKGROUND.get() else len(self._first)

    def remove(self, event: anyio.Event) -> None:
        if event in self._first:
            self._first.remove(event)
        else:
            self._background.remove(event)

    def wake_next(self) -> None:
        (self._first or self._background).popleft().set()


#: A caller with a deadline is refused as it arrives when the callers queued ahead of it,
#: going out at this many times the pace, would leave its turn past its deadline (the
#: pace may grow meanwhile, callers ahead may give up): paced here (see
#: Scheduler._check_own_queue) as on a shared schedule (SharedLimit).
QUEUE_PACE_MARGIN = 1.5


def _too_late(action: str, turn_in: float, deadline: float) -> DeadlineExceededError:
    """The refusal of a call whose turn, ``turn_in`` seconds away, comes after its
    ``deadline`` (anyio's clock); it says how far away that deadline is."""
    left = deadline - anyio.current_time()
    return DeadlineExceededError(action, None, turn_in=turn_in, left=left)


class TurnBeyondDeadline(Exception):
    """A :class:`PaceSource`'s answer: the next turn would come after the caller's
    deadline, so none was booked (see ``Scheduler._shared_turn``)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the next shared turn is {wait:.3g} s away")
        self.wait = wait


class SharedShare(Protocol):
    """A turn from a :class:`PaceSource`: the share of the pace this client may use."""

    @property
    def share(self) -> float: ...


class RunOfRefusals(Protocol):
    """Requests answered -1 one after another by every client sharing a pace (see
    ``shared_limit.FleetRun``): how many, over how many seconds up to the last."""

    @property
    def length(self) -> int: ...

    @property
    def span(self) -> float: ...


class PaceSource(Protocol):
    """A pace kept beyond this client (``shared_limit``: see ``shared_limit``).

    The scheduler asks it for each request's turn instead of pacing itself; when it has
    none to give (Redis down or slow) the scheduler paces itself, starting from the last
    share it was given. Concurrency and retries stay the scheduler's own.
    """

    async def take_turn(
        self, deadline: float | None = None, paced_here: float = 0.0
    ) -> SharedShare | None:
        """Wait for this request's turn; None: pace it yourself this time.

        ``deadline``: the caller's, on anyio's clock (None: none); a turn after it
        raises :class:`TurnBeyondDeadline` without being booked. ``paced_here``: seconds
        of requests this client still has queued at its own pace (told to pace
        themselves while the source failed), which go out beside its turns.
        """

    async def refused(self, turn: Any) -> RunOfRefusals | None:
        """A request dispatched at ``turn`` was answered -1; the run of -1 answers of every
        client of the source it belongs to, if known."""

    def check_queue(self, deadline: float, queued: int) -> None:
        """Raise :class:`TurnBeyondDeadline` if a caller with ``queued`` more callers of
        this client ahead of it than wait for a turn now cannot have its turn before
        ``deadline`` (anyio's clock), even at a pace well above the last one."""


def _check_retry(retry: object) -> None:
    # A truthy value of another type ("no", a dict) passed for the default policy, then
    # failed at the first request that needed it.
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ValidationError(
            f"retry must be a RetryPolicy, or None for the default; got {type(retry).__name__}"
        )


class Scheduler:
    """Runs each request attempt when its turn comes, retrying what is safe to retry."""

    #: Cut of the pace on a -1 when the limit's estimate is trusted: just under it.
    BETA = 0.9
    #: Cut on a -1 when the estimate is not trusted yet (the first -1, a burst's worth of
    #: answers): halve, as TCP leaves slow start, and measure again.
    BETA_UNSURE = 0.5
    #: Slots added per accepted answer in slow start: about x1.7 per round trip (the
    #: requests are spread over it, so not all of a trip's answers are back within it;
    #: simulated, no limit, 100 ms answers). Slower growth meets a low limit with fewer
    #: -1 answers and a high one later: 0.5 gave 13% fewer over the simulated cold grid
    #: (R 2-100, 20-300 ms answers) and up to 7% less goodput at 300 ms (worst seeds).
    SLOW_START = 1.0
    #: ... but no faster than doubling every this many seconds: a bucket's burst is spent
    #: in time, not in round trips, and at 5-20 ms answers slow start had four requests
    #: in flight (eight at R = 100) when the first -1 came back; now one or two up to
    #: R = 100 (tests/sim_gateway.py --where). On the simulated cold grid (R 2-100, answers
    #: jittered 20%, 4 seeds) the 20 ms cells met a third fewer -1 answers (R 2-10: 4-5
    #: a cell, 7-11 before), the 100 and 300 ms cells the same; goodput over the wider
    #: grid moved by 1.6% at most (R = 1000 at 20 ms: slow start takes 0.2 s more to
    #: reach the limit), but at R = 1 and 5 ms (0.967 against 1.020: 5 requests of 150).
    SLOW_START_DOUBLING_S = 0.1
    #: Answers accepted since the previous cut needed before their rate is trusted.
    MIN_SAMPLES = 4
    #: Answers accepted between two -1 of one episode (requests in flight at a cut)
    #: needed before their rate replaces an unsure cut's estimate (see
    #: _measure_episode): fewer, over a short span, are thrown off by answers that come
    #: back out of order (a busy host; tests/sim_gateway.py --jitter).
    EPISODE_SAMPLES = 16
    #: Accepted more than the ceiling allows since the last cut, by this share, proves
    #: the limit went up (see _proven_above). Any share: a ceiling read 5% low is then
    #: soon "proven" too low and probed fast, to twice the limit before the next -1 (17
    #: -1 answers in one episode at 20 requests/s and 300 ms), but with a share of 0.1 a
    #: ceiling read at 60% of the limit (after a state ten times too high) took 9 s to
    #: outgrow, by the gentle probe.
    PROVEN_MARGIN = 0.0
    #: Below the ceiling, the pace closes the gap with a time constant of this many
    #: requests: back at the ceiling within a few dozen requests, at any rate.
    RECOVERY = 8.0
    #: ... aiming this share above it (so it is crossed after about 20 requests).
    OVERSHOOT = 0.02
    #: At the ceiling the pace creeps up by this share per request ...
    CREEP = 0.0002
    #: ... and the excess over the ceiling doubles every this many requests. Near the
    #: ceiling the probe is gentle (a burst of 5 lasts about 130 requests: about one -1
    #: per 150 requests at any rate); a raised limit is proven by the answers
    #: themselves (PROVEN_MARGIN) and then probed fast.
    PROBE_DOUBLING = 60.0
    #: A cut to under this share of a rate measured twice alike before (a steady limit)
    #: is a drop: such a limit may come back (a gateway shedding load, a plan changed
    #: for a while), so until the old rate is reached again, or for DROP_MEMORY requests
    #: and DROP_MEMORY_S seconds (whichever ends later), the excess above the new
    #: ceiling doubles every DROP_DOUBLING requests instead. (A rate that was not
    #: steady, as a client's share of a bucket shared with others is not, counts no
    #: drop: brisker probes by the clients that lost share would only lose the others
    #: theirs.) On the simulated gateway, limits R -> R/2 -> 2R in 10 s phases (100 ms
    #: answers; tests/sim_gateway.py): doubling every 10 requests, remembered for 400
    #: requests only, got 0.63, 0.90 and 0.82 of the integral at R = 10, 40, 100 (at
    #: R = 100 the memory ran out in 8 s, before the limit came back; at R = 10 one
    #: doubling took 2 s); every 3 requests, remembered 30 s or more, 0.89, 0.95 and
    #: 0.96. A drop that stays costs more -1 answers while it is remembered: R = 40
    #: halved for two minutes, 1.4% of requests against 1.2%.
    DROP = 0.75
    DROP_DOUBLING = 3.0
    DROP_MEMORY = 400
    DROP_MEMORY_S = 30.0
    #: A client started from a RateState probes above it with its excess doubling every
    #: this many requests until it meets the limit itself (see _warm_start): brisk enough
    #: to outgrow a state remembered too low, gentler than after a drop, since a state
    #: handed on is most often still right.
    REMEMBERED_DOUBLING = 20.0
    #: ... or every this many seconds' worth of requests at the state's pace, if fewer
    #: (below 20 requests/s): a state that is right meets the limit a little sooner
    #: there (2 -1 answers in 20 s at 5 requests/s, against none), one remembered low
    #: is outgrown in half the time or less (from 3 to 10 requests/s: 16 s, not 42).
    REMEMBERED_DOUBLING_S = 1.0
    #: An excess this large accepted with no -1 means the limit went up (a burst of 5
    #: would be spent within about 50 requests): probe as fast as with no ceiling known.
    #: Lower, answers jittered by half the latency set it off at a steady limit.
    FAST_PROBE_AT = 0.15
    #: With no ceiling known (a state that had none), the pace doubles every this many
    #: requests; above a ceiling that was not trusted, so does the excess.
    UNSURE_DOUBLING = 6.0
    #: ... and no probe's excess doubles faster than every this many seconds. Counted in
    #: requests alone, a doubling takes less time the faster the pace, so the pace ran
    #: away: a state at 10 requests/s against a limit of 20 with a second's burst, 20 ms
    #: answers, went from 18 to 250 requests/s in half a second while the burst hid the
    #: limit, and met it with 14 -1 answers in 0.1 s (a user's trial; tests/sim_gateway.py
    #: has it). As slow start's, the bound is in time: a burst runs out in time. Two round
    #: trips of 100 ms, so with answers that slow or slower nothing changes.
    PROBE_DOUBLING_S = 0.2
    #: ... and it starts by this share per request.
    UNSURE_CREEP = 0.02
    #: A recent rate this much above the whole cycle's says the rate was still climbing
    #: (a raised limit being found) when the -1 came: the cut starts from the recent one.
    CLIMBING = 1.25
    #: Accepted answers that make up "recent" (see CLIMBING).
    RECENT = 8
    #: Answers of a cold start's first meeting with the limit kept to show its burst.
    MEETING_KEPT = 64
    #: A climb's cycle is read from at most this many of its last answers (see
    #: _climbed_to): about 5 ms of work at a -1.
    CLIMB_REPLAYED = 1024
    #: A client last measured being accepted at this many times its floor (2/s at the
    #: default floor) that then hears nothing but -1 at its floor opens its breaker as
    #: soon as one never accepted would (see _measured_far_above_floor).
    FAR_ABOVE_FLOOR = 4.0
    #: ... or was accepted that fast, RECENT answers in a row, within this many seconds.
    FAR_WINDOW = 60.0
    #: Seconds of its ceiling a client started from a state allows the bucket's burst
    #: before its first cut: its excess above the state stays under STATE_PROBE_CAP until
    #: more than that was accepted beyond the ceiling (see _proven_uncut).
    STATE_BURST = 2.0
    #: ... and its excess above the state stays under this (a burst of a second's worth
    #: is then spent in 2 s or more, not at once).
    STATE_PROBE_CAP = 0.5
    #: A learned state loses half its trust in this many seconds (see RateState).
    STATE_HALF_LIFE = 3600.0
    #: Trusted less than this (older than a half-life), a state starts as a cold client
    #: does, one request in flight doubling every round trip, but only up to the pace it
    #: remembers (see _warm_start): its pace lowered for age, and stepped up in requests,
    #: started slower than a cold client (a state three hours old, at 5 requests/s,
    #: took 3 s for its first request after the one at the start).
    STATE_COLD_BELOW = 0.5
    #: Older than this, a learned state is ignored: a cold start.
    STATE_MAX_AGE = 86400.0
    #: A state dated further ahead of this clock than this (s) was written by a clock
    #: that is wrong, or by hand: its age is unknown, so it is ignored (a cold start).
    #: Within it, clocks that disagree a little: taken as learned just now.
    STATE_MAX_AHEAD = 300.0

    def __init__(
        self,
        *,
        max_concurrency: int = 16,
        initial_concurrency: int | None = None,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryDetails], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rate_state: RateState | None = None,
        wall_clock: Callable[[], float] = time.time,
        shared: PaceSource | None = None,
    ) -> None:
        check_number(max_concurrency, "max_concurrency", integer=True, minimum=1)
        if max_rate is not None:
            check_number(max_rate, "max_rate (requests/s)")
        if initial_concurrency is not None:
            check_number(initial_concurrency, "initial_concurrency", integer=True, minimum=1)
        _check_retry(retry)
        if rate_state is not None and not isinstance(rate_state, RateState):
            raise ValidationError(
                f"rate_state must be a RateState (see RateState.from_dict), got "
                f"{type(rate_state).__name__}"
            )
        # A cold start opens with one request in flight: a low limit is not met with a
        # burst far above it, and slow start doubles it every round trip while requests
        # queue, so a high one is reached in a few round trips.
        start = initial_concurrency if initial_concurrency is not None else 1
        if not 1 <= start <= max_concurrency:
            raise ValidationError(
                f"initial_concurrency must run from 1 to max_concurrency ({max_concurrency}), "
                f"got {initial_concurrency!r}"
            )
        self._max = max_concurrency
        self._limit = float(start)
        self._max_rate = max_rate
        self._min_rate = min(min_rate, max_rate) if max_rate is not None else min_rate
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        # Concurrency: a FIFO of waiters, each woken when a slot frees for it.
        self._in_flight = 0
        self._slot_waiters = _Waiters()
        # Slow start (the limit doubles per round trip) lasts until the first -1 ...
        self._slow_start = True
        # ... or, started from an old state, until it reaches this pace (see _warm_start).
        self._slow_start_cap: float | None = None
        # The last cut was the first after a start from a state (see _on_rate_limited).
        self._cut_after_state = False
        # When a slow start capped by an old state handed over to the pace (see _estimate).
        self._paced_since: float | None = None
        # Pace: None until the gateway first says -1; each dispatch reserves the next
        # 1/pace-second step, so waiters leave in arrival order and evenly spaced.
        self._pace: float | None = None
        # The rate the gateway was last seen to accept at its limit; 0: not known.
        self._ceiling = 0.0
        self._sure = False
        # The last rate this client was measured to be accepted at (a sure ceiling; 0:
        # none yet), for the breaker (see _measured_far_above_floor).
        self._measured = 0.0
        # While the ceiling in use is a climb read at its last answers' pace above a
        # measured one (see _climbed_to), the rate measured before it, which rate_state()
        # hands on until a cycle that was not climbing measures the limit again; 0: none.
        self._unconfirmed_from = 0.0
        self._learned_at: float | None = None
        self._first_dispatch: float | None = None
        # When the client last had no request in flight or waiting for a slot (None:
        # busy since), and when its busy spell began after a gap (see _note_demand).
        self._idle_from: float | None = None
        self._busy_since = -math.inf
        self._next_at = 0.0
        # When the last turn was taken, and the sleep of the caller waiting for the next
        # (see _sooner_in_slow_start).
        self._turn_at: float | None = None
        self._turn_sleep: anyio.CancelScope | None = None
        self._pace_waiting = 0
        # The gate to the next turn (see _take_gate): whether a caller holds it, and the
        # callers queued for it.
        self._gate_held = False
        self._gate_waiters = _Waiters()
        self._last_cut = -math.inf
        self._previous_cut = -math.inf
        # Answers accepted since the last cut for requests already in flight at it.
        self._episode_accepted = 0
        # The RateState started from with a pace, until this client meets the limit
        # itself (see _warm_start, rate_state).
        self._remembered: RateState | None = None
        self._dropped_from = 0.0
        self._dropped_at = 0
        self._dropped_time = 0.0
        # The last rate measured twice alike (see _remember_drop); 0: none yet.
        self._steady = 0.0
        self._cuts = 0
        self._accepted: deque[float] = deque(maxlen=4096)
        self._dispatched: deque[float] = deque(maxlen=4096)
        self._rtt: float | None = None
        self._recent_rtts: deque[float] = deque(maxlen=4)
        self._rtt_var = 0.0
        self._last_accepted_pace: float | None = None
        # The first meeting with the limit (when the last answers accepted before the
        # first -1 came back, newest first, and when it did), which shows the bucket's
        # burst (see _burst_met), until a cut first measures the limit.
        self._first_meeting: tuple[tuple[float, ...], float] | None = None
        self._shared = shared
        # The shared source's run of -1 answers, for the breaker (see _fleet_refusals).
        self._fleet_run: tuple[int, float] | None = None
        # Whether the last attempt ended with no answer on the limit (unreachable, a 502):
        # the pace does not grow meanwhile (see _await_pace).
        self._failing = False
        # What was learned before the current run of -1 answers (None: the last answer
        # was accepted), and, once that run opened the breaker, what to go back to when
        # an answer is accepted again (see _storm_over).
        self._before_run: _Learned | None = None
        self._after_storm: _Learned | None = None
        # Counters for stats.
        self._requests = 0
        self._rate_limited = 0
        self._retries = 0
        #: Fails calls at once while -1 never clears (IP binding, time window). Once
        #: this client has been accepted, a run must be twice as long to open it:
        #: clients sharing a low limit see runs of -1 by chance (see breaker), unless
        #: it was accepted far faster than its floor (see _measured_far_above_floor).
        self.breaker = Breaker(seen_factor=2.0, on_open=self._breaker_opened)
        # The waits of callers that leave when the breaker opens (see _wait_or_leave).
        self._leavers: set[anyio.CancelScope] = set()
        # Every caller's wait, which close() ends; and, while it waits for the requests
        # on the wire, the event the last of them sets (see wait_idle).
        self._waits: set[anyio.CancelScope] = set()
        self._closing = False
        self._idle: anyio.Event | None = None
        if rate_state is not None:
            self._warm_start(rate_state, initial_concurrency is not None)

    def adopt(self, state: RateState) -> bool:
        """Start from ``state`` if nothing was sent or learned yet; say whether it was."""
        if self._requests or self._pace is not None or not self._slow_start:
            return False
        self._warm_start(state, told_concurrency=False)
        return True

    @classmethod
    def state_trust(cls, state: RateState, now: float) -> float | None:
        """How much a client starting at wall-clock ``now`` trusts ``state``: 1 when fresh,
        halving every STATE_HALF_LIFE seconds of age; None, not at all: older than
        STATE_MAX_AGE, or dated more than STATE_MAX_AHEAD ahead of the clock."""
        age = now - state.learned_at
        if age > cls.STATE_MAX_AGE or -age > cls.STATE_MAX_AHEAD:
            return None
        return float(0.5 ** (max(0.0, age) / cls.STATE_HALF_LIFE))

    def _warm_start(self, state: RateState, told_concurrency: bool) -> None:
        now = self._wall_clock()
        age = now - state.learned_at
        trust = self.state_trust(state, now)
        if trust is None:
            said = f"{-age:.0f} s ahead of this clock" if age < 0 else f"{age:.0f} s ago"
            logger.info("rate state learned %s is not to be trusted: a cold start", said)
            return
        raw_age, age = age, max(0.0, age)
        if state.pace is not None and state.pace < self._min_rate:
            # Under this client's floor: it could not go that slowly, and climbing from
            # the floor in requests (0.5 a second) is slower than any cold start.
            logger.info(
                "rate state pace %.3g requests/s is under min_rate (%g): a cold start",
                state.pace,
                self._min_rate,
            )
            return
        if state.pace is not None and trust < self.STATE_COLD_BELOW:
            # Old: a slow start, as cold, that stops at the pace remembered instead of
            # meeting the limit (see _leave_slow_start). A limit lowered since is met as
            # a cold client meets it; one that is still there, with no -1.
            self._ceiling = state.pace
            self._slow_start_cap = self.BETA * state.pace
            self._learned_at = state.learned_at
        elif not told_concurrency:
            self._limit = float(max(1, min(self._max, round(state.concurrency * trust))))
        if state.pace is not None and self._slow_start_cap is None:
            # Just under what was learned, less the older it is: an old state starts
            # cautiously. Its ceiling is what was learned, not lowered: the pace is back
            # there within a few dozen requests, as after a cut, where climbing from a
            # lowered ceiling by the probe made a two-hour-old state three times slower
            # than a cold start. A remembered limit may have been raised since (or
            # remembered low: a share of a bucket others shared), so the probe above it
            # is brisker (REMEMBERED_DOUBLING) until this client meets the limit itself: a
            # limit three times the state's is found within about 150 requests, where the
            # gentle probe needed many hundreds.
            self._ceiling = state.pace
            self._pace = max(self._min_rate, self.BETA * state.pace * trust)
            self._learned_at = state.learned_at
            self._sure = True
            self._slow_start = False
        # Handed on as given until this client measures the limit (see rate_state), a
        # state with no pace too: re-dated now, its concurrency would never age.
        self._remembered = state
        if self._slow_start_cap is not None:
            pace = f"a slow start up to {self._slow_start_cap:.4g} requests/s"
        else:
            pace = "pace none" if self._pace is None else f"pace {self._pace:.4g} requests/s"
        logger.info(
            "starting from a rate state learned %s: %s, concurrency limit %d",
            f"{age:.0f} s ago"
            if raw_age >= 0
            else f"{-raw_age:.0f} s ahead of this clock (as now)",
            pace,
            self.limit,
        )

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

    def rate_state(self) -> RateState:
        """What was learned so far, as a :class:`RateState` a new client can start from.

        Its pace is the rate last measured at the limit (or started from); None until a
        rate was measured: the estimate after a first -1 still holds the bucket's burst
        (at R = 2, a cold client's first -1 estimates 30 requests/s or more), and a new
        client would take it as known.
        """
        if self._remembered is not None:
            # Nothing measured since: what was given, as given (neither its pace nor its
            # concurrency lowered for its age, which the next client does by itself
            # from learned_at: lowered here too, they were lowered twice).
            return self._remembered
        # The ceiling is the rate the gateway accepted; the pace just now may be in the
        # dip after a cut or in a probe above it. A ceiling not trusted (a fast probe
        # after the answers proved it too low, a cut from few answers) leaves the rate
        # last measured, if any.
        pace = self._ceiling if self._sure and self._ceiling > 0 else (self._measured or None)
        if self._unconfirmed_from:
            # A climb's last answers may have been a bucket's burst: a client given a
            # limit halved since its state (10 to 5 requests/s, burst 5) probed back up
            # after 35 s, read 10.6 and handed that on until its next -1 (a user's trial).
            pace = self._unconfirmed_from
        learned_at = self._learned_at if self._learned_at is not None else self._wall_clock()
        return RateState(pace=pace, concurrency=self.limit, learned_at=learned_at)

    # -- the concurrency limit -----------------------------------------------------

    async def _acquire_slot(self) -> bool:
        """Take a slot; return True when we had to wait for one (demand exceeds the limit)."""
        if self._in_flight < self.limit and not self._slot_waiters:
            self._in_flight += 1
            return False
        event = self._slot_waiters.add()
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
        if not self._in_flight and not self._slot_waiters:
            self._idle_from = self._clock()
        if not self._in_flight and self._idle is not None:
            self._idle.set()

    def _note_demand(self) -> None:
        # A request arrives. After a gap of more than two steps with nothing to send, the
        # gateway's bucket refilled: what it accepted before says nothing of its rate, so
        # an estimate counts from here (see _estimate). Counted over the gap, a web
        # service's first burst after a few quiet seconds read as a rate of a request or
        # two over those seconds: the pace went to its floor and stayed near it for
        # 20-35 s (a user's trial; simulated, 0.04-0.15 of the limit after 12 s idle).
        idle_from, self._idle_from = self._idle_from, None
        if idle_from is None:
            return
        now = self._clock()
        spacing = self._spacing()
        if now - idle_from > (2.0 / spacing if spacing else 0.0):
            self._busy_since = now

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Refuse every request not yet written: those waiting for a slot, a turn or a
        retry leave now with :class:`ClientClosedError`, and so does every later one.
        Requests on the wire are let finish (see :meth:`wait_idle`)."""
        self._closing = True
        for scope in list(self._waits):
            scope.cancel()

    async def wait_idle(self) -> None:
        """Return once no request holds a slot (after :meth:`close`: once those on the
        wire have their answers)."""
        while self._in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    def _wake(self) -> None:
        # A slot is handed over by counting it before the waiter runs, so no newcomer can
        # take it in between (FIFO, no starvation).
        while self._slot_waiters and self._in_flight < self.limit:
            self._in_flight += 1
            self._slot_waiters.wake_next()

    def _raise_limit(self, to: float) -> None:
        if to > self._limit:
            self._limit = min(float(self._max), to)
            self._wake()

    def _enough_slots(self) -> None:
        # While paced, the pace says how fast; the concurrency limit must not say less,
        # so it is kept at what the pace needs for one round trip, with a slot to spare.
        pace = self.pace
        if pace is not None and self._rtt is not None:
            self._raise_limit(math.ceil(pace * self._rtt) + 1.0)

    # -- the pace ------------------------------------------------------------------

    def _spacing(self) -> float | None:
        # Requests per second allowed out: the pace, or in slow start the limit's worth
        # per round trip, spread evenly so that a small bucket is not met with a clump.
        pace = self.pace
        if pace is None and self._slow_start and self._rtt is not None:
            # Over the round trip of _slow_start_rtt, not the smoothed one alone: one slow
            # answer (a cold connection, a gateway's hiccup) smoothed in for a dozen
            # answers spaced the first requests 8 s apart, and a web service's handlers
            # stalled for 30 s with every later answer back in 50 ms (a user's trial).
            # The limit bounds what is in flight whatever the spacing.
            rtt = self._slow_start_rtt()
            if rtt is not None and rtt > 0:
                return self._limit / rtt
        return pace

    async def _await_pace(self) -> None:
        if self._spacing() is None:
            return
        self._pace_waiting += 1
        try:
            await self._take_gate()
            try:
                waited = await self._await_turn()
            finally:
                self._pass_gate()
        finally:
            self._pace_waiting -= 1
        # Grown only while the gateway answers: with it down (connections refused, 502s)
        # every retry waited for its turn and grew the pace, from 30 to 1,200 requests/s
        # with nothing accepted, and the restart met a burst of -1 (a user's trial).
        if waited and self._pace is not None and self.pace != self._max_rate and not self._failing:
            self._grow(self._pace)

    async def _take_gate(self) -> None:
        # Turns are taken one caller at a time, in arrival order: only the caller at the
        # gate sleeps towards the next turn. Booking turns ahead (each waiter its own
        # time) cannot survive waiters that give up: a turn given back leaves either a
        # hole (nothing sent while impatient callers keep coming) or, given back from the
        # end, two waiters booked for one instant (a clump of requests the gateway refuses).
        if not self._gate_held and not self._gate_waiters:
            self._gate_held = True
            return
        event = self._gate_waiters.add()
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                # Handed the gate and cancelled at once: pass it on.
                self._pass_gate()
            else:
                self._gate_waiters.remove(event)
            raise

    def _pass_gate(self) -> None:
        if self._gate_waiters:
            self._gate_waiters.wake_next()
        else:
            self._gate_held = False

    async def _await_turn(self) -> bool:
        """At the gate: sleep until the next turn is due, take it; True if it slept."""
        slept = False
        while (pace := self._spacing()) is not None:
            now = self._clock()
            due = self._next_at
            if due <= now:
                # The next turn is one step after this one: after the time it was due when
                # this caller slept for it (a late wake-up does not stretch the spacing),
                # after now when the client was idle.
                self._turn_at = due if slept else now
                self._next_at = self._turn_at + 1.0 / pace
                return slept
            # A caller cancelled here takes nothing: the turn stays due for the next one.
            # A -1 while it sleeps moves the next turn (see _on_rate_limited): it is read
            # again on waking; a slow start's faster answer brings it nearer and wakes the
            # caller (see _sooner_in_slow_start). Otherwise the turn is this caller's,
            # whatever the clock reads (a timer may fire a hair early).
            with anyio.CancelScope() as self._turn_sleep:
                await self._sleep(due - now)
            self._turn_sleep = None
            slept = True
            if self._next_at == due:
                self._turn_at = due
                self._next_at = due + 1.0 / pace
                return slept
        return slept

    def _slow_start_rtt(self) -> float | None:
        # The round trip slow start spaces its requests over (see _spacing).
        if self._rtt is None:
            return None
        # The median of the last few once it is under half the smoothed round trip: one
        # slow answer then weighs no more than it should. Not otherwise: answers that
        # merely vary (a busy host) would be spaced closer than their round trip, and a
        # cold client met a low limit with more -1 answers (1,246 against 1,033 over the
        # simulated cold grid).
        median = statistics.median_low(self._recent_rtts)
        return median if median < self._rtt / 2 else self._rtt

    def _sooner_in_slow_start(self, rtt_before: float | None) -> None:
        # An answer came back far faster than those before it (a slow first answer: a
        # cold connection, a gateway's hiccup): the next turn, reserved one step of the
        # old round trip after the last, comes nearer (see _spacing). Left as reserved,
        # one 8 s answer held the next request for 8 s after the answers were back to
        # 50 ms. Only then: a step that grew with the limit waits as reserved, as it did
        # (pulled in as well, a cold client met a low limit with more -1 answers).
        rtt = self._slow_start_rtt()
        if (
            self._pace is not None
            or not self._slow_start
            or self._turn_at is None
            or rtt_before is None
            or rtt is None
            or rtt > rtt_before / 2
        ):
            return
        spacing = self._spacing()
        if spacing is None:
            return
        sooner = self._turn_at + 1.0 / spacing
        if sooner < self._next_at:
            self._next_at = sooner
            if self._turn_sleep is not None:
                self._turn_sleep.cancel()

    def _grow(self, pace: float) -> None:
        # Called once per dispatch that had to wait for the pace, i.e. per request of
        # demand above the pace: an idle client never talks itself into a rate it has not
        # tried. Every step is a share of the pace and counted in requests, not seconds,
        # so the controller behaves alike at 2 and at 500 requests/s: the shape is
        # CUBIC's, a quick return to the ceiling, a gentle creep at it, and past it a probe
        # that accelerates, so a raised limit is found while a steady one is met seldom.
        ceiling = self._ceiling
        # Requests sent in one round trip: no probe may double faster than the answers
        # that would say "too fast" can come back.
        per_trip = pace * self._rtt if self._rtt is not None else 0.0
        if ceiling <= 0:
            grown = pace * 2.0 ** (1.0 / max(self.UNSURE_DOUBLING, per_trip))
        elif pace < ceiling:
            # Aimed a little above the ceiling, so that it is reached, not approached.
            grown = pace + (ceiling * (1.0 + self.OVERSHOOT) - pace) / self.RECOVERY
        else:
            excess = pace / ceiling - 1.0
            # Before its first cut a client started from a state has met no empty bucket,
            # only a full one: an excess accepted may be its burst (a second's worth, on
            # many gateways; one at 40 requests/s probed fast to 1000 before its -1).
            uncut = not math.isfinite(self._last_cut)
            if self._sure and self._proven_above(ceiling):
                # The ceiling is known to be too low: probe as with none trusted.
                self._sure = False
            if (self._sure or self._cut_after_state) and (excess < self.FAST_PROBE_AT or uncut):
                gentle = self._gentle_doubling(ceiling)
                doubling = max(gentle, 2.0 * per_trip, pace * self.PROBE_DOUBLING_S)
                creep = self.CREEP
                if self._remembered is not None:
                    # A state's probe doubling in less than REMEMBERED_DOUBLING requests
                    # (a low pace, see _gentle_doubling) starts its excess as far up its
                    # doublings as it would at 20: else the first five doublings, which
                    # show nothing, were most of the time it took.
                    creep *= max(1.0, self.REMEMBERED_DOUBLING / doubling)
                excess += creep + excess * math.log(2.0) / doubling
                if uncut:
                    # ... so the excess grows no further than this until the answers
                    # prove the limit higher.
                    excess = min(excess, self.STATE_PROBE_CAP)
            else:
                # Fast, but as the gentle probe no faster than two round trips' requests
                # per doubling: the -1 that ends it comes back a round trip after the
                # limit is crossed, and doubling every trip sent the pace to twice the
                # limit by then (on the simulated gateway, a limit raised from 40 to 80
                # requests/s with 300 ms answers: 51-53 -1 answers in the 10 s after the
                # raise, 36-40 at two trips; at 100 ms, 26 and 30 from 40 to 80, 10-11
                # and 8 from 10 to 20, the raised limit reached about as soon).
                doubling = max(self.UNSURE_DOUBLING, 2.0 * per_trip, pace * self.PROBE_DOUBLING_S)
                excess += self.UNSURE_CREEP + excess * math.log(2.0) / doubling
            grown = ceiling * (1.0 + excess)
        self._pace = min(grown, self._max_rate_or_inf)
        self._enough_slots()

    def _remember_drop(self, before: float, now: float) -> None:
        # ``before``: the last sure ceiling; ``now``: the one this cut measured. Two alike
        # make a steady level; a cut well below the last steady level is a drop (see
        # DROP), whether it came in one cut or in two (the first cut after a drop is
        # measured partly before it). It is forgotten once a steady level is back near
        # the old one, or after DROP_MEMORY requests and DROP_MEMORY_S seconds (_after_drop).
        if abs(now - before) <= (1.0 - self.BETA) * before:
            self._steady = now
        if now < self.DROP * self._steady:
            self._dropped_from = max(self._dropped_from, self._steady)
            self._dropped_at = self._requests
            self._dropped_time = self._clock()
            self._steady = 0.0
        elif self._steady >= self.BETA * self._dropped_from:
            # Back at the old level, measured twice (a single rate measured high may be a
            # probe's last answers, not the limit).
            self._dropped_from = 0.0

    def _gentle_doubling(self, ceiling: float) -> float:
        # Requests per doubling of the excess near a trusted ceiling (see PROBE_DOUBLING).
        if self._remembered is not None and self._requests <= self.DROP_MEMORY:
            # Counted in requests, but no slower than a doubling a second: a state
            # remembered low is most often remembered at a low pace (a share others took
            # the rest of, a plan since raised), where 20 requests were 4-7 s a doubling
            # and the limit was reached after 30-45 s, later than a cold client's.
            return min(self.REMEMBERED_DOUBLING, max(1.0, ceiling * self.REMEMBERED_DOUBLING_S))
        return self.DROP_DOUBLING if self._after_drop(ceiling) else self.PROBE_DOUBLING

    def _after_drop(self, ceiling: float) -> bool:
        if (
            self._dropped_from
            and self._requests - self._dropped_at > self.DROP_MEMORY
            and self._clock() - self._dropped_time > self.DROP_MEMORY_S
        ):
            self._dropped_from = 0.0
        return ceiling < self._dropped_from

    def _proven_above(self, ceiling: float) -> bool:
        # The last cut's -1 found the bucket empty (less than a token), so since then it
        # can have accepted at most its rate times the time, plus one; and as many more
        # as may have crossed that -1 on the way back (answers spread over four times
        # the round trip's variation, at the ceiling; one at least). More than that, by
        # PROVEN_MARGIN, proves the limit is above the ceiling, whatever the burst: a
        # raised limit is found with no -1, and the probe near the ceiling can stay
        # gentle. Before any cut the bucket was not found empty: see _proven_uncut.
        start = self._last_cut
        if not math.isfinite(start):
            return self._proven_uncut(ceiling)
        span = self._clock() - start
        if span <= 0:
            return False
        crossed = 1.0 + ceiling * 4.0 * self._rtt_var
        accepted = self._count_since(self._accepted, start)
        return (accepted - 1.0 - crossed) / span > ceiling * (1.0 + self.PROVEN_MARGIN)

    def _proven_uncut(self, ceiling: float) -> bool:
        # Before any cut (a client started from a state): the bucket may have been full
        # at the start, so what it accepted since may exceed its rate times the time by
        # its burst. More than STATE_BURST seconds of the ceiling beyond that proves the
        # ceiling too low (a state remembered low), whatever a plausible burst.
        # A bucket holds at most its burst at any moment, so this bounds every span, not
        # only the whole run: the last 8, 16, 32 ... answers are each checked, and the
        # probe is not held back by the slower start of the run.
        times, now = self._accepted, self._clock()
        allowed = 1.0 + self.STATE_BURST * ceiling
        count = 8
        while count <= len(times):
            span = now - times[-count]
            if span > 0 and count - allowed > ceiling * span:
                return True
            count *= 2
        return False

    @property
    def _max_rate_or_inf(self) -> float:
        return self._max_rate if self._max_rate is not None else math.inf

    def _on_answer(self, dispatched_at: float, now: float) -> None:
        # A smoothed round trip (as TCP's SRTT): how many slots a pace needs.
        sample = now - dispatched_at
        self._recent_rtts.append(sample)
        if self._rtt is not None:
            # ... and how much it varies (TCP's RTTVAR): answers this much apart may
            # come back out of order.
            self._rtt_var += (abs(sample - self._rtt) - self._rtt_var) / 4.0
        self._rtt = sample if self._rtt is None else self._rtt + (sample - self._rtt) / 8.0

    def _on_accepted(
        self, waited_for_slot: bool, dispatched_at: float, sent_at_pace: float | None
    ) -> None:
        now = self._clock()
        self._before_run = None
        if self._after_storm is not None:
            self._storm_over()
        rtt_before = self._slow_start_rtt()
        self._on_answer(dispatched_at, now)
        self._accepted.append(now)
        if self._previous_cut <= dispatched_at < self._last_cut:
            self._episode_accepted += 1
        self._last_accepted_pace = sent_at_pace
        if waited_for_slot and self._limit < self._max:
            # While requests queue for a slot: slow start adds one slot per answer (the
            # limit doubles every round trip, or every SLOW_START_DOUBLING_S if longer),
            # then one per round trip's worth.
            if not self._slow_start:
                step = 1.0 / self._limit
            elif self._rtt is not None and self._rtt < self.SLOW_START_DOUBLING_S:
                step = 2.0 ** (self._rtt / self.SLOW_START_DOUBLING_S) - 1.0
            else:
                step = self.SLOW_START
            self._raise_limit(self._limit + step)
        self._leave_slow_start()
        self._sooner_in_slow_start(rtt_before)
        self._enough_slots()

    def _leave_slow_start(self) -> None:
        # Started from an old state: paced at the pace it remembers once slow start has
        # reached it, and probing above it from there as a warm client does.
        cap = self._slow_start_cap
        if cap is None or not self._slow_start:
            return
        spacing = self._spacing()
        if spacing is not None and spacing >= cap:
            self._pace = cap
            self._sure = True
            self._slow_start = False
            self._slow_start_cap = None
            self._paced_since = self._clock()

    def _sendable(self, pace: float) -> float:
        # The rate a pace can send at: no more than the concurrency limit's requests per
        # round trip. A client started from a state ten times the limit (a cache from
        # another plan) paced at 360 but sent 53 requests/s, 16 at a time, at 300 ms:
        # cut from the pace, it needed four -1 episodes to come down, and met more -1
        # answers than a cold client.
        if self._rtt is None or self._rtt <= 0:
            return pace
        return min(pace, self.limit / self._rtt)

    def _count_since(self, times: deque[float], start: float) -> int:
        return len(times) - bisect.bisect_right(times, start)

    def _estimate(self, now: float) -> tuple[float, int, bool]:
        """The rate the gateway accepted just before this -1, how many answers show it,
        and whether it is a climb read at its last answers' pace above a measured ceiling
        (see _climbed_to), which rate_state() does not hand on until a cycle confirms it.

        Between two -1 answers the bucket went from empty to empty, so what it accepted
        in between, over that time, is its rate, burst or no burst (unless the client
        sent less than that for a long while: then it is an underestimate, soon
        outgrown). While the rate climbs (a raised limit being found) the whole cycle's
        average lags behind it: the last few answers show where it got to, or only the
        bucket's burst being spent (see _climbed_to).
        """
        start = self._last_cut
        if not math.isfinite(start):
            # Before any cut: since the pace took over from a slow start (whose climb
            # would read as a lower rate), else since the first request.
            if self._paced_since is not None:
                start = self._paced_since
            elif self._first_dispatch is not None:
                start = self._first_dispatch
                if self._remembered is not None:
                    # Started from a state, paced: from a round trip after the first
                    # request, when answers can first come back; that round trip counted
                    # made the rate read low by its share of the span. One started at 40
                    # requests/s with 300 ms answers read 37 at its first -1, then took
                    # the limit, proven above that, for a raised one: its fast probe
                    # reached 66 (27 -1 answers in 20 s, against 7). A cold client halves
                    # what it reads then, which holds the burst: read lower, its cuts come
                    # down to a low limit in fewer steps (counted from the round trip:
                    # 6-7 -1 answers where 5-6, at 2 requests/s and 100 ms on the emulator).
                    start = min(now, start + (self._rtt or 0.0))
            else:
                start = now
        # Only the current busy spell: before it the client sent nothing for a while, and
        # the bucket refilled (see _note_demand).
        start = max(start, self._busy_since)
        span = max(now - start, 1e-3)
        count = self._count_since(self._accepted, start)
        # Few answers: half a request more, so that none at all still bounds the rate
        # (less than one token came in that time) rather than saying nothing.
        rate = (count + (0.5 if count < self.MIN_SAMPLES else 0.0)) / span
        if count > self.MIN_SAMPLES:
            recent_count = min(self.RECENT, count - 1)
            recent_from = self._accepted[-recent_count - 1]
            recent = recent_count / max(self._accepted[-1] - recent_from, 1e-3)
            if recent > self.CLIMBING * rate:
                # Climbing: the last request accepted went out at the pace of its
                # dispatch, which the answers' spacing, averaged, trails.
                climbed = max(recent, self._last_accepted_pace or 0.0)
                if self._first_meeting is None:
                    # Above a measured ceiling (see _climbed_to): the climb's own reading.
                    return climbed, count, True
                rate = self._climbed_to(rate, start, count, now, climbed)
        return rate, count, False

    def _climbed_to(
        self, average: float, start: float, count: int, now: float, climbed: float
    ) -> float:
        # A climb's last answers may be a bucket's burst being spent, not a raised limit:
        # a pace held under the limit for a while (a ceiling read low from few answers)
        # fills the bucket, and the probe that follows is accepted past the limit until
        # the burst is gone. Read as the limit, that sent a cold client at 10 requests/s
        # (burst 5, 20 ms answers) to a sure pace of 17-19: one run in three on the
        # simulated gateway, and a rate state saved at twice the limit. The whole cycle's
        # average is no better: while the pace was under the limit the full bucket let
        # tokens go to waste (at 1 request/s, a pace of 0.59 held for 50 s read 0.81).
        # With the bucket's burst known, the limit is the steady rate that, filling a
        # bucket that holds no more than that burst, empty at the last cut, pays for
        # every answer accepted since and leaves it empty now (_left_at). Read with a
        # burst too large, the rate reads low, and the pace stays under a limit it then
        # probes gently: so the burst is the least the first meeting shows (see
        # _burst_met). With none known (a client sharing the bucket with others sees
        # little of it), or a cycle too short to tell a rate from the burst, the climb's
        # own reading, as before. Called only until the limit is first measured: a climb
        # above a measured ceiling is a raised limit, or capacity another client sharing
        # the bucket let go, which such a reading (the cycle's constant rate) took for
        # the share this client had had (simulated, 2 clients at 10 requests/s: one
        # cut its pace, the other climbed to 14 and read 6, 0.91 of R for 20 s).
        burst = self._burst_met(average)
        if burst < 1.0 or count <= burst + 1.0:
            return climbed
        # The cycle's answers, at most CLIMB_REPLAYED of the last (the bucket taken as
        # empty before the first kept: the rate read high, if anything).
        count = min(count, self.CLIMB_REPLAYED + 1)
        times = list(itertools.islice(reversed(self._accepted), count))[::-1]
        if count > self.CLIMB_REPLAYED:
            start, times = times[0], times[1:]
        if self._left_at(times, start, now, climbed, burst) <= 0.0:
            return climbed
        low, high = average, climbed
        for _ in range(24):
            middle = (low + high) / 2.0
            if self._left_at(times, start, now, middle, burst) <= 0.0:
                low = middle
            else:
                high = middle
        return high

    @staticmethod
    def _left_at(
        times: Sequence[float], start: float, now: float, rate: float, burst: float
    ) -> float:
        # Tokens left now in a bucket of ``burst`` filled at ``rate`` from empty at
        # ``start``, one taken at each of ``times`` (negative: the rate could not have
        # paid for them).
        tokens, at = 0.0, start
        for accepted_at in times:
            tokens = min(burst, tokens + rate * (accepted_at - at)) - 1.0
            at = accepted_at
        return min(burst, tokens + rate * (now - at))

    def _burst_met(self, rate: float) -> float:
        # The least burst the first meeting with the limit shows, if the limit then was
        # no more than ``rate``: k answers accepted within a span need k tokens, of which
        # the bucket held all but ``rate`` times the span at its start (less one, for
        # answers whose time here is off by their way back). 0: none shown.
        if self._first_meeting is None:
            return 0.0
        times, met_at = self._first_meeting
        burst = 0.0
        for k, at in enumerate(times, start=1):
            burst = max(burst, k - 1.0 - rate * (met_at - at))
        return burst

    def _measure_episode(self, now: float) -> None:
        # The requests in flight at a cut reach a bucket the cut's -1 found empty: from
        # that -1 to this one it stayed empty, so what it accepted in between, over that
        # time, is its rate, to a request. With enough of them (many requests in
        # flight: a high limit or a long round trip) that beats any estimate from before
        # the cut, which after a cold start still holds the burst: the pace goes just
        # under it at once instead of halving and climbing back past it. Only an unsure
        # estimate is replaced: a sure one spans a whole cycle, which a short episode
        # measured under jittered answers does not beat.
        accepted = self._episode_accepted
        if self._sure or accepted < self.EPISODE_SAMPLES:
            return
        rate = accepted / max(now - self._last_cut, 1e-3)
        self._first_meeting = None
        self._unconfirmed_from = 0.0
        self._ceiling = self._measured = rate
        self._sure = True
        self._remembered = None
        self._pace = max(self._min_rate, min(self.BETA * rate, self._max_rate_or_inf))
        self._enough_slots()

    def _on_rate_limited(self, dispatched_at: float, shared_turn: bool = False) -> None:
        # ``shared_turn``: the request went at a turn of the shared schedule, whose own cut
        # is the one in force (and logged); this one only readies the pace this client
        # falls back to, should Redis stop answering.
        self._rate_limited += 1
        now = self._clock()
        if self._before_run is None and self._pace is not None:
            self._before_run = _Learned(
                self._pace,
                self._ceiling,
                self._sure,
                self._measured,
                self._limit,
                self._unconfirmed_from,
            )
        self._on_answer(dispatched_at, now)
        if dispatched_at < self._last_cut:
            # In flight when the last cut was made: it says nothing new about "too fast",
            # but it measures the limit (see _measure_episode).
            if dispatched_at >= self._previous_cut:
                self._measure_episode(now)
            return
        accepted_rate, samples, unconfirmed = self._estimate(now)
        if self._pace is not None:
            sending_rate = self._sendable(self._pace)
        else:
            # Slow start: as fast as it was sending when the -1 came.
            spacing = self._spacing()
            sending_rate = spacing if spacing is not None else math.inf
        base = min(accepted_rate, sending_rate) if accepted_rate > 0 else sending_rate
        # A client started from a state met a full bucket, not an empty one: what it
        # accepted until its first -1 holds that bucket's burst, so the rate read then is
        # too high (by the burst over the time). Not trusted, and not handed on as
        # learned: the state given stays what rate_state() says until the next -1
        # measures the limit from one empty bucket to the next.
        after_state = self._remembered is not None and not math.isfinite(self._last_cut)
        if not math.isfinite(self._last_cut) and self._first_dispatch is not None:
            met = min(self._count_since(self._accepted, self._first_dispatch), self.MEETING_KEPT)
            self._first_meeting = (tuple(itertools.islice(reversed(self._accepted), met)), now)
        sure = samples >= self.MIN_SAMPLES and not self._slow_start and not after_state
        # The first -1 ends slow start; what was accepted until then includes the
        # bucket's burst, so the pace is halved and climbs back quickly towards it, as
        # for a rate shown by too few answers; the next -1 measures it. Otherwise: just
        # under the rate measured. Either way that rate is the ceiling to probe above.
        self._ceiling = base
        self._sure = sure
        # ... but probed above gently, as the state's own ceiling was: a fast probe from
        # there overshot to nearly twice the limit before its next -1 (8 -1 answers at
        # 40 requests/s), where the gentle one meets it within a -1 or two.
        self._cut_after_state = after_state
        if sure:
            self._first_meeting = None
            self._remember_drop(self._measured, base)
            if not unconfirmed:
                self._unconfirmed_from = 0.0
            elif not self._unconfirmed_from:
                self._unconfirmed_from = self._measured
            self._measured = base
        beta = self.BETA_UNSURE if self._slow_start else self.BETA
        self._pace = max(self._min_rate, beta * base)
        self._learned_at = self._wall_clock()
        self._slow_start = False
        self._previous_cut, self._last_cut = self._last_cut, now
        self._episode_accepted = 0
        if not after_state:
            self._remembered = None
        self._cuts += 1
        # The bucket is empty now: the next request waits one step of the new pace (the
        # caller sleeping at the gate reads it again on waking, see _await_turn).
        self._next_at = now + 1.0 / self._pace
        self._limit = max(1.0, self._limit * self.BETA)
        self._enough_slots()
        if shared_turn:
            logger.debug(
                "the gateway said -1 (too fast): pace to fall back to now %.2f requests/s",
                self._pace,
            )
            return
        logger.info(
            "the gateway said -1 (too fast): pace now %.2f requests/s, concurrency limit %d",
            self._pace,
            self.limit,
        )

    def _slowing(self) -> bool:
        # Asked by the breaker after a -1 was taken in: a client whose own pace is still
        # above its floor has not tried slowing down yet, so its -1 is "too fast". A pace
        # followed from a shared source is not this client's to lower: not counted.
        if self._shared is not None or self._pace is None:
            return False
        floor = self._min_rate * 1.001
        return self._pace > floor and (self._max_rate is None or self._max_rate > floor)

    def _fleet_refusals(self) -> tuple[int, float] | None:
        # Asked by the breaker for a -1 just taken in: the run of -1 answers of every client
        # sharing the pace (its length, and when it began on this clock), as the shared
        # source said of that -1; None without one. Taken once: a stale run (Redis gone
        # since) must not be read again.
        run, self._fleet_run = self._fleet_run, None
        return run

    def _measured_far_above_floor(self) -> bool:
        # Asked by the breaker during a run of -1: whether this client was lately accepted
        # at FAR_ABOVE_FLOOR times its floor or more: last measured so (a sure ceiling),
        # or RECENT answers in a row accepted that fast within the last FAR_WINDOW
        # seconds (a web service's burst, which may end before any sure cut). Then a run
        # of -1 at the floor is not the bad luck of clients sharing a low limit (its
        # share would have had to fall that many times over within seconds), so it need
        # not be longer than for a client never accepted.
        if self._shared is not None:
            return False
        fast = self.FAR_ABOVE_FLOOR * self._min_rate
        if self._measured >= fast:
            return True
        times = self._accepted
        first = bisect.bisect_left(times, self._clock() - self.FAR_WINDOW)
        recent = list(itertools.islice(times, first, None))
        span = self.RECENT - 1
        return any(span >= fast * (recent[i + span] - recent[i]) for i in range(len(recent) - span))

    def _breaker_opened(self) -> None:
        # Calls queued for a turn when the breaker opens would each wait for it (one per
        # 2 s at the floor) only to be refused then: they leave now (see run()).
        for scope in self._leavers:
            scope.cancel()
        # A run of -1 that slowing down to the floor did not clear was no limit (an IP
        # binding, a time window): what it cut is not what the limit is.
        self._after_storm = self._before_run

    def _storm_over(self) -> None:
        # The first answer accepted after the breaker opened: back to what was learned
        # before the run of -1 that opened it. Climbing from the floor, a client at 30
        # requests/s took 45 s to return (0.6 requests/s ten minutes after, idle), and a
        # web service's calls with 3 s deadlines failed meanwhile (a user's trial). Should
        # the limit have dropped too, the next -1 cuts it as ever.
        learned, self._after_storm = self._after_storm, None
        if learned is None or self._pace is None or learned.pace <= self._pace:
            return
        self._pace, self._ceiling, self._sure = learned.pace, learned.ceiling, learned.sure
        self._measured = learned.measured
        self._unconfirmed_from = learned.unconfirmed_from
        self._raise_limit(max(self._limit, learned.limit))
        self._next_at = min(self._next_at, self._clock() + 1.0 / self._pace)
        logger.info(
            "accepted again after the breaker opened: pace back to %.2f requests/s, as "
            "before the run of -1 answers",
            self._pace,
        )

    async def _wait_or_leave(
        self, wait: Callable[[], Awaitable[_W]], action: str, leave: bool
    ) -> _W:
        """Wait for a slot, a turn or a retry's backoff; raise ClientClosedError once the
        client closes, and with ``leave`` CircuitOpenError once the breaker opens.

        Every wait given here is cancellation-safe (a caller cancelled while waiting takes
        nothing and passes on what it was handed), as it must be for callers' deadlines.
        The breaker's probe waits on.
        """
        leaving = leave and not self.breaker.probing()
        while True:
            if self._closing:
                raise ClientClosedError(
                    f"{action}: not sent: the client was closed before the request was written"
                )
            if leaving:
                # Also on entry: a caller handed its slot in the instant the breaker
                # opened returns from that wait as it was, and must not go on to take a
                # turn.
                self.breaker.recheck(action, self._clock())
            scope = anyio.CancelScope()
            self._waits.add(scope)
            if leaving:
                self._leavers.add(scope)
            try:
                with scope:
                    return await wait()
            finally:
                self._waits.discard(scope)
                self._leavers.discard(scope)
            # Only close() and the breaker cancel this scope (another cancellation
            # passes through): they raise at the top, unless a probe was accepted before
            # this caller ran.

    # -- a pace shared with other clients ---------------------------------------------

    async def _shared_turn(self, action: str) -> SharedShare | None:
        if self._shared is None:
            return None
        # The caller's deadline (given, or an enclosing scope's): a turn it cannot live
        # to see is not booked, and the call fails now, not at its deadline.
        deadline = anyio.current_effective_deadline()
        # The callers told to pace themselves while Redis failed are queued at this
        # client's own pace, and go out at it beside the shared turns once it is back:
        # the schedule is told for how long, or it measures its turns alone as the rate
        # (a trial: 16 such callers per process, 4 processes at R = 10, and a minute at
        # half the limit after Redis came back).
        pace = self._pace
        paced_here = self._pace_waiting / pace if pace else 0.0
        try:
            turn = await self._shared.take_turn(
                None if math.isinf(deadline) else deadline, paced_here
            )
        except TurnBeyondDeadline as late:
            raise _too_late(action, late.wait, deadline) from late
        if turn is not None:
            # Follow the share locally: stats and rate_state() show it, the slots it needs
            # are kept, and should the source fail, this client paces itself from there
            # rather than from what it learned alone.
            self._pace = self._ceiling = turn.share
            self._sure, self._slow_start = True, False
            self._enough_slots()
        return turn

    # -- running a request ---------------------------------------------------------

    def _check_queue(self, action: str, single: bool) -> None:
        # A caller with a deadline its turn cannot come by fails as it arrives, not at its
        # deadline: a web service under sustained overload held every such handler (and
        # its connection) for the whole deadline, 5 s in a user's trial. Paced here, only
        # a single call (``single``: the public API's, its caller waiting) is refused so:
        # a bulk send's chunks are cut off by its own rules.
        deadline = anyio.current_effective_deadline()
        if math.isinf(deadline):
            return
        if self._shared is None:
            if single:
                self._check_own_queue(action, deadline)
            return
        # With a shared pace, callers queue for a slot before they queue for a turn (at
        # a low pace the client keeps few requests in flight): counted only at the turn's
        # queue, those far back failed at about their deadlines, not as they came (a
        # user's trial: none of 185 handlers with 3 s deadlines at 5 requests/s failed
        # within 0.1 s). The callers waiting for a slot are ahead of this one too.
        try:
            self._shared.check_queue(deadline, len(self._slot_waiters))
        except TurnBeyondDeadline as late:
            raise _too_late(action, late.wait, deadline) from late

    def _check_own_queue(self, action: str, deadline: float) -> None:
        # Paced here: each caller ahead of this one (for a slot or at the gate to a turn;
        # a background caller is behind everyone) goes one step of the pace before it.
        # Counted at QUEUE_PACE_MARGIN times the pace, as a shared schedule's queue is.
        # Unpaced (no limit met yet, no max_rate), a queue says nothing of when its turn
        # comes.
        pace = self.pace
        if pace is None:
            return
        held = 1 if self._gate_held else 0
        ahead = self._slot_waiters.ahead() + self._gate_waiters.ahead() + held
        soonest = ahead / (pace * QUEUE_PACE_MARGIN)
        if ahead and anyio.current_time() + soonest > deadline:
            raise _too_late(action, soonest, deadline)

    async def _take_turn(self, action: str) -> SharedShare | None:
        # From the shared schedule when there is one and it answers, else paced here.
        turn = await self._shared_turn(action)
        if turn is None:
            await self._await_pace()
        return turn

    def _wait(self, state: RetryCallState, policy: RetryPolicy | None = None) -> float:
        policy = policy or self._retry
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        # Full jitter: clients that were refused together must not come back together.
        return random.uniform(0, ceiling) if ceiling > 0 else 0.0

    def _before_sleep(
        self, action: str, log_extra: Mapping[str, object] | None = None
    ) -> Callable[[RetryCallState], None]:
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
                extra={
                    **(log_extra or {}),
                    "action": action,
                    "attempt": state.attempt_number,
                    "result": result_of(cause),
                    "wait": wait,
                },
            )
            if self._on_retry is not None:
                try:
                    self._on_retry(RetryDetails(action, state.attempt_number, wait, cause))
                except Exception as exc:
                    # An observer's bug must not end the call (or a bulk send, where it
                    # came out wrapped twice in exception groups): said, as on_unknown's.
                    log_hook_failure("on_retry", action, exc)

        return hook

    async def _attempt(
        self,
        attempt: Callable[[], Awaitable[_T]],
        tally: AttemptTally | None,
        hooks: DispatchHooks | None,
        started: list[float],
        action: str,
        leave_when_open: bool,
    ) -> _T:
        self._check_queue(action, single=leave_when_open)
        self._note_demand()
        waited = await self._wait_or_leave(self._acquire_slot, action, leave_when_open)
        handed_off = False
        try:
            turn = await self._wait_or_leave(
                functools.partial(self._take_turn, action), action, leave_when_open
            )
            if hooks is not None:
                await hooks.before_dispatch()
            dispatched_at = self._clock()
            spacing = self._spacing()
            sent_at_pace = self._sendable(spacing) if spacing is not None else None
            if not started:
                started.append(dispatched_at)
            if self._first_dispatch is None:
                self._first_dispatch = dispatched_at
            self._requests += 1
            self._dispatched.append(dispatched_at)
            if tally is not None:
                tally.attempts += 1
            # asyncio cancelled the caller while the request was on the wire, and its
            # answer came meanwhile (see outlive.py): learned from as any answer is, then
            # the cancellation goes on in its place.
            late: AnsweredAfterCancel | None = None
            try:
                try:
                    result = await attempt()
                except CancelledOnWire as gone:
                    # The slot stays taken until the answer comes, and it is learned from:
                    # freed at once, it let the next request out at once, and the -1
                    # answers went unheard (see outlive.py).
                    handed_off = True
                    self._learn_later(gone.answer, waited, dispatched_at, sent_at_pace, turn)
                    raise gone.cancel from None
                except AnsweredAfterCancel as answered:
                    late = answered
                    if answered.error is not None:
                        raise answered.error from None
                    self._failing = False
                    self._on_accepted(waited, dispatched_at, sent_at_pace)
                    raise answered.cancel from None
            except RateLimitedError:
                self._failing = False
                if tally is not None:
                    tally.rate_limited += 1
                self._on_rate_limited(dispatched_at, shared_turn=turn is not None)
                if turn is not None and self._shared is not None:
                    run = await self._shared.refused(turn)
                    if run is not None:
                        # For the breaker, which hears of this -1 next (see _fleet_refusals).
                        self._fleet_run = (run.length, self._clock() - run.span)
                if hooks is not None:
                    await hooks.refused()
                _raise_late(late)
                raise
            except TransportError as exc:
                self._failing = True
                if not exc.request_sent and hooks is not None:
                    await hooks.refused()
                _raise_late(late)
                raise
            except Exception:
                # A 502, a -10, an answer that cannot be read: no word on the limit.
                self._failing = True
                _raise_late(late)
                raise
            self._failing = False
            self._on_accepted(waited, dispatched_at, sent_at_pace)
            return result
        finally:
            if not handed_off:
                self._release_slot()

    def _learn_later(
        self,
        answer: PendingAnswer,
        waited: bool,
        dispatched_at: float,
        sent_at_pace: float | None,
        turn: object,
    ) -> None:
        # The answer of a request whose caller is gone (see CancelledOnWire): heard as
        # _attempt hears one, but for the shared schedule's count of -1 answers (an
        # await, which a done callback cannot make), then its slot is freed.
        def done(future: PendingAnswer) -> None:
            try:
                if future.cancelled():
                    return
                error = future.exception()
                if error is None:
                    self._failing = False
                    self._on_accepted(waited, dispatched_at, sent_at_pace)
                elif isinstance(error, RateLimitedError):
                    self._failing = False
                    self._on_rate_limited(dispatched_at, shared_turn=turn is not None)
                else:
                    self._failing = True
            finally:
                self._release_slot()

        answer.add_done_callback(done)

    async def run(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        action: str,
        unsafe: bool,
        tally: AttemptTally | None = None,
        hooks: DispatchHooks | None = None,
        retry: RetryPolicy | None = None,
        log_extra: Mapping[str, object] | None = None,
        leave_when_open: bool = False,
    ) -> _T:
        """Run ``attempt`` when its turn comes; retry it per the policy; raise its last error.

        ``tally``, when given, counts this request's attempts and -1 answers. ``hooks``
        (see :class:`DispatchHooks`) hear of each dispatch and of each attempt the
        gateway provably did nothing with. ``retry`` overrides the client's policy for
        this request; ``log_extra`` goes into the retry log records (which call). An
        error that is not retryable ends the run at once. While the breaker is open (-1
        that never clears) the run fails at once with CircuitOpenError, unless it is the
        probe; with ``leave_when_open`` (a single call, whose caller is waiting), also
        when the breaker opens while it waits for a slot or its turn.
        """
        _check_retry(retry)
        policy = retry or self._retry
        breaker = self.breaker
        breaker.check(action, self._clock())
        started: list[float] = []
        unreachable = _WhileUnreachable(policy.unreachable_timeout, self._clock)

        def wait(state: RetryCallState) -> float:
            # Never sleep past a time limit: the attempt after the sleep would come too
            # late to count, and the caller's limit would be overrun by a whole backoff.
            now = self._clock()
            left = policy.timeout - (now - started[0]) if started else math.inf
            if unreachable.since is not None and policy.unreachable_timeout is not None:
                left = min(left, policy.unreachable_timeout - (now - unreachable.since))
            return max(0.0, min(self._wait(state, policy), left))

        async def backoff(seconds: float) -> None:
            # A single call sleeping before its next attempt leaves too when the breaker
            # opens: that attempt would be refused at once anyway.
            await self._wait_or_leave(lambda: self._sleep(seconds), action, leave_when_open)

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: is_retryable(exc, unsafe=unsafe)),
            stop=stop_after_attempt(policy.attempts)
            | _SinceFirstDispatch(policy.timeout, started, self._clock)
            | unreachable,
            wait=wait,
            sleep=backoff,
            before_sleep=self._before_sleep(action, log_extra),
            reraise=True,
        )
        try:
            async for try_state in retrying:
                with (
                    try_state,
                    breaker.admitted(
                        action,
                        self._clock(),
                        self._clock,
                        self._slowing,
                        self._measured_far_above_floor,
                        self._fleet_refusals,
                    ),
                ):
                    return await self._attempt(
                        attempt, tally, hooks, started, action, leave_when_open
                    )
        except CircuitOpenError:
            raise
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


def _raise_late(late: AnsweredAfterCancel | None) -> None:
    # The cancellation an answer was waited for (see _attempt) goes on now.
    if late is not None:
        raise late.cancel
