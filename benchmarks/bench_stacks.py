"""The two HTTP stacks side by side: httpx against httpx2 (issue 19).

Both measured in one run, against one emulator process, each variant in a fresh process
of its own (so neither inherits the other's imports, pools or warmed caches):

* client CPU overhead: no limit, N chunks of 1000 numbers at concurrency 16 through
  ``send_many`` on each stack (``AisixClient(http_stack=...)``), next to a bare loop of
  posts on the same stack parsed with defusedxml; CPU is the worker's own (getrusage);
* goodput under a limit the client is not told (token bucket R requests/s, burst 5,
  100 ms latency): numbers accepted per second and the share of -1 answers.

Needs httpx and httpx2 both installed (``pip install '.[bench,httpx2]'``); says so and
measures the one it has otherwise. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _common import Emulator, bare_send, cpu_seconds, emulator, numbers, run_worker, table

from aisix_async import AisixClient, OutcomeStatus, RetryPolicy

CONCURRENCY = 16
STACKS = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None]


async def ours(emu: Emulator, stack: str, chunks: int, deadline: float) -> dict[str, Any]:
    accepted = 0
    client = AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=CONCURRENCY,
        retry=RetryPolicy(), http_stack=stack,
    )  # fmt: skip
    assert client.stats().http_stack == stack
    stream = client.send_many(numbers(chunks * 1000), "Your code is 1234")
    async with client:
        with anyio.move_on_after(deadline):
            async with stream as outcomes:
                async for outcome in outcomes:
                    accepted += len(outcome.mobiles) * (outcome.status is OutcomeStatus.ACCEPTED)
    stats = stream.stats()
    return {"accepted": accepted, "requests": stats.requests, "refused": stats.rate_limited}


async def bare(emu: Emulator, stack: str, chunks: int, deadline: float) -> dict[str, Any]:
    module: Any = importlib.import_module(stack)
    accepted = 0
    source = numbers(chunks * 1000)
    limits = module.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with module.AsyncClient(limits=limits, timeout=module.Timeout(30, pool=None)) as client:

        async def loop() -> None:
            nonlocal accepted
            while True:
                chunk = list(itertools.islice(source, 1000))
                if not chunk:
                    return
                if await bare_send(client, emu, chunk) == 1:
                    accepted += len(chunk)

        await asyncio.wait_for(asyncio.gather(*(loop() for _ in range(CONCURRENCY))), deadline)
    return {"accepted": accepted, "requests": chunks, "refused": 0}


def worker(kind: str, stack: str, info: str, chunks: int, deadline: float) -> None:
    emu = Emulator.__new__(Emulator)
    emu.__dict__.update(json.loads(info))
    run = ours if kind == "ours" else bare
    before, started = cpu_seconds(), time.monotonic()
    result = asyncio.run(run(emu, stack, chunks, deadline))
    result.update(cpu=cpu_seconds() - before, wall=time.monotonic() - started)
    print(json.dumps(result))


def _version(stack: str) -> str:
    return str(importlib.import_module(stack).__version__)


def run(chunks: int, rate: float, goodput_numbers: int, deadline: float) -> str:
    script = Path(__file__)
    cpu_rows, goodput_rows = [], []
    with emulator() as emu:
        info = json.dumps(
            {k: getattr(emu, k) for k in ("base_url", "open_url", "control_url", "account",
                                          "authkey")}
        )  # fmt: skip
        cpu: dict[tuple[str, str], dict[str, Any]] = {}
        for stack in STACKS:
            for kind in ("bare", "ours"):
                emu.configure(rate=None, latency_ms=0)
                emu.reset()
                cpu[stack, kind] = run_worker(
                    script, kind, stack, info, str(chunks), "300", timeout=300
                )
        for stack in STACKS:
            r, b = cpu[stack, "ours"], cpu[stack, "bare"]
            cpu_rows.append(
                [
                    f"{stack} {_version(stack)}",
                    f"{r['accepted']:,}",
                    f"{r['cpu']:.2f}",
                    f"{r['cpu'] / max(1, r['accepted']) * 1e9:.0f}",
                    f"{r['wall']:.1f}",
                    f"{b['cpu']:.2f}",
                    f"{r['cpu'] / b['cpu']:.2f}",
                ]
            )
        for stack in STACKS:
            emu.reset()
            emu.configure(rate=rate, burst=5, latency_ms=100)
            time.sleep(0.3)  # a full (small) bucket for each stack
            g = run_worker(
                script, "ours", stack, info, str(goodput_numbers // 1000), str(deadline),
                timeout=deadline + 60,
            )  # fmt: skip
            goodput = g["accepted"] / g["wall"]
            goodput_rows.append(
                [
                    f"{stack} {_version(stack)}",
                    f"{g['accepted']:,}",
                    f"{g['wall']:.1f}",
                    f"{goodput:,.0f}",
                    f"{goodput / (rate * 1000):.3f}",
                    f"{g['refused'] / max(1, g['requests']):.3f}",
                    f"{g['cpu']:.2f}",
                ]
            )
        emu.configure(rate=None, latency_ms=0)
    missing = "" if len(STACKS) == 2 else (
        f"\n\n(Only {', '.join(STACKS)} is installed: `pip install '.[bench,httpx2]'` for both.)"
    )  # fmt: skip
    ratio = ""
    if len(STACKS) == 2:
        ratio = (
            "CPU of aisix_async on httpx2 / on httpx = "
            f"**{cpu['httpx2', 'ours']['cpu'] / cpu['httpx', 'ours']['cpu']:.2f}**. "
        )
    return "\n".join(
        [
            "## Stacks: httpx against httpx2",
            "",
            f"Client CPU: no limit; {chunks:,} chunks of 1000 numbers; concurrency "
            f"{CONCURRENCY}; each variant in its own fresh process; emulator in another.",
            "",
            table(
                [
                    "stack",
                    "numbers accepted",
                    "client CPU s",
                    "CPU ns/number",
                    "wall s",
                    "bare loop CPU s",
                    "ours/bare",
                ],
                cpu_rows,
            ),
            "",
            f"Goodput: rate R = {rate:g} requests/s (burst 5), 100 ms latency; "
            f"{goodput_numbers:,} numbers; each run stops at {deadline:g} s; limit "
            f"R x 1000 = {rate * 1000:,.0f} numbers/s.",
            "",
            table(
                [
                    "stack",
                    "accepted",
                    "seconds",
                    "numbers/s",
                    "of limit",
                    "-1 share",
                    "client CPU s",
                ],
                goodput_rows,
            ),
            "",
            f"{ratio}On 2 cores shared with the emulator both sides are CPU-bound, and "
            "CPU figures move by several percent between runs: read differences under "
            f"about 5% as noise.{missing}",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        kind, stack, info, chunks, deadline = sys.argv[2:7]
        worker(kind, stack, info, int(chunks), float(deadline))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--numbers", type=int, default=400_000)
    parser.add_argument("--deadline", type=float, default=8.0)
    args = parser.parse_args()
    print(run(args.chunks, args.rate, args.numbers, args.deadline))


if __name__ == "__main__":
    main()
