"""Goodput under a limit the client is not told (issue 4, benchmark 1).

The emulator limits the account to R requests/s (token bucket, small burst) and answers
after 100 ms, so one request at a time cannot reach R. Physical limit: R x 1000
numbers/s. Side by side in one run, each on a fresh bucket:

* aisix_async ``send_all`` (learns the limit);
* (a) what a user writes without us: ``asyncio.gather`` over the chunks, a semaphore, and
  tenacity exponential backoff on -1;
* (b) a fixed pace with aiolimiter at 2R and at R/2 (a wrong guess), -1 retried as in (a);
* (c) one request at a time, -1 retried as in (a).

Every run is bounded by its count and by a deadline; goodput is numbers accepted per
second of the run. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx
from _common import Emulator, bare_send, emulator, numbers, table
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from aisix_async import AisixClient, OutcomeStatus

CHUNK = 1000
CONCURRENCY = 16


class Tally:
    def __init__(self) -> None:
        self.accepted = 0
        self.requests = 0
        self.refused = 0


async def _with_backoff(
    client: httpx.AsyncClient, emu: Emulator, chunk: list[str], tally: Tally
) -> None:
    retrying = AsyncRetrying(
        retry=retry_if_result(lambda code: code == -1),
        wait=wait_exponential(multiplier=0.1, max=5),
        stop=stop_after_attempt(30),
    )
    async for attempt in retrying:
        with attempt:
            code = await bare_send(client, emu, chunk)
            tally.requests += 1
            tally.refused += code == -1
        if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
            attempt.retry_state.set_result(code)
    if code == 1:
        tally.accepted += len(chunk)


def _chunks(total: int) -> list[list[str]]:
    source = list(numbers(total))
    return [source[i : i + CHUNK] for i in range(0, total, CHUNK)]


async def _baseline(
    emu: Emulator,
    total: int,
    deadline: float,
    gate: Callable[[], Awaitable[None]] | None,
    concurrency: int,
) -> Tally:
    tally = Tally()
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=None)) as client:

        async def one(chunk: list[str]) -> None:
            async with semaphore:
                if gate is not None:
                    await gate()
                await _with_backoff(client, emu, chunk, tally)

        tasks = [asyncio.ensure_future(one(chunk)) for chunk in _chunks(total)]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), deadline)
    return tally


async def _ours(emu: Emulator, total: int, deadline: float) -> Tally:
    tally = Tally()
    async with AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=CONCURRENCY
    ) as client:
        stream = client.send_many(numbers(total), "Your code is 1234")
        with anyio.move_on_after(deadline):
            async with stream as outcomes:
                async for outcome in outcomes:
                    if outcome.status is OutcomeStatus.ACCEPTED:
                        tally.accepted += len(outcome.mobiles)
        stats = stream.stats()
        tally.requests, tally.refused = stats.requests, stats.rate_limited
    return tally


async def run(rate: float, total: int, deadline: float) -> str:
    rows = []
    limit = rate * CHUNK
    with emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu:

        def aiolimited(pace: float) -> Callable[[], Awaitable[None]]:
            limiter = AsyncLimiter(pace, 1.0)

            async def gate() -> None:
                await limiter.acquire()

            return gate

        variants: list[tuple[str, Callable[[], Awaitable[Tally]]]] = [
            ("aisix_async send_many", lambda: _ours(emu, total, deadline)),
            (
                "(a) gather + semaphore + tenacity",
                lambda: _baseline(emu, total, deadline, None, CONCURRENCY),
            ),
            (
                f"(b) aiolimiter at 2R = {2 * rate:g}/s",
                lambda: _baseline(emu, total, deadline, aiolimited(2 * rate), CONCURRENCY),
            ),
            (
                f"(b) aiolimiter at R/2 = {rate / 2:g}/s",
                lambda: _baseline(emu, total, deadline, aiolimited(rate / 2), CONCURRENCY),
            ),
            ("(c) one request at a time", lambda: _baseline(emu, total, deadline, None, 1)),
        ]
        ours = 0.0
        for name, variant in variants:
            emu.reset()
            await asyncio.sleep(0.3)  # a full (small) bucket for everyone
            started = time.monotonic()
            tally = await variant()
            elapsed = time.monotonic() - started
            goodput = tally.accepted / elapsed
            ours = ours or goodput
            rows.append(
                [
                    name,
                    f"{tally.accepted:,}",
                    f"{elapsed:.1f}",
                    f"{goodput:,.0f}",
                    f"{goodput / limit:.3f}",
                    f"{tally.refused / max(1, tally.requests):.3f}",
                    f"{ours / goodput:.2f}" if goodput else "inf",
                ]
            )
    target = rows[0]
    met = float(target[4]) >= 0.95 and float(target[5]) <= 0.05
    return "\n".join(
        [
            "## 1. Goodput under an untold limit",
            "",
            f"Emulator: rate R = {rate:g} requests/s (burst 5), 100 ms latency; "
            f"{total:,} numbers in chunks of {CHUNK}; concurrency {CONCURRENCY}; "
            f"each run stops at {deadline:g} s. Physical limit R x 1000 = {limit:,.0f} "
            "numbers/s.",
            "",
            table(
                ["client", "accepted", "seconds", "numbers/s", "of limit", "-1 share", "ours/this"],
                rows,
            ),
            "",
            f"Target (aisix_async >= 0.95 of the limit, <= 5% of requests -1): "
            f"**{'met' if met else 'MISSED'}**. What limits it: the run is only "
            f"~{total / limit:.0f} s at the limit, so the cold start (one request in flight, "
            "doubling every round trip until the first -1, which halves the pace) and the "
            "cut to 0.9 of the rate the gateway accepted between two -1 answers (the gentle "
            "probe above R meets its edge about once per hundred requests; the pace is back "
            "at R within about ten requests) are a visible share; the burst is kept at 5 so "
            "the bucket hides little.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--numbers", type=int, default=400_000)
    parser.add_argument("--deadline", type=float, default=14.0)
    args = parser.parse_args()
    print(asyncio.run(run(args.rate, args.numbers, args.deadline)))


if __name__ == "__main__":
    main()
