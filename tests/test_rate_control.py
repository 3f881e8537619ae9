"""The rate controller against a simulated token-bucket gateway, on virtual time.

Each run drives the real Scheduler for tens of simulated seconds in a fraction of a real
one (see sim_gateway.py); the real-HTTP tests elsewhere cover the wire. The figures
asserted here are what the controller must hold at every limit: after it has met the
limit, about one request in a hundred answered -1 and the limit's worth of goodput,
whether the limit is 1 request/s or 1000, the answer 5 ms or 1 s away.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections.abc import Callable

import anyio
import pytest
from sim_gateway import (
    ClientRun,
    Gateway,
    default_scheduler,
    run_virtual,
    simulate,
    where_refused,
)

from aisix_async import (
    AisixError,
    DeadlineExceededError,
    RateLimitedError,
    RateState,
    RetryPolicy,
    TransportError,
    ValidationError,
)
from aisix_async._mechanics.scheduler import Scheduler, in_background

BACKENDS = ["asyncio", "trio"]
RATES = [1, 2, 5, 10, 20, 40, 100, 300, 1000]
LATENCIES = [0.005, 0.02, 0.1, 0.3, 1.0]


def _seconds(rate: float) -> float:
    # Long enough for 300 requests after the first third (the cold start) at any rate.
    return max(30.0, 450 / rate) if rate < 300 else 15.0


def _cells() -> list[tuple[float, float]]:
    # The client's default demand here is 64 requests at once: a cell whose limit needs
    # more than half of them in flight is limited by that cap, not by the controller.
    return [(r, lat) for lat in LATENCIES for r in RATES if r * lat <= 32]


@pytest.mark.parametrize(("rate", "latency"), _cells())
def test_quiet_and_at_the_limit_once_it_is_known(rate: float, latency: float) -> None:
    gateway = Gateway(rate, burst=5, latency=latency)
    seconds = _seconds(rate)
    result = simulate(gateway, [ClientRun(seconds=seconds, demand=64)])
    warm = seconds / 3
    # After the cold start: the limit's worth, and at most 7% of requests answered -1.
    # Most cells see about 1%, but where a cell lands depends on the phase of its cycles
    # at the moment measured: over the 25 cells around R=20 at 300 ms (R 15-25, 0.2-0.4 s)
    # the share averaged 1.6% and reached 6.2% (issue 20: the 1% target is missed).
    assert result.goodput(start=warm) >= 0.97 * rate
    if rate * latency < 20:
        assert result.refused_share(start=warm, end=seconds) <= 0.07
    else:
        assert result.refused_share(start=warm, end=seconds) <= 0.12
    # The whole run, cold start included (slow start takes a few round trips, which
    # at 1 s answers is a visible part of 30 s).
    assert result.goodput() >= (0.88 if rate * latency < 10 else 0.75) * rate
    assert result.refused_share(end=seconds) <= 0.15


@pytest.mark.parametrize("rate", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("latency", [0.005, 0.02])
def test_slow_start_meets_a_limit_with_one_minus_one_when_answers_are_quick(
    rate: float, latency: float
) -> None:
    # Doubling every round trip, slow start at 5-20 ms answers had 4 requests in flight
    # (up to 8 at R = 100) when the burst ran out, each answered -1; doubling no faster
    # than every 0.1 s, it has one.
    first, _, _ = where_refused(rate, latency)
    assert first <= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_probe_that_spends_the_burst_is_not_read_as_the_limit(backend: str) -> None:
    # A cold start's quick cuts (answers at 20 ms) can end under the limit, on a ceiling
    # read from one or two answers; the bucket fills meanwhile, and the probe above that
    # ceiling is accepted past the limit until the burst is gone. Its last answers read
    # as the limit made a sure pace of 17-19 at 10 requests/s in 12 of these 30 runs: a
    # rate state (what a service keeps over a restart) at twice the limit.
    rate = 10.0
    highest = []
    for jitter in (0.0, 0.5, 1.0):
        for seed in range(1, 11):
            gateway = Gateway(rate, burst=5, latency=0.02, jitter=jitter * 0.02)
            result = simulate(
                gateway,
                [ClientRun(seconds=8, demand=40)],
                backend=backend,
                seed=seed,
                watch_every=0.05,
            )
            learned = [paces[0] for _, paces in result.paces if paces[0] is not None]
            assert learned, "no rate was learned in 8 s"
            highest.append(max(learned))
    # Measured: 1.36 of the limit at most once in 30 runs (a ceiling read from four
    # answers), the rest within 0.95-1.05.
    assert sum(1 for pace in highest if pace > 1.2 * rate) <= 2, highest
    assert max(highest) <= 1.5 * rate, highest


def test_a_warm_start_under_the_limit_does_not_read_its_burst_as_the_limit() -> None:
    # Started from a state at half the limit, the client's first -1 comes after a probe
    # that spent the bucket's burst, which filled meanwhile: read as the limit, 2.5 times
    # it in 7 of 40 runs. The first meeting shows the burst whether the start was cold
    # or warm.
    rate = 10.0
    highest = []
    for jitter in (0.5, 1.0):
        for seed in range(1, 21):
            state = RateState(pace=5.0, concurrency=1, learned_at=time.time())
            gateway = Gateway(rate, burst=5, latency=0.02, jitter=jitter * 0.02)
            result = simulate(
                gateway,
                [ClientRun(seconds=30, demand=64, make=_warm(state, 64))],
                seed=seed,
                watch_every=0.05,
            )
            learned = [paces[0] for _, paces in result.paces if paces[0] is not None]
            highest.append(max(learned))
    assert max(highest) <= 1.3 * rate, sorted(highest)[-5:]


def test_a_probe_over_a_deep_burst_does_not_run_away() -> None:
    # A state at half the limit against a bucket holding a second of it (20 requests/s,
    # burst 20, 20 ms answers): the probe's excess doubled every few requests, so the
    # faster the pace the sooner the next doubling, and it went from 18 to 250 requests/s
    # in half a second while the burst hid the limit; 14 -1 answers came within 0.1 s,
    # 26 in 30 s (a user's trial, then here). A doubling now takes 0.2 s at least.
    state = RateState(pace=10.0, concurrency=16, learned_at=time.time())
    gateway = Gateway(20.0, burst=20, latency=0.01, answer_latency=0.01)
    simulate(gateway, [ClientRun(seconds=30, demand=16, make=_warm(state, 16))], seed=1)
    refused = [at for at, _, ok in gateway.decisions if not ok]
    clump = max(sum(1 for other in refused if at <= other < at + 0.2) for at in refused)
    # Measured: 8 in all, 5 within 0.2 s.
    assert clump <= 7 and len(refused) <= 12, refused
    assert gateway.accepted(0, 15, 30) >= 0.95 * 20 * 15


def test_a_climb_read_above_a_measured_limit_is_not_handed_on() -> None:
    # A state at 10 requests/s given to a client whose limit is now 5 (burst 5): the
    # limit is measured in seconds, and so is the drop, which the probe above it then
    # looks for briskly. That probe spends the burst refilled meanwhile, and its -1 reads
    # the climb's last answers (10.6) for a raised limit: used until the next -1 says
    # otherwise, but rate_state() handed it on as learned, and a new client (or the CLI's
    # cache) started at twice the limit (a user's trial; here, one seed of three).
    state = RateState(pace=10.0, concurrency=16, learned_at=time.time())
    gateway = Gateway(5.0, burst=5, latency=0.01, answer_latency=0.01, jitter=0.002)
    result = simulate(
        gateway,
        [ClientRun(seconds=60, demand=16, make=_warm(state, 16))],
        seed=2,
        watch_every=0.5,
    )
    handed = [paces[0] for at, paces in result.paces if at > 5 and paces[0] is not None]
    assert len(handed) > 100
    assert max(handed) <= 1.2 * 5.0, max(handed)
    # The climb was read (its -1 answers came): what is handed on is what was measured.
    assert gateway.refused(0, 30, 45) >= 2


def test_a_short_cycle_is_not_read_against_a_burst_it_cannot_show() -> None:
    # A cycle of a few answers, no more than the burst, cannot tell a rate from the
    # burst: read against one (read too large at a rate measured low), a client at 40
    # requests/s (100 ms answers jittered by as much) took 27.5 for the limit and stayed
    # near 33 (0.82 of it over 30 s). Such a cycle is read as before, and a climb above
    # a measured ceiling too.
    rate = 40.0
    goodputs = []
    for seed in range(1, 21):
        gateway = Gateway(rate, burst=5, latency=0.1, jitter=0.1)
        simulate(gateway, [ClientRun(seconds=30, demand=64)], seed=seed)
        goodputs.append(gateway.accepted(0, 0, 30) / (rate * 30))
    # Measured: 0.92 at worst, as before the burst was read at all.
    assert min(goodputs) >= 0.87, sorted(goodputs)[:3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_virtual_time_repeats_exactly_on_both_backends(backend: str) -> None:
    runs = [ClientRun(seconds=20, demand=16)]
    first = simulate(Gateway(10, latency=0.1), runs, backend=backend)
    second = simulate(Gateway(10, latency=0.1), runs, backend=backend)
    assert first.gateway.decisions == second.gateway.decisions
    assert len(first.gateway.decisions) > 190  # 20 simulated seconds at 10/s, and more
    assert first.schedulers[0].stats().pace is not None


# When a limit moves, relative to the controller's last cut (its cycle's phase), decides
# how soon a raise is found: right after a cut the probe above the ceiling starts gently.
# One fixed moment passed or failed by the luck of that phase, so each test below moves
# the change through several phases and asserts what holds at every one of them.
PHASES = [0.0, 0.5, 1.0, 1.5, 2.0]


def _moving_limit(
    rate: float, shift: float, backend: str = "asyncio"
) -> tuple[Gateway, list[tuple[float, float]], list[float], float]:
    """One client under a limit R, R/2 from 10 s + shift, 2R from 20 s + shift: the
    gateway, the phases (start, limit), their ends, and the limit's integral."""
    gateway = Gateway(rate, burst=5, latency=0.1)
    phases = [(0.0, rate), (10.0 + shift, rate / 2), (20.0 + shift, rate * 2)]
    simulate(gateway, [ClientRun(seconds=30 + shift, demand=32)], rates=phases[1:], backend=backend)
    ends = [10.0 + shift, 20.0 + shift, 30.0 + shift]
    ideal = sum(r * (end - at) for (at, r), end in zip(phases, ends, strict=True))
    return gateway, phases, ends, ideal


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift", PHASES)
def test_a_moving_limit_is_followed(backend: str, shift: float) -> None:
    rate = 40.0
    gateway, phases, ends, ideal = _moving_limit(rate, shift, backend)
    # The whole run: 0.91-0.99 of the limit's integral over these shifts (0.70-0.79 when
    # the probe after a drop was as gentle as at a steady limit).
    assert gateway.accepted(0, 0, ends[-1]) >= 0.88 * ideal
    for (at, limit), end in zip(phases[:2], ends[:2], strict=True):
        # The second half of the first two phases runs at the limit, within 10%.
        got = gateway.accepted(0, end - 5, end) / 5
        assert abs(got - limit) <= 0.1 * limit, (at, got, limit)
    # The doubled limit is found within 3 s at any phase of the cycle: a limit that just
    # dropped may come back, so the probe above the new ceiling is brisker for a while.
    # Its second half runs at the limit (it ran at 0.66-0.88 of it with the gentle probe).
    assert gateway.accepted(0, ends[2] - 5, ends[2]) / 5 >= 0.95 * rate * 2
    # A drop is met with a cut at once: at most a few -1 answers after it.
    assert gateway.refused(0, 10 + shift, 12 + shift) <= 6


