"""Single calls inside a web service: deadlines, and the truth about cancelled sends.

Every test checks the client's account against the emulator's ledger (the gateway's
ground truth). The emulator holds each send for ``latency_ms`` before it records and
answers it, and goes on with it when the client hangs up (as a real gateway does), so a
cancellation landing in that window lands while the request is on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import anyio
import helpers
import pytest
from helpers import FAST

from aisix_async import (
    AisixClient,
    AisixError,
    DeadlineExceededError,
    RateLimitedError,
    RetryPolicy,
    TransportError,
    UnknownOutcome,
    ValidationError,
    mobiles_hash,
)

pytestmark = pytest.mark.anyio
NUMBER = "18100002707"
# The shared client, on channel group 1 (the emulator's group that sendOnce may use).
client_for = partial(helpers.client_for, cgid=1)


async def ledger_numbers(emulator: Any, expect: int, wait: float = 3.0) -> list[str]:
    """The numbers the gateway accepted, once ``expect`` of them are in (or ``wait`` s)."""
    with anyio.move_on_after(wait):
        while emulator.state.message_count < expect:
            await anyio.sleep(0.02)
    # A little longer, so a message recorded twice would show.
    await anyio.sleep(0.1)
    return [record.mobile for record in emulator.state.messages()]


def unknown_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "aisix_async" and getattr(r, "outcome", None) == "unknown"
    ]


def check_unknown_log(caplog: pytest.LogCaptureFixture, emulator: Any, reason: str) -> None:
    records = unknown_records(caplog)
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.__dict__["action"] == "sendOnce"
    assert record.__dict__["mobiles"] == 1
    assert record.__dict__["mobiles_hash"] == mobiles_hash([NUMBER])
    assert record.__dict__["reason"] == reason
    text = record.getMessage()
    assert NUMBER not in text and emulator.authkey not in text
    assert "outcome unknown" in text


async def test_cancel_scope_while_on_the_wire_is_an_unknown_outcome(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # trio's own cancellation on the trio run, anyio's on asyncio: no deadline, so the
    # SDK cannot wait; it must say the send may have gone out.
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.send_once, [NUMBER], "code 1234")
                await anyio.sleep(0.2)
                scope.cancel()
        assert scope.cancelled_caught
        stats = client.stats()
    assert stats.outcome_unknown == 1
    assert stats.calls[("sendOnce", "unknown")] == 1
    # The attempt's result is named as the README names it, on asyncio and on trio
    # (it read "CancelledError", which a dashboard keyed on "cancelled" missed).
    assert dict(stats.results) == {("sendOnce", "cancelled"): 1}
    # The answer came before the client closed (it waits for it): accepted, and so
    # settled with its receipt.
    assert [(o.action, o.reason, o.mobiles, o.error) for o in seen] == [
        ("sendOnce", "cancelled", (NUMBER,), None),
        ("sendOnce", "answered", (NUMBER,), None),
    ]
    assert NUMBER not in repr(seen[0])
    check_unknown_log(caplog, emulator, "cancelled")
    # The gateway did act on it: exactly what "unknown" warned of.
    assert await ledger_numbers(emulator, 1) == [NUMBER]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["asyncio.timeout", "task.cancel"])
async def test_asyncio_cancellation_while_on_the_wire_is_an_unknown_outcome(
    emulator: Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        await _cancelled_natively(how, lambda: client.send_once([NUMBER], "code 1234"))
        assert client.stats().outcome_unknown == 1
    assert [o.reason for o in seen] == ["cancelled", "answered"]
    check_unknown_log(caplog, emulator, "cancelled")
    assert await ledger_numbers(emulator, 1) == [NUMBER]


async def _cancelled_natively(how: str, call: Any) -> None:
    """Run ``call()`` under asyncio's own cancellation, 0.2 s in, as ``how`` makes it
    (or, "cancel scope", anyio's, with no deadline: trio's own on trio)."""
    if how == "cancel scope":
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.2)
                scope.cancel()
        assert scope.cancelled_caught
    elif how == "asyncio.timeout":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await call()
    elif how == "wait_for":
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call(), 0.2)
    else:
        task = asyncio.ensure_future(call())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["asyncio.timeout", "wait_for", "task.cancel"])
async def test_asyncio_cancellation_of_a_call_with_a_deadline_waits_for_the_answer(
    emulator: Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # No anyio shield holds off asyncio's own cancellation: it cut the exchange off with
    # its answer unread, so the scheduler heard nothing. Handlers giving up under
    # asyncio.wait_for freed their slots at once and never learned of the -1 answers
    # they caused: 180 requests in 16 s against 3/s, 129 of them -1 (a user's trial).
    # A call with a deadline now waits for its answer, as under anyio, then is cancelled.
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    emulator.state.configure(rate=0.01, burst=1.0)  # one token: the second send is -1
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        await client.send_once(["18100000001"], "first")

        await _cancelled_natively(how, lambda: client.send_once([NUMBER], "code", deadline=10))
        stats = client.stats()
        # The -1 was read and learned from (the pace is cut at once), and not retried:
        # the cancellation went on in its place. It proves nothing was sent, so the call
        # was merely cancelled, not an unknown outcome.
        assert stats.results[("sendOnce", "-1")] == 1
        assert stats.rate_limited == 1 and stats.pace is not None
        assert stats.outcome_unknown == 0 and seen == []
        assert stats.in_flight == 0
        await anyio.sleep(0.3)
        assert client.stats().requests == 2
    assert unknown_records(caplog) == []
    assert await ledger_numbers(emulator, 1) == ["18100000001"]


def _slow_sends_cancelled_by(
    how: str, backend: str, emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Sends answered after 500 ms, WARNING records kept; asyncio's own ways of
    cancelling are skipped on trio."""
    if backend == "trio" and how != "cancel scope":
        pytest.skip("asyncio's own cancellation")
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])


