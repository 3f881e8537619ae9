"""Retry time limits hold: no backoff sleeps past them; an unreachable gateway is given up.

The waits are read from ``on_retry`` (what the scheduler is about to sleep) and compared
with the time left. The scheduler runs on a virtual clock (its ``clock`` and ``sleep`` are
injected): a backoff moves the clock by exactly its length and takes no real time, so
the limits are checked to the arithmetic, not to how loaded the machine is.
"""

from __future__ import annotations

import pytest
from helpers import VirtualClock

from aisix_async import RetryDetails, RetryPolicy, TransportError
from aisix_async._mechanics.scheduler import Scheduler

pytestmark = pytest.mark.anyio


def _unreachable() -> TransportError:
    return TransportError("getBalance: could not reach the gateway", request_sent=False)


async def test_no_backoff_sleeps_past_the_retry_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The largest backoff each time: uncapped, the second one would overrun the limit.
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    waits: list[tuple[float, float]] = []
    first: list[float] = []

    clock = VirtualClock()

    def on_retry(details: RetryDetails) -> None:
        waits.append((clock() - first[0], details.wait))

    policy = RetryPolicy(attempts=100, timeout=0.3, initial_backoff=0.2, max_backoff=5)
    scheduler = Scheduler(retry=policy, on_retry=on_retry, clock=clock, sleep=clock.sleep)

    async def attempt() -> None:
        if not first:
            first.append(clock())
        raise TransportError("getBalance: reset", request_sent=True)

    with pytest.raises(TransportError):
        await scheduler.run(attempt, action="getBalance", unsafe=False)
    assert len(waits) >= 2
    for elapsed, wait in waits:
        assert elapsed + wait <= 0.3 + 0.05, waits
    # What was announced is what was slept: the bound above is about the real backoffs.
    assert clock.slept == [wait for _, wait in waits]


async def test_an_unreachable_gateway_is_given_up_after_its_own_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    waits: list[float] = []
    policy = RetryPolicy(
        attempts=1000, timeout=120, initial_backoff=0.05, max_backoff=0.1, unreachable_timeout=0.3
    )
    clock = VirtualClock()
    scheduler = Scheduler(
        retry=policy,
        on_retry=lambda details: waits.append(details.wait),
        clock=clock,
        sleep=clock.sleep,
    )

    async def attempt() -> None:
        raise _unreachable()

    with pytest.raises(TransportError, match="could not reach"):
        await scheduler.run(attempt, action="getBalance", unsafe=False)
    assert 0 < sum(waits) <= 0.3 + 1e-6


async def test_the_unreachable_limit_counts_only_failures_in_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    policy = RetryPolicy(
        attempts=1000, timeout=120, initial_backoff=0.05, max_backoff=0.05, unreachable_timeout=0.12
    )
    clock = VirtualClock()
    scheduler = Scheduler(retry=policy, clock=clock, sleep=clock.sleep)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 12:
            return "ok"
        # A connection failure, then a lost answer (a read-only call: retried), in turn:
        # never 0.12 s of connection failures in a row.
        if calls % 2:
            raise _unreachable()
        raise TransportError("getBalance: reset", request_sent=True)

    assert await scheduler.run(attempt, action="getBalance", unsafe=False) == "ok"
