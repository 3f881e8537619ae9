"""Refusals no retry clears, met over real HTTP on 127.0.0.1 (the emulator under uvicorn).

Each ends a send as failed, certainly not sent, at once: never as unknown, and never
after waiting out the retry timeout. The exact shapes are in test_errors.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import client_for, collect, numbers

from aisix_async import EndpointError, NotSentError, OutcomeStatus
from aisix_async._core import errors as policy

pytestmark = pytest.mark.anyio

# Small enough that a request of a few hundred numbers is over it.
LIMIT = 1024


async def test_a_send_over_the_servers_body_limit_is_failed_at_once(emulator: Any) -> None:
    emulator.state.configure(max_body_bytes=LIMIT)
    async with client_for(emulator) as client:
        with pytest.raises(EndpointError) as caught:
            await client.send_once(numbers(200), "hello")
        assert client.stats().outcome_unknown == 0
    error = caught.value
    assert error.status == 413 and not error.outcome_unknown
    assert "chunk_size" in error.message
    assert emulator.authkey not in str(error)
    counters = emulator.state.get_counters()
    # Asked once: the same request meets the same refusal.
    assert counters.http_errors[413] == 1
    assert emulator.state.message_count == 0


async def test_a_bulk_send_over_the_body_limit_ends_failed_not_unknown(emulator: Any) -> None:
    emulator.state.configure(max_body_bytes=LIMIT)
    mobiles = numbers(300)
    async with client_for(emulator, max_concurrency=1) as client:
        outcomes = await collect(
            client.send_many(mobiles, "hello", chunk_size=100, check_balance=False)
        )
    assert sorted(m for o in outcomes for m in o.mobiles) == sorted(mobiles)
    assert {o.status for o in outcomes} == {OutcomeStatus.FAILED}
    # The first chunk met the 413; the rest were not sent, and a later run may send them.
    refused = [o.error for o in outcomes if isinstance(o.error, EndpointError)]
    assert len(refused) == 1
    assert all(isinstance(o.error, NotSentError) or o.error in refused for o in outcomes)
    assert all(policy.worth_sending_again(o.error) for o in outcomes)
    assert emulator.state.message_count == 0


async def test_a_large_send_over_the_body_limit_is_failed_too(emulator: Any) -> None:
    # About 900 kB (100 messages of 1000 Chinese characters, 9 bytes each once encoded):
    # the answer reaches the client only from a server that reads the refused body before
    # closing (the emulator did not, and the send looked unknown: a connection reset).
    emulator.state.configure(max_body_bytes=LIMIT)
    pairs = [(mobile, "短信" * 500) for mobile in numbers(100)]
    async with client_for(emulator) as client:
        # Five times: the reset lost the answer about half the time on asyncio.
        for _ in range(5):
            with pytest.raises(EndpointError) as caught:
                await client.send_batch(pairs)
            assert caught.value.status == 413 and not caught.value.outcome_unknown
    assert emulator.state.message_count == 0
