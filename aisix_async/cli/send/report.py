"""What ``aisix send`` prints about a send: problems, the estimate, progress, the summary.

Results go to stdout (a table, or JSON lines with ``--json``); warnings about failed and
unknown recipients go to stderr whatever the format, because a person reads those.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs

from ... import GATEWAY_TZ, AisixClient, AisixError, BulkStats, Estimate
from .._app import Context
from .._exit import ExitCode, describe, redact_keys
from .._progress import Snapshot
from .._standing import standing_rows
from .inputs import Checked, Source
from .tally import Tally

if TYPE_CHECKING:
    from ... import CampaignSummary

__all__ = ["finish", "show_estimate", "show_problems", "snapshot"]


def show_problems(ctx: Context, source: Source, checked: Checked) -> None:
    out = ctx.out
    if out.json_mode:
        for problem in checked.problems:
            reason = redact_keys(problem.reason)
            out.emit({"type": "invalid", "line": problem.line, "reason": reason})
    else:
        for problem in checked.problems:
            out.warn(f"{source.description} line {problem.line}: {problem.reason}")
    if checked.more_problems:
        out.warn(f"... and {checked.more_problems} more invalid lines")


def _scheduled(at: datetime | None) -> str:
    if at is None:
        return "now"
    # In the gateway's clock, which is what it schedules by, and in UTC to compare.
    return (
        f"{at.astimezone(GATEWAY_TZ):%Y-%m-%d %H:%M} China time "
        f"({at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC)"
    )


def _at_record(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(GATEWAY_TZ).isoformat()


def show_estimate(
    ctx: Context, est: Estimate, checked: Checked, dry: bool, *, at: datetime | None = None
) -> None:
    out = ctx.out
    invalid = len(checked.problems) + checked.more_problems
    if out.json_mode:
        out.emit(
            {
                "type": "estimate",
                "dry_run": dry,
                "lines": checked.count,
                "invalid": invalid,
                "duplicates": checked.duplicates,
                "messages": est.messages,
                "units_per_message": est.units_per_message,
                "min_units": est.min_units,
                "max_units": est.max_units,
                "total_units": est.total_units,
                "price": est.price,
                "cost": est.cost,
                "balance": est.balance,
                "enough": est.enough,
                "cgid": est.cgid,
                "csid": est.csid,
                "at": _at_record(at),
            }
        )
        return
    per = (
        str(est.units_per_message)
        if est.units_per_message is not None
        else f"{est.min_units} to {est.max_units}"
    )
    rows: list[tuple[str, object]] = [
        ("recipients (valid)", f"{est.messages:,}"),
        ("invalid lines", f"{invalid:,}"),
    ]
    if dry:
        rows.append(("repeated numbers", f"{checked.duplicates:,}"))
    rows += [
        ("units per message", per),
        ("total units", f"{est.total_units:,}"),
        ("price (yuan/unit)", est.price),
        ("cost (yuan)", est.cost),
        ("balance (yuan)", est.balance),
        ("balance after (yuan)", est.balance - est.cost),
        ("channel group / signature", f"{est.cgid} / {est.csid} {est.signature}"),
        ("delivered", _scheduled(at)),
    ]
    out.pairs("dry run: nothing sent" if dry else "estimate", rows)
    if dry and checked.duplicates:
        # Counted, but not said what it costs (a user's trial): the send does not drop them.
        out.warn(
            f"{checked.duplicates:,} line(s) repeat a number listed before: numbers are not "
            "de-duplicated, so each is sent and charged again (the cost above counts them)"
        )
    if not est.enough:
        out.warn(f"the balance is {est.shortfall} yuan short of the estimated cost")


def snapshot(stats: BulkStats, total: int | None, not_sent: int = 0, unread: int = 0) -> Snapshot:
    """Progress figures from a send stream's live statistics.

    ``not_sent`` is the tally's count of recipients never sent: the stream counts them
    as failed, the summary apart, and the last progress line must not contradict the
    summary printed under it ("failed 17,000" above "failed 0"). ``unread``: input a
    stop left unread, not sent either (the stream never counted it).
    """
    return Snapshot(
        # The input left unread is done too, as not sent: "1,001/50,014 done" beside "not
        # sent 50,013" added up to more than the whole (a user's trial).
        done=stats.done + stats.skipped + unread,
        total=total,
        accepted=stats.accepted,
        failed=max(0, stats.failed - not_sent),
        unknown=stats.unknown,
        not_sent=not_sent + unread,
        requests=stats.requests,
        rate_limited=stats.rate_limited,
        retries=stats.retries,
        limit=stats.limit,
        pace=stats.pace,
        in_flight=stats.in_flight,
        elapsed=stats.elapsed,
    )


def _shared_record(client: AisixClient) -> dict[str, Any] | None:
    # With --shared-limit: the fleet's pace at this client's last turn, how many clients
    # shared it, and whether Redis failed this client (it then paced itself for a while).
    stats = client.stats()
    if stats.shared_limit_up is None:
        return None
    return {
        "pace": None if stats.shared_pace is None else round(stats.shared_pace, 3),
        "clients": stats.shared_clients,
        "fallbacks": stats.shared_limit_fallbacks,
        "up": stats.shared_limit_up,
    }


def _shared_text(shared: dict[str, Any]) -> str:
    pace, clients, fallbacks = shared["pace"], shared["clients"], shared["fallbacks"]
    text = (
        "no turn taken"
        if pace is None
        else f"fleet pace {pace:.2f} requests/s, {clients} client(s) at the last turn"
    )
    if fallbacks:
        text += f"; Redis failed this client {fallbacks} time(s) (it paced itself meanwhile)"
    return text


def finish(
    ctx: Context,
    client: AisixClient,
    tally: Tally,
    stats: BulkStats,
    total: int,
    stop: AisixError | None,
    state: dict[str, int],
    campaign: CampaignSummary | None,
    *,
    at: datetime | None = None,
) -> int:
    out = ctx.out
    unrecorded = 0 if campaign is None else campaign.in_flight
    if campaign is not None and campaign.in_flight:
        # The run is over, so nothing of it is on the wire: chunks its journal still has
        # there are those whose outcome it could not record (a full disk). They may have
        # been sent, and the journal calls them unknown from now on, as `aisix campaign`
        # and the next run do; shown "in flight (a run is sending them)" after the
        # process had stopped, with exit 1 (an operator's trial).
        campaign = attrs.evolve(
            campaign, unknown=campaign.unknown + campaign.in_flight, in_flight=0
        )
    skipped = stats.skipped
    # Never sent, either way dispatch stopped: outcomes saying so (-9, an account
    # refusal, a second Ctrl-C), and the input a first Ctrl-C left unread (no outcome).
    unread = tally.unread(total, skipped)
    not_sent = tally.not_sent + unread
    interrupted = bool(state.get("interrupted"))
    # Stopped because nobody read the outcomes any more (see _interrupts), with some
    # recipients left unsent by it (closed at the last outcome, it stopped nothing).
    stopped_unread = bool(state.get("stdout_closed")) and not interrupted and not_sent > 0
    if out.json_mode:
        record: dict[str, Any] = {
            "type": "summary",
            "recipients": total,
            "accepted": tally.accepted,
            "failed": tally.failed,
            "unknown": tally.unknown,
            "skipped": skipped,
            "not_sent": not_sent,
            "units": tally.units,
            "cost": tally.cost,
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
            "retries": stats.retries,
            "elapsed": round(stats.elapsed, 3),
            "interrupted": interrupted,
            "stdout_closed": stopped_unread,
            "stopped_by": None if stop is None else stop.message,
            "at": _at_record(at),
        }
        if campaign is not None:
            record["campaign"] = _campaign_record(campaign)
        shared = _shared_record(client)
        if shared is not None:
            record["shared_limit"] = shared
        out.emit(record)
    else:
        rows: list[tuple[str, object]] = [
            ("recipients", f"{total:,}"),
            ("accepted", f"{tally.accepted:,}"),
            ("failed", f"{tally.failed:,}"),
            ("unknown (may have been sent)", f"{tally.unknown:,}"),
        ]
        if skipped:
            # Not "settled": those an earlier run left unknown are skipped too.
            rows.append(("skipped (an earlier run's: accepted, failed or unknown)", f"{skipped:,}"))
        if not_sent:
            rows.append(("not sent (stopped)", f"{not_sent:,}"))
        rows += [
            ("units charged", f"{tally.units:,}"),
            ("cost (yuan)", tally.cost),
            (
                "requests / -1 answers / retries",
                f"{stats.requests:,} / {stats.rate_limited:,} / {stats.retries:,}",
            ),
            ("elapsed", f"{stats.elapsed:,.1f} s"),
        ]
        if at is not None:
            rows.append(("scheduled for", _scheduled(at)))
        shared = _shared_record(client)
        if shared is not None:
            rows.append(("shared limit (Redis)", _shared_text(shared)))
        if interrupted:
            title = "interrupted: what was sent"
        elif stopped_unread:
            title = "stopped, stdout closed: what was sent"
        else:
            title = "this run"
        out.pairs(title, rows, vital=True)
        if campaign is not None:
            out.pairs(
                f"campaign {ctx.args.journal} (all runs)", _campaign_rows(campaign), vital=True
            )
    # On stderr whatever the output format: a script reads stdout, a person reads these.
    for reason, count in tally.reasons.most_common(5):
        out.warn(f"{count:,} recipient(s): {reason}")
    # The input a stop left unread was not sent for the same reason as the chunks it
    # found queued: one count for both, the summary's "not sent" (an operator read "50
    # recipients: not sent ... interrupted" beside 78,880 not sent as two things).
    for index, (reason, count) in enumerate(tally.not_sent_reasons.most_common(5)):
        out.warn(f"{count + (unread if index == 0 else 0):,} recipient(s): {reason}")
    for mobile, reason in tally.unknown_examples[:5]:
        out.warn(f"unknown: {mobile} ({reason})")
    if tally.unknown > 5:
        out.warn(f"... and {tally.unknown - 5:,} more unknown")
    if tally.unknown:
        out.warn(
            "unknown recipients may have been sent and charged: do not resend them "
            "blindly" + ("; the journal lists them" if ctx.args.journal else "")
        )
    if unrecorded:
        out.warn(
            f"{unrecorded:,} recipient(s) of this run went out, but the journal could not "
            "record their outcome: it holds them as unknown, and a resumed run does not "
            f"send them again; delivery reports settle them (aisix reports --journal "
            f"{ctx.args.journal})"
        )
    earlier = 0 if campaign is None else campaign.unknown - tally.unknown - unrecorded
    if earlier > 0:
        # Left by earlier runs and not resent by this one: they alone made its exit 3,
        # which said nothing of why (a user's trial).
        out.warn(
            f"{earlier:,} recipient(s) of earlier runs have an unknown outcome (they may "
            f"have been sent and charged) and were not sent again: aisix campaign "
            f"{ctx.args.journal} lists them; delivery reports settle them (aisix reports "
            f"--journal {ctx.args.journal}), and --resend-unknown sends them again "
            "(they may then arrive twice)"
        )
    if stop is not None:
        problem = describe(stop, account=client.account, url=ctx.url)
        out.error(problem.message)
    if interrupted and state.get("abandoned"):
        # Only what was really cut off: the summary's unknown count says the same.
        cut_off = state.get("cut_off", 0)
        if cut_off:
            out.warn(
                f"{cut_off:,} recipient(s) abandoned on the wire are unknown: "
                "they may have been sent and charged"
            )
        else:
            out.warn("no request was on the wire when the send was abandoned")
    if (interrupted or stopped_unread) and ctx.args.journal:
        out.note(f"run the same command again to resume from {ctx.args.journal}")
    if interrupted:
        return ExitCode.INTERRUPTED
    if stopped_unread:
        return ExitCode.STDOUT_CLOSED
    unknown = tally.unknown if campaign is None else campaign.unknown
    failed = tally.failed + not_sent
    if campaign is not None:
        failed = campaign.failed + campaign.not_yet_sent + campaign.in_flight
    if unknown:
        return ExitCode.UNKNOWN
    if stop is not None:
        code = describe(stop, account=client.account, url=ctx.url).code
        # 2 says nothing was sent: a URL that stopped answering as the gateway half way
        # through (EndpointError) leaves this run's accepted recipients sent.
        return ExitCode.FAILED if code == ExitCode.USAGE and tally.accepted else code
    if failed:
        return ExitCode.FAILED
    return ExitCode.OK


def _campaign_record(summary: CampaignSummary) -> dict[str, Any]:
    return {
        "accepted": summary.accepted,
        "failed": summary.failed,
        "unknown": summary.unknown,
        "not_yet_sent": summary.not_yet_sent,
        "reconciled": summary.reconciled,
        "units": summary.units,
        "cost": summary.cost,
        "input_size": summary.input_size,
        "complete": summary.complete,
        "unknown_recipients": [mobile for _, mobile in summary.unknown_recipients],
        # Left by a crash and not yet re-read: 0-based positions among the input's items.
        "unknown_positions": list(summary.unknown_unread),
    }


def _campaign_rows(summary: CampaignSummary) -> list[tuple[str, object]]:
    # The figures `aisix campaign` shows of the same journal, in the same words.
    return [
        *standing_rows(summary),
        ("units / cost (yuan)", f"{summary.units:,} / {summary.cost}"),
        ("complete", "yes" if summary.complete else "no"),
    ]
