"""How ``journal_v1.db`` was made: a campaign journal written by schema 1 (commit 7d55bac).

Run with that version of aisix_async; kept to show what the migration test starts from.
300 numbers by sendOnce in chunks of 100 (the answers of the chunks sent after the second
was accepted lost: unknown), 50
numbers sent outside the campaign, and every report fetched through the campaign, so the
file holds the campaign's reports, reports not the campaign's, and a reconciled chunk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from aisix_async import AisixClient
from aisix_async.emulator import serve_emulator


async def main(path: Path) -> None:
    async with serve_emulator(report_delay=0.0, seed=3) as emu:
        client = AisixClient(emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=1)
        async with client:
            await client.send_once([f"137{i:08d}" for i in range(50)], "not the campaign's")
            numbers = [f"139{i:08d}" for i in range(300)]
            # The third chunk's answer is lost; the run goes on and records it unknown.
            campaign = client.campaign(path)
            async with campaign, campaign.send_many(numbers, "hello", chunk_size=100) as s:
                async for outcome in s:
                    if outcome.chunk == 1:
                        emu.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
            async with client.campaign(path) as campaign:
                async with campaign.send_many(numbers, "hello", chunk_size=100) as s:
                    async for _ in s:
                        pass
                emu.state.set_faults(error_after_charge=0.0)
                async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.5) as r:
                    async for _ in r:
                        pass
                print(campaign.summary())


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
