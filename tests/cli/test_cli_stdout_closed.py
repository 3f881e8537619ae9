"""stdout closing under a command (``| head``, a reader that died) loses nothing fetched.

The gateway hands each delivery report and reply out once, a send's outcomes say which
recipients were charged, and a rotated key exists nowhere else: what stdout cannot take
goes to an owner-only file in the user's state folder, named on stderr, and the command
stops fetching and sending (exit 141, as a shell reports a process stopped by SIGPIPE).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_support import AS_ON_A_TERMINAL, ROOT, Cli, json_lines, numbers, write_lines

from aisix_async.cli import _output as output_module
from aisix_async.cli._app import _stdout_closed
from aisix_async.cli._output import Output

CLOSED = 141


def _kept(cli: Cli, stderr: str) -> tuple[Path, list[dict[str, Any]]]:
    """The one file of unprinted records the command named, and its records."""
    folder = Path(cli.env["XDG_STATE_HOME"]) / "aisix" / "unprinted"
    files = list(folder.iterdir())
    assert len(files) == 1, files
    assert str(files[0]) in stderr  # named, so that the operator finds it
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600  # numbers, texts, keys
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    return files[0], json_lines(files[0].read_text(encoding="utf-8"))


def _each_report_once(
    kept: list[dict[str, Any]], emulator: Any, drawn: list[tuple[str, str, str]]
) -> None:
    """Every report the gateway drew is in the kept file or still queued, once."""
    left = [(msgid, mobile) for msgid, mobile, _ in emulator.state.queued_reports()]
    fetched = [(r["msgid"], r["mobile"]) for r in kept if r["type"] == "report"] + left
    assert Counter(fetched) == Counter((msgid, mobile) for msgid, mobile, _ in drawn)


@pytest.fixture
def cli_state(cli: Cli, tmp_path: Path) -> Cli:
    cli.env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    return cli


def _sent(cli: Cli, emulator: Any, tmp_path: Path, count: int) -> list[tuple[str, str, str]]:
    emulator.state.configure(report_delay=0.0, reports_per_call=100)
    listed = write_lines(tmp_path / "numbers.txt", numbers(count))
    sent = cli.run("send", listed, "--content", "Sale", "--chunk-size", "100", "-q")
    assert sent.returncode == 0, sent.stderr
    drawn = emulator.state.queued_reports()
    assert len(drawn) == count
    return drawn


@pytest.mark.parametrize("json_mode", [False, True])
def test_reports_stdout_could_not_take_are_kept_and_no_more_are_fetched(
    cli_state: Cli, emulator: Any, tmp_path: Path, json_mode: bool
) -> None:
    cli = cli_state
    drawn = _sent(cli, emulator, tmp_path, 1000)

    closed = cli.run_with_closed_stdout("reports", *(["--json"] if json_mode else []))

    assert closed.returncode == CLOSED, closed.stderr
    assert "Traceback" not in closed.stderr
    assert "record(s) it could not take" in closed.stderr
    _, kept = _kept(cli, closed.stderr)
    assert {r["type"] for r in kept} == {"report"}
    # It stopped fetching: nobody reads, and the gateway would hand the rest out once.
    assert len(emulator.state.queued_reports()) >= 500
    _each_report_once(kept, emulator, drawn)


def test_a_send_whose_stdout_closes_stops_and_keeps_every_outcome(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    cli = cli_state
    emulator.state.set_faults(latency_ms=50)
    mobiles = numbers(2000)
    listed = write_lines(tmp_path / "numbers.txt", mobiles)

    closed = cli.run_with_closed_stdout(
        "send", listed, "--content", "Hi", "--chunk-size", "10", "--json"
    )

    assert closed.returncode == CLOSED, closed.stderr
    assert "stdout was closed: no more requests" in closed.stderr
    _, kept = _kept(cli, closed.stderr)
    outcomes = [r for r in kept if r["type"] == "outcome"]
    (summary,) = [r for r in kept if r["type"] == "summary"]
    sent = [r.mobile for r in emulator.state.messages()]
    assert 0 < len(sent) < len(mobiles)  # it stopped sending
    accepted = [m for r in outcomes if r["status"] == "accepted" for m in r["mobiles"]]
    # What the gateway took is exactly what the kept outcomes say was accepted.
    assert Counter(accepted) == Counter(sent)
    assert summary["accepted"] == len(sent)
    assert summary["accepted"] + summary["not_sent"] == len(mobiles)
    assert (summary["stdout_closed"], summary["interrupted"]) == (True, False)
    assert "dispatch stopped because stdout was closed" in closed.stderr


def test_a_text_send_meeting_a_closed_stdout_at_its_summary_keeps_its_own_exit_code(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Text mode writes nothing to stdout before the summary: everything was sent by
    # then, and the code that says so (0 here; 3 with unknowns) matters more than 141.
    mobiles = numbers(50)
    listed = write_lines(tmp_path / "numbers.txt", mobiles)

    closed = cli_state.run_with_closed_stdout("send", listed, "--content", "Hi")

    assert closed.returncode == 0, closed.stderr
    assert len(emulator.state.messages()) == len(mobiles)
    assert "this run" in closed.stderr  # the summary, on stderr
    assert "stdout was closed: the summary above is on stderr" in closed.stderr


def test_a_rotated_key_stdout_could_not_take_is_kept_in_an_owner_only_file(
    cli_state: Cli, emulator: Any
) -> None:
    cli = cli_state
    old = emulator.authkey

    closed = cli.run_with_closed_stdout("rotate-key", "--yes")

    assert closed.returncode == CLOSED, closed.stderr
    _, kept = _kept(cli, closed.stderr)
    (record,) = kept
    new = emulator.state.authkey()
    assert new != old
    assert record == {"type": "key", "account": emulator.account, "authkey": new}
    assert "the new key is in" in closed.stderr
    assert new not in closed.stderr  # in the owner-only file, not in a log
    assert "dropped lines" not in closed.stderr  # nothing was read: no such doubt


def test_a_new_key_left_unread_in_a_pipe_is_kept_too(cli_state: Cli, emulator: Any) -> None:
    # A reader that opens the pipe and never reads: the write succeeds, the key sits in
    # the pipe's buffer, and went with the reader (a user's trial: exit 0, account
    # locked out). Unread after a few seconds, it is kept in the file as well.
    cli = cli_state
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run(
            cli.command("rotate-key", "--yes"),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env,
            timeout=60,
            cwd=ROOT,
        )
        in_pipe = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        os.close(write_end)
    new = emulator.state.authkey()
    assert done.returncode == 0, done.stderr
    assert new in in_pipe
    _, kept = _kept(cli, done.stderr)
    assert kept == [{"type": "key", "account": emulator.account, "authkey": new}]
    assert "did not read it within" in done.stderr
    assert new not in done.stderr


@pytest.mark.parametrize("command", ["replies", "reports"])
def test_a_reader_that_stops_early_is_warned_of_and_every_record_fetched_is_counted(
    cli_state: Cli, emulator: Any, tmp_path: Path, command: str
) -> None:
    # `aisix replies | head -1`: reports said that head may have dropped lines it had
    # read, replies said nothing, and their count ("17 replies" beside 199 kept, of 200
    # fetched) counted twice those the closing pipe handed back.
    cli = cli_state
    if command == "replies":
        for index in range(3000):
            emulator.state.inject_reply(f"139{index:08d}", f"STOP {index}")
    else:
        _sent(cli, emulator, tmp_path, 3000)
    env = {k: v for k, v in cli.env.items() if k != "PYTHONUNBUFFERED"}  # as a user's
    process = subprocess.Popen(
        cli.command(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # head -1: a line read, then the pipe closed
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=30) == CLOSED, err
    assert first.strip() and "Traceback" not in err
    left = (
        emulator.state.pending_replies()
        if command == "replies"
        else len(emulator.state.queued_reports())
    )
    fetched = 3000 - left
    noun = "replies" if command == "replies" else "delivery reports"
    assert f"\n{fetched:,} {noun}\n" in f"\n{err}"
    _, kept = _kept(cli, err)
    said = [line for line in err.splitlines() if "record(s) it could not take" in line]
    assert len(said) == 1, err
    assert said[0].startswith(f"aisix: error: stdout was closed: {len(kept):,} record(s)")
    took = re.search(
        r"may also have dropped some of the ([\d,]+) records? stdout took: (.*)", said[0]
    )
    assert took is not None, said[0]
    # Fetched = taken by the pipe + kept: none counted twice, none unaccounted for.
    assert int(took.group(1).replace(",", "")) + len(kept) == fetched
    rely = {"replies": "nothing else holds replies", "reports": "a --journal is the record"}
    assert took.group(2).startswith(rely[command])


def test_reports_into_a_journal_keep_what_stdout_could_not_take(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    cli = cli_state
    emulator.state.configure(report_delay=0.0, reports_per_call=100)
    journal = str(tmp_path / "c.db")
    listed = write_lines(tmp_path / "numbers.txt", numbers(300))
    sent = cli.run("send", listed, "--content", "Hi", "--journal", journal, "-q")
    assert sent.returncode == 0, sent.stderr

    closed = cli.run_with_closed_stdout("reports", "--journal", journal, "--json")

    assert closed.returncode == CLOSED, closed.stderr
    _, kept = _kept(cli, closed.stderr)
    reports = [r for r in kept if r["type"] == "report"]
    assert reports and all(r["campaign"] is True for r in reports)
    assert [r["type"] for r in kept if r not in reports] == ["summary"]
    shown = cli.run("campaign", journal, "--json")
    figures = json_lines(shown.stdout)[0]["delivery"]
    # The journal recorded every report fetched; the file holds the ones not shown.
    assert sum(figures["by_code"].values()) == len(reports)


@pytest.mark.parametrize("json_mode", [False, True])
def test_a_command_with_nothing_to_keep_exits_141_without_a_traceback(
    cli_state: Cli, json_mode: bool
) -> None:
    closed = cli_state.run_with_closed_stdout("balance", *(["--json"] if json_mode else []))
    assert closed.returncode == CLOSED
    assert closed.stderr == ""  # nothing lost: nothing to say, as other tools on a pipe
    # A balance is asked again: no file of it to clean up.
    assert not (Path(cli_state.env["XDG_STATE_HOME"]) / "aisix").exists()


def test_ctrl_c_while_the_last_poll_is_on_the_wire_still_keeps_its_reports(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    cli = cli_state
    drawn = _sent(cli, emulator, tmp_path, 1000)
    emulator.state.set_faults(latency_ms=1500, fault_actions=["getSendState"])
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = subprocess.Popen(
        cli.command("reports", "--follow", "--json"),
        stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE, text=True,
        env=cli.env, cwd=ROOT,
    )  # fmt: skip
    os.close(write_end)
    assert process.stderr is not None
    # The first batch met the closed pipe; a poll may still be on the wire. Ctrl-C now.
    first = process.stderr.readline()
    assert "stdout was closed: what it could not take is kept in" in first
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)

    assert process.returncode == 130, first + rest
    assert "record(s) it could not take: kept in" in rest  # said at a Ctrl-C too
    _, kept = _kept(cli, first + rest)
    _each_report_once(kept, emulator, drawn)


def test_a_hang_up_stops_a_send_as_ctrl_c_does(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A closed terminal sends SIGHUP: killed by it, a send would leave its outcomes
    # nowhere. It stops as at a first Ctrl-C, and says what was sent.
    cli = cli_state
    emulator.state.configure(rate=20.0)
    mobiles = numbers(3000)
    listed = write_lines(tmp_path / "numbers.txt", mobiles)
    outcomes = tmp_path / "outcomes.csv"
    running = cli.start("send", listed, "--content", "Hi", "--chunk-size", "10", "--json",
                        "--outcomes", str(outcomes))  # fmt: skip
    deadline = time.monotonic() + 30
    while emulator.state.message_count < 50:
        assert running.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    running.send_signal(signal.SIGHUP)
    out, err = running.communicate(timeout=30)

    assert running.returncode == 130, err
    (summary,) = [r for r in json_lines(out) if r["type"] == "summary"]
    sent = len(emulator.state.messages())
    assert summary["interrupted"] is True
    assert summary["accepted"] == sent < len(mobiles)
    with outcomes.open(encoding="utf-8", newline="") as rows:
        accepted = [row["mobile"] for row in csv.DictReader(rows) if row["status"] == "accepted"]
    # Every recipient the gateway took is on record: none was on the wire at the kill.
    assert Counter(accepted) == Counter(m.mobile for m in emulator.state.messages())


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError

    def flush(self) -> None:
        raise BrokenPipeError


def test_output_keeps_records_tells_the_command_once_and_shows_vital_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    err = io.StringIO()
    out = Output(stdout=_ClosedPipe(), stderr=err, command="send")
    told: list[str] = []
    out.when_stdout_closes(lambda: told.append("closed"))

    out.result({"type": "outcome", "n": 1}, "text line")
    out.write_results("a\nb\n", lambda: [{"n": 2}, {"n": 3}], count=2)
    out.emit({"n": 4})
    out.pairs("of no use now", [("a", 1)])
    out.pairs("what was sent", [("accepted", 7)], vital=True)
    out.close()
    late: list[str] = []
    out.when_stdout_closes(lambda: late.append("closed"))

    assert told == ["closed"] and late == ["closed"]
    count, path = out.unprinted
    assert count == 4 and path is not None
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["n"] for r in kept] == [1, 2, 3, 4]
    assert out.taken_by_stdout == 0  # each record handed to it came back
    assert "what was sent" in err.getvalue() and "of no use now" not in err.getvalue()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_that_hung_up_is_a_closed_stdout_too(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Its writes fail with EIO, not EPIPE: the records are kept all the same.
    cli = cli_state
    drawn = _sent(cli, emulator, tmp_path, 300)
    controller, terminal = os.openpty()
    os.close(controller)  # the terminal window closed
    try:
        done = subprocess.run(
            cli.command("reports", "--json"),
            stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE, text=True,
            env=cli.env, cwd=ROOT, timeout=60,
        )  # fmt: skip
    finally:
        os.close(terminal)

    assert done.returncode == CLOSED, done.stderr
    _, kept = _kept(cli, done.stderr)
    _each_report_once(kept, emulator, drawn)


def test_records_go_to_stderr_when_no_file_can_be_made_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state folder would be")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    err = io.StringIO()
    out = Output(stdout=_ClosedPipe(), stderr=err, command="reports")

    out.result({"type": "report", "n": 1}, "line")
    out.result({"type": "report", "n": 2}, "line")

    assert out.unprinted == (2, None)
    said = err.getvalue().splitlines()
    assert "no file could be made" in said[0]
    assert [json.loads(line)["n"] for line in said[1:]] == [1, 2]


def test_campaign_export_into_a_closed_pipe_exits_141_without_a_traceback(
    cli_state: Cli, tmp_path: Path
) -> None:
    cli = cli_state
    journal = str(tmp_path / "c.db")
    listed = write_lines(tmp_path / "n.txt", numbers(3000))
    sent = cli.run("send", listed, "--content", "Hi", "--journal", journal, "-q")
    assert sent.returncode == 0, sent.stderr

    closed = cli.run_with_closed_stdout("campaign", journal, "--export", "-")

    assert closed.returncode == CLOSED, closed.stderr
    assert "Exception ignored" not in closed.stderr and "Traceback" not in closed.stderr


def test_a_rotated_key_written_to_its_file_is_not_kept_again(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    cli = cli_state
    target = tmp_path / "key"

    closed = cli.run_with_closed_stdout("rotate-key", "--yes", "--write-to", str(target))

    # Nothing lost: the key is where it was asked to go, and nowhere else.
    assert closed.returncode == 0, closed.stderr
    assert target.read_text().strip() == emulator.state.authkey()
    assert f"the new key is in {target} only" in closed.stderr
    assert not (Path(cli.env["XDG_STATE_HOME"]) / "aisix").exists()


def test_a_send_ignoring_hangups_under_nohup_keeps_sending(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    cli = cli_state
    emulator.state.configure(rate=200.0)
    mobiles = numbers(1000)
    listed = write_lines(tmp_path / "numbers.txt", mobiles)
    process = subprocess.Popen(
        cli.command("send", listed, "--content", "Hi", "--chunk-size", "10", "-q"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=cli.env, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # nohup
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while emulator.state.message_count < 100:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert len(emulator.state.messages()) == len(mobiles)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_send_on_a_terminal_that_hung_up_ends_cleanly_on_sighup(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # stdout and stderr both on the dead terminal, as after a closed window: the
    # progress display and the summary have nowhere to go, and must not crash the stop.
    cli = cli_state
    emulator.state.configure(rate=20.0)
    listed = write_lines(tmp_path / "numbers.txt", numbers(3000))
    outcomes = tmp_path / "outcomes.csv"
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        cli.command("send", listed, "--content", "Hi", "--chunk-size", "10",
                    "--outcomes", str(outcomes)),
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=cli.env, cwd=ROOT,
        **AS_ON_A_TERMINAL,
    )  # fmt: skip
    os.close(terminal)
    try:
        deadline = time.monotonic() + 30
        while emulator.state.message_count < 50:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.close(controller)  # the window closes ...
    process.send_signal(signal.SIGHUP)  # ... and the terminal says so
    assert process.wait(timeout=60) == 130
    with outcomes.open(encoding="utf-8", newline="") as rows:
        accepted = [row["mobile"] for row in csv.DictReader(rows) if row["status"] == "accepted"]
    assert Counter(accepted) == Counter(m.mobile for m in emulator.state.messages())


def test_without_a_home_folder_records_go_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A container's user with no home: Path.home() raises RuntimeError, not OSError.
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    err = io.StringIO()
    out = Output(stdout=_ClosedPipe(), stderr=err, command="reports")

    out.result({"type": "report", "n": 1}, "line")

    assert out.stdout_closed and out.unprinted == (1, None)
    assert json.loads(err.getvalue().splitlines()[-1]) == {"type": "report", "n": 1}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_kept_file_that_fills_hands_the_rest_to_stderr_and_says_how_many_went_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    real_fdopen = os.fdopen

    def full_disk(handle: int, *args: Any, **kwargs: Any) -> Any:
        os.close(handle)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", full_disk)
    err = io.StringIO()
    out = Output(stdout=_ClosedPipe(), stderr=err, command="reports")

    out.result({"type": "report", "n": 1}, "line")
    out.result({"type": "report", "n": 2}, "line")
    monkeypatch.undo()
    _stdout_closed(out, "reports", 0)

    count, path = out.unprinted
    assert (count, out.unprinted_on_stderr) == (2, 2)
    said = err.getvalue()
    assert "could not take more" in said
    assert [json.loads(line)["n"] for line in said.splitlines() if line.startswith("{")] == [1, 2]
    assert f"0 kept in {path} and 2 printed on stderr above" in said


def test_output_never_waits_for_a_stalled_reader_and_keeps_what_it_never_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(output_module, "GRACE", 0.2)
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    err = io.StringIO()
    out = Output(stdout=stream, stderr=err, command="send")
    try:
        started = time.monotonic()
        for n in range(200):  # about 200 kB: three times what the pipe holds
            out.emit({"n": n, "pad": "x" * 1000})
        assert time.monotonic() - started < 5  # queued, not waited for
        out.close(patient=False)  # a stopped command: the reader gets GRACE, then no more

        os.set_blocking(read_end, False)
        printed = os.read(read_end, 1 << 20).decode("utf-8")
    finally:
        os.close(read_end)
        stream.close()
    taken = [json.loads(line)["n"] for line in printed.split("\n")[:-1]]
    count, path = out.unprinted
    assert path is not None and count > 0
    kept = [json.loads(line)["n"] for line in path.read_text().splitlines()]
    # Every record is on stdout or in the file (the one cut off mid-write in both), in order.
    assert sorted(set(taken) | set(kept)) == list(range(200))
    assert kept == list(range(kept[0], 200))
    assert out.stdout_closed and out.stdout_trouble == "stdout was not read"
    assert f"stdout was not read: what it could not take is kept in {path}" in err.getvalue()


def _settled_count(emulator: Any, *, at_least: int, quiet: float, timeout: float) -> int:
    """The emulator's message count once it has stopped growing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = emulator.state.message_count
        if count != last:
            last, since = count, time.monotonic()
        elif count >= at_least and time.monotonic() - since >= quiet:
            return count
        time.sleep(0.05)
    raise AssertionError(f"the send never settled (at {last} messages)")


