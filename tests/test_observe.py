"""What a client tells its operators: stats(), structured logs, OpenTelemetry.

Against the emulator over HTTP; OpenTelemetry through recording stand-ins for the API's
tracer and meter (the ``otel`` extra is the API alone: no SDK to read spans back from).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from functools import partial
from typing import Any

import anyio
import attrs
import helpers
import pytest

from aisix_async import (
    ClientStats,
    GatewayInternalError,
    Histogram,
    RateLimitedError,
    RetryPolicy,
    UnknownOutcome,
    mobiles_hash,
)
from aisix_async._mechanics import observe as _observe

pytestmark = pytest.mark.anyio
NUMBERS = ["18100002707", "18600007370"]
# The shared client, on channel group 1 (the emulator's group that sendOnce may use).
client_for = partial(helpers.client_for, cgid=1)


def no_secrets(records: list[logging.LogRecord], emulator: Any) -> None:
    for record in records:
        text = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert emulator.authkey not in text
        for number in NUMBERS:
            assert number not in text


async def test_stats_count_results_and_time_attempts(emulator: Any) -> None:
    async with client_for(emulator) as client:
        await client.send_once(NUMBERS, "code 1")
        await client.get_balance()
        emulator.state.configure(ip_bound=True)
        with pytest.raises(RateLimitedError):
            await client.get_balance(retry=RetryPolicy(attempts=2, initial_backoff=0))
        stats = client.stats()
        emulator.state.configure(ip_bound=False)
        await client.get_signs()
        later = client.stats()
    assert isinstance(stats, ClientStats)
    assert dict(stats.results) == {
        ("sendOnce", "1"): 1,
        ("getBalance", "1"): 1,
        ("getBalance", "-1"): 2,
    }
    assert dict(stats.calls) == {
        ("sendOnce", "accepted"): 1,
        ("getBalance", "accepted"): 1,
        ("getBalance", "failed"): 1,
    }
    assert stats.requests == 4 and stats.rate_limited == 2  # the scheduler's own fields
    assert stats.queue_wait.count == 4 and stats.latency.count == 4
    assert stats.latency.total > 0 and stats.latency.mean is not None
    assert stats.latency.quantile(0.5) is not None
    assert not stats.circuit_open and stats.outcome_unknown == 0
    # No shared_limit: nothing to say about Redis.
    assert stats.shared_limit_up is None and stats.shared_limit_fallbacks == 0
    assert stats.shared_pace is None and stats.shared_clients is None
    # A frozen snapshot: later calls do not change it, and it cannot be changed.
    assert ("getSign", "1") not in stats.results and ("getSign", "1") in later.results
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.outcome_unknown = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.results[("x", "1")] = 1  # type: ignore[index]


def test_histogram_buckets_and_quantiles() -> None:
    live = _observe._Histogram()
    for value in (0.001, 0.02, 0.02, 0.3, 100.0):
        live.observe(value)
    snap = live.snapshot()
    assert isinstance(snap, Histogram)
    assert snap.count == 5 and len(snap.counts) == len(snap.bounds) + 1
    assert snap.counts[0] == 1 and snap.counts[-1] == 1
    assert snap.quantile(0.5) == 0.025
    assert snap.quantile(1.0) == float("inf")
    assert Histogram(snap.bounds, (0,) * len(snap.counts), 0.0).quantile(0.5) is None


async def test_structured_logs_per_attempt_and_one_warning_per_give_up(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aisix_async")
    async with client_for(emulator) as client:
        await client.send_once(NUMBERS, "code 1")
        emulator.state.configure(ip_bound=True)
        with pytest.raises(RateLimitedError):
            await client.send_once(
                NUMBERS, "code 2", retry=RetryPolicy(attempts=3, initial_backoff=0)
            )
    ours = [r for r in caplog.records if r.name == "aisix_async"]
    attempts = [r for r in ours if r.levelno == logging.DEBUG and "attempt" in r.__dict__]
    assert [(r.__dict__["result"], r.__dict__["attempt"]) for r in attempts] == [
        ("1", 1), ("-1", 1), ("-1", 2), ("-1", 3),
    ]  # fmt: skip
    for record in attempts:
        assert record.__dict__["action"] == "sendOnce" and record.__dict__["mobiles"] == 2
        assert record.__dict__["latency"] >= 0 and record.__dict__["queue_wait"] >= 0
    retries = [r for r in ours if r.levelno == logging.INFO and "wait" in r.__dict__]
    # A string, as in every record (a retry's was the int -1: a typed pipeline split it).
    assert [(r.__dict__["attempt"], r.__dict__["result"]) for r in retries] == [
        (1, "-1"), (2, "-1"),
    ]  # fmt: skip
    assert all(r.__dict__["mobiles"] == 2 for r in retries)
    # One call id ties the refused call's records together, apart from the first call's.
    assert attempts[0].__dict__["call"] == 1
    second = {r.__dict__["call"] for r in [*attempts[1:], *retries]}
    assert second == {2}
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    give_up = warnings[0]
    assert give_up.__dict__["outcome"] == "failed" and give_up.__dict__["attempt"] == 3
    assert give_up.__dict__["call"] == 2
    assert give_up.__dict__["result"] == "-1"
    assert give_up.__dict__["mobiles_hash"] == mobiles_hash(NUMBERS)
    no_secrets(ours, emulator)


class _Span:
    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = dict(attributes)
        self.status: Any = None
        self.ended = False

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_status(self, status: Any) -> None:
        self.status = status

    def end(self) -> None:
        self.ended = True


class _Instrument:
    def __init__(
        self, name: str, points: list[tuple[str, float, dict[str, Any]]], **options: Any
    ) -> None:
        self.name = name
        self.points = points
        self.options = options

    def add(self, value: float, attributes: dict[str, Any]) -> None:
        self.points.append((self.name, value, dict(attributes)))

    record = add


@pytest.fixture
def recorded_otel(monkeypatch: pytest.MonkeyPatch) -> tuple[list[_Span], list[Any]]:
    from opentelemetry import metrics, trace

    spans: list[_Span] = []
    points: list[tuple[str, float, dict[str, Any]]] = []

    class Tracer:
        def start_span(self, name: str, kind: Any, attributes: dict[str, Any]) -> _Span:
            assert kind is trace.SpanKind.CLIENT
            spans.append(_Span(name, attributes))
            return spans[-1]

    class Meter:
        def create_counter(self, name: str, **options: Any) -> _Instrument:
            made[name] = _Instrument(name, points, **options)
            return made[name]

        create_histogram = create_counter

        def create_observable_gauge(self, name: str, callbacks: list[Any], unit: str) -> None:
            gauges[name] = callbacks[0]

    gauges: dict[str, Any] = {}
    made: dict[str, _Instrument] = {}
    gauges["instruments"] = made  # (read by a test, not a gauge)
    fake_trace = types.SimpleNamespace(
        get_tracer=lambda *a: Tracer(),
        SpanKind=trace.SpanKind,
        Status=trace.Status,
        StatusCode=trace.StatusCode,
    )
    fake_metrics = types.SimpleNamespace(
        get_meter=lambda *a: Meter(), Observation=metrics.Observation
    )
    monkeypatch.setattr(_observe, "_otel_modules", lambda: (fake_metrics, fake_trace))
    points.append(("gauges", 0, gauges))  # the gauge callbacks, for the test to read
    return spans, points


async def test_opentelemetry_span_per_call_and_metrics(
    emulator: Any, recorded_otel: tuple[list[_Span], list[Any]]
) -> None:
    spans, points = recorded_otel
    gauges = points.pop(0)[2]
    made = gauges.pop("instruments")
    async with client_for(emulator) as client:
        await client.send_once(NUMBERS, "code 1")
        # The scheduler's figures as gauges, read as an SDK would at collection time.
        read = {
            name: [(o.value, o.attributes) for o in gauge(None)] for name, gauge in gauges.items()
        }
        assert read["aisix.client.limit"] == [
            (client.stats().limit, {"aisix.account": emulator.account})
        ]
        assert read["aisix.client.in_flight"][0][0] == 0
        assert read["aisix.client.circuit_open"][0][0] == 0
        emulator.state.configure(ip_bound=True)
        with pytest.raises(RateLimitedError):
            await client.get_balance(retry=RetryPolicy(attempts=2, initial_backoff=0))
    assert [s.name for s in spans] == ["aisix sendOnce", "aisix getBalance"]
    assert all(s.ended for s in spans)
    sent, refused = spans
    assert sent.attributes == {
        "aisix.action": "sendOnce",
        "aisix.attempts": 1,
        "aisix.outcome": "accepted",
        "aisix.outcome_unknown": False,
        "aisix.mobiles": 2,
        "aisix.result": "1",
    }
    assert sent.status is None
    assert refused.attributes["aisix.attempts"] == 2
    assert refused.attributes["aisix.result"] == "-1"
    assert refused.status.status_code.name == "ERROR"
    attempts = [(v, a) for n, v, a in points if n == "aisix.client.attempts"]
    assert attempts == [
        (1, {"aisix.action": "sendOnce", "aisix.result": "1"}),
        (1, {"aisix.action": "getBalance", "aisix.result": "-1"}),
        (1, {"aisix.action": "getBalance", "aisix.result": "-1"}),
    ]
    assert len([p for p in points if p[0] == "aisix.client.latency"]) == 3
    # In seconds, in stats()'s buckets: the SDK's default ones are for milliseconds.
    for name in ("aisix.client.latency", "aisix.client.queue_wait"):
        assert made[name].options["unit"] == "s"
        assert made[name].options["explicit_bucket_boundaries_advisory"] == _observe.BUCKETS
    assert len([p for p in points if p[0] == "aisix.client.queue_wait"]) == 3
    calls = [a["aisix.outcome"] for n, _, a in points if n == "aisix.client.calls"]
    assert calls == ["accepted", "failed"]
    everything = json.dumps([s.attributes for s in spans] + points, default=str)
    assert emulator.authkey not in everything
    assert all(number not in everything for number in NUMBERS)


async def test_a_call_cancelled_on_the_wire_is_no_success_in_its_span(
    emulator: Any, recorded_otel: tuple[list[_Span], list[Any]]
) -> None:
    # Its span said aisix.result "1" with no error status: a dashboard counting results
    # of "1" counted it a success, though its outcome was unknown.
    spans, _ = recorded_otel
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    async with client_for(emulator) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.send_once, NUMBERS, "code 1")
                await anyio.sleep(0.2)
                scope.cancel()
    (span,) = spans
    assert span.attributes["aisix.outcome"] == "unknown"
    assert span.attributes["aisix.result"] == "cancelled"
    assert span.status.status_code.name == "ERROR"


def test_without_the_extra_nothing_is_imported_or_recorded() -> None:
    # A fresh interpreter where opentelemetry cannot be imported (as without the extra),
    # and one where it can but the client is told otel=False.
    script = """