@pytest.mark.parametrize(("rate", "floor"), [(10.0, 0.83), (100.0, 0.92)])
@pytest.mark.parametrize("shift", PHASES)
def test_a_moving_limit_is_followed_at_a_low_and_a_high_rate(
    rate: float, floor: float, shift: float
) -> None:
    # Scale-free in requests is not enough here: the limit moves in seconds. With the
    # excess doubling every 10 requests after a drop (2 s at 5 requests/s) and the drop
    # forgotten after 400 requests (8 s at 50), R = 10 got 0.60-0.64 of the integral and
    # ran at 0.29-0.47 of the doubled limit in the last 5 s; R = 100 got 0.86-0.93.
    # Measured since: 0.86-0.90 and 0.94-0.99 at R = 10; 0.94-0.97 at R = 100.
    gateway, _, ends, ideal = _moving_limit(rate, shift)
    assert gateway.accepted(0, 0, ends[-1]) >= floor * ideal
    assert gateway.accepted(0, ends[2] - 5, ends[2]) / 5 >= 0.9 * rate * 2


def test_a_drop_that_stays_is_probed_gently_again() -> None:
    # The brisker probe after a drop lasts 400 requests and 30 s (or until the old limit
    # is back): a limit that dropped for good is then met as seldom as one that never
    # moved.
    dropped = Gateway(40.0, burst=5, latency=0.1)
    simulate(dropped, [ClientRun(seconds=70, demand=32)], rates=[(10.0, 20.0)])
    steady = Gateway(20.0, burst=5, latency=0.1)
    simulate(steady, [ClientRun(seconds=70, demand=32)])
    # Measured: 6 and 5 -1 answers from 40 s to 70 s.
    assert dropped.refused(0, 40, 70) <= steady.refused(0, 40, 70) + 2
    assert dropped.accepted(0, 40, 70) >= 0.95 * 20.0 * 30