async def _answers_in(client: AisixClient) -> None:
    """Until no request of ``client`` is on the wire (5 s at most)."""
    with anyio.fail_after(5):
        while client.stats().in_flight:
            await anyio.sleep(0.02)


@pytest.mark.parametrize("how", ["asyncio.timeout", "wait_for", "task.cancel", "cancel scope"])
async def test_a_cancellation_of_a_call_without_a_deadline_is_not_held_but_heard(
    emulator: Any, caplog: pytest.LogCaptureFixture, anyio_backend: str, how: str
) -> None:
    # With no deadline the SDK does not hold a cancellation up: the caller goes on at
    # once, as before, the send is said to be unknown, as before; but the request keeps
    # its slot until its answer comes, and the scheduler learns from it (the same trial:
    # freed at once and unheard, the slots let requests out as fast as callers gave up).
    # On trio, where a task cannot outlive its nursery, the exchange was cut off with its
    # caller ("cancel scope"): handlers cancelled that way left the pace at 0.54/s
    # against 3 for 20 s (a user's trial). It runs in a system task there.
    _slow_sends_cancelled_by(how, anyio_backend, emulator, caplog)
    emulator.state.configure(rate=0.01, burst=1.0)  # one token: the second send is -1
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        await client.send_once(["18100000001"], "first")
        await _cancelled_natively(how, lambda: client.send_once([NUMBER], "code"))
        stats = client.stats()
        assert stats.in_flight == 1 and stats.rate_limited == 0
        assert stats.outcome_unknown == 1 and [o.reason for o in seen] == ["cancelled"]
        check_unknown_log(caplog, emulator, "cancelled")
        await _answers_in(client)
        stats = client.stats()
        assert stats.rate_limited == 1 and stats.pace is not None
        await anyio.sleep(0.3)
        assert client.stats().requests == 2
    assert await ledger_numbers(emulator, 1) == ["18100000001"]


