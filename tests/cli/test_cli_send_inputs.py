"""``aisix send``'s input files: encodings, CSV shapes, and paths that are not files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli
from helpers import numbers

SIGN = "【Aisix】"


def refused(result: Any, *needles: str) -> None:
    """A usage error in one line on stderr, without a traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aisix: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    ("data", "line", "hint"),
    [
        # Latin-1 "é" in a comment: the file is not UTF-8 even where it is skipped.
        ("# café\n13900000001\n".encode("latin-1"), 1, "re-save"),
        ("13900000001\n13900000002\n# Müller\n".encode("cp1252"), 3, "re-save"),
        ("13900000001\n13900000002\n".encode("utf-16"), 1, "UTF-16"),
        # No byte order mark: read as UTF-8, a NUL after every digit (five bad lines).
        ("13900000001\n13900000002\n".encode("utf-16-le"), 1, "UTF-16 without"),
    ],
)
def test_a_numbers_file_not_in_utf8_is_refused_naming_its_line(
    cli: Cli, emulator: Any, tmp_path: Path, data: bytes, line: int, hint: str
) -> None:
    path = tmp_path / "n.txt"
    path.write_bytes(data)
    result = cli.run("send", str(path), "--content", "hi")
    refused(result, str(path), f"line {line}", "not UTF-8", hint)
    assert emulator.state.message_count == 0


