"""A campaign's delivery truth, kept in its journal: whose reports, what they said, who waits.

Against the emulator: the codes it drew for each message (read before the client fetches
them) are what the journal must end up saying, recipient by recipient.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import client_for as shared_client_for
from helpers import numbers

from aisix_async import (
    FINAL_OPERATOR_CODES,
    CampaignError,
    FoundOnResume,
    OutcomeStatus,
    ValidationError,
    open_campaign_journal,
)
from aisix_async._campaign.file import SCHEMA_VERSION
from aisix_async._campaign.journal import Journal

pytestmark = pytest.mark.anyio

V1_JOURNAL = Path(__file__).parent / "data" / "journal_v1.db"


# The library's own retry policy.
client_for = partial(shared_client_for, retry=None)


async def test_reports_not_the_campaigns_are_kept_apart(emulator: Any, tmp_path: Path) -> None:
    # Issue 14, point 6: 500 numbers sent outside the campaign, then a 100-recipient
    # campaign; the summary counted 600 deliveries.
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    async with client_for(emulator) as client:
        outside = await client.send_once(numbers(500, start=5000), "not the campaign's")
        async with client.campaign(tmp_path / "c.db") as campaign:
            async with campaign.send_many(numbers(100), "the campaign", chunk_size=50) as s:
                async for _ in s:
                    pass
            drawn = emulator.state.queued_reports()
            assert len(drawn) == 600
            async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
                got = [report async for report in r]
            summary = campaign.summary()
            stored = await campaign.stored_reports()
    assert len(got) == 600
    assert len(stored) == 600  # every report kept, the others' too
    ours = Counter(code for msgid, _, code in drawn if msgid != outside.msgid)
    assert dict(summary.delivery) == dict(ours)
    assert sum(summary.delivery.values()) == 100
    assert summary.foreign_reports == 500
    assert summary.pending == 0


async def test_the_same_msgid_with_a_number_not_sent_is_not_the_campaigns(
    emulator: Any, tmp_path: Path
) -> None:
    from aisix_async import DeliveryReport, ReportResult

    emulator.state.configure(reports=False)
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as c:
        async with c.send_many(numbers(10), "hello") as s:
            (outcome,) = [o async for o in s]
        msgid = outcome.receipts[0].msgid
        journal = c._opened()
        batch = [
            DeliveryReport("1", msgid, numbers(1)[0], ReportResult.DELIVERED, "DELIVRD"),
            DeliveryReport("2", msgid, "13800000000", ReportResult.DELIVERED, "DELIVRD"),
            # A repeated final report settles nothing twice.
            DeliveryReport("3", msgid, numbers(1)[0], ReportResult.FAILED, "UNDELIV"),
            DeliveryReport("4", msgid, numbers(2)[1], ReportResult.UNKNOWN, "ACCEPTD"),
        ]
        done = await journal.ingest_reports(batch)
        assert done.mine == [True, False, True, True]
        # The same final report again, in a later batch: kept, counted once.
        again = await journal.ingest_reports(batch[:1])
        assert again.mine == [True]
        assert again.finals == {}
        stored = await journal.stored_reports()
        assert [r.id for r in stored] == ["1", "2", "3", "4", "1"]
        summary = c.summary()
    assert dict(summary.delivery) == {"DELIVRD": 1}
    assert summary.foreign_reports == 1
    assert summary.pending == 9


async def test_export_names_every_recipient_with_its_report(emulator: Any, tmp_path: Path) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    mobiles = numbers(250)
    client = client_for(emulator)
    async with client, client.campaign(tmp_path / "c.db") as campaign:
        async with campaign.send_many(mobiles, "hello", chunk_size=100) as s:
            async for _ in s:
                pass
        drawn = {(m, msgid): code for msgid, m, code in emulator.state.queued_reports()}
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            async for _ in r:
                pass
        rows: list[tuple[object, ...]] = []
        count = await campaign._opened().export(lambda row: rows.append(tuple(row)))
        runs = await campaign._opened().runs()
    assert count == len(rows) == 250
    ledger = {r.mobile: r.msgid for r in emulator.state.messages()}
    for position, (mobile, at, status, msgid, code, when) in enumerate(rows):
        assert (mobile, at, status) == (mobiles[position], position, "accepted")
        assert msgid == ledger[mobile]
        expected = drawn[(mobile, msgid)]
        assert code == (expected if expected in FINAL_OPERATOR_CODES else "")
        assert bool(when) == bool(code)
    assert [r.kind for r in runs] == ["send"]
    assert runs[0].ended_at is not None
    assert runs[0].ended_at >= runs[0].started_at


async def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(V1_JOURNAL, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        total = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        foreign = conn.execute(
            "SELECT count(*) FROM reports WHERE msgid NOT IN (SELECT msgid FROM msgids)"
        ).fetchone()[0]
        finals = Counter(
            code
            for (code,) in conn.execute(
                "SELECT code FROM reports WHERE msgid IN (SELECT msgid FROM msgids)"
            )
            if code in FINAL_OPERATOR_CODES
        )
        accepted = conn.execute("SELECT sum(size) FROM chunks WHERE state='accepted'").fetchone()[0]
    assert foreign > 0
    assert sum(finals.values()) > 0
    journal = await Journal.open(path)
    try:
        assert journal.delivery == dict(finals)
        assert journal.foreign_reports == foreign
        assert len(await journal.stored_reports()) == total
        runs = await journal.runs()
        assert [r.kind for r in runs] == ["schema 1 runs"]
        rows: list[tuple[object, ...]] = []
        await journal.export(lambda row: rows.append(tuple(row)))
        # Schema 1 did not keep an accepted chunk's numbers: positions, no mobile.
        assert len(rows) == accepted
        assert {row[2] for row in rows} == {"accepted"}
    finally:
        await journal.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    # Opened again: nothing migrated twice.
    journal = await Journal.open(path)
    try:
        assert journal.delivery == dict(finals)
        assert journal.foreign_reports == foreign
    finally:
        await journal.aclose()


# A reports follower that dies (os._exit, no cleanup, like a kill -9) on its worker thread
# with the third batch's rows written and its transaction not committed, while the next
# poll may be on the wire. It prints each report it is handed.
_DIES_WHILE_WRITING = r"""
import os
import sys