def _share(clients: int) -> tuple[list[float], float]:
    rate = 40.0
    gateway = Gateway(rate, burst=5, latency=0.1)
    result = simulate(gateway, [ClientRun(seconds=30, demand=16) for _ in range(clients)])
    shares = [gateway.accepted(i, 10, 30) / 20 for i in range(clients)]
    return shares, result.refused_share(start=10, end=30)


@pytest.mark.parametrize("clients", [2, 3, 4])
def test_clients_sharing_one_bucket_take_the_limit_between_them(clients: int) -> None:
    shares, refused = _share(clients)
    assert sum(shares) >= 0.9 * 40
    assert refused <= 0.08


def test_two_clients_sharing_one_bucket_both_get_a_real_part() -> None:
    shares, _ = _share(2)
    assert min(shares) >= 0.3 * 40 / 2


def test_three_clients_sharing_one_bucket_all_get_a_real_part() -> None:
    # Was a known gap (xfail); the gentler probe near the ceiling (a raised limit is
    # proven by the answers, not found by probing hard) leaves the third client its part.
    shares, _ = _share(3)
    assert min(shares) >= 0.3 * 40 / 3


def test_a_warm_start_skips_the_cold_start_minus_ones() -> None:
    rate = 5.0

    def first_seconds(state: RateState | None) -> tuple[int, int]:
        gateway = Gateway(rate, burst=5, latency=0.1)

        make = _warm(state)

        simulate(gateway, [ClientRun(seconds=5, demand=16, make=make)])
        return gateway.refused(0, 0, 5), gateway.accepted(0, 0, 5)

    learner = simulate(Gateway(rate, burst=5, latency=0.1), [ClientRun(seconds=40, demand=16)])
    state = learner.schedulers[0].rate_state()
    assert state.pace is not None and 0.9 * rate <= state.pace <= 1.15 * rate
    # Through JSON and back, as a file or a journal keeps it.
    state = RateState.from_dict(json.loads(json.dumps(state.as_dict())))
    # learned_at is wall-clock time (the state was learned a moment ago), so the new
    # client trusts it fully.

    cold_refused, _cold_accepted = first_seconds(None)
    warm_refused, warm_accepted = first_seconds(state)
    assert cold_refused >= 3
    assert warm_refused <= 1
    assert warm_accepted >= 0.9 * rate * 5


