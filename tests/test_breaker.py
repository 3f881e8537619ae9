"""The circuit breaker for a -1 that never clears, on virtual time.

The breaker reads no clock of its own; the scheduler hands it its (injected) clock, so
these tests step time by hand and nothing sleeps for real.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sim_gateway import ClientRun, Gateway, default_scheduler, run_virtual, simulate

from aisix_async import AuthenticationError, CircuitOpenError, RateLimitedError, RetryPolicy
from aisix_async._core.errors import is_retryable
from aisix_async._mechanics.breaker import Breaker
from aisix_async._mechanics.scheduler import Scheduler

NO_WAIT = RetryPolicy(attempts=100, timeout=1e9, initial_backoff=0, max_backoff=0)


def refuse(breaker: Breaker, now: float) -> None:
    """One attempt admitted at ``now`` and answered -1 (not refused by the breaker)."""
    with pytest.raises(RateLimitedError) as caught, breaker.admitted("sendOnce", now):
        raise RateLimitedError("sendOnce", -1)
    assert type(caught.value) is RateLimitedError


def accept(breaker: Breaker, now: float) -> None:
    with breaker.admitted("sendOnce", now):
        pass


def test_a_run_of_minus_one_opens_it_only_after_enough_time_and_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aisix_async")
    breaker = Breaker(open_after=3.0, min_refusals=6)
    # Many -1 in a short burst (a plain rate limit being found) do not open it.
    for i in range(20):
        refuse(breaker, i * 0.1)
    assert not breaker.is_open
    # One accepted answer breaks the run: pacing works, this is no IP binding.
    accept(breaker, 2.5)
    for i in range(5):
        refuse(breaker, 3.0 + i)
    assert not breaker.is_open  # 5 refusals over 4 s: too few
    refuse(breaker, 8.0)
    assert breaker.is_open and breaker.trips == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "bound to another IP address" in warnings[0].getMessage()
    assert warnings[0].__dict__["refusals"] == 6


def test_open_refuses_at_once_then_probes_and_closes_on_success() -> None:
    breaker = Breaker(open_after=1.0, min_refusals=2, probe_after=5.0, max_probe_after=20.0)
    refuse(breaker, 0.0)
    refuse(breaker, 1.0)
    assert breaker.is_open
    with pytest.raises(CircuitOpenError) as caught:
        breaker.check("sendOnce", 2.0)
    assert caught.value.code == -1 and not caught.value.outcome_unknown
    assert "IP address" in caught.value.message
    with pytest.raises(CircuitOpenError), breaker.admitted("sendOnce", 5.9):
        pass
    # At 6 s (1 + 5) one probe goes; a second caller meanwhile is refused; the probe
    # gets -1 again.
    breaker.check("sendOnce", 6.0)
    with pytest.raises(RateLimitedError), breaker.admitted("getBalance", 6.0):
        with pytest.raises(CircuitOpenError):
            breaker.check("sendOnce", 6.1)
        raise RateLimitedError("getBalance", -1)
    assert breaker.is_open
    with pytest.raises(CircuitOpenError):
        breaker.check("sendOnce", 6.2)
    # The next probe is due 10 s after that one, the one after 20 s later (doubling).
    with pytest.raises(CircuitOpenError):
        breaker.check("sendOnce", 15.9)
    refuse(breaker, 16.0)
    assert breaker.is_open
    with pytest.raises(CircuitOpenError):
        breaker.check("sendOnce", 35.9)
    accept(breaker, 36.0)
    assert not breaker.is_open
    breaker.check("sendOnce", 36.1)


def test_another_code_also_closes_it() -> None:
    breaker = Breaker(open_after=1.0, min_refusals=2, probe_after=1.0)
    refuse(breaker, 0.0)
    refuse(breaker, 1.0)
    assert breaker.is_open
    with pytest.raises(AuthenticationError), breaker.admitted("getBalance", 2.5):
        raise AuthenticationError("getBalance", -2)
    assert not breaker.is_open


def test_circuit_open_is_never_retried() -> None:
    error = CircuitOpenError("sendOnce")
    assert isinstance(error, RateLimitedError)
    assert not is_retryable(error, unsafe=True)
    assert not is_retryable(error, unsafe=False)


@pytest.mark.anyio
async def test_the_scheduler_diagnoses_it_within_seconds_and_fails_later_calls_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aisix_async")
    now = [0.0]

    async def sleep(seconds: float) -> None:
        # Virtual time all through: the pacing between -1 answers waited in real time
        # (13 s of the suite's run for a few virtual seconds).
        now[0] += seconds
        await anyio.lowlevel.checkpoint()

    scheduler = Scheduler(retry=NO_WAIT, clock=lambda: now[0], sleep=sleep)
    calls: list[float] = []
    accepting = [False]

    async def attempt() -> str:
        calls.append(now[0])
        now[0] += 0.5  # each -1 takes half a (virtual) second
        if accepting[0]:
            return "ok"
        raise RateLimitedError("sendOnce", -1)

    def run() -> Any:
        return scheduler.run(attempt, action="sendOnce", unsafe=True)

    with pytest.raises(CircuitOpenError):
        await run()
    # Diagnosed within seconds, not after a hundred attempts: the pace falls to its floor
    # (one request per 2 s) as the -1 answers come, then a run of them spanning 3 s
    # there opens it (12.5 virtual seconds, 6 attempts, when this was written).
    assert len(calls) <= 8
    assert now[0] <= 15.0
    assert scheduler.breaker.is_open
    count = len(calls)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await run()
    assert len(calls) == count  # refused without asking the gateway
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    # The account is fixed (bound to our address); the next probe finds out and closes it.
    accepting[0] = True
    now[0] += scheduler.breaker.probe_after
    assert await run() == "ok"
    assert not scheduler.breaker.is_open
    assert await run() == "ok"


def test_recheck_refuses_a_call_that_waited_while_it_opened_but_not_the_probe() -> None:
    breaker = Breaker(open_after=1.0, min_refusals=2, probe_after=5.0)
    breaker.recheck("sendOnce", 0.0)  # closed: nothing to say
    refuse(breaker, 0.0)
    refuse(breaker, 1.0)
    with pytest.raises(CircuitOpenError):
        breaker.recheck("sendOnce", 1.5)
    with breaker.admitted("sendOnce", 6.0):  # the probe
        breaker.recheck("sendOnce", 6.0)
    assert not breaker.is_open


def test_after_an_accepted_answer_a_run_must_be_longer_to_open_it() -> None:
    # Clients sharing a low limit see runs of -1 by chance; an account that accepted
    # this client is not bound to another address, so only a much longer run opens it.
    breaker = Breaker(open_after=3.0, min_refusals=6, seen_factor=3.0)
    accept(breaker, 0.0)
    for i in range(17):
        refuse(breaker, 1.0 + i)
    assert not breaker.is_open  # 17 refusals over 16 s: fewer than 3 x 6
    refuse(breaker, 18.0)
    assert breaker.is_open
    # A fresh breaker that never saw an acceptance opens after 6 over 3 s, as before.
    fresh = Breaker(open_after=3.0, min_refusals=6, seen_factor=3.0)
    for i in range(6):
        refuse(fresh, i * 0.6)
    assert fresh.is_open


def test_a_minus_one_while_the_client_is_still_slowing_down_does_not_open_it() -> None:
    breaker = Breaker(open_after=3.0, min_refusals=6)
    for i in range(20):
        with pytest.raises(RateLimitedError), breaker.admitted("sendOnce", i, None, lambda: True):
            raise RateLimitedError("sendOnce", -1)
    assert not breaker.is_open
    # At its floor, the same run opens it.
    for i in range(6):
        with (
            pytest.raises(RateLimitedError),
            breaker.admitted("sendOnce", 20 + i, None, lambda: False),
        ):
            raise RateLimitedError("sendOnce", -1)
    assert breaker.is_open


@pytest.mark.parametrize(("rate", "clients"), [(2.0, 4), (40.0, 2)])
def test_clients_sharing_a_low_limit_do_not_open_their_breakers(rate: float, clients: int) -> None:
    # Issue 16's false trips (tests/sim_fairness.py --breaker): the default schedulers,
    # breaker on, on virtual time. A trip would end a client's run with CircuitOpenError.
    seconds = 300.0 if rate < 10 else 120.0
    gateway = Gateway(rate, burst=5, latency=0.1)
    result = simulate(gateway, [ClientRun(seconds=seconds, demand=16) for _ in range(clients)])
    assert all(s.breaker.trips == 0 for s in result.schedulers)
    assert all(gateway.accepted(i, seconds / 2, seconds) > 0 for i in range(clients))


def test_an_account_that_refuses_everything_still_opens_it_within_seconds() -> None:
    # Rate 0, no burst: every request -1, forever (an IP-bound account), 100 ms away.
    gateway = Gateway(0.0, burst=0.0, latency=0.1)
    with pytest.raises(BaseException) as caught:
        simulate(gateway, [ClientRun(seconds=60, demand=16)])
    assert "CircuitOpenError" in repr(caught.value.exceptions)  # type: ignore[attr-defined]
    # Its last request went out by 9 s (8.1 s: at its floor, one request per 2 s).
    opened_by = max(at for at, _, _ in gateway.decisions)
    assert opened_by <= 9.0, opened_by


def test_an_account_bound_elsewhere_mid_run_opens_it_within_seconds() -> None:
    # Accepted at 10/s for 30 s, then nothing but -1 (the account bound to another
    # address mid-day). Measured far above its floor, the client is not one of many
    # sharing a low limit: six refusals over 3 s at its floor open the breaker, not
    # twelve over 6 s (which at the floor's one request per 2 s took 15-25 s).
    gateway = Gateway(10.0, burst=5, latency=0.1)
    with pytest.raises(BaseException) as caught:
        simulate(gateway, [ClientRun(seconds=90, demand=16)], rates=[(30.0, 0.0)])
    assert "CircuitOpenError" in repr(caught.value.exceptions)  # type: ignore[attr-defined]
    opened_by = max(at for at, _, _ in gateway.decisions)
    assert 30.0 < opened_by <= 38.0, opened_by


def test_a_burst_accepted_fast_counts_as_measured_far_above_the_floor() -> None:
    # A web service's burst accepted at 20/s, then the account refuses everything before
    # the client ever measured a sure ceiling: eight answers in a row accepted that fast
    # within the last minute say the same as a measured ceiling, so the short run opens it.
    gateway = Gateway(10.0, burst=30, latency=0.1)
    with pytest.raises(BaseException) as caught:
        simulate(gateway, [ClientRun(seconds=60, demand=2)], rates=[(2.0, 0.0)])
    assert "CircuitOpenError" in repr(caught.value.exceptions)  # type: ignore[attr-defined]
    opened_by = max(at for at, _, _ in gateway.decisions)
    assert opened_by <= 12.0, opened_by


def queued_callers_when_it_opens(leave_when_open: bool, backend: str) -> tuple[float, list[float]]:
    """Single calls arriving 5 a second at an account accepted at 10/s until 5 s, then bound
    elsewhere: when the breaker opened, and when each call waiting at that moment ended
    (queued for a turn, or sleeping before its next attempt)."""
    gateway = Gateway(10.0, burst=5, latency=0.1)
    scheduler = default_scheduler()
    send = gateway.attempt(0)
    ended: list[tuple[float, float, str]] = []  # (started, ended, error type)

    async def call(started: float) -> None:
        try:
            await scheduler.run(
                send, action="sendOnce", unsafe=True, leave_when_open=leave_when_open
            )
            outcome = "accepted"
        except CircuitOpenError:
            outcome = "CircuitOpenError"
        except RateLimitedError:
            outcome = "RateLimitedError"
        ended.append((started, anyio.current_time(), outcome))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(100):
                if i == 25:
                    gateway.set_rate(0.0)
                tg.start_soon(call, anyio.current_time())
                await anyio.sleep(0.2)

    run_virtual(main, backend)
    assert scheduler.breaker.trips == 1
    # It opened when the first call was refused with CircuitOpenError: from then on no
    # call was accepted, and every call started before and still waiting was refused.
    opened = min(end for _, end, error in ended if error == "CircuitOpenError")
    assert all(error == "CircuitOpenError" for _, end, error in ended if end >= opened)
    queued = [end for start, end, _ in ended if start < opened]
    return opened, [end for end in queued if end >= opened]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_single_calls_queued_when_it_opens_fail_at_once(backend: str) -> None:
    # A web service's handlers: the calls already waiting for a turn when the breaker
    # opens fail with it, not one by one at their turns (one per 2 s at the floor).
    opened, queued = queued_callers_when_it_opens(True, backend)
    assert len(queued) >= 5
    assert max(queued) - opened < 0.01, (opened, queued)
    # What they did before (and what bulk chunks, which do not leave, still do).
    opened, queued = queued_callers_when_it_opens(False, backend)
    assert len(queued) >= 5
    assert max(queued) - opened > 2.0, (opened, queued)


def _accepted_after_a_storm(rate: float, backend: str) -> tuple[int, int]:
    """30 callers at ``rate``; from 10 s to 22 s nothing but -1 (an account bound to
    another address, fixed by its operator): the requests accepted from 32 s to 42 s,
    and those answered -1 after the storm (from when the bucket, empty at 22 s, has its
    first token again: a request that arrives before then is refused whatever the
    client does, and whether one does is the phase of its storm-time retries)."""
    gateway = Gateway(rate, burst=5, latency=0.05)
    scheduler = default_scheduler(max_concurrency=16)
    send = gateway.attempt(0)

    async def main() -> None:
        async def caller() -> None:
            while anyio.current_time() < 42:
                try:
                    await scheduler.run(send, action="sendOnce", unsafe=True, leave_when_open=True)
                except (RateLimitedError, CircuitOpenError):
                    await anyio.sleep(0.2)

        async def steer() -> None:
            await anyio.sleep(10)
            gateway.set_rate(0.0)
            await anyio.sleep(12)
            gateway.set_rate(rate)

        async with anyio.create_task_group() as tasks:
            for _ in range(30):
                tasks.start_soon(caller)
            tasks.start_soon(steer)

    run_virtual(main, backend)
    return gateway.accepted(start=32, end=42), gateway.refused(start=22 + 1 / rate, end=42)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("rate", [5.0, 30.0])
def test_once_a_storm_of_minus_one_clears_the_pace_is_what_it_was(
    backend: str, rate: float
) -> None:
    # The storm's cuts took the pace to its floor, and it climbed back from there one
    # request at a time: at 30 requests/s, 0.5-1 a second for 40 s after the account
    # was fixed (a user's trial: a web service's calls failing their deadlines).
    accepted, refused = _accepted_after_a_storm(rate, backend)
    assert accepted >= 0.9 * rate * 10
    assert refused <= 0.05 * accepted + 3
