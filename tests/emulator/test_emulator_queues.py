"""Delivery reports and replies: queues that hand each record out exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from emulator_helpers import Gateway
from helpers import numbers_csv

from aisix_async.emulator import AccountConfig


def test_each_report_is_returned_once_when_due(gw: Gateway) -> None:
    answer = gw.send_once("13900000001,13900000002", "hi")
    msgid = answer.items[0]["msgid"]
    assert gw.call("getSendState").items == []  # not due before report_delay (1 s)
    gw.clock.advance(1.0)
    first = gw.call("getSendState")
    assert (first.name, first.result) == ("getSendState", 1)
    assert [(i["msgid"], i["mobile"]) for i in first.items] == [
        (msgid, "13900000001"),
        (msgid, "13900000002"),
    ]
    assert all(list(i) == ["id", "msgid", "mobile", "result", "return"] for i in first.items)
    assert gw.call("getSendState").items == []
    assert gw.state.pending_reports() == 0


def test_at_most_reports_per_call_and_ids_run_on(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(reports_per_call=3)
    gw.send_once(numbers_csv(7), "hi")
    gw.clock.advance(2)
    batches = [gw.call("getSendState").items for _ in range(4)]
    assert [len(b) for b in batches] == [3, 3, 1, 0]
    ids = [int(i["id"]) for b in batches for i in b]
    assert ids == list(range(1, 8))
    mobiles = [i["mobile"] for b in batches for i in b]
    assert mobiles == numbers_csv(7).split(",")


def test_reports_come_in_due_time_order(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(report_delay=10.0)
    gw.send_once("13900000001", "first")
    gw.state.configure(report_delay=1.0)
    gw.send_once("13900000002", "second")
    gw.clock.advance(1)
    assert [i["mobile"] for i in gw.call("getSendState").items] == ["13900000002"]
    gw.clock.advance(9)
    assert [i["mobile"] for i in gw.call("getSendState").items] == ["13900000001"]


def test_blacklisted_numbers_always_get_dtblack(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(blacklist={"13900000002"}, report_mix={"DELIVRD": 1.0})
    gw.send_once("13900000001,13900000002,13900000003", "hi")
    gw.clock.advance(1)
    items = {i["mobile"]: (i["result"], i["return"]) for i in gw.call("getSendState").items}
    assert items == {
        "13900000001": ("2", "DELIVRD"),
        "13900000002": ("1", "DTBLACK"),
        "13900000003": ("2", "DELIVRD"),
    }


@pytest.mark.parametrize(
    ("code", "result"),
    [
        ("DELIVRD", "2"),
        ("UNKNOWN", "0"),
        ("ACCEPTD", "0"),
        ("ERRBUSY", "0"),
        ("UNDELIV", "1"),
        ("REJECTD", "1"),
        ("EXPIRED", "1"),
        ("DTFAILD", "1"),
    ],
)
def test_result_attribute_follows_the_code(
    make_gateway: Callable[..., Gateway], code: str, result: str
) -> None:
    gw = make_gateway(report_mix={code: 1.0})
    gw.send_once("13900000001", "hi")
    gw.clock.advance(1)
    [item] = gw.call("getSendState").items
    assert (item["return"], item["result"]) == (code, result)


def test_report_mix_is_respected_and_repeats_with_the_seed(
    make_gateway: Callable[..., Gateway],
) -> None:
    def codes(seed: int) -> list[str]:
        gw = make_gateway(
            seed=seed, reports_per_call=1000, report_mix={"DELIVRD": 0.7, "UNDELIV": 0.3}
        )
        gw.state.set_balance(None, 10_000)
        gw.send_once(numbers_csv(1000), "hi")
        gw.clock.advance(1)
        return [i["return"] for i in gw.call("getSendState").items]

    first = codes(11)
    counts = Counter(first)
    assert set(counts) == {"DELIVRD", "UNDELIV"}
    assert 620 <= counts["DELIVRD"] <= 780
    assert codes(11) == first
    assert codes(12) != first


def test_default_mix_is_mostly_delivered(gw: Gateway) -> None:
    gw.state.set_balance(None, 10_000)
    gw.state.configure(reports_per_call=1000)
    gw.send_once(numbers_csv(1000), "hi")
    gw.clock.advance(1)
    counts = Counter(i["return"] for i in gw.call("getSendState").items)
    assert 850 <= counts["DELIVRD"] <= 950
    assert set(counts) <= {"DELIVRD", "UNDELIV", "REJECTD", "EXPIRED", "DTBLACK"}


def test_reports_can_be_turned_off(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(reports=False)
    gw.send_once("13900000001", "hi")
    gw.clock.advance(10)
    assert gw.call("getSendState").items == []
    assert gw.state.message_count == 1


def test_reports_belong_to_their_account(make_gateway: Callable[..., Gateway]) -> None:
    other = AccountConfig(enterprise="200002", staff="2001", authkey="A" * 32)
    gw = make_gateway(accounts=(AccountConfig(), other))
    gw.send_once("13900000001", "mine")
    gw.clock.advance(1)
    assert gw.call("getSendState", ac="2001@200002", authkey="A" * 32).items == []
    assert len(gw.call("getSendState").items) == 1


def test_reports_via_the_data_platform_path(gw: Gateway) -> None:
    gw.send_once("13900000001", "hi")
    gw.clock.advance(1)
    answer = gw.call("getSendState", url=gw.server.data_platform_url)
    assert [i["mobile"] for i in answer.items] == ["13900000001"]


def test_reply_injected_in_code_is_returned_once(gw: Gateway) -> None:
    gw.state.inject_reply("13900000001", "Yes, please")
    gw.state.inject_reply("13900000002", "STOP", time_ms=1373883378000)
    answer = gw.call("getReply")
    assert (answer.name, answer.result) == ("getReply", 1)
    assert answer.items == [
        {
            "id": "1",
            "time": str(int(gw.clock() * 1000)),
            "mobile": "13900000001",
            "content": "Yes, please",
        },
        {"id": "2", "time": "1373883378000", "mobile": "13900000002", "content": "STOP"},
    ]
    assert gw.call("getReply").items == []


def test_reply_injected_over_http(gw: Gateway) -> None:
    response = gw.control(
        "POST", "/replies", json={"mobile": "13900000001", "content": "hi\nthere"}
    )
    assert response.json() == {"queued": 1}
    response = gw.control(
        "POST",
        "/replies",
        json=[{"mobile": "13900000002", "content": "a"}, {"mobile": "13900000003", "content": "b"}],
    )
    assert response.json() == {"queued": 2}
    items = gw.call("getReply").items
    assert [(i["mobile"], i["content"]) for i in items] == [
        ("13900000001", "hi\nthere"),
        ("13900000002", "a"),
        ("13900000003", "b"),
    ]


def test_replies_at_most_per_call(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(reports_per_call=2)
    for n in range(5):
        gw.state.inject_reply(f"1390000000{n}", f"r{n}")
    assert [len(gw.call("getReply").items) for _ in range(4)] == [2, 2, 1, 0]


def test_replies_go_to_the_named_account(make_gateway: Callable[..., Gateway]) -> None:
    other = AccountConfig(enterprise="200002", staff="2001", authkey="A" * 32)
    gw = make_gateway(accounts=(AccountConfig(), other))
    gw.control("POST", "/replies", json={"mobile": "1", "content": "x", "account": "2001@200002"})
    assert gw.call("getReply").items == []
    assert len(gw.call("getReply", ac="2001@200002", authkey="A" * 32).items) == 1


def test_bad_reply_injections_are_400(gw: Gateway) -> None:
    for body in (
        {"mobile": 1, "content": "x"},
        {"content": "x"},
        {"mobile": "1", "content": "x", "zz": 1},
    ):
        assert gw.control("POST", "/replies", json=body).status_code == 400
    response = gw.control(
        "POST", "/replies", json={"mobile": "1", "content": "x", "account": "9@9"}
    )
    assert response.status_code == 400
    assert gw.state.pending_replies() == 0
