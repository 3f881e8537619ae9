"""A simulated token-bucket gateway on virtual time, for testing the rate controller.

The real :class:`~aisix_async._mechanics.scheduler.Scheduler` runs against it unchanged; only time
is simulated. On asyncio a loop whose clock jumps to the next timer whenever nothing is
ready (its selector never blocks), on trio ``MockClock(autojump_threshold=0)``: hundreds
of simulated seconds take a fraction of a real one, and a run repeats exactly (the
scheduler's jitter is seeded by the caller).

The bucket is the gateway's: ``burst`` tokens at most, ``rate`` per second added, one
spent per accepted request, -1 when none is left. As in the emulator, the decision is
taken when the request arrives (after ``latency`` seconds) and the answer is immediate;
``answer_latency`` adds a return trip after the decision.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import attrs

from aisix_async import RateLimitedError, RetryPolicy
from aisix_async._mechanics.scheduler import Scheduler

__all__ = ["ClientRun", "Gateway", "SimResult", "run_virtual", "simulate"]


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; when nothing is ready, moves the loop's clock instead.

    With ``patience`` (seconds of real time), a socket not ready at once gets that long
    before the clock moves: an answer on its way from a real server (tests/sim_fleet.py's
    Redis) comes in at the virtual time it was asked for.
    """

    def __init__(
        self,
        clock: list[float],
        patience: float = 0.0,
        awaited: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._patience = patience
        self._awaited = awaited

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if not events and timeout != 0 and self._awaited is not None:
            # An answer is on its way: the clock waits for it however long it takes in
            # real time (a loaded machine), bounded so a mistake cannot hang a test.
            give_up = time.monotonic() + 10.0
            while not events and self._awaited() and time.monotonic() < give_up:
                events = super().select(0.05)
        elif not events and self._patience:
            events = super().select(self._patience)
        if not events and timeout is not None and timeout > 0:
            self._clock[0] += timeout
        elif not events and timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set")
        return events


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, patience: float = 0.0, awaited: Callable[[], bool] | None = None) -> None:
        self._virtual_now = [0.0]
        super().__init__(_JumpingSelector(self._virtual_now, patience, awaited))

    def time(self) -> float:
        return self._virtual_now[0]


def run_virtual(
    func: Callable[[], Awaitable[Any]],
    backend: str,
    patience: float = 0.0,
    awaited: Callable[[], bool] | None = None,
) -> Any:
    """``anyio.run(func)`` on virtual time, on "asyncio" or "trio"; ``patience``
    (asyncio only): real seconds a socket gets before the clock moves; ``awaited``
    (asyncio only, instead): True while an answer from a real server is awaited, which
    the clock then waits for (see _JumpingSelector)."""
    if backend == "trio":
        from trio.testing import MockClock

        options: dict[str, Any] = {"clock": MockClock(autojump_threshold=0)}
    else:
        options = {"loop_factory": lambda: _VirtualLoop(patience, awaited)}
    return anyio.run(func, backend=backend, backend_options=options)


