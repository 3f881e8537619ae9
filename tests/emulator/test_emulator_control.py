"""The /_emulator/ JSON endpoints, and the account actions they complement."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from emulator_helpers import Gateway

from aisix_async.emulator import DEFAULT_AUTHKEY


def test_state_shows_counters_accounts_and_settings(gw: Gateway) -> None:
    gw.send_once("13800000001,13800000002", "hi")
    gw.call("getBalance", authkey="bad")
    gw.state.inject_reply("13800000001", "hey")
    gw.clock.advance(1)
    state = gw.control("GET", "/state").json()
    assert state["requests"] == {"sendOnce": 1, "getBalance": 1}
    assert state["results"] == {"-2": 1, "1": 1}
    assert (state["accepted_messages"], state["units_charged"]) == (2, 2)
    assert (state["amount_charged"], state["ledger_size"]) == ("0.20", 2)
    account = state["accounts"]["1001@100001"]
    assert account["balance"] == "999.800"
    assert account["authkey"] == DEFAULT_AUTHKEY
    assert (account["wrong_keys"], account["locked"]) == (1, False)
    assert (account["pending_reports"], account["due_reports"]) == (2, 2)
    assert account["pending_replies"] == 1
    assert state["clock"] == gw.clock()
    assert state["config"]["rate"] is None
    assert state["config"]["report_mix"]["DELIVRD"] == 0.9


def test_messages_are_paged(gw: Gateway) -> None:
    gw.send_once(",".join(f"1380000000{i}" for i in range(5)), "hi")
    page = gw.control("GET", "/messages?offset=1&limit=3").json()
    assert (page["total"], page["offset"], page["limit"]) == (5, 1, 3)
    assert [m["mobile"] for m in page["messages"]] == ["13800000001", "13800000002", "13800000003"]
    first = page["messages"][0]
    assert first["text"] == "【Aisix】hi"
    assert (first["cost"], first["units"], first["action"]) == ("0.10", 1, "sendOnce")
    assert set(first) == {
        "account", "action", "msgid", "mobile", "text", "units", "cost", "accepted_at",
        "scheduled_for", "cgid", "csid", "request_id", "fault",
    }  # fmt: skip
    assert gw.control("GET", "/messages").json()["total"] == 5
    assert gw.control("GET", "/messages?offset=10").json()["messages"] == []
    assert gw.control("GET", "/messages?limit=x").status_code == 400


def test_config_changes_at_run_time(gw: Gateway) -> None:
    response = gw.control(
        "POST",
        "/config",
        json={
            "rate": 1,
            "burst": 1,
            "report_delay": 5,
            "reports_per_call": 2,
            "blacklist": ["13800000001"],
            "report_mix": {"EXPIRED": 1},
            "latency_ms": 0,
            "seed": 9,
        },
    )
    assert response.status_code == 200
    config = response.json()
    assert (config["rate"], config["burst"], config["effective_burst"]) == (1.0, 1.0, 1.0)
    assert (config["report_delay"], config["reports_per_call"], config["seed"]) == (5.0, 2, 9)
    assert gw.send_once("13800000001,13800000002,13800000003", "hi").result == 1
    assert gw.call("getBalance").result == -1
    gw.clock.advance(5)
    items = gw.call("getSendState").items
    assert [(i["mobile"], i["return"]) for i in items] == [
        ("13800000001", "DTBLACK"),
        ("13800000002", "EXPIRED"),
    ]
    gw.control("POST", "/config", json={"rate": None, "ip_bound": True})
    assert gw.call("getBalance").result == -1
    gw.control("POST", "/config", json={"ip_bound": False})
    assert gw.call("getBalance").result == 1


@pytest.mark.parametrize(
    "body",
    [
        {"nonsense": 1},
        {"rate": "fast"},
        {"rate": -1},
        {"ip_bound": 1},
        {"faults": {"http_502": 2}},
        {"faults": {"bogus": 0.1}},
        {"faults": {"http_502": 0.7, "slow_body": 0.7}},
        {"report_mix": {"DELIVRD": -1}},
        {"blacklist": "13800000001"},
        {"reports_per_call": 0},
        {"accounts": []},
        [1, 2],
        # A typo fired no fault at all.
        {"faults": {"fault_actions": ["getbalance"]}},
    ],
)
def test_bad_config_is_400_and_changes_nothing(gw: Gateway, body: object) -> None:
    before = gw.control("GET", "/config").json()
    response = gw.control("POST", "/config", json=body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert gw.control("GET", "/config").json() == before


@pytest.mark.parametrize("body", [b'{"rate": NaN}', b'{"latency_ms": Infinity}'])
def test_non_finite_numbers_in_config_are_400(gw: Gateway, body: bytes) -> None:
    # Python's json reads NaN and Infinity; served, they broke answers and the config.
    before = gw.control("GET", "/config").json()
    url = gw.control_url + "/config"
    response = gw.client.post(url, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert gw.control("GET", "/config").json() == before


def test_account_endpoint_sets_balance_flags_and_key(gw: Gateway) -> None:
    url = f"/accounts/{gw.account}"
    response = gw.control("POST", url, json={"balance": "0.05", "interface_enabled": False})
    assert response.status_code == 200
    assert (response.json()["balance"], response.json()["interface_enabled"]) == ("0.050", False)
    assert gw.call("getBalance").result == -7
    gw.control("POST", url, json={"interface_enabled": True})
    assert gw.send_once("13800000001", "hi").result == -9
    gw.control("POST", url, json={"authkey": "C" * 32})
    assert gw.call("getBalance", authkey="C" * 32).items[0]["remain"] == "0.050"
    assert gw.control("GET", url).json()["authkey"] == "C" * 32
    assert gw.control("POST", "/accounts/9@9", json={"balance": 1}).status_code == 404
    assert gw.control("POST", url, json={"balance": "lots"}).status_code == 400
    assert gw.control("POST", url, json={"balance": "NaN"}).status_code == 400
    assert gw.control("POST", url, json={"color": "red"}).status_code == 400


def test_reset_restores_everything(gw: Gateway) -> None:
    gw.send_once("13800000001", "hi")
    gw.call("updateKey")
    gw.state.inject_reply("13800000001", "x")
    gw.control("POST", "/config", json={"rate": 5})
    assert gw.control("POST", "/reset").json() == {"reset": True}
    state = gw.control("GET", "/state").json()
    assert state["ledger_size"] == 0
    assert state["requests"] == {}
    assert state["results"] == {}
    account = state["accounts"]["1001@100001"]
    assert (account["balance"], account["authkey"]) == ("1000.000", DEFAULT_AUTHKEY)
    assert (account["pending_reports"], account["pending_replies"]) == (0, 0)
    assert state["config"]["rate"] is None


def test_unknown_control_paths_and_methods(gw: Gateway) -> None:
    assert gw.control("GET", "/nothing").status_code == 404
    assert gw.control("POST", "/state").status_code == 405
    assert gw.control("GET", "/reset").status_code == 405
    assert gw.control("POST", "/config", json=None).status_code == 200  # empty: no change
    bad = gw.client.post(gw.control_url + "/config", content=b"{not json")
    assert bad.status_code == 400


def test_update_key_rotates_the_key(gw: Gateway) -> None:
    old = gw.authkey
    answer = gw.call("updateKey")
    assert (answer.name, answer.result) == ("updateKey", 1)
    [item] = answer.items
    assert (item["cid"], item["sid"]) == ("100001", "1001")
    assert re.fullmatch(r"[0-9A-F]{32}", item["authkey"])
    assert item["authkey"] != old
    assert gw.call("getBalance", authkey=old).result == -2
    assert gw.call("getBalance", authkey=item["authkey"]).result == 1
    assert gw.server.authkey == item["authkey"]


def test_get_channel_group_and_get_sign(gw: Gateway) -> None:
    groups = gw.call("getChannelGroup")
    assert groups.items == [
        {
            "cid": "100001",
            "sid": "1001",
            "cgid": "1",
            "word": "70",
            "longword": "67",
            "price": "0.10",
        },
        {
            "cid": "100001",
            "sid": "1001",
            "cgid": "80",
            "word": "70",
            "longword": "64",
            "price": "0.08",
        },
    ]
    signs = gw.call("getSign")
    assert signs.items == [
        {"cid": "100001", "sid": "1001", "csid": "0", "sign": "【Aisix】"},
        {"cid": "100001", "sid": "1001", "csid": "101", "sign": "【AisixShop】"},
    ]


def test_balance_set_from_code_is_seen_over_http(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    gw.state.set_balance(None, Decimal("12.3456"))
    assert gw.call("getBalance").items[0]["remain"] == "12.346"
    assert gw.control("GET", "/state").json()["accounts"][gw.account]["balance"] == "12.346"
