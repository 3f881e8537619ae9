"""A campaign under a realistic limit (issue 20, benchmark 5): journal on vs off.

The emulator limits the account to R = 40 requests/s (burst 5, 100 ms answers), as a
real account would be; the same send (chunks of 100 numbers) runs without the journal,
with it (``client.campaign``), and without it again, each on a fresh bucket and a fresh
client. Reported: wall times and the ratio with / mean of the two without. Target <=
1.02: under a limit the journal's writes hide behind the wait for the gateway. (At full
speed, with no limit, see bench_journal.py.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from _common import Emulator, emulator, numbers, table

from aisix_async import AisixClient

CHUNK = 100


async def _once(emu: Emulator, total: int, journal: Path | None) -> tuple[float, int]:
    await anyio.to_thread.run_sync(emu.reset)
    await anyio.sleep(0.5)  # a full bucket
    async with AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=32
    ) as client:
        started = time.monotonic()
        if journal is None:
            summary = await client.send_all(numbers(total), "Spring sale", chunk_size=CHUNK)
            accepted = summary.accepted
        else:
            async with client.campaign(journal) as campaign:
                stream = campaign.send_many(numbers(total), "Spring sale", chunk_size=CHUNK)
                async with stream:
                    async for _ in stream:
                        pass
                accepted = campaign.summary().accepted
        return time.monotonic() - started, accepted


async def run(rate: float, seconds: float) -> str:
    total = int(rate * seconds) * CHUNK
    with (
        emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu,
        tempfile.TemporaryDirectory() as folder,
    ):
        off1, a1 = await _once(emu, total, None)
        on, a2 = await _once(emu, total, Path(folder) / "c.db")
        off2, a3 = await _once(emu, total, None)
    assert a1 == a2 == a3 == total, (a1, a2, a3, total)
    ratio = on / ((off1 + off2) / 2)
    rows = [
        ["without journal", f"{off1:.2f}"],
        ["with journal (campaign)", f"{on:.2f}"],
        ["without journal, again", f"{off2:.2f}"],
    ]
    return "\n".join(
        [
            "## A campaign under a realistic limit",
            "",
            f"Emulator: R = {rate:g} requests/s, burst 5, 100 ms answers; {total:,} numbers "
            f"in chunks of {CHUNK} (about {seconds:g} s at the limit); max_concurrency 32; "
            "each run on a fresh bucket and a fresh (cold) client.",
            "",
            table(["run", "wall s"], rows),
            "",
            f"Ratio with / mean without: **{ratio:.3f}x** (target <= 1.02: "
            f"**{'met' if ratio <= 1.02 else 'MISSED'}**). Each run's cold start finds the "
            "limit on its own, so a second or so of every run is the controller's, not the "
            "journal's, and the ratio moves by a percent or two between runs.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(anyio.run(run, args.rate, args.seconds))


if __name__ == "__main__":
    main()
