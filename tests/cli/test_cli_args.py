"""The command line's number options refuse what is not a number of their kind, by name."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, json_lines

from aisix_async.cli._args import build_parser, option_name, poll_interval


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--max-concurrency", "0", "must be at least 1, got 0"),
        ("--max-concurrency", "abc", "not a whole number: 'abc'"),
        ("--max-concurrency", "2.5", "not a whole number: '2.5'"),
        ("--csid", "-1", "must be 0 or more, got -1"),
        ("--timeout", "0", "must be positive and finite, got 0"),
        ("--timeout", "nan", "must be positive and finite, got nan"),
        ("--timeout", "inf", "must be positive and finite, got inf"),
        ("--retry-timeout", "inf", "must be positive and finite, got inf"),
        ("--timeout", "soon", "not a number: 'soon'"),
    ],
)
def test_a_bad_number_is_refused_with_what_it_must_be(
    option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["send", "n.txt", "--content", "hi", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {says}" in capsys.readouterr().err


def test_good_numbers_come_through_as_numbers() -> None:
    args = build_parser().parse_args(
        ["send", "n.txt", "--content", "hi", "--max-concurrency", "4", "--csid", "0",
         "--timeout", "2.5"]
    )  # fmt: skip
    assert (args.max_concurrency, args.csid, args.timeout) == (4, 0, 2.5)


@pytest.mark.parametrize("command", ["reports", "replies"])
def test_interval_without_follow_is_refused_before_anything_is_fetched(
    cli: Cli, emulator: Any, command: str
) -> None:
    emulator.state.inject_reply("13900000001", "STOP")
    refused = cli.run(command, "--interval", "1")
    assert refused.returncode == 2
    assert "--interval applies to --follow or --until-idle" in refused.stderr
    assert emulator.state.pending_replies() == 1  # nothing fetched
    # With --follow or --until-idle it is what it says; the default is 5 s.
    parsed = build_parser().parse_args([command, "--until-idle", "1", "--interval", "0.5"])
    assert poll_interval(parsed) == 0.5
    assert poll_interval(build_parser().parse_args([command, "-f"])) == 5.0


def test_interval_refused_with_a_journal_records_no_run(cli: Cli, tmp_path: Any) -> None:
    journal = str(tmp_path / "c.db")
    sent = cli.run("send", "--content", "hi", "--journal", journal, "-q", input="13900000001\n")
    assert sent.returncode == 0, sent.stderr
    refused = cli.run("reports", "--journal", journal, "--interval", "2", "--json")
    assert refused.returncode == 2
    assert refused.stdout == ""  # no summary of a run that never was
    shown = cli.run("campaign", journal, "--json")
    (campaign,) = json_lines(shown.stdout)
    assert [run["kind"] for run in campaign["runs"]] == ["send"]


def test_option_name_names_every_argument_of_every_command_as_it_is_typed() -> None:
    # Messages name an argument by its dest ("the authkey was typed into --journal"):
    # an option whose dest is not its name must be listed in _args._NAMED_APART.
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    checked = 0
    for name, command in commands.choices.items():
        if name == "emulator":
            continue  # its arguments are the emulator's own
        for action in command._actions:
            if action.dest == "help":
                continue
            if action.option_strings:
                assert option_name(action.dest) in action.option_strings, (name, action.dest)
            else:
                assert option_name(action.dest).endswith(str(action.metavar)), (name, action.dest)
            checked += 1
    assert checked > 50


def test_cgid_0_is_the_accounts_default_channel_group_as_in_the_library(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The library takes cgid=0 as the account's default; the command line refused it
    # ("must be at least 1").
    assert build_parser().parse_args(["send", "n.txt", "--content", "hi", "--cgid", "0"]).cgid == 0
    numbers_file = tmp_path / "n.txt"
    numbers_file.write_text("13900000001\n13900000002\n")
    result = cli.run("send", str(numbers_file), "--content", "hi", "--cgid", "0", "--json")
    assert result.returncode == 0, result.stderr
    assert emulator.state.message_count == 2
    refused = cli.run("send", str(numbers_file), "--content", "hi", "--cgid", "-1")
    assert refused.returncode == 2
    assert "argument --cgid: must be 0 or more, got -1" in refused.stderr


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["send", "n.txt", "--contnet", "x"], "aisix send"),
        (["campaign", "j.db", "--exprot", "out.csv"], "aisix campaign"),
        (["--bogus"], "aisix"),
    ],
)
def test_a_mistyped_option_is_refused_with_its_commands_usage(
    argv: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator's trial: "aisix send ... --contnet x" showed the top-level usage
    # ("aisix [-h] [--version] COMMAND ..."), not the options of the command he meant.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {command} "), err
    assert (
        f"{command}: error: unrecognized arguments: {argv[-2] if command != 'aisix' else argv[0]}"
        in err
    )
