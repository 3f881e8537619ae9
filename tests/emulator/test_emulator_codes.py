"""Every result code, in the gateway's check order, and what each leaves behind."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from emulator_helpers import Gateway

from aisix_async.emulator import AccountConfig

OPEN_ACTIONS = ["sendOnce", "getBalance", "updateKey", "getChannelGroup", "getSign"]


def test_ip_bound_answers_minus_1_to_everything(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(ip_bound=True)
    for action in [*OPEN_ACTIONS, "getSendState", "getReply"]:
        assert gw.call(action, m="13800000001", c="x").result == -1
    assert gw.state.balance() == Decimal("1000.000")
    assert gw.state.message_count == 0
    # A malformed account is refused as such first (0 comes before -1).
    assert gw.call("getBalance", ac="nope").result == 0


def test_rate_limit_is_a_token_bucket_per_account(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(rate=2.0, burst=3.0)
    results = [gw.call("getBalance").result for _ in range(5)]
    assert results == [1, 1, 1, -1, -1]
    gw.clock.advance(0.5)  # one token back at 2 per second
    assert [gw.call("getBalance").result for _ in range(2)] == [1, -1]
    gw.clock.advance(10.0)  # refills to the burst, not beyond
    assert [gw.call("getBalance").result for _ in range(4)] == [1, 1, 1, -1]
    counters = gw.state.get_counters()
    assert counters.rate_limited == 4
    assert counters.results[-1] == 4


def test_rate_limited_send_charges_nothing(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(rate=1.0)
    assert gw.send_once("13800000001", "a").result == 1
    assert gw.send_once("13800000001", "b").result == -1
    assert gw.state.message_count == 1
    assert gw.state.balance() == Decimal("999.900")


def test_default_burst_is_one_second_of_rate(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(rate=4.0)
    assert [gw.call("getBalance").result for _ in range(5)] == [1, 1, 1, 1, -1]


def test_rate_limit_changes_at_run_time(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    assert all(gw.call("getBalance").result == 1 for _ in range(10))
    gw.state.configure(rate=1.0, burst=1.0)
    assert [gw.call("getBalance").result for _ in range(2)] == [1, -1]
    gw.state.configure(rate=None)
    assert gw.call("getBalance").result == 1


def test_rate_limit_is_per_account(make_gateway: Callable[..., Gateway]) -> None:
    other = AccountConfig(enterprise="200002", staff="2001", authkey="A" * 32)
    gw = make_gateway(accounts=(AccountConfig(), other), rate=1.0, burst=1.0)
    assert gw.call("getBalance").result == 1
    assert gw.call("getBalance").result == -1
    assert gw.call("getBalance", ac="2001@200002", authkey="A" * 32).result == 1


def test_wrong_key_is_minus_2_and_five_in_a_row_lock_the_key(gw: Gateway) -> None:
    wrong = "F" * 32
    assert [gw.call("getBalance", authkey=wrong).result for _ in range(5)] == [-2] * 5
    assert gw.call("getBalance").result == -3  # even the right key, from now on
    assert gw.call("sendOnce", m="13800000001", c="x").result == -3
    assert gw.control("GET", "/state").json()["accounts"][gw.account]["locked"] is True
    response = gw.control("POST", f"/accounts/{gw.account}", json={"unlock": True})
    assert response.status_code == 200
    assert response.json()["locked"] is False
    assert gw.call("getBalance").result == 1


def test_a_right_key_resets_the_wrong_key_count(gw: Gateway) -> None:
    wrong = "F" * 32
    for _ in range(4):
        assert gw.call("getBalance", authkey=wrong).result == -2
    assert gw.call("getBalance").result == 1
    for _ in range(4):
        assert gw.call("getBalance", authkey=wrong).result == -2
    assert gw.call("getBalance").result == 1


def test_keys_are_compared_exactly(gw: Gateway) -> None:
    assert gw.call("getBalance", authkey=gw.authkey.lower()).result == -2
    assert gw.call("getBalance", authkey="").result == -2


def test_lock_after_is_configurable(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(lock_after=2)
    assert [gw.call("getBalance", authkey="x").result for _ in range(3)] == [-2, -2, -3]


def test_unknown_enterprise_is_minus_5(gw: Gateway) -> None:
    assert gw.call("getBalance", ac="1001@999999").result == -5


def test_disabled_enterprise_is_minus_5(gw: Gateway) -> None:
    gw.state.update_account(enterprise_enabled=False)
    assert gw.call("getBalance").result == -5
    assert gw.call("getBalance", ac="1002@100001").result == -5


def test_unknown_staff_is_minus_6(gw: Gateway) -> None:
    assert gw.call("getBalance", ac="1002@100001").result == -6
    assert gw.call("getBalance", ac="01001@100001").result == -6


def test_disabled_staff_is_minus_6(gw: Gateway) -> None:
    gw.state.update_account(staff_enabled=False)
    assert gw.call("getBalance").result == -6


def test_check_order_account_before_key(gw: Gateway) -> None:
    gw.state.update_account(staff_enabled=False)
    assert gw.call("getBalance", authkey="wrong").result == -6
    assert gw.state.update_account()["wrong_keys"] == 0


@pytest.mark.parametrize("action", [*OPEN_ACTIONS, "sendBatch", "sendParam"])
def test_interface_disabled_is_minus_7_on_open_api(gw: Gateway, action: str) -> None:
    gw.state.update_account(interface_enabled=False)
    assert gw.call(action, m="13800000001,13800000002", c="x{|}y", p1="a{|}b").result == -7
    assert gw.state.balance() == Decimal("1000.000")


@pytest.mark.parametrize("action", ["getSendState", "getReply"])
def test_interface_disabled_still_serves_data_api(gw: Gateway, action: str) -> None:
    gw.state.update_account(interface_enabled=False)
    assert gw.call(action).result == 1


def test_key_check_comes_before_interface(gw: Gateway) -> None:
    gw.state.update_account(interface_enabled=False)
    assert gw.call("getBalance", authkey="wrong").result == -2


@pytest.mark.parametrize("cgid", ["2", "81", "100"])
def test_channel_group_not_the_accounts_is_minus_8(gw: Gateway, cgid: str) -> None:
    answer = gw.send_once("13800000001", "hello", cgid=cgid)
    assert answer.result == -8
    assert gw.state.message_count == 0


def test_shape_comes_before_channel_group(gw: Gateway) -> None:
    assert gw.send_once("", "hello", cgid="2").result == -4


def test_short_balance_is_minus_9_and_charges_nothing(gw: Gateway) -> None:
    gw.state.set_balance(None, "0.50")
    numbers = ",".join(f"1380000000{i}" for i in range(6))  # 6 x 0.10 > 0.50
    answer = gw.send_once(numbers, "hello")
    assert (answer.result, answer.items) == (-9, [])
    assert gw.state.balance() == Decimal("0.50")
    assert gw.state.message_count == 0
    assert gw.state.pending_reports() == 0
    counters = gw.state.get_counters()
    assert (counters.accepted_messages, counters.units_charged) == (0, 0)


def test_balance_check_covers_the_whole_batch(gw: Gateway) -> None:
    gw.state.set_balance(None, "0.15")  # enough for the first message, not the second
    answer = gw.call("sendBatch", m="13800000001,13800000002", c="a{|}b")
    assert answer.result == -9
    assert gw.state.message_count == 0
    assert gw.state.balance() == Decimal("0.15")


def test_exact_balance_is_enough(gw: Gateway) -> None:
    gw.state.set_balance(None, "0.50")
    numbers = ",".join(f"1380000000{i}" for i in range(5))
    answer = gw.send_once(numbers, "hello")
    assert answer.result == 1
    assert answer.items[0]["remain"] == "0.000"
    assert gw.send_once("13800000001", "again").result == -9


def test_error_before_charge_is_minus_10_with_nothing_charged(gw: Gateway) -> None:
    gw.state.set_faults(error_before_charge=1.0)
    answer = gw.send_once("13800000001", "hello")
    assert (answer.result, answer.items) == (-10, [])
    assert gw.state.message_count == 0
    assert gw.state.balance() == Decimal("1000.000")


def test_error_after_charge_is_minus_10_with_the_message_sent(gw: Gateway) -> None:
    gw.state.set_faults(error_after_charge=1.0)
    answer = gw.send_once("13800000001,13800000002", "hello")
    assert (answer.result, answer.items) == (-10, [])
    records = gw.state.messages()
    assert [r.mobile for r in records] == ["13800000001", "13800000002"]
    assert {r.fault for r in records} == {"error_after_charge"}
    assert gw.state.balance() == Decimal("999.800")
    assert gw.state.pending_reports() == 2


def test_error_after_charge_leaves_a_refused_request_its_own_answer(
    make_gateway: Callable[..., Gateway],
) -> None:
    # Met the limit: not charged, so no "charged, then -10": the -1 stands, and the fault
    # is counted only where it fired (6 -10 with 1 message charged, before).
    gw = make_gateway(rate=1.0, burst=1.0)
    gw.state.set_faults(error_after_charge=1.0)
    results = [gw.send_once(f"1380000000{i}", "hello").result for i in range(6)]
    assert results == [-10, -1, -1, -1, -1, -1]
    assert gw.state.message_count == 1
    counters = gw.state.get_counters()
    assert counters.faults["error_after_charge"] == 1
    assert counters.rate_limited == 5


# --------------------------------------------------------------------- -4 shapes

MANY = ",".join(f"138{i:08d}" for i in range(1001))
HUNDRED_ONE = ",".join(f"138{i:08d}" for i in range(101))


@pytest.mark.parametrize(
    ("m", "c"),
    [
        pytest.param(None, "x", id="no-numbers"),
        pytest.param("", "x", id="empty-numbers"),
        pytest.param(MANY, "x", id="1001-numbers"),
        pytest.param("12", "x", id="too-short"),
        pytest.param("1" * 21, "x", id="too-long"),
        pytest.param("1380000000a", "x", id="letter"),
        pytest.param("+", "x", id="plus-only"),
        pytest.param(" 8613800000001", "x", id="plus-decoded-as-space"),
        pytest.param("13800000001,", "x", id="trailing-comma"),
        pytest.param("13800000001,,13800000002", "x", id="empty-between"),
        pytest.param("13800000001\n", "x", id="trailing-newline"),
        pytest.param("１３８００００００01", "x", id="full-width-digits"),
        pytest.param("13800000001", None, id="no-content"),
        pytest.param("13800000001", "", id="empty-content"),
        pytest.param("13800000001", "x" * 1001, id="1001-characters"),
    ],
)
def test_send_once_shapes(gw: Gateway, m: str | None, c: str | None) -> None:
    assert gw.send_once(m, c).result == -4  # type: ignore[arg-type]
    assert gw.state.message_count == 0


def test_send_once_limits_are_inclusive(gw: Gateway) -> None:
    gw.state.set_balance(None, "10000")
    numbers = ",".join(f"138{i:08d}" for i in range(1000))
    answer = gw.send_once(numbers, "x" * 1000)
    assert answer.result == 1
    assert gw.state.message_count == 1000
    assert gw.send_once("+8613800000001", "y").result == 1
    assert gw.send_once("123", "z").result == 1


@pytest.mark.parametrize(
    ("m", "c"),
    [
        pytest.param("13800000001", "a", id="one-pair"),
        pytest.param(HUNDRED_ONE, "{|}".join(["a"] * 101), id="101-pairs"),
        pytest.param("13800000001,13800000002", "a", id="fewer-contents"),
        pytest.param("13800000001,13800000002", "a{|}b{|}c", id="more-contents"),
        pytest.param("13800000001,13800000002", "a{|}", id="empty-content"),
        pytest.param("13800000001,13800000002", "a{}b", id="document-prose-separator"),
        pytest.param("13800000001,13800000002", "a{|}" + "b" * 1001, id="long-content"),
    ],
)
def test_send_batch_shapes(gw: Gateway, m: str, c: str) -> None:
    assert gw.call("sendBatch", m=m, c=c).result == -4
    assert gw.state.message_count == 0


TWO = "13800000001,13800000002"


@pytest.mark.parametrize(
    ("m", "c", "params"),
    [
        pytest.param("13800000001", "Hi {p1}", {"p1": "a"}, id="one-number"),
        pytest.param(TWO, "Hi", {}, id="no-p1"),
        pytest.param(TWO, "Hi {p1}", {"p1": "a"}, id="too-few-values"),
        pytest.param(TWO, "Hi {p1}", {"p1": "a{|}b{|}c"}, id="too-many-values"),
        pytest.param(TWO, "Hi {p1} {p2}", {"p1": "a{|}b"}, id="placeholder-without-value"),
        pytest.param(TWO, "Hi {p1} {p11}", {"p1": "a{|}b"}, id="p11"),
        pytest.param(TWO, "Hi {p1}", {"P1": "a{|}b"}, id="upper-case-P"),
        pytest.param(TWO, "{p1}", {"p1": "a{|}"}, id="renders-empty"),
        pytest.param(TWO, "{p1}", {"p1": "a{|}" + "b" * 1001}, id="renders-too-long"),
        pytest.param(TWO, "", {"p1": "a{|}b"}, id="empty-template"),
        # Every parameter given has one value per number, used by the content or not.
        pytest.param(TWO, "Hi {p1}", {"p1": "a{|}b", "p2": "c"}, id="unused-too-few"),
        pytest.param(TWO, "Hi {p1}", {"p1": "a{|}b", "p2": "c{|}d{|}e"}, id="unused-too-many"),
        pytest.param(TWO, "Hi {p2}", {"p1": "", "p2": "a{|}b"}, id="unused-p1-empty"),
    ],
)
def test_send_param_shapes(gw: Gateway, m: str, c: str, params: dict[str, str]) -> None:
    assert gw.call("sendParam", m=m, c=c, **params).result == -4
    assert gw.state.message_count == 0


@pytest.mark.parametrize(
    ("c", "params", "texts"),
    [
        pytest.param("Hi {p2}", {"p2": "a{|}b"}, ["Hi a", "Hi b"], id="p2-without-p1"),
        # A parameter takes effect where the content uses it: one it does not use, with
        # one value per number, is sent and not substituted (the SDK sends p1 for "{p2}").
        pytest.param("Hi {p2}", {"p1": "x{|}y", "p2": "a{|}b"}, ["Hi a", "Hi b"], id="p1-unused"),
        pytest.param(
            "Hi {p1}", {"p1": "a{|}b", "p2": "c{|}{p1}"}, ["Hi a", "Hi b"], id="p2-unused"
        ),
    ],
)
def test_send_param_parameters_count_where_the_content_uses_them(
    gw: Gateway, c: str, params: dict[str, str], texts: list[str]
) -> None:
    assert gw.call("sendParam", m=TWO, c=c, **params).result == 1
    sign = "【Aisix】"
    assert [m.text for m in gw.state.messages()] == [sign + t for t in texts]


@pytest.mark.parametrize(
    "t",
    [
        "2023111422143",  # 13 digits
        "202311142214300",  # 15 digits
        "2023-11-14 22:14",
        "20231301000000",  # month 13
        "20230230120000",  # 30 February
        "20231115061410",  # 50 s ahead in UTC+8
        "20231115061300",  # in the past
        "20231114221500",  # 60 s ahead if read as UTC: it is UTC+8, so hours in the past
    ],
)
def test_schedule_time_shapes(gw: Gateway, t: str) -> None:
    # The clock is 2023-11-14 22:13:20 UTC, that is 2023-11-15 06:13:20 in UTC+8.
    assert gw.send_once("13800000001", "x", t=t).result == -4
    assert gw.state.message_count == 0


def test_schedule_exactly_one_minute_ahead_is_accepted(gw: Gateway) -> None:
    assert gw.send_once("13800000001", "x", t="20231115061420").result == 1
    assert gw.state.messages()[0].scheduled_for == gw.clock() + 60


def test_empty_schedule_time_means_now(gw: Gateway) -> None:
    assert gw.send_once("13800000001", "x", t="").result == 1
    assert gw.state.messages()[0].scheduled_for is None


@pytest.mark.parametrize("cgid", ["abc", "-1", "1.0", "１"])
def test_malformed_channel_group_is_minus_4(gw: Gateway, cgid: str) -> None:
    assert gw.send_once("13800000001", "x", cgid=cgid).result == -4


def test_result_counters_track_every_answer(gw: Gateway) -> None:
    gw.call("getBalance")
    gw.call("getBalance", authkey="bad")
    gw.call("getBalance", ac="bad")
    gw.call("nope")
    counters = gw.state.get_counters()
    assert dict(counters.results) == {1: 1, -2: 1, 0: 1, -4: 1}
    assert dict(counters.requests) == {"getBalance": 3, "(unknown)": 1}