import sys
if sys.argv[1] == "absent":
    sys.modules["opentelemetry"] = None   # any import of it now fails
from aisix_async import AisixClient
client = AisixClient("1001@100001", "87B01469201D6557C2685137EB3B5DEC",
                     otel=None if sys.argv[1] == "absent" else False)
assert client._gateway.observer.otel is None
assert not any(name.startswith("opentelemetry.") for name in sys.modules), sorted(
    name for name in sys.modules if name.startswith("opentelemetry"))
if sys.argv[1] == "absent":
    try:
        AisixClient("1001@100001", "87B01469201D6557C2685137EB3B5DEC", otel=True)
    except ImportError as exc:   # the hint also gives the README's form (not on PyPI yet)
        assert "pip install '.[otel]'" in str(exc), exc
        # Typed as every missing extra is (it was a bare ImportError).
        from aisix_async import ExtraNotInstalledError
        assert isinstance(exc, ExtraNotInstalledError) and exc.name == "opentelemetry"
    else:
        raise AssertionError("otel=True without the extra")
print("ok")
"""
    for mode in ("absent", "off"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"


async def test_unknown_from_an_answer_reaches_the_hook_and_a_failing_hook_is_logged(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    seen: list[UnknownOutcome] = []

    def hook(outcome: UnknownOutcome) -> None:
        seen.append(outcome)
        raise RuntimeError("the hook's own bug")

    async with client_for(emulator, on_unknown=hook) as client:
        with pytest.raises(GatewayInternalError) as caught:
            await client.send_once(NUMBERS, "code 1")
        stats = client.stats()
    assert caught.value.outcome_unknown
    assert [(o.reason, o.error, o.mobiles, o.mobile_count) for o in seen] == [
        ("error", caught.value, tuple(NUMBERS), 2)
    ]
    assert stats.outcome_unknown == 1 and stats.calls[("sendOnce", "unknown")] == 1
    assert stats.results[("sendOnce", "-10")] == 1
    ours = [r for r in caplog.records if r.name == "aisix_async"]
    assert [r.__dict__.get("outcome") for r in ours if r.levelno == logging.WARNING] == ["unknown"]
    assert any("on_unknown hook failed" in r.getMessage() for r in ours)
    # The gateway did charge it: the ledger has both numbers.
    assert sorted(r.mobile for r in emulator.state.messages()) == sorted(NUMBERS)
    no_secrets([r for r in ours if r.exc_info is None], emulator)


async def test_bulk_chunks_count_and_hook_but_log_below_warning(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A bulk stream reports each chunk's outcome to its caller: the client adds no
    # WARNING per chunk (the CLI would print each one), but counts and tells the hook.
    caplog.set_level(logging.INFO, logger="aisix_async")
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    seen: list[Any] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        async with client.send_many(NUMBERS, "code", chunk_size=1, check_balance=False) as out:
            statuses = [outcome.status.name async for outcome in out]
        stats = client.stats()
    assert statuses == ["UNKNOWN", "UNKNOWN"]
    assert stats.outcome_unknown == 2 and len(seen) == 2
    unknown = [r for r in caplog.records if r.__dict__.get("outcome") == "unknown"]
    assert [r.levelno for r in unknown] == [logging.INFO, logging.INFO]
