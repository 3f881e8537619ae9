"""How the commands show a delivery report and an unreadable record (one place, for
``aisix reports`` with and without ``--journal``)."""

from __future__ import annotations

import unicodedata

from .. import DeliveryReport, MalformedRecord
from ._app import Context

__all__ = ["one_line", "report_line", "show_malformed"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# Characters that reorder what follows them on screen (a reply could make a number read
# backwards): shown as escapes too.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``).

    A reply's text is the sender's: a line break in it would read as a second record in
    the one-record-per-line output, an escape sequence would drive the terminal, and a
    direction override would reorder the line. A backslash is doubled, so that an escape
    shown is never one the sender typed. ``--json`` gives the text as it came.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        code = ord(char)
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    return char


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
