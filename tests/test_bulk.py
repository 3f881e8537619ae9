"""The bulk engine against the emulator over real HTTP, checked against its ledger.

The ledger is the ground truth: a recipient the client calls accepted must be in it
exactly once with the msgid of its receipt; a failed one must not be in it; an unknown
one may be, at most once (never resent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import attrs
import helpers
import pytest
from helpers import collect, numbers

from aisix_async import (
    BalanceTooLowError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    NotSentError,
    OutcomeStatus,
    RetryPolicy,
    SendOptions,
    SendOutcome,
    ValidationError,
)
from aisix_async._core.chunking import PlannedChunk
from aisix_async._features.bulk import once_stream
from aisix_async.emulator import EmulatorServer

pytestmark = pytest.mark.anyio
# The shared client, with one attempt more than the shared FAST: the fault tests here
# were written against four.
client_for = partial(helpers.client_for, retry=attrs.evolve(helpers.FAST, attempts=4))


def check_against_ledger(emulator: Any, mobiles: list[str], outcomes: list[SendOutcome]) -> None:
    """Every input position in exactly one outcome, and each outcome true to the ledger."""
    positions = sorted(p for o in outcomes for p in o.positions)
    assert positions == list(range(len(mobiles)))
    ledger = emulator.state.messages()
    seen = Counter(record.mobile for record in ledger)
    assert all(count == 1 for count in seen.values()), "a recipient was sent twice"
    msgid_of = {record.mobile: record.msgid for record in ledger}
    for outcome in outcomes:
        assert [mobiles[p] for p in outcome.positions] == list(outcome.mobiles)
        if outcome.status is OutcomeStatus.ACCEPTED:
            assert outcome.error is None and outcome.attempts >= 1
            if outcome.action == "sendOnce":
                (receipt,) = outcome.receipts
                assert all(msgid_of[m] == receipt.msgid for m in outcome.mobiles)
            else:
                got = [msgid_of[m] for m in outcome.mobiles]
                assert got == [r.msgid for r in outcome.receipts]
        elif outcome.status is OutcomeStatus.FAILED:
            assert outcome.error is not None
            assert not any(m in seen for m in outcome.mobiles)
        else:
            assert outcome.error is not None and outcome.error.outcome_unknown


@pytest.mark.parametrize("count", [0, 1, 2, 999, 1000, 1001])
async def test_send_many_boundaries(emulator: Any, count: int) -> None:
    mobiles = numbers(count)
    async with client_for(emulator) as client:
        outcomes = await collect(client.send_many(mobiles, "Your code is 1234"))
    assert sorted(len(o.mobiles) for o in outcomes) == sorted(
        [1000] * (count // 1000) + ([count % 1000] if count % 1000 else [])
    )
    assert all(o.status is OutcomeStatus.ACCEPTED for o in outcomes)
    check_against_ledger(emulator, mobiles, outcomes)
    assert {r.text for r in emulator.state.messages()} <= {"【Aisix】Your code is 1234"}


@pytest.mark.parametrize("count", [1, 2, 100, 101, 201])
async def test_batch_and_param_boundaries(emulator: Any, count: int) -> None:
    pairs = [(m, f"hello {i}") for i, m in enumerate(numbers(count))]
    async with client_for(emulator) as client:
        outcomes = await collect(client.send_batch_many(pairs))
        check_against_ledger(emulator, [m for m, _ in pairs], outcomes)
        texts = {r.mobile: r.text for r in emulator.state.messages()}
        assert texts == {m: f"【Aisix】{t}" for m, t in pairs}
        assert all(o.status is OutcomeStatus.ACCEPTED for o in outcomes)
        assert (count == 1) == any(o.action == "sendOnce" for o in outcomes)

        emulator.state.reset()
        rows = [(m, [f"n{i}"]) for i, m in enumerate(numbers(count, prefix="138"))]
        outcomes = await collect(client.send_param_many("Dear {p1}", rows, csid=101))
        check_against_ledger(emulator, [m for m, _ in rows], outcomes)
        texts = {r.mobile: r.text for r in emulator.state.messages()}
        assert texts == {m: f"【AisixShop】Dear {v[0]}" for m, v in rows}
        assert sum(o.cost for o in outcomes) == Decimal("0.10") * count


async def test_invalid_recipients_fail_alone_and_async_input(emulator: Any) -> None:
    mobiles = ["13800000001", "not-a-number", "13800000002", "1380000000,3", "13800000004"]

    async def source() -> AsyncIterator[str]:
        for mobile in mobiles:
            await anyio.sleep(0)
            yield mobile

    async with client_for(emulator) as client:
        outcomes = await collect(client.send_many(source(), "hi", chunk_size=2))
        bad = sorted((o for o in outcomes if o.action is None), key=lambda o: o.positions)
        assert [o.positions for o in bad] == [(1,), (3,)]
        assert all(isinstance(o.error, ValidationError) and o.attempts == 0 for o in bad)
        check_against_ledger(emulator, mobiles, outcomes)
        assert emulator.state.message_count == 3

        emulator.state.reset()
        pairs = [("13800000001", "a"), ("13800000002", "b{|}c"), ("13800000003", "d")]
        outcomes = await collect(client.send_batch_many(pairs))
        check_against_ledger(emulator, [m for m, _ in pairs], outcomes)
        assert {o.action for o in outcomes} == {None, "sendBatch"}


async def test_an_item_that_is_no_string_fails_alone_showing_what_it_was(emulator: Any) -> None:
    # Its outcome had mobiles=('',), so --outcomes could not say which item was wrong.
    items: list[Any] = ["13800000001", 18100002707, None, b"18100002707"]
    async with client_for(emulator) as client:
        outcomes = await collect(client.send_many(items, "hi"))
    bad = sorted((o for o in outcomes if o.action is None), key=lambda o: o.positions)
    assert [(o.positions, o.mobiles) for o in bad] == [
        ((1,), ("18100002707",)),
        ((2,), ("None",)),
        ((3,), ("b'18100002707'",)),
    ]
    assert str(bad[0].error) == "mobile number 18100002707 must be a string, got int"
    assert str(bad[2].error) == "mobile number b'18100002707' must be a string, got bytes"


async def test_invalid_content_or_template_fails_the_whole_call(emulator: Any) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(ValidationError):
            client.send_many(numbers(3), "")
        with pytest.raises(ValidationError):
            client.send_many("13800000000", "one string is not a list")
        with pytest.raises(ValidationError):
            client.send_param_many("no placeholder", [("13800000000", ["x"])])
        with pytest.raises(ValidationError):
            client.send_batch_many([], chunk_size=101)
    assert emulator.state.get_counters().requests == {}


async def test_balance_checked_before_anything_is_sent(emulator: Any) -> None:
    emulator.state.set_balance(None, "0.50")
    async with client_for(emulator) as client:
        with pytest.raises(BalanceTooLowError):
            async with client.send_many(numbers(10), "hi") as outcomes:
                raise AssertionError(f"entered {outcomes!r}")
    sends = {a: n for a, n in emulator.state.get_counters().requests.items() if "send" in a}
    assert sends == {}


async def test_low_balance_mid_run_stops_and_reports_the_rest(emulator: Any) -> None:
    # 0.10 yuan a message: 250.0 covers 2.5 chunks of 1000.
    emulator.state.set_balance(None, "250.0")
    mobiles = numbers(5500)
    async with client_for(emulator, max_concurrency=1) as client:
        stream = client.send_many(iter(mobiles), "hi", check_balance=True)
        outcomes = await collect(stream)
    assert isinstance(stream.stopped_by, InsufficientBalanceError)
    check_against_ledger(emulator, mobiles, outcomes)
    status = Counter(o.status for o in outcomes for _ in o.mobiles)
    assert status[OutcomeStatus.ACCEPTED] == 2000
    assert status[OutcomeStatus.FAILED] == 3500
    refused = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    assert len(refused) == 1 and refused[0].attempts == 1
    unsent = [o for o in outcomes if isinstance(o.error, NotSentError)]
    assert sum(len(o.mobiles) for o in unsent) == 2500
    assert all(o.attempts == 0 and not o.sent for o in unsent)
    assert all("-9" in str(o.error) for o in unsent)
    assert emulator.state.get_counters().requests["sendOnce"] == 3


async def test_account_level_refusal_stops_dispatch(emulator: Any) -> None:
    emulator.state.update_account(None, interface_enabled=False)
    pairs = [(m, "x") for m in numbers(450)]
    async with client_for(emulator, max_concurrency=2, initial_concurrency=1) as client:
        outcomes = await collect(client.send_batch_many(pairs, check_balance=False))
    assert all(o.status is OutcomeStatus.FAILED for o in outcomes)
    assert isinstance(outcomes[0].error, InterfaceNotEnabledError)
    check_against_ledger(emulator, [m for m, _ in pairs], outcomes)
    assert emulator.state.get_counters().requests["sendBatch"] <= 2


async def test_never_clearing_rate_limit_says_ip_or_time_window(emulator: Any) -> None:
    emulator.state.configure(ip_bound=True)
    policy = RetryPolicy(attempts=2, timeout=5, initial_backoff=0, max_backoff=0)
    async with client_for(emulator, retry=policy, max_concurrency=1) as client:
        outcomes = await collect(client.send_many(iter(numbers(30)), "x", chunk_size=10))
    first = min(outcomes, key=lambda o: o.chunk)
    assert "IP" in str(first.error) and first.attempts == 2
    assert all(o.status is OutcomeStatus.FAILED for o in outcomes)
    assert sum(isinstance(o.error, NotSentError) for o in outcomes) == 2


async def test_early_exit_cancels_cleanly_and_sends_nothing_more(emulator: Any) -> None:
    emulator.state.set_faults(latency_ms=30)
    async with client_for(emulator, max_concurrency=4) as client:
        async with client.send_many(iter(numbers(20_000)), "hi", chunk_size=10) as outcomes:
            async for _ in outcomes:
                break
        assert outcomes.stats().in_flight == 0
        assert client.stats().in_flight == 0
        # Requests written before the exit may still be counted once the emulator's
        # latency has passed; after that, nothing new arrives.
        await anyio.sleep(0.1)
        before = emulator.state.get_counters().requests["sendOnce"]
        await anyio.sleep(0.1)
        assert emulator.state.get_counters().requests["sendOnce"] == before
        assert before < 20
        # The client still works after the stream was torn down.
        assert (await client.get_balance()).remain > 0


async def test_cancellation_from_outside(emulator: Any) -> None:
    emulator.state.set_faults(latency_ms=30)
    async with client_for(emulator) as client:
        with anyio.move_on_after(0.15):
            async with client.send_many(iter(numbers(50_000)), "hi", chunk_size=10) as outcomes:
                async for _ in outcomes:
                    pass
        assert client.stats().in_flight == 0
        assert client.stats().waiting == 0


async def test_requests_a_cancelled_send_left_held_land_before_the_next_test() -> None:
    # A cancelled send under latency (as above) leaves requests held in the emulator; they
    # are acted on when their delay ends. The shared emulator's reset must wait for them,
    # or they land in the next test's ledger (it once counted 30 messages for 20 sent).
    with EmulatorServer() as server:
        server.state.set_faults(latency_ms=300)
        client = client_for(server)
        async with client, client.send_many(iter(numbers(10)), "hi", chunk_size=10):
            await helpers.eventually(lambda: server.state.requests_held > 0)
        await anyio.to_thread.run_sync(helpers.reset_when_quiet, server)
        await anyio.sleep(0.4)
        assert server.state.message_count == 0


async def test_input_is_read_lazily_with_backpressure(emulator: Any) -> None:
    consumed = 0

    def source() -> Iterator[str]:
        nonlocal consumed
        for mobile in numbers(100_000):
            consumed += 1
            yield mobile

    seen = 0
    client = client_for(emulator, max_concurrency=2)
    async with client, client.send_many(source(), "hi", chunk_size=10) as outcomes:
        async for _ in outcomes:
            seen += 1
            await anyio.sleep(0.01)  # a slow consumer
            if seen == 5:
                break
    # Window of 2 chunks in flight, one being filled, one waiting to be taken: never 100k.
    assert consumed <= (seen + 4) * 10


async def test_input_error_is_raised_after_chunks_in_flight_settle(emulator: Any) -> None:
    def source() -> Iterator[str]:
        yield from numbers(25)
        raise OSError("the file went away")

    async with client_for(emulator) as client:
        got: list[SendOutcome] = []
        stream = client.send_many(source(), "hi", chunk_size=10)
        with pytest.raises(OSError, match="went away"):
            async with stream as outcomes:
                async for outcome in outcomes:
                    got.append(outcome)
    assert sum(len(o.mobiles) for o in got) == 20
    assert emulator.state.message_count == 20


class RecordingLedger:
    def __init__(self, skip: set[int]) -> None:
        self.skip = skip
        self.planned: list[PlannedChunk] = []
        self.on_wire_seen: list[int] = []
        self.off_wire_seen: list[int] = []
        self.settled: list[SendOutcome] = []

    async def before_send(self, chunk: PlannedChunk) -> bool:
        self.planned.append(chunk)
        return chunk.index not in self.skip

    async def on_wire(self, chunk: PlannedChunk) -> None:
        self.on_wire_seen.append(chunk.index)

    async def off_wire(self, chunk: PlannedChunk) -> None:
        self.off_wire_seen.append(chunk.index)

    async def settle(self, outcome: SendOutcome) -> None:
        self.settled.append(outcome)


async def test_ledger_hook_sees_every_chunk_and_can_skip(emulator: Any) -> None:
    ledger = RecordingLedger(skip={1})
    mobiles = [*numbers(25), "bad"]
    async with client_for(emulator) as client:
        stream = once_stream(client._gateway, mobiles, "hi", SendOptions(chunk_size=10), ledger)
        outcomes = await collect(stream)
    # "bad" is rejected (chunk 2) as it is read; the last, partial chunk is planned after it.
    assert [c.index for c in ledger.planned] == [0, 1, 3]
    assert sorted(o.chunk for o in outcomes) == [0, 2, 3]
    assert sorted(o.chunk for o in ledger.settled) == [0, 2, 3]
    # Each sent chunk is announced once, before its request: skipped and rejected are not.
    assert sorted(ledger.on_wire_seen) == [0, 3]
    assert stream.stats().skipped == 10
    assert emulator.state.message_count == 15
    # Same input, same chunk size: the same chunks.
    again = RecordingLedger(skip={0, 1, 3})
    async with client_for(emulator) as client:
        await collect(
            once_stream(client._gateway, mobiles, "hi", SendOptions(chunk_size=10), again)
        )
    assert again.planned == ledger.planned


async def test_ledger_hears_each_dispatch_and_each_refusal(emulator: Any) -> None:
    # A journal marks a chunk "in flight" before each request and back to "planned" when
    # the gateway refused it (-1): a crash while it waits to be retried is then harmless.
    emulator.state.configure(rate=20.0, burst=2.0)
    ledger = RecordingLedger(skip=set())
    retry = RetryPolicy(attempts=50, timeout=20, initial_backoff=0.01, max_backoff=0.05)
    async with client_for(
        emulator, retry=retry, initial_concurrency=8, max_concurrency=8
    ) as client:
        # No balance check first: its own requests would meet the limit and teach the
        # client the pace before the send, which would then see no -1 to hear about.
        options = SendOptions(chunk_size=10, check_balance=False)
        stream = once_stream(client._gateway, numbers(120), "hi", options, ledger)
        outcomes = await collect(stream)
    stats = stream.stats()
    assert all(o.status is OutcomeStatus.ACCEPTED for o in outcomes)
    assert stats.rate_limited > 0
    assert len(ledger.on_wire_seen) == stats.requests
    assert len(ledger.off_wire_seen) == stats.rate_limited
    assert sorted(set(ledger.on_wire_seen)) == list(range(12))


async def test_send_all_summarises(emulator: Any) -> None:
    async with client_for(emulator) as client:
        summary = await client.send_all([*numbers(15), "bad"], "hi", chunk_size=10)
    assert (summary.accepted, summary.failed, summary.unknown) == (15, 1, 0)
    assert summary.units == 15 and summary.cost == Decimal("1.50")
    assert not summary.ok and len(summary.failed_outcomes) == 1
    assert summary.stats.requests == 2


async def test_many_single_sends_never_hit_pool_timeout(emulator: Any) -> None:
    emulator.state.set_faults(latency_ms=20)
    async with client_for(emulator, max_concurrency=2, timeout=0.5) as client:
        results = []

        async def one(mobile: str) -> None:
            results.append(await client.send_once([mobile], "hi"))

        async with anyio.create_task_group() as tg:
            for mobile in numbers(60):
                tg.start_soon(one, mobile)
    # 60 x 20 ms through 2 connections is 0.6 s, longer than the 0.5 s timeout: the
    # queue time is not held against the request.
    assert len(results) == 60
    assert emulator.state.message_count == 60


async def test_a_rate_limit_is_learned(emulator: Any) -> None:
    # 40 requests a second is well below what even a slow, shared CI machine serves, so
    # the client always has the speed to run into the limit and has to learn it.
    emulator.state.configure(rate=40.0, burst=4.0)
    mobiles = numbers(1000)
    async with client_for(emulator, retry=RetryPolicy(attempts=20, timeout=20)) as client:
        stream = client.send_many(mobiles, "hi", chunk_size=10)
        outcomes = await collect(stream)
        stats = stream.stats()
        pace = client.stats().pace
    check_against_ledger(emulator, mobiles, outcomes)
    assert all(o.status is OutcomeStatus.ACCEPTED for o in outcomes)
    assert stats.rate_limited >= 1
    # A machine too busy to send 40 a second measures what it could send (8.4 once, in
    # a CI-time survey): the floor only says the pace did not collapse to its minimum.
    assert pace is not None and 5 <= pace <= 80
    # Once learned, the pace keeps -1 answers a small share of requests.
    assert stats.rate_limited <= 0.35 * stats.requests