class Gateway:
    """One account's token bucket, shared by every client that talks to it."""

    def __init__(
        self,
        rate: float,
        burst: float = 5.0,
        latency: float = 0.1,
        answer_latency: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.rate = rate
        #: Each request's way in and its answer's way back each take up to this many
        #: seconds more, uniformly at random (a busy host): answers come back out of order.
        self.jitter = jitter
        self.burst = burst
        self.latency = latency
        self.answer_latency = answer_latency
        self._tokens = burst
        self._stamp = 0.0
        #: (time, client index, accepted?) of every decision.
        self.decisions: list[tuple[float, int, bool]] = []

    def set_rate(self, rate: float) -> None:
        """Change the limit now (tokens earned so far are kept)."""
        self._refill(anyio.current_time())
        self.rate = rate

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def attempt(self, client: int) -> Callable[[], Awaitable[None]]:
        """What one client sends: a request that waits ``latency``, then takes a token."""

        async def send() -> None:
            await anyio.sleep(self.latency + self._jitter())
            now = anyio.current_time()
            self._refill(now)
            accepted = self._tokens >= 1.0
            if accepted:
                self._tokens -= 1.0
            self.decisions.append((now, client, accepted))
            if self.answer_latency or self.jitter:
                await anyio.sleep(self.answer_latency + self._jitter())
            if not accepted:
                raise RateLimitedError("sendBatch", -1)

        return send

    def _jitter(self) -> float:
        import random

        return random.uniform(0.0, self.jitter) if self.jitter else 0.0

    def accepted(self, client: int | None = None, start: float = 0.0, end: float = math.inf) -> int:
        return sum(
            1
            for at, who, ok in self.decisions
            if ok and start <= at < end and (client is None or who == client)
        )

    def refused(self, client: int | None = None, start: float = 0.0, end: float = math.inf) -> int:
        return sum(
            1
            for at, who, ok in self.decisions
            if not ok and start <= at < end and (client is None or who == client)
        )


@attrs.frozen
class ClientRun:
    """One client's part in a simulation: when it sends, how much, and how it is made."""

    start: float = 0.0
    #: Seconds of sending; the client stops dispatching after that.
    seconds: float = 20.0
    #: Requests kept waiting in the scheduler at once (a bulk send's window).
    demand: int = 16
    make: Callable[[], Scheduler] | None = None


@attrs.frozen
class SimResult:
    gateway: Gateway
    schedulers: list[Scheduler]
    runs: list[ClientRun]
    #: (time, each client's learned pace) every ``watch_every`` seconds, if asked.
    paces: list[tuple[float, list[float | None]]] = attrs.field(factory=list)

    def goodput(
        self, client: int | None = None, start: float = 0.0, end: float = math.inf
    ) -> float:
        """Accepted requests per second of the client's sending window, against the rate."""
        run = self.runs[client if client is not None else 0]
        begin, finish = max(start, run.start), min(end, run.start + run.seconds)
        return self.gateway.accepted(client, begin, finish) / (finish - begin)

    def refused_share(
        self, client: int | None = None, start: float = 0.0, end: float = math.inf
    ) -> float:
        refused = self.gateway.refused(client, start, end)
        total = refused + self.gateway.accepted(client, start, end)
        return refused / total if total else 0.0


def default_scheduler(max_concurrency: int = 64) -> Scheduler:
    return Scheduler(
        max_concurrency=max_concurrency,
        retry=RetryPolicy(attempts=100, timeout=10_000),
        clock=anyio.current_time,
        sleep=anyio.sleep,
    )


def simulate(
    gateway: Gateway,
    runs: Sequence[ClientRun],
    *,
    backend: str = "asyncio",
    rates: Sequence[tuple[float, float]] = (),
    seed: int = 1,
    watch_every: float | None = None,
) -> SimResult:
    """Run ``runs`` against ``gateway`` on virtual time; ``rates``: (at, new rate) changes;
    ``watch_every``: note each client's learned pace (``rate_state().pace``) that often."""
    import random

    random.seed(seed)  # the scheduler's retry jitter
    schedulers: list[Scheduler] = []
    paces: list[tuple[float, list[float | None]]] = []

    async def watch(every: float) -> None:
        end = max(run.start + run.seconds for run in runs)
        while anyio.current_time() < end:
            await anyio.sleep(every)
            paces.append((anyio.current_time(), [s.rate_state().pace for s in schedulers]))

    async def main() -> None:
        async def steer() -> None:
            for at, rate in rates:
                await anyio.sleep(max(0.0, at - anyio.current_time()))
                gateway.set_rate(rate)

        async def client(index: int, run: ClientRun, scheduler: Scheduler) -> None:
            await anyio.sleep(run.start)
            stop_at = run.start + run.seconds
            send = gateway.attempt(index)

            async def worker() -> None:
                while anyio.current_time() < stop_at:
                    await scheduler.run(send, action="sendBatch", unsafe=True)

            with anyio.move_on_after(run.seconds + 30):
                async with anyio.create_task_group() as tg:
                    for _ in range(run.demand):
                        tg.start_soon(worker)

        async with anyio.create_task_group() as tg:
            tg.start_soon(steer)
            if watch_every is not None:
                tg.start_soon(watch, watch_every)
            for index, run in enumerate(runs):
                scheduler = run.make() if run.make is not None else default_scheduler()
                schedulers.append(scheduler)
                tg.start_soon(client, index, run, scheduler)

    run_virtual(main, backend)
    return SimResult(gateway, schedulers, list(runs), paces)


# -- a measurement to run by hand: python tests/sim_gateway.py [--jitter X | --where |
#    --moving-spread] --

SWEEP_RATES = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 100.0, 300.0, 1000.0)
SWEEP_LATENCIES = (0.005, 0.02, 0.1, 0.3, 1.0)


