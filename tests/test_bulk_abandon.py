"""A bulk send left early still accounts for every chunk it took on; streams leak nothing.

Against the emulator on 127.0.0.1, with latency, so chunks are really on the wire when
the block is left. What the emulator's ledger holds is the truth the outcomes (yielded
and abandoned) are checked against.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import client_for, eventually, numbers

import aisix_async._mechanics.http as http_module
from aisix_async import (
    BalanceTooLowError,
    NotSentError,
    OutcomeStatus,
    SendOutcome,
    TransportError,
    ValidationError,
    open_campaign_journal,
)

pytestmark = pytest.mark.anyio


def check_accounted(
    emulator: Any, mobiles: list[str], yielded: list[SendOutcome], abandoned: list[SendOutcome]
) -> None:
    """Every chunk once; whatever the gateway took is in an outcome that may say so."""
    positions = Counter(p for o in yielded + abandoned for p in o.positions)
    assert all(n == 1 for n in positions.values()), "a recipient in two outcomes"
    may_be_sent = {
        m for o in yielded + abandoned if o.status is not OutcomeStatus.FAILED for m in o.mobiles
    }
    ledger = Counter(record.mobile for record in emulator.state.messages())
    assert all(n == 1 for n in ledger.values())
    assert set(ledger) <= may_be_sent, "the gateway took recipients the caller never heard of"
    for outcome in abandoned:
        if outcome.status is OutcomeStatus.FAILED:
            assert isinstance(outcome.error, NotSentError) and outcome.attempts == 0
            assert not set(outcome.mobiles) & set(ledger)
        elif outcome.status is OutcomeStatus.UNKNOWN:
            assert isinstance(outcome.error, TransportError)
            assert outcome.error.outcome_unknown and outcome.error.request_sent
            assert outcome.attempts >= 1
    # A recipient in no outcome was never read or never planned: never sent.
    unread = {mobiles[p] for p in range(len(mobiles)) if p not in positions}
    assert not unread & set(ledger)


@pytest.mark.parametrize("how", ["break", "cancel"])
async def test_a_stream_left_early_accounts_for_every_chunk_it_took_on(
    emulator: Any, how: str
) -> None:
    # Answers spread over 0.4 s, so that the first is back while others are held.
    emulator.state.set_faults(latency_ms=80, jitter_ms=400, fault_actions=["sendOnce"])
    mobiles = numbers(3000)
    yielded: list[SendOutcome] = []
    async with client_for(emulator, retry=None, max_concurrency=8, initial_concurrency=8) as client:
        stream = client.send_many(mobiles, "hi", chunk_size=100)
        with anyio.CancelScope() as scope:
            async with stream:
                async for outcome in stream:
                    yielded.append(outcome)
                    # Left only once the gateway holds a request: a loaded machine (CI,
                    # with coverage) could hand over the first outcome after every chunk
                    # on the wire had come back, leaving nothing to account for.
                    await eventually(lambda: emulator.state.requests_held, timeout=10)
                    if how == "break":
                        break
                    scope.cancel()  # as a move_on_after around the block would
        stats = stream.stats()
        # The emulator finishes what it had taken on even though the client hung up.
        await anyio.sleep(0.6)
    abandoned = stream.abandoned
    assert len(yielded) == 1
    statuses = Counter(o.status for o in abandoned)
    assert statuses[OutcomeStatus.UNKNOWN] >= 1
    assert [o.chunk for o in abandoned] == sorted(o.chunk for o in abandoned)
    check_accounted(emulator, mobiles, yielded, abandoned)
    # The live counters include the abandoned outcomes.
    assert stats.done == sum(len(o.mobiles) for o in yielded + abandoned)
    assert stats.unknown == sum(
        len(o.mobiles) for o in abandoned if o.status is OutcomeStatus.UNKNOWN
    )


@pytest.fixture
def one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own HTTP pool holds one connection (its scheduler still lets eight
    requests through): the others wait in the pool, their turn come, nothing written."""
    new_client = http_module._Stack.new_client

    def with_one(self: Any, *, timeout: Any, connections: int) -> Any:
        return new_client(self, timeout=timeout, connections=1)

    monkeypatch.setattr(http_module._Stack, "new_client", with_one)


