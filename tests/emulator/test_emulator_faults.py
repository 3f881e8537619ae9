"""Fault injection: what a plain HTTP client (httpx or httpx2) sees, and what the ledger says."""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from emulator_helpers import Gateway, parse_answer
from stack_support import hx

from aisix_async.emulator import FaultConfig


def test_http_502_never_reaches_the_gateway(gw: Gateway) -> None:
    gw.state.set_faults(http_502=1.0)
    response = gw.post("sendOnce", m="13800000001", c="hi")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text
    assert gw.state.message_count == 0
    assert gw.state.balance() == Decimal("1000.000")
    counters = gw.state.get_counters()
    assert counters.faults["http_502"] == 1
    assert counters.http_errors[502] == 1
    assert not counters.results


def test_drop_after_process_cuts_the_body_after_charging(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw.state.set_faults(drop_after_process=1.0)
    with caplog.at_level(logging.DEBUG, logger="uvicorn.error"):
        with pytest.raises(hx.RemoteProtocolError, match=r"without sending complete message body"):
            gw.post("sendOnce", m="13800000001,13800000002", c="hi")
        gw.state.set_faults(drop_after_process=0.0)
        assert gw.call("getBalance").items[0]["remain"] == "999.800"  # the next request is fine
    records = gw.state.messages()
    assert [(r.mobile, r.fault) for r in records] == [
        ("13800000001", "drop_after_process"),
        ("13800000002", "drop_after_process"),
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_drop_after_update_key_loses_the_new_key(gw: Gateway) -> None:
    old = gw.authkey
    gw.state.set_faults(drop_after_process=1.0)
    with pytest.raises(hx.RemoteProtocolError):
        gw.post("updateKey")
    gw.state.set_faults(drop_after_process=0.0)
    assert gw.state.authkey() != old
    assert gw.call("getBalance", authkey=old).result == -2


def test_truncated_xml_is_complete_http_but_broken_xml(gw: Gateway) -> None:
    gw.state.set_faults(truncated_xml=1.0)
    response = gw.post("sendOnce", m="13800000001", c="hi")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content.startswith(b'<?xml version="1.0"')
    with pytest.raises(ET.ParseError):
        ET.fromstring(response.content)
    assert gw.state.message_count == 1
    assert gw.state.balance() == Decimal("999.900")


def test_slow_body_arrives_whole_but_late(gw: Gateway) -> None:
    gw.state.set_faults(slow_body=1.0, slow_body_ms=200.0)
    started = time.perf_counter()
    answer = parse_answer(gw.post("sendOnce", m="13800000001", c="hi"))
    assert time.perf_counter() - started >= 0.15
    assert answer.result == 1
    assert gw.state.messages()[0].fault == "slow_body"


def test_slow_body_trips_a_short_read_timeout_after_charging(gw: Gateway) -> None:
    gw.state.set_faults(slow_body=1.0, slow_body_ms=400.0)
    with (
        hx.Client(timeout=hx.Timeout(5.0, read=0.02)) as client,
        pytest.raises(hx.ReadTimeout),
    ):
        client.post(gw.open_url, data=gw.form("sendOnce", m="13800000001", c="hi"))
    assert gw.state.message_count == 1


def test_latency_delays_every_request(gw: Gateway) -> None:
    gw.state.set_faults(latency_ms=60.0)
    started = time.perf_counter()
    assert gw.call("getBalance").result == 1
    assert time.perf_counter() - started >= 0.055


def test_a_request_held_by_latency_is_counted_until_it_is_processed(gw: Gateway) -> None:
    gw.state.set_faults(latency_ms=300.0)
    sender = threading.Thread(target=gw.send_once, args=("13800000001", "hi"))
    sender.start()
    deadline = time.monotonic() + 5
    while gw.state.requests_held == 0:
        assert time.monotonic() < deadline, "the request was never held"
        time.sleep(0.005)
    # Held: received, not yet processed, so nothing is in the ledger.
    assert gw.state.message_count == 0
    sender.join(timeout=5)
    assert gw.state.requests_held == 0
    assert gw.state.message_count == 1


def test_fault_actions_narrow_the_faults(gw: Gateway) -> None:
    gw.state.set_faults(error_before_charge=1.0, fault_actions={"sendOnce"})
    assert gw.call("getBalance").result == 1
    assert gw.send_once("13800000001", "hi").result == -10
    assert gw.call("sendBatch", m="13800000001,13800000002", c="a{|}b").result == 1


def test_faults_never_touch_the_control_endpoints(gw: Gateway) -> None:
    gw.state.set_faults(http_502=1.0, latency_ms=0.0)
    response = gw.control("GET", "/state")
    assert response.status_code == 200
    assert response.json()["config"]["faults"]["http_502"] == 1.0
    assert gw.control("POST", "/config", json={"faults": {"http_502": 0.0}}).status_code == 200
    assert gw.call("getBalance").result == 1


def test_faults_set_over_http(gw: Gateway) -> None:
    response = gw.control(
        "POST",
        "/config",
        json={"faults": {"error_after_charge": 1.0, "fault_actions": ["sendOnce"]}},
    )
    assert response.status_code == 200
    assert response.json()["faults"]["fault_actions"] == ["sendOnce"]
    assert gw.send_once("13800000001", "hi").result == -10
    assert gw.state.message_count == 1
    assert gw.state.get_counters().faults["error_after_charge"] == 1


def test_fault_decisions_repeat_with_the_seed(gw: Gateway) -> None:
    def run(seed: int) -> list[int]:
        gw.state.reset(gw.state.config)
        gw.state.configure(seed=seed, faults=FaultConfig(error_before_charge=0.5))
        return [gw.call("getBalance").result for _ in range(40)]

    first = run(3)
    assert set(first) == {1, -10}
    assert 8 <= first.count(-10) <= 32
    assert run(3) == first
    assert run(4) != first


def test_each_fault_fires_with_its_probability(gw: Gateway) -> None:
    gw.state.set_faults(error_before_charge=0.25, error_after_charge=0.25, charge_failed=0.25)
    results = [gw.call("sendOnce", m="13800000001", c="hi").result for _ in range(200)]
    counters = gw.state.get_counters()
    assert counters.faults["error_before_charge"] + counters.faults[
        "error_after_charge"
    ] == results.count(-10)
    assert counters.faults["charge_failed"] == results.count(-11)
    assert 60 <= results.count(-10) <= 140
    assert 20 <= counters.faults["error_before_charge"] <= 80
    assert 20 <= results.count(-11) <= 80
    # Sent: the successes and the "after charge" errors; -11 sent and charged nothing.
    assert gw.state.message_count == results.count(1) + counters.faults["error_after_charge"]


def test_charge_faults_act_as_the_document_says_outside_the_sends(gw: Gateway) -> None:
    # updateKey's -10 means "update failed": the old key must keep working.
    gw.state.set_faults(error_after_charge=1.0)
    assert gw.call("updateKey").result == -10
    gw.state.set_faults(error_after_charge=0.0, charge_failed=1.0)
    assert gw.call("getBalance").result == 1  # -11 is a send's answer only
    assert gw.call("updateKey").result == 1
    counters = gw.state.get_counters()
    assert counters.faults["error_before_charge"] == 1
    assert counters.faults["error_after_charge"] == counters.faults["charge_failed"] == 0


def test_fault_probabilities_are_validated() -> None:
    with pytest.raises(ValueError, match="more than 1"):
        FaultConfig(http_502=0.6, truncated_xml=0.6)
    with pytest.raises(ValueError, match="probability"):
        FaultConfig(slow_body=1.5)
    with pytest.raises(ValueError, match="negative"):
        FaultConfig(latency_ms=-1)
