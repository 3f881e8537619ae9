"""How the commands show a delivery report and an unreadable record (one place, for
``aisix reports`` with and without ``--journal``)."""

from __future__ import annotations

from .. import DeliveryReport, MalformedRecord
from ._app import Context

__all__ = ["report_line", "show_malformed"]


def report_line(report: DeliveryReport) -> str:
    """One report as a line: msgid, mobile, operator code, result."""
    return f"{report.msgid}  {report.mobile}  {report.code or '-'}  {report.result.name.lower()}"


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