@pytest.mark.parametrize("how", ["asyncio.timeout", "wait_for", "task.cancel", "cancel scope"])
async def test_an_unknown_send_without_a_deadline_is_settled_when_its_answer_accepts_it(
    emulator: Any, caplog: pytest.LogCaptureFixture, anyio_backend: str, how: str
) -> None:
    # Its caller went on at once and the send was reported unknown, as it had to be; the
    # answer that came later accepted it, and the SDK read it (the scheduler learned its
    # round trip) but kept it to itself: the caller's record said "may have been sent"
    # where the SDK had the msgid its delivery reports carry. It is told now, as for a
    # call with a deadline: on_unknown a second time, reason "answered", with receipts.
    _slow_sends_cancelled_by(how, anyio_backend, emulator, caplog)
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        await _cancelled_natively(how, lambda: client.send_once([NUMBER], "code"))
        assert [o.reason for o in seen] == ["cancelled"]
        await _answers_in(client)
        stats = client.stats()
        # Counted as the call ended for its caller.
        assert stats.calls[("sendOnce", "unknown")] == 1 and stats.outcome_unknown == 1
    check_unknown_log(caplog, emulator, "cancelled")
    first, told = seen
    assert first.mobiles_hash == told.mobiles_hash == mobiles_hash([NUMBER])
    assert (told.reason, told.error, told.mobiles) == ("answered", None, (NUMBER,))
    [receipt] = told.receipts
    assert await ledger_numbers(emulator, 1) == [NUMBER]
    assert receipt.msgid in [record.msgid for record in emulator.state.messages()]
    [record] = [r for r in caplog.records if getattr(r, "reason", None) == "answered"]
    assert record.levelno == logging.WARNING
    assert getattr(record, "outcome", None) == "accepted"
    assert getattr(record, "msgid", None) == receipt.msgid
    assert "settled" in record.getMessage() and NUMBER not in record.getMessage()
    assert emulator.authkey not in record.getMessage()


async def test_a_client_closed_with_an_answer_still_to_come_ends_cleanly(emulator: Any) -> None:
    # The exchange a cancelled caller left behind (a system task on trio, a task on
    # asyncio) ends with the client: its slot is given back, and nothing is raised in
    # the run that closed it.
    emulator.state.set_faults(latency_ms=2000, fault_actions=["sendOnce"])
    async with client_for(emulator) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.send_once, [NUMBER], "code")
                await anyio.sleep(0.2)
                scope.cancel()
        assert client.stats().in_flight == 1
    with anyio.fail_after(5):
        while client.stats().in_flight:
            await anyio.sleep(0.02)
    assert client.stats().outcome_unknown == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["asyncio.timeout", "task.cancel"])
async def test_asyncio_cancellation_of_a_call_with_a_deadline_after_an_accepted_answer(
    emulator: Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # Accepted while its caller was being cancelled: the answer is read (the scheduler
    # learns its round trip), the caller gets the cancellation it asked for, and the
    # send, which it never hears of, is told to on_unknown with its receipt: it was sent.
    # It was reported as unknown, where the SDK had the msgid (a user's trial).
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, on_unknown=seen.append) as client:
        await _cancelled_natively(how, lambda: client.send_once([NUMBER], "code", deadline=10))
        stats = client.stats()
        assert stats.results[("sendOnce", "1")] == 1
        assert stats.outcome_unknown == 0 and stats.in_flight == 0
        # The call's outcome agrees with its answer's.
        assert stats.calls[("sendOnce", "accepted")] == 1
        assert ("sendOnce", "unknown") not in stats.calls
    assert unknown_records(caplog) == []
    [told] = seen
    assert (told.reason, told.error, told.mobiles, told.mobile_count) == (
        "answered",
        None,
        (NUMBER,),
        1,
    )
    [receipt] = told.receipts
    sent = await ledger_numbers(emulator, 1)
    assert sent == [NUMBER]
    assert receipt.msgid in [record.msgid for record in emulator.state.messages()]
    [record] = [r for r in caplog.records if getattr(r, "reason", None) == "answered"]
    assert record.levelno == logging.WARNING
    assert getattr(record, "outcome", None) == "accepted"
    assert getattr(record, "msgid", None) == receipt.msgid
    assert f"msgid {receipt.msgid}" in record.getMessage()
    assert NUMBER not in record.getMessage()


