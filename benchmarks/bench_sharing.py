"""Sharing an account (issue 4, benchmark 3).

Four processes, each with its own AisixClient and no coordinator, send to one account
limited to R requests/s (100 ms latency, burst 5): the gateway's -1 is the only signal.
Reported: total goodput against R, and Jain's fairness index of the four shares.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
from _common import emulator, jain, numbers, run_worker, table

from aisix_async import AisixClient
from aisix_async._bulk import OutcomeStatus

WORKERS = 4


async def worker(base_url: str, account: str, authkey: str, seconds: float, index: int) -> None:
    accepted = requests = refused = 0
    async with AisixClient(account, authkey, base_url=base_url) as client:
        stream = client.send_many(numbers(10**8, prefix=f"13{index}"), "Your code is 1234")
        started = time.monotonic()
        with anyio.move_on_after(seconds):
            async with stream as outcomes:
                async for outcome in outcomes:
                    if outcome.status is OutcomeStatus.ACCEPTED:
                        accepted += 1
        elapsed = time.monotonic() - started
        stats = stream.stats
        requests, refused = stats.requests, stats.rate_limited
    print(json.dumps({"rate": accepted / elapsed, "requests": requests, "refused": refused}))


def run(rate: float, seconds: float) -> str:
    with emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu:
        args = [emu.base_url, emu.account, emu.authkey, str(seconds)]
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(
                pool.map(
                    lambda i: run_worker(Path(__file__), *args, str(i), timeout=seconds + 60),
                    range(WORKERS),
                )
            )
    shares = [r["rate"] for r in results]
    total = sum(shares)
    fairness = jain(shares)
    refused = sum(r["refused"] for r in results) / max(1, sum(r["requests"] for r in results))
    met = total / rate >= 0.90 and fairness >= 0.9
    rows = [[i, f"{s:.1f}", f"{s / rate:.3f}"] for i, s in enumerate(shares)]
    return "\n".join(
        [
            "## 3. Sharing one account (4 processes, no coordinator)",
            "",
            f"Rate R = {rate:g} requests/s for the account, burst 5, 100 ms latency; each "
            f"process sends chunks of 1000 for {seconds:g} s.",
            "",
            table(["process", "accepted chunks/s", "share of R"], rows),
            "",
            f"Total {total:.1f} chunks/s = **{total / rate:.3f}** of R; Jain's fairness "
            f"**{fairness:.3f}**; -1 share of requests {refused:.3f}. Target (>= 0.90 of R, "
            f"fairness >= 0.9): **{'met' if met else 'MISSED'}**.",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        base_url, account, authkey, seconds, index = sys.argv[2:7]
        anyio.run(worker, base_url, account, authkey, float(seconds), int(index))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()
