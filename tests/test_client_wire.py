"""Exact request shapes and answer parsing, pinned with respx (httpx) or MockTransport (httpx2).

The ``gateway_mock`` fixture replaces the network here (stack_support.py says how) so
each request's method, URL and form fields can be compared field by field, the
document's examples among them. Behaviour against a real server is covered by
test_client_e2e.py.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
from helpers import ACCOUNT, KEY, OPEN
from stack_support import STACK, hx

from aisix_async import (
    GATEWAY_TZ,
    AisixClient,
    Balance,
    ChannelGroup,
    DeliveryReport,
    KeyRotation,
    KeyRotationHookError,
    MalformedRecord,
    ProtocolError,
    Reply,
    ReportResult,
    RetryPolicy,
    SendReceipt,
    Signature,
    TransportError,
    UnusableKeyError,
)
from aisix_async._mechanics.http import _tls_context

DATA = "http://api.aisix.com/OpenPlatform/DataApi"

pytestmark = pytest.mark.anyio


def xml(body: str) -> hx.Response:
    return hx.Response(200, content=body.encode(), headers={"Content-Type": "text/xml"})


def form(request: hx.Request) -> dict[str, str]:
    pairs = parse_qsl(request.content.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    fields = dict(pairs)
    assert len(fields) == len(pairs), "a field was sent twice"
    return fields


SEND_OK = (
    '<xml name="{name}" result="1">'
    '<Item cid="100001" sid="1001" msgid="652694368707503300" total="2" price="0.10" '
    'remain="170.040"/></xml>'
)


async def test_send_once_posts_a_form_with_credentials_in_the_body(gateway_mock: Any) -> None:
    route = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=xml(SEND_OK.format(name="sendOnce"))
    )
    async with AisixClient(ACCOUNT, KEY, cgid=1, csid=101) as client:
        receipt = await client.send_once(["18100002707", "18600007370"], "测试")
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == f"{OPEN}?action=sendOnce"
    assert KEY not in str(request.url)
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert form(request) == {
        "ac": ACCOUNT,
        "authkey": KEY,
        "cgid": "1",
        "csid": "101",
        "c": "测试",
        "m": "18100002707,18600007370",
    }
    assert receipt == SendReceipt(
        cid="100001",
        sid="1001",
        msgid="652694368707503300",
        total=2,
        price=Decimal("0.10"),
        remain=Decimal("170.040"),
    )


def _pin_clock(client: AisixClient, now: datetime) -> None:
    client._gateway.now = lambda: now  # type: ignore[method-assign]


async def test_document_send_batch_example_fields(gateway_mock: Any) -> None:
    # The document's example URL: c=%E6%B5%8B%E8%AF%95%E4%B8%80%7B%7C%7D%E6%B5%8B%E8%AF%95%E4%BA%8C
    route = gateway_mock.post(OPEN, params={"action": "sendBatch"}).mock(
        return_value=xml(
            '<xml name="sendBatch" result="1">\n'
            '  <Item cid="xxx" sid="xxx" msgid="1" total="1" price="0.10" remain="170.040"/>\n'
            '  <Item cid="xxx" sid="xxx" msgid="2" total="1" price="0.10" remain="169.940"/>\n'
            "</xml>"
        )
    )
    at = datetime(2013, 7, 23, 22, 20, 30, tzinfo=GATEWAY_TZ)
    async with AisixClient(ACCOUNT, KEY) as client:
        _pin_clock(client, at - timedelta(hours=1))
        receipts = await client.send_batch(
            [("18100002707", "测试一"), ("18600007370", "测试二")], cgid=80, csid=101, at=at
        )
    assert form(route.calls.last.request) == {
        "ac": ACCOUNT,
        "authkey": KEY,
        "cgid": "80",
        "csid": "101",
        "c": "测试一{|}测试二",
        "m": "18100002707,18600007370",
        "t": "20130723222030",
    }
    assert [r.remain for r in receipts] == [Decimal("170.040"), Decimal("169.940")]


async def test_document_send_param_example_fields(gateway_mock: Any) -> None:
    route = gateway_mock.post(OPEN, params={"action": "sendParam"}).mock(
        return_value=xml(
            '<xml name="sendParam" result="1">'
            '<Item cid="xxx" sid="xxx" msgid="1" total="1" price="0.10" remain="170.040"/>'
            '<Item cid="xxx" sid="xxx" msgid="2" total="1" price="0.10" remain="169.940"/>'
            "</xml>"
        )
    )
    # The scheduled time given in UTC lands on the document's gateway time.
    at = datetime(2013, 7, 23, 14, 20, 30, tzinfo=timezone.utc)
    async with AisixClient(ACCOUNT, KEY) as client:
        _pin_clock(client, at - timedelta(minutes=5))
        await client.send_param(
            "{p1}你好，你在{p2}吧",
            [("18100002707", ["小明", "上海"]), ("18600007370", ["小王", "北京"])],
            cgid=80,
            csid=101,
            at=at,
        )
    assert form(route.calls.last.request) == {
        "ac": ACCOUNT,
        "authkey": KEY,
        "cgid": "80",
        "csid": "101",
        "c": "{p1}你好，你在{p2}吧",
        "m": "18100002707,18600007370",
        "p1": "小明{|}小王",
        "p2": "上海{|}北京",
        "t": "20130723222030",
    }
    # The body encodes the separator exactly as the document's URL does.
    assert b"p1=%E5%B0%8F%E6%98%8E%7B%7C%7D%E5%B0%8F%E7%8E%8B" in route.calls.last.request.content


async def test_csid_zero_and_default_cgid_are_left_out(gateway_mock: Any) -> None:
    route = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=xml(SEND_OK.format(name="sendOnce"))
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        await client.send_once(["18100002707"], "hi", csid=0)
    assert "csid" not in form(route.calls.last.request)
    assert "cgid" not in form(route.calls.last.request)


async def test_per_call_targets_override_client_defaults(gateway_mock: Any) -> None:
    route = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=xml(SEND_OK.format(name="sendOnce"))
    )
    async with AisixClient(ACCOUNT, KEY, cgid=1, csid=101) as client:
        await client.send_once(["18100002707"], "hi", cgid=80, csid=102)
    fields = form(route.calls.last.request)
    assert (fields["cgid"], fields["csid"]) == ("80", "102")


async def test_a_calls_zero_asks_for_the_accounts_default_over_the_clients(
    gateway_mock: Any,
) -> None:
    # cgid=0 was read as "none given" and the client's cgid went out (another group, at
    # another price), while csid=0 was honoured.
    route = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=xml(SEND_OK.format(name="sendOnce"))
    )
    async with AisixClient(ACCOUNT, KEY, cgid=80, csid=101) as client:
        await client.send_once(["18100002707"], "hi", cgid=0, csid=0)
        zero = form(route.calls.last.request)
        await client.send_once(["18100002707"], "hi")
        default = form(route.calls.last.request)
    assert "cgid" not in zero and "csid" not in zero
    assert (default["cgid"], default["csid"]) == ("80", "101")


async def test_document_sample_answers_of_every_read_action(gateway_mock: Any) -> None:
    gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        return_value=xml(
            '<xml name="getSendState" result="1">'
            '<Item id="1" msgid="xxx" mobile="1347****687" result="2" return="DELIVRD"/>'
            '<Item id="2" msgid="xxx" mobile="1347****111" result="1" return="REJECTD"/>'
            "</xml>"
        )
    )
    gateway_mock.post(DATA, params={"action": "getReply"}).mock(
        return_value=xml(
            '<xml name="getReply" result="1">'
            '<Item id="1" time="1373883378000" mobile="137****4752" content="xx" msgid="9"/>'
            "</xml>"
        )
    )
    gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=xml(
            '<xml name="getBalance" result="1"><Item cid="c" sid="s" remain="170.040"/></xml>'
        )
    )
    gateway_mock.post(OPEN, params={"action": "getChannelGroup"}).mock(
        return_value=xml(
            '<xml name="getChannelGroup" result="1">'
            '<Item cid="c" sid="s" cgid="1" word="70" longword="67" price="0.10"/></xml>'
        )
    )
    gateway_mock.post(OPEN, params={"action": "getSign"}).mock(
        return_value=xml(
            '<xml name="getSign" result="1"><Item cid="c" sid="s" csid="0" sign="【A】"/></xml>'
        )
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        states = await client.get_delivery_reports()
        replies = await client.get_replies()
        balance = await client.get_balance()
        groups = await client.get_channel_groups()
        signs = await client.get_signs()
    assert [(s.mobile, s.result, s.code) for s in states] == [
        ("1347****687", ReportResult.DELIVERED, "DELIVRD"),
        ("1347****111", ReportResult.FAILED, "REJECTD"),
    ]
    assert replies[0].time == datetime(2013, 7, 15, 10, 16, 18, tzinfo=timezone.utc)
    assert replies[0].extra == {"msgid": "9"}
    assert balance == Balance(cid="c", sid="s", remain=Decimal("170.040"))
    assert groups == [
        ChannelGroup(cid="c", sid="s", cgid=1, word=70, longword=67, price=Decimal("0.10"))
    ]
    assert signs == [Signature(cid="c", sid="s", csid=0, sign="【A】")]


async def test_reports_and_replies_that_cannot_be_read_are_returned_in_their_place(
    gateway_mock: Any,
) -> None:
    # The gateway hands each record out once: an item left out of the list (it was, with
    # a WARNING no application shows) could never be fetched again.
    gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        return_value=xml(
            '<xml name="getSendState" result="1">'
            '<Item id="1" msgid="652694368707503300" mobile="13470000687" result="2" '
            'return="DELIVRD"/>'
            '<Item id="2" msgid="652694368707503301" mobile="13470000111" result="3" '
            'return="MK:0001"/>'
            '<Item id="3" msgid="652694368707503302" result="1" return="REJECTD"/>'
            "</xml>"
        )
    )
    gateway_mock.post(DATA, params={"action": "getReply"}).mock(
        return_value=xml(
            '<xml name="getReply" result="1">'
            '<Item id="1" time="2013-07-15 18:16:18" mobile="13700004112" content="STOP"/>'
            '<Item id="2" time="1373883378000" mobile="13700004752" content="yes"/>'
            "</xml>"
        )
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        reports = await client.get_delivery_reports()
        replies = await client.get_replies()
    assert [type(r) for r in reports] == [DeliveryReport, MalformedRecord, MalformedRecord]
    assert reports[1] == MalformedRecord(
        action="getSendState",
        attributes={
            "id": "2",
            "msgid": "652694368707503301",
            "mobile": "13470000111",
            "result": "3",
            "return": "MK:0001",
        },
        reason="a delivery report has an unknown result 3",
    )
    assert isinstance(reports[2], MalformedRecord) and "'mobile'" in reports[2].reason
    assert [type(r) for r in replies] == [MalformedRecord, Reply]
    assert isinstance(replies[0], MalformedRecord)
    assert (replies[0].action, replies[0].attributes["content"]) == ("getReply", "STOP")


@pytest.mark.parametrize(
    ("action", "call", "lost"),
    [
        ("getSendState", "get_delivery_reports", True),
        ("getReply", "get_replies", True),
        ("getChannelGroup", "get_channel_groups", False),
        ("getSign", "get_signs", False),
        ("getBalance", "get_balance", False),
    ],
)
async def test_an_accepted_answer_whose_children_are_not_items_is_an_error_not_no_records(
    gateway_mock: Any, action: str, call: str, lost: bool
) -> None:
    # Read as no records, the reports or replies in it were gone for good (handed out
    # once), and an account seemed to have no channel group or signature.
    route = gateway_mock.post(DATA if lost else OPEN, params={"action": action}).mock(
        return_value=xml(
            f'<xml name="{action}" result="1">'
            '<item id="1" msgid="652694368707503300" mobile="13470000687" result="2" '
            'return="DELIVRD" cid="c" sid="s" cgid="1" word="70" longword="67" price="0.1"/>'
            "</xml>"
        )
    )
    retry = RetryPolicy(attempts=2, initial_backoff=0, max_backoff=0)
    async with AisixClient(ACCOUNT, KEY, retry=retry) as client:
        with pytest.raises(ProtocolError, match="other than <Item>") as caught:
            await getattr(client, call)()
    message = caught.value.message
    assert "the first <item>" in message and f'<xml name="{action}" result="1">' in message
    # A queue's records may have been taken: the caller is told they cannot come again,
    # and the poll is not retried to hide it behind the next batch.
    assert ("are lost (it hands each out once)" in message) is lost
    if lost:
        assert route.call_count == 1


async def test_an_accepted_send_whose_children_are_not_items_is_an_unknown_outcome(
    gateway_mock: Any,
) -> None:
    gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=xml(SEND_OK.format(name="sendOnce").replace("<Item ", "<Receipt "))
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError, match="the first <Receipt>") as caught:
            await client.send_once(["18100002707"], "hi")
    assert caught.value.outcome_unknown


async def test_data_url_can_live_elsewhere(gateway_mock: Any) -> None:
    other = "http://other.example/DataPlatform/DataApi"
    route = gateway_mock.post(other, params={"action": "getReply"}).mock(
        return_value=xml('<xml name="getReply" result="1"/>')
    )
    async with AisixClient(ACCOUNT, KEY, data_url=other) as client:
        assert await client.get_replies() == []
    assert route.called


def _rotation_and_balance(gateway_mock: Any, new_key: str) -> Any:
    """updateKey answers ``new_key``; getBalance answers (its route is returned)."""
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(
        return_value=xml(
            f'<xml name="updateKey" result="1"><Item cid="c" sid="s" authkey="{new_key}"/></xml>'
        )
    )
    return gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=xml(
            '<xml name="getBalance" result="1"><Item cid="c" sid="s" remain="1"/></xml>'
        )
    )


async def test_update_key_switches_the_client_to_the_new_key(gateway_mock: Any) -> None:
    new_key = "0123456789ABCDEF0123456789ABCDEF"
    balance = _rotation_and_balance(gateway_mock, new_key)
    seen: list[KeyRotation] = []
    async with AisixClient(ACCOUNT, KEY, on_key_rotation=seen.append) as client:
        update = await client.rotate_key()
        await client.get_balance()
    assert update.authkey == new_key
    assert new_key not in repr(update)
    assert seen == [update]
    assert form(balance.calls.last.request)["authkey"] == new_key


@pytest.mark.parametrize(
    "answer",
    [
        '<xml name="updateKey" result="1"/>',
        '<xml name="updateKey" result="1"><Item cid="c" sid="s" authKey="ABC"/></xml>',
        '<xml name="updateKey" result="1"><Item cid="c" sid="s" authkey="not-a-key"/></xml>',
    ],
    ids=["no-item", "misspelt-attribute", "garbled-key"],
)
async def test_a_rotation_whose_new_key_cannot_be_read_is_an_unknown_outcome(
    gateway_mock: Any, answer: str
) -> None:
    # Result 1: the old key no longer works. The caller must not be told nothing happened.
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(return_value=xml(answer))
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError, match="rotated the key") as caught:
            await client.rotate_key()
    assert caught.value.outcome_unknown
    assert "not-a-key" not in str(caught.value)


async def test_a_new_key_this_client_cannot_use_is_handed_over_not_thrown_away(
    gateway_mock: Any,
) -> None:
    # The gateway switched keys (result 1): throwing its new key away, as before, locked
    # the account out for good. It comes back in the error; the client keeps the old one.
    new_key = "0123456789abcdef0123456789abcdef"
    balance = _rotation_and_balance(gateway_mock, new_key)
    seen: list[KeyRotation] = []
    async with AisixClient(ACCOUNT, KEY, on_key_rotation=seen.append) as client:
        with pytest.raises(UnusableKeyError, match="rotated the key") as caught:
            await client.rotate_key()
        await client.get_balance()
    assert isinstance(caught.value, ProtocolError) and caught.value.outcome_unknown
    assert caught.value.rotation.authkey == new_key
    assert new_key not in str(caught.value) and new_key not in repr(caught.value.rotation)
    assert seen == []
    assert form(balance.calls.last.request)["authkey"] == KEY


async def test_white_space_around_a_new_key_is_no_part_of_it(gateway_mock: Any) -> None:
    new_key = "0123456789ABCDEF0123456789ABCDEF"
    balance = _rotation_and_balance(gateway_mock, f" {new_key} ")
    async with AisixClient(ACCOUNT, KEY) as client:
        update = await client.rotate_key()
        await client.get_balance()
    assert update.authkey == new_key
    assert form(balance.calls.last.request)["authkey"] == new_key


async def test_a_rotation_answered_without_an_item_says_it_was_accepted_without_the_key(
    gateway_mock: Any,
) -> None:
    new_key = "0123456789ABCDEF0123456789ABCDEF"
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(
        return_value=xml(
            f'<xml name="updateKey" result="1"><item cid="c" sid="s" authkey="{new_key}"/></xml>'
        )
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError, match=r"accepted the request \(result 1\)") as caught:
            await client.rotate_key()
    assert caught.value.outcome_unknown
    assert new_key not in str(caught.value) and new_key[:8] not in str(caught.value)


async def test_a_failing_rotation_hook_hands_the_new_key_back_with_its_error(
    gateway_mock: Any,
) -> None:
    new_key = "0123456789ABCDEF0123456789ABCDEF"
    balance = _rotation_and_balance(gateway_mock, new_key)

    def store(rotation: KeyRotation) -> None:
        raise OSError("disk full")

    async with AisixClient(ACCOUNT, KEY, on_key_rotation=store) as client:
        with pytest.raises(KeyRotationHookError) as caught:
            await client.rotate_key()
        await client.get_balance()
    assert caught.value.rotation.authkey == new_key
    assert isinstance(caught.value.__cause__, OSError)
    assert new_key not in str(caught.value) and new_key not in repr(caught.value)
    assert form(balance.calls.last.request)["authkey"] == new_key


async def test_environment_supplies_credentials_and_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AISIX_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AISIX_AUTHKEY", KEY)
    monkeypatch.setenv("AISIX_BASE_URL", "http://127.0.0.1:9/Gateway/")
    async with AisixClient() as client:
        assert client.account == ACCOUNT
        assert client.endpoints.open_url == "http://127.0.0.1:9/Gateway/OpenApi"
        assert client.endpoints.data_url == "http://127.0.0.1:9/Gateway/DataApi"


async def test_a_passed_in_http_client_is_used_and_left_open() -> None:
    calls: list[hx.Request] = []

    def handler(request: hx.Request) -> hx.Response:
        calls.append(request)
        return xml('<xml name="getBalance" result="1"><Item cid="c" sid="s" remain="2.5"/></xml>')

    http = hx.AsyncClient(transport=hx.MockTransport(handler))
    async with AisixClient(ACCOUNT, KEY, http_client=http) as client:
        assert (await client.get_balance()).remain == Decimal("2.5")
    assert len(calls) == 1
    assert not http.is_closed
    await http.aclose()


async def test_an_answer_over_the_size_cap_is_refused_unread(gateway_mock: Any) -> None:
    huge = b'<xml name="getReply" result="1">' + b'<Item id="1" mobile="1" time="1"/>' * 200
    gateway_mock.post(DATA, params={"action": "getReply"}).mock(
        return_value=hx.Response(200, content=huge)
    )
    async with AisixClient(ACCOUNT, KEY, max_answer_bytes=1024) as client:
        with pytest.raises(ProtocolError, match="exceeds 1024 bytes"):
            await client.get_replies()


async def test_clients_share_one_verifying_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the CA store per client would stall a running event loop for each one.
    import ssl

    async with AisixClient(ACCOUNT, KEY):
        pass
    loads: list[str] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append("ca")
        load(self, *args, **kwargs)

    # Every way either stack loads trusted CAs (certifi's file, the system's) ends here.
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    for _ in range(3):
        async with AisixClient(ACCOUNT, KEY):
            pass
    assert loads == []
    monkeypatch.undo()
    # What the stack would have built (certifi on httpx, the system store on httpx2): the
    # same checks and the same trusted CAs.
    context = hx.create_ssl_context(trust_env=False)
    ours = _tls_context(STACK)
    assert (ours.verify_mode, ours.check_hostname) == (context.verify_mode, context.check_hostname)
    assert ours.verify_mode is ssl.CERT_REQUIRED
    assert ours.cert_store_stats() == context.cert_store_stats()


REPORTS = (
    '<xml name="getSendState" result="1">'
    + "".join(
        f'<Item id="{i}" msgid="6526943687075033{i:02d}" mobile="181000027{i:02d}" '
        'result="2" return="DELIVRD"/>'
        for i in range(20)
    )
    + "</xml>"
)


@pytest.mark.parametrize("whole", [True, False], ids=["some-read-whole", "none-read-whole"])
async def test_a_report_poll_whose_answer_is_garbled_is_not_retried(
    gateway_mock: Any, whole: bool
) -> None:
    # The gateway hands each report out once: the reports in a garbled answer are gone.
    # The poll was retried quietly and returned the next batch (none), so the caller
    # never learned that 20 reports were lost. Those read whole before the cut are
    # returned; with none, the poll raises.
    cut = len(REPORTS) // 2 if whole else REPORTS.index("<Item") + 10
    route = gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        side_effect=[xml(REPORTS[:cut]), xml('<xml name="getSendState" result="1"/>')]
    )
    async with AisixClient(
        ACCOUNT, KEY, retry=RetryPolicy(initial_backoff=0, max_backoff=0)
    ) as client:
        if whole:
            reports = await client.get_delivery_reports()
            assert [r.id for r in reports] == [str(i) for i in range(len(reports))]  # type: ignore[union-attr]
            assert 5 <= len(reports) < 20
        else:
            with pytest.raises(ProtocolError, match="are lost"):
                await client.get_delivery_reports()
    assert route.call_count == 1


async def test_a_reply_poll_whose_answer_is_lost_is_not_retried(gateway_mock: Any) -> None:
    route = gateway_mock.post(DATA, params={"action": "getReply"}).mock(
        side_effect=hx.ReadTimeout("no answer")
    )
    async with AisixClient(
        ACCOUNT, KEY, retry=RetryPolicy(initial_backoff=0, max_backoff=0)
    ) as client:
        with pytest.raises(TransportError, match="are lost") as caught:
            await client.get_replies()
    assert caught.value.request_sent
    assert route.call_count == 1


async def test_a_report_poll_that_never_went_out_is_retried(gateway_mock: Any) -> None:
    # Nothing was written, so nothing was taken off the queue: retried as before.
    route = gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        side_effect=[hx.ConnectError("refused"), xml(REPORTS)]
    )
    async with AisixClient(
        ACCOUNT, KEY, retry=RetryPolicy(initial_backoff=0, max_backoff=0)
    ) as client:
        reports = await client.get_delivery_reports()
    assert len(reports) == 20
    assert route.call_count == 2


async def test_a_stream_says_at_error_when_a_poll_may_have_lost_reports(
    gateway_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aisix_async")
    empty = xml('<xml name="getSendState" result="1"/>')
    gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        side_effect=[hx.ReadTimeout("no answer"), xml(REPORTS), empty, empty, empty, empty]
    )
    retry = RetryPolicy(initial_backoff=0, max_backoff=0)
    async with (
        AisixClient(ACCOUNT, KEY, retry=retry) as client,
        client.watch_delivery_reports(interval=0.01, stop_when_idle=0.03) as stream,
    ):
        got = [report async for report in stream]
    assert len(got) == 20  # the stream went on
    (lost,) = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert "are lost" in lost.getMessage()
    assert lost.levelno == logging.ERROR
    assert stream.stats().errors == 1


@pytest.mark.parametrize(
    "cut",
    [len("</xml>"), len("ml>"), 0],
    ids=["before-the-end-tag", "inside-the-end-tag", "whole"],
)
async def test_a_new_key_read_whole_before_the_answer_was_cut_is_used(
    gateway_mock: Any, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    # The gateway rotated the key (result 1) and the new one came whole: an answer cut
    # after it was "unknown", the old key kept though it no longer works, the new one lost.
    new_key = "0123456789ABCDEF0123456789ABCDEF"
    whole = f'<xml name="updateKey" result="1"><Item cid="c" sid="s" authkey="{new_key}"/></xml>'
    # One route per action (which of two routes for one action answers is the mock's
    # business, and differs between the stacks' mocks).
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(
        return_value=xml(whole[: len(whole) - cut])
    )
    balance = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=xml(
            '<xml name="getBalance" result="1"><Item cid="c" sid="s" remain="1"/></xml>'
        )
    )
    caplog.set_level(logging.DEBUG, logger="aisix_async")
    seen: list[KeyRotation] = []
    async with AisixClient(ACCOUNT, KEY, on_key_rotation=seen.append) as client:
        update = await client.rotate_key()
        await client.get_balance()
    assert update.authkey == new_key and seen == [update]
    assert form(balance.calls.last.request)["authkey"] == new_key
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == (1 if cut else 0)
    assert all("cut short after the new key" in e for e in errors)
    assert not any(new_key in r.getMessage() for r in caplog.records)


async def test_a_key_cut_inside_its_item_is_still_an_unknown_rotation(gateway_mock: Any) -> None:
    # Half a start tag is no key: nothing is read from it.
    whole = '<xml name="updateKey" result="1"><Item cid="c" sid="s" authkey="0123456789ABCDEF'
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(return_value=xml(whole))
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.rotate_key()
    assert caught.value.outcome_unknown
    assert "0123456789ABCDEF" not in str(caught.value)


@pytest.mark.parametrize("action", ["getSendState", "getReply"])
async def test_one_read_of_a_queue_cut_short_returns_the_records_read_whole(
    gateway_mock: Any, caplog: pytest.LogCaptureFixture, action: str
) -> None:
    # The gateway hands each record out once: a ProtocolError lost all 4 whole records.
    if action == "getSendState":
        items = [
            f'<Item id="{n}" msgid="9" mobile="1380000000{n}" result="2" return="DELIVRD"/>'
            for n in range(5)
        ]
    else:
        items = [
            f'<Item id="{n}" mobile="1380000000{n}" content="yes" time="1373883378000"/>'
            for n in range(5)
        ]
    body = f'<xml name="{action}" result="1">' + "".join(items) + "</xml>"
    cut = body[: body.index('<Item id="4"') + 12]
    gateway_mock.post(DATA, params={"action": action}).mock(return_value=xml(cut))
    caplog.set_level(logging.WARNING, logger="aisix_async")
    async with AisixClient(ACCOUNT, KEY) as client:
        read = client.get_delivery_reports if action == "getSendState" else client.get_replies
        records = await read()
    assert [r.id for r in records] == ["0", "1", "2", "3"]  # type: ignore[union-attr]
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "cut short" in error and "4 records read whole" in error


async def test_one_read_of_a_queue_garbled_before_any_whole_record_still_raises(
    gateway_mock: Any,
) -> None:
    gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        return_value=xml('<xml name="getSendState" result="1"><Item id="0" msg')
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError, match=r"not well-formed.*are lost"):
            await client.get_delivery_reports()