async def test_fail_after_lets_a_written_send_finish_with_its_receipt(emulator: Any) -> None:
    # The enclosing deadline passes while the request is on the wire: the exchange is
    # shielded and the caller gets the receipt, not a TimeoutError for a sent message.
    emulator.state.set_faults(latency_ms=400, fault_actions=["sendOnce"])
    async with client_for(emulator) as client:
        started = time.monotonic()
        with anyio.fail_after(0.15):
            receipt = await client.send_once([NUMBER], "code 1234")
        assert time.monotonic() - started >= 0.35
        stats = client.stats()
    assert stats.outcome_unknown == 0
    assert stats.calls[("sendOnce", "accepted")] == 1
    assert [r.msgid for r in emulator.state.messages()] == [receipt.msgid]


async def test_fail_after_past_the_clients_timeout_is_an_unknown_error(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Shielded, the exchange still ends at the client's own timeout: a TransportError
    # with outcome_unknown (never a bare TimeoutError), logged and counted.
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(latency_ms=900, fault_actions=["sendOnce"])
    seen: list[UnknownOutcome] = []
    async with client_for(emulator, timeout=0.3, on_unknown=seen.append) as client:
        with pytest.raises(TransportError) as caught, anyio.fail_after(0.1):
            await client.send_once([NUMBER], "code 1234")
        assert caught.value.outcome_unknown and caught.value.request_sent
        assert client.stats().outcome_unknown == 1
    assert [(o.reason, o.error) for o in seen] == [("error", caught.value)]
    check_unknown_log(caplog, emulator, "error")
    assert await ledger_numbers(emulator, 1) == [NUMBER]


async def test_deadline_while_queued_is_certainly_not_sent(emulator: Any) -> None:
    # One slot: the second caller queues behind a slow send and gives up in the queue.
    emulator.state.set_faults(latency_ms=400, fault_actions=["sendOnce"])
    first = "18600007370"
    async with client_for(emulator, max_concurrency=1) as client:
        results: dict[str, Any] = {}

        async def send(number: str, **options: Any) -> None:
            try:
                results[number] = await client.send_once([number], "code", **options)
            except Exception as exc:
                results[number] = exc

        async def inherited() -> None:
            # The same through an enclosing scope: a typed error, not TimeoutError.
            try:
                with anyio.fail_after(0.1):
                    await client.send_once(["18700000001"], "code")
            except Exception as exc:
                results["inherited"] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, first)
            await anyio.sleep(0.05)
            tg.start_soon(lambda: send(NUMBER, deadline=0.1))
            tg.start_soon(inherited)
        stats = client.stats()
    assert not isinstance(results[first], Exception)
    for key in (NUMBER, "inherited"):
        error = results[key]
        assert isinstance(error, DeadlineExceededError), error
        assert not error.outcome_unknown and error.action == "sendOnce"
    assert results[NUMBER].deadline == 0.1
    assert results["inherited"].deadline is None
    assert stats.calls[("sendOnce", "deadline")] == 2
    assert await ledger_numbers(emulator, 1) == [first]


async def test_a_call_whose_turn_comes_after_its_deadline_fails_as_it_arrives(
    emulator: Any,
) -> None:
    # Three replicas under an overload that lasted: every handler with a 5 s deadline
    # waited it out, then failed (a user's trial). At 4 requests/s (max_rate), handlers
    # with 1.1 s deadlines arriving together: those with more ahead of them than 1.1 s
    # holds at 1.5 x 4/s (six) fail at once, nothing sent; those ahead wait their turns.
    async with client_for(emulator, max_rate=4.0) as client:
        outcomes: dict[int, tuple[float, Any]] = {}

        async def handler(index: int) -> None:
            began = time.monotonic()
            try:
                result: Any = await client.send_once([f"1390000{index:04d}"], "code", deadline=1.1)
            except DeadlineExceededError as exc:
                result = exc
            outcomes[index] = (time.monotonic() - began, result)

        async with anyio.create_task_group() as tg:
            for index in range(16):
                tg.start_soon(handler, index)
                await anyio.wait_all_tasks_blocked()
        stats = client.stats()
    refused = {i: took for i, (took, r) in outcomes.items() if isinstance(r, Exception)}
    at_once = sorted(i for i, took in refused.items() if outcomes[i][1].turn_in is not None)
    # The first went at once; six queued behind it; the seventh may make it (its turn is
    # 1 s away at 6/s); the eighth and after cannot.
    assert at_once == list(range(8, 16)), outcomes
    assert all(refused[i] < 0.2 for i in at_once)
    sent = [i for i, (_, r) in outcomes.items() if not isinstance(r, Exception)]
    assert len(sent) >= 4  # 0 s, 0.25, 0.5, 0.75 (1.0 and after race the deadline)
    assert stats.calls[("sendOnce", "deadline")] == len(refused)
    assert sorted(await ledger_numbers(emulator, len(sent))) == sorted(
        f"1390000{i:04d}" for i in sent
    )


