"""Report and reply streams: every record fetched reaches the caller, whatever happens.

The gateway hands each record out once, so these tests count: what the emulator queued
must equal what the stream yielded plus what it kept (unread, malformed), exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import client_for, numbers
from stack_support import hx

from aisix_async import (
    AisixClient,
    AuthenticationError,
    ClientClosedError,
    DeliveryReport,
    DeliveryTracker,
    GatewayInternalError,
    MalformedRecord,
    Reply,
    RetryPolicy,
    SendReceipt,
    ValidationError,
)
from aisix_async._core.xml import LazyAnswer

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"interval": 0.01, "max_backoff": 0.05}


# The library's own retry policy, and numbers of their own (138...).
_client = partial(client_for, retry=None)
_numbers = partial(numbers, prefix="138")


async def _send(client: AisixClient, count: int, start: int = 0) -> set[tuple[str, str]]:
    sent: set[tuple[str, str]] = set()
    for offset in range(0, count, 1000):
        numbers = _numbers(min(1000, count - offset), start + offset)
        receipt = await client.send_once(numbers, "your parcel is on its way")
        sent.update((receipt.msgid, n) for n in numbers)
    return sent


async def test_stream_yields_every_report_once_in_whole_batches(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=40)
    batches: list[Sequence[DeliveryReport | MalformedRecord]] = []
    yielded_at_hook: list[int] = []

    async with _client(emulator) as client:
        sent = await _send(client, 250)
        seen: list[DeliveryReport] = []

        async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
            # Called before any record of the batch is yielded.
            yielded_at_hook.append(len(seen))
            batches.append(batch)

        async with client.watch_delivery_reports(
            stop_when_idle=0.05, on_batch=on_batch, **FAST
        ) as stream:
            async for report in stream:
                seen.append(report)
        stats = stream.stats()

    assert {(r.msgid, r.mobile) for r in seen} == sent
    assert len(seen) == 250
    # Batches as the gateway paged them (40 each), handed over whole and in order.
    assert [len(b) for b in batches] == [40] * 6 + [10]
    assert [r for b in batches for r in b] == seen
    assert yielded_at_hook == [40 * i for i in range(7)]
    assert stats.records == stats.yielded == 250
    assert stats.malformed == 0
    assert stream.unread() == []
    assert emulator.state.pending_reports() == 0
    assert repr(stream) == (
        f"<RecordStream getSendState ended: {stats.polls} polls, 250 records, 250 yielded, "
        "0 buffered>"
    )


async def test_leaving_early_keeps_the_unread_records(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=100)
    async with _client(emulator) as client:
        sent = await _send(client, 250)
        taken: list[DeliveryReport] = []
        async with client.watch_delivery_reports(**FAST) as stream:
            async for report in stream:
                taken.append(report)
                if len(taken) == 3:
                    break
            # Let the poller fetch the rest while we are still in the block.
            with anyio.move_on_after(2.0):
                while emulator.state.pending_reports():
                    await anyio.sleep(0.01)
        unread = stream.unread()
    assert len(taken) == 3
    assert {(r.msgid, r.mobile) for r in [*taken, *unread]} == sent
    assert len(taken) + len(unread) == 250
    # Read, not taken: it emptied itself, and a user who logged the count first saved
    # nothing after, losing reports the gateway hands out once (a user's trial).
    assert stream.unread() == unread
    assert stream.unread() == unread


async def test_unread_inside_the_block_takes_nothing_from_the_reader(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    async with _client(emulator) as client:
        sent = await _send(client, 120)
        read: list[DeliveryReport] = []
        async with client.watch_delivery_reports(**FAST, stop_when_idle=0.5) as stream:
            async for report in stream:
                read.append(report)
                if len(read) == 10:
                    with anyio.move_on_after(2.0):
                        while emulator.state.pending_reports():
                            await anyio.sleep(0.01)
                    peeked = stream.unread()
                    assert peeked and stream.unread() == peeked
    # Everything peeked was still yielded, once, and nothing is left over.
    assert len(read) == 120 and {(r.msgid, r.mobile) for r in read} == sent
    assert set(map(id, peeked)) <= set(map(id, read))
    assert stream.unread() == []


@pytest.mark.parametrize("hooked", [True, False], ids=["with-hook", "without-hook"])
async def test_a_bad_item_costs_nothing_else_of_its_batch(
    caplog: pytest.LogCaptureFixture, hooked: bool
) -> None:
    answers = [
        b'<xml name="getSendState" result="1">'
        b'<Item id="1" msgid="100" mobile="13800000001" result="2" return="DELIVRD"/>'
        b'<Item id="2" msgid="100" mobile="13800000002" result="banana" return="DELIVRD"/>'
        b'<Item id="3" msgid="100" mobile="13800000003" result="1" return="UNDELIV"/>'
        b"</xml>",
        b'<xml name="getSendState" result="1">'
        b'<Item id="4" mobile="13800000004" result="2" return="DELIVRD"/>'
        b'<Item id="5" msgid="101" mobile="13800000005" result="2" return="DELIVRD"/>'
        b"</xml>",
    ]
    handler = _Answers(answers)

    batches: list[Sequence[DeliveryReport | MalformedRecord]] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        batches.append(batch)

    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    caplog.set_level(logging.WARNING, logger="aisix_async")
    async with (
        AisixClient("1001@100001", "0" * 32, http_client=http) as client,
        client.watch_delivery_reports(
            stop_when_idle=0.05, on_batch=on_batch if hooked else None, **FAST
        ) as stream,
    ):
        got = [report async for report in stream]
    await http.aclose()

    assert [r.mobile for r in got] == ["13800000001", "13800000003", "13800000005"]
    assert [m.attributes["id"] for m in stream.malformed] == ["2", "4"]
    assert stream.malformed[0].attributes["result"] == "banana"
    assert stream.stats().malformed == 2
    if hooked:
        # The hook saw each batch whole, bad items in their place.
        assert [len(b) for b in batches] == [3, 2]
        assert isinstance(batches[0][1], MalformedRecord)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("banana" in w for w in warnings)
    assert any("13800000004" in w for w in warnings)


async def test_rate_limits_back_off_without_ending_the_stream(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    # One attempt per poll, so every -1 reaches the stream rather than the scheduler.
    async with _client(emulator, retry=RetryPolicy(attempts=1)) as client:
        sent = await _send(client, 200)
        emulator.state.configure(rate=10.0, burst=1.0)
        async with client.watch_delivery_reports(stop_when_idle=0.3, **FAST) as stream:
            got = [report async for report in stream]
    assert {(r.msgid, r.mobile) for r in got} == sent
    stats = stream.stats()
    assert stats.errors > 0
    assert emulator.state.get_counters().rate_limited == stats.errors


async def test_a_failed_poll_of_a_queue_that_held_records_is_retried_soon(emulator: Any) -> None:
    # Every -10 waited the empty queue's interval (5 s) before the next poll, with 50,000
    # reports queued: 743 reports/s instead of 30,000 (a user's trial).
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    async with _client(emulator) as client:
        sent = await _send(client, 1000)
        emulator.state.set_faults(error_after_charge=0.3, fault_actions={"getSendState"})
        got: list[DeliveryReport] = []
        with anyio.fail_after(3):
            async with client.watch_delivery_reports(
                interval=10.0, max_backoff=10.0, stop_when_idle=60
            ) as stream:
                async for report in stream:
                    got.append(report)
                    if len(got) == len(sent):
                        break
        stats = stream.stats()
    assert {(r.msgid, r.mobile) for r in got} == sent
    assert stats.errors > 0


async def test_failures_between_batches_do_not_count_as_idle(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The back-off after a -10 equalled the idle limit, so one unlucky -10 "idled" the
    # follower out, ending it with the -10 while thousands of reports were queued.
    # The trial's settings, scaled down: as long an idle limit as the interval, and 20%
    # of the polls failing.
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    caplog.set_level(logging.WARNING, logger="aisix_async")
    async with _client(emulator) as client:
        sent = await _send(client, 3000)
        emulator.state.set_faults(error_after_charge=0.2, fault_actions={"getSendState"})
        with anyio.fail_after(8):
            async with client.watch_delivery_reports(
                interval=1.0, max_backoff=1.0, stop_when_idle=1.0
            ) as stream:
                got = [report async for report in stream]
        stats = stream.stats()
    assert {(r.msgid, r.mobile) for r in got} == sent
    assert emulator.state.pending_reports() == 0
    assert stats.errors > 0
    assert "GatewayInternalError" in caplog.text


async def test_an_idle_stream_ends_with_the_error_once_polls_failed_for_the_idle_time(
    emulator: Any,
) -> None:
    # Quiet (empty answers) for most of the idle time, then every poll fails: the stream
    # ends with the error once the failures alone lasted the idle time, not at once.
    async with _client(emulator) as client:
        async with client.watch_delivery_reports(interval=0.05, stop_when_idle=0.4) as stream:
            started = anyio.current_time()

            async def break_later() -> None:
                await anyio.sleep(0.3)
                emulator.state.set_faults(error_after_charge=1.0, fault_actions={"getSendState"})

            async with anyio.create_task_group() as group:
                group.start_soon(break_later)
                with pytest.raises(GatewayInternalError):
                    async for _ in stream:
                        pass
        elapsed = anyio.current_time() - started
    assert 0.3 + 0.4 <= elapsed < 3, elapsed
    assert stream.stats().errors >= 2


async def test_one_pass_rides_out_failures_for_stop_when_failing_and_no_longer(
    emulator: Any,
) -> None:
    # stop_when_idle=0 reads the queue once, and ended with the first -10 (the default
    # still does); stop_when_failing gives the pass time to retry it.
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    async with _client(emulator) as client:
        sent = await _send(client, 1000)
        emulator.state.set_faults(error_after_charge=0.2, fault_actions={"getSendState"})
        with anyio.fail_after(10):
            async with client.watch_delivery_reports(
                stop_when_idle=0, stop_when_failing=2, **FAST
            ) as stream:
                got = [report async for report in stream]
        assert {(r.msgid, r.mobile) for r in got} == sent
        assert len(got) == len(sent)
        assert stream.stats().errors > 0
        # Failing on end: it gives up after 2 s of it, with the error.
        await _send(client, 10, start=1000)
        emulator.state.set_faults(error_after_charge=1.0)
        started = anyio.current_time()
        with anyio.fail_after(10):
            async with client.watch_delivery_reports(
                stop_when_idle=0, stop_when_failing=2, **FAST
            ) as stream:
                with pytest.raises(GatewayInternalError):
                    async for _ in stream:
                        pass
        assert 2 <= anyio.current_time() - started < 5
        assert stream.stats().errors >= 2
        # Without it, a pass ends at the first failure.
        async with client.watch_delivery_reports(stop_when_idle=0, **FAST) as stream:
            with pytest.raises(GatewayInternalError):
                async for _ in stream:
                    pass
        assert stream.stats().polls == 1


async def test_a_fatal_account_error_ends_the_stream_after_the_records_fetched(
    emulator: Any,
) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    async with _client(emulator) as client:
        sent = await _send(client, 100)
        got: list[DeliveryReport] = []

        async def consume() -> None:
            async with client.watch_delivery_reports(**FAST) as stream:
                streams.append(stream)
                async for report in stream:
                    got.append(report)
                    if len(got) == 50:
                        # Someone rotates the key behind our back: polls now answer -2.
                        emulator.state.update_account(authkey="F" * 32)

        streams: list[Any] = []
        with pytest.raises(AuthenticationError):
            await consume()
        stream = streams[0]
    # The second batch may or may not have been fetched before the key changed; either
    # way nothing fetched is lost, and the error came out of the `async for`.
    assert len(got) + len(stream.unread()) + emulator.state.pending_reports() == len(sent)
    assert len(got) >= 50


async def test_two_readers_of_one_stream_share_its_records_and_both_end(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=7)
    async with _client(emulator) as client:
        sent = await _send(client, 50)
        got: list[list[DeliveryReport]] = [[], []]
        async with client.watch_delivery_reports(stop_when_idle=0.3, **FAST) as stream:

            async def read(mine: list[DeliveryReport]) -> None:
                async for report in stream:
                    mine.append(report)
                    await anyio.sleep(0)

            with anyio.fail_after(10):  # one of them waited for ever
                async with anyio.create_task_group() as readers:
                    for mine in got:
                        readers.start_soon(read, mine)
    both = [(r.msgid, r.mobile) for mine in got for r in mine]
    assert len(both) == len(set(both)) and set(both) == sent


@pytest.mark.parametrize("when", ["before", "while polling"])
async def test_a_stream_of_a_closed_client_ends_with_client_closed_error(
    emulator: Any, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It was retried as a passing error, a WARNING a poll, for ever: a follower left
    # running held its service's shutdown.
    client = _client(emulator)
    async with client:

        async def close_soon() -> None:
            await anyio.sleep(0.1)  # the queue is empty: the poller sleeps or polls
            await client.aclose()

        if when == "before":
            await client.aclose()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                if when == "while polling":
                    tasks.start_soon(close_soon)
                with pytest.raises(ClientClosedError):
                    async with client.watch_delivery_reports(**FAST) as stream:
                        async for _ in stream:
                            pass
            tracker = DeliveryTracker()
            tracker.track_receipt(
                SendReceipt(
                    cid="1", sid="1", msgid="1", total=1, price=Decimal(1), remain=Decimal(1)
                ),
                ["13800000001"],
            )
            with pytest.raises(ClientClosedError):  # it waited out its timeout
                await tracker.follow(client, timeout=5, **FAST)
    assert "stream goes on" not in caplog.text


async def test_reply_stream(emulator: Any) -> None:
    for i in range(5):
        emulator.state.inject_reply(f"1380000000{i}", f"reply {i}", time_ms=1373883378000 + i)
    async with (
        _client(emulator) as client,
        client.watch_replies(stop_when_idle=0.05, **FAST) as stream,
    ):
        got: list[Reply] = [reply async for reply in stream]
    assert [r.content for r in got] == [f"reply {i}" for i in range(5)]
    assert got[0].time.year == 2013
    assert emulator.state.pending_replies() == 0


@pytest.mark.parametrize(
    ("interval", "says"),
    [(0, "above 0"), (-1, "above 0"), (float("nan"), "above 0"), (float("inf"), "finite")],
)
async def test_an_interval_that_would_poll_without_pause_is_refused(
    emulator: Any, interval: float, says: str
) -> None:
    # interval=0 polled an empty queue hundreds of times a second (a user's trial).
    async with _client(emulator) as client:
        with pytest.raises(ValidationError, match=rf"interval .* must be {says}"):
            client.watch_delivery_reports(interval=interval)
        with pytest.raises(ValidationError, match=rf"interval .* must be {says}"):
            client.watch_replies(interval=interval)
    assert emulator.state.get_counters().requests.get("getSendState", 0) == 0


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"max_backoff": float("nan")}, "max_backoff .* must be above 0"),
        ({"max_backoff": 0}, "max_backoff .* must be above 0"),
        ({"max_buffered": -5}, "max_buffered .* must be at least 1"),
        ({"max_buffered": 1.5}, "max_buffered .* must be an integer"),
        ({"close_grace": -1}, "close_grace must be 0 or more"),
        ({"close_grace": float("nan")}, "close_grace must be 0 or more"),
        ({"close_grace": "30"}, "close_grace must be a number"),
        # NaN never ended the stream, inf neither; a string failed with a TypeError (a
        # user's trial).
        ({"stop_when_idle": float("nan")}, "stop_when_idle must be 0 or more"),
        ({"stop_when_idle": float("inf")}, "stop_when_idle must be 0 or more"),
        ({"stop_when_idle": -1}, "stop_when_idle must be 0 or more"),
        ({"stop_when_idle": "5"}, "stop_when_idle must be a number"),
        ({"stop_when_idle": True}, "stop_when_idle must be a number"),
        ({"stop_when_failing": float("nan")}, "stop_when_failing must be 0 or more"),
        ({"stop_when_failing": -1}, "stop_when_failing must be 0 or more"),
        ({"stop_when_failing": "5"}, "stop_when_failing must be a number"),
    ],
)
async def test_every_poll_option_is_checked(
    emulator: Any, option: dict[str, Any], says: str
) -> None:
    # Only interval and stop_when_idle were: the others ran with whatever they were given
    # (a user's trial).
    async with _client(emulator) as client:
        with pytest.raises(ValidationError, match=says):
            client.watch_delivery_reports(**option)
        with pytest.raises(ValidationError, match=says):
            client.watch_replies(**option)
    assert emulator.state.get_counters().requests.get("getSendState", 0) == 0


async def test_closing_lets_the_poll_on_the_wire_finish_into_unread(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0)
    async with _client(emulator) as client:
        sent = await _send(client, 30)
        emulator.state.set_faults(latency_ms=150, fault_actions={"getSendState"})
        stream = client.watch_delivery_reports(**FAST)
        # Cancelled from outside while the first poll waits for its answer: the hardest
        # way out, since everything inside the scope is cancelled with it.
        with anyio.move_on_after(0.05):
            async with stream:
                await anyio.sleep(5)
        # The gateway handed the records out during that poll: they must not be lost.
        unread = stream.unread()
    assert {(r.msgid, r.mobile) for r in unread} == sent
    assert emulator.state.pending_reports() == 0


async def test_an_error_in_the_block_comes_out_as_itself(emulator: Any) -> None:
    async with _client(emulator) as client:
        with pytest.raises(KeyError):
            async with client.watch_delivery_reports(**FAST):
                raise KeyError("mine")


async def test_a_failing_batch_hook_ends_the_stream_instead_of_polling_on(emulator: Any) -> None:
    # A journal that cannot record a batch must stop the stream: polling on would hand
    # later batches to the reader unrecorded. The write runs while the next poll is on
    # the wire (ingestion keeps the gateway's pace), so that one poll may still fetch a
    # batch, and no more: the gateway will not send it again, so it reaches the caller
    # too, before the error.
    emulator.state.configure(report_delay=0.0, reports_per_call=10)
    calls: list[int] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        calls.append(len(batch))
        raise OSError("disk full")

    async with _client(emulator) as client:
        sent = await _send(client, 30)
        seen: list[DeliveryReport] = []
        with pytest.raises(OSError, match="disk full"):
            async with client.watch_delivery_reports(on_batch=on_batch, **FAST) as stream:
                async for report in stream:
                    seen.append(report)
        unread = stream.unread()
    # No hook runs after the failed one.
    assert calls == [10]
    # The batch fetched when the hook failed, and at most one fetched meanwhile, reach
    # the caller before the error, each once; nothing fetched is lost.
    got = [*seen, *unread]
    assert len(got) in (10, 20)
    assert len({(r.msgid, r.mobile) for r in got}) == len(got)
    assert {(r.msgid, r.mobile) for r in got} <= sent
    assert stream.stats().records == len(got)
    assert emulator.state.pending_reports() == 30 - len(got)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.001)


class _Answers:
    """A mock gateway's getSendState: ``answers`` in turn, then an empty queue; counts
    the polls it served (a MockTransport handler)."""

    def __init__(self, answers: list[bytes]) -> None:
        self._answers = list(answers)
        self.served = 0

    def __call__(self, request: hx.Request) -> hx.Response:
        self.served += 1
        body = self._answers.pop(0) if self._answers else b'<xml name="getSendState" result="1"/>'
        return hx.Response(200, content=body)


async def test_a_slow_batch_hook_does_not_hold_up_the_next_poll(emulator: Any) -> None:
    # The first hook returns only once the next batch has been fetched: with the write
    # awaited before the next poll, this would never happen (fail_after turns that into
    # a failure; nothing here is timed).
    emulator.state.configure(report_delay=0.0, reports_per_call=40)
    batches: list[Sequence[DeliveryReport | MalformedRecord]] = []
    yielded_at_hook: list[int] = []
    running = 0
    most_running = 0

    async with _client(emulator) as client:
        sent = await _send(client, 100)
        seen: list[DeliveryReport] = []

        async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
            nonlocal running, most_running
            running += 1
            most_running = max(most_running, running)
            yielded_at_hook.append(len(seen))
            if not batches:
                # Until the gateway has handed out the second batch.
                await _until(lambda: emulator.state.pending_reports() <= 20)
            batches.append(batch)
            running -= 1

        with anyio.fail_after(10):
            async with client.watch_delivery_reports(
                stop_when_idle=0.05, on_batch=on_batch, **FAST
            ) as stream:
                async for report in stream:
                    seen.append(report)

    assert [len(b) for b in batches] == [40, 40, 20]
    # Hooks one at a time, in fetch order; each batch yielded only after its hook.
    assert most_running == 1
    assert [r for b in batches for r in b] == seen
    assert yielded_at_hook == [0, 40, 80]
    assert {(r.msgid, r.mobile) for r in seen} == sent
    assert stream.unread() == []


async def test_batches_keep_their_order_whatever_their_hooks_take() -> None:
    # Five pages of three; hooks of even batches wait until the next batch is fetched,
    # the others return at once: hooks and reader still see the gateway's order.
    pages = [[str(3 * p + i) for i in range(3)] for p in range(5)]
    answers = [
        b'<xml name="getSendState" result="1">'
        + b"".join(
            f'<Item id="{n}" msgid="9" mobile="138000000{int(n):02d}" result="2"'
            f' return="DELIVRD"/>'.encode()
            for n in page
        )
        + b"</xml>"
        for page in pages
    ]

    handler = _Answers(answers)

    hooked: list[list[str]] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        ids = [r.id for r in batch if isinstance(r, DeliveryReport)]
        if len(hooked) % 2 == 0 and int(ids[-1]) < 14:
            answered = len(hooked) + 2
            await _until(lambda: handler.served >= answered)
        hooked.append(ids)

    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    with anyio.fail_after(10):
        async with (
            AisixClient("1001@100001", "0" * 32, http_client=http) as client,
            client.watch_delivery_reports(stop_when_idle=0.05, on_batch=on_batch, **FAST) as stream,
        ):
            got = [report.id async for report in stream]
    await http.aclose()
    assert hooked == pages
    assert got == [n for page in pages for n in page]


async def test_a_batch_fetched_while_a_hook_fails_reaches_the_caller_before_the_error(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The first hook fails only once the next batch is fetched: that batch, which no hook
    # saw, is yielded after the first (fetch order), said in the log, and no third is
    # fetched.
    emulator.state.configure(report_delay=0.0, reports_per_call=10)
    calls: list[int] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        calls.append(len(batch))
        await _until(lambda: emulator.state.pending_reports() <= 20)
        raise OSError("disk full")

    caplog.set_level(logging.ERROR, logger="aisix_async")
    async with _client(emulator) as client:
        sent = await _send(client, 40)
        seen: list[DeliveryReport] = []
        with anyio.fail_after(10), pytest.raises(OSError, match="disk full"):
            async with client.watch_delivery_reports(on_batch=on_batch, **FAST) as stream:
                async for report in stream:
                    seen.append(report)
    assert calls == [10]
    assert len(seen) == 20
    assert len({(r.msgid, r.mobile) for r in seen}) == 20
    assert {(r.msgid, r.mobile) for r in seen} <= sent
    assert [int(r.id) for r in seen] == sorted(int(r.id) for r in seen)
    assert stream.unread() == []
    assert emulator.state.pending_reports() == 20
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("10 records" in e and "unrecorded" in e for e in errors)


@pytest.mark.parametrize("hooked", [False, True])
async def test_a_full_buffer_pauses_the_poller_until_the_reader_catches_up(
    emulator: Any, hooked: bool
) -> None:
    # max_buffered far below a batch: the poller waits for room after every batch, and
    # every record read wakes it only while it waits (never lost, never stuck).
    emulator.state.configure(report_delay=0.0, reports_per_call=40)
    buffered: list[int] = []
    streams: list[Any] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        buffered.append(len(streams[0]._buffer))

    async with _client(emulator) as client:
        sent = await _send(client, 200)
        got: list[DeliveryReport] = []
        with anyio.fail_after(10):
            async with client.watch_delivery_reports(
                stop_when_idle=0.05,
                max_buffered=10,
                on_batch=on_batch if hooked else None,
                **FAST,
            ) as stream:
                streams.append(stream)
                async for report in stream:
                    got.append(report)
                    await anyio.sleep(0)
    assert len(got) == 200 and {(r.msgid, r.mobile) for r in got} == sent
    # A poll starts only once the buffer has room (below max_buffered); by the time its
    # batch's hook runs, the batch before it (40) may have been released on top.
    assert all(n < 10 + 40 for n in buffered)


# -- a poll's items are read after the next poll went out (issue 18) ---------------------


def _page(first: int, count: int, *, garbage: bytes = b"") -> bytes:
    """A getSendState answer long enough for its items to be read after its head."""
    items = [
        f'<Item id="{n}" msgid="9" mobile="138{n:08d}" result="2" return="DELIVRD"/>'.encode()
        for n in range(first, first + count)
    ]
    # Garbage, if any, well past the head (the root and the first kilobyte of Items).
    items.insert(count - 5, garbage)
    return b'<xml name="getSendState" result="1">' + b"".join(items) + b"</xml>"


@pytest.mark.parametrize("traced", [True, False], ids=["stack-reports-written", "mock"])
async def test_the_next_poll_is_sent_before_the_items_of_the_last_are_read(
    monkeypatch: pytest.MonkeyPatch, traced: bool
) -> None:
    # Ordering, not timing: each request is logged when the transport takes it, and each
    # answer's items when they are read. Batch k's items must be read after poll k + 1
    # went out. With "traced", the transport says the request is written as httpcore
    # does (the "trace" extension); without, as a mock transport, it says nothing.
    events: list[tuple[str, int]] = []
    pages = [_page(20 * p, 20) for p in range(4)]

    async def handler(request: hx.Request) -> hx.Response:
        # A real socket's send lets other tasks run before it writes (anyio checkpoints
        # there): a task waiting to read items would get its turn before the request.
        await anyio.lowlevel.checkpoint()
        events.append(("poll", len([e for e in events if e[0] == "poll"]) + 1))
        if traced:
            await request.extensions["trace"]("http11.receive_response_headers.started", {})
        body = pages.pop(0) if pages else b'<xml name="getSendState" result="1"/>'
        return hx.Response(200, content=body)

    read_items = LazyAnswer.read_items

    def logged(answer: LazyAnswer) -> tuple[dict[str, str], ...]:
        items = read_items(answer)
        events.append(("read", int(items[0]["id"]) // 20 + 1))
        return items

    monkeypatch.setattr(LazyAnswer, "read_items", logged)
    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    with anyio.fail_after(10):
        async with (
            AisixClient("1001@100001", "0" * 32, http_client=http) as client,
            client.watch_delivery_reports(stop_when_idle=0.05, **FAST) as stream,
        ):
            got = [int(report.id) async for report in stream]
    await http.aclose()
    assert got == list(range(80))
    for batch in range(1, 5):
        assert events.index(("poll", batch + 1)) < events.index(("read", batch)), events


@pytest.mark.parametrize(
    "garbage",
    [
        b"<Item id=",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
        b"&e;",
        # Well-formed, but not an Item: the batch must not be read as the Items around it.
        b'<item id="x" msgid="9" mobile="13800000000" result="2" return="DELIVRD"/>',
    ],
    ids=["malformed", "dtd", "entity", "not-an-item"],
)
@pytest.mark.parametrize("hooked", [True, False], ids=["with-hook", "without-hook"])
async def test_items_garbled_after_a_good_head_are_a_failed_poll_logged_and_counted(
    caplog: pytest.LogCaptureFixture, garbage: bytes, hooked: bool
) -> None:
    # The second answer's result code reads well and the next poll goes out; then its
    # items turn out garbled. The records read whole before the fault (35 of its 40) are
    # kept, those past it are lost (as for any garbled answer), the loss is logged at
    # ERROR and counted, and the stream goes on, after a backoff, with the records that
    # follow. A stray child (not an Item) says the Items around it are not what they
    # seem: none of that answer's records is kept.
    handler = _Answers([_page(0, 40), _page(40, 40, garbage=garbage), _page(80, 40)])

    hooked_ids: list[list[str]] = []

    async def on_batch(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
        hooked_ids.append([r.id for r in batch if isinstance(r, DeliveryReport)])

    caplog.set_level(logging.WARNING, logger="aisix_async")
    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    with anyio.fail_after(10):
        async with (
            AisixClient("1001@100001", "0" * 32, http_client=http) as client,
            client.watch_delivery_reports(
                stop_when_idle=0.2, on_batch=on_batch if hooked else None, **FAST
            ) as stream,
        ):
            got = [int(report.id) async for report in stream]
    await http.aclose()
    kept = [] if garbage.startswith(b"<item") else list(range(40, 75))
    assert got == [*range(40), *kept, *range(80, 120)]
    stats = stream.stats()
    assert (stats.errors, stats.malformed) == (1, 0)
    assert stats.records == stats.yielded == 80 + len(kept)
    if hooked:
        assert [len(ids) for ids in hooked_ids] == ([40, 35, 40] if kept else [40, 40])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "garbled after its result code" in errors[0] and "lost" in errors[0]
    assert ("the 35 records read whole before it are kept" in errors[0]) == bool(kept)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("garbled" in w and "polling again in" in w for w in warnings)
    assert stream.unread() == []


async def test_an_answer_whose_children_are_not_items_is_a_poll_whose_records_are_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Read as an empty batch, its reports vanished without a word (handed out once).
    # It is a failed poll: said at ERROR, naming what was found, counted, and the
    # stream goes on with the batch after it.
    stray = (
        b'<xml name="getSendState" result="1">'
        b'<Report id="1" msgid="9" mobile="13800000001" result="2" return="DELIVRD"/></xml>'
    )
    handler = _Answers([_page(0, 40), stray, _page(80, 40)])
    caplog.set_level(logging.WARNING, logger="aisix_async")
    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    with anyio.fail_after(10):
        async with (
            AisixClient("1001@100001", "0" * 32, http_client=http) as client,
            client.watch_delivery_reports(stop_when_idle=0.2, **FAST) as stream,
        ):
            got = [int(report.id) async for report in stream]
    await http.aclose()
    assert got == [*range(40), *range(80, 120)]
    assert stream.stats().errors == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "the first <Report>" in errors[0] and "are lost" in errors[0]


async def test_a_garbled_batch_taken_by_unread_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The reader leaves before the garbled batch's task read it: unread() reads it, and
    # its loss is said and counted all the same; what it held whole before the fault
    # (35 records) and the good batch after it are returned.
    handler = _Answers([_page(0, 40), _page(40, 40, garbage=b"<Item id="), _page(80, 40)])

    caplog.set_level(logging.ERROR, logger="aisix_async")
    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    with anyio.fail_after(10):
        async with (
            AisixClient("1001@100001", "0" * 32, http_client=http) as client,
            client.watch_delivery_reports(max_buffered=1, **FAST) as stream,
        ):
            async for report in stream:
                assert report.id == "0"
                # The poller holds (at most) the next batches while the reader is away.
                await _until(lambda: handler.served >= 2)
                break
    await http.aclose()
    rest = [int(r.id) for r in stream.unread()]
    assert rest[:74] == list(range(1, 75))
    assert all(n >= 80 for n in rest[74:])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "garbled" in errors[0]
    assert stream.stats().errors == 1


async def test_only_queues_are_polled_with_their_items_left_for_later() -> None:
    # A send's answer is read whole before its outcome is known: never through poll().
    async with AisixClient("1001@100001", "0" * 32) as client:
        gateway = client._gateway
        with pytest.raises(ValueError, match="read whole"):
            await gateway.poll("sendOnce")


async def test_a_batch_write_that_hangs_at_close_gives_up_after_the_grace(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch's write is shielded from the cancellation that closes the stream (a
    # campaign must journal what it fetched), but not for ever: twice close_grace after
    # the close, its records go to unread() unrecorded, said at ERROR.
    emulator.state.configure(report_delay=0.0, reports_per_call=40)
    async with _client(emulator) as client:
        await _send(client, 40)

        async def hang(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
            await anyio.sleep_forever()

        started = anyio.current_time()
        with anyio.move_on_after(0.5):
            async with client.watch_delivery_reports(
                on_batch=hang, close_grace=0.2, **FAST
            ) as stream:
                async for _ in stream:
                    pass
        took = anyio.current_time() - started
    assert 0.5 <= took < 2.0
    assert len(stream.unread()) == 40
    assert "a batch was not recorded within 0.4 s of the close" in caplog.text


@pytest.mark.parametrize("how", ["stream", "one-read"])
async def test_a_short_batch_cut_short_keeps_the_reports_read_whole(
    emulator: Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # The emulator's truncated_xml fault sends half the answer. A batch of 6 reports fits
    # in the parser's first kilobyte: the stream kept none of those read whole (only a
    # batch past a kilobyte kept its head), and one get_delivery_reports() raised.
    emulator.state.configure(report_delay=0.0, reports_per_call=40)
    caplog.set_level(logging.ERROR, logger="aisix_async")
    async with _client(emulator) as client:
        sent = await _send(client, 6)
        assert emulator.state.pending_reports() == 6
        emulator.state.set_faults(truncated_xml=1.0)
        if how == "stream":
            async with client.watch_delivery_reports(stop_when_idle=0.05, **FAST) as stream:
                got = []
                async for report in stream:
                    got.append(report)
                    emulator.state.set_faults(truncated_xml=0.0)
        else:
            got = [r for r in await client.get_delivery_reports() if isinstance(r, DeliveryReport)]
    # Half of 6 Items, each read at its start tag whole: 2 or 3 of them, each one sent.
    assert 2 <= len(got) < 6
    assert {(r.msgid, r.mobile) for r in got} <= sent
    assert emulator.state.pending_reports() == 0
    errors = [r.getMessage() for r in caplog.records]
    assert any(f"{len(got)} records read whole" in e for e in errors), errors