def test_ctrl_c_is_heard_while_nobody_reads_stdout_and_what_it_did_not_take_is_kept(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A reader that stops reading without closing the pipe (a consumer that hung): once
    # the pipe filled, the outcome line being written blocked the event loop, so Ctrl-C
    # did nothing until the reader went away, and then the chunks frozen between their
    # turn and their request were called unknown ("abandoned on the wire") though the
    # gateway never saw them (a user's trial: three Ctrl-C, 34 s, 200 such recipients).
    cli = cli_state
    emulator.state.set_balance(None, "100000")
    mobiles = numbers(60_000)  # about 1 MB of outcome lines: far more than a pipe holds
    listed = write_lines(tmp_path / "numbers.txt", mobiles)
    journal = str(tmp_path / "c.db")
    process = subprocess.Popen(
        cli.command("send", listed, "--content", "Hi", "--chunk-size", "100", "--json",
                    "--journal", journal),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli.env, cwd=ROOT, **AS_ON_A_TERMINAL,
    )  # fmt: skip
    try:
        # Nobody reads stdout: the send goes on until the pipe (and what the command
        # queues for it) is full, then waits for the reader.
        before = _settled_count(emulator, at_least=1000, quiet=1.0, timeout=60)
        assert before < len(mobiles)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None and process.stderr is not None
    printed = process.stdout.read().decode("utf-8")
    err = process.stderr.read().decode("utf-8")
    process.stdout.close()
    process.stderr.close()

    assert process.returncode == 130, err
    assert took < 20
    assert "interrupted: no more requests" in err
    assert "stdout was not read: what it could not take is kept in" in err
    assert "Traceback" not in err
    _, kept = _kept(cli, err)
    # The pipe holds what it took (its last line may be cut off; that one is kept too).
    lines = printed.split("\n")
    taken = [json.loads(line) for line in lines[:-1]]
    outcomes = [r for r in taken + kept if r["type"] == "outcome"]
    (summary,) = [r for r in kept if r["type"] == "summary"]
    sent = Counter(m.mobile for m in emulator.state.messages())
    assert max(sent.values()) == 1
    # What the gateway took is exactly what was accepted, and nothing else is in doubt:
    # no chunk it never saw is called unknown.
    accepted = {m for r in outcomes if r["status"] == "accepted" for m in r["mobiles"]}
    assert accepted == set(sent)
    assert (summary["accepted"], summary["unknown"]) == (len(sent), 0)
    assert summary["interrupted"] is True
    assert summary["accepted"] + summary["not_sent"] == len(mobiles)
    shown = cli.run("campaign", journal, "--json")
    recorded = json_lines(shown.stdout)[0]
    assert (recorded["accepted"], recorded["unknown"], recorded["in_flight"]) == (len(sent), 0, 0)


@pytest.mark.parametrize("command", ["balance", "reports"])
def test_a_command_started_with_stdout_closed_ends_as_a_closed_stdout(
    cli_state: Cli, emulator: Any, tmp_path: Path, command: str
) -> None:
    # ">&-": Python's sys.stdout is None then, and every command failed with an
    # AttributeError traceback before doing anything (a user's trial).
    emulator.state.configure(report_delay=0.0)
    if command == "reports":
        _sent(cli_state, emulator, tmp_path, 20)
    done = subprocess.run(
        cli_state.command(command, "--json"),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_state.env,
        timeout=60,
        cwd=ROOT,
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == CLOSED, done.stderr
    if command == "reports":
        _, kept = _kept(cli_state, done.stderr)
        assert len([r for r in kept if r["type"] == "report"]) == 20


def test_ctrl_c_ends_an_export_to_stdout_nobody_reads(
    cli_state: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The CSV was written to stdout on the journal's worker thread: into a pipe nobody
    # read, it blocked there, a Ctrl-C printed "interrupted", and the process waited for
    # that thread for good (a user's trial: only kill -9 ended it).
    cli = cli_state
    journal = str(tmp_path / "c.db")
    listed = write_lines(tmp_path / "numbers.txt", numbers(5000))
    sent = cli.run("send", listed, "--content", "Hi", "--journal", journal, "-q")
    assert sent.returncode == 0, sent.stderr
    process = cli.popen("campaign", journal, "--export", "-")  # stdout: never read
    try:
        time.sleep(2.0)  # the pipe (64 kB) is full: some 200 kB of CSV wait
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)  # stdout still unread
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
