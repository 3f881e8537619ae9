"""Handlers that give up under ``asyncio.wait_for`` (or, on trio, a cancel scope) while
their sends are on the wire.

A web service's handlers each send one message, bounded by ``asyncio.wait_for(..., 1.0)``
(which the SDK cannot see), arriving at five times the account's limit R for 15 s, with
300 ms answers: most give up while queued, and some while their request is on the wire.
Until the fix in this change such a request freed its place at once and its answer went
unread, so the client never slowed down (nor, with no answer heard, grew). For each R,
calls with ``deadline=30`` and with none: the gateway's own counts of requests and -1
answers, and what the callers got.

The same on trio, each handler cancelled after 1 s by a cancel scope with no deadline
(as a framework cancels a handler whose client went away): a trio task cannot outlive
its nursery, so such an exchange was cut off with its caller, its answer unread.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

import anyio
from _common import Emulator, emulator, table

from aisix_async import AisixClient, AisixError

SECONDS = 15.0
GIVE_UP = 1.0  # the handlers' asyncio.wait_for
LATENCY_MS = 300
# Measured on 2026-12-04 before trio's cut-off exchanges ran in a system task.
TRIO_BEFORE = (
    "with no deadline, at R = 2 / 5 / 20: -1 share 0.365 / 0.548 / 0.000, the client "
    "hearing 2 / 0 / 0 of them; at R = 20 it sent 117 requests in 15 s (none answered -1, "
    "none heard: it never grew)"
)
HEADERS = [
    "R", "deadline", "requests", "-1 answers", "-1 share", "client heard -1", "answered",
    "gave up",
]  # fmt: skip


async def _callers(emu: Emulator, rate: float, deadline: float | None) -> Counter[str]:
    got: Counter[str] = Counter()
    calls = round(5 * rate * SECONDS)

    async def handler(client: AisixClient, i: int) -> None:
        try:
            await asyncio.wait_for(
                client.send_once([f"1390{i:07d}"], "Your code is 1234", deadline=deadline),
                GIVE_UP,
            )
            got["answered"] += 1
        except asyncio.TimeoutError:
            got["gave up"] += 1
        except AisixError as exc:
            got[type(exc).__name__] += 1

    async with AisixClient(emu.account, emu.authkey, base_url=emu.base_url, cgid=1) as client:
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.ensure_future(handler(client, i)))
            await asyncio.sleep(SECONDS / calls)
        await asyncio.gather(*tasks)
        got["client heard -1"] = client.stats().rate_limited
    return got


async def _trio_callers(emu: Emulator, rate: float, deadline: float | None) -> Counter[str]:
    got: Counter[str] = Counter()
    calls = round(5 * rate * SECONDS)

    async def handler(client: AisixClient, i: int) -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:

                async def give_up() -> None:
                    await anyio.sleep(GIVE_UP)
                    scope.cancel()

                group.start_soon(give_up)
                try:
                    await client.send_once([f"1390{i:07d}"], "Your code is 1", deadline=deadline)
                    got["answered"] += 1
                except AisixError as exc:
                    got[type(exc).__name__] += 1
                group.cancel_scope.cancel()
        if scope.cancelled_caught:
            got["gave up"] += 1

    async with AisixClient(emu.account, emu.authkey, base_url=emu.base_url, cgid=1) as client:
        async with anyio.create_task_group() as group:
            for i in range(calls):
                group.start_soon(handler, client, i)
                await anyio.sleep(SECONDS / calls)
        # The answers still to come of the last callers that gave up.
        with anyio.move_on_after(5):
            while client.stats().in_flight:
                await anyio.sleep(0.05)
        got["client heard -1"] = client.stats().rate_limited
    return got


async def run(rates: list[float], trio: bool = False) -> str:
    callers = _trio_callers if trio else _callers
    rows: list[list[object]] = []
    for rate in rates:
        burst = str(max(1.0, rate))
        args = ("--rate", str(rate), "--burst", burst, "--latency-ms", str(LATENCY_MS))
        with emulator(*args) as emu:
            for deadline in (30.0, None):
                await anyio.to_thread.run_sync(emu.reset)
                await anyio.sleep(1.0)  # a full bucket for each
                got = await callers(emu, rate, deadline)
                state = await anyio.to_thread.run_sync(emu.state)
                requests = sum(state["requests"].values())
                refused = int(state["results"].get("-1", 0))
                rows.append(
                    [f"{rate:g}", "30 s" if deadline else "none", requests, refused,
                     f"{refused / max(1, requests):.3f}", got["client heard -1"],
                     got["answered"], got["gave up"]]
                )  # fmt: skip
    if trio:
        return "\n".join(
            [
                "## Callers cancelled on the wire (trio, a cancel scope with no deadline)",
                "",
                f"As above, on trio: each handler is cancelled after {GIVE_UP:g} s by a "
                "cancel scope with no deadline (as a framework cancels a handler whose "
                "client went away), which the SDK cannot see coming.",
                "",
                table(HEADERS, rows),
                "",
                "Before the change that runs such an exchange in a trio system task "
                "(commit 98f661f: cut off with its caller, its answer unread), this script "
                f"measured: {TRIO_BEFORE}.",
                "",
            ]
        )
    return "\n".join(
        [
            "## Callers cancelled on the wire (asyncio.wait_for)",
            "",
            f"Emulator: R requests/s, a burst of R, {LATENCY_MS} ms answers. Single sends "
            f"arrive at 5R a second for {SECONDS:g} s, each under "
            f"`asyncio.wait_for(..., {GIVE_UP:g})`, with `deadline=30` or none. The "
            "gateway's counts of requests and -1 answers, how many -1 the client heard, "
            "and how many callers got an answer or gave up.",
            "",
            table(HEADERS, rows),
            "",
            "Before the fix (commit 817cb86: the answers of cancelled requests unread, "
            "their places freed at once), this script measured on 2026-12-04, at R = 2 / "
            "5 / 20 with `deadline=30`: -1 share 0.327 / 0.371 / 0.000, the client hearing "
            "2 / 0 / 0 of them; at R = 20 it sent 130 requests in 15 s (none answered -1, "
            "none heard: it never grew).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 5.0, 20.0])
    args = parser.parse_args()
    print(anyio.run(run, args.rates))
    print(anyio.run(run, args.rates, True, backend="trio"))


if __name__ == "__main__":
    main()