@pytest.mark.parametrize(
    ("rate", "pace", "within"), [(10.0, 3.0, 20.0), (50.0, 5.0, 20.0), (2.0, 1.0, 45.0)]
)
def test_a_warm_start_below_the_limit_finds_it(rate: float, pace: float, within: float) -> None:
    # A state remembered low (an account's limit raised since, or a share of a bucket
    # other processes used too) is probed briskly until the limit is met. The gentle
    # probe of a known limit was still under 4 requests/s after 60 s (a client started
    # at 1.5 against 5 sent 50 requests at 1.5 without a -1). Brisk in requests alone
    # (the excess doubling every 20), it was slow in seconds at a low pace: 0.9 of the
    # limit reached after 42 s from 3 against 10, 28 s from 5 against 50, never in 90 s
    # from 1 against 2, with no -1 all that while; a user's command line, its cache left
    # at 5 by runs before, took 28 s where a cold start took 3. Now the excess doubles
    # at least every second's worth of requests: 16, 14 and 31 s.
    gateway = Gateway(rate, burst=5, latency=0.1)
    state = RateState(pace=pace, concurrency=1, learned_at=time.time())

    make = _warm(state)

    result = simulate(gateway, [ClientRun(seconds=within + 15, demand=16, make=make)])
    assert result.goodput(start=within) >= 0.9 * rate
    # Having met the limit, the client's state is what it measured, learned just now.
    learned = result.schedulers[0].rate_state()
    assert learned.pace is not None and abs(learned.pace - rate) <= 0.15 * rate
    assert learned.learned_at > state.learned_at


def test_a_warm_start_at_the_limit_stays_quiet_at_a_low_rate() -> None:
    # The other side of that brisker probe: a state that is right, at a few requests a
    # second, meets the limit no more than a few times in 20 s, and not in its first 5
    # (measured: 0 and 2 at 5 requests/s, 0 and 1 at 2).
    for rate in (2.0, 5.0):
        gateway = Gateway(rate, burst=5, latency=0.1)
        state = RateState(pace=rate, concurrency=2, learned_at=time.time())
        simulate(gateway, [ClientRun(seconds=20, demand=16, make=_warm(state))])
        assert gateway.refused(0, 0, 5) == 0
        assert gateway.refused(0, 0, 20) <= 3
        assert gateway.accepted(0, 0, 20) >= 0.95 * rate * 20


def test_a_state_is_handed_on_as_given_until_the_limit_is_met() -> None:
    # Started from a state an hour old (so at half its pace) and not cut since: the
    # client learned nothing new, and hands on the state as it was given. It used to
    # hand on its own lowered pace with the old date, which the next client lowered
    # again for its age; and every accepted answer renewed the date, so a state
    # remembered too low was renewed for good.
    state = RateState(pace=40.0, concurrency=12, learned_at=1_000_000.0)
    later = 1_000_000.0 + Scheduler.STATE_HALF_LIFE
    scheduler = _scheduler_from(state, later)
    assert scheduler.pace == pytest.approx(Scheduler.BETA * 20.0)
    assert scheduler.limit == 6
    # Its concurrency too: lowered here for its age, the next client lowered it again.
    assert scheduler.rate_state() == state
    # A state that met no limit yet (no pace) as well: re-dated now, it never aged.
    unmet = RateState(pace=None, concurrency=12, learned_at=1_000_000.0)
    assert _scheduler_from(unmet, later).rate_state() == unmet


@pytest.mark.parametrize("latency", [0.005, 0.1])
def test_a_warm_start_against_a_big_burst_does_not_run_away(latency: float) -> None:
    # A gateway whose bucket holds a second's worth (the emulator's default): the
    # burst hid the excess of the probe above the state, which went fast, to 1000
    # requests/s at a limit of 40, before its -1; the cut from that read the burst
    # (pace 900), and a warm client got 20 -1 answers in 5 s where a cold one got 14.
    rate = 40.0
    gateway = Gateway(rate, burst=rate, latency=latency)
    state = RateState(pace=0.98 * rate, concurrency=8, learned_at=time.time())

    make = _warm(state)

    result = simulate(gateway, [ClientRun(seconds=20, demand=16, make=make)])
    assert gateway.refused(0, 0, 5) <= 2
    assert gateway.refused(0, 0, 20) <= 10
    # Requests reaching the gateway in any quarter second: never a run-away probe.
    arrivals = [at for at, _, _ in gateway.decisions]
    peak = max(bisect.bisect_left(arrivals, at + 0.25) - i for i, at in enumerate(arrivals))
    assert peak <= 2.0 * rate * 0.25
    assert result.goodput(start=0) >= rate
    learned = result.schedulers[0].rate_state()
    assert learned.pace is not None and abs(learned.pace - rate) <= 0.1 * rate


@pytest.mark.parametrize(("rate", "latency"), [(40.0, 0.3), (100.0, 0.3), (20.0, 0.3)])
def test_a_warm_start_at_a_long_round_trip_stays_near_the_limit(
    rate: float, latency: float
) -> None:
    # Its first -1 comes after the answers of a few seconds; counted from the first
    # dispatch instead of the first answer (a round trip later), they read the rate low
    # (37 at 40 requests/s and 300 ms), the answers then proved the limit above that, and
    # the fast probe for a raised limit went to 66: 27 -1 answers in 20 s, where a client
    # that knew the limit meets it once per some 150 requests.
    gateway = Gateway(rate, burst=5, latency=latency)
    state = RateState(pace=rate, concurrency=math.ceil(rate * latency) + 2, learned_at=time.time())
    seconds = 20.0
    make = _warm(state, max_concurrency=64)

    result = simulate(gateway, [ClientRun(seconds=seconds, demand=64, make=make)])
    requests = gateway.refused(0, 0, seconds) + gateway.accepted(0, 0, seconds)
    assert gateway.refused(0, 0, seconds) <= 0.02 * requests
    assert result.goodput(end=seconds) >= 0.97 * rate
    # Requests reaching the gateway in any half second: no run-away probe.
    arrivals = [at for at, _, _ in gateway.decisions]
    peak = max(bisect.bisect_left(arrivals, at + 0.5) - i for i, at in enumerate(arrivals))
    assert peak <= 1.3 * rate * 0.5