def sweep_cell(
    rate: float, latency: float, demand: int = 64, jitter: float = 0.0
) -> tuple[int, float, float]:
    """One cold client for as long as a benchmark cell (at least 20 s and 150 requests).

    Returns the -1 answers of the whole run, their share, and goodput against the rate,
    cold start included, as ``benchmarks/bench_sweep.py`` counts them.
    """
    seconds = max(20.0, 150.0 / rate)
    gateway = Gateway(rate, burst=5, latency=latency, jitter=jitter * latency)
    result = simulate(gateway, [ClientRun(seconds=seconds, demand=demand)])
    return (
        result.gateway.refused(0, 0, seconds),
        result.refused_share(end=seconds),
        result.goodput(end=seconds) / rate,
    )


def where_refused(rate: float, latency: float, demand: int = 64) -> tuple[int, int, int]:
    """A cold sweep cell's -1 answers by when they came: with the first (the requests in
    flight when slow start first met the limit, two latencies), in the rest of the cell's
    first quarter (finding the rate), and after it (holding it: the probes)."""
    seconds = max(20.0, 150.0 / rate)
    gateway = Gateway(rate, burst=5, latency=latency)
    simulate(gateway, [ClientRun(seconds=seconds, demand=demand)])
    times = [at for at, _, ok in gateway.decisions if not ok and at < seconds]
    if not times:
        return 0, 0, 0
    first = sum(1 for at in times if at <= times[0] + 2 * latency)
    finding = sum(1 for at in times if times[0] + 2 * latency < at < seconds / 4)
    return first, finding, len(times) - first - finding


def meets_sweep_target(refused: int, share: float, goodput: float) -> bool:
    """The sweep's target (issue 20): goodput >= 0.97 and -1 <= 2% or at most 3 -1."""
    return goodput >= 0.97 and (share <= 0.02 or refused <= 3)


def moving_limit(rate: float = 40.0, phase: float = 10.0, latency: float = 0.1) -> str:
    """R -> R/2 -> 2R, as ``benchmarks/bench_moving_limit.py``: the integral and each phase."""
    gateway = Gateway(rate, burst=5, latency=latency)
    limits = [(0.0, rate), (phase, rate / 2), (2 * phase, rate * 2)]
    simulate(gateway, [ClientRun(seconds=3 * phase, demand=64)], rates=limits[1:])
    ideal = sum(r * phase for _, r in limits)
    parts = []
    for at, limit in limits:
        # When the accepted rate (1 s windows) is last outside 10% of the limit.
        settled = 0.0
        t = at
        while t + 1.0 <= at + phase:
            got = gateway.accepted(0, t, t + 1.0)
            if abs(got - limit) > 0.1 * limit:
                settled = t + 1.0 - at
            t += 0.25
        parts.append(f"{limit:g}/s within 10% after {settled:.2f} s")
    whole = gateway.accepted(0, 0, 3 * phase) / ideal
    return f"integral {whole:.3f}; " + "; ".join(parts) + f"; -1 {gateway.refused(0):d}"


