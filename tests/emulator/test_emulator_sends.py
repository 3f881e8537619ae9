"""Accepted sends: answers, ground truth, billing, msgids, the document's examples."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import anyio
import pytest
from emulator_helpers import Gateway, parse_answer
from helpers import numbers_csv
from stack_support import hx

from aisix_async.emulator import GATEWAY_TZ, AccountConfig, ChannelGroupConfig

SIGN = "【Aisix】"  # csid 0, 7 code points
SHOP = "【AisixShop】"  # csid 101, 11 code points


def test_send_once_answers_one_item_for_the_whole_request(gw: Gateway) -> None:
    answer = gw.send_once("13800000001,13800000002,13800000003", "Your code is 1234")
    assert (answer.name, answer.result) == ("sendOnce", 1)
    [item] = answer.items
    assert list(item) == ["cid", "sid", "msgid", "total", "price", "remain"]
    assert (item["cid"], item["sid"]) == ("100001", "1001")
    assert len(item["msgid"]) == 18
    assert item["msgid"].isdigit()
    assert (item["total"], item["price"], item["remain"]) == ("3", "0.10", "999.700")


def test_send_once_ground_truth(gw: Gateway) -> None:
    answer = gw.send_once("13800000001,13800000002", "Your code is 1234")
    msgid = answer.items[0]["msgid"]
    records = gw.state.messages()
    assert [(r.mobile, r.msgid, r.text) for r in records] == [
        ("13800000001", msgid, "【Aisix】Your code is 1234"),
        ("13800000002", msgid, "【Aisix】Your code is 1234"),
    ]
    first = records[0]
    assert (first.account, first.action, first.units, first.cost) == (
        "1001@100001",
        "sendOnce",
        1,
        Decimal("0.10"),
    )
    assert (first.cgid, first.csid, first.scheduled_for, first.fault) == (1, 0, None, None)
    assert first.accepted_at == gw.clock()


def test_duplicate_numbers_are_separate_messages(gw: Gateway) -> None:
    answer = gw.send_once("13800000001,13800000001", "twice")
    assert answer.items[0]["total"] == "2"
    assert [r.mobile for r in gw.state.messages()] == ["13800000001"] * 2
    assert gw.state.pending_reports() == 2


def test_msgids_are_unique_increasing_18_digit_strings(gw: Gateway) -> None:
    msgids = [gw.send_once("13800000001", f"m{i}").items[0]["msgid"] for i in range(5)]
    batch = gw.call("sendBatch", m="13800000001,13800000002", c="a{|}b")
    msgids += [item["msgid"] for item in batch.items]
    assert all(len(m) == 18 and m.isdigit() for m in msgids)
    assert [int(m) for m in msgids] == sorted({int(m) for m in msgids})


@pytest.mark.parametrize(
    ("csid", "sign"),
    [(None, SIGN), ("0", SIGN), ("101", SHOP), ("999", SIGN), ("abc", SIGN), ("-1", SIGN)],
)
def test_signature_falls_back_to_the_default(gw: Gateway, csid: str | None, sign: str) -> None:
    assert gw.send_once("13800000001", "hi", csid=csid).result == 1
    record = gw.state.messages()[0]
    assert record.text == sign + "hi"
    assert record.csid == (101 if sign == SHOP else 0)


@pytest.mark.parametrize(
    ("cgid", "price", "used"),
    [(None, "0.10", 1), ("0", "0.10", 1), ("1", "0.10", 1), ("80", "0.08", 80)],
)
def test_channel_group_defaults_to_the_first(
    gw: Gateway, cgid: str | None, price: str, used: int
) -> None:
    answer = gw.send_once("13800000001", "hi", cgid=cgid)
    assert answer.items[0]["price"] == price
    assert gw.state.messages()[0].cgid == used


@pytest.mark.parametrize(
    ("cgid", "csid", "length", "units"),
    [
        ("1", "0", 63, 1),  # 7 + 63 = 70: one unit
        ("1", "0", 64, 2),  # 71: ceil(71 / 67)
        ("1", "0", 127, 2),  # 134 = 2 x 67
        ("1", "0", 128, 3),  # 135
        ("80", "0", 64, 2),  # 71: ceil(71 / 64)
        ("80", "0", 121, 2),  # 128 = 2 x 64
        ("80", "0", 122, 3),  # 129
        ("1", "101", 59, 1),  # 11 + 59 = 70
        ("1", "101", 60, 2),  # 71
        ("1", "0", 1000, 16),  # 1007: ceil(1007 / 67)
    ],
)
def test_billing_counts_the_signature(
    gw: Gateway, cgid: str, csid: str, length: int, units: int
) -> None:
    answer = gw.send_once("13800000001,13800000002", "x" * length, cgid=cgid, csid=csid)
    price = Decimal(answer.items[0]["price"])
    assert answer.items[0]["total"] == str(2 * units)
    assert Decimal(answer.items[0]["remain"]) == Decimal(1000) - 2 * units * price
    assert {r.units for r in gw.state.messages()} == {units}


def test_billing_counts_code_points_not_bytes_or_utf16(gw: Gateway) -> None:
    answer = gw.send_once("13800000001", "😀" * 63)  # 63 astral characters + 7 = 70
    assert answer.items[0]["total"] == "1"
    answer = gw.send_once("13800000001", "测" * 64)
    assert answer.items[0]["total"] == "2"


def test_totals_prices_and_remains_agree_with_the_ledger(gw: Gateway) -> None:
    answers = [
        gw.send_once(numbers_csv(7, prefix="138"), "a" * 100, cgid="80"),
        gw.call("sendBatch", m=numbers_csv(3, prefix="138"), c="x{|}" + "y" * 200 + "{|}z"),
        gw.call(
            "sendParam", m=numbers_csv(2, prefix="138"), c="Dear {p1}", p1="Ann{|}Bob", cgid="80"
        ),
        gw.send_once("13800000001", "short"),
    ]
    assert all(a.result == 1 for a in answers)
    records = gw.state.messages()
    spent = sum((r.cost for r in records), Decimal(0))
    balance = gw.state.balance()
    assert balance == Decimal("1000.000") - spent
    assert answers[-1].items[-1]["remain"] == f"{balance:.3f}"
    assert gw.call("getBalance").items[0]["remain"] == f"{balance:.3f}"
    counters = gw.state.get_counters()
    assert counters.units_charged == sum(r.units for r in records)
    assert counters.amount_charged == spent
    assert counters.accepted_messages == len(records) == 13
    all_items = [item for a in answers for item in a.items]
    assert sum(int(item["total"]) for item in all_items) == counters.units_charged
    for record in records:
        assert record.cost == record.units * (
            Decimal("0.08") if record.cgid == 80 else Decimal("0.10")
        )


def test_send_batch_items_carry_running_remains(gw: Gateway) -> None:
    answer = gw.call(
        "sendBatch", m="13800000001,13800000002,13800000003", c="a{|}" + "b" * 70 + "{|}c"
    )
    assert [(i["total"], i["remain"]) for i in answer.items] == [
        ("1", "999.900"),
        ("2", "999.700"),
        ("1", "999.600"),
    ]
    records = gw.state.messages()
    assert [r.msgid for r in records] == [i["msgid"] for i in answer.items]
    assert [r.text for r in records] == [SIGN + "a", SIGN + "b" * 70, SIGN + "c"]


def test_send_param_renders_every_placeholder_once(gw: Gateway) -> None:
    answer = gw.call(
        "sendParam",
        m="13800000001,13800000002",
        c="{p1}, {p1}! See you in {p2}.",
        p1="Ann{|}Bob",
        p2="{p1}{|}Rome",
    )
    assert answer.result == 1
    assert [r.text for r in gw.state.messages()] == [
        SIGN + "Ann, Ann! See you in {p1}.",  # values are not expanded again
        SIGN + "Bob, Bob! See you in Rome.",
    ]


def _document_url(gw: Gateway, query: str) -> str:
    # The document's example URLs as printed, the masked numbers made real.
    query = query.replace("181****2707", "18100002707").replace("186****7370", "18600007370")
    return f"{gw.server.root_url}/OpenPlatform/OpenApi?{query}"


def _before_document_time(gw: Gateway) -> float:
    # The examples schedule for 2013-07-23 22:20:30: put the gateway's clock before that.
    gw.clock.set(dt.datetime(2013, 7, 23, 22, 0, 0, tzinfo=GATEWAY_TZ).timestamp())
    return dt.datetime(2013, 7, 23, 22, 20, 30, tzinfo=GATEWAY_TZ).timestamp()


def test_document_send_batch_example(gw: Gateway) -> None:
    scheduled = _before_document_time(gw)
    url = _document_url(
        gw,
        "action=sendBatch&ac=1001@100001&authkey=87B01469201D6557C2685137EB3B5DEC&cgid=80"
        "&csid=101&c=%E6%B5%8B%E8%AF%95%E4%B8%80%7B%7C%7D%E6%B5%8B%E8%AF%95%E4%BA%8C"
        "&m=181****2707,186****7370&t=20130723222030",
    )
    answer = parse_answer(gw.client.get(url))
    assert (answer.name, answer.result) == ("sendBatch", 1)
    assert [(i["total"], i["price"], i["remain"]) for i in answer.items] == [
        ("1", "0.08", "999.920"),
        ("1", "0.08", "999.840"),
    ]
    records = gw.state.messages()
    assert [(r.mobile, r.text) for r in records] == [
        ("18100002707", "【AisixShop】测试一"),
        ("18600007370", "【AisixShop】测试二"),
    ]
    assert [r.msgid for r in records] == [i["msgid"] for i in answer.items]
    assert {r.scheduled_for for r in records} == {scheduled}
    assert {(r.cgid, r.csid) for r in records} == {(80, 101)}


def test_document_send_param_example(gw: Gateway) -> None:
    _before_document_time(gw)
    url = _document_url(
        gw,
        "action=sendParam&ac=1001@100001&authkey=87B01469201D6557C2685137EB3B5DEC&cgid=80"
        "&csid=101&c=%7Bp1%7D%E4%BD%A0%E5%A5%BD%EF%BC%8C%E4%BD%A0%E5%9C%A8%7Bp2%7D%E5%90%A7"
        "&m=181****2707,186****7370&t=20130723222030"
        "&p1=%E5%B0%8F%E6%98%8E%7B%7C%7D%E5%B0%8F%E7%8E%8B"
        "&p2=%E4%B8%8A%E6%B5%B7%7B%7C%7D%E5%8C%97%E4%BA%AC",
    )
    answer = parse_answer(gw.client.get(url))
    assert (answer.name, answer.result, len(answer.items)) == ("sendParam", 1, 2)
    assert [(r.mobile, r.text) for r in gw.state.messages()] == [
        ("18100002707", "【AisixShop】小明你好，你在上海吧"),
        ("18600007370", "【AisixShop】小王你好，你在北京吧"),
    ]


def test_document_send_once_example_with_post(gw: Gateway) -> None:
    answer = gw.call("sendOnce", cgid=1, csid=101, c="测试", m="18100002707,18600007370")
    assert answer.items[0]["total"] == "2"
    assert {r.text for r in gw.state.messages()} == {"【AisixShop】测试"}


def test_scheduled_send_reports_only_after_its_time(gw: Gateway) -> None:
    now = gw.clock()
    t = dt.datetime.fromtimestamp(now + 120, GATEWAY_TZ).strftime("%Y%m%d%H%M%S")
    assert gw.send_once("13800000001", "later", t=t).result == 1
    assert gw.send_once("13800000002", "now").result == 1
    assert gw.state.messages()[0].scheduled_for == now + 120
    gw.clock.advance(5)  # the immediate one is due (report_delay 1 s), the scheduled one not
    assert [i["mobile"] for i in gw.call("getSendState").items] == ["13800000002"]
    gw.clock.advance(100)
    assert gw.call("getSendState").items == []
    gw.clock.advance(16)  # 121 s after: scheduled time + report delay
    assert [i["mobile"] for i in gw.call("getSendState").items] == ["13800000001"]


def test_other_accounts_have_their_own_groups_signs_and_balance(
    make_gateway: Callable[..., Gateway],
) -> None:
    other = AccountConfig(
        enterprise="300003",
        staff="7",
        authkey="B" * 32,
        balance="2.5",
        channel_groups=[ChannelGroupConfig(cgid=5, word=10, longword=8, price="0.5")],
    )
    gw = make_gateway(accounts=(AccountConfig(), other))
    creds = {"ac": "7@300003", "authkey": "B" * 32}
    answer = gw.send_once("13800000001", "abc", **creds)  # 7 + 3 = 10: one unit
    assert (answer.items[0]["price"], answer.items[0]["remain"]) == ("0.5", "2.000")
    assert gw.send_once("13800000001", "abcd", **creds).items[0]["total"] == "2"
    assert gw.send_once("13800000001", "x" * 20, **creds).result == -9
    assert gw.send_once("13800000001", "x", cgid="1", **creds).result == -8
    assert gw.state.balance() == Decimal("1000.000")


@pytest.mark.anyio
async def test_200_concurrent_sends_keep_balance_and_counters_exact(gw: Gateway) -> None:
    form = gw.form("sendOnce", m="13800000001,13800000002", c="concurrent")
    msgids: list[str] = []
    limits = hx.Limits(max_connections=32)
    async with hx.AsyncClient(limits=limits, timeout=30) as client:

        async def send() -> None:
            answer = parse_answer(await client.post(gw.open_url, data=form))
            assert answer.result == 1
            msgids.append(answer.items[0]["msgid"])

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(send)
    assert len(set(msgids)) == 200
    assert gw.state.balance() == Decimal("1000.000") - Decimal("0.10") * 400
    counters = gw.state.get_counters()
    assert (counters.accepted_messages, counters.units_charged) == (400, 400)
    assert counters.requests["sendOnce"] == counters.results[1] == 200
    assert gw.state.message_count == 400
    assert gw.state.pending_reports() == 400


def test_record_messages_off_keeps_counters_only(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(record_messages=False)
    assert gw.send_once(numbers_csv(5, prefix="138"), "x").result == 1
    assert gw.state.message_count == 0
    assert gw.state.get_counters().accepted_messages == 5
    assert gw.state.pending_reports() == 5
