"""``aisix send`` as a subprocess against the emulator: inputs, dry run, exit codes, resume."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cli_support import ROOT, Cli, Running, json_lines, summary_of, write_lines
from helpers import numbers, wait_for

from aisix_async import CampaignSummary
from aisix_async.cli._standing import NOT_YET_SENT, standing_rows

SIGN = "【Aisix】"


def interrupt_twice_while_held(process: Any, emulator: Any) -> tuple[str, str]:
    """Two Ctrl-C once 2,000 were sent and a request is held on the wire (the client
    starts at one request at a time: right after an answer there may be none, and nothing
    would be unknown); the command's output, once it ended with 130."""
    wait_for(
        lambda: emulator.state.message_count >= 2000 and emulator.state.requests_held > 0,
        timeout=20.0,
    )
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    return str(out), str(err)


def test_send_numbers_file(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    mobiles = numbers(2500)
    path = write_lines(tmp_path / "n.txt", ["# customers", "", *mobiles])
    result = cli.run("send", path, "--content", "Spring sale", "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result.stdout)
    assert (summary["accepted"], summary["failed"], summary["unknown"]) == (2500, 0, 0)
    assert "shared_limit" not in summary  # no --shared-limit, nothing to say of one
    ledger = emulator.state.messages()
    assert Counter(m.mobile for m in ledger) == Counter(mobiles)
    assert {m.text for m in ledger} == {SIGN + "Spring sale"}
    assert summary["units"] == sum(m.units for m in ledger)
    assert Decimal(summary["cost"]) == sum((m.cost for m in ledger), Decimal(0))
    outcomes = [r for r in json_lines(result.stdout) if r["type"] == "outcome"]
    assert sorted(m for o in outcomes for m in o["mobiles"]) == sorted(mobiles)
    # Not a terminal: plain progress lines, and a table-free JSON stdout.
    assert "sending (once): 2,500/2,500 done" in result.stderr


def test_send_from_stdin_with_a_table_summary(cli: Cli, emulator: Any) -> None:
    mobiles = numbers(30)
    result = cli.run("send", "--content", "hi", input="\n".join(mobiles) + "\n")
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stdout
    assert "30" in result.stdout
    assert sorted(m.mobile for m in emulator.state.messages()) == mobiles


def test_send_template_from_csv_columns(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    rows = [
        ("13900000001", "Ana", "A1"),
        ("13900000002", "李雷", "B2"),
        ("13900000003", "Bo", "C3"),
    ]
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "phone,name,code\n" + "".join(f"{p},{n},{c}\n" for p, n, c in rows), encoding="utf-8"
    )
    result = cli.run(
        "send",
        "--csv",
        str(csv_file),
        "--column",
        "phone",
        "--template",
        "Hi {p1}, code {p2}",
        "--param-columns",
        "name,code",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    texts = {m.mobile: m.text for m in emulator.state.messages()}
    assert texts == {p: f"{SIGN}Hi {n}, code {c}" for p, n, c in rows}


def test_send_numbers_from_a_csv_column(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("\ufeffname,phone\nAna,13900000001\nBo,13900000002\n", encoding="utf-8")
    result = cli.run("send", "--csv", str(csv_file), "--column", "phone", "--content", "x")
    assert result.returncode == 0, result.stderr
    assert sorted(m.mobile for m in emulator.state.messages()) == ["13900000001", "13900000002"]
    wrong = cli.run("send", "--csv", str(csv_file), "--column", "mobile", "--content", "x")
    assert wrong.returncode == 2
    assert "no column 'mobile'" in wrong.stderr
    assert "'phone'" in wrong.stderr


def test_send_batch_csv(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    pairs = {f"1370000{i:04d}": f"Your order {i} shipped" for i in range(150)}
    batch = tmp_path / "b.csv"
    batch.write_text(
        "mobile,content\n" + "".join(f"{m},{c}\n" for m, c in pairs.items()), encoding="utf-8"
    )
    result = cli.run("send", "--batch", str(batch), "--json")
    assert result.returncode == 0, result.stderr
    assert {m.mobile: m.text for m in emulator.state.messages()} == {
        m: SIGN + c for m, c in pairs.items()
    }
    actions = {r["action"] for r in json_lines(result.stdout) if r["type"] == "outcome"}
    assert actions == {"sendBatch"}


def test_dry_run_sends_nothing_and_its_estimate_is_what_is_charged(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    content = "x" * 70  # with the signature: 76 characters, two units each
    path = write_lines(tmp_path / "n.txt", [*numbers(1200), numbers(1)[0]])
    dry = cli.run("send", path, "--content", content, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert emulator.state.message_count == 0
    assert emulator.state.get_counters().requests.get("sendOnce", 0) == 0
    estimate = json_lines(dry.stdout)[0]
    assert estimate["type"] == "estimate"
    assert estimate["dry_run"] is True
    assert (estimate["messages"], estimate["units_per_message"]) == (1201, 2)
    assert estimate["duplicates"] == 1
    assert estimate["enough"] is True
    sent = cli.run("send", path, "--content", content, "-q")
    assert sent.returncode == 0, sent.stderr
    ledger = emulator.state.messages()
    assert estimate["total_units"] == sum(m.units for m in ledger)
    assert Decimal(estimate["cost"]) == sum((m.cost for m in ledger), Decimal(0))


def test_dry_run_table_says_nothing_was_sent(cli: Cli, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(3))
    result = cli.run("send", path, "--content", "hello", "--dry-run")
    assert result.returncode == 0
    assert "dry run: nothing sent" in result.stdout
    assert "total units" in result.stdout
    assert "de-duplicated" not in result.stderr
    # Repeated numbers were counted without a word of what they cost (a user's trial).
    repeated = write_lines(tmp_path / "r.txt", [*numbers(3), *numbers(2)])
    result = cli.run("send", repeated, "--content", "hello", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 line(s) repeat a number listed before" in result.stderr
    assert "sent and charged again" in result.stderr


def test_a_send_the_balance_cannot_cover_is_refused_up_front(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.set_balance(None, "1.00")
    path = write_lines(tmp_path / "n.txt", numbers(50))
    dry = cli.run("send", path, "--content", "hello", "--dry-run")
    assert dry.returncode == 4
    assert "short" in dry.stderr
    result = cli.run("send", path, "--content", "hello")
    assert result.returncode == 4
    assert "5.00" in result.stderr
    assert "1.00" in result.stderr
    assert emulator.state.message_count == 0


def test_a_dry_run_of_a_resume_exits_as_the_resumed_run_does(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(50))
    args = ("send", path, "--content", "hello", "--journal", str(tmp_path / "c.db"))
    assert cli.run(*args).returncode == 0
    # Too little left for the whole input, which a resumed run does not compare: it skips
    # the 50 accepted and ends 0, so its rehearsal must not say 4.
    emulator.state.set_balance(None, "1.00")
    dry = cli.run(*args, "--dry-run")
    assert "resuming" in dry.stderr
    real = cli.run(*args)
    assert real.returncode == 0, real.stderr
    assert dry.returncode == real.returncode, dry.stderr
    assert emulator.state.message_count == 50


def test_invalid_lines_are_reported_with_line_numbers(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", ["13900000001", "13900000002", "139-0000-0003", "abc"])
    result = cli.run("send", path, "--content", "hello")
    assert result.returncode == 2
    assert "line 3" in result.stderr
    assert "line 4" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert emulator.state.message_count == 0
    skipped = cli.run("send", path, "--content", "hello", "--skip-invalid", "--json")
    assert skipped.returncode == 1
    summary = summary_of(skipped.stdout)
    assert (summary["accepted"], summary["failed"]) == (2, 2)
    assert sorted(m.mobile for m in emulator.state.messages()) == ["13900000001", "13900000002"]


def test_json_lists_every_invalid_line_a_person_sees_twenty(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A script reading --json got the first 20 bad lines, and "... and 780 more" on stderr.
    lines = [f"bad{n}" if n % 2 else numbers(1, start=n)[0] for n in range(1600)]
    path = write_lines(tmp_path / "n.txt", lines)
    dry = cli.run("send", path, "--content", "hi", "--dry-run", "--json")
    assert dry.returncode == 2, dry.stderr
    invalid = [r for r in json_lines(dry.stdout) if r["type"] == "invalid"]
    assert [r["line"] for r in invalid] == list(range(2, 1601, 2))
    assert "more invalid lines" not in dry.stderr
    text = cli.run("send", path, "--content", "hi", "--dry-run")
    assert text.returncode == 2
    assert text.stderr.count(" line ") == 20 and "... and 780 more invalid lines" in text.stderr
    assert emulator.state.message_count == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--content", "a", "--template", "b {p1}"], "exactly one of"),
        (["--template", "Hi {p1}"], "--csv"),
        (["--content", "a", "--at", "2030-01-31T09:00"], "no zone"),
        (["--content", "a", "--at", "tomorrow"], "ISO 8601"),
        (["--content", "a", "--at", "2001-01-31T09:00+08:00"], "at least one minute"),
        (["--content", "a", "--chunk-size", "1001"], "at most 1000"),
        (["--content", "a", "--resend-unknown"], "--journal"),
        (["--content", "x" * 1001], "1000"),
        (["--batch", "/nonexistent.csv"], "no such file"),
    ],
)
def test_bad_arguments_are_usage_errors(
    cli: Cli, emulator: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(2))
    result = cli.run("send", path, *args) if "--batch" not in args else cli.run("send", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert emulator.state.message_count == 0


def test_chunk_size_is_refused_where_it_would_be_ignored(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    batch = write_lines(tmp_path / "b.csv", ["13900000001,hi", "13900000002,ho"])
    users = write_lines(tmp_path / "u.csv", ["phone,name", "13900000001,Peter"])
    template = ["--csv", users, "--column", "phone", "--template", "Hi {p1}"]
    for args in (["--batch", batch], [*template, "--param-columns", "name"]):
        result = cli.run("send", *args, "--chunk-size", "10")
        assert result.returncode == 2, result.stderr
        assert "--chunk-size sets the numbers per sendOnce request" in result.stderr
        assert "Traceback" not in result.stderr
    assert emulator.state.message_count == 0


def test_scheduled_send_carries_its_time(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    when = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    path = write_lines(tmp_path / "n.txt", numbers(2))
    result = cli.run("send", path, "--content", "later", "--at", when.isoformat())
    assert result.returncode == 0, result.stderr
    scheduled = {m.scheduled_for for m in emulator.state.messages()}
    assert scheduled == {when.timestamp()}


def test_unknown_outcomes_exit_3(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    path = write_lines(tmp_path / "n.txt", numbers(10))
    result = cli.run("send", path, "--content", "hello", "--json")
    assert result.returncode == 3
    summary = summary_of(result.stdout)
    assert (summary["accepted"], summary["unknown"]) == (0, 10)
    # What an unknown chunk cost is not known (no receipt said it): null, not 0.
    outcomes = [r for r in json_lines(result.stdout) if r["type"] == "outcome"]
    assert {(o["status"], o["units"], o["cost"]) for o in outcomes} == {("unknown", None, None)}
    # -10 after charging: the gateway did send them, and the CLI did not resend.
    assert Counter(m.mobile for m in emulator.state.messages()) == Counter(numbers(10))
    assert "do not resend" in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_an_outcomes_file_that_cannot_be_written_stops_the_run_with_its_summary(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The write error ended the run as "usage or configuration error; nothing was sent"
    # (exit 2), with no summary and no file name, 3,000 recipients charged (a user's trial).
    path = write_lines(tmp_path / "n.txt", numbers(2000))
    result = cli.run(
        "send", path, "--content", "hi", "--chunk-size", "100", "--outcomes", "/dev/full",
        "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "--outcomes /dev/full: cannot write it" in result.stderr
    summary = summary_of(result.stdout)
    # Stopped as at a Ctrl-C: what went out is counted, the rest was not sent.
    assert summary["accepted"] == emulator.state.message_count
    assert summary["accepted"] + summary["not_sent"] == 2000
    assert summary["not_sent"] > 0


@pytest.mark.skipif(os.name != "posix", reason="a file size limit (RLIMIT_FSIZE)")
@pytest.mark.parametrize("limit", [100_000, 150_000])
def test_a_journal_that_fills_up_leaves_nothing_shown_in_flight(
    cli: Cli, emulator: Any, tmp_path: Path, limit: int
) -> None:
    # An operator's trial (a 1 MB tmpfs): the run stopped at a full disk, and its
    # "(all runs)" table, printed once nothing was on the wire any more, said "in flight
    # (a run is sending them) 4,000" with exit 1: recipients the gateway had accepted,
    # whose outcome the journal could not record, and which it calls unknown from then
    # on. A file size limit fills the journal here as a full disk does.
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    path = write_lines(tmp_path / "n.txt", numbers(20_000))
    journal = tmp_path / "j.db"
    result = subprocess.run(
        cli.command(
            "send", path, "--content", "hi", "--chunk-size", "100", "--journal", str(journal),
            "--no-balance-check", "--json",
        ),
        capture_output=True, text=True, env=cli.env, timeout=120, cwd=ROOT,
        preexec_fn=small_files,
    )  # fmt: skip
    assert "could not record" in result.stderr, result.stderr
    campaign = summary_of(result.stdout)["campaign"]
    sent = emulator.state.message_count
    assert 0 < sent < 20_000
    # Whatever went out is in the journal's figures, accepted or unknown: none "in flight".
    assert campaign["accepted"] + campaign["unknown"] == sent, (campaign, sent)
    assert campaign.get("in_flight", 0) == 0
    assert "in flight (a run is sending them)" not in result.stdout + result.stderr
    if campaign["unknown"]:
        assert result.returncode == 3, result.stderr
        assert "of this run went out, but the journal could not record" in result.stderr
    else:
        assert result.returncode == 1, result.stderr


def test_account_refusal_stops_the_run_with_its_reason(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.update_account(interface_enabled=False)
    path = write_lines(tmp_path / "n.txt", numbers(3))
    result = cli.run("send", path, "--content", "hello", "--no-balance-check")
    assert result.returncode == 4
    assert "interface is not enabled" in result.stderr
    assert emulator.state.message_count == 0


def start_long_send(
    cli: Cli, emulator: Any, tmp_path: Path, latency_ms: float, *options: str
) -> tuple[Running, list[str]]:
    """60,000 numbers, four requests at a time, slow answers: long enough to interrupt.

    Its output is spooled to files (``Cli.start``); a test that reads it as it comes
    uses :func:`long_send_args` with ``Cli.popen``.
    """
    mobiles, args = long_send_args(emulator, tmp_path, latency_ms, *options)
    return cli.start(*args), mobiles


def long_send_args(
    emulator: Any, tmp_path: Path, latency_ms: float, *options: str
) -> tuple[list[str], tuple[str, ...]]:
    emulator.state.set_faults(latency_ms=latency_ms)
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(60_000)
    path = write_lines(tmp_path / "n.txt", mobiles)
    args = ("send", path, "--content", "hello", "--json", "--max-concurrency", "4", *options)
    return mobiles, args


def test_interrupt_stops_cleanly_with_what_was_sent(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    process, mobiles = start_long_send(cli, emulator, tmp_path, 150)
    wait_for(lambda: emulator.state.message_count >= 3000, timeout=20.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    summary = summary_of(out)
    assert summary["interrupted"] is True
    sent = Counter(m.mobile for m in emulator.state.messages())
    # Requests on the wire were let finish: every recipient sent is accounted for.
    assert summary["accepted"] == sum(sent.values())
    assert max(sent.values()) == 1
    assert summary["unknown"] == 0
    assert summary["not_sent"] == len(mobiles) - summary["accepted"] > 0
    assert "Traceback" not in err
    # The last progress line counts the input never read as not sent, as the summary.
    last = [line for line in err.splitlines() if line.startswith("sending (once):")][-1]
    assert progress_figure(last, "not sent") == summary["not_sent"]


def test_a_second_interrupt_lists_the_abandoned_requests_as_unknown(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    outcomes = tmp_path / "outcomes.csv"
    process, _ = start_long_send(cli, emulator, tmp_path, 400, "--outcomes", str(outcomes))
    out, err = interrupt_twice_while_held(process, emulator)
    assert "abandoning" in err
    summary = summary_of(out)
    time.sleep(0.5)  # what the emulator had taken on, it finishes
    sent = Counter(m.mobile for m in emulator.state.messages())
    assert max(sent.values()) == 1
    # Cut off on the wire: unknown, and listed; whatever the gateway took is accounted for.
    assert summary["unknown"] > 0
    rows = outcomes.read_text(encoding="utf-8").splitlines()[1:]
    status = {row.split(",")[0]: row.split(",")[1] for row in rows}
    assert all(status.get(m) in ("accepted", "unknown") for m in sent)
    assert summary["accepted"] + summary["unknown"] >= sum(sent.values())
    assert "Traceback" not in err
    # The last progress line agrees with the summary: cut off is unknown, not in flight.
    last = [line for line in err.splitlines() if line.startswith("sending (")][-1]
    assert f"unknown {summary['unknown']:,}" in last
    assert "queued or in flight 0" in last


def test_journal_resumes_after_kill_without_sending_twice(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.set_faults(latency_ms=100)
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(30_000)
    path = write_lines(tmp_path / "n.txt", mobiles)
    journal = str(tmp_path / "sale.db")
    args = ("send", path, "--content", "Sale!", "--journal", journal, "--json", "-q")
    process = cli.start(*args, "--max-concurrency", "2")
    wait_for(lambda: emulator.state.message_count >= 2000, timeout=20.0)
    process.kill()
    process.communicate(timeout=30)
    assert process.returncode != 0
    emulator.state.set_faults(latency_ms=0)
    result = cli.run(*args)
    assert result.returncode in (0, 3), result.stderr
    campaign = summary_of(result.stdout)["campaign"]
    unknown = set(campaign["unknown_recipients"])
    assert result.returncode == (3 if unknown else 0)
    sent = Counter(m.mobile for m in emulator.state.messages())
    # Nobody twice; everybody once except those the journal lists as unknown.
    assert max(sent.values()) == 1
    assert {m for m in mobiles if sent[m] == 0} <= unknown
    assert campaign["accepted"] == sum(1 for m in mobiles if sent[m] and m not in unknown)
    assert campaign["complete"] is True
    # A third run has nothing left to send.
    again = cli.run(*args)
    assert summary_of(again.stdout)["accepted"] == 0
    assert sum(Counter(m.mobile for m in emulator.state.messages()).values()) == sum(sent.values())


def _table(text: str, title: str, labels: list[str]) -> dict[str, str]:
    """The figures of the table titled ``title`` in ``text``, by label."""
    found: dict[str, str] = {}
    lines = text[text.index(title) :].splitlines()[1:]
    for line in lines:
        if not line.strip():
            if found:
                break
            continue
        for label in labels:
            if line.strip().startswith(label + "  "):
                found.setdefault(label, line.strip()[len(label) :].strip())
    return found


def test_an_interrupted_send_and_aisix_campaign_agree_on_what_is_left(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # One request at a time, each held 600 ms: when both Ctrl-Cs land, one chunk is on
    # the wire and the next is planned, waiting for its turn. The send's "(all runs)"
    # table counted that chunk not yet sent; the journal had no record of it, and
    # `aisix campaign` said 0 (1,000 recipients apart on the same journal).
    emulator.state.set_faults(latency_ms=600)
    emulator.state.set_balance(None, "100000")
    path = write_lines(tmp_path / "n.txt", numbers(30_000))
    journal = str(tmp_path / "sale.db")
    process = cli.start(
        "send", path, "--content", "Sale!", "--journal", journal, "--max-concurrency", "1"
    )
    out, _ = interrupt_twice_while_held(process, emulator)
    time.sleep(0.7)  # the emulator finishes the request the send abandoned
    shown = cli.run("campaign", journal)
    assert shown.returncode == 0, shown.stderr
    labels = [label for label, _ in standing_rows(CampaignSummary(
        accepted=0, failed=0, unknown=0, not_yet_sent=0, in_flight=0, reconciled=0, units=0,
        cost=Decimal(0), input_size=None, delivery={}, unknown_recipients=(),
    ))]  # fmt: skip
    at_the_end = _table(out, f"campaign {journal} (all runs)", labels)
    status = _table(shown.stdout, f"campaign {journal}", labels)
    assert at_the_end == status
    assert set(status) == set(labels)
    # Not a vacuous agreement: something was cut off, and something was left to send.
    assert status["unknown (may have been sent)"] != "0"
    assert not status[NOT_YET_SENT].startswith("0")


def test_journal_refuses_a_changed_input(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    journal = str(tmp_path / "j.db")
    first = write_lines(tmp_path / "a.txt", numbers(5))
    assert cli.run("send", first, "--content", "a", "--journal", journal).returncode == 0
    result = cli.run("send", first, "--content", "changed", "--journal", journal)
    assert result.returncode == 2
    assert "journal" in result.stderr
    assert emulator.state.message_count == 5


def test_a_changed_input_is_named_by_its_lines_past_a_blank_and_an_invalid_one(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A blank first line and an invalid line 7 split the chunk's positions in two ranges:
    # only the first became lines, the second stayed positions, one off ("lines 2-6,6-1000"
    # for a change at line 1002; a user's trial).
    journal = str(tmp_path / "j.db")
    lines = ["", *numbers(1100)]
    lines[6] = "1234567"
    before = tmp_path / "a.txt"
    before.write_text("\n".join(lines) + "\n")
    lines[1001] = "13999999999"  # line 1002
    after = tmp_path / "b.txt"
    after.write_text("\n".join(lines) + "\n")
    sent = cli.run("send", str(before), "--content", "a", "--journal", journal, "--skip-invalid")
    assert sent.returncode == 1, sent.stderr  # the invalid line failed
    result = cli.run("send", str(after), "--content", "a", "--journal", journal, "--skip-invalid")
    assert result.returncode == 2, result.stderr
    assert f"at {after} lines 2-6,8-1002 (chunk" in result.stderr, result.stderr


def test_journal_refuses_a_longer_input_as_such(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    # A line appended to a finished run's file was reported as "the input differs ... at
    # lines 1-100 (chunk 0)", lines nobody had changed.
    journal = str(tmp_path / "j.db")
    first = write_lines(tmp_path / "a.txt", numbers(100))
    assert cli.run("send", first, "--content", "a", "--journal", journal).returncode == 0
    longer = write_lines(tmp_path / "b.txt", numbers(101))
    result = cli.run("send", longer, "--content", "a", "--journal", journal)
    assert result.returncode == 2, result.stderr
    assert "the input now holds 101 items" in result.stderr
    assert "recorded 100" in result.stderr and "lines 1-" not in result.stderr
    assert emulator.state.message_count == 100


def test_journal_refuses_a_shorter_input_than_a_run_reached(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Resumed with the first half of the file, a stopped run sent that half's rest and
    # recorded it as the whole input: the other half could never be sent (a user's trial).
    journal = str(tmp_path / "j.db")
    emulator.state.set_balance(None, "10")  # 100 numbers
    whole = write_lines(tmp_path / "a.txt", numbers(300))
    args = ("--content", "a", "--journal", journal, "--chunk-size", "50", "--max-concurrency", "1")
    cli.run("send", whole, *args, "--no-balance-check")
    sent = emulator.state.message_count
    emulator.state.set_balance(None, "1000")
    short = write_lines(tmp_path / "b.txt", numbers(150))
    result = cli.run("send", short, *args)
    assert result.returncode == 2, result.stderr
    assert "the input now holds 150 items, but an earlier run" in result.stderr
    assert emulator.state.message_count == sent
    assert cli.run("send", whole, *args).returncode == 0
    assert emulator.state.message_count == 300


def test_a_changed_input_met_after_a_resume_sent_chunks_still_says_what_was_sent(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The journal compares a chunk's items only as the send reaches it: a resume whose
    # input changed past chunks still to send sends those first. It exited 2 ("nothing
    # was sent") with no summary, 50 recipients charged (an operator's trial).
    journal = str(tmp_path / "j.db")
    emulator.state.set_balance(None, "5")  # 50 numbers: chunk 0, then -9
    mobiles = numbers(150)
    whole = write_lines(tmp_path / "a.txt", mobiles)
    args = ("--content", "a", "--journal", journal, "--chunk-size", "50", "--max-concurrency", "1")
    cli.run("send", whole, *args, "--no-balance-check")
    assert emulator.state.message_count == 50
    emulator.state.set_balance(None, "1000")
    changed = list(mobiles)
    changed[120] = "13999999999"  # chunk 2; chunk 1 is sent before it is reached
    edited = write_lines(tmp_path / "b.txt", changed)
    result = cli.run("send", edited, *args, "--json")
    assert emulator.state.message_count == 100
    assert result.returncode == 1, result.stderr
    assert f"{edited} line 121" in result.stderr
    summary = summary_of(result.stdout)
    assert summary["accepted"] == 50
    assert summary["campaign"]["accepted"] == 100


def test_a_finished_journal_with_skipped_lines_resumes_as_the_same_input(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Lines --skip-invalid leaves out are items of the input too: the journal's length
    # counts them, so the same file again is the same input (not "now holds").
    journal = str(tmp_path / "j.db")
    path = write_lines(tmp_path / "a.txt", [*numbers(20), "not a number", *numbers(5, start=50)])
    args = ("send", path, "--content", "a", "--journal", journal, "--skip-invalid")
    assert cli.run(*args).returncode == 1
    again = cli.run(*args)
    assert "now holds" not in again.stderr, again.stderr
    # Exit 1 again: the journal still holds the skipped line as failed.
    assert again.returncode == 1, again.stderr
    assert emulator.state.message_count == 25


def test_a_dry_run_refuses_a_journal_path_that_is_no_journal(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # It said "resuming notes.txt" and exited 0 (and skipped the balance check) where the
    # real send refuses the file with exit 2 (a user's trial: a mistyped path).
    path = write_lines(tmp_path / "a.txt", numbers(3))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = ("send", path, "--content", "a", "--journal", str(notes))
    for extra in (("--dry-run",), ()):
        result = cli.run(*args, *extra)
        assert result.returncode == 2, result.stderr
        assert "not a campaign journal" in result.stderr
        assert "resuming" not in result.stderr
    assert notes.read_text() == "my notes\n"
    # An empty file is a new journal, as the send opens it: no resume, no refusal.
    empty = tmp_path / "new.db"
    empty.touch()
    dry = cli.run("send", path, "--content", "a", "--journal", str(empty), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "resuming" not in dry.stderr
    assert emulator.state.message_count == 0


@pytest.mark.parametrize(
    "changed",
    [
        ("--content", "bye"),  # another content
        ("--content", "hi", "--csid", "101"),  # another signature
        ("--content", "hi", "--chunk-size", "10"),  # other chunks
        ("--content", "hi", "SHORTER"),  # an input shorter than the run read to its end
    ],
)
def test_a_dry_run_refuses_a_journal_of_another_campaign_as_the_send_does(
    cli: Cli, emulator: Any, tmp_path: Path, changed: tuple[str, ...]
) -> None:
    # The dry run said "resuming" and exited 0 where the real run refused with exit 2.
    path = write_lines(tmp_path / "n.txt", numbers(30))
    journal = tmp_path / "j.db"
    assert cli.run("send", path, "--content", "hi", "--journal", str(journal)).returncode == 0
    before = journal.read_bytes()
    shorter = write_lines(tmp_path / "short.txt", numbers(20))
    args = [a for a in changed if a != "SHORTER"]
    numbers_file = shorter if "SHORTER" in changed else path
    command = ("send", numbers_file, *args, "--journal", str(journal))
    dry = cli.run(*command, "--dry-run")
    # Nothing written to the journal, nothing sent.
    assert journal.read_bytes() == before
    assert emulator.state.message_count == 30
    real = cli.run(*command)
    assert real.returncode == 2, real.stderr
    assert dry.returncode == 2, dry.stderr
    refusal = [line for line in real.stderr.splitlines() if "aisix: error: journal:" in line]
    assert len(refusal) == 1, real.stderr
    assert refusal[0] in dry.stderr.splitlines(), dry.stderr
    assert "resuming" not in dry.stderr
    assert emulator.state.message_count == 30


def test_campaign_table_says_the_unread_input_is_still_to_send() -> None:
    def not_yet_sent(input_size: int | None) -> object:
        summary = CampaignSummary(
            accepted=27_000, failed=0, unknown=0, not_yet_sent=0, in_flight=0, reconciled=0,
            units=27_000, cost=Decimal("2700"), input_size=input_size, delivery={},
            unknown_recipients=(),
        )  # fmt: skip
        return dict(standing_rows(summary))[NOT_YET_SENT]

    # Interrupted before the end of its input: the journal cannot count what is left.
    assert not_yet_sent(None) == "0 + input not read yet"
    assert not_yet_sent(27_000) == "0"


def test_a_dry_run_exits_as_the_real_run_would_over_invalid_lines(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", ["13900000001", "12ab", "13900000002"])
    dry = cli.run("send", path, "--content", "hi", "--dry-run")
    real = cli.run("send", path, "--content", "hi")
    assert (dry.returncode, real.returncode) == (2, 2)
    # The report is still printed, and the error says what the real run would do.
    assert "dry run: nothing sent" in dry.stdout
    assert "line 2" in dry.stderr
    assert "--skip-invalid" in dry.stderr
    assert emulator.state.message_count == 0
    dry_skip = cli.run("send", path, "--content", "hi", "--dry-run", "--skip-invalid", "--json")
    assert emulator.state.message_count == 0
    real_skip = cli.run("send", path, "--content", "hi", "--skip-invalid", "--json")
    # Skipped lines become failed recipients: 1 both times.
    assert (dry_skip.returncode, real_skip.returncode) == (1, 1)
    estimate = json_lines(dry_skip.stdout)[-1]
    assert (estimate["type"], estimate["invalid"], estimate["messages"]) == ("estimate", 1, 2)
    assert summary_of(real_skip.stdout)["failed"] == 1


def test_a_dry_run_of_a_batch_with_invalid_rows_exits_2(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    batch = tmp_path / "b.csv"
    batch.write_text("mobile,content\n13900000001,hello\n13900000002\n", encoding="utf-8")
    dry = cli.run("send", "--batch", str(batch), "--dry-run")
    assert dry.returncode == 2, dry.stderr
    assert "needs two columns" in dry.stderr
    assert "dry run: nothing sent" in dry.stdout
    assert emulator.state.message_count == 0


@pytest.mark.parametrize("reports_first", [False, True])
def test_a_resumed_run_writes_the_outcome_rows_a_kill_left_out(
    cli: Cli, emulator: Any, tmp_path: Path, reports_first: bool
) -> None:
    # The chunks on the wire at a kill -9 got no --outcomes rows from the killed run, and
    # none from the resumed one, which skips them (never resent blindly): those
    # recipients were missing from the file for good (a user's trial). The latency is
    # long enough that a request held when it is seen is still held at the kill.
    emulator.state.set_faults(latency_ms=400)
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(20_000)
    path = write_lines(tmp_path / "n.txt", mobiles)
    outcomes = tmp_path / "outcomes.csv"
    args = (
        "send", path, "--content", "Sale!", "--journal", str(tmp_path / "sale.db"),
        "--outcomes", str(outcomes), "--json", "-q",
    )  # fmt: skip
    process = cli.start(*args, "--max-concurrency", "2")
    wait_for(
        lambda: emulator.state.message_count >= 2000 and emulator.state.requests_held > 0,
        timeout=20.0,
    )
    # Killed with a request held (for 400 ms), not while the lines of a chunk just
    # answered are written: the journal has that chunk settled, and no run would write
    # what the kill cut off (see the README on --outcomes).
    time.sleep(0.15)
    process.kill()
    process.communicate(timeout=30)
    emulator.state.set_faults(latency_ms=0)
    if reports_first:
        # Reports fetched before the resume prove the chunks on the wire sent: the resume
        # settles them as accepted (reconciled), and wrote no line for them (a user's
        # trial: 1,700 of 5,000 recipients missing from the file).
        emulator.state.configure(report_delay=0.0)
        wait_for(lambda: emulator.state.requests_held == 0, timeout=20.0)
        followed = cli.run("reports", "--journal", str(tmp_path / "sale.db"), "--until-idle", "0.5")
        assert followed.returncode == 5, followed.stderr
    result = cli.run(*args)
    campaign = summary_of(result.stdout)["campaign"]
    unknown = set(campaign["unknown_recipients"])
    rows = [row.split(",") for row in outcomes.read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted(row[0] for row in rows) == sorted(mobiles)  # each once
    assert {row[0] for row in rows if row[1] == "unknown"} == unknown
    if reports_first:
        assert not unknown and campaign["reconciled"] > 0
        proved = [row for row in rows if "reconciled" in row[3]]
        assert len(proved) == campaign["reconciled"] and {row[1] for row in proved} == {"accepted"}
    else:
        assert unknown, "a request was on the wire at the kill"


def _kill_with_chunks_on_the_wire(
    cli: Cli, emulator: Any, args: tuple[str, ...], journal: str, mobiles: list[str]
) -> list[str]:
    """Run ``args`` (sendOnce answers held 400 ms), kill -9 it with requests on the wire
    once 2,000 recipients were sent, and return the mobiles of the chunks it left there
    (unknown, known to the journal by input position only)."""
    emulator.state.set_faults(latency_ms=400, fault_actions=["sendOnce"])
    first = cli.start(*args)
    wait_for(
        lambda: emulator.state.message_count >= 2000 and emulator.state.requests_held > 0,
        timeout=20.0,
    )
    first.kill()
    first.communicate(timeout=30)
    wait_for(lambda: emulator.state.requests_held == 0, timeout=20.0)
    inspected = cli.run("campaign", journal, "--json")
    (view,) = json_lines(inspected.stdout)
    left = [mobiles[position] for position in view["unknown_unread"]]
    assert left, "a request was on the wire at the kill"
    return left


def test_the_rows_a_kill_left_out_are_written_before_a_resumed_run_is_killed_too(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The rows of the chunks a kill -9 left on the wire were written only as the resumed
    # run ended: killed too, it left them out, and no later run wrote them, the journal
    # no longer listing them as unread (an operator's trial: 11,500 of 200,000 lines
    # missing after two kills in a row). They are written as the run finds them.
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(20_000)
    path = write_lines(tmp_path / "n.txt", mobiles)
    outcomes, journal = tmp_path / "outcomes.csv", str(tmp_path / "sale.db")
    args = (
        "send", path, "--content", "Sale!", "--journal", journal, "--outcomes", str(outcomes),
        "-q", "--max-concurrency", "2",
    )  # fmt: skip
    left = _kill_with_chunks_on_the_wire(cli, emulator, args, journal, mobiles)
    # Every request of the resumed run is held: it cannot end before it is killed. Its
    # first request is for a chunk after those the first run left on the wire (chunks
    # are looked up in order, and everything before them was settled), so by then it
    # has found them.
    emulator.state.set_faults(latency_ms=1000, fault_actions=["sendOnce"])
    second = cli.start(*args)
    wait_for(lambda: emulator.state.requests_held > 0, timeout=20.0)
    assert second.poll() is None
    second.kill()
    second.communicate(timeout=30)
    rows = [row.split(",") for row in outcomes.read_text(encoding="utf-8").splitlines()[1:]]
    written = Counter(row[0] for row in rows)
    assert max(written.values()) == 1  # no line twice
    status = {row[0]: row[1] for row in rows}
    assert [status.get(mobile) for mobile in left] == ["unknown"] * len(left)
    # The resumed run did not end: the journal has its own chunks on the wire now.
    (view,) = json_lines(cli.run("campaign", journal, "--json").stdout)
    assert view["unknown_unread"]


def test_a_resumed_run_writes_the_rows_a_kill_left_out_into_a_pipe_too(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Into a pipe the lines go from a thread of their own (PipedOutcomes): the found
    # chunks' lines take the same way as every chunk's, and no earlier run wrote them.
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(20_000)
    path = write_lines(tmp_path / "n.txt", mobiles)
    journal = str(tmp_path / "sale.db")
    args = ("send", path, "--content", "Sale!", "--journal", journal, "-q")
    left = _kill_with_chunks_on_the_wire(
        cli, emulator, (*args, "--max-concurrency", "2"), journal, mobiles
    )
    emulator.state.set_faults(latency_ms=0)
    # stdout is a pipe here (captured): --outcomes /dev/stdout writes into it.
    resumed = cli.run(*args, "--outcomes", "/dev/stdout")
    assert resumed.returncode == 3, resumed.stderr
    rows = [row.split(",") for row in resumed.stdout.splitlines()]
    assert rows[0] == ["mobile", "status", "msgid", "error"]
    found = [row[0] for row in rows[1:] if "found in the journal by this run" in row[3]]
    assert sorted(found) == sorted(left)
    assert {row[1] for row in rows[1:] if row[0] in set(left)} == {"unknown"}
    assert len(rows) - 1 == len({row[0] for row in rows[1:]})  # each once


def test_outcome_rows_of_settled_chunks_survive_a_kill(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    outcomes = tmp_path / "outcomes.csv"
    _, args = long_send_args(emulator, tmp_path, 100, "--outcomes", str(outcomes))
    process = cli.popen(*args)
    assert process.stdout is not None
    reported: list[str] = []
    try:
        # Each JSON outcome line is printed once its rows are written.
        while len(reported) < 3000:
            record = json.loads(process.stdout.readline())
            if record["type"] == "outcome":
                reported += record["mobiles"]
    finally:
        process.kill()
        process.communicate(timeout=30)
    # The emulator finishes what it had taken on: let it, before the next test's reset.
    time.sleep(0.5)
    rows = outcomes.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "mobile,status,msgid,error"
    written = {row.split(",")[0] for row in rows[1:]}
    assert set(reported) <= written


@pytest.mark.parametrize("target", ["input", "directory", "journal"])
def test_outcomes_refuses_the_input_a_journal_or_a_directory(
    cli: Cli, emulator: Any, tmp_path: Path, target: str
) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(3))
    journal = tmp_path / "j.db"
    if target == "journal":
        assert cli.run("send", path, "--content", "hi", "--journal", str(journal)).returncode == 0
    before = Path(path).read_bytes(), emulator.state.message_count
    # The same file by another name is still the same file.
    where = {
        "input": str(tmp_path / "." / "n.txt"),
        "directory": str(tmp_path),
        "journal": str(journal),
    }[target]
    result = cli.run(
        "send", path, "--content", "hi", "--journal", str(journal), "--outcomes", where
    )
    assert result.returncode == 2, result.stderr
    assert "--outcomes" in result.stderr
    assert "Traceback" not in result.stderr
    assert (Path(path).read_bytes(), emulator.state.message_count) == before


@pytest.mark.parametrize("how", ["by name", "/dev/stdin"])
def test_outcomes_may_not_be_the_numbers_given_on_stdin(
    cli: Cli, emulator: Any, tmp_path: Path, how: str
) -> None:
    # `aisix send --content hi --outcomes in.txt < in.txt` (and `send - --outcomes
    # /dev/stdin`) appended the outcome rows to the numbers file: its name was never
    # given, so the check on FILE's name could not see it.
    path = write_lines(tmp_path / "in.txt", numbers(3))
    before = Path(path).read_bytes()
    args = ["send", "--content", "hi", "--outcomes", path]
    if how == "/dev/stdin":
        args = ["send", "-", "--content", "hi", "--outcomes", "/dev/stdin"]
    with open(path, "rb") as stdin:
        result = subprocess.run(
            cli.command(*args), stdin=stdin, capture_output=True, text=True, env=cli.env,
            cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "is the same file as stdin" in result.stderr
    assert Path(path).read_bytes() == before
    assert emulator.state.message_count == 0
    # Another file is fine, with the numbers on stdin all the same.
    with open(path, "rb") as stdin:
        other = tmp_path / "o.csv"
        fine = subprocess.run(
            cli.command("send", "--content", "hi", "--outcomes", str(other)), stdin=stdin,
            capture_output=True, text=True, env=cli.env, cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert fine.returncode == 0, fine.stderr
    assert len(other.read_text().splitlines()) == 4


def test_outcomes_appends_and_help_says_so(cli: Cli, tmp_path: Path) -> None:
    outcomes = tmp_path / "o.csv"
    for start in (0, 2):
        path = write_lines(tmp_path / "n.txt", numbers(2, start))
        assert cli.run("send", path, "--content", "hi", "--outcomes", str(outcomes)).returncode == 0
    rows = outcomes.read_text(encoding="utf-8").splitlines()
    # One header, then the rows of both runs.
    assert rows[0] == "mobile,status,msgid,error"
    assert sorted(row.split(",")[0] for row in rows[1:]) == numbers(4)
    assert "append" in " ".join(cli.run("send", "--help").stdout.split())


def _read_fifo(path: Path) -> tuple[threading.Thread, list[str]]:
    """A reader of the FIFO ``path`` on a thread of its own, as ``cat path &`` is."""
    got: list[str] = []

    def read() -> None:
        with path.open(encoding="utf-8", newline="") as fifo:  # blocks until a writer opens
            got.append(fifo.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


def _stalled_reader(fifo: Path, held: list[Any]) -> threading.Thread:
    """A reader of ``fifo`` that takes a little, then nothing more (its handle kept open in
    ``held``, for the test to close)."""

    def read() -> None:
        handle = fifo.open("rb")  # blocks until the command opens it
        held.append(handle)
        handle.read(10)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def _release_fifo(path: Path, reader: threading.Thread) -> None:
    # A command that never opened the FIFO left the reader waiting for a writer.
    if reader.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_outcomes_into_a_named_pipe_stream_each_run_with_its_header(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A pipe cannot be asked how much it holds: the send failed with "underlying stream
    # is not seekable" before sending anything (`--outcomes /dev/stdout | ...` too).
    fifo = tmp_path / "outcomes.fifo"
    os.mkfifo(fifo)
    path = write_lines(tmp_path / "n.txt", numbers(250))
    args = ("send", path, "--content", "hi", "--chunk-size", "100", "--outcomes", str(fifo))
    journal = ("--journal", str(tmp_path / "j.db"))
    runs = []
    for _ in range(2):  # the second resumes a finished journal: it sends nothing
        reader, got = _read_fifo(fifo)
        try:
            result = cli.run(*args, *journal)
        finally:
            _release_fifo(fifo, reader)
        assert result.returncode == 0, result.stderr
        runs.append(got[0].splitlines())
    first, resumed = runs
    assert first[0] == "mobile,status,msgid,error"
    assert sorted(row.split(",")[0] for row in first[1:]) == numbers(250)
    assert {row.split(",")[1] for row in first[1:]} == {"accepted"}
    # Its reader's stream is the run's own: the header again, and this run's lines (none).
    assert resumed == ["mobile,status,msgid,error"]
    assert emulator.state.message_count == 250


def table_figure(stdout: str, label: str) -> int:
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)\s*$", stdout, re.MULTILINE)
    assert found is not None, stdout
    return int(found.group(1).replace(",", ""))


def test_recipients_never_sent_after_a_balance_stop_count_as_not_sent(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(5000))
    outcomes = tmp_path / "o.csv"
    args = ("send", path, "--content", "hi", "--no-balance-check", "--max-concurrency", "1")
    # Enough for the first chunk of 1000 (100 yuan), not the second: -9 stops dispatch.
    emulator.state.set_balance(None, "150")
    result = cli.run(*args, "--json", "--outcomes", str(outcomes))
    assert result.returncode == 4, result.stderr
    summary = summary_of(result.stdout)
    rows = [row.split(",", 3) for row in outcomes.read_text(encoding="utf-8").splitlines()[1:]]
    never = [row for row in rows if row[3].startswith("NotSentError")]
    # Their rows keep the status failed and say why.
    assert never
    assert all(row[1] == "failed" and "dispatch stopped" in row[3] for row in never)
    failed = [row for row in rows if row[1] == "failed" and row not in never]
    assert summary["not_sent"] == len(never)
    assert summary["failed"] == len(failed)
    assert summary["accepted"] == emulator.state.message_count
    assert summary["accepted"] + summary["failed"] + summary["not_sent"] == 5000
    # The table says the same.
    emulator.state.reset()
    emulator.state.set_balance(None, "150")
    table = cli.run(*args)
    assert table.returncode == 4, table.stderr
    assert table_figure(table.stdout, "failed") == summary["failed"]
    assert table_figure(table.stdout, "not sent (stopped)") == summary["not_sent"]


def progress_figure(line: str, label: str) -> int:
    found = re.search(rf"  {re.escape(label)} ([\d,]+)  ", line)
    assert found is not None, line
    return int(found.group(1).replace(",", ""))


def test_the_last_progress_line_counts_not_sent_apart_as_the_summary_does(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", numbers(5000))
    outcomes = tmp_path / "o.csv"
    # As above: -9 after the first chunk stops dispatch, the rest is never sent.
    emulator.state.set_balance(None, "150")
    result = cli.run(
        "send", path, "--content", "hi", "--no-balance-check", "--max-concurrency", "1",
        "--json", "--outcomes", str(outcomes),
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    summary = summary_of(result.stdout)
    rows = outcomes.read_text(encoding="utf-8").splitlines()[1:]
    never = sum(1 for row in rows if ",NotSentError" in row)
    assert never > 0
    # stderr is not a terminal here: the last plain line holds the final figures.
    last = [line for line in result.stderr.splitlines() if line.startswith("sending (once):")][-1]
    assert progress_figure(last, "failed") == summary["failed"]
    assert progress_figure(last, "not sent") == never == summary["not_sent"]


def test_json_outcome_records_all_have_the_same_keys(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "n.txt", ["13900000001", "12ab", "13900000002"])
    result = cli.run("send", path, "--content", "hi", "--skip-invalid", "--json")
    assert result.returncode == 1, result.stderr
    outcomes = [r for r in json_lines(result.stdout) if r["type"] == "outcome"]
    assert {r["status"] for r in outcomes} == {"accepted", "failed"}
    assert len({tuple(sorted(r)) for r in outcomes}) == 1
    accepted = [r for r in outcomes if r["status"] == "accepted"]
    assert all(r["error"] is None and r["error_code"] is None for r in accepted)
    failed = [r for r in outcomes if r["status"] == "failed"]
    assert all(r["error"].startswith("ValidationError") for r in failed)
    # Amounts are written alike, two decimals, whether something was charged or not.
    assert {r["cost"] for r in failed} == {"0.00"}
    assert all(re.fullmatch(r"\d+\.\d\d", r["cost"]) for r in accepted)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_outcomes_into_a_pipe_whose_reader_stops_reading_never_freeze_the_send(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A FIFO whose reader read the header and then nothing: written on the event loop,
    # the send froze once the pipe was full, Ctrl-C with it (only kill -9 ended it). Now
    # Ctrl-C ends it at once, as ever, with what was sent counted; and left alone, a
    # reader that takes nothing for 5 s while lines wait stops the send as a full disk
    # does: the command ends, saying so, and the journal has every outcome.
    fifo = tmp_path / "outcomes.fifo"
    os.mkfifo(fifo)
    path = write_lines(tmp_path / "n.txt", numbers(40_000))
    held: list[Any] = []
    for interrupt in (True, False):
        emulator.state.reset()
        emulator.state.set_balance(None, "10000")
        # 40 ms a request, 16 at a time: 4,000 requests take 10 s or more, so the send
        # outlasts the reader's 5 s (at full speed httpx2 sent them all in 4.8 s, and
        # the lines were lost at the end instead: tested apart, below).
        emulator.state.set_faults(latency_ms=40, fault_actions=["sendOnce"])
        reader = _stalled_reader(fifo, held)
        journal = tmp_path / f"j{interrupt}.db"
        run = cli.start(
            "send", path, "--content", "hi", "--chunk-size", "10", "--journal", str(journal),
            "--outcomes", str(fifo),
        )  # fmt: skip
        try:
            if interrupt:
                # Once the pipe is full (64 kB: some 1,500 lines) and more waits, but before
                # 256 kB wait (some 6,500 lines), after which a reader idle for 5 s stops
                # the send by itself: on a loaded CI host that came before 8,000 were sent.
                wait_for(lambda: emulator.state.message_count >= 3_000, timeout=60)
                run.send_signal(signal.SIGINT)
                _out, err = run.communicate(timeout=20)
                assert run.returncode == 130, err
            else:
                _out, err = run.communicate(timeout=90)
                assert run.returncode not in (0, 130), err
                assert "--outcomes" in err and "reader took nothing" in err, err
                assert emulator.state.message_count < 40_000
        finally:
            if run.returncode is None:
                run.kill()
            for handle in held:
                handle.close()
            held.clear()
            reader.join(timeout=10)
        summary = cli.run("campaign", str(journal), "--json")
        assert summary.returncode == 0, summary.stderr
        assert json.loads(summary.stdout)["accepted"] == emulator.state.message_count


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_outcome_lines_a_pipe_never_took_fail_the_run_that_ended_first(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A send over before its pipe's reader was found idle: the lines the reader never
    # took were dropped at the end, said on stderr, and the run exited 0, so
    # `aisix send ... --outcomes fifo && use the outcomes` went on with a short file (a
    # CI run where 40,000 recipients were sent in 5 s). It is not a success.
    fifo = tmp_path / "outcomes.fifo"
    os.mkfifo(fifo)
    held: list[Any] = []
    reader = _stalled_reader(fifo, held)
    # 4,000 lines (some 100 kB, more than a pipe holds) from four requests: sent at once.
    listed = write_lines(tmp_path / "n.txt", numbers(4000))
    try:
        result = cli.run("send", listed, "--content", "hi", "--outcomes", str(fifo), timeout=60)
    finally:
        for handle in held:
            handle.close()
        reader.join(timeout=10)
    assert emulator.state.message_count == 4000
    assert "its last lines were lost" in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr


def test_outcomes_on_stdout_leave_it_to_the_csv(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    # `--outcomes /dev/stdout | gzip`: the summary went into the CSV; and with stdout a
    # file, it overwrote the outcome lines (a user's trial). It goes to stderr now.
    listed = write_lines(tmp_path / "n.txt", numbers(20))
    result = cli.run("send", listed, "--content", "hi", "--outcomes", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "mobile,status,msgid,error" and len(lines) == 21
    assert all(line.split(",")[1] == "accepted" for line in lines[1:])
    assert "this run" in result.stderr
    mixed = cli.run("send", listed, "--content", "hi", "--outcomes", "/dev/stdout", "--json")
    assert mixed.returncode == 2
    assert "would mix" in mixed.stderr
    assert emulator.state.message_count == 20  # the refused one sent nothing