async def test_deadline_bounds_the_retries_and_names_the_last_error(emulator: Any) -> None:
    emulator.state.configure(ip_bound=True)
    slow = RetryPolicy(attempts=10, timeout=60, initial_backoff=0.2, max_backoff=0.2)
    async with client_for(emulator, retry=slow) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            await client.send_once([NUMBER], "code", deadline=0.5)
        assert time.monotonic() - started < 2.0
    assert isinstance(caught.value.last_error, RateLimitedError)
    assert emulator.state.messages() == []


async def test_per_call_retry_policy_overrides_the_clients(emulator: Any) -> None:
    # A gateway that refuses connections: every attempt is retried (nothing was sent) and
    # neither the -1 pace nor the breaker (which watch -1 answers) cuts the count short,
    # so the attempts made are the policy's own.
    patient = RetryPolicy(attempts=8, timeout=60, initial_backoff=0.001, max_backoff=0.002)
    once = RetryPolicy(attempts=2, timeout=60, initial_backoff=0.0, max_backoff=0.0)
    retries: list[int] = []
    async with AisixClient(
        emulator.account,
        emulator.authkey,
        base_url="http://127.0.0.1:9/OpenPlatform",
        retry=patient,
        on_retry=lambda details: retries.append(details.attempt),
    ) as client:
        with pytest.raises(TransportError):
            await client.get_balance(retry=once)
        assert retries == [1]
        retries.clear()
        with pytest.raises(TransportError):
            await client.get_balance()
        assert retries == list(range(1, 8))


async def test_bad_deadline_and_retry_are_refused_before_sending(emulator: Any) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(ValidationError, match="deadline"):
            await client.send_once([NUMBER], "code", deadline=0)
        # Beyond any float: it raised OverflowError from the arithmetic (a user's trial).
        with pytest.raises(ValidationError, match="deadline must be finite"):
            await client.send_once([NUMBER], "code", deadline=10**400)
        with pytest.raises(ValidationError, match="retry"):
            await client.send_once([NUMBER], "code", retry=3)  # type: ignore[arg-type]
    assert emulator.state.messages() == []


async def test_every_single_call_takes_deadline_and_retry(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0)
    rotated: list[str] = []
    options: dict[str, Any] = {"deadline": 5.0, "retry": FAST}
    async with client_for(emulator, on_key_rotation=lambda u: rotated.append(u.authkey)) as client:
        await client.send_batch([(NUMBER, "one"), ("18600007370", "two")], **options)
        await client.send_param("Hi {p1}", [(NUMBER, ["A"]), ("18600007370", ["B"])], **options)
        await client.get_balance(**options)
        await client.get_channel_groups(**options)
        await client.get_signs(**options)
        await client.get_delivery_reports(**options)
        await client.get_replies(**options)
        update = await client.rotate_key(**options)
        await client.get_balance(**options)  # with the new key
        calls = dict(client.stats().calls)
    assert rotated == [update.authkey] == [emulator.state.authkey()]
    assert all(outcome == "accepted" for (_, outcome) in calls), calls
    assert sum(calls.values()) == 9
    assert len(emulator.state.messages()) == 4