import anyio

from aisix_async import AisixClient
from aisix_async._campaign import sql

url, account, authkey, path = sys.argv[1:5]
record = sql.record_reports
calls = 0


def dying(conn, batch, lookup=None):
    global calls
    calls += 1
    done = record(conn, batch, lookup)
    if calls == 3:
        os._exit(9)
    return done


sql.record_reports = dying


async def main():
    client = AisixClient(account, authkey, base_url=url)
    async with client, client.campaign(path) as campaign:
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=5) as stream:
            async for report in stream:
                print("shown", report.msgid, report.mobile, flush=True)


anyio.run(main)
"""


async def test_a_crash_while_reports_are_written_leaves_the_journal_consistent(
    emulator: Any, tmp_path: Path
) -> None:
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    path = tmp_path / "c.db"
    async with (
        client_for(emulator) as client,
        client.campaign(path) as campaign,
        campaign.send_many(numbers(300), "hello", chunk_size=100) as s,
    ):
        async for _ in s:
            pass
    drawn = {(msgid, mobile): code for msgid, mobile, code in emulator.state.queued_reports()}
    assert len(drawn) == 300
    child = await anyio.run_process(
        [sys.executable, "-c", _DIES_WHILE_WRITING, emulator.base_url, emulator.account,
         emulator.authkey, str(path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        check=False,
    )  # fmt: skip
    assert child.returncode == 9, child.stderr.decode()
    shown = {tuple(line.split()[1:]) for line in child.stdout.decode().splitlines()}
    handed_out = 300 - emulator.state.pending_reports()
    # The batch being written and, at most, the one fetched meanwhile died with the
    # process: the cost of a crash while reports are followed.
    assert 150 <= handed_out <= 200

    def finals(reports: list[Any]) -> Counter[str]:
        return Counter(c for r in reports if (c := r.code.upper()) in FINAL_OPERATOR_CODES)

    journal = await Journal.open(path)
    try:
        stored = await journal.stored_reports()
        # The two batches committed, whole; nothing of the third.
        assert len(stored) == 100
        assert all(drawn[(r.msgid, r.mobile)] == r.code for r in stored)
        # Every report handed to the reader was journalled first.
        assert shown <= {(r.msgid, r.mobile) for r in stored}
        assert journal.delivery == dict(finals(stored))
        assert journal.foreign_reports == 0
        seqs = journal._conn.execute(
            "SELECT seq FROM reports UNION ALL SELECT seq FROM delivery ORDER BY 1"
        ).fetchall()
        assert [seq for (seq,) in seqs] == list(range(1, 101))
    finally:
        await journal.aclose()

    # Followed again: the rest are recorded after them; the recipients whose reports
    # died with the process stay pending, none settled wrongly.
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            rest = [report async for report in r]
        summary = campaign.summary()
        stored = await campaign.stored_reports()
    assert len(rest) == 300 - handed_out
    assert stored[100:] == rest
    assert dict(summary.delivery) == dict(finals(stored))
    lost = handed_out - 100
    assert summary.pending == lost + sum(1 for r in stored if not r.is_final)


@pytest.mark.parametrize("after", [0.02, 0.05, 0.12])
async def test_a_watch_cancelled_mid_batch_leaves_every_report_journalled_or_unread(
    emulator: Any, tmp_path: Path, after: float
) -> None:
    # Cancelled from outside while batches are parsed, written and read, at a few
    # moments: every report handed out is in the journal (those not yet read are in
    # unread() too), everything yielded was journalled first, and the journal's counts
    # match its rows.
    emulator.state.configure(report_delay=0.0, reports_per_call=150)
    path = tmp_path / "c.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        async with campaign.send_many(numbers(1200), "hello", chunk_size=200) as s:
            async for _ in s:
                pass
        drawn = {(m, n): code for m, n, code in emulator.state.queued_reports()}

        async def slow(batch: object) -> None:
            await anyio.sleep(0.01)

        yielded: list[Any] = []
        stream = campaign.watch_delivery_reports(interval=0.01, on_batch=slow)
        with anyio.move_on_after(after):
            async with stream:
                async for report in stream:
                    yielded.append(report)
        unread = stream.unread()
        stored = await campaign.stored_reports()
        summary = campaign.summary()
    still_queued = {(m, n) for m, n, _ in emulator.state.queued_reports()}
    handed_out = drawn.keys() - still_queued
    keys = {(r.msgid, r.mobile) for r in stored}
    assert {(r.msgid, r.mobile) for r in yielded} <= keys
    assert keys == handed_out
    assert {(r.msgid, r.mobile) for r in unread} <= keys
    assert all(drawn[(r.msgid, r.mobile)] == r.code for r in stored)
    finals = Counter(c for r in stored if (c := r.code.upper()) in FINAL_OPERATOR_CODES)
    assert summary.delivery == dict(finals)
    assert summary.foreign_reports == 0
    journal = await Journal.open(path)
    try:
        seqs = journal._conn.execute(
            "SELECT seq FROM reports UNION ALL SELECT seq FROM delivery ORDER BY 1"
        ).fetchall()
        assert [seq for (seq,) in seqs] == list(range(1, len(stored) + 1))
    finally:
        await journal.aclose()


@pytest.mark.parametrize("cancel_at", [0.3, 0.7, 1.2])
async def test_reports_fetched_as_a_cancelled_watch_closes_are_journalled(
    emulator: Any, tmp_path: Path, cancel_at: float
) -> None:
    # A poll on the wire when a move_on_after closes the watch is let finish; the gateway
    # has handed its reports out for good, so the campaign journals them too. They went
    # to unread() only, and their recipients stayed pending for ever (a user trial: 100
    # of 300 with 500 ms answers).
    emulator.state.configure(report_delay=0.0, reports_per_call=100)
    path = tmp_path / "c.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        async with campaign.send_many(numbers(300), "hello", chunk_size=100) as s:
            async for _ in s:
                pass
        emulator.state.set_faults(latency_ms=500)
        yielded = 0
        with anyio.move_on_after(cancel_at):
            async with campaign.watch_delivery_reports(interval=0.05) as reports:
                async for _ in reports:
                    yielded += 1
        unread = reports.unread()
        summary = campaign.summary()
        stored = await campaign.stored_reports()
    handed_out = 300 - emulator.state.pending_reports()
    assert handed_out > yielded  # a poll was on the wire at the close
    assert len(stored) == handed_out
    assert yielded + len(unread) == handed_out
    assert summary.pending == 300 - handed_out


async def test_a_code_we_do_not_know_settles_by_its_result(emulator: Any, tmp_path: Path) -> None:
    # Gateways and operators have codes beyond the document's list (MK:0001, ID:0076...).
    # On a report that says failed or delivered such a code settles its recipient; kept
    # pending, the recipient would wait for good (each report is handed out once).
    from aisix_async import DeliveryReport, ReportResult

    emulator.state.configure(reports=False)
    mobiles = numbers(10)
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as c:
        async with c.send_many(mobiles, "hello") as s:
            (outcome,) = [o async for o in s]
        msgid = outcome.receipts[0].msgid
        journal = c._opened()
        failed, delivered, unknown = (
            ReportResult.FAILED,
            ReportResult.DELIVERED,
            ReportResult.UNKNOWN,
        )
        # One msgid, all settling: the journal's fast path for a whole run.
        await journal.ingest_reports(
            [DeliveryReport(str(i), msgid, mobiles[i], failed, "MK:0001") for i in range(3)]
        )
        # Mixed: settled by result, pending by code, pending by result.
        await journal.ingest_reports(
            [
                DeliveryReport("3", msgid, mobiles[3], delivered, ""),
                DeliveryReport("4", msgid, mobiles[4], delivered, "ACCEPTD"),
                DeliveryReport("5", msgid, mobiles[5], unknown, "MK:0002"),
                DeliveryReport("6", msgid, mobiles[6], delivered, "DELIVRD"),
            ]
        )
        summary = c.summary()
    assert dict(summary.delivery) == {"MK:0001": 3, "": 1, "DELIVRD": 1}
    assert summary.pending == 5


def _pairs(count: int) -> list[tuple[str, str]]:
    return [(mobile, f"Hi {i}") for i, mobile in enumerate(numbers(count))]


def _answers_lost(emulator: Any, kind: str) -> list[tuple[str, str]]:
    """300 recipients whose sendBatch or sendParam answers the emulator will lose after
    charging them (their reports come at once, all in one poll)."""
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    action = "sendBatch" if kind == "batch" else "sendParam"
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=[action])
    return _pairs(300)


async def _sent_unknown(campaign: Any, kind: str, pairs: list[tuple[str, str]]) -> None:
    """Send ``pairs`` by ``kind`` in chunks of 100: every outcome unknown (answers lost)."""
    if kind == "batch":
        stream = campaign.send_batch_many(pairs, chunk_size=100)
    else:
        stream = campaign.send_param_many("Hi {p1}", [(m, (c,)) for m, c in pairs])
    async with stream as s:
        assert {o.status.value async for o in s} == {"unknown"}


@pytest.mark.parametrize("kind", ["batch", "param"])
async def test_a_lost_batch_answer_reconciled_by_one_report_takes_all_its_reports(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    # A sendBatch or sendParam answer holds a msgid per recipient: when it is lost, the
    # first report reconciles the chunk and teaches one msgid. A user's trial found the
    # other 99 reports of each chunk counted as not the campaign's, their recipients
    # pending for ever.
    pairs = _answers_lost(emulator, kind)
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as campaign:
        await _sent_unknown(campaign, kind, pairs)
        assert campaign.summary().unknown == 300
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            got = [report async for report in r]
        summary = campaign.summary()
    drawn = Counter(code for _, _, code in emulator.state.queued_reports())
    assert len(got) == 300
    assert (summary.unknown, summary.reconciled, summary.foreign_reports) == (0, 300, 0)
    assert summary.pending == 0
    assert sum(summary.delivery.values()) == 300
    assert not drawn  # every report was handed out


async def _msgids_exported(campaign: Any) -> dict[str, tuple[str, str]]:
    """The export's (msgid, delivery code) by mobile."""
    rows: list[tuple[Any, ...]] = []
    await campaign._opened().export(lambda row: rows.append(tuple(row)))
    return {mobile: (msgid, code) for mobile, _, _, msgid, code, _ in rows}


