"""Warm start (issue 20, benchmark 4): a client told what an earlier one learned.

One emulator, R = 20 requests/s, burst 5, 100 ms answers. A first client sends for 20 s
and learns the limit; its ``client.rate_state()`` goes through JSON (as the CLI's cache
and a campaign's journal keep it). Then, each on a fresh bucket, a cold client and a
client made with ``rate_state=`` send for 5 s: the share of their requests answered -1,
and their goodput, in those first seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import anyio
from _common import Emulator, emulator, numbers, table

from aisix_async import AisixClient, OutcomeStatus, RateState

CHUNK = 100


async def _send(
    emu: Emulator, seconds: float, state: RateState | None
) -> tuple[int, int, int, RateState]:
    accepted = 0
    async with AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=32, rate_state=state
    ) as client:
        stream = client.send_many(numbers(10**8), "Your code is 1234", chunk_size=CHUNK)
        with anyio.move_on_after(seconds):
            async with stream as outcomes:
                async for outcome in outcomes:
                    if outcome.status is OutcomeStatus.ACCEPTED:
                        accepted += 1
        stats = stream.stats()
        return accepted, stats.requests, stats.rate_limited, client.rate_state()


async def run(rate: float, learn: float, first: float) -> str:
    with emulator("--rate", str(rate), "--burst", "5", "--latency-ms", "100") as emu:
        _, _, _, learned = await _send(emu, learn, None)
        state = RateState.from_dict(json.loads(json.dumps(learned.as_dict())))
        rows = []
        for name, given in (("cold", None), ("warm (rate_state=)", state)):
            await anyio.to_thread.run_sync(emu.reset)
            await anyio.sleep(0.5)  # a full bucket for each
            started = time.monotonic()
            accepted, requests, refused, _ = await _send(emu, first, given)
            elapsed = time.monotonic() - started
            rows.append(
                [name, requests, refused, f"{refused / max(1, requests):.3f}",
                 f"{accepted / elapsed / rate:.3f}"]
            )  # fmt: skip
    pace = f"{state.pace:.1f}" if state.pace is not None else "none"
    return "\n".join(
        [
            "## Warm start",
            "",
            f"Emulator: R = {rate:g} requests/s, burst 5, 100 ms answers; chunks of {CHUNK}. A "
            f"first client sent for {learn:g} s and learned pace {pace} requests/s, "
            f"concurrency {state.concurrency}; then each client below sent for {first:g} s "
            "on a fresh bucket.",
            "",
            table(["client", "requests", "-1 answers", "-1 share", "goodput / R"], rows),
            "",
            "The cold client finds the limit by meeting it (slow start, then a -1 or a few); "
            "the warm one starts just under the pace learned and meets it only when its "
            "probe above it does (brisk until it meets the limit itself, so that a pace "
            "remembered too low is outgrown).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--learn", type=float, default=20.0)
    parser.add_argument("--first", type=float, default=5.0)
    args = parser.parse_args()
    print(anyio.run(run, args.rate, args.learn, args.first))


if __name__ == "__main__":
    main()