async def test_a_call_whose_time_is_already_up_sends_nothing(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aisix_async")
    async with client_for(emulator) as client:
        # A scope whose deadline passed before the call is cancelled already: its own
        # TimeoutError goes through (anyio cannot tell it from a cancel()), nothing sent.
        with pytest.raises(TimeoutError), anyio.fail_after(0):
            await client.send_once([NUMBER], "code")
        # A caller already cancelled (no deadline): the cancellation, and no "unknown".
        with anyio.CancelScope() as scope:
            scope.cancel()
            await client.send_once([NUMBER], "code")
        assert scope.cancelled_caught
        stats = client.stats()
    assert stats.outcome_unknown == 0 and unknown_records(caplog) == []
    assert stats.requests == 0
    assert await ledger_numbers(emulator, 1, wait=0.3) == []


async def test_a_scope_cancelled_before_its_deadline_cancels_a_queued_call(emulator: Any) -> None:
    # Inheriting a deadline does not turn a plain cancel() into DeadlineExceededError.
    emulator.state.set_faults(latency_ms=400, fault_actions=["sendOnce"])
    first = "18600007370"
    async with client_for(emulator, max_concurrency=1) as client:
        with anyio.move_on_after(5) as waiting:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.send_once([first], "code", deadline=5))
                await anyio.sleep(0.05)

                async def queued() -> None:
                    with anyio.fail_after(5):  # the deadline it inherits
                        await client.send_once([NUMBER], "code")

                tg.start_soon(queued)
                await anyio.sleep(0.1)
                waiting.cancel()
        assert waiting.cancelled_caught
        calls = dict(client.stats().calls)
    assert calls[("sendOnce", "cancelled")] == 1
    # The first send was written (shielded, it finished); the queued one never went.
    assert calls[("sendOnce", "accepted")] == 1
    assert await ledger_numbers(emulator, 1) == [first]


@pytest.mark.parametrize("how", ["send_many", "send_all"])
async def test_a_move_on_after_around_a_bulk_send_ends_it_quietly_before_it_starts(
    emulator: Any, how: str
) -> None:
    # The balance check before a bulk send waits for its turns like every request. When a
    # move_on_after's deadline passes then, the block ends quietly, as it does once the
    # stream sends; it used to raise the check's DeadlineExceededError (a user trial).
    async with client_for(emulator, max_rate=1.0) as client:
        await client.get_balance()  # the next request waits a second for its turn
        left = False
        with anyio.move_on_after(0.3):
            if how == "send_many":
                async with client.send_many([NUMBER] * 3, "hi") as outcomes:
                    async for _ in outcomes:
                        pass
            else:
                await client.send_all([NUMBER] * 3, "hi")
            left = True
        assert not left
    assert emulator.state.messages() == []


async def test_a_cancel_while_a_key_rotation_is_on_the_wire_lets_it_finish(
    emulator: Any,
) -> None:
    # A plain cancel (no deadline: a nursery's, a shutdown's) cut the answer off: the
    # gateway had rotated the key, the new one was lost, and the account was locked out.
    emulator.state.set_faults(latency_ms=500, fault_actions=["updateKey"])
    stored: list[str] = []
    async with client_for(emulator, on_key_rotation=lambda r: stored.append(r.authkey)) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.rotate_key)
                await anyio.sleep(0.2)
                scope.cancel()
        # (Whether the scope catches the cancellation afterwards is the backend's
        # business: on trio, the rotation returned with no checkpoint left to raise it.)
        emulator.state.set_faults(latency_ms=0)
        # The client switched to the new key, and the hook stored it.
        assert (await client.get_balance()).remain >= 0
    assert stored == [emulator.state.authkey()]


async def test_a_single_report_read_cancelled_on_the_wire_says_its_records_are_lost(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The gateway hands each report out once: 300 vanished without a word.
    emulator.state.configure(report_delay=0.0)
    caplog.set_level(logging.WARNING, logger="aisix_async")
    async with client_for(emulator) as client:
        await client.send_once(helpers.numbers(5), "hi")
        emulator.state.set_faults(latency_ms=500, fault_actions=["getSendState"])
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.get_delivery_reports)
                await anyio.sleep(0.2)
                scope.cancel()
        assert scope.cancelled_caught
        stats = client.stats()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "getSendState: cancelled" in errors[0] and "lost" in errors[0]
    assert stats.outcome_unknown == 0
    assert stats.calls[("getSendState", "cancelled")] == 1


