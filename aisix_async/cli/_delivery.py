"""A campaign's delivery truth from the command line: ``reports --journal`` and ``campaign``.

``aisix reports --journal sale.db`` polls delivery reports into the campaign's journal:
each fetched batch is written there (one transaction) *before* any of its reports is
shown, because the gateway hands each report out once. The journal tells the campaign's
reports (its (msgid, mobile) pairs) from the others, which are kept and counted apart,
and settles unknown chunks a report proves were sent. The live display on stderr is the
campaign's delivery progress (delivered / failed / pending, by operator code), not a
scroll; stdout still gets every report as it comes (``--json``: one line each, with
``"campaign": true|false``).

``aisix campaign sale.db`` shows a journal's state without sending anything, and
``--export out.csv`` writes one line per recipient, streamed from the journal a chunk at
a time (a ten-million-recipient campaign is never held in memory).

Both open the journal as a send does (its lock, a schema-1 file migrated); ``campaign``
falls back to reading it without the lock, as committed so far, while another process
drives it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
from rich.console import Group
from rich.live import Live
from rich.text import Text

from .. import (
    Campaign,
    CampaignJournal,
    CampaignRun,
    CampaignSummary,
    DeliveryReport,
    PollKeywords,
    open_campaign_journal,
)
from ._app import Context
from ._exit import CliError, ExitCode, redact_keys
from ._files import refuse_journal_file
from ._interrupts import FollowInterrupt
from ._output import counted
from ._records import report_line, show_malformed
from ._standing import standing_rows

__all__ = ["campaign", "reports_journal"]


def _existing_journal(path: str) -> Path:
    # Opening a journal creates it when missing: an inspection must not leave an empty
    # campaign file behind a typo.
    target = Path(path)
    if not target.is_file():
        raise CliError(
            f"{path}: no such campaign journal (one is made by aisix send ... --journal {path})"
        )
    return target


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _short(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _split(delivery: dict[str, int]) -> tuple[int, int]:
    delivered = delivery.get("DELIVRD", 0)
    return delivered, sum(delivery.values()) - delivered


def _delivery_figures(summary: CampaignSummary) -> dict[str, Any]:
    delivered, failed = _split(dict(summary.delivery))
    return {
        "delivered": delivered,
        "failed": failed,
        "pending": summary.pending,
        "by_code": dict(sorted(summary.delivery.items(), key=lambda kv: (-kv[1], kv[0]))),
        "not_this_campaigns": summary.foreign_reports,
    }


def _delivery_line(summary: CampaignSummary) -> str:
    figures = _delivery_figures(summary)
    codes = "  ".join(f"{code} {n:,}" for code, n in figures["by_code"].items())
    return (
        f"delivered {figures['delivered']:,}  failed {figures['failed']:,}  "
        f"pending {figures['pending']:,}  of {summary.accepted:,} accepted"
        + (f"  ({codes})" if codes else "")
        + f"  not this campaign's {summary.foreign_reports:,}"
    )


# -- aisix reports --journal ---------------------------------------------------------


class _Display:
    """The campaign's delivery progress on stderr: redrawn on a terminal, lines otherwise."""

    def __init__(self, ctx: Context, campaign: Campaign) -> None:
        self._out = ctx.out
        self._campaign = campaign
        self._started = time.monotonic()
        self.reports = 0

    def _text(self) -> str:
        summary = self._campaign.summary()
        elapsed = time.monotonic() - self._started
        rate = self.reports / elapsed if elapsed > 0 else 0.0
        return (
            f"{_delivery_line(summary)}  reports {self.reports:,} ({rate:,.0f}/s)  {elapsed:,.0f} s"
        )

    def _frame(self) -> Group:
        return Group(Text(f"delivery of {self._campaign.path}", style="bold"), Text(self._text()))

    async def run(self) -> None:
        """Show the figures until cancelled (the last word is :meth:`last_word`'s)."""
        out = self._out
        if out.quiet:
            await anyio.sleep_forever()
        if out.interactive:
            with Live(self._frame(), console=out.err, refresh_per_second=4, transient=True) as live:
                while True:
                    await anyio.sleep(0.25)
                    live.update(self._frame())
        while True:
            await anyio.sleep(5.0)
            out.note(self._text())

    def last_word(self) -> None:
        """The figures once the reports fetched but not yet shown were shown too."""
        self._out.note(f"delivery of {self._campaign.path}: {self._text()}")


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _report_data(report: DeliveryReport, ours: bool | None) -> dict[str, Any]:
    # The fields of ``aisix reports --json`` (_commands._record_json), built directly:
    # the generic conversion cost more than the journal write at a million reports.
    data: dict[str, Any] = {
        "type": "report",
        "id": report.id,
        "msgid": report.msgid,
        "mobile": report.mobile,
        "code": report.code,
        "result": report.result.name.lower(),
        "final": report.is_final,
    }
    if report.extra:
        data["extra"] = dict(report.extra)
    data["campaign"] = ours
    return data


