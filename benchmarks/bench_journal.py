"""What the campaign journal costs: the same send with and without it, as a wall-time ratio.

A campaign writes every chunk to SQLite before its request and again with its outcome
(WAL, ``synchronous=NORMAL``, on a worker thread). At the emulator's full speed (no rate
limit, no latency) nothing hides that cost behind the network, so this is the worst
case. Target: the journal adds at most 15% wall time (ratio <= 1.15) on this 2-vCPU
machine at full speed (issue 20 withdrew the old <= 1.10); under a realistic limit see
bench_campaign_limit.py.

The emulator runs in its own process (``python -m aisix_async.emulator --port 0``, no
ledger, no reports) so its CPU does not compete with the client's event loop in one
interpreter. Each round runs the send without the journal, with it, and without it
again (a control), each with a fresh client, in an order that alternates from round to
round. A round's ratio divides the run with the journal by the mean of the two without,
which sat on either side of it: a drift of the machine that is linear within the round
cancels. Its control ratio (without / without) shows how much of a ratio is the machine.
The figure is the median of the rounds' ratios, with their interquartile range: on a
shared machine the same run varies by 20% or more from one run to the next, so many
short paired rounds say more than a few long ones.

    python benchmarks/bench_journal.py [--numbers 500000] [--rounds 15] [--concurrency 16]

Prints a markdown table row (appended to --append FILE if given). Exit 1 if any
recipient was not accepted on either side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aisix_async import AisixClient, OutcomeStatus  # noqa: E402

ACCOUNT = "1001@100001"
AUTHKEY = "87B01469201D6557C2685137EB3B5DEC"
CONTENT = "Spring sale: 20% off everything until Sunday"


def start_emulator(*extra: str) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "aisix_async.emulator", "--port", "0",
        "--no-record", "--no-reports", "--balance", "100000000", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("base_url="):
            return proc, line.strip().split("=", 1)[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the emulator did not start")


def numbers(count: int) -> list[str]:
    return [f"139{i:08d}" for i in range(count)]


async def plain(url: str, mobiles: list[str], concurrency: int) -> tuple[float, int]:
    async with AisixClient(ACCOUNT, AUTHKEY, base_url=url, max_concurrency=concurrency) as client:
        start = time.perf_counter()
        accepted = 0
        async with client.send_many(mobiles, CONTENT, check_balance=False) as outcomes:
            async for outcome in outcomes:
                if outcome.status is OutcomeStatus.ACCEPTED:
                    accepted += len(outcome.mobiles)
        return time.perf_counter() - start, accepted


async def journaled(
    url: str, mobiles: list[str], concurrency: int, folder: Path
) -> tuple[float, int]:
    path = folder / f"campaign-{time.monotonic_ns()}.db"
    async with AisixClient(ACCOUNT, AUTHKEY, base_url=url, max_concurrency=concurrency) as client:
        start = time.perf_counter()
        async with client.campaign(path) as campaign:
            stream = campaign.send_many(mobiles, CONTENT, check_balance=False)
            async with stream:
                async for _ in stream:
                    pass
            accepted = campaign.summary().accepted
        return time.perf_counter() - start, accepted


def measure(
    mobiles: list[str], rounds: int, concurrency: int, *emulator_args: str
) -> tuple[dict[str, list[float]], bool]:
    """Wall times without the journal, with it, and without it again, per round."""
    proc, url = start_emulator(*emulator_args)
    times: dict[str, list[float]] = {"plain": [], "journal": [], "control": []}
    ok = True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(plain, url, mobiles[:5000], concurrency)  # warm up both sides
            for round_ in range(rounds):
                # Alternating the order cancels a drift of the machine within a round.
                order = ("plain", "journal", "control")
                for side in order if round_ % 2 == 0 else order[::-1]:
                    if side == "journal":
                        took, accepted = anyio.run(journaled, url, mobiles, concurrency, Path(tmp))
                    else:
                        took, accepted = anyio.run(plain, url, mobiles, concurrency)
                    times[side].append(took)
                    ok &= accepted == len(mobiles)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return times, ok


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def describe(times: dict[str, list[float]]) -> tuple[float, str]:
    """The median of the rounds' ratios, and the figures behind it."""
    pairs = zip(times["plain"], times["journal"], times["control"], strict=True)
    ratios, controls = zip(*((2 * j / (p + c), c / p) for p, j, c in pairs), strict=True)
    q1, median, q3 = _quartiles(list(ratios))
    c1, control, c3 = _quartiles(list(controls))
    bare, with_journal = (statistics.median(times[k]) for k in ("plain", "journal"))
    return median, (
        f"without {bare:.2f} s, with {with_journal:.2f} s (medians); ratio per round "
        f"(with / mean of the two without): "
        f"quartiles {q1:.2f}-{q3:.2f}, {min(ratios):.2f}-{max(ratios):.2f} in all, "
        f"{len(ratios)} rounds; control (without / without) median {control:.3f}, "
        f"quartiles {c1:.2f}-{c3:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    mobiles = numbers(args.numbers)
    chunks = -(-args.numbers // 1000)
    setup = f"{args.numbers:,} numbers, {chunks} chunks, concurrency {args.concurrency}"
    times, ok = measure(mobiles, args.rounds, args.concurrency)
    ratio, figures = describe(times)
    rows = [
        f"| journal cost | {setup}, emulator at full speed | {figures} | **{ratio:.3f}x** "
        f"| <= 1.15x {'met' if ratio <= 1.15 else 'MISSED'} |"
    ]
    # For scale: the same with a network-like 30 ms answer time (no target in the issue).
    rounds = max(3, args.rounds // 2)
    times, ok_latency = measure(mobiles, rounds, args.concurrency, "--latency-ms", "30")
    ok &= ok_latency
    ratio, figures = describe(times)
    rows.append(
        f"| journal cost, 30 ms answers | {setup}, emulator answering in 30 ms | {figures} "
        f"| **{ratio:.3f}x** | (for scale) |"
    )
    print("| benchmark | setup | figures | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(
        "\nWhat it costs: two writes per chunk, its place in the input and hash before its "
        "request and its outcome after, gathered by group commit on a worker thread. At "
        "full speed the client's event loop is the bottleneck, and what the journal adds "
        "is CPU around those writes more than the SQL itself: the bookkeeping on the loop "
        "(records, events, trips to the thread) and the thread's own work, which is not "
        "free on a small machine, where a busy second CPU slows the first."
    )
    if args.append:
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(rows) + "\n")
    if not ok:
        print("error: not every recipient was accepted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
