"""``aisix demo``: a whole campaign checked against the emulator, and the check itself."""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from typing import Any

import pytest
from cli_support import Cli

from aisix_async import OutcomeStatus, SendOutcome, SendReceipt
from aisix_async.cli._demo_check import LedgerEntry, Part, verify

SIGN = "【Aisix】"


@pytest.mark.slow
def test_demo_runs_a_checked_campaign(cli: Cli) -> None:
    result = cli.run("demo", "--size", "5000", "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert record["passed"] is True
    assert all(check["ok"] for check in record["checks"])
    assert len(record["checks"]) >= 10
    parts = {p["name"]: p for p in record["parts"]}
    assert {name: p["recipients"] for name, p in parts.items()} == {
        "sendOnce": 5000,
        "sendBatch": 250,
        "sendParam": 250,
    }
    for p in parts.values():
        assert p["accepted"] + p["failed"] + p["unknown"] == p["recipients"]
    spent = Decimal(record["balance_before"]) - Decimal(record["balance_after"])
    assert spent >= sum(Decimal(p["cost"]) for p in parts.values())
    assert sum(record["delivery_codes"].values()) == sum(p["accepted"] for p in parts.values())
    # Progress went to stderr as plain lines (not a terminal).
    assert "sendOnce: 5,000/5,000 done" in result.stderr


@pytest.mark.slow
def test_demo_table_says_the_check_passed(cli: Cli) -> None:
    result = cli.run("demo", "--size", "1000", "--rate", "50", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CHECK PASSED" in result.stdout
    assert "delivery codes" in result.stdout


@pytest.mark.slow
def test_demo_ignores_the_users_data_url_and_shared_limit(cli: Cli) -> None:
    # Set for the user's real account, they sent the demo's report reads to another
    # DataApi (CHECK FAILED) and its pace to that Redis.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = dict(cli.env)
    env["AISIX_DATA_URL"] = f"http://127.0.0.1:{port}/DataApi"
    env["AISIX_SHARED_LIMIT"] = f"redis://127.0.0.1:{port}/0"
    result = cli.run("demo", "--size", "1000", "--rate", "50", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CHECK PASSED" in result.stdout
    assert "Redis" not in result.stderr


def receipt(msgid: str, total: int, price: str = "0.10") -> SendReceipt:
    return SendReceipt(
        cid="1", sid="1", msgid=msgid, total=total, price=Decimal(price), remain=Decimal("0")
    )


def campaign() -> tuple[Part, list[LedgerEntry]]:
    part = Part("sendOnce", {"1": "hi", "2": "hi", "3": "hi"})
    part.add(
        SendOutcome(
            chunk=0,
            positions=(0, 1),
            mobiles=("1", "2"),
            status=OutcomeStatus.ACCEPTED,
            action="sendOnce",
            receipts=(receipt("m1", 2),),
            attempts=1,
        )
    )
    part.add(
        SendOutcome(
            chunk=1,
            positions=(2,),
            mobiles=("3",),
            status=OutcomeStatus.FAILED,
            action="sendOnce",
            attempts=1,
        )
    )
    ledger = [
        LedgerEntry("m1", "1", SIGN + "hi", 1, Decimal("0.10")),
        LedgerEntry("m1", "2", SIGN + "hi", 1, Decimal("0.10")),
    ]
    return part, ledger


def run_verify(part: Part, ledger: list[LedgerEntry], **overrides: Any) -> dict[str, bool]:
    options: dict[str, Any] = {
        "signature": SIGN,
        "balance_before": Decimal("10.00"),
        "balance_after": Decimal("9.80"),
        "charged_by_gateway": Decimal("0.20"),
        "delivered": {("m1", "1"): "DELIVRD", ("m1", "2"): "DTBLACK"},
        "pending": 0,
        "reported_unknown": [],
        "blacklist": ["2"],
    }
    options.update(overrides)
    return {c.name: c.ok for c in verify([part], ledger, **options)}


def test_the_check_passes_on_a_consistent_record() -> None:
    part, ledger = campaign()
    assert all(run_verify(part, ledger).values())


def test_the_check_catches_a_double_charge() -> None:
    part, ledger = campaign()
    ledger.append(LedgerEntry("m9", "1", SIGN + "hi", 1, Decimal("0.10")))
    results = run_verify(
        part, ledger, balance_after=Decimal("9.70"), charged_by_gateway=Decimal("0.30")
    )
    assert not results["no message charged twice or outside the campaign"]
    assert not results["accepted recipients were charged once, under the msgid the client holds"]


def test_the_check_catches_a_charged_failure_and_wrong_money() -> None:
    part, ledger = campaign()
    ledger.append(LedgerEntry("m2", "3", SIGN + "hi", 1, Decimal("0.10")))
    results = run_verify(part, ledger)
    assert not results["failed recipients were not charged"]
    assert not results["the balance fell by exactly what the gateway charged"]


def test_the_check_catches_a_wrong_text_and_missing_reports() -> None:
    part, ledger = campaign()
    ledger[0] = LedgerEntry("m1", "1", SIGN + "someone else's text", 1, Decimal("0.10"))
    results = run_verify(part, ledger, delivered={("m1", "1"): "DELIVRD"}, pending=1)
    assert not results["every phone received its own text"]
    assert not results["every accepted recipient got a final delivery report"]
    wrong_code = run_verify(
        part, ledger, delivered={("m1", "1"): "DELIVRD", ("m1", "2"): "DELIVRD"}
    )
    assert not wrong_code["blacklisted numbers were reported DTBLACK"]


def test_the_check_catches_a_lost_recipient_and_unconfirmed_unknowns() -> None:
    part = Part("sendOnce", {"1": "hi", "2": "hi", "3": "hi"})
    part.add(
        SendOutcome(
            chunk=0,
            positions=(0,),
            mobiles=("1",),
            status=OutcomeStatus.UNKNOWN,
            action="sendOnce",
            attempts=1,
        )
    )
    ledger = [LedgerEntry("m1", "1", SIGN + "hi", 1, Decimal("0.10"))]
    results = run_verify(
        part,
        ledger,
        balance_after=Decimal("9.90"),
        charged_by_gateway=Decimal("0.10"),
        delivered={},
        blacklist=[],
    )
    assert not results["every recipient has exactly one outcome"]
    assert not results["unknown outcomes reconciled: each one charged was confirmed by a report"]
    confirmed = run_verify(
        part,
        ledger,
        balance_after=Decimal("9.90"),
        charged_by_gateway=Decimal("0.10"),
        delivered={},
        blacklist=[],
        reported_unknown=["1"],
    )
    assert confirmed["unknown outcomes reconciled: each one charged was confirmed by a report"]