_TAGS = {False: "  (not this campaign's)", None: "  (not journalled)"}


async def reports_journal(ctx: Context, options: PollKeywords) -> int:
    """``aisix reports --journal FILE``: journal the reports, then show them and the tally."""
    args, out = ctx.args, ctx.out
    path = _existing_journal(args.journal)
    async with ctx.client() as client, client.campaign(path) as campaign:
        recorded = campaign.definition.get("account")
        if recorded is None:
            raise CliError(f"{path} records no campaign yet: nothing to match reports to")
        if recorded != client.account:
            raise CliError(
                f"{path} is a campaign of {recorded}, not of {client.account}: its reports "
                "are fetched with that account's credentials"
            )
        unread = len(campaign.summary().unknown_unread)
        if unread:
            # Their numbers come back only when a send re-reads the input: until then a
            # report for one of them cannot be told from another campaign's.
            out.warn(
                f"{unread:,} recipients of chunks a stopped process left on the wire are "
                "known by input position only: resume the send (the same aisix send "
                "--journal command) first, or their reports count as not this campaign's"
            )
        try:
            async with campaign.record_run("reports"):
                return await _follow(ctx, campaign, options)
        finally:
            # (The display's last line already said it on stderr.)
            if out.json_mode:
                summary = campaign.summary()
                out.emit({"type": "summary", "journal": str(path), **_summary_json(summary)})


async def _follow(ctx: Context, campaign: Campaign, options: PollKeywords) -> int:
    out = ctx.out
    idle = ctx.args.until_idle
    display = _Display(ctx, campaign)
    # One flag per report, in the order the stream yields them: the journal's verdict
    # (the campaign's or not) is known when the batch is written, before any is shown.
    mine: deque[bool] = deque()

    async def record(verdicts: Sequence[bool]) -> None:
        mine.extend(verdicts)

    # One pass over the queue, until Ctrl-C (--follow) or until idle: see poll_options.
    stream = campaign.watch_delivery_reports(on_recorded=record, **options)

    # Written to stdout in one burst whenever the reader has caught up with what was
    # fetched: a batch of ten thousand reports is one write, not ten thousand flushes
    # (rich's per-line printing held the command to a few thousand reports/s).
    lines: list[str] = []
    shown: list[tuple[DeliveryReport, bool | None]] = []

    def flush() -> None:
        # The reports of a refused burst go to Output's file of unprinted ones. Made from
        # a copy: they are made only once stdout is found not to take them, maybe later.
        burst = shown.copy()
        out.write_results(
            "".join(lines), lambda: [_report_data(*pair) for pair in burst], count=len(burst)
        )
        lines.clear()
        shown.clear()

    def show(report: DeliveryReport) -> None:
        # None: fetched, but the journal could not record it (it broke): shown all the
        # same, the gateway will not hand it out again.
        ours = mine.popleft() if mine else None
        display.reports += 1
        if out.json_mode:
            lines.append(_ENCODE(_report_data(report, ours)) + "\n")
        else:
            lines.append(report_line(report) + ("" if ours else _TAGS[ours]) + "\n")
        shown.append((report, ours))
        if not mine:  # every report journalled so far is shown: the reader caught up
            flush()

    interrupt = FollowInterrupt("reports", journalled=True)

    async def consume(scope: anyio.CancelScope) -> None:
        with anyio.CancelScope() as reading:
            # Nobody reads any more: fetch no more (see _commands._stream).
            out.when_stdout_closes(reading.cancel)
            async with stream:
                async for report in stream:
                    show(report)
                    # A reader far behind: fetch no more until it catches up.
                    await out.wait_for_reader()
        scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(consume, group.cancel_scope)
            group.start_soon(interrupt.cancel_on_signal, group.cancel_scope)
            group.start_soon(display.run)
    except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C before the receiver is set
        interrupt.seen = True
    finally:
        interrupt.answered()  # the poll on the wire, if any, is journalled by now
        # Fetched (and journalled) but not yet shown: the gateway will not send them again.
        for report in stream.unread():
            show(report)
        flush()
        for bad in stream.malformed:
            show_malformed(ctx, bad)
        display.last_word()
    if interrupt.seen:
        return ExitCode.INTERRUPTED
    summary = campaign.summary()
    if idle is not None and (summary.pending or summary.unknown):
        return ExitCode.PENDING
    return ExitCode.OK