def moving_limit_spread(
    rate: float = 40.0, seeds: int = 30, latency: float = 0.1
) -> tuple[float, float, float]:
    """The moving limit as ``benchmarks/bench_moving_limit.py`` runs it (max_concurrency
    32), over ``seeds`` seeds x answers jittered by 10/20/30% of the latency x the limit
    moved 0, 0.33 or 0.67 s later: where the client is in its cycle when the limit moves
    decides much of a run. Returns the mean, the worst tenth's bound and the best of the
    whole-run figure (accepted against the limit's integral)."""
    import random
    import statistics

    wholes = []
    for seed in range(1, seeds + 1):
        for jitter in (0.1, 0.2, 0.3):
            for shift in (0.0, 0.33, 0.67):
                random.seed(seed)
                gateway = Gateway(rate, burst=5, latency=latency, jitter=jitter * latency)
                drop, raise_ = 10.0 + shift, 20.0 + shift
                simulate(
                    gateway,
                    [ClientRun(seconds=raise_ + 10, demand=64, make=lambda: default_scheduler(32))],
                    rates=[(drop, rate / 2), (raise_, 2 * rate)],
                    seed=seed,
                )
                ideal = rate * drop + rate / 2 * 10 + 2 * rate * 10
                wholes.append(gateway.accepted(0, 0, raise_ + 10) / ideal)
    return statistics.mean(wholes), statistics.quantiles(wholes, n=10)[0], max(wholes)


def _print_grid(
    rates: Sequence[float], latencies: Sequence[float], cell: Callable[[float, float], str]
) -> None:
    """A row per rate, a column per latency, each cell's text from ``cell``; a cell with
    more than 32 requests in flight at the limit (rate x latency) is left out ("-")."""
    print("R      " + "".join(f"{lat * 1000:>19g} ms" for lat in latencies))
    for rate in rates:
        row = f"{rate:<7g}"
        for latency in latencies:
            text = "-" if rate * latency > 32 else cell(rate, latency)
            row += f"{text:>22}"
        print(row, flush=True)


def _main(argv: list[str]) -> None:
    rates = SWEEP_RATES
    latencies = SWEEP_LATENCIES
    if "--moving-spread" in argv:
        for rate in (10.0, 40.0, 100.0):
            mean, worst_tenth, best = moving_limit_spread(rate)
            print(
                f"moving limit R={rate:g}, 270 runs: whole run mean {mean:.3f}, "
                f"worst tenth below {worst_tenth:.3f}, best {best:.3f}",
                flush=True,
            )
        return
    if "--where" in argv:
        # Where a cold cell's -1 answers come from: meeting the limit / finding it / holding it.
        print("-1 answers: with the first / rest of the first quarter / later (total)")

        def where(rate: float, latency: float) -> str:
            parts = where_refused(rate, latency)
            return " / ".join(map(str, parts)) + f" ({sum(parts)})"

        _print_grid(rates, latencies, where)
        return
    # --jitter X: each way of each request takes up to X times the latency more.
    jitter = float(argv[argv.index("--jitter") + 1]) if "--jitter" in argv else 0.0
    print(
        "single client, cold, bench-length cells: -1 count / -1 share / goodput"
        + (f" (jitter {jitter:g} x latency each way)" if jitter else "")
    )
    missed: list[tuple[float, float]] = []

    def cell(rate: float, latency: float) -> str:
        refused, share, goodput = sweep_cell(rate, latency, jitter=jitter)
        ok = meets_sweep_target(refused, share, goodput)
        if not ok:
            missed.append((rate, latency))
        return f"{refused:d} / {share:.3f} / {goodput:.3f}{' ' if ok else '*'}"

    _print_grid(rates, latencies, cell)
    print(f"cells missing the target (*): {len(missed)}")
    for rate in (10.0, 40.0, 200.0):
        print(f"moving limit R={rate:g}: {moving_limit(rate)}", flush=True)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
