"""The protocol client against the emulator over real HTTP on 127.0.0.1.

Each test checks the client's view against the emulator's ground truth: what it charged,
what each phone received, which result code it answered.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest
from helpers import FAST, client_for, numbers

from aisix_async import (
    AisixClient,
    AuthenticationError,
    ChannelGroupNotAllowedError,
    ClientAlreadyEnteredError,
    ClientClosedError,
    EnterpriseUnavailableError,
    GatewayInternalError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    KeyLockedError,
    NotSentError,
    OutcomeStatus,
    ProtocolError,
    RateLimitedError,
    ReportResult,
    RetryPolicy,
    SendOutcome,
    StaffUnavailableError,
    TransportError,
    ValidationError,
)

pytestmark = pytest.mark.anyio


async def test_every_action_end_to_end(emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0)
    async with client_for(emulator, cgid=1) as client:
        groups = await client.get_channel_groups()
        signs = await client.get_signs()
        once = await client.send_once(["18100002707", "18600007370"], "Your code is 1234")
        batch = await client.send_batch([("18100002707", "测试一"), ("18600007370", "测试二")])
        param = await client.send_param(
            "Hello {p1}, do you live in {p2}?",
            [("18100002707", ["Peter", "Shanghai"]), ("18600007370", ["Evan", "Beijing"])],
            csid=101,
        )
        balance = await client.get_balance()
        emulator.state.inject_reply("18100002707", "STOP & unsubscribe <now>")
        replies = await client.get_replies()
        states: list[Any] = []
        with anyio.fail_after(5):
            while len(states) < 6:
                states += await client.get_delivery_reports()
                await anyio.sleep(0.01)
    assert {g.cgid for g in groups} >= {1, 80}
    assert {s.csid for s in signs} >= {0, 101}
    assert once.total == 2 and len(once.msgid) == 18
    assert [r.total for r in batch] == [1, 1]
    texts = {(m.mobile, m.text) for m in emulator.state.messages()}
    assert ("18600007370", "【Aisix】测试二") in texts
    assert ("18600007370", "【AisixShop】Hello Evan, do you live in Beijing?") in texts
    # The balance the client reads is the emulator's, and equals the last receipt's remain.
    assert balance.remain == emulator.state.balance() == param[-1].remain
    spent = sum(m.cost for m in emulator.state.messages())
    assert Decimal("1000.000") - spent == balance.remain
    assert [(r.mobile, r.content) for r in replies] == [("18100002707", "STOP & unsubscribe <now>")]
    assert replies[0].time.tzinfo is not None
    delivered = {(s.msgid, s.mobile) for s in states}
    assert delivered == {(m.msgid, m.mobile) for m in emulator.state.messages()}
    assert all(s.result in ReportResult for s in states)
    # Queues: each record is handed out once.
    async with client_for(emulator) as client:
        assert await client.get_replies() == []
        assert await client.get_delivery_reports() == []


async def test_a_template_that_skips_p1_still_sends(emulator: Any) -> None:
    # The client sends p1..pN for a highest {pN}, each with one value per row, unused or
    # not; the gateway refuses a parameter with any other count, so these must match.
    rows = [("18100002707", ["-", "Ann"]), ("18600007370", ["-", "Bob"])]
    async with client_for(emulator) as client:
        receipts = await client.send_param("Hi {p2}", rows)
    assert len(receipts) == 2
    texts = [(m.mobile, m.text) for m in emulator.state.messages()]
    assert texts == [("18100002707", "【Aisix】Hi Ann"), ("18600007370", "【Aisix】Hi Bob")]


async def test_result_codes_from_a_real_gateway(emulator: Any) -> None:
    state = emulator.state
    # The gateway's 0 ("account format incorrect") for letters is met before any
    # request now: refused by the client (the code's mapping: tests/test_errors.py).
    with pytest.raises(ValidationError, match="employee number"):
        AisixClient("abc@100001", emulator.authkey, base_url=emulator.base_url, retry=FAST)
    assert state.get_counters().requests == {}
    async with AisixClient("1001@999", emulator.authkey, base_url=emulator.base_url) as client:
        with pytest.raises(EnterpriseUnavailableError):
            await client.get_balance()
    async with client_for(emulator) as client:
        with pytest.raises(ChannelGroupNotAllowedError):
            await client.send_once(["18100002707"], "hi", cgid=999)
        state.update_account(staff_enabled=False)
        with pytest.raises(StaffUnavailableError):
            await client.get_balance()
        state.update_account(staff_enabled=True, interface_enabled=False)
        with pytest.raises(InterfaceNotEnabledError):
            await client.send_once(["18100002707"], "hi")
        state.update_account(interface_enabled=True, balance="0.05")
        with pytest.raises(InsufficientBalanceError) as short:
            await client.send_once(["18100002707"], "hi")
        assert not short.value.outcome_unknown
        assert state.balance() == Decimal("0.05") and state.message_count == 0
        state.configure(ip_bound=True)
        with pytest.raises(RateLimitedError, match="IP address"):
            await client.get_balance()
        state.configure(ip_bound=False)
    wrong = "0" * 32
    async with AisixClient(emulator.account, wrong, base_url=emulator.base_url) as client:
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                await client.get_balance()
        with pytest.raises(KeyLockedError):
            await client.get_balance()


async def test_ambiguous_faults_leave_sends_unknown_and_unrepeated(emulator: Any) -> None:
    state = emulator.state
    cases = [
        ("error_after_charge", GatewayInternalError, 1),
        ("drop_after_process", TransportError, 1),
        ("truncated_xml", ProtocolError, 1),
        ("http_502", ProtocolError, 0),
    ]
    async with client_for(emulator) as client:
        for fault, error, recorded in cases:
            state.reset()
            state.set_faults(**{fault: 1.0})
            with pytest.raises(error) as caught:
                await client.send_once(["18100002707"], "hi")
            assert caught.value.outcome_unknown, fault
            # Not resent: the gateway saw exactly one sendOnce.
            assert state.get_counters().requests.get("sendOnce") == 1, fault
            assert state.message_count == recorded, fault


async def test_reads_retry_through_transient_faults(emulator: Any) -> None:
    emulator.state.configure(seed=7)
    emulator.state.set_faults(http_502=0.5)
    retry = RetryPolicy(attempts=20, timeout=10, initial_backoff=0.001, max_backoff=0.002)
    async with client_for(emulator, retry=retry) as client:
        for _ in range(10):
            assert (await client.get_balance()).remain == Decimal("1000.000")


async def test_key_rotation_while_requests_are_in_flight(emulator: Any) -> None:
    emulator.state.set_faults(latency_ms=20, jitter_ms=20)
    seen: list[str] = []
    errors: list[BaseException] = []
    async with client_for(
        emulator, max_concurrency=8, on_key_rotation=lambda u: seen.append(u.authkey)
    ) as client:

        async def reader() -> None:
            try:
                await client.get_balance()
            except Exception as exc:  # collected and asserted on below
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(reader)
                if n == 15:
                    tg.start_soon(client.rotate_key)
                await anyio.sleep(0.002)
    assert errors == []
    assert seen == [emulator.state.authkey()]
    assert seen[0] != "87B01469201D6557C2685137EB3B5DEC"


async def test_a_closed_client_says_so_before_any_request(emulator: Any) -> None:
    client = client_for(emulator)
    async with client:
        await client.get_balance()
    with pytest.raises(RuntimeError, match="is closed"):
        async with client:
            pass
    with pytest.raises(RuntimeError, match="is closed") as raised:
        await client.send_once(["13800000000"], "hi")
    # Said of the client the user holds, not of an inner layer's class.
    assert "Gateway" not in str(raised.value) and "this client" in str(raised.value)
    with pytest.raises(RuntimeError, match="is closed"):
        await client.rotate_key()
    with pytest.raises(RuntimeError, match="is closed"):
        await client.send_all(["13800000000"] * 2, "hi", check_balance=False)
    assert emulator.state.messages() == []


async def test_a_client_already_entered_refuses_a_second_async_with(emulator: Any) -> None:
    # A helper that wrapped the app's shared client in `async with client:` closed it on
    # its way out: the owner's next call failed with ClientClosedError (a user's trial).
    async def helper(client: AisixClient) -> None:
        async with client:
            await client.get_balance()

    async with client_for(emulator) as client:
        with pytest.raises(ClientAlreadyEnteredError, match="entered once, by its owner"):
            await helper(client)
        # Refused before anything happened: the owner's client is open and sends.
        receipt = await client.send_once(["13800000000"], "hi")
        assert receipt.msgid
        with pytest.raises(RuntimeError, match="already in an 'async with' block"):
            async with client:
                pass
        await client.get_balance()
    assert [m.mobile for m in emulator.state.messages()] == ["13800000000"]
    # Once its block has ended, the client is closed: that is what a later one hears.
    with pytest.raises(ClientClosedError):
        async with client:
            pass


async def test_closing_refuses_what_waits_and_lets_what_is_on_the_wire_finish(
    emulator: Any,
) -> None:
    # Closed under calls still queued (a worker that outlives its handlers): the calls
    # waiting for a turn went out later on the closed pool, each failing at its paced turn
    # with the HTTP stack's words (up to 11 s after the close), and the requests on the
    # wire were cut off: sends the gateway accepted were reported as unknown (a trial).
    emulator.state.configure(rate=5.0, burst=2.0)
    emulator.state.set_faults(latency_ms=500)
    unknown: list[object] = []
    client = client_for(emulator, on_unknown=unknown.append)
    results: list[tuple[str, float]] = []

    async def one(i: int) -> None:
        try:
            await client.send_once([f"1390000{i:04d}"], "hello")
            results.append(("sent", anyio.current_time()))
        except ClientClosedError as refused:
            results.append((str(refused), anyio.current_time()))

    async with anyio.create_task_group() as group:
        async with client:
            for i in range(30):
                group.start_soon(one, i)
            await anyio.sleep(1.5)
            closing = anyio.current_time()
        closed = anyio.current_time()
    sent = [at for what, at in results if what == "sent"]
    refused = [at for what, at in results if what != "sent"]
    assert all("not sent" in what for what, _ in results if what != "sent")
    assert len(sent) + len(refused) == 30 and sent and refused
    # Everything on the wire at the close finished before aclose() returned, as sent...
    assert all(at <= closed for at in sent)
    assert unknown == [] and client.stats().outcome_unknown == 0
    assert client.stats().calls[("sendOnce", "closed")] == len(refused)
    assert len(emulator.state.messages()) == len(sent)
    # ... and the rest was refused at once, not at its turn.
    assert all(at - closing < 0.2 for at in refused), [at - closing for at in refused]
    with pytest.raises(ClientClosedError, match="is closed"):
        await client.send_once(["13800000000"], "hi")


async def test_a_bulk_send_under_a_closing_client_stops_and_loses_no_one(
    emulator: Any,
) -> None:
    emulator.state.configure(rate=5.0, burst=2.0)
    emulator.state.set_faults(latency_ms=200)
    client = client_for(emulator)
    outcomes: list[SendOutcome] = []

    async def consume() -> None:
        stream = client.send_many(numbers(3000), "hi", chunk_size=100, check_balance=False)
        async with stream:
            async for outcome in stream:
                outcomes.append(outcome)

    async with anyio.create_task_group() as group, client:
        group.start_soon(consume)
        await anyio.sleep(1.0)
    accepted = [o for o in outcomes if o.status is OutcomeStatus.ACCEPTED]
    failed = [o for o in outcomes if o.status is OutcomeStatus.FAILED]
    assert accepted and failed and len(accepted) + len(failed) == len(outcomes)
    assert sum(len(o.mobiles) for o in outcomes) == 3000  # every recipient accounted for
    assert len(emulator.state.messages()) == 100 * len(accepted)
    # The chunks that were waiting met the close; the rest were not sent because of it,
    # at once (not refused one by one). Both said alike: not sent, because the client
    # closed (the waiting ones were a bare ClientClosedError).
    assert all(
        isinstance(o.error, NotSentError) and isinstance(o.error.cause, ClientClosedError)
        for o in failed
    )


def test_a_client_closed_from_another_event_loop_says_so(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Used in one anyio.run and closed in the next: the pool's connections belong to the
    # first loop, closed by then, and closing them failed with "Event loop is closed".
    client = client_for(emulator)
    anyio.run(client.get_balance)
    anyio.run(client.aclose)  # no error
    assert "closed from another event loop" in caplog.text
    with pytest.raises(ClientClosedError):
        anyio.run(client.get_balance)


@pytest.mark.parametrize("second", ["asyncio", "trio"])
async def test_a_client_used_from_another_event_loop_says_so(emulator: Any, second: str) -> None:
    async def balance() -> None:
        await client.get_balance()

    async with client_for(emulator) as client:
        await balance()
        # Another thread, its own event loop, this loop's client.
        with pytest.raises(RuntimeError, match="another event loop"):
            await anyio.to_thread.run_sync(lambda: anyio.run(balance, backend=second))
        assert emulator.state.get_counters().requests["getBalance"] == 1  # refused before
        await balance()  # still fine in its own loop