def _summary_json(summary: CampaignSummary) -> dict[str, Any]:
    return {
        "accepted": summary.accepted,
        "failed": summary.failed,
        "unknown": summary.unknown,
        "not_yet_sent": summary.not_yet_sent,
        "in_flight": summary.in_flight,
        "reconciled": summary.reconciled,
        "units": summary.units,
        "cost": summary.cost,
        "input_size": summary.input_size,
        "complete": summary.complete,
        "delivery": _delivery_figures(summary),
        "unknown_recipients": [
            {"position": position, "mobile": mobile}
            for position, mobile in summary.unknown_recipients
        ],
        "unknown_unread": list(summary.unknown_unread),
    }


# -- aisix campaign ------------------------------------------------------------------


def _run_json(run: CampaignRun) -> dict[str, Any]:
    return {
        "run": run.seq,
        "kind": run.kind,
        "started": _when(run.started_at),
        "ended": _when(run.ended_at),
        "pid": run.pid,
    }


async def campaign(ctx: Context) -> int:
    """``aisix campaign FILE``: where a campaign stands, from its journal alone."""
    args, out = ctx.args, ctx.out
    ctx.refuse_key_from_environment()
    path = _existing_journal(args.journal_file)
    export = args.export
    to_stdout = export == "-"
    if export is not None and not to_stdout:
        _check_export(path, Path(export))
    async with open_campaign_journal(path) as journal:
        if journal.read_only:
            # A send (or a reports follower) runs on it: what it committed so far.
            out.warn(f"{journal.read_only_reason}: figures as committed so far (read only)")
        for other in args.take_reports_from:
            taken = await journal.take_reports_from(_existing_journal(other))
            out.note(f"{counted(taken, 'report', 'reports')} of this campaign's taken from {other}")
        summary = journal.summary()
        runs = await journal.runs()
        definition = dict(journal.definition)
        gateway = journal.gateway
        if to_stdout:
            reconfigure = getattr(out.stdout, "reconfigure", None)
            if reconfigure is not None:
                # csv ends lines in \r\n itself; Windows' newline translation would
                # make them \r\r\n.
                reconfigure(newline="")
            handle = out.from_thread()
            try:
                written = await journal.export_csv(handle)
                await anyio.to_thread.run_sync(handle.flush)
                await out.wait_until_taken()
            except OSError:  # | head: the journal still holds it all
                out.mark_stdout_closed()
                return ExitCode.STDOUT_CLOSED
            if out.stdout_closed:
                return ExitCode.STDOUT_CLOSED
            out.note(f"{counted(written, 'recipient', 'recipients')} written to stdout")
            return ExitCode.OK  # the CSV alone: a table after it would spoil it
        if export is not None:
            written = await journal.export_csv(export)
            out.note(f"{counted(written, 'recipient', 'recipients')} written to {export}")
    if out.json_mode:
        out.emit(
            {
                "type": "campaign",
                # A key-like run in the name is not shown, as on stderr (see Output).
                "journal": redact_keys(str(path)),
                "definition": definition,
                "gateway": gateway,
                **_summary_json(summary),
                "runs": [_run_json(run) for run in runs],
            }
        )
        return ExitCode.OK
    figures = _delivery_figures(summary)
    size = summary.input_size
    rows: list[tuple[str, object]] = [
        ("action", definition.get("action")),
        ("account", definition.get("account")),
        ("gateway", gateway or "not recorded"),
        (
            "input size",
            "not read to its end yet" if size is None else f"{size:,}",
        ),
        # As `aisix send --journal` says them at its end (--json had reconciled).
        *standing_rows(summary),
    ]
    rows += [
        # What the accepted chunks' receipts said: unknown chunks a report reconciled
        # gave none, so their charge is not in these two rows.
        ("units (from receipts)", f"{summary.units:,}"),
        ("cost (yuan, from receipts)", summary.cost),
        ("delivered", f"{figures['delivered']:,}"),
        ("failed delivery", f"{figures['failed']:,}"),
        ("pending reports", f"{figures['pending']:,}"),
    ]
    rows += [(f"  {code}", f"{n:,}") for code, n in figures["by_code"].items()]
    rows.append(("reports not this campaign's", f"{summary.foreign_reports:,}"))
    out.pairs(f"campaign {path}", rows)
    out.table(
        "runs",
        ["run", "kind", "started (UTC)", "ended (UTC)", "pid"],
        [
            (r.seq, r.kind, _short(r.started_at), _short(r.ended_at) or "not recorded", r.pid or "")
            for r in runs
        ],
        right=["run", "pid"],
    )
    for position, mobile in summary.unknown_recipients[:20]:
        out.warn(f"unknown outcome: position {position} ({mobile}); do not resend blindly")
    if len(summary.unknown_recipients) > 20:
        out.warn(f"... and {len(summary.unknown_recipients) - 20:,} more unknown recipients")
    unread = summary.unknown_unread
    if unread:
        # Left on the wire by a process that was killed: the journal does not copy a
        # chunk's numbers before its request, so only their input positions are known
        # here. The table counted them, and this listed nothing (a user's trial).
        out.warn(
            f"unknown outcome: {len(unread):,} recipient(s) at input position(s) "
            f"{_spans(unread)} (counted from 0, blank and comment lines not counted), left "
            "on the wire by a process that stopped; their numbers are in the journal once "
            "the same aisix send --journal command runs again. Do not resend them blindly"
        )
    return ExitCode.OK