@pytest.mark.parametrize("journalled", [False, True])
async def test_a_chunk_cut_off_before_its_request_was_written_is_not_sent(
    emulator: Any, one_connection: None, tmp_path: Path, journalled: bool
) -> None:
    # Its turn had come (in a journal: "in flight"), but its request waited for a
    # connection: cut off there, the gateway never saw it. It was called unknown, and a
    # resumed campaign never sent it (a user's trial, where an event loop stalled by a
    # full stdout left 200 recipients so).
    emulator.state.set_faults(latency_ms=300, fault_actions=["sendOnce"])
    mobiles = numbers(3000)
    yielded: list[SendOutcome] = []
    journal = tmp_path / "c.db"
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            client_for(emulator, retry=None, max_concurrency=8, initial_concurrency=8)
        )
        owner: Any = client
        if journalled:
            owner = await stack.enter_async_context(client.campaign(journal))
        stream = owner.send_many(mobiles, "hi", chunk_size=100)
        with anyio.CancelScope() as scope:
            async with stream:
                # One request held by the gateway, three more whose turn came (counted
                # as requests as they are dispatched) waiting for the connection.
                with anyio.fail_after(10):
                    while not (emulator.state.requests_held and stream.stats().requests >= 4):
                        await anyio.sleep(0.005)
                scope.cancel()
        stats = stream.stats()
        unknown_calls = client.stats().outcome_unknown
        await anyio.sleep(0.5)  # the held request is answered (the client hung up)
    abandoned = stream.abandoned
    statuses = Counter(o.status for o in abandoned)
    assert statuses[OutcomeStatus.UNKNOWN] == 1 == unknown_calls  # the one written
    cut = [o for o in abandoned if "request was written" in str(o.error)]
    assert len(cut) >= 3
    assert all(o.status is OutcomeStatus.FAILED and o.attempts == 0 for o in cut)
    check_accounted(emulator, mobiles, yielded, abandoned)
    assert stats.requests == 1 == emulator.state.message_count // 100
    if journalled:
        async with open_campaign_journal(journal) as reader:
            summary = reader.summary()
        # Nothing left "in flight", and only the written chunk is in doubt: the rest is
        # sent again by a resumed run.
        assert (summary.in_flight, summary.unknown) == (0, 100)
        assert summary.accepted == 0


async def test_a_stream_run_to_its_end_abandons_nothing(emulator: Any) -> None:
    async with client_for(emulator, retry=None) as client:
        stream = client.send_many(numbers(2500), "hi")
        async with stream:
            outcomes = [o async for o in stream]
    assert stream.abandoned == []
    assert sum(len(o.mobiles) for o in outcomes) == 2500


async def test_a_bad_text_in_the_middle_of_a_bulk_send_fails_only_its_item(
    emulator: Any,
) -> None:
    pairs = [(m, f"text {i}") for i, m in enumerate(numbers(1000))]
    pairs[550] = (pairs[550][0], "bad \ud800 text")
    async with client_for(emulator, retry=None) as client:
        stream = client.send_batch_many(pairs)
        async with stream:
            outcomes = [o async for o in stream]
    (bad,) = [o for o in outcomes if o.status is OutcomeStatus.FAILED]
    assert bad.positions == (550,) and isinstance(bad.error, ValidationError)
    assert "U+D800" in str(bad.error)
    accepted = sorted(
        p for o in outcomes if o.status is OutcomeStatus.ACCEPTED for p in o.positions
    )
    assert accepted == [p for p in range(1000) if p != 550]
    assert len(emulator.state.messages()) == 999


async def test_a_bad_content_for_every_number_is_refused_before_sending(emulator: Any) -> None:
    async with client_for(emulator, retry=None) as client:
        with pytest.raises(ValidationError, match="lone surrogate"):
            client.send_many(numbers(10), "bad \udcff")
    assert emulator.state.messages() == []


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_a_stream_never_entered_or_refused_leaks_nothing(emulator: Any) -> None:
    emulator.state.set_balance(None, "0.05")
    async with client_for(emulator, retry=None) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            never = client.send_many(numbers(10), "hi")
            del never
            refused = client.send_many(numbers(1000), "hi")
            with pytest.raises(BalanceTooLowError):
                async with refused:
                    pass
            del refused
            gc.collect()
    assert _resource_warnings(caught) == []
    assert emulator.state.messages() == []


async def test_a_block_never_iterated_sends_the_window_and_no_more(emulator: Any) -> None:
    # The README said such a block "sends nothing worth counting on"; with the defaults
    # it sent and charged 16,000 messages (a user's trial). What it says now: up to
    # max_concurrency chunks go out unread, and their outcomes are in `abandoned`.
    mobiles = numbers(200)
    client = client_for(emulator, max_concurrency=4, initial_concurrency=4)
    async with client, client.send_many(mobiles, "hi", chunk_size=10) as outcomes:
        with anyio.move_on_after(5):
            while len(emulator.state.messages()) < 40:
                await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # time enough for a fifth chunk, were it to go
    assert len(emulator.state.messages()) == 4 * 10
    statuses = [o.status for o in outcomes.abandoned]
    # The four chunks of the window settled, and the one planned behind them never went.
    assert statuses == [OutcomeStatus.ACCEPTED] * 4 + [OutcomeStatus.FAILED]
    check_accounted(emulator, mobiles, [], outcomes.abandoned)