def test_a_state_far_above_the_limit_is_cut_from_what_was_sent() -> None:
    # A cache from another plan: ten times the limit. The pace (360) could not be sent,
    # 16 at a time with 300 ms answers (53 requests/s at most); cut from the pace
    # instead of from that, the client came down in 10% steps, four -1 episodes, and
    # sent 0.78 of the limit over 20 s.
    rate = 40.0
    gateway = Gateway(rate, burst=5, latency=0.3)
    state = RateState(pace=10 * rate, concurrency=15, learned_at=time.time())
    result = simulate(gateway, [ClientRun(seconds=20, demand=64, make=_warm(state))])
    assert result.goodput(end=20) >= 0.93 * rate


def test_a_first_cut_alone_leaves_no_state() -> None:
    # The first -1 of a cold start ends slow start with an estimate that still holds
    # the bucket's burst: a pace to go on from, not a rate measured, so nothing to hand
    # on yet.
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    scheduler = Scheduler(
        retry=RetryPolicy(initial_backoff=0, max_backoff=0), clock=lambda: now[0], sleep=sleep
    )
    answers = iter([None] * 5 + [RateLimitedError("sendOnce", -1), None])

    async def attempt() -> None:
        now[0] += 0.1
        answer = next(answers)
        if answer is not None:
            raise answer

    async def main() -> None:
        for _ in range(6):
            await scheduler.run(attempt, action="sendOnce", unsafe=True)

    anyio.run(main)
    assert scheduler.stats().rate_limited == 1 and scheduler.pace is not None
    assert scheduler.rate_state().pace is None


def test_a_measured_rate_is_kept_while_the_ceiling_is_doubted() -> None:
    # Once a rate was measured, rate_state() keeps one: a raised limit proves the ceiling
    # too low and the fast probe above it runs unsure, but what was measured stands
    # until a new measure replaces it (it read None then, for seconds at a time).
    gateway = Gateway(40.0, burst=5, latency=0.1)
    scheduler = default_scheduler()
    seen: list[float | None] = []

    async def main() -> None:
        send = gateway.attempt(0)

        async def worker() -> None:
            while anyio.current_time() < 30:
                await scheduler.run(send, action="sendBatch", unsafe=True)

        async def watch() -> None:
            while anyio.current_time() < 30:
                seen.append(scheduler.rate_state().pace)
                await anyio.sleep(0.05)

        async def raise_limit() -> None:
            await anyio.sleep(15)
            gateway.set_rate(80.0)

        with anyio.move_on_after(40):
            async with anyio.create_task_group() as group:
                for _ in range(32):
                    group.start_soon(worker)
                group.start_soon(watch)
                group.start_soon(raise_limit)

    run_virtual(main, "asyncio")
    first = next(i for i, pace in enumerate(seen) if pace is not None)
    assert first < len(seen) // 4
    assert all(pace is not None for pace in seen[first:])
    last = seen[-1]
    assert last is not None and last >= 0.85 * 80.0


def _warm(state: RateState | None, max_concurrency: int = 16) -> Callable[[], Scheduler]:
    """A simulated client's scheduler, started from ``state`` (cold when None)."""

    def make() -> Scheduler:
        return Scheduler(
            max_concurrency=max_concurrency,
            retry=RetryPolicy(attempts=100, timeout=1000),
            clock=anyio.current_time,
            sleep=anyio.sleep,
            rate_state=state,
        )

    return make


def _scheduler_from(state: RateState, now: float) -> Scheduler:
    return Scheduler(rate_state=state, wall_clock=lambda: now)


def test_a_stale_state_decays_towards_a_cautious_start() -> None:
    state = RateState(pace=40.0, concurrency=12, learned_at=1_000_000.0)
    fresh = _scheduler_from(state, 1_000_000.0)
    assert fresh.pace == pytest.approx(Scheduler.BETA * 40.0)
    assert fresh.limit == 12
    hour = _scheduler_from(state, 1_000_000.0 + Scheduler.STATE_HALF_LIFE)
    assert hour.pace == pytest.approx(Scheduler.BETA * 20.0)
    assert hour.limit == 6
    # Older than STATE_MAX_AGE: forgotten, a cold start (unpaced, one request at first).
    old = _scheduler_from(state, 1_000_000.0 + Scheduler.STATE_MAX_AGE + 1)
    assert old.pace is None and old.limit == 1
    # A state a little ahead of this clock (clocks disagree) is taken as fresh; one far
    # ahead has no age to go by (a wrong clock, or written by hand): it never aged out
    # when taken as fresh, so it is ignored.
    skewed = _scheduler_from(state, 1_000_000.0 - 60)
    assert skewed.pace == pytest.approx(Scheduler.BETA * 40.0)
    future = _scheduler_from(state, 1_000_000.0 - Scheduler.STATE_MAX_AHEAD - 1)
    assert future.pace is None and future.limit == 1