def _spans(positions: Sequence[int], shown: int = 10) -> str:
    """``positions`` as ranges ("140-159, 300"), the first ``shown`` of them."""
    spans: list[list[int]] = []
    for position in sorted(positions):
        if spans and position == spans[-1][1] + 1:
            spans[-1][1] = position
        else:
            spans.append([position, position])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:shown])
    return text + (f" and {len(spans) - shown:,} more ranges" if len(spans) > shown else "")


def _check_export(journal: Path, target: Path) -> None:
    """Refuse, before opening anything, an export that would land nowhere or on the journal."""
    if target.is_dir():
        raise CliError(f"--export {target}: is a directory; give a file name in it")
    if not target.parent.is_dir():
        raise CliError(f"--export {target}: the folder {target.parent} does not exist")
    refuse_journal_file("--export", str(target), journal)
    # An export is rewritten whole: refreshing an earlier one is the usual use, but a
    # mistyped path must not wipe the input, a key file or someone's spreadsheet.
    try:
        overwrites = CampaignJournal.export_would_overwrite(target)
    except OSError as exc:
        raise CliError(f"--export {target}: cannot read it ({exc.strerror})") from None
    if overwrites:
        raise CliError(
            f"--export {target} exists and is not an earlier export (its first line is not "
            f"{','.join(CampaignJournal.EXPORT_COLUMNS)}): it would be overwritten; give "
            "another file"
        )
