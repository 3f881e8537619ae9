"""Client CPU overhead (issue 4, benchmark 4).

No rate limit; N chunks of 1000 numbers at the same concurrency, each variant in a fresh
process whose own CPU time (user + system, measured with getrusage around the send
loop) is reported: aisix_async ``send_many`` versus a bare loop of httpx posts parsed
with defusedxml. The emulator runs in its own process, so its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

import httpx
from _common import Emulator, bare_send, cpu_seconds, emulator, numbers, run_worker, table

from aisix_async import AisixClient, OutcomeStatus, RetryPolicy

CONCURRENCY = 16


async def ours(emu: Emulator, chunks: int) -> int:
    accepted = 0
    client = AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=CONCURRENCY,
        initial_concurrency=CONCURRENCY, retry=RetryPolicy(),
    )  # fmt: skip
    async with client, client.send_many(numbers(chunks * 1000), "Your code is 1234") as outcomes:
        async for outcome in outcomes:
            accepted += len(outcome.mobiles) * (outcome.status is OutcomeStatus.ACCEPTED)
    return accepted


async def bare(emu: Emulator, chunks: int) -> int:
    accepted = 0
    source = numbers(chunks * 1000)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=None)) as client:

        async def loop() -> None:
            nonlocal accepted
            while True:
                chunk = list(itertools.islice(source, 1000))
                if not chunk:
                    return
                if await bare_send(client, emu, chunk) == 1:
                    accepted += len(chunk)

        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return accepted


def worker(kind: str, info: str, chunks: int) -> None:
    emu = Emulator.__new__(Emulator)
    emu.__dict__.update(json.loads(info))
    run = ours if kind == "ours" else bare
    before, started = cpu_seconds(), time.monotonic()
    accepted = asyncio.run(run(emu, chunks))
    print(json.dumps({
        "cpu": cpu_seconds() - before, "wall": time.monotonic() - started, "accepted": accepted,
    }))  # fmt: skip


def run(chunks: int) -> str:
    results = {}
    with emulator() as emu:
        info = json.dumps(
            {k: getattr(emu, k) for k in ("base_url", "open_url", "account", "authkey")}
        )
        for kind in ("bare", "ours"):
            emu.reset()
            results[kind] = run_worker(Path(__file__), kind, info, str(chunks), timeout=300)
    ratio = results["ours"]["cpu"] / results["bare"]["cpu"]
    rows = [
        [name, f"{r['accepted']:,}", f"{r['cpu']:.2f}", f"{r['wall']:.1f}"]
        for name, r in (
            ("bare httpx + defusedxml", results["bare"]),
            ("aisix_async", results["ours"]),
        )
    ]
    return "\n".join(
        [
            "## 4. Client CPU overhead",
            "",
            f"No limit; {chunks:,} chunks of 1000 numbers; concurrency {CONCURRENCY}; each "
            "variant in its own fresh process; emulator in another.",
            "",
            table(["client", "numbers accepted", "client CPU s", "wall s"], rows),
            "",
            f"CPU ratio aisix_async / bare = **{ratio:.2f}** (target <= 1.15: "
            f"**{'met' if ratio <= 1.15 else 'MISSED'}**). Where the extra time goes "
            "(cProfile of 300 chunks): checking every number (one regex match per slice "
            "of 1000, refused before sending), recording each recipient's input position "
            "for its outcome, and the scheduler/key-gate/stream machinery per chunk; the "
            "bare loop checks nothing and reports nothing per recipient (and pays for "
            "urllib's byte-by-byte form quoting, which ours avoids for ASCII). On 2 cores "
            "shared with the emulator both sides are CPU-bound, so wall time follows CPU "
            "time, and the ratio moves by several percent between runs.",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        kind, info, chunks = sys.argv[2:5]
        worker(kind, info, int(chunks))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    print(run(args.chunks))


if __name__ == "__main__":
    main()