@pytest.mark.parametrize(
    ("remembered", "rate", "latency"),
    [
        (40.0, 40.0, 0.1),  # the limit is where it was
        (5.0, 5.0, 0.02),  # ... at a low limit, where a paced climb crawled
        (40.0, 10.0, 0.1),  # the limit was lowered since
    ],
)
def test_an_old_state_starts_as_fast_as_a_cold_client_and_no_higher_than_it_knew(
    remembered: float, rate: float, latency: float
) -> None:
    # Twelve hours old: a slow start, as a cold client's, that stops at the pace
    # remembered. Its pace lowered for age and stepped up in requests, it started far
    # slower than a cold client: 0.1 of the limit over its first 5 s at 40 requests/s,
    # 0.12 at 5 (a run twelve hours later once took 197 s where a cold one took 4).
    state = RateState(pace=remembered, concurrency=12, learned_at=time.time() - 12 * 3600)
    runs = {}
    for name, make in (("old", _warm(state)), ("cold", _warm(None))):
        gateway = Gateway(rate, burst=5, latency=latency)
        simulate(gateway, [ClientRun(seconds=15, demand=16, make=make)])
        runs[name] = gateway
    old, cold = runs["old"], runs["cold"]
    # (A cold client spends the burst at once; the old state stays at its pace.)
    assert old.accepted(0, 0, 5) >= 0.85 * cold.accepted(0, 0, 5)
    assert old.accepted(0, 0, 15) >= 0.95 * 15 * rate
    # Where the limit is still the one remembered, slow start stops short of it: no
    # burst of -1 answers as a cold start has; a lowered limit is met as a cold one is.
    assert old.refused(0, 0, 15) <= cold.refused(0, 0, 15)
    if remembered == rate:
        assert old.refused(0, 0, 5) <= 1


def test_a_state_under_the_floor_is_a_cold_start() -> None:
    # A cache edited by hand to 0.01 requests/s: floored at min_rate (0.5) it crawled.
    scheduler = _scheduler_from(RateState(pace=0.01, concurrency=1, learned_at=5.0), 5.0)
    assert scheduler.pace is None and scheduler.limit == 1


def test_a_state_without_a_limit_only_carries_the_concurrency() -> None:
    scheduler = _scheduler_from(RateState(pace=None, concurrency=8, learned_at=5.0), 5.0)
    assert scheduler.pace is None and scheduler.limit == 8
    assert scheduler.rate_state() == RateState(pace=None, concurrency=8, learned_at=5.0)


