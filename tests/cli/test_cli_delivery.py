"""A campaign's delivery truth from the command line, driven as an operator would.

Send with ``--journal``, kill it, resume it, follow the reports into the journal until
they stop, inspect and export: every figure is checked against the emulator's ledger and
the report codes it drew (read before the command fetches them: they are handed out once).
"""

from __future__ import annotations

import csv
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    ROOT,
    Cli,
    json_lines,
    numbers,
    sent_with_journal,
    summary_of,
    write_lines,
)

_FINAL_MIX = {"DELIVRD": 6.0, "UNDELIV": 2.0, "EXPIRED": 1.0, "REJECTD": 1.0}


def _kill_when_sent(cli: Cli, emulator: Any, args: list[str], at_least: int) -> int:
    """Start ``aisix send``, SIGKILL it once the gateway accepted ``at_least`` messages."""
    process = cli.start(*args)
    deadline = time.monotonic() + 60
    try:
        while emulator.state.message_count < at_least:
            assert process.poll() is None, "the send finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    return emulator.state.message_count


def test_the_unknown_a_kill_left_are_listed_and_the_resume_says_why_it_exits_3(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The numbers of chunks on the wire at a kill are not in the journal until a resume
    # re-reads the input: the table counted them and stderr listed nothing (a user's trial).
    emulator.state.set_faults(latency_ms=400)
    listed = write_lines(tmp_path / "numbers.txt", numbers(2000))
    journal = str(tmp_path / "sale.db")
    send = ["send", listed, "--content", "Sale!", "--journal", journal, "--chunk-size", "10"]
    _kill_when_sent(cli, emulator, send, at_least=50)
    inspected = cli.run("campaign", journal, "--json")
    assert inspected.returncode == 0, inspected.stderr
    (view,) = json_lines(inspected.stdout)
    unread = view["unknown_unread"]
    # Requests were always on the wire (every answer takes 400 ms): the kill cut some off.
    assert unread and view["unknown"] == len(unread)
    shown = cli.run("campaign", journal)
    assert shown.returncode == 0, shown.stderr
    assert f"{len(unread):,} recipient(s) at input position(s) {min(unread)}-" in shown.stderr
    assert "Do not resend them blindly" in shown.stderr
    # The resume fills in their numbers and sends the rest, not them: its exit 3 is theirs,
    # and it says so (it said nothing of why).
    emulator.state.set_faults(latency_ms=0)
    resumed = cli.run(*send)
    assert resumed.returncode == 3, resumed.stderr
    assert f"{len(unread):,} recipient(s) of earlier runs have an unknown outcome" in (
        resumed.stderr
    )
    assert "--resend-unknown" in resumed.stderr


def test_an_operators_campaign_send_kill_resume_follow_inspect_export(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    state = emulator.state
    state.configure(rate=20.0, report_delay=0.0, reports_per_call=500, report_mix=_FINAL_MIX)
    state.set_balance(None, "5000")
    mobiles = numbers(10_000)
    listed = write_lines(tmp_path / "numbers.txt", mobiles)
    journal = str(tmp_path / "sale.db")
    send = ["send", listed, "--content", "Sale!", "--journal", journal, "--chunk-size", "100"]

    killed_at = _kill_when_sent(cli, emulator, send, at_least=3000)
    assert killed_at < len(mobiles)
    resumed = cli.run(*send, "--json", timeout=120)
    # 0, or 3 when a chunk was on the wire at the kill (its outcome is unknown).
    assert resumed.returncode in (0, 3), resumed.stderr

    # Another campaign of the same account: its reports share the queue.
    others = numbers(300, start=50_000)
    other = cli.run("send", write_lines(tmp_path / "o.txt", others), "--content", "Other")
    assert other.returncode == 0, other.stderr

    ledger = state.messages()
    ours = {r.mobile for r in ledger} & set(mobiles)
    # Never sent twice, whatever the kill cut off.
    assert Counter(r.mobile for r in ledger if r.mobile in ours) == Counter(ours)
    drawn = state.queued_reports()
    assert len(drawn) == len(ledger)

    followed = cli.run(
        "reports", "--journal", journal, "--until-idle", "1", "--interval", "0.05", "--json",
        timeout=120,
    )  # fmt: skip
    # Every campaign message reached the gateway: the reports settle them all (a chunk
    # the kill left unknown included). Otherwise the unknown ones keep it at 5.
    lost = set(mobiles) - ours
    assert followed.returncode == (5 if lost else 0), followed.stderr
    records = json_lines(followed.stdout)
    reports = [r for r in records if r["type"] == "report"]
    assert len(reports) == len(drawn)  # every report printed, none lost
    mine = [(r["msgid"], r["mobile"]) for r in reports if r["campaign"] is True]
    foreign = [(r["msgid"], r["mobile"]) for r in reports if r["campaign"] is False]
    assert sorted(mine) == sorted((r.msgid, r.mobile) for r in ledger if r.mobile in ours)
    assert sorted(foreign) == sorted((r.msgid, r.mobile) for r in ledger if r.mobile in others)
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["delivery"]["pending"] == 0

    inspected = cli.run("campaign", journal, "--json", "--export", str(tmp_path / "out.csv"))
    assert inspected.returncode == 0, inspected.stderr
    (view,) = json_lines(inspected.stdout)
    truth = Counter(code for _, mobile, code in drawn if mobile in ours)
    assert view["accepted"] == len(ours)
    assert view["unknown"] == len(lost)
    # A chunk the kill left unknown and the reports settled has no receipt, so no units:
    # those recipients are counted as reconciled instead (README: units of such chunks
    # are not known). The kill lands on the wire only sometimes, so both cases occur.
    assert view["units"] + view["reconciled"] == len(ours)
    assert view["reconciled"] % 100 == 0
    # The table says the same (it had no reconciled row, and units read as all charged).
    table = cli.run("campaign", journal).stdout
    assert "units (from receipts)" in table
    assert ("of which reconciled by reports" in table) == (view["reconciled"] > 0)
    assert view["delivery"]["by_code"] == dict(truth)
    assert view["delivery"]["delivered"] == truth["DELIVRD"]
    assert view["delivery"]["failed"] == sum(truth.values()) - truth["DELIVRD"]
    assert view["delivery"]["not_this_campaigns"] == len(others)
    assert [run["kind"] for run in view["runs"]] == ["send", "send", "reports"]
    assert view["runs"][0]["ended"] is None  # the killed run never recorded its end
    assert all(run["ended"] for run in view["runs"][1:])

    # The export: one line per recipient, in input order, as the ledger and codes say.
    msgid_of = {r.mobile: r.msgid for r in ledger}
    code_of = {(msgid, mobile): code for msgid, mobile, code in drawn}
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["mobile"] for row in rows] == mobiles
    for position, row in enumerate(rows):
        assert int(row["position"]) == position
        if row["mobile"] in ours:
            assert row["status"] == "accepted"
            assert row["msgid"] == msgid_of[row["mobile"]]
            assert row["delivery"] == code_of[(row["msgid"], row["mobile"])]
            assert row["reported_at"]
        else:
            assert row["status"] == "unknown"

    # The reports not the campaign's are in the journal too, never dropped.
    with sqlite3.connect(journal) as conn:
        kept = conn.execute("SELECT count(*) FROM reports WHERE chunk IS NULL").fetchone()[0]
    assert kept == len(others)


def test_until_idle_exits_5_while_reports_are_pending(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # ACCEPTD is not final: every recipient still waits for its report.
    emulator.state.configure(report_delay=0.0, report_mix={"ACCEPTD": 1.0})
    journal = str(tmp_path / "j.db")
    listed = write_lines(tmp_path / "n.txt", numbers(120))
    sent = cli.run("send", listed, "--content", "hi", "--journal", journal)
    assert sent.returncode == 0, sent.stderr
    followed = cli.run("reports", "--journal", journal, "--until-idle", "0.5", "--interval", "0.05")
    assert followed.returncode == 5, followed.stderr
    assert len(followed.stdout.splitlines()) == 120
    assert "pending 120" in followed.stderr
    view = json_lines(cli.run("campaign", journal, "--json").stdout)[0]
    assert view["delivery"]["pending"] == 120
    assert view["delivery"]["by_code"] == {}
    shown = cli.run("campaign", journal)
    assert shown.returncode == 0, shown.stderr
    figures = {
        line.strip().rsplit(None, 1)[0].strip(): line.strip().rsplit(None, 1)[-1]
        for line in shown.stdout.splitlines()
        if line.strip() and not line.strip().startswith(("campaign", "runs", "run ", "─"))
    }
    assert figures["accepted"] == "120"
    assert figures["pending reports"] == "120"
    assert figures["reports not this campaign's"] == "0"


def test_until_idle_with_transient_poll_errors_still_exits_5_while_reports_are_pending(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # 20% of the polls answered -10 (a read: nothing lost): each waited the --interval,
    # as long as --until-idle, so the follower "idled" out with exit 4 and the -10 as its
    # error while reports were still queued (a user's trial).
    emulator.state.configure(report_delay=0.0, reports_per_call=50, report_mix={"ACCEPTD": 1.0})
    journal = str(tmp_path / "j.db")
    listed = write_lines(tmp_path / "n.txt", numbers(2000))
    sent = cli.run("send", listed, "--content", "hi", "--journal", journal)
    assert sent.returncode == 0, sent.stderr
    emulator.state.set_faults(error_after_charge=0.2, fault_actions=["getSendState"])
    started = time.monotonic()
    followed = cli.run(
        "reports", "--journal", journal, "--until-idle", "2", "--interval", "2", timeout=30
    )
    elapsed = time.monotonic() - started
    assert followed.returncode == 5, followed.stderr
    assert len(followed.stdout.splitlines()) == 2000
    assert emulator.state.pending_reports() == 0
    assert "GatewayInternalError" in followed.stderr
    assert "pending 2,000" in followed.stderr
    # Drained at once, then idle for 2 s (plus a start-up): not 2 s per -10.
    assert elapsed < 10, elapsed


@pytest.mark.parametrize("journalled", [True, False])
def test_one_pass_with_transient_poll_errors_still_reads_the_whole_queue(
    cli: Cli, emulator: Any, tmp_path: Path, journalled: bool
) -> None:
    # Without --follow, the first -10 ended the pass with exit 4 and the -10 as its
    # error while the reports were still queued (here, all of them: it was the first
    # poll's), where --until-idle retried it within 0.1 s.
    emulator.state.configure(report_delay=0.0, reports_per_call=50)
    journal = str(tmp_path / "j.db")
    listed = write_lines(tmp_path / "n.txt", numbers(2000))
    into = ["--journal", journal] if journalled else []
    sent = cli.run("send", listed, "--content", "hi", "-q", *into)
    assert sent.returncode == 0, sent.stderr
    queued = {(msgid, mobile) for msgid, mobile, _ in emulator.state.queued_reports()}
    assert len(queued) == 2000
    # 20% of the polls answer -10 (nothing taken off the queue): some forty polls meet
    # several.
    emulator.state.set_faults(error_after_charge=0.2, fault_actions=["getSendState"])
    read = cli.run("reports", "--json", *into, timeout=60)
    assert read.returncode == 0, read.stderr
    assert "GatewayInternalError" in read.stderr  # met, and retried
    reports = [r for r in json_lines(read.stdout) if r["type"] == "report"]
    # Each once: none lost, none printed twice.
    assert len(reports) == 2000
    assert {(r["msgid"], r["mobile"]) for r in reports} == queued
    assert emulator.state.pending_reports() == 0
    if journalled:
        # Each journalled as the campaign's, once.
        assert all(r["campaign"] is True for r in reports)
        delivery = json_lines(cli.run("campaign", journal, "--json").stdout)[0]["delivery"]
        assert delivery["pending"] == 0 and delivery["not_this_campaigns"] == 0
        assert sum(delivery["by_code"].values()) == 2000


def test_one_pass_gives_up_once_polls_failed_for_five_seconds(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Retried for a bounded time, not for ever: every poll answering -10 ends the pass
    # with exit 4 once they have failed for 5 s on end (and not at the first).
    emulator.state.configure(report_delay=0.0)
    sent = cli.run("send", write_lines(tmp_path / "n.txt", numbers(20)), "--content", "hi")
    assert sent.returncode == 0, sent.stderr
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["getSendState"])
    started = time.monotonic()
    read = cli.run("reports", "--json", timeout=60)
    elapsed = time.monotonic() - started
    assert read.returncode == 4, read.stderr
    assert "GatewayInternalError" in read.stderr
    assert json_lines(read.stdout) == []
    assert emulator.state.pending_reports() == 20
    # 5 s of retries (process start-up and a slow machine get a generous margin).
    assert 5 <= elapsed < 30, elapsed


@pytest.mark.parametrize("mode", ["once", "batch"])
def test_a_number_listed_twice_gets_both_its_reports_in_the_journal(
    cli: Cli, emulator: Any, tmp_path: Path, mode: str
) -> None:
    # The journal names a recipient by (chunk, number): a number twice in one chunk had
    # room for one report, the other stayed pending for ever (`--until-idle` exit 5 on
    # every run) and the export gave both lines one report's code (a user's trial).
    emulator.state.configure(report_delay=0.0, report_mix={"DELIVRD": 0.5, "UNDELIV": 0.5})
    journal = str(tmp_path / "j.db")
    mobiles = numbers(40)
    mobiles[30] = mobiles[10]
    if mode == "once":
        listed = write_lines(tmp_path / "n.txt", mobiles)
        sent = cli.run("send", listed, "--content", "hi", "--journal", journal)
    else:
        listed = write_lines(tmp_path / "n.csv", [f"{m},text {i}" for i, m in enumerate(mobiles)])
        sent = cli.run("send", "--batch", listed, "--journal", journal)
    assert sent.returncode == 0, sent.stderr
    # The codes the gateway drew for each message, before they are fetched.
    queued = {(msgid, mobile): code for msgid, mobile, code in emulator.state.queued_reports()}
    assert len(queued) == 40  # the number listed twice went in two messages
    followed = cli.run("reports", "--journal", journal, "--until-idle", "0.5", "--interval", "0.05")
    assert followed.returncode == 0, followed.stderr
    view = json_lines(cli.run("campaign", journal, "--json").stdout)[0]
    assert view["delivery"]["pending"] == 0
    # Each line of the export has the report the gateway queued for its own message.
    export = tmp_path / "e.csv"
    assert cli.run("campaign", journal, "--export", str(export)).returncode == 0
    with export.open(newline="") as rows:
        exported = [row for row in csv.DictReader(rows) if row["status"] == "accepted"]
    assert len(exported) == 40
    assert all(queued[(row["msgid"], row["mobile"])] == row["delivery"] for row in exported)


def test_reports_until_idle_ends_by_itself_without_a_journal(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.configure(report_delay=0.0)
    sent = cli.run("send", write_lines(tmp_path / "n.txt", numbers(50)), "--content", "hi")
    assert sent.returncode == 0, sent.stderr
    began = time.monotonic()
    followed = cli.run("reports", "--until-idle", "0.5", "--interval", "0.05", "--json")
    assert followed.returncode == 0, followed.stderr
    assert time.monotonic() - began < 30
    assert len([r for r in json_lines(followed.stdout) if r["type"] == "report"]) == 50
    assert emulator.state.pending_reports() == 0


def test_campaign_refuses_a_missing_journal_and_an_export_onto_it(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    done = cli.run("campaign", str(missing))
    assert done.returncode == 2
    assert "no such campaign journal" in done.stderr
    assert not missing.exists()  # an inspection creates nothing
    refused = cli.run("reports", "--journal", str(missing))
    assert refused.returncode == 2
    assert not missing.exists()


def test_an_export_onto_the_journal_or_nowhere_is_refused(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    journal = str(tmp_path / "j.db")
    sent = cli.run("send", write_lines(tmp_path / "n.txt", numbers(5)), "--content", "hi",
                   "--journal", journal)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    before = Path(journal).read_bytes()
    onto = cli.run("campaign", journal, "--export", journal)
    assert onto.returncode == 2
    assert "the journal itself" in onto.stderr
    assert Path(journal).read_bytes() == before
    nowhere = cli.run("campaign", journal, "--export", str(tmp_path / "no" / "out.csv"))
    assert nowhere.returncode == 2
    assert "does not exist" in nowhere.stderr
    # Another account's credentials would fetch (and use up) that account's reports.
    other = cli.run("reports", "--journal", journal, "--account", "2002@100001")
    assert other.returncode == 2
    assert "is a campaign of" in other.stderr
    assert emulator.state.pending_reports() == 5  # nothing fetched


def test_an_export_overwrites_an_earlier_export_and_nothing_else(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    listed = write_lines(tmp_path / "n.txt", numbers(5))
    journal = str(tmp_path / "j.db")
    assert cli.run("send", listed, "--content", "hi", "--journal", journal).returncode == 0
    before = Path(listed).read_bytes()
    # A mistyped path (the input, a key file): refused, the file left as it was.
    onto = cli.run("campaign", journal, "--export", listed)
    assert onto.returncode == 2, onto.stderr
    assert "is not an earlier export" in onto.stderr
    assert "Traceback" not in onto.stderr
    assert Path(listed).read_bytes() == before
    # An earlier export, or an empty file, is rewritten: refreshing is the usual use.
    out = tmp_path / "out.csv"
    out.touch()
    for _ in range(2):
        done = cli.run("campaign", journal, "--export", str(out))
        assert done.returncode == 0, done.stderr
        lines = out.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "mobile,position,status,msgid,delivery,reported_at"
        assert len(lines) == 6


def test_ctrl_c_ends_a_follower_with_every_fetched_report_journalled(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    journal = sent_with_journal(cli, emulator, tmp_path)
    process = cli.popen("reports", "--journal", journal, "--follow", "--interval", "0.05", "--json")
    deadline = time.monotonic() + 30
    while emulator.state.pending_reports() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    shown = [r for r in json_lines(out) if r["type"] == "report"]
    assert len(shown) == 40
    assert all(r["campaign"] is True for r in shown)
    with sqlite3.connect(journal) as conn:
        # Each recipient's first final report is kept whole in ``delivery``, the rest in
        # ``reports``: together, every report fetched.
        stored = conn.execute(
            "SELECT (SELECT count(*) FROM reports) + (SELECT count(*) FROM delivery)"
        ).fetchone()
        assert stored == (40,)
        ended = conn.execute("SELECT ended_at FROM runs WHERE kind='reports'").fetchone()
    assert ended[0] is not None


def test_campaign_reads_a_journal_while_a_send_runs_on_it(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.configure(rate=5.0)
    journal = str(tmp_path / "j.db")
    listed = write_lines(tmp_path / "n.txt", numbers(3000))
    process = cli.start(
        "send", listed, "--content", "hi", "--journal", journal, "--chunk-size", "100"
    )
    try:
        deadline = time.monotonic() + 30
        while emulator.state.message_count < 500:
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = cli.run("campaign", journal, "--json")
        at_most = emulator.state.message_count
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert seen.returncode == 0, seen.stderr
    assert "in use by another process" in seen.stderr
    assert "read only" in seen.stderr
    (view,) = json_lines(seen.stdout)
    # What the running send had committed: accepted chunks the gateway's ledger holds.
    assert 0 < view["accepted"] <= at_most
    assert view["accepted"] % 100 == 0
    assert [run["kind"] for run in view["runs"]] == ["send"]


def test_a_send_resumed_at_another_gateway_says_so_and_campaign_shows_it(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    journal = str(tmp_path / "c.db")
    listed = write_lines(tmp_path / "n.txt", numbers(30))
    first = cli.run("send", listed, "--content", "Hi", "--journal", journal, "-q")
    assert first.returncode == 0, first.stderr
    assert "sends to" not in first.stderr
    moved = emulator.base_url.replace("127.0.0.1", "localhost")
    again = cli.run("send", listed, "--content", "Hi", "--journal", journal, "-q",
                    env={**cli.env, "AISIX_BASE_URL": moved})  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (
        f"its earlier runs sent to {emulator.base_url}/OpenApi, this one sends to "
        f"{moved}/OpenApi" in again.stderr
    ), again.stderr
    seen = cli.run("campaign", journal, "--json")
    assert seen.returncode == 0, seen.stderr
    (view,) = json_lines(seen.stdout)
    assert view["gateway"] == f"{moved}/OpenApi"
    table = cli.run("campaign", journal)
    assert f"{moved}/OpenApi" in table.stdout + table.stderr


def test_reports_read_at_another_gateway_than_the_campaigns_say_so(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A journal's reports read through another URL than the one its sends went to were
    # taken silently: not refused (a gateway may move), but said before any poll.
    journal = sent_with_journal(cli, emulator, tmp_path)
    moved = emulator.base_url.replace("127.0.0.1", "localhost")
    assert moved != emulator.base_url  # the same emulator, as another gateway's URL
    read = cli.run("reports", "--journal", journal, "--json",
                   env={**cli.env, "AISIX_BASE_URL": moved})  # fmt: skip
    assert read.returncode == 0, read.stderr
    said = (
        f"campaign {journal}: its last send went to {emulator.base_url}/OpenApi, these "
        f"reports are read from {moved}/DataApi"
    )
    assert read.stderr.splitlines()[0].startswith(f"aisix: warning: {said}"), read.stderr
    assert emulator.authkey not in read.stderr + read.stdout
    # Said, not refused: the reports were read, and the journal still names the gateway
    # the campaign was sent through.
    assert summary_of(read.stdout)["delivery"]["pending"] == 0
    view = json_lines(cli.run("campaign", journal, "--json").stdout)[0]
    assert view["gateway"] == f"{emulator.base_url}/OpenApi"
    # At the campaign's own gateway, nothing is said.
    again = cli.run("reports", "--journal", journal)
    assert again.returncode == 0, again.stderr
    assert "last send went to" not in again.stderr


def test_campaign_export_to_stdout_is_the_csv_alone(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    journal = str(tmp_path / "c.db")
    mobiles = numbers(30)
    sent = cli.run("send", write_lines(tmp_path / "n.txt", mobiles), "--content", "Hi",
                   "--journal", journal, "-q")  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    exported = cli.run("campaign", journal, "--export", "-")

    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(exported.stdout.splitlines()))
    assert [row["mobile"] for row in rows] == mobiles
    assert {row["status"] for row in rows} == {"accepted"}
    assert "30 recipients written to stdout" in exported.stderr
    assert not (Path(ROOT) / "-").exists()  # not a file named "-" where it ran


def test_a_campaign_takes_its_reports_from_another_campaigns_follower(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Two campaigns on one account: following A took B's reports too (one queue per
    # account), and B stayed pending for good, with no way to hand them over.
    emulator.state.configure(report_delay=0.0)
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for journal, start in ((a, 0), (b, 1000)):
        listed = write_lines(tmp_path / f"{start}.txt", numbers(100, start=start))
        sent = cli.run("send", listed, "--content", "hi", "--journal", journal)
        assert sent.returncode == 0, sent.stderr
    followed = cli.run("reports", "--journal", a, "--until-idle", "0.5", "--interval", "0.05")
    assert followed.returncode == 0, followed.stderr
    before = json_lines(cli.run("campaign", b, "--json").stdout)[0]
    assert before["delivery"]["pending"] == 100
    taken = cli.run("campaign", b, "--take-reports-from", a, "--json")
    assert taken.returncode == 0, taken.stderr
    assert "100 reports of this campaign's taken from" in taken.stderr
    after = json_lines(taken.stdout)[0]
    assert after["delivery"]["pending"] == 0
    assert sum(after["delivery"]["by_code"].values()) == 100
    again = cli.run("campaign", b, "--take-reports-from", a, "--json")
    assert "0 reports of this campaign's taken" in again.stderr
    assert json_lines(again.stdout)[0]["delivery"] == after["delivery"]
    missing = cli.run("campaign", b, "--take-reports-from", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such campaign journal" in missing.stderr
