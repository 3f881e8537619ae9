"""The CSV files the command line writes cannot run formulas in a spreadsheet.

A cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula to Excel and LibreOffice.
What comes from outside (an invalid input line, kept as typed; a gateway's delivery code
or msgid) is written after a ``'`` when it would be one; plain numbers, ours or the
gateway's (``-1``), are written as they are.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cli_support import Cli, numbers, write_lines

from aisix_async.validation import spreadsheet_safe


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_spreadsheet_safe_quotes_formulas_and_leaves_numbers() -> None:
    for formula in ("=1+2", "+A1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")'):
        assert spreadsheet_safe(formula) == "'" + formula
    for plain in ("", "13900000000", "+8613900000000", "-1", "-13900000000", "1.5", "DELIVRD"):
        assert spreadsheet_safe(plain) == plain


def test_outcomes_and_export_quote_a_formula_and_keep_numbers(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Delivery codes the gateway writes: one a formula, one a negative number, one usual.
    mix = {"=2+3": 1.0, "-1": 1.0, "DELIVRD": 1.0}
    emulator.state.configure(report_delay=0.0, report_mix=mix)
    valid = numbers(30)
    typed = ["=1+2", "@SUM(A1)", "-13900000001"]  # invalid lines, reported as typed
    listed = write_lines(tmp_path / "n.txt", [*valid, *typed])
    journal = str(tmp_path / "j.db")
    outcomes = tmp_path / "o.csv"
    sent = cli.run(
        "send", listed, "--content", "hi", "--numbers", "lenient", "--skip-invalid",
        "--journal", journal, "--outcomes", str(outcomes),
    )  # fmt: skip
    assert sent.returncode == 1, sent.stderr  # the invalid lines failed
    written = {row["mobile"]: row for row in _rows(outcomes)}
    assert set(written) == {*valid, "'=1+2", "'@SUM(A1)", "-13900000001"}
    for mobile in valid:
        assert written[mobile]["status"] == "accepted"
        assert written[mobile]["msgid"].isdigit()  # the gateway's msgid, as it gave it
    assert written["'=1+2"]["status"] == "failed"
    assert written["'=1+2"]["error"].startswith("ValidationError: ")

    queued = {mobile: code for _, mobile, code in emulator.state.queued_reports()}
    assert set(queued.values()) == set(mix)  # 30 reports drew every code
    followed = cli.run("reports", "--journal", journal, "--until-idle", "0.5", "--interval", "0.05")
    assert followed.returncode == 0, followed.stderr
    export = tmp_path / "e.csv"
    exported = cli.run("campaign", journal, "--export", str(export))
    assert exported.returncode == 0, exported.stderr
    rows = {row["mobile"]: row for row in _rows(export)}
    assert set(rows) == set(written)
    for mobile in valid:
        code = queued[mobile]
        assert rows[mobile]["delivery"] == ("'=2+3" if code == "=2+3" else code)
        assert rows[mobile]["msgid"] == written[mobile]["msgid"]
    assert rows["'=1+2"]["status"] == "failed"
    assert rows["-13900000001"]["position"] == str(len(valid) + 2)