def test_max_rate_still_caps_a_warm_start() -> None:
    scheduler = Scheduler(
        max_rate=3.0,
        rate_state=RateState(pace=40.0, concurrency=4, learned_at=1.0),
        wall_clock=lambda: 1.0,
    )
    assert scheduler.pace == 3.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "mapping"),
        ({"pace": 1.0, "concurrency": 1}, "mapping"),
        ({"pace": 1.0, "concurrency": 1, "learned_at": 1.0, "x": 1}, "mapping"),
        ({"pace": 0, "concurrency": 1, "learned_at": 1.0}, "pace"),
        ({"pace": math.inf, "concurrency": 1, "learned_at": 1.0}, "finite"),
        ({"pace": math.nan, "concurrency": 1, "learned_at": 1.0}, "finite"),
        ({"pace": "5", "concurrency": 1, "learned_at": 1.0}, "pace"),
        # Finite, but learned from no gateway: a client opened at 9e307 from it.
        ({"pace": 1e308, "concurrency": 1, "learned_at": 1.0}, "at most 100,000"),
        ({"pace": 5.0, "concurrency": 0, "learned_at": 1.0}, "concurrency"),
        ({"pace": 5.0, "concurrency": 1.5, "learned_at": 1.0}, "concurrency"),
        (
            {"pace": 5.0, "concurrency": 1, "learned_at": math.nan},
            "learned_at must be a finite time",
        ),
        # Made by hand and saved, it could not be read back (a user's trial).
        ({"pace": 5.0, "concurrency": 1, "learned_at": 0}, "learned_at must be above 0"),
        ({"pace": 5.0, "concurrency": 1, "learned_at": -1.0}, "learned_at must be above 0"),
    ],
)
def test_a_malformed_state_is_refused(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RateState.from_dict(data)
    if isinstance(data, dict) and set(data) == {"pace", "concurrency", "learned_at"}:
        # Made by hand, too: RateState(pace=nan) was taken, then silently ignored.
        with pytest.raises(ValidationError, match=message):
            RateState(**data)


def test_a_state_must_be_a_rate_state() -> None:
    with pytest.raises(ValidationError, match="RateState"):
        Scheduler(rate_state={"pace": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "latency"), [(100.0, 0.3), (300.0, 0.1)])
def test_the_requests_in_flight_at_a_cut_measure_the_limit(rate: float, latency: float) -> None:
    # Many requests per round trip: the first -1 of a cold start finds dozens more on
    # their way, which reach an empty bucket; what it accepts of them is its rate, so
    # the pace goes just under it at once rather than halving and climbing back past it
    # (which met the limit again: 143 and 222 -1 in these 20 s cells before).
    gateway = Gateway(rate, burst=5, latency=latency)
    result = simulate(gateway, [ClientRun(seconds=20, demand=64)])
    assert gateway.refused(0, 0, 20) <= 0.04 * (
        gateway.accepted(0, 0, 20) + gateway.refused(0, 0, 20)
    )
    ceiling = result.schedulers[0].rate_state().pace
    assert ceiling is not None and abs(ceiling - rate) <= 0.1 * rate


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift", PHASES)
def test_a_raised_limit_is_proven_by_the_answers(backend: str, shift: float) -> None:
    # Once more is accepted since the last cut than the ceiling allows (the bucket was
    # empty at that -1), the limit went up, whatever the burst: the client probes fast
    # instead of creeping until its excess reaches FAST_PROBE_AT. The 2nd to 4th second
    # after the raise: 0.74-1.0 of the new limit over these shifts (0.52-0.98 without
    # the proof or with the booked turns of 0.3.x).
    gateway = Gateway(40.0, burst=5, latency=0.1)
    at = 10.0 + shift
    simulate(gateway, [ClientRun(seconds=at + 10, demand=32)], rates=[(at, 80.0)], backend=backend)
    assert gateway.accepted(0, at + 2, at + 4) / 2 >= 0.7 * 80
    assert gateway.accepted(0, at + 4, at + 10) / 6 >= 0.9 * 80


@pytest.mark.parametrize("shift", PHASES)
def test_the_fast_probe_doubles_no_faster_than_its_answers_come_back(shift: float) -> None:
    # A raised limit proven by the answers is probed fast, but the -1 that ends the probe
    # comes back a round trip after the limit is crossed: doubling the excess every round
    # trip's requests took the pace to twice the limit by then (51-53 -1 answers in the
    # 10 s after a raise from 40 to 80 requests/s with 300 ms answers; 36-40 at two).
    gateway = Gateway(40.0, burst=5, latency=0.3)
    at = 10.0 + shift
    simulate(gateway, [ClientRun(seconds=at + 10, demand=64)], rates=[(at, 80.0)])
    assert gateway.refused(0, at, at + 10) <= 45
    assert gateway.accepted(0, at + 4, at + 10) / 6 >= 0.95 * 80


def _after_a_quiet_spell(rate: float, latency: float, quiet: float, backend: str) -> float:
    """Goodput, against the limit, of 30 s of demand that begins ``quiet`` seconds after
    a cold client's one request."""
    gateway = Gateway(rate, burst=5, latency=latency)
    scheduler = default_scheduler()
    send = gateway.attempt(0)
    began: list[float] = []

    async def main() -> None:
        await scheduler.run(send, action="sendBatch", unsafe=True)
        await anyio.sleep(quiet)
        began.append(anyio.current_time())

        async def worker() -> None:
            while anyio.current_time() < began[0] + 30:
                await scheduler.run(send, action="sendBatch", unsafe=True)

        async with anyio.create_task_group() as workers:
            for _ in range(16):
                workers.start_soon(worker)

    run_virtual(main, backend)
    return gateway.accepted(0, began[0], began[0] + 30) / 30 / rate


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("rate", "latency"), [(2, 0.1), (5, 0.02), (5, 0.1), (20, 0.02)])
def test_a_first_burst_after_a_quiet_spell_is_not_read_as_a_low_rate(
    rate: float, latency: float, backend: str
) -> None:
    # A web service's first burst after a few quiet seconds: its first -1 counted the
    # quiet seconds as time the gateway was limiting, read a rate of a request or two over
    # them, and put the pace at its floor. Measured before the fix: 0.04-0.40 of the limit
    # over the 30 s after 12 s quiet (a user's trial: 20-35 s at 0.5-1 request/s).
    for quiet in (2.0, 12.0, 60.0):
        assert _after_a_quiet_spell(rate, latency, quiet, backend) >= 0.9


def _answers_after_a_slow_first(first: float, backend: str) -> list[float]:
    """When each request of 10 a second for 30 s is answered (seconds from the first), by
    a gateway with no limit
    whose first answer takes ``first`` seconds and every later one 50 ms."""
    scheduler = default_scheduler()
    sent = [0]
    answered: list[float] = []

    async def send() -> None:
        sent[0] += 1
        await anyio.sleep(first if sent[0] == 1 else 0.05)

    async def main() -> None:
        began = anyio.current_time()

        async def one() -> None:
            await scheduler.run(send, action="sendOnce", unsafe=True)
            answered.append(anyio.current_time() - began)

        async with anyio.create_task_group() as requests:
            for _ in range(300):
                requests.start_soon(one)
                await anyio.sleep(0.1)

    run_virtual(main, backend)
    return answered


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first", [2.0, 8.0])
def test_one_slow_first_answer_holds_the_requests_no_longer_than_it_took(
    first: float, backend: str
) -> None:
    # Slow start spaced its requests over the smoothed round trip, which one slow first
    # answer held high for a dozen answers: with later answers back in 50 ms, requests
    # went out one per several seconds (a user's trial: 30 s of a web service's handlers
    # stalled after an 8 s first answer). The requests queued behind the first wait for
    # it (one request in flight, as slow start begins), then go at once.
    answered = _answers_after_a_slow_first(first, backend)
    assert len(answered) == 300
    caught_up = first + 1.5
    assert sum(1 for at in answered if at <= caught_up) >= 10 * caught_up - 2
    # From then on, as offered: ten a second.
    for second in range(int(caught_up) + 1, 30):
        assert sum(1 for at in answered if second <= at < second + 1) == 10


