"""``stream.stop()``: dispatch stops at once, retries included; requests on the wire finish.

Against the emulator on 127.0.0.1 limited to a few requests per second, so chunks are
queued behind the pace and -1 answers are being retried when the stream is stopped. The
emulator's counters say how many requests reached it: none may after the stop but
those already written.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import client_for, numbers

from aisix_async import (
    NotSentError,
    OutcomeStatus,
    RetryPolicy,
    SendOutcome,
    SendStoppedError,
)

pytestmark = pytest.mark.anyio


def _requests(emulator: Any) -> int:
    return int(emulator.state.get_counters().requests["sendOnce"])


@pytest.mark.parametrize("campaign", [False, True])
async def test_stop_sends_nothing_more_and_accounts_for_everyone(
    emulator: Any, tmp_path: Any, campaign: bool
) -> None:
    emulator.state.configure(rate=4.0, burst=4.0)
    mobiles = numbers(40 * 100)
    retry = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)
    outcomes: list[SendOutcome] = []
    seen: dict[str, int] = {}
    async with client_for(emulator, retry=retry) as client:
        if campaign:
            async with client.campaign(str(tmp_path / "c.db")) as camp:
                stream: Any = camp.send_many(mobiles, "hello", chunk_size=100)
                async with stream:
                    await _stop_after_four(stream, emulator, outcomes, seen)
        else:
            stream = client.send_many(mobiles, "hello", chunk_size=100)
            async with stream:
                await _stop_after_four(stream, emulator, outcomes, seen)
    at_stop = seen["at_stop"]
    # At most one request per connection was on the wire when stop() was called.
    assert _requests(emulator) - at_stop <= client._gateway.scheduler.max_concurrency
    assert isinstance(stream.stopped_by, SendStoppedError)
    # Every recipient in exactly one outcome; the ledger agrees with the accepted ones.
    positions = Counter(p for o in outcomes for p in o.positions)
    assert sorted(positions) == list(range(len(mobiles)))
    assert max(positions.values()) == 1
    ledger = Counter(m.mobile for m in emulator.state.messages())
    accepted = {m for o in outcomes if o.status is OutcomeStatus.ACCEPTED for m in o.mobiles}
    assert set(ledger) == accepted
    assert all(o.status is not OutcomeStatus.UNKNOWN for o in outcomes)
    not_sent = [o for o in outcomes if o.status is OutcomeStatus.FAILED]
    assert not_sent
    for outcome in not_sent:
        assert isinstance(outcome.error, NotSentError)
        assert isinstance(outcome.error.cause, SendStoppedError)
        assert not set(outcome.mobiles) & set(ledger)


async def _stop_after_four(
    stream: Any, emulator: Any, outcomes: list[SendOutcome], seen: dict[str, int]
) -> None:
    async for outcome in stream:
        outcomes.append(outcome)
        if len(outcomes) == 4:
            seen["at_stop"] = _requests(emulator)
            stream.stop()


async def test_a_stream_stopped_before_it_is_entered_sends_nothing(
    emulator: Any, tmp_path: Any
) -> None:
    async with client_for(emulator, retry=None) as client:
        plain = client.send_many(numbers(30), "hello", chunk_size=10)
        plain.stop()
        async with plain:
            outcomes = [o async for o in plain]
        async with client.campaign(str(tmp_path / "c.db")) as campaign:
            journalled = campaign.send_many(numbers(30), "hello", chunk_size=10)
            journalled.stop()
            async with journalled:
                outcomes += [o async for o in journalled]
    assert emulator.state.message_count == 0
    assert _requests(emulator) == 0
    assert len(outcomes) == 6
    assert all(isinstance(o.error, NotSentError) for o in outcomes)


async def test_a_send_that_outlasts_its_schedule_stops(emulator: Any) -> None:
    # The gateway refuses a schedule less than a minute ahead (-4): a run that outlasted
    # its own sent every later chunk to be refused, counted failed for good (a campaign
    # then called itself complete; a user's trial). It stops instead: the rest not sent.
    start = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    ticks = iter(range(10_000))
    async with client_for(emulator, max_concurrency=1) as client:
        # Ten seconds pass at every look at the clock: the schedule, two minutes ahead,
        # is less than a minute away after a few chunks.
        client._gateway.now = lambda: start + timedelta(seconds=10 * next(ticks))  # type: ignore[method-assign]
        at = start + timedelta(minutes=2)
        async with client.send_many(numbers(50), "hi", chunk_size=5, at=at) as stream:
            outcomes = [outcome async for outcome in stream]
    statuses = Counter(o.status for o in outcomes)
    assert statuses[OutcomeStatus.ACCEPTED] >= 1
    not_sent = [o for o in outcomes if isinstance(o.error, NotSentError)]
    assert not_sent and statuses[OutcomeStatus.ACCEPTED] + len(not_sent) == len(outcomes)
    assert isinstance(stream.stopped_by, SendStoppedError)
    assert "scheduled time" in stream.stopped_by.message
    assert emulator.state.message_count == 5 * statuses[OutcomeStatus.ACCEPTED]
