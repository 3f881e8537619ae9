"""A circuit breaker for the -1 that never clears.

The gateway answers -1 for three different reasons: too fast, outside the account's time
window, or a request from an IP address the account is not bound to. Pacing cures the
first; nothing the client does cures the other two, yet each request would spend its own
ten attempts (tens of seconds, in a web handler) learning that again.

The scheduler tells the breaker of every answer. The pattern that gives the hopeless
case away is an unbroken run of -1: under a mere rate limit some requests keep being
accepted once the pace drops, so the run breaks within a second or two. When nothing but
-1 has come back for ``open_after`` seconds (and at least ``min_refusals`` of them), and
the client has slowed down as far as it goes, the breaker opens: one WARNING explains
it, and from then on every attempt fails at once with :class:`CircuitOpenError`
(nothing sent; a single call already queued for its turn too, rather than at that turn,
up to seconds later), except for one probe now and then
(``probe_after`` seconds, doubling up to ``max_probe_after``). The first answer that is
not -1 closes it again.

Several clients sharing one low limit (replicas of a web service, each paced at its floor)
also see runs of -1: a client whose share is below its floor is refused most of the
time, and by chance six times in a row. Two things tell that apart from the hopeless
case. A client still slowing down (its pace above its floor) has not tried slowing yet,
so its -1 says "too fast" and does not open the breaker. And an account that has
accepted this client's requests before is not bound to another address: only a time
window closing could now refuse everything, so the run must be ``seen_factor`` times
longer, in answers and in seconds (the scheduler's breaker takes two: twelve answers over
six seconds, a run a client refused half of the time meets by chance about once in 4 000
requests; three would make it rarer still but left an IP-bound account undiagnosed for
half a minute at the floor's one request per 2 s; the default, one, treats a run after
an accepted answer as any other). One exception: a client last measured being accepted
far above its floor (four times, 2/s at the default floor) is not one of many sharing a
low limit, whose share would have had to fall fourfold within seconds: its run need be
no longer than a client's never accepted. A web service whose account is bound to
another address mid-day so learns it within seconds, not after twelve refusals at the
floor's pace.

It keeps no clock of its own: the scheduler passes its (injectable) clock's readings, so
tests run it on virtual time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .._core.errors import CircuitOpenError, GatewayError, RateLimitedError

__all__ = ["Breaker"]

logger = logging.getLogger("aisix_async")

# Set while the current task's attempt is the breaker's probe (see Breaker.recheck).
_PROBING: ContextVar[bool] = ContextVar("aisix_breaker_probe", default=False)


class Breaker:
    """Opens on an unbroken run of -1 answers; lets one probe through now and then."""

    def __init__(
        self,
        *,
        open_after: float = 3.0,
        min_refusals: int = 6,
        probe_after: float = 5.0,
        max_probe_after: float = 60.0,
        seen_factor: float = 1.0,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.open_after = open_after
        self.min_refusals = min_refusals
        self.probe_after = probe_after
        self.max_probe_after = max_probe_after
        self.seen_factor = seen_factor
        # Told when it opens (the scheduler fails the calls queued for a turn at once).
        self._on_open = on_open
        # Whether any answer but -1 came back since the client was made: then the
        # account is not bound to another address (see the module's docstring).
        self._seen_accepted = False
        # The current run of -1 answers: when it started, how many.
        self._run_started: float | None = None
        self._run_length = 0
        self._open = False
        self._opened_at = 0.0
        self._next_probe = math.inf
        self._probe_interval = probe_after
        self._probing = False
        #: Times it opened, for stats.
        self.trips = 0

    @property
    def is_open(self) -> bool:
        """Whether calls are being refused at once."""
        return self._open

    def _refuse(self, action: str, now: float) -> CircuitOpenError:
        return CircuitOpenError(
            action,
            detail=f"open for {now - self._opened_at:.1f} s; next probe in "
            f"{max(0.0, self._next_probe - now):.1f} s",
        )

    def check(self, action: str, now: float) -> None:
        """Raise CircuitOpenError at once when open and no probe is due (queue entry)."""
        if self._open and (self._probing or now < self._next_probe):
            raise self._refuse(action, now)

    @staticmethod
    def probing() -> bool:
        """Whether the current task's attempt is the breaker's probe."""
        return _PROBING.get()

    def recheck(self, action: str, now: float) -> None:
        """At the turn, right before writing: refuse if it opened while this call waited.

        A call admitted while the breaker was closed may then wait seconds for the pace;
        if the breaker opens meanwhile, it fails at once rather than spend its attempt.
        The probe itself passes.
        """
        if self._open and not _PROBING.get():
            raise self._refuse(action, now)

    @contextmanager
    def admitted(
        self,
        action: str,
        now: float,
        answered_at: Callable[[], float] | None = None,
        slowing: Callable[[], bool] | None = None,
        measured_far: Callable[[], bool] | None = None,
        fleet_run: Callable[[], tuple[int, float] | None] | None = None,
    ) -> Iterator[None]:
        """Around one attempt: refuse it if open (unless it is the probe); learn its answer.

        ``answered_at`` (the scheduler's clock) times a -1 when it comes back rather than
        when the attempt was admitted: an attempt may wait seconds for the pace, and a run
        of -1 measured from admissions would look seconds shorter than it is. ``slowing``
        (asked after the client has taken the -1 in) says whether the client's pace is
        still above its floor: such a -1 is "too fast", whatever else it may be, and
        cannot open the breaker (it still counts in the run, so that a client refused
        everything opens it at its first -1 at the floor, not six floor steps later).
        ``measured_far`` says whether the client was last measured being accepted far
        above its floor: then an earlier acceptance does not make the run longer (see
        the module's docstring). ``fleet_run`` (asked for each -1) gives the run of -1
        answers of every client sharing this one's pace (``shared_limit``): its length and
        when it began; the longer of the two runs counts (see _refused).
        """
        probe = False
        if self._open:
            if self._probing or now < self._next_probe:
                raise self._refuse(action, now)
            self._probing = probe = True
        token = _PROBING.set(probe)
        try:
            yield
        except RateLimitedError as exc:
            if not isinstance(exc, CircuitOpenError):
                at = now if answered_at is None else answered_at()
                fleet = fleet_run() if fleet_run is not None else None
                self._refused(at, probe, slowing is None or not slowing(), measured_far, fleet)
            raise
        except GatewayError:
            # Any other code: the gateway got past whatever gives -1 for this account.
            self._cleared()
            raise
        else:
            self._cleared()
        finally:
            _PROBING.reset(token)
            # A lost answer or a cancellation says nothing either way: only the probe
            # slot is given back, so another call can probe.
            if probe:
                self._probing = False

    def _refused(
        self,
        dispatched_at: float,
        probe: bool,
        may_open: bool = True,
        measured_far: Callable[[], bool] | None = None,
        fleet: tuple[int, float] | None = None,
    ) -> None:
        if self._open:
            if probe:
                self._next_probe = dispatched_at + self._probe_interval
                self._probe_interval = min(self.max_probe_after, self._probe_interval * 2)
            return
        if self._run_started is None:
            self._run_started = dispatched_at
        self._run_length += 1
        if fleet is not None:
            # Clients sharing one pace through Redis share its floor too: each is given a
            # turn in N, and its own run grew N times slower than a lone client's (six
            # processes of an account bound to another address: no breaker open after
            # 40 s). The fleet's run, every client's -1 answers in a row, is the one a
            # lone client would have seen.
            length, began = fleet
            if length > self._run_length:
                self._run_length = length
                self._run_started = min(self._run_started, began)
        span = dispatched_at - self._run_started
        if not may_open or self._run_length < self.min_refusals or span < self.open_after:
            return
        # Only a run long enough to open a breaker never accepted asks whether the client
        # was measured far above its floor (a scan of recent answers): not every -1 does.
        longer = self._seen_accepted and not (measured_far is not None and measured_far())
        factor = self.seen_factor if longer else 1.0
        if self._run_length >= factor * self.min_refusals and span >= factor * self.open_after:
            self._open = True
            self.trips += 1
            self._opened_at = dispatched_at
            self._probe_interval = self.probe_after
            self._next_probe = dispatched_at + self._probe_interval
            self._probe_interval = min(self.max_probe_after, self._probe_interval * 2)
            logger.warning(
                "the gateway has answered nothing but -1 (too fast) for %.1f s (%d answers), "
                "which slowing down does not clear: the account is most likely bound to "
                "another IP address, or limited to a time window. Calls now fail at once "
                "with CircuitOpenError; a probe request goes out every few seconds and "
                "calls work again once one is accepted",
                span,
                self._run_length,
                extra={"result": "-1", "refusals": self._run_length, "refused_for": span},
            )
            if self._on_open is not None:
                self._on_open()

    def _cleared(self) -> None:
        if self._open:
            logger.warning(
                "a probe was accepted: the gateway takes requests again; calls resume",
                extra={"result": "1"},
            )
        self._seen_accepted = True
        self._open = False
        self._run_started = None
        self._run_length = 0
        self._next_probe = math.inf
        self._probe_interval = self.probe_after