def _foreground_waits(backend: str) -> tuple[list[float], int]:
    """A bulk send's 32 chunks always queued (in the background) at 5 requests/s, and a
    caller's single request every second: how long each single request took, and how
    many the background sent."""
    gateway = Gateway(5.0, burst=5, latency=0.1)
    scheduler = default_scheduler(max_concurrency=32)
    send = gateway.attempt(0)
    took: list[float] = []
    background = [0]

    async def main() -> None:
        stop = anyio.current_time() + 60

        async def chunk() -> None:
            with in_background():
                while anyio.current_time() < stop:
                    await scheduler.run(send, action="sendBatch", unsafe=True)
                    background[0] += 1

        async with anyio.create_task_group() as tasks:
            for _ in range(32):
                tasks.start_soon(chunk)
            await anyio.sleep(20)  # the bulk send has found the limit
            while anyio.current_time() < stop - 5:
                began = anyio.current_time()
                await scheduler.run(send, action="sendOnce", unsafe=True)
                took.append(anyio.current_time() - began)
                await anyio.sleep(1)

    run_virtual(main, backend)
    return took, background[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_caller_whose_turn_cannot_come_by_its_deadline_fails_as_it_arrives(
    backend: str,
) -> None:
    # Under sustained overload every handler with a 5 s deadline waited all of it before
    # failing, holding its connection (a user's trial, three replicas, no shared limit).
    # At 2 requests/s, counted at 1.5 times that: a caller with seven or more ahead of
    # it (the first has gone) cannot have its turn within 2.2 s, and fails now; the
    # others wait as before.
    scheduler = Scheduler(max_concurrency=16, max_rate=2.0, clock=anyio.current_time)
    sent: dict[int, float] = {}
    refused: dict[int, tuple[float, float | None, str]] = {}

    async def main() -> None:
        async def caller(index: int) -> None:
            async def attempt() -> None:
                sent[index] = anyio.current_time()

            with anyio.move_on_after(2.2):
                try:
                    await scheduler.run(
                        attempt, action="sendOnce", unsafe=True, leave_when_open=True
                    )
                except DeadlineExceededError as exc:
                    refused[index] = (anyio.current_time(), exc.turn_in, exc.message)

        async with anyio.create_task_group() as tasks:
            for index in range(12):
                tasks.start_soon(caller, index)
                await anyio.wait_all_tasks_blocked()

    run_virtual(main, backend)
    assert sorted(refused) == list(range(8, 12))
    for at, turn_in, message in refused.values():
        # Seven ahead of each (those refused before it left no place in the queue).
        assert at < 0.01 and turn_in == pytest.approx(7 / 3)
        assert "its turn would come in 2.33 s, after the deadline" in message
        assert "(2.2 s away)" in message
    # Those it let wait: sent a step of the pace apart, until the deadline cut them off.
    assert sorted(sent) == [0, 1, 2, 3, 4]
    assert [round(sent[i], 3) for i in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_single_call_goes_before_a_bulk_sends_queued_chunks(backend: str) -> None:
    # In arrival order, a web handler's one-time password waited behind every chunk the
    # bulk send kept queued (32 at 5 requests/s: 6 s), and balance checks with 3 s
    # deadlines all failed (a user's trial). Now it takes the next slot and turn: a
    # step or two of the pace (0.2 s each) and its round trip.
    took, background = _foreground_waits(backend)
    assert len(took) >= 20
    assert max(took) <= 0.8, max(took)
    # The background still has the rest of the pace: 60 s at 5/s, less the single calls.
    assert background >= 0.9 * 5 * 60 - len(took)


def _pace_through_an_outage(rate: float, latency: float, backend: str) -> tuple[float, float]:
    """30 callers at ``rate``; from 5 s to 15 s every request fails to connect (and its
    caller tries again 0.2 s later): the pace before the outage, and its highest during."""
    gateway = Gateway(rate, burst=5, latency=latency)
    scheduler = default_scheduler(max_concurrency=16)
    send = gateway.attempt(0)
    down = [False]
    paces = {"top": 0.0, "before": 0.0}

    async def attempt() -> None:
        if down[0]:
            await anyio.sleep(0.002)
            raise TransportError("sendOnce: connection refused", request_sent=False)
        await send()

    async def main() -> None:
        async def caller() -> None:
            while anyio.current_time() < 20:
                try:
                    await scheduler.run(attempt, action="sendOnce", unsafe=True)
                except AisixError:
                    await anyio.sleep(0.2)

        async def outage() -> None:
            await anyio.sleep(5)
            paces["before"] = scheduler.pace or 0.0
            down[0] = True
            while anyio.current_time() < 15:
                paces["top"] = max(paces["top"], scheduler.pace or 0.0)
                await anyio.sleep(0.1)
            down[0] = False

        async with anyio.create_task_group() as tasks:
            for _ in range(30):
                tasks.start_soon(caller)
            tasks.start_soon(outage)

    run_virtual(main, backend)
    return paces["before"], paces["top"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("rate", "latency"), [(30.0, 0.02), (20.0, 0.1)])
def test_the_pace_does_not_climb_while_the_gateway_cannot_be_reached(
    backend: str, rate: float, latency: float
) -> None:
    # Each request that waited for its turn grew the pace, answered or not: with the
    # gateway down, every retry did (here 29 -> 569 and 20 -> 126 requests/s; in a
    # user's trial 30 -> 1,200), and the restart met a burst of -1 answers.
    before, top = _pace_through_an_outage(rate, latency, backend)
    assert 0.8 * rate <= before <= 1.1 * rate
    assert top <= before * 1.02
