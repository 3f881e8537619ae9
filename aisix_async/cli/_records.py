"""How the commands show a delivery report and an unreadable record (one place, for
``aisix reports`` with and without ``--journal``)."""

from __future__ import annotations

import unicodedata

from .. import DeliveryReport, MalformedRecord
from ._app import Context

__all__ = ["one_line", "report_line", "show_malformed"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``).

    A reply's text is the sender's: a line break in it would read as a second record in
    the one-record-per-line output, and an escape sequence would drive the terminal.
    ``--json`` gives it as it came.
    """
    if text.isprintable():
        return text
    return "".join(
        _ESCAPES.get(char, f"\\x{ord(char):02x}") if unicodedata.category(char) == "Cc" else char
        for char in text
    )


def report_line(report: DeliveryReport) -> str:
    """One report as a line: msgid, mobile, operator code, result."""
    code = one_line(report.code) if report.code else "-"
    return f"{report.msgid}  {report.mobile}  {code}  {report.result.name.lower()}"


def show_malformed(ctx: Context, bad: MalformedRecord) -> None:
    """An unreadable record: a JSON line with --json, else a warning."""
    if ctx.out.json_mode:
        ctx.out.emit(
            {
                "type": "malformed",
                "malformed": True,
                "reason": bad.reason,
                "attributes": bad.attributes,
            }
        )
    else:
        ctx.out.warn(f"an unreadable record ({bad.reason}): {dict(bad.attributes)}")
