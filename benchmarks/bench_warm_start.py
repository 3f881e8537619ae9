"""Warm start (issue 20, benchmark 4): a client told what an earlier one learned.

R = 20 requests/s, 100 ms answers, a burst of 5 and one of a second's worth. A first
client sends for 20 s and learns the limit; its ``client.rate_state()`` goes through
JSON (as the CLI's cache and a campaign's journal keep it). Then, each on a fresh bucket,
a cold client, a client made with ``rate_state=``, and one made with the same state dated
two hours earlier send for 5 s: the share of their requests answered -1, and their
goodput, in those first seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import anyio
import attrs
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


async def _cell(
    rate: float, burst: float, learn: float, first: float
) -> tuple[RateState, list[list[object]]]:
    args = ("--rate", str(rate), "--burst", str(burst), "--latency-ms", "100")
    with emulator(*args) as emu:
        _, _, _, learned = await _send(emu, learn, None)
        state = RateState.from_dict(json.loads(json.dumps(learned.as_dict())))
        # The same state two hours later (a rate cache from this morning's run).
        old = attrs.evolve(state, learned_at=state.learned_at - 2 * 3600)
        rows: list[list[object]] = []
        for name, given in (("cold", None), ("warm (rate_state=)", state), ("warm, 2 h old", old)):
            await anyio.to_thread.run_sync(emu.reset)
            await anyio.sleep(0.5)  # a full bucket for each
            started = time.monotonic()
            accepted, requests, refused, _ = await _send(emu, first, given)
            elapsed = time.monotonic() - started
            rows.append(
                [f"{burst:g}", name, requests, refused, f"{refused / max(1, requests):.3f}",
                 f"{accepted / elapsed / rate:.3f}"]
            )  # fmt: skip
    return state, rows


async def run(rate: float, learn: float, first: float) -> str:
    rows: list[list[object]] = []
    learned = []
    # A burst of 5, and one of a second's worth (the emulator's default; common on
    # gateways): the bucket is full when a client starts, and hides its first excess.
    for burst in (5.0, rate):
        state, cell = await _cell(rate, burst, learn, first)
        rows += cell
        pace = f"{state.pace:.1f}" if state.pace is not None else "none"
        learned.append(f"burst {burst:g}: pace {pace} requests/s, concurrency {state.concurrency}")
    return "\n".join(
        [
            "## Warm start",
            "",
            f"Emulator: R = {rate:g} requests/s, 100 ms answers; chunks of {CHUNK}. For each "
            f"burst, a first client sent for {learn:g} s and learned ({'; '.join(learned)}); "
            f"then each client below sent for {first:g} s on a fresh (full) bucket: cold, "
            "told that state, and told it as if learned two hours before.",
            "",
            table(["burst", "client", "requests", "-1 answers", "-1 share", "goodput / R"], rows),
            "",
            "The cold client finds the limit by meeting it (slow start, then a -1 or a few); "
            "a warm one starts just under the pace learned (an old one lower, climbing back "
            "within a few dozen requests) and meets the limit only when its probe above it "
            "does. Against a full bucket its excess stays under half the state until the "
            "answers prove more than two seconds' worth of burst, so a big burst does not "
            "send it far above the limit.",
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
