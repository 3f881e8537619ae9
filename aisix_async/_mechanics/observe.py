"""What a client tells its operators: structured logs, counters, histograms, OpenTelemetry.

Every call is observed once, by :class:`CallObservation`: each attempt's answer (its
result code, how long it waited for its turn, how long the gateway took), and the call's
end (accepted, failed, unknown). The figures go to three places:

* the ``aisix_async`` logger, with ``extra=`` fields (``action``, ``result``, ``attempt``,
  ``queue_wait``, ``latency``, ``mobiles``, ``mobiles_hash``) that a JSON formatter picks
  up: each attempt at DEBUG, and one WARNING per call that gave up or whose outcome is
  unknown;
* counters and fixed-bucket histograms read by ``client.stats()``;
* OpenTelemetry (a span per call, metrics mirroring the counters) when
  ``opentelemetry-api`` is installed (the ``otel`` extra). Without it nothing is imported
  and nothing recorded; with it and no SDK configured, the API's no-op objects cost little
  (``benchmarks/bench_observability.py``).

Nothing here ever sees the authkey, and full numbers never leave the process through it:
logs and spans carry a count and a short hash of the numbers (see :func:`mobiles_hash`).
Only the ``on_unknown`` hook, which is the caller's own code, gets the numbers themselves.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import logging
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._core.errors import AisixError, ExtraNotInstalledError, ValidationError, result_of
from .._core.models import SendReceipt
from .._version import __version__
from .hooks import log_hook_failure
from .scheduler import Scheduler, SchedulerStats

__all__ = [
    "BUCKETS",
    "CallObservation",
    "ClientStats",
    "Histogram",
    "Observer",
    "UnknownOutcome",
    "mobiles_hash",
]

logger = logging.getLogger("aisix_async")
# A library's logger speaks only where the application configured logging: without this,
# Python's last-resort handler printed our WARNING lines on stderr of programs that had
# set up none (the logging HOWTO's advice for libraries).
logger.addHandler(logging.NullHandler())

#: Upper bounds (seconds) of the histogram buckets; a last bucket holds the rest.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


def mobiles_hash(numbers: str | tuple[str, ...] | list[str]) -> str:
    """A short hash of the numbers of a request, to match a log line with your records.

    SHA-256 of the numbers joined by ``,`` in the order sent, first 16 hex digits. It
    keeps numbers out of logs; it is not anonymisation (numbers are easy to enumerate).
    """
    joined = numbers if isinstance(numbers, str) else ",".join(numbers)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


@attrs.frozen
class Histogram:
    """Counts of observations per bucket: ``counts[i]`` are those <= ``bounds[i]``.

    ``counts`` has one more entry than ``bounds``: the observations above the last bound.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    #: Sum of all observations (seconds).
    total: float

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.counts)

    @property
    def mean(self) -> float | None:
        """The mean observation, or None when there is none."""
        count = self.count
        return self.total / count if count else None

    def quantile(self, q: float) -> float | None:
        """An upper bound for the ``q`` quantile (the bound of its bucket; inf past the last)."""
        count = self.count
        if not count:
            return None
        rank = q * count
        seen = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def snapshot(self) -> Histogram:
        return Histogram(BUCKETS, tuple(self.counts), self.total)


def _empty() -> Histogram:
    return _Histogram().snapshot()


