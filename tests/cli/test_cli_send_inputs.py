"""``aisix send``'s input files: encodings, CSV shapes, and paths that are not files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, numbers

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
