"""Client memory (issue 4, benchmark 5).

Peak RSS of a fresh client process sending 200,000 and then (another fresh process)
2,000,000 numbers from a generator, no rate limit; the growth must stay under 10 MB,
because input is read lazily with backpressure (concurrency x chunk size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio
from _common import emulator, numbers, peak_rss_mb, run_worker, table

from aisix_async import AisixClient, OutcomeStatus


async def worker(base_url: str, account: str, authkey: str, count: int) -> None:
    accepted = 0
    client = AisixClient(account, authkey, base_url=base_url)
    async with client, client.send_many(numbers(count), "Your code is 1234") as outcomes:
        async for outcome in outcomes:
            accepted += len(outcome.mobiles) * (outcome.status is OutcomeStatus.ACCEPTED)
    print(json.dumps({"rss": peak_rss_mb(), "accepted": accepted}))


def run(small: int, large: int) -> str:
    results = {}
    with emulator() as emu:
        for count in (small, large):
            emu.reset()
            args = [emu.base_url, emu.account, emu.authkey, str(count)]
            results[count] = run_worker(Path(__file__), *args, timeout=300)
    growth = results[large]["rss"] - results[small]["rss"]
    rows = [[f"{n:,}", f"{r['accepted']:,}", f"{r['rss']:.1f}"] for n, r in results.items()]
    return "\n".join(
        [
            "## 5. Client memory",
            "",
            "Numbers from a generator, chunks of 1000, default concurrency, no limit; each "
            "size in a fresh process (peak RSS from getrusage).",
            "",
            table(["numbers", "accepted", "peak RSS MB"], rows),
            "",
            f"Growth {growth:+.1f} MB (target < 10 MB: **{'met' if growth < 10 else 'MISSED'}**).",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        base_url, account, authkey, count = sys.argv[2:6]
        anyio.run(worker, base_url, account, authkey, int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=200_000)
    parser.add_argument("--large", type=int, default=2_000_000)
    args = parser.parse_args()
    print(run(args.small, args.large))


if __name__ == "__main__":
    main()