@attrs.frozen(kw_only=True)
class ClientStats(SchedulerStats):
    """``client.stats()``: the scheduler's figures plus counts and timings of the calls.

    A frozen snapshot: it does not change as the client goes on.
    """

    #: Attempts by (action, result): the result code as a string ("1", "-1", ...), or
    #: "transport", "protocol", "cancelled" when no code came back.
    results: Mapping[tuple[str, str], int] = attrs.field(factory=dict)
    #: Calls by (action, outcome): "accepted", "failed" (certainly not sent, for a send),
    #: "unknown" (may have been sent), "deadline", "circuit_open", "closed" (the client
    #: was closed before it was sent).
    calls: Mapping[tuple[str, str], int] = attrs.field(factory=dict)
    #: Sends whose outcome is unknown (also counted in ``calls``), all causes together.
    outcome_unknown: int = 0
    #: Seconds each attempt waited for its turn (queue, pace, and retry backoff).
    queue_wait: Histogram = attrs.field(factory=_empty)
    #: Seconds each attempt took on the wire (gateway latency).
    latency: Histogram = attrs.field(factory=_empty)
    #: Whether the circuit breaker refuses calls now (-1 that never clears).
    circuit_open: bool = False
    #: With ``shared_limit``: False while this client paces itself because Redis failed
    #: it, True otherwise (before its first turn too: nothing failed yet); None without.
    shared_limit_up: bool | None = None
    #: With ``shared_limit``: how many times Redis failed this client so far.
    shared_limit_fallbacks: int = 0
    #: With ``shared_limit``: the whole fleet's pace (requests/s) at this client's last
    #: turn, of which ``pace`` is this client's share; None without, or before a turn.
    shared_pace: float | None = None
    #: With ``shared_limit``: the clients that shared it then (this one included).
    shared_clients: int | None = None


@attrs.frozen(kw_only=True)
class UnknownOutcome:
    """What ``on_unknown`` is told: a send whose caller does not know whether it went out.

    Most often nobody knows (``receipts`` empty). With ``reason`` "answered" the SDK does:
    the caller was cancelled while the request was on the wire, and the gateway's answer
    came after: it accepted the send, and ``receipts`` hold its msgids. Either way, do
    not resend it blindly.
    """

    action: str
    #: How many numbers the request carried.
    mobile_count: int
    #: :func:`mobiles_hash` of them, as logged.
    mobiles_hash: str
    #: "cancelled" (the caller's task was cancelled while the request was on the wire),
    #: "error" (a lost answer, -10, -11, a garbled answer: see ``error``), or "answered"
    #: (cancelled on the wire, and accepted: see ``receipts``; for a call with no
    #: deadline this comes after its "cancelled", and settles it).
    reason: str
    #: The error the caller got, or None for a cancellation.
    error: AisixError | None
    #: The numbers themselves (kept out of the repr, so they do not reach logs by accident).
    mobiles: tuple[str, ...] = attrs.field(repr=False)
    #: The gateway's receipts for a send it accepted after its caller had gone
    #: ("answered"); empty otherwise.
    receipts: tuple[SendReceipt, ...] = ()


UnknownHook = Callable[[UnknownOutcome], None]


@functools.cache
def _otel_modules() -> tuple[Any, Any] | None:
    # Asked once per process: a failed import searches sys.path every time.
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    return metrics, trace