def test_a_csv_or_batch_not_in_utf8_is_refused(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_bytes("phone,name\n13900000001,Zoë\n".encode("latin-1"))
    result = cli.run(
        "send", "--csv", str(people), "--column", "phone",
        "--template", "Hi {p1}", "--param-columns", "name",
    )  # fmt: skip
    refused(result, str(people), "line 2", "not UTF-8")
    batch = tmp_path / "b.csv"
    batch.write_bytes("mobile,content\n13900000001,Grüße\n".encode("utf-16"))
    refused(cli.run("send", "--batch", str(batch)), str(batch), "line 1", "UTF-16")
    assert emulator.state.message_count == 0


def test_stdin_not_in_utf8_is_refused_like_a_file(cli: Cli, emulator: Any) -> None:
    data = "13900000001\n# café\n13900000002\n".encode("latin-1")
    result = cli.run_bytes("send", "--content", "hi", input=data)
    refused(result, "stdin line 2", "not UTF-8")
    assert emulator.state.message_count == 0


def test_a_utf8_file_with_a_byte_order_mark_is_read(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "n.txt"
    path.write_text("# Liste für Zoë\n" + "\n".join(numbers(3)) + "\n", encoding="utf-8-sig")
    result = cli.run("send", str(path), "--content", "hi")
    assert result.returncode == 0, result.stderr
    assert sorted(m.mobile for m in emulator.state.messages()) == numbers(3)


def template_send(cli: Cli, csv_file: Path, *extra: str) -> Any:
    return cli.run(
        "send", "--csv", str(csv_file), "--column", "phone",
        "--template", "Hi {p1}, code {p2}", "--param-columns", "name,code", *extra,
    )  # fmt: skip


def test_a_csv_row_short_of_a_parameter_column_is_an_invalid_line(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(
        "phone,name,code\n18100002707,Peter\n18600007370,Evan,5678\n", encoding="utf-8"
    )
    result = template_send(cli, people)
    assert result.returncode == 2, result.stderr
    assert "line 2" in result.stderr
    assert "'code'" in result.stderr
    assert emulator.state.message_count == 0
    skipped = template_send(cli, people, "--skip-invalid")
    assert skipped.returncode == 1, skipped.stderr
    # Only the complete row went out; never an empty {p2}.
    assert {m.mobile: m.text for m in emulator.state.messages()} == {
        "18600007370": f"{SIGN}Hi Evan, code 5678"
    }


@pytest.mark.parametrize(
    ("header", "duplicated"),
    [("phone,name,name,code", "'name'"), ("phone,phone,name,code", "'phone'")],
)
def test_a_csv_header_naming_a_used_column_twice_is_refused(
    cli: Cli, emulator: Any, tmp_path: Path, header: str, duplicated: str
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(f"{header}\n18100002707,Peter,Pan,1234\n", encoding="utf-8")
    refused(template_send(cli, people), str(people), duplicated, "more than once")
    assert emulator.state.message_count == 0


def test_a_duplicated_column_the_command_does_not_use_is_harmless(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Spreadsheet exports often end in several unnamed columns.
    people = tmp_path / "people.csv"
    people.write_text("phone,,\n18100002707,,\n", encoding="utf-8")
    result = cli.run("send", "--csv", str(people), "--column", "phone", "--content", "hi")
    assert result.returncode == 0, result.stderr
    assert [m.mobile for m in emulator.state.messages()] == ["18100002707"]


def test_a_batch_header_naming_mobile_twice_is_refused(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    batch = tmp_path / "b.csv"
    batch.write_text("mobile,content,mobile\n13900000001,hello,13900000002\n", encoding="utf-8")
    refused(cli.run("send", "--batch", str(batch)), str(batch), "'mobile'", "more than once")
    assert emulator.state.message_count == 0


@pytest.mark.parametrize("option", [None, "--csv", "--batch"])
def test_a_directory_given_as_an_input_file_is_named_as_such(
    cli: Cli, tmp_path: Path, option: str | None
) -> None:
    if option is None:
        args: tuple[str, ...] = (str(tmp_path), "--content", "hi")
    elif option == "--csv":
        args = ("--csv", str(tmp_path), "--column", "phone", "--content", "hi")
    else:
        args = ("--batch", str(tmp_path))
    refused(cli.run("send", *args), str(tmp_path), "is a directory")


def test_a_directory_given_as_the_key_file_is_named_as_such(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("balance", "--authkey-file", str(tmp_path), drop=["AISIX_AUTHKEY"])
    refused(result, "--authkey-file", "is a directory")


def test_a_journal_in_a_missing_folder_says_so(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("13900000001\n", encoding="utf-8")
    journal = tmp_path / "nowhere" / "x.db"
    result = cli.run("send", str(path), "--content", "hi", "--journal", str(journal))
    refused(result, "does not exist", str(journal.parent))
    assert "Errno" not in result.stderr
    assert ".lock" not in result.stderr
    # Refused before the gateway was asked anything (not after the estimate's calls).
    assert not emulator.state.get_counters().requests


@pytest.mark.parametrize("option", ["--journal", "--outcomes"])
def test_a_directory_given_as_a_file_to_write_is_refused_before_any_call(
    cli: Cli, emulator: Any, tmp_path: Path, option: str
) -> None:
    path = tmp_path / "n.txt"
    path.write_text("13900000001\n", encoding="utf-8")
    result = cli.run("send", str(path), "--content", "hi", option, str(tmp_path))
    refused(result, option, "is a directory")
    assert not emulator.state.get_counters().requests


def test_an_empty_content_is_named_as_such(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("13900000001\n", encoding="utf-8")
    refused(cli.run("send", str(path), "--content", ""), "--content", "must not be empty")
    assert not emulator.state.get_counters().requests


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_unknown_signature_is_refused_before_sending(
    cli: Cli, emulator: Any, tmp_path: Path, dry_run: bool
) -> None:
    # The gateway would not refuse it: it would sign with the default signature instead.
    path = tmp_path / "n.txt"
    path.write_text("13900000001\n", encoding="utf-8")
    args = ["send", str(path), "--content", "hi", "--csid", "999"]
    result = cli.run(*args, *(["--dry-run"] if dry_run else []))
    refused(result, "--csid 999 is not one of this account's signatures (0, 101)", "【Aisix】")
    assert emulator.state.message_count == 0
    # A signature the account has goes through.
    known = cli.run("send", str(path), "--content", "hi", "--csid", "101", "--json")
    assert known.returncode == 0, known.stderr
    assert [m.csid for m in emulator.state.messages()] == [101]


def test_param_columns_without_a_template_is_refused(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("phone,name\n18100002707,Peter\n", encoding="utf-8")
    result = cli.run(
        "send", "--csv", str(people), "--column", "phone",
        "--content", "hi", "--param-columns", "name",
    )  # fmt: skip
    refused(result, "--param-columns", "--template")
    assert emulator.state.message_count == 0


@pytest.mark.parametrize("kind", ["--batch", "--csv", "--csv header", "--template"])
def test_a_csv_field_over_the_csv_limit_is_a_usage_error_naming_its_line(
    cli: Cli, emulator: Any, tmp_path: Path, kind: str
) -> None:
    # Past csv's field limit (131,072 characters): typically a double quote never closed.
    runaway = '"' + "x" * 200_000
    if kind == "--csv header":
        rows = ["phone," + runaway, "13900000001,Peter"]
    else:
        rows = ["phone,name", "13900000001,Peter", "13900000002," + runaway]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = {
        "--batch": ["--batch", str(path)],
        "--csv": ["--csv", str(path), "--column", "phone", "--content", "hi"],
        "--csv header": ["--csv", str(path), "--column", "phone", "--content", "hi"],
        "--template": [
            "--csv", str(path), "--column", "phone", "--template", "Hi {p1}",
            "--param-columns", "name",
        ],
    }[kind]  # fmt: skip
    result = cli.run("send", *args)
    refused(result, str(path), "line ", "double quote")
    assert emulator.state.message_count == 0


def test_lines_added_to_the_file_during_the_send_are_not_sent(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The file is read once to check (and estimate) and again to send: a file still
    # being written was sent past what was checked (2,500 of 2,000, a bad line unseen,
    # over the estimate). The send stops at what was checked, says so, and exits 1.
    import subprocess

    from cli_support import ROOT, summary_of

    emulator.state.set_faults(latency_ms=150)
    path = tmp_path / "grow.txt"
    path.write_text("\n".join(numbers(60)) + "\n", encoding="utf-8")
    process = subprocess.Popen(
        cli.command(
            "send", str(path), "--content", "hi", "--chunk-size", "5",
            "--max-concurrency", "1", "--json",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stderr is not None
    # Said once the input is checked and priced, before the first request.
    assert "sending to 60 recipients" in process.stderr.readline()
    with path.open("a", encoding="utf-8") as more:
        more.write("\n".join([*numbers(20, start=5000), "bad-number"]) + "\n")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "grew while it was sent" in err and "only the 60 recipients" in err
    assert summary_of(out)["accepted"] == 60
    assert len(emulator.state.messages()) == 60


_TEMPLATE = ["--template", "Hi {p1}", "--param-columns", "name"]


@pytest.mark.parametrize(
    "args",
    [
        ["{}", "--content", "hi"],
        ["--csv", "{}", "--column", "phone", *_TEMPLATE],
        ["--batch", "{}"],
    ],
    ids=["numbers", "csv", "batch"],
)
def test_a_pipe_given_as_an_input_file_is_named_as_such(
    cli: Cli, emulator: Any, tmp_path: Path, args: list[str]
) -> None:
    # A fifo (or <(...)) was "no such file": it is there, but it can be read only once,
    # and the input is read twice. "--csv -" was "no such file" too.
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = cli.run("send", *[a.replace("{}", str(fifo)) for a in args])
    refused(result, str(fifo), "not a regular file")
    if args[0] == "{}":
        assert f"aisix send - < {fifo}" in result.stderr
    else:
        dash = cli.run("send", *[a.replace("{}", "-") for a in args], input="x\n")
        refused(dash, f"{args[0]} takes a file, not stdin")
    assert emulator.state.message_count == 0


def test_stdin_lines_are_split_where_a_files_are(cli: Cli, emulator: Any) -> None:
    # splitlines() also cut at U+2028 inside a comment: a bad "line" made of its tail,
    # and every later line numbered one too far.
    result = cli.run(
        "send", "-", "--content", "hi", "--dry-run",
        input="13900000001\r\n# note\u2028x\r\n13900000002\nbad\n",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "stdin line 4" in result.stderr and "stdin line 3" not in result.stderr


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_csv_separated_otherwise_is_named_as_such(
    cli: Cli, emulator: Any, tmp_path: Path, sep: str
) -> None:
    # A spreadsheet in a locale that saves "CSV" with ';' gave "no column 'phone'; its
    # header has 'phone;name'" and no more.
    path = tmp_path / "t.csv"
    path.write_text(f"phone{sep}name\n13900000001{sep}Ann\n", encoding="utf-8")
    result = cli.run("send", "--csv", str(path), "--column", "phone", "--content", "hi")
    refused(result, "no column 'phone'", f"looks separated by {sep!r}", "CSV with commas")