@pytest.mark.parametrize("kind", ["batch", "param"])
async def test_export_gives_a_reconciled_batch_recipient_the_msgid_its_report_carried(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    # A sendBatch or sendParam chunk whose answer was lost, proved sent by its reports:
    # a user's trial found its recipients exported with their delivery code but an empty
    # msgid (a sendOnce chunk's had theirs), although the journal held each report.
    from aisix_async import DeliveryReport, ReportResult

    pairs = _answers_lost(emulator, kind)
    mobiles = [mobile for mobile, _ in pairs]
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as campaign:
        await _sent_unknown(campaign, kind, pairs)
        ledger = {r.mobile: r.msgid for r in emulator.state.messages()}
        assert len(set(ledger.values())) == 300  # one msgid per recipient
        # Two reports of the first chunk, a final one and one that settles nothing, one
        # at a time: each names its own recipient's msgid, and no other recipient's (the
        # first, the only msgid the chunk had, is not the whole chunk's as a sendOnce's).
        journal = campaign._opened()
        delivered = ReportResult.DELIVERED
        await journal.ingest_reports(
            [DeliveryReport("1", ledger[mobiles[0]], mobiles[0], delivered, "DELIVRD")]
        )
        first = await _msgids_exported(campaign)
        await journal.ingest_reports(
            [DeliveryReport("2", ledger[mobiles[1]], mobiles[1], ReportResult.UNKNOWN, "ACCEPTD")]
        )
        early = await _msgids_exported(campaign)
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            async for _ in r:
                pass
        assert campaign.summary().reconciled == 300
        late = await _msgids_exported(campaign)
    assert first[mobiles[0]] == (ledger[mobiles[0]], "DELIVRD")
    assert {first[mobile][0] for mobile in mobiles[1:]} == {""}  # not reported yet
    assert early[mobiles[0]] == (ledger[mobiles[0]], "DELIVRD")
    assert early[mobiles[1]] == (ledger[mobiles[1]], "")
    assert {early[mobile][0] for mobile in mobiles[2:]} == {""}  # not reported yet
    assert {mobile: msgid for mobile, (msgid, _) in late.items()} == ledger
    assert all(code for _, code in late.values())


# Sends a 300-recipient sendBatch campaign, printing "sent" once its requests are on the
# wire; the test kills it there.
_SENDS_BATCH = r"""
import sys

import anyio

from aisix_async import AisixClient

url, account, authkey, path = sys.argv[1:5]


async def main():
    client = AisixClient(account, authkey, base_url=url)
    pairs = [(f"139{i:08d}", f"Hi {i}") for i in range(300)]
    async with client, client.campaign(path) as campaign:
        async with campaign.send_batch_many(pairs, chunk_size=100) as stream:
            print("sending", flush=True)
            async for outcome in stream:
                pass


anyio.run(main)
"""


async def _killed_on_the_wire(emulator: Any, path: Path) -> None:
    """Run _SENDS_BATCH on ``path`` and kill it (SIGKILL) while a request of it is held
    by the emulator (1.5 s answers), then wait until the gateway acted on it all the same."""
    emulator.state.set_faults(latency_ms=1500.0, fault_actions=["sendBatch"])
    child = await anyio.open_process(
        [sys.executable, "-c", _SENDS_BATCH, emulator.base_url, emulator.account,
         emulator.authkey, str(path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    try:
        with anyio.fail_after(30):
            while not emulator.state.requests_held:
                await anyio.sleep(0.02)
    finally:
        child.kill()
        await child.wait()
    with anyio.fail_after(30):
        while emulator.state.requests_held:
            await anyio.sleep(0.05)
    emulator.state.set_faults(latency_ms=0.0)


@pytest.mark.parametrize("resend_unknown", [False, True])
async def test_reports_fetched_before_a_resume_reconcile_what_a_kill_left_on_the_wire(
    emulator: Any, tmp_path: Path, resend_unknown: bool
) -> None:
    # A killed process leaves its chunks on the wire known by input position only, and
    # reports fetched before the resume cannot be matched to them. A user's trial then
    # found them not the campaign's for good, the recipients unknown, and the resend the
    # CLI offered sent 1,400 of them twice.
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    path = tmp_path / "c.db"
    await _killed_on_the_wire(emulator, path)
    lost = len(emulator.state.messages())
    assert lost in (100, 200, 300)

    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
                assert len([report async for report in r]) == lost
            before = campaign.summary()
        # Known by position only, so their reports could not be told apart yet.
        assert (before.unknown, len(before.unknown_unread), before.foreign_reports) == (lost,) * 3

        # Resending the unknown at once, as the CLI offers, resends none of them either.
        async with client.campaign(path, resend_unknown=resend_unknown) as campaign:
            async with campaign.send_batch_many(_pairs(300), chunk_size=100) as s:
                assert sum([len(o.mobiles) async for o in s]) == 300 - lost
            async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
                assert len([report async for report in r]) == 300 - lost
            summary = campaign.summary()
    assert (summary.accepted, summary.reconciled, summary.unknown) == (300, lost, 0)
    assert summary.foreign_reports == 0
    assert summary.pending == 0
    assert sum(summary.delivery.values()) == 300
    assert len(emulator.state.messages()) == 300  # nothing sent twice


async def test_export_gives_the_msgid_of_reports_a_resume_claimed_after_a_kill(
    emulator: Any, tmp_path: Path
) -> None:
    # The user's trial: a sendBatch killed on the wire, its reports followed, the send
    # resumed (which claimed them), followed again: the claimed recipients were exported
    # with their delivery code and an empty msgid.
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    path = tmp_path / "c.db"
    await _killed_on_the_wire(emulator, path)
    lost = len(emulator.state.messages())
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            async for _ in r:
                pass
        async with campaign.send_batch_many(_pairs(300), chunk_size=100) as s:
            assert sum([len(o.mobiles) async for o in s]) == 300 - lost
        async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
            async for _ in r:
                pass
        assert campaign.summary().reconciled == lost
        exported = await _msgids_exported(campaign)
    ledger = {r.mobile: r.msgid for r in emulator.state.messages()}
    assert len(ledger) == 300
    assert {mobile: msgid for mobile, (msgid, _) in exported.items()} == ledger
    assert all(code for _, code in exported.values())


async def test_a_campaign_takes_its_reports_from_the_journal_that_followed_them(
    emulator: Any, tmp_path: Path
) -> None:
    # The gateway keeps one report queue per account: following campaign A took campaign
    # B's reports too, kept in A as not its own, and B stayed pending for good (a user's
    # trial).
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    async with client_for(emulator) as client:
        for path, mobiles in ((a, numbers(300)), (b, numbers(200, start=1000))):
            async with (
                client.campaign(path) as campaign,
                campaign.send_many(mobiles, "hello", chunk_size=100) as s,
            ):
                async for _ in s:
                    pass
        drawn = emulator.state.queued_reports()
        async with client.campaign(a) as campaign:
            async with campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r:
                assert len([report async for report in r]) == 500
            assert campaign.summary().foreign_reports == 200
    b_codes = Counter(code for _, mobile, code in drawn if mobile >= numbers(1, start=1000)[0])
    async with open_campaign_journal(b) as journal:
        assert journal.summary().pending == 200
        assert await journal.take_reports_from(a) == 200
        summary = journal.summary()
        assert await journal.take_reports_from(a) == 0  # nothing recorded twice
        assert len(await journal._opened().stored_reports()) == 200
    assert summary.pending == 0
    assert dict(summary.delivery) == dict(b_codes)
    assert summary.foreign_reports == 0  # A's own are left where they are
    async with open_campaign_journal(a) as journal:
        assert journal.summary().foreign_reports == 200  # A is only read
        with pytest.raises(CampaignError, match="own journal"):
            await journal.take_reports_from(a)


async def test_reports_are_taken_only_once_a_resume_knows_the_numbers_a_kill_left(
    emulator: Any, tmp_path: Path
) -> None:
    # B killed with a chunk on the wire; A's follower took B's reports. Taken before B's
    # resume, they matched nothing, and the take's mark moved past them: B's chunk stayed
    # unknown for good, and the resend the CLI offered sent it twice (a user's trial).
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    async with (
        client_for(emulator) as client,
        client.campaign(a) as campaign,
        campaign.send_many(numbers(100, start=5000), "A", chunk_size=100) as s,
    ):
        assert len([o async for o in s]) == 1
    await _killed_on_the_wire(emulator, b)
    lost = len(emulator.state.messages()) - 100
    async with (
        client_for(emulator) as client,
        client.campaign(a) as campaign,
        campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r,
    ):
        assert len([report async for report in r]) == 100 + lost
    async with open_campaign_journal(b) as journal:
        with pytest.raises(CampaignError, match="resume its send first"):
            await journal.take_reports_from(a)
    async with (
        client_for(emulator) as client,
        client.campaign(b) as campaign,
        campaign.send_batch_many(_pairs(300), chunk_size=100) as s,
    ):
        assert sum([len(o.mobiles) async for o in s]) == 300 - lost
    async with open_campaign_journal(b) as journal:
        assert journal.summary().unknown == lost
        assert await journal.take_reports_from(a) == lost  # none passed over
        summary = journal.summary()
    assert (summary.unknown, summary.reconciled, summary.accepted) == (0, lost, 300)
    assert len(emulator.state.messages()) == 400  # nothing sent twice


@pytest.mark.parametrize("reports_first", [False, True])
async def test_on_found_is_told_of_each_chunk_a_kill_left_on_the_wire_as_it_is_found(
    emulator: Any, tmp_path: Path, reports_first: bool
) -> None:
    # `aisix send --outcomes` wrote these recipients' lines only as the resumed run
    # ended: a resumed run killed in its turn left them out for good, the journal no
    # longer listing them as unread (an operator's trial: 11,500 of 200,000 lines).
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    path = tmp_path / "c.db"
    await _killed_on_the_wire(emulator, path)
    async with open_campaign_journal(path) as journal:
        unread = journal.summary().unknown_unread
    assert len(unread) in (100, 200, 300)
    pairs = _pairs(300)
    found: list[FoundOnResume] = []
    ended = False
    # Whether the send was over at each call (asserted here, a failure would be logged).
    over: list[bool] = []

    def on_found(chunk: FoundOnResume) -> None:
        over.append(ended)
        found.append(chunk)

    async with client_for(emulator) as client:
        if reports_first:
            async with (
                client.campaign(path) as campaign,
                campaign.watch_delivery_reports(interval=0.01, stop_when_idle=0.3) as r,
            ):
                assert len([report async for report in r]) == len(unread)
        async with client.campaign(path, on_found=on_found) as campaign:
            async with campaign.send_batch_many(pairs, chunk_size=100) as s:
                sent = sum([len(o.mobiles) async for o in s])
            ended = True
            summary = campaign.summary()
            reconciled = campaign.reconciled_on_resume
        assert sent == 300 - len(unread)
        # Found once: a resume after this one finds nothing more.
        async with (
            client.campaign(path, on_found=on_found) as campaign,
            campaign.send_batch_many(pairs, chunk_size=100) as s,
        ):
            assert [o async for o in s] == []
    # Told as the send goes, not once it is over.
    assert over == [False] * len(found)
    status = OutcomeStatus.ACCEPTED if reports_first else OutcomeStatus.UNKNOWN
    # One call per chunk, its recipients in input order, as (position, mobile).
    assert [chunk.status for chunk in found] == [status] * (len(unread) // 100)
    for chunk in found:
        positions = [position for position, _ in chunk.recipients]
        assert len(positions) == 100 and positions == sorted(positions)
        assert positions[0] % 100 == 0 and positions[-1] == positions[0] + 99
        assert all(mobile == pairs[position][0] for position, mobile in chunk.recipients)
    recipients = tuple(pair for chunk in found for pair in chunk.recipients)
    assert tuple(position for position, _ in recipients) == unread
    if reports_first:
        assert reconciled == recipients  # still said the old way too
        assert (summary.reconciled, summary.unknown_recipients) == (len(unread), ())
    else:
        assert reconciled == ()
        assert summary.unknown_recipients == recipients
    assert len(emulator.state.messages()) == 300  # nothing sent twice


async def test_an_on_found_hook_that_raises_is_logged_and_the_send_goes_on(
    emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.db"
    await _killed_on_the_wire(emulator, path)
    async with open_campaign_journal(path) as journal:
        unread = journal.summary().unknown_unread
    calls: list[FoundOnResume] = []

    def on_found(chunk: FoundOnResume) -> None:
        calls.append(chunk)
        raise RuntimeError("the caller's own bug")

    async with client_for(emulator) as client, client.campaign(path, on_found=on_found) as campaign:
        async with campaign.send_batch_many(_pairs(300), chunk_size=100) as s:
            sent = sum([len(o.mobiles) async for o in s])
        summary = campaign.summary()
    # Every chunk was still told of, and the send went on to its end.
    assert len(calls) == len(unread) // 100
    assert sent == 300 - len(unread)
    # What the journal found stands: their numbers recorded, their fate unknown.
    assert summary.unknown_unread == ()
    assert [position for position, _ in summary.unknown_recipients] == list(unread)
    assert summary.complete
    failures = [r for r in caplog.records if "on_found hook failed" in r.getMessage()]
    assert len(failures) == len(calls)
    assert "the send goes on" in failures[0].getMessage()
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is RuntimeError
    async with open_campaign_journal(path) as journal:
        assert journal.summary().unknown_recipients == summary.unknown_recipients


async def test_on_found_must_be_a_plain_function(emulator: Any, tmp_path: Path) -> None:
    async def later(chunk: FoundOnResume) -> None: ...

    async with client_for(emulator) as client:
        with pytest.raises(ValidationError, match="on_found must be a function"):
            client.campaign(tmp_path / "c.db", on_found="print")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="called synchronously"):
            client.campaign(tmp_path / "c.db", on_found=later)  # type: ignore[arg-type]
    assert not (tmp_path / "c.db").exists()