class _Otel:
    """The OpenTelemetry instruments; the API hands out no-ops until an SDK is set up."""

    def __init__(self, metrics: Any, trace: Any) -> None:
        self.trace = trace
        self.tracer = trace.get_tracer("aisix_async", __version__)
        meter = metrics.get_meter("aisix_async", __version__)
        self.attempts = meter.create_counter(
            "aisix.client.attempts", unit="{attempt}", description="Attempts by result code"
        )
        self.calls = meter.create_counter(
            "aisix.client.calls", unit="{call}", description="Calls by outcome"
        )
        self.unknown = meter.create_counter(
            "aisix.client.outcome_unknown",
            unit="{send}",
            description="Sends that may or may not have gone out",
        )
        # Seconds, in stats()'s buckets: the SDK's default boundaries are for milliseconds
        # (5, 10, 25 ... 10000), and put nearly every attempt in the first (an SRE's trial).
        self.queue_wait = meter.create_histogram(
            "aisix.client.queue_wait",
            unit="s",
            description="Wait for a turn, per attempt",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        self.latency = meter.create_histogram(
            "aisix.client.latency",
            unit="s",
            description="Gateway latency, per attempt",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        # The scheduler's gauges, read when the SDK collects: one instrument each for
        # the process, over every live client (weakly held, so none is kept alive).
        self.live: weakref.WeakSet[Observer] = weakref.WeakSet()
        observation = metrics.Observation
        for name, unit, read in _GAUGES:

            def callback(_options: Any, read: Callable[[ClientStats], float] = read) -> Any:
                return [
                    observation(float(read(stats)), {"aisix.account": account})
                    for account, stats in self._read_live()
                ]

            meter.create_observable_gauge(name, callbacks=[callback], unit=unit)

    def _read_live(self) -> list[tuple[str, ClientStats]]:
        readings = []
        for observer in list(self.live):
            source = observer.source
            if source is not None:
                readings.append((source[0], source[1]()))
        return readings


#: Gauges mirroring the scheduler's part of ``stats()``: name, unit, how to read it.
_GAUGES: tuple[tuple[str, str, Callable[[ClientStats], float]], ...] = (
    ("aisix.client.in_flight", "{request}", lambda s: s.in_flight),
    ("aisix.client.waiting", "{request}", lambda s: s.waiting),
    ("aisix.client.limit", "{request}", lambda s: s.limit),
    ("aisix.client.pace", "{request}/s", lambda s: s.pace or 0.0),
    ("aisix.client.circuit_open", "1", lambda s: s.circuit_open),
)

# One set of instruments per OpenTelemetry API (in practice: per process), so that many
# clients do not register the same instrument names over and over.
_INSTRUMENTS: dict[int, tuple[Any, _Otel]] = {}


def _instruments(metrics: Any, trace: Any) -> _Otel:
    # Keyed by identity; the module is kept with its instruments, so its id stays its own.
    found = _INSTRUMENTS.get(id(metrics))
    if found is None or found[0] is not metrics:
        found = _INSTRUMENTS[id(metrics)] = (metrics, _Otel(metrics, trace))
    return found[1]


class Observer:
    """One per client: the counters, the histograms, the hook, and OpenTelemetry if wanted."""

    def __init__(self, *, on_unknown: UnknownHook | None = None, otel: bool | None = None) -> None:
        self.on_unknown = on_unknown
        self.results: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.unknown = 0
        #: Numbers the calls of this client, so the log records of one call can be joined.
        self.call_ids = itertools.count(1)
        self.queue_wait = _Histogram()
        self.latency = _Histogram()
        if otel is not None and not isinstance(otel, bool):
            # "no" (truthy) asked for OpenTelemetry, and failed as a missing install.
            raise ValidationError(f"otel must be True, False or None, got {otel!r}")
        modules = _otel_modules() if otel is not False else None
        if otel and modules is None:
            # Typed as every missing extra is (an ImportError still, as it was).
            raise ExtraNotInstalledError(
                "otel=True needs opentelemetry-api: pip install 'aisix-async[otel]' (in a "
                "clone of the repository: pip install '.[otel]')",
                name="opentelemetry",
            )
        self.otel = _instruments(*modules) if modules is not None else None
        #: (account, the scheduler's figures) of the client, for the gauges; see bind().
        self.source: tuple[str, Callable[[], ClientStats]] | None = None

    def bind(self, account: str, scheduler: Scheduler) -> None:
        """Let the OpenTelemetry gauges read this client's scheduler.

        Only the scheduler's plain figures: an SDK collects from its own thread, where
        copying the counters the event loop is updating would not be safe.
        """
        if self.otel is None:
            return

        def read() -> ClientStats:
            return ClientStats(
                **attrs.asdict(scheduler.stats(), recurse=False),
                circuit_open=scheduler.breaker.is_open,
            )

        self.source = (account, read)
        self.otel.live.add(self)

    def snapshot(
        self,
        base: SchedulerStats,
        *,
        circuit_open: bool,
        shared_limit_up: bool | None = None,
        shared_limit_fallbacks: int = 0,
        shared_pace: float | None = None,
        shared_clients: int | None = None,
    ) -> ClientStats:
        return ClientStats(
            **attrs.asdict(base, recurse=False),
            results=types.MappingProxyType(dict(self.results)),
            calls=types.MappingProxyType(dict(self.calls)),
            outcome_unknown=self.unknown,
            queue_wait=self.queue_wait.snapshot(),
            latency=self.latency.snapshot(),
            circuit_open=circuit_open,
            shared_limit_up=shared_limit_up,
            shared_limit_fallbacks=shared_limit_fallbacks,
            shared_pace=shared_pace,
            shared_clients=shared_clients,
        )

    def record_unknown(
        self,
        action: str,
        mobiles: str,
        reason: str,
        error: AisixError | None,
        call: int | None = None,
        level: int = logging.WARNING,
    ) -> None:
        """One send whose outcome is unknown: a counter, one record (WARNING), the hook."""
        self.unknown += 1
        count = mobiles.count(",") + 1 if mobiles else 0
        digest = mobiles_hash(mobiles)
        cause = (
            "the caller was cancelled while it was on the wire"
            if error is None
            else (error.message)
        )
        what = f"{action} to {count} number(s) [{digest}]" if count else action
        # A send may have been sent and charged; an updateKey, have rotated the key.
        effect = "been sent and charged" if count else "changed the key"
        logger.log(
            level,
            "%s: outcome unknown, it may have taken effect (%s) (%s); do not %s it blindly",
            what,
            effect,
            cause,
            "resend" if count else "repeat",
            extra={
                "call": call,
                "action": action,
                "outcome": "unknown",
                "reason": reason,
                "mobiles": count,
                "mobiles_hash": digest,
                "result": result_of(error) if error is not None else "cancelled",
            },
        )
        if self.otel is not None:
            self.otel.unknown.add(1, {"aisix.action": action, "aisix.reason": reason})
        self._tell_hook(action, mobiles, reason, error)

    def record_answered(
        self,
        action: str,
        mobiles: str,
        receipts: tuple[SendReceipt, ...],
        call: int | None = None,
        level: int = logging.WARNING,
        *,
        settles_unknown: bool = False,
    ) -> None:
        """A send accepted after its caller was cancelled on the wire: the caller got the
        cancellation, not the receipts, so they are told here (one record, the hook), at
        the level an unknown outcome would have been: its caller would count it as one.

        ``settles_unknown``: the send was reported unknown when its caller left (one no
        deadline held: it was not waited for), and this answer came after; the counts
        keep it as the call ended for its caller."""
        count = mobiles.count(",") + 1 if mobiles else 0
        digest = mobiles_hash(mobiles)
        msgids = ",".join(receipt.msgid for receipt in receipts)
        told = (
            "it was sent; its unknown outcome reported then is settled"
            if settles_unknown
            else "it was sent; the caller was not told"
        )
        logger.log(
            level,
            "%s to %d number(s) [%s]: accepted (msgid %s) after its caller was cancelled "
            "while it was on the wire: %s",
            action,
            count,
            digest,
            msgids,
            told,
            extra={
                "call": call,
                "action": action,
                "outcome": "accepted",
                "reason": "answered",
                "mobiles": count,
                "mobiles_hash": digest,
                "msgid": msgids,
            },
        )
        self._tell_hook(action, mobiles, "answered", None, receipts)

    def _tell_hook(
        self,
        action: str,
        mobiles: str,
        reason: str,
        error: AisixError | None,
        receipts: tuple[SendReceipt, ...] = (),
    ) -> None:
        hook = self.on_unknown
        if hook is not None:
            event = UnknownOutcome(
                action=action,
                mobile_count=mobiles.count(",") + 1 if mobiles else 0,
                mobiles_hash=mobiles_hash(mobiles),
                reason=reason,
                error=error,
                mobiles=tuple(mobiles.split(",")) if mobiles else (),
                receipts=receipts,
            )
            try:
                hook(event)
            except Exception as exc:
                # The hook runs while a cancellation is being handled: it must not
                # replace the caller's exception with its own.
                log_hook_failure("on_unknown", action, exc)


class CallObservation:
    """One call's attempts and end, as ``Gateway.call`` sees them."""

    __slots__ = (
        "_span",
        "action",
        "attempts",
        "id",
        "last_error",
        "level",
        "mobiles",
        "observer",
        "ready",
    )

    def __init__(
        self, observer: Observer, action: str, mobiles: str, *, single: bool = True
    ) -> None:
        self.observer = observer
        #: The level of a failure or unknown outcome: WARNING for a call of the public
        #: API; INFO for a bulk chunk, whose outcome the stream reports to its caller.
        self.level = logging.WARNING if single else logging.INFO
        self.id = next(observer.call_ids)
        self.action = action
        #: The comma-joined numbers of a send ("" for other actions).
        self.mobiles = mobiles
        self.attempts = 0
        self.ready = time.perf_counter()
        self.last_error: AisixError | None = None
        otel = observer.otel
        self._span = (
            otel.tracer.start_span(
                f"aisix {action}",
                kind=otel.trace.SpanKind.CLIENT,
                attributes={"aisix.action": action},
            )
            if otel is not None
            else None
        )

    def dispatched(self) -> float:
        """The attempt's request is about to be written; returns the time, for latency."""
        now = time.perf_counter()
        self.attempts += 1
        wait = now - self.ready
        observer = self.observer
        observer.queue_wait.observe(wait)
        if observer.otel is not None:
            observer.otel.queue_wait.record(wait, {"aisix.action": self.action})
        return now

    def answered(self, since: float, error: BaseException | None) -> None:
        """The attempt ended: with an answer (``error`` None) or an error."""
        now = time.perf_counter()
        latency = now - since
        wait = since - self.ready
        self.ready = now
        result = "1" if error is None else result_of(error)
        if isinstance(error, AisixError):
            self.last_error = error
        observer = self.observer
        observer.results[(self.action, result)] += 1
        observer.latency.observe(latency)
        if observer.otel is not None:
            attributes = {"aisix.action": self.action, "aisix.result": result}
            observer.otel.attempts.add(1, attributes)
            observer.otel.latency.record(latency, attributes)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: attempt %d: result %s in %.3f s (waited %.3f s for its turn)",
                self.action,
                self.attempts,
                result,
                latency,
                wait,
                extra={
                    "call": self.id,
                    "action": self.action,
                    "result": result,
                    "attempt": self.attempts,
                    "queue_wait": wait,
                    "latency": latency,
                    "mobiles": self.mobiles.count(",") + 1 if self.mobiles else 0,
                },
            )

    def log_extra(self) -> dict[str, object]:
        """What the scheduler's retry records carry to tie them to this call."""
        return {"call": self.id, "mobiles": self.mobiles.count(",") + 1 if self.mobiles else 0}

    def finished(self, outcome: str, error: BaseException | None = None) -> None:
        """The call ended: ``outcome`` as counted in ``ClientStats.calls``."""
        observer = self.observer
        observer.calls[(self.action, outcome)] += 1
        if error is not None and outcome != "unknown":
            self._log_failure(outcome, error)
        otel = observer.otel
        if otel is not None:
            otel.calls.add(1, {"aisix.action": self.action, "aisix.outcome": outcome})
        span = self._span
        if span is not None:
            span.set_attribute("aisix.attempts", self.attempts)
            span.set_attribute("aisix.outcome", outcome)
            span.set_attribute("aisix.outcome_unknown", outcome == "unknown")
            if self.mobiles:
                span.set_attribute("aisix.mobiles", self.mobiles.count(",") + 1)
            # A call ended with no error of its own is accepted, or was cancelled (on the
            # wire: "unknown"); it read "1" either way, a success on a dashboard.
            if error is not None:
                result = result_of(error)
            elif outcome == "accepted":
                result = "1"
            else:
                result = "cancelled" if outcome in ("unknown", "cancelled") else outcome
            span.set_attribute("aisix.result", result)
            if (error is not None or outcome == "unknown") and otel is not None:
                # The type only: messages are safe, but a span is no place for prose.
                span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR, result))
            span.end()

    def _log_failure(self, outcome: str, error: BaseException) -> None:
        # One WARNING when a call gave up on a send or after retrying; a plain refusal of
        # a read is routine and logged at INFO, and so is any failure of a bulk chunk.
        gave_up = self.attempts > 1 or (self.mobiles != "" and outcome == "failed")
        level = self.level if gave_up else logging.INFO
        if not logger.isEnabledFor(level):
            return
        message = error.message if isinstance(error, AisixError) else type(error).__name__
        logger.log(
            level,
            "%s: gave up after %d attempt(s): %s",
            self.action,
            self.attempts,
            message,
            extra={
                "call": self.id,
                "action": self.action,
                "outcome": outcome,
                "result": result_of(error),
                "attempt": self.attempts,
                "mobiles": self.mobiles.count(",") + 1 if self.mobiles else 0,
                "mobiles_hash": mobiles_hash(self.mobiles) if self.mobiles else None,
            },
        )