async def test_a_lost_key_rotation_is_not_logged_as_a_message_sent_and_charged(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The unknown-outcome WARNING said "(been sent and charged)" and "resend" for a key
    # rotation whose answer was lost.
    caplog.set_level(logging.WARNING, logger="aisix_async")
    emulator.state.set_faults(drop_after_process=1.0, fault_actions=["updateKey"])
    async with client_for(emulator) as client:
        with pytest.raises(TransportError) as caught:
            await client.rotate_key()
    assert caught.value.outcome_unknown
    (said,) = [r.getMessage() for r in caplog.records if "outcome unknown" in r.getMessage()]
    assert "changed the key" in said and "do not repeat it" in said
    assert "charged" not in said


async def test_an_on_retry_hook_that_raises_is_said_and_the_retry_goes_on(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # In a bulk send, its error came out wrapped twice in exception groups (trio's), and
    # `except RuntimeError` missed it; in a single call it ended the call.
    caplog.set_level(logging.ERROR, logger="aisix_async")
    emulator.state.configure(rate=20.0, burst=1.0)
    retry = RetryPolicy(attempts=100, timeout=30, initial_backoff=0.01, max_backoff=0.05)

    def explode(details: Any) -> None:
        raise RuntimeError("retry hook exploded")

    async with client_for(emulator, on_retry=explode, retry=retry) as client:
        summary = await client.send_all(
            helpers.numbers(40), "hi", chunk_size=4, check_balance=False
        )
    assert summary.accepted == 40
    failed = [r for r in caplog.records if "on_retry hook failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None


async def test_a_failing_hook_is_logged_without_the_sends_numbers_in_its_traceback(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised while the send's error was handled, the hook's traceback chained to it, and
    # an error tracker printing locals (Sentry's default) showed the number and the text
    # from the request's frames.
    import traceback

    caplog.set_level(logging.ERROR, logger="aisix_async")
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])

    def explode(event: Any) -> None:
        raise RuntimeError("hook exploded")

    async with client_for(emulator, on_unknown=explode) as client:
        with pytest.raises(AisixError):
            await client.send_once([NUMBER], "code 1234")
    (record,) = [r for r in caplog.records if "on_unknown hook failed" in r.getMessage()]
    assert record.exc_info is not None
    _, exc, tb = record.exc_info
    assert exc is not None
    shown = "".join(traceback.TracebackException(type(exc), exc, tb, capture_locals=True).format())
    assert "hook exploded" in shown and "explode" in shown
    assert NUMBER not in shown and "code 1234" not in shown


async def test_a_call_cancelled_while_its_connection_is_made_was_not_sent(emulator: Any) -> None:
    # With no deadline, the exchange goes on once its caller is cancelled (asyncio: a task
    # of its own; trio: a system task): unless its request had not begun to be written.
    # A gateway that does not take the connection (its accept queue full: the SYN goes
    # unanswered) holds the call in connect; cancelled there, it is a plain cancellation,
    # nothing was sent, and the exchange is ended with it, not left to connect later.
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # the queue of a listen(0) socket takes one or two
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await anyio.sleep(0.1)
        seen: list[UnknownOutcome] = []
        base_url = f"http://127.0.0.1:{port}/OpenPlatform"
        async with client_for(emulator, base_url=base_url, on_unknown=seen.append) as client:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.send_once, [NUMBER], "code")
                    await anyio.sleep(0.3)
                    assert client.stats().in_flight == 1  # still connecting
                    scope.cancel()
            assert scope.cancelled_caught
            stats = client.stats()
            assert stats.outcome_unknown == 0 and seen == []
            assert stats.in_flight == 0
    finally:
        for filler in fillers:
            filler.close()
        server.close()
