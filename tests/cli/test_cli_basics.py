"""``aisix``: help, credentials, the missing extra, and the small commands, as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from cli_support import ROOT, Cli, json_lines

from aisix_async.cli import MISSING_EMULATOR_HINT, MISSING_EXTRA_HINT
from aisix_async.cli._commands import _check_key_target
from aisix_async.cli._credentials import refuse_key_in_arguments, resolve_credentials
from aisix_async.cli._exit import CliError
from aisix_async.cli._records import one_line

OTHER_KEY = "0123456789ABCDEF0123456789ABCDEF"


def test_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    result = cli.run("--help")
    assert result.returncode == 0
    for command in (
        "demo",
        "send",
        "balance",
        "channels",
        "signs",
        "reports",
        "replies",
        "rotate-key",
        "emulator",
    ):
        assert command in result.stdout
    assert "exit codes:" in result.stdout
    assert "130" in result.stdout
    assert "AISIX_AUTHKEY" in result.stdout
    for command in ("send", "demo", "balance", "reports", "rotate-key", "emulator"):
        sub = cli.run(command, "--help")
        assert sub.returncode == 0, command
        assert "usage: aisix " + command in sub.stdout


def test_no_command_is_a_usage_error(cli: Cli) -> None:
    result = cli.run()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_missing_cli_extra_gives_one_line_not_a_traceback() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from aisix_async.cli import main\n"
        "raise SystemExit(main(['balance']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip() == MISSING_EXTRA_HINT
    assert "Traceback" not in result.stderr


def test_emulator_needs_only_its_own_extra() -> None:
    # Without rich (the cli extra) the emulator still starts: it needs only uvicorn.
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from aisix_async.cli import main\n"
        "raise SystemExit(main(['emulator', '--help']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "--rate" in result.stdout


def test_missing_emulator_extra_gives_one_line_not_a_traceback() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from aisix_async.cli import main\n"
        "raise SystemExit(main(['emulator']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip() == MISSING_EMULATOR_HINT
    assert "Traceback" not in result.stderr


def test_missing_account_says_which_variable_to_set(cli: Cli) -> None:
    result = cli.run("balance", drop=["AISIX_ACCOUNT"])
    assert result.returncode == 2
    assert "AISIX_ACCOUNT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_key_says_which_variable_to_set(cli: Cli) -> None:
    result = cli.run("balance", drop=["AISIX_AUTHKEY"])
    assert result.returncode == 2
    assert "AISIX_AUTHKEY" in result.stderr
    assert "--authkey-file" in result.stderr


def test_there_is_no_flag_taking_the_key(cli: Cli, emulator: Any) -> None:
    for args in (["--authkey", emulator.authkey], [f"--authkey={emulator.authkey}"]):
        result = cli.run("balance", *args, drop=["AISIX_AUTHKEY"])
        assert result.returncode == 2
        assert "there is no --authkey option" in result.stderr
        assert emulator.authkey not in result.stderr


def test_wrong_key_names_the_account_and_what_to_check(cli: Cli, emulator: Any) -> None:
    env = dict(cli.env, AISIX_AUTHKEY=OTHER_KEY)
    result = cli.run("balance", env=env)
    assert result.returncode == 4
    assert emulator.account in result.stderr
    assert "-2" in result.stderr
    assert "AISIX_AUTHKEY" in result.stderr
    assert OTHER_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["send", "NUMBERS", "--content", "hi", "--journal", "KEYPATH"], "--journal"),
        (["send", "NUMBERS", "--content", "KEY"], "--content"),
        (["send", "NUMBERS", "--content", "hi", "--outcomes", "keypath"], "--outcomes"),
        (["reports", "--journal", "KEYPATH"], "--journal"),
        (["rotate-key", "--yes", "--write-to", "KEYPATH"], "--write-to"),
    ],
)
@pytest.mark.parametrize("from_file", [False, True], ids=["AISIX_AUTHKEY", "--authkey-file"])
def test_the_key_typed_into_an_argument_is_refused_before_anything_is_sent_or_made(
    cli: Cli, emulator: Any, tmp_path: Path, args: list[str], option: str, from_file: bool
) -> None:
    # `--journal "$KEY"` sent, made a journal named after the key and printed "campaign
    # <KEY> (all runs)"; `--content "$KEY"` sent the key as the SMS (a user's trial).
    key = emulator.authkey
    numbers_file = tmp_path / "n.txt"
    numbers_file.write_text("13900000001\n")
    keypath = tmp_path / key
    if args[0] == "reports":
        keypath.write_bytes(b"")  # an existing file, as --journal wants one
    swap = {
        "NUMBERS": str(numbers_file),
        "KEY": key,
        "KEYPATH": str(keypath),
        "keypath": str(tmp_path / key.lower()),
    }
    command = [swap.get(arg, arg) for arg in args]
    drop: list[str] = []
    if from_file:
        key_file = tmp_path / "key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        command += ["--authkey-file", str(key_file)]
        drop = ["AISIX_AUTHKEY"]
    before = sorted(p.name for p in tmp_path.iterdir())

    result = cli.run(*command, drop=drop)

    assert result.returncode == 2, result.stderr
    assert f"the authkey was typed into {option}" in result.stderr
    assert "nothing was sent" in result.stderr
    assert key.lower() not in (result.stdout + result.stderr).lower()
    assert emulator.state.message_count == 0
    assert emulator.state.authkey() == key  # not rotated
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file made


def test_campaign_refuses_the_key_of_aisix_authkey_and_never_prints_a_key(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # `aisix campaign` needs no credentials, but printed a key typed as a path: "N
    # recipients written to <KEY>", "campaign <KEY>", and made a file named after it.
    key = emulator.authkey
    numbers_file = tmp_path / "n.txt"
    numbers_file.write_text("13900000001\n13900000002\n")
    journal = tmp_path / "j.db"
    sent = cli.run("send", str(numbers_file), "--content", "hi", "--journal", str(journal))
    assert sent.returncode == 0, sent.stderr
    named = tmp_path / key
    other = tmp_path / f"{key}.db"
    other.write_bytes(journal.read_bytes())

    for args, option in (
        (["--export", str(named)], "--export"),
        (["--take-reports-from", str(other)], "--take-reports-from"),
    ):
        refused = cli.run("campaign", str(journal), *args)
        assert refused.returncode == 2, refused.stderr
        assert f"the authkey was typed into {option}" in refused.stderr
        assert key not in refused.stdout + refused.stderr
    assert not named.exists()

    # Without AISIX_AUTHKEY nothing tells the key from a name: what echoes one hides it.
    runs = [
        ["campaign", str(journal), "--export", str(named)],
        ["campaign", str(journal), "--take-reports-from", str(other)],
        ["campaign", str(other)],
        ["campaign", str(other), "--json"],
    ]
    for args in runs:
        result = cli.run(*args, drop=["AISIX_AUTHKEY"])
        assert result.returncode == 0, (args, result.stderr)
        assert key not in result.stdout + result.stderr, args
        assert "<32 hex characters, not shown>" in result.stdout + result.stderr, args


def test_the_emulator_command_does_not_echo_a_key_typed_as_an_argument(cli: Cli) -> None:
    key = OTHER_KEY
    for args in (["--port", key], ["--balance", key], [key], ["--host", key, "--port", "0"]):
        result = cli.run("emulator", *args, timeout=30)
        assert result.returncode in (1, 2), (args, result.stderr)
        assert key not in result.stdout + result.stderr, args
        assert "not shown" in result.stderr, args


def test_a_malformed_key_is_refused_without_quoting_it(cli: Cli) -> None:
    env = dict(cli.env, AISIX_AUTHKEY="not-a-key-but-a-secret")
    result = cli.run("balance", env=env)
    assert result.returncode == 2
    assert "not-a-key-but-a-secret" not in result.stderr
    assert "32 hexadecimal" in result.stderr


def test_authkey_file(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(emulator.authkey + "\n")
    key_file.chmod(0o600)
    result = cli.run("balance", "--json", "--authkey-file", str(key_file), drop=["AISIX_AUTHKEY"])
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [
        {"type": "balance", "account": emulator.account, "balance": str(emulator.state.balance())}
    ]
    assert emulator.authkey not in result.stdout + result.stderr
    missing = cli.run("balance", "--authkey-file", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    # Saved by Notepad: a byte order mark first, and CRLF (it was "33 characters").
    key_file.write_bytes(b"\xef\xbb\xbf" + emulator.authkey.encode() + b"\r\n")
    bom = cli.run("balance", "--authkey-file", str(key_file), drop=["AISIX_AUTHKEY"])
    assert bom.returncode == 0, bom.stderr


def test_a_key_file_others_can_read_gets_a_warning(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(emulator.authkey)
    key_file.chmod(0o644)
    result = cli.run("balance", "--authkey-file", str(key_file), drop=["AISIX_AUTHKEY"])
    assert result.returncode == 0
    assert "chmod 600" in result.stderr


def test_balance_channels_signs_tables_and_json(cli: Cli, emulator: Any) -> None:
    table = cli.run("balance")
    assert table.returncode == 0
    assert "1000.000" in table.stdout
    assert emulator.account in table.stdout
    (balance,) = json_lines(cli.run("balance", "--json").stdout)
    assert balance == {"type": "balance", "account": emulator.account, "balance": "1000.000"}
    channels = json_lines(cli.run("channels", "--json").stdout)
    # Every line says its type, as aisix send's and aisix reports' do.
    assert {c["type"] for c in channels} == {"channel_group"}
    assert {c["cgid"]: (c["word"], c["longword"], c["price"]) for c in channels} == {
        1: (70, 67, "0.10"),
        80: (70, 64, "0.08"),
    }
    signs = json_lines(cli.run("signs", "--json").stdout)
    assert {s["type"] for s in signs} == {"sign"}
    assert {(s["csid"], s["sign"], s["default"]) for s in signs} == {
        (0, "【Aisix】", True),
        (101, "【AisixShop】", False),
    }
    table = cli.run("signs")
    assert "【AisixShop】" in table.stdout
    assert "default" in table.stdout


def test_unreachable_gateway_says_which_url(cli: Cli) -> None:
    env = dict(cli.env, AISIX_BASE_URL="http://127.0.0.1:9/OpenPlatform")
    result = cli.run("balance", "--retry-timeout", "0.5", env=env)
    assert result.returncode == 4
    assert "http://127.0.0.1:9/OpenPlatform" in result.stderr
    assert "AISIX_BASE_URL" in result.stderr


@pytest.mark.parametrize("command", [["reports", "--until-idle", "2"], ["replies"]])
def test_an_unreachable_data_url_is_named_not_the_base_url(
    cli: Cli, emulator: Any, command: list[str]
) -> None:
    # The DataApi at --data-url could not be reached, and the error named the base URL
    # and AISIX_BASE_URL to check: both were right.
    data_url = "http://127.0.0.1:9/OpenPlatform/DataApi"  # the discard port
    result = cli.run(*command, "--data-url", data_url, "--retry-timeout", "0.5")
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if "aisix: error:" in line]
    assert len(errors) == 1, result.stderr
    assert f"DataApi at {data_url}" in errors[0]
    assert "--data-url or AISIX_DATA_URL" in errors[0]
    assert emulator.base_url not in errors[0]
    warned = [line for line in result.stderr.splitlines() if "cannot reach" in line]
    assert all(data_url in line and emulator.base_url not in line for line in warned), warned


def test_an_empty_base_url_is_refused_not_taken_for_the_default(cli: Cli) -> None:
    # `--base-url "$UNSET"` sent to the real gateway instead of the one meant.
    result = cli.run("balance", "--base-url", "", "--retry-timeout", "0.5")
    assert result.returncode == 2
    assert "--base-url is empty" in result.stderr
    assert "api.aisix.com" not in result.stderr


def test_an_empty_url_variable_is_refused_not_taken_for_the_default(
    cli: Cli, emulator: Any
) -> None:
    # AISIX_BASE_URL="" meant the real gateway, where --base-url "" is refused; an empty
    # AISIX_DATA_URL meant the one under the base URL. (The base URL's case is run in
    # process: where the refusal went missing, a subprocess would call the real gateway.)
    before = emulator.state.get_counters().requests.total()
    result = cli.run("reports", env=dict(cli.env, AISIX_DATA_URL=" "))
    assert result.returncode == 2, result.stderr
    assert "AISIX_DATA_URL is set but empty" in result.stderr
    assert emulator.state.get_counters().requests.total() == before
    env = {"AISIX_ACCOUNT": emulator.account, "AISIX_AUTHKEY": emulator.authkey}
    with pytest.raises(CliError, match="AISIX_BASE_URL is set but empty") as refused:
        resolve_credentials(
            account=None, authkey_file=None, base_url=None, data_url=None,
            environ={**env, "AISIX_BASE_URL": ""},
        )  # fmt: skip
    assert refused.value.code == 2
    # --base-url wins over the variable, and is not refused for it.
    given = resolve_credentials(
        account=None, authkey_file=None, base_url=emulator.base_url, data_url=None,
        environ={**env, "AISIX_BASE_URL": ""},
    )  # fmt: skip
    assert given.base_url == emulator.base_url


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_a_data_url_with_a_query_is_refused_before_any_poll(
    cli: Cli, emulator: Any, where: str
) -> None:
    # Polled as ".../DataApi?region=cn?action=getSendState": every poll failed, and said
    # the records it held were lost.
    url = f"{emulator.data_url}?region=cn"
    before = emulator.state.get_counters().requests.total()
    if where == "flag":
        result = cli.run("reports", "--data-url", url)
    else:
        result = cli.run("reports", env=dict(cli.env, AISIX_DATA_URL=url))
    assert result.returncode == 2, result.stderr
    assert "data_url must not carry a query (?...) or fragment (#...)" in result.stderr
    assert "lost" not in result.stderr
    assert emulator.state.get_counters().requests.total() == before


def test_a_minus_one_that_never_clears_mentions_ip_binding(cli: Cli, emulator: Any) -> None:
    emulator.state.configure(ip_bound=True)
    result = cli.run("balance", "--retry-timeout", "1")
    assert result.returncode == 4
    assert "-1" in result.stderr
    assert "IP address" in result.stderr


def test_reports_are_printed_once_each(cli: Cli, emulator: Any) -> None:
    emulator.state.configure(report_delay=0.0)
    numbers = [f"1390000{i:04d}" for i in range(12)]
    sent = cli.run("send", "--content", "hello", "-q", input="\n".join(numbers))
    assert sent.returncode == 0, sent.stderr
    ledger = {(m.msgid, m.mobile) for m in emulator.state.messages()}
    first = json_lines(cli.run("reports", "--json").stdout)
    assert {(r["msgid"], r["mobile"]) for r in first} == ledger
    # Typed like the records of aisix send, so one consumer can read both.
    assert {r["type"] for r in first} == {"report"}
    assert all(r["final"] and r["code"] for r in first)
    # The gateway hands each report out once: a second fetch has nothing.
    again = cli.run("reports", "--json")
    assert again.returncode == 0
    assert json_lines(again.stdout) == []
    assert "0 delivery reports" in again.stderr


def test_replies_follow_streams_until_interrupted(cli: Cli, emulator: Any) -> None:
    emulator.state.inject_reply("13900000001", "STOP")
    process = cli.popen("replies", "--follow", "--json", "--interval", "0.1")
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert (first["type"], first["mobile"], first["content"]) == ("reply", "13900000001", "STOP")
    emulator.state.inject_reply("13900000002", "好的")
    second = json.loads(process.stdout.readline())
    assert (second["mobile"], second["content"]) == ("13900000002", "好的")
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert emulator.state.pending_replies() == 0


def test_a_reply_is_one_line_of_text_whatever_its_content(cli: Cli, emulator: Any) -> None:
    # The sender's text: a line break would read as a second record, an escape
    # sequence would drive the operator's terminal.
    emulator.state.inject_reply("13900000001", "yes\nSTOP\tnow")
    emulator.state.inject_reply("13900000002", "好的")
    shown = cli.run("replies")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("13900000001  yes\\nSTOP\\tnow")
    assert lines[1].endswith("13900000002  好的")
    assert "2 replies" in shown.stderr
    # --json keeps the text as it came.
    emulator.state.inject_reply("13900000003", "a\nb")
    alone = cli.run("replies", "--json")
    (record,) = json_lines(alone.stdout)
    assert record["content"] == "a\nb"
    assert alone.stderr.strip() == "1 reply"


def test_one_line_writes_control_characters_as_escapes() -> None:
    assert one_line("ok 你好") == "ok 你好"
    assert one_line("a\r\nb\x1b[2J\x7f") == "a\\r\\nb\\x1b[2J\\x7f"
    # A backslash the sender typed is doubled: "\\n" shown is never a line break typed.
    assert one_line("c:\\new") == "c:\\\\new"
    # Line separators and direction overrides too; a joiner inside an emoji stays.
    assert one_line("a\u2028b\u202ec") == "a\\u2028b\\u202ec"
    assert one_line("\U0001f469\u200d\U0001f4bb") == "\U0001f469\u200d\U0001f4bb"


def test_rotate_key_needs_confirmation(cli: Cli, emulator: Any) -> None:
    old_key = emulator.state.authkey()
    result = cli.run("rotate-key")
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert emulator.state.authkey() == old_key


def test_rotate_key_prints_the_new_key_once(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    target = tmp_path / "key"
    old_key = emulator.state.authkey()
    result = cli.run("rotate-key", "--yes", "--write-to", str(target))
    assert result.returncode == 0, result.stderr
    new_key = emulator.state.authkey()
    assert new_key != old_key
    assert result.stdout.strip() == new_key
    assert new_key not in result.stderr
    assert "store it now" in result.stderr
    assert target.read_text().strip() == new_key
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    # The old key is dead now; the written file works.
    assert cli.run("balance").returncode == 4
    ok = cli.run("balance", "--authkey-file", str(target), drop=["AISIX_AUTHKEY"])
    assert ok.returncode == 0, ok.stderr


def test_emulator_subcommand_is_the_emulators_command_line(cli: Cli) -> None:
    result = cli.run("emulator", "--help")
    assert result.returncode == 0
    assert "--rate" in result.stdout
    assert "--fault" in result.stdout


def test_emulator_subcommand_serves(cli: Cli) -> None:
    process = subprocess.Popen(
        cli.command("emulator", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("base_url=http://127.0.0.1:")
        env = dict(cli.env, AISIX_BASE_URL=line.partition("=")[2])
        deadline = time.monotonic() + 10
        while True:
            result = cli.run("balance", "--json", env=env)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
        assert json_lines(result.stdout)[0]["balance"] == "1000.000"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)


def test_a_key_typed_where_a_flag_or_path_goes_is_never_echoed(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    key = emulator.authkey
    numbers_file = tmp_path / "n.txt"
    numbers_file.write_text("13900000001\n")
    runs = [
        ("send", str(numbers_file), "--content", "hi", "--auth", key),
        ("send", str(numbers_file), "--content", "hi", f"--auth={key.lower()}"),
        ("balance", "--authkey-file", key),
        ("balance", "--timeout", key),
        ("send", str(numbers_file), "--content", "hi", "--outcomes", f"/nonexistent/{key}"),
        # The key file given as the numbers file: its line is reported, not its content.
        ("send", str(tmp_path / "key"), "--content", "hi"),
    ]
    (tmp_path / "key").write_text(key + "\n")
    for args in runs:
        result = cli.run(*args, drop=["AISIX_AUTHKEY"])
        assert result.returncode == 2, (args, result.stderr)
        output = (result.stdout + result.stderr).lower()
        assert key.lower() not in output, args
        assert "<32 hex characters, not shown>" in result.stderr, args
    assert emulator.state.message_count == 0


#: The key of the in-process credential tests below; a global, so no test frame holds it.
IN_PROCESS_KEY = "C0FFEE0123456789ABCDEF0123456789"


def _refusal_with_locals(fail: Any) -> str:
    """The traceback of the CliError ``fail()`` raises, every frame with its locals, as
    error trackers (Sentry's default) report it."""
    try:
        fail()
    except CliError as exc:
        shown = traceback.TracebackException.from_exception(exc, capture_locals=True)
        return "".join(shown.format())
    raise AssertionError("nothing was refused")


@pytest.mark.parametrize("case", ["key in an argument", "empty base url", "bad account"])
def test_a_refused_command_line_keeps_the_key_out_of_the_locals(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # resolve_credentials held os.environ (whose repr lists AISIX_AUTHKEY) and the key as
    # plain strs, and refuse_key_in_arguments the key, its lower case and the argument
    # holding it, in the frames its CliErrors leave.
    monkeypatch.setenv("AISIX_ACCOUNT", "1001@x" if case == "bad account" else "1001@100001")
    monkeypatch.setenv("AISIX_AUTHKEY", IN_PROCESS_KEY)

    def fail() -> None:
        creds = resolve_credentials(
            account=None, authkey_file=None, data_url=None,
            base_url=" " if case == "empty base url" else None,
        )  # fmt: skip
        refuse_key_in_arguments({"content": f"code {IN_PROCESS_KEY.lower()}"}, creds.authkey)

    shown = _refusal_with_locals(fail)
    assert "env = " in shown or "wanted = " in shown  # the refusing frame was captured
    assert IN_PROCESS_KEY not in shown and IN_PROCESS_KEY.lower() not in shown


def test_a_refused_write_to_file_keeps_the_old_key_out_of_the_locals(tmp_path: Path) -> None:
    # A key file with something after the key (a note) is refused as a --write-to target;
    # the refusing frame held what it read, the old key (still in force), as a local.
    target = tmp_path / "key.txt"
    target.write_text(f"{IN_PROCESS_KEY}\nprod key, do not share\n")
    shown = _refusal_with_locals(lambda: _check_key_target(str(target)))
    assert "found = " in shown  # the refusing frame was captured
    assert IN_PROCESS_KEY not in shown and IN_PROCESS_KEY.lower() not in shown
