"""drain(): one summary shape for both streams, and no summary of half a send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import client_for, numbers

import aisix_async
from aisix_async import SendSummary

pytestmark = pytest.mark.anyio


async def test_drain_summarises_the_whole_send_on_both_streams(
    emulator: Any, tmp_path: Path
) -> None:
    async with client_for(emulator) as client:
        async with client.send_many(numbers(30), "hi", chunk_size=10) as stream:
            summary = await stream.drain()
        async with (
            client.campaign(tmp_path / "c.db") as campaign,
            campaign.send_many(numbers(25, prefix="137"), "hi", chunk_size=10) as run,
        ):
            recorded = await run.drain()
    assert isinstance(summary, SendSummary) and isinstance(recorded, SendSummary)
    assert (summary.accepted, summary.stats.accepted) == (30, 30)
    assert (recorded.accepted, recorded.stats.accepted) == (25, 25)
    assert summary.units == 30 and recorded.units == 25  # one unit per short message
    assert emulator.state.message_count == 55


async def test_drain_after_reading_outcomes_is_refused(emulator: Any, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        async with client.send_many(numbers(30), "hi", chunk_size=10) as stream:
            await stream.__anext__()
            with pytest.raises(RuntimeError, match="instead of iterating"):
                await stream.drain()
        async with (
            client.campaign(tmp_path / "c.db") as campaign,
            campaign.send_many(numbers(20, prefix="137"), "hi", chunk_size=10) as run,
        ):
            await run.__anext__()
            with pytest.raises(RuntimeError, match="instead of iterating"):
                await run.drain()


def test_a_renamed_name_says_what_it_is_called_now() -> None:
    with pytest.raises(AttributeError, match="renamed DeliveryReport"):
        _ = aisix_async.StateReport
    client = aisix_async.AisixClient("1001@100001", "87B01469201D6557C2685137EB3B5DEC")
    with pytest.raises(AttributeError, match="renamed rotate_key"):
        _ = client.update_key
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = client.nothing
