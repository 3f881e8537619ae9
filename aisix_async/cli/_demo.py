"""``aisix demo``: the whole product, offline, in well under a minute, checked.

An emulated gateway starts in a thread of this process with a rate limit the client is
not told, some faults (lost answers, -10 after charging, 502s, latency) and delivery
reports. A real client then runs a real campaign against it over HTTP: N numbers by
sendOnce, a sendBatch run and a sendParam run, while a report stream feeds a
:class:`DeliveryTracker`. At the end every figure is checked against the emulator's own
ledger (``_demo_check``) and the demo says whether the check passed: exit 0 only if so.
Nothing here talks to the emulator except over HTTP, until the check reads its ledger.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
from rich.text import Text

from .. import AisixClient, DeliveryTracker, RetryPolicy, SendStream
from ._app import Context
from ._demo_check import Check, LedgerEntry, Part, verify
from ._exit import CliError, ExitCode
from ._progress import Snapshot, progress
from .send.report import snapshot

__all__ = ["demo"]

_SEND_ACTIONS = ("sendOnce", "sendBatch", "sendParam")
_ONCE_TEXT = "Spring sale: 20% off everything this weekend. Reply STOP to opt out."
_TEMPLATE = "Hi {p1}, your order {p2} has shipped and arrives {p3}."


def _numbers(rng: random.Random, prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:08d}" for n in rng.sample(range(10**8), count)]


def _batch_text(index: int) -> str:
    # Short, long (two or three units) and Chinese texts: the units must come out right.
    if index % 5 == 0:
        return f"您的验证码是 {index:06d}，五分钟内有效。"
    if index % 5 == 1:
        return f"Order {index:06d}: " + "your parcel is on its way to the pickup point. " * 2
    return f"Dear customer, your appointment #{index} is confirmed."


def _emulator_config(args: Any, blacklist: Sequence[str], parts_size: int) -> Any:
    from ..emulator import AccountConfig, EmulatorConfig, FaultConfig

    return EmulatorConfig(
        # Enough for everything at up to three units a message, and then some.
        accounts=(AccountConfig(balance=Decimal(parts_size) * Decimal("0.3") + 1000),),
        rate=args.rate,
        burst=max(1.0, args.rate / 2),
        faults=FaultConfig(
            error_after_charge=0.01,
            drop_after_process=0.01,
            error_before_charge=0.01,
            http_502=0.01,
            latency_ms=30,
            jitter_ms=40,
            # Faults on sends only: a poll answer lost in transit would lose its reports
            # for good (the gateway hands each out once), and the check would rightly fail.
            fault_actions=_SEND_ACTIONS,
        ),
        seed=args.seed,
        report_delay=0.5,
        reports_per_call=1000,
        blacklist=frozenset(blacklist),
    )


async def _run_part(
    ctx: Context,
    title: str,
    stream: SendStream,
    part: Part,
    tracker: DeliveryTracker,
) -> None:
    total = part.recipients
    show = progress(ctx.out, title, lambda: snapshot(stream.stats(), total), plain_every=2)
    async with stream, show:
        async for outcome in stream:
            part.add(outcome)
            tracker.track(outcome)


async def demo(ctx: Context) -> int:
    """The ``aisix demo`` command."""
    try:
        from ..emulator import EmulatorServer
    except ImportError as exc:  # uvicorn missing: the emulator extra is not installed
        raise CliError(
            f"aisix demo needs the emulator ({exc.name} is missing): "
            "pip install '.[cli]' in the clone"
        ) from None
    args = ctx.args
    rng = random.Random(args.seed)
    once_numbers = _numbers(rng, "139", args.size)
    batch_numbers = _numbers(rng, "137", 250)
    param_numbers = _numbers(rng, "136", 250)
    pairs = [(m, _batch_text(i)) for i, m in enumerate(batch_numbers)]
    names = ["Ana", "Bo", "李雷", "Chidi", "Dmitri", "Eun-ji", "Farah"]
    rows = [
        (m, [names[i % len(names)], f"A{i:05d}", "tomorrow" if i % 2 else "on Friday"])
        for i, m in enumerate(param_numbers)
    ]
    blacklist = once_numbers[::997] + batch_numbers[::50] + param_numbers[::50]
    size = len(once_numbers) + len(pairs) + len(rows)

    server = EmulatorServer(_emulator_config(args, blacklist, size))
    await anyio.to_thread.run_sync(server.start)
    try:
        return await _campaign(ctx, server, once_numbers, pairs, rows, blacklist)
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def _campaign(
    ctx: Context,
    server: Any,
    once_numbers: list[str],
    pairs: list[tuple[str, str]],
    rows: list[tuple[str, list[str]]],
    blacklist: list[str],
) -> int:
    out = ctx.out
    started = time.monotonic()
    out.note(
        f"emulator on {server.base_url}: limit {ctx.args.rate:g} requests/s (the client is "
        "not told), faults: 1% each of -10 before/after charging, dropped answers, HTTP 502"
    )
    once = Part("sendOnce", dict.fromkeys(once_numbers, _ONCE_TEXT))
    batch = Part("sendBatch", dict(pairs))
    param = Part(
        "sendParam",
        {m: _TEMPLATE.format_map({"p1": v[0], "p2": v[1], "p3": v[2]}) for m, v in rows},
    )
    parts = [once, batch, param]
    tracker = DeliveryTracker()
    retry = RetryPolicy(timeout=60.0, attempts=1000)
    # Every endpoint named, and no shared limit: AISIX_DATA_URL or AISIX_SHARED_LIMIT set
    # for the user's real account would send the demo's report reads to that DataApi (the
    # check then failed) or its pace to that Redis.
    async with AisixClient(
        server.account,
        server.authkey,
        base_url=server.base_url,
        data_url=server.data_url,
        shared_limit="",
        retry=retry,
    ) as client:
        before = (await client.get_balance()).remain
        signature = next(s.sign for s in await client.get_signs() if s.csid == 0)
        reports = client.watch_delivery_reports(interval=0.25, max_backoff=2.0)
        async with reports, anyio.create_task_group() as group:

            async def feed() -> None:
                async for report in reports:
                    tracker.feed(report)

            group.start_soon(feed)
            await _run_part(
                ctx, "sendOnce", client.send_many(once_numbers, _ONCE_TEXT), once, tracker
            )
            await _run_part(ctx, "sendBatch", client.send_batch_many(pairs), batch, tracker)
            await _run_part(
                ctx,
                "sendParam",
                client.send_param_many(_TEMPLATE, rows),
                param,
                tracker,
            )
            await _wait_reports(ctx, server, tracker)
            group.cancel_scope.cancel()
        tracker.feed_many(reports.unread())
        after = (await client.get_balance()).remain
        scheduler = client.stats()
    elapsed = time.monotonic() - started
    return _judge(
        ctx,
        server,
        parts,
        tracker,
        signature,
        before,
        after,
        blacklist,
        elapsed,
        scheduler.rate_limited,
    )


async def _wait_reports(ctx: Context, server: Any, tracker: DeliveryTracker) -> None:
    """Until every tracked recipient has a final report and the gateway's queue is empty."""
    started = time.monotonic()

    def read() -> Snapshot:
        result_counts = tracker.counts()
        finished = sum(result_counts.values())
        return Snapshot(
            done=finished,
            total=tracker.tracked,
            accepted=result_counts.get("DELIVRD", 0),
            failed=finished - result_counts.get("DELIVRD", 0),
            unknown=len(tracker.untracked),
            elapsed=time.monotonic() - started,
        )

    def settled() -> bool:
        return tracker.done and server.state.pending_reports() == 0

    def figures(snap: Snapshot, rate: float) -> str:
        return (
            f"{rate:,.0f}/s  delivered {snap.accepted:,}  other final codes {snap.failed:,}  "
            f"reports for unknown outcomes {snap.unknown:,}  {snap.elapsed:,.1f} s"
        )

    async with progress(ctx.out, "delivery reports", read, plain_every=2, figures=figures):
        with anyio.move_on_after(ctx.args.report_wait):
            # Polled: the tracker and the emulator's queue are watched, not awaited.
            while not settled():  # noqa: ASYNC110
                await anyio.sleep(0.1)


def _judge(
    ctx: Context,
    server: Any,
    parts: list[Part],
    tracker: DeliveryTracker,
    signature: str,
    before: Decimal,
    after: Decimal,
    blacklist: list[str],
    elapsed: float,
    rate_limited: int,
) -> int:
    out = ctx.out
    state = server.state
    ledger = [
        LedgerEntry(r.msgid, r.mobile, r.text, r.units, r.cost)
        for r in state.messages()
        if r.action in _SEND_ACTIONS
    ]
    counters = state.get_counters()
    result = tracker.result()
    delivered: dict[tuple[str, str], str] = {}
    for part in parts:
        for mobile, msgid in part.accepted.items():
            latest = tracker.latest(msgid, mobile)
            if latest is not None and latest.is_final:
                delivered[(msgid, mobile)] = latest.code.upper()
    untracked = result.untracked
    checks = verify(
        parts,
        ledger,
        signature=signature,
        balance_before=before,
        balance_after=after,
        charged_by_gateway=counters.amount_charged,
        delivered=delivered,
        pending=len(result.pending),
        reported_unknown=[r.mobile for r in untracked],
        blacklist=blacklist,
    )
    passed = all(c.ok for c in checks)
    codes = dict(sorted(result.counts.items(), key=lambda kv: -kv[1]))
    if out.json_mode:
        out.emit(
            {
                "type": "demo",
                "passed": passed,
                "parts": [
                    {
                        "name": p.name,
                        "recipients": p.recipients,
                        "accepted": len(p.accepted),
                        "failed": len(p.failed),
                        "unknown": len(p.unknown),
                        "units": p.units,
                        "cost": p.cost,
                    }
                    for p in parts
                ],
                "balance_before": before,
                "balance_after": after,
                "delivery_codes": codes,
                "rate_limited": rate_limited,
                "gateway_rate_limited": counters.rate_limited,
                "elapsed": round(elapsed, 3),
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            }
        )
        return ExitCode.OK if passed else ExitCode.FAILED
    total = [
        "total",
        sum(p.recipients for p in parts),
        sum(len(p.accepted) for p in parts),
        sum(len(p.failed) for p in parts),
        sum(len(p.unknown) for p in parts),
        sum(p.units for p in parts),
        sum((p.cost for p in parts), Decimal(0)),
    ]
    figures = ["recipients", "accepted", "failed", "unknown", "units", "cost (yuan)"]
    out.table(
        "campaign",
        ["", *figures],
        [
            *(
                [
                    p.name,
                    p.recipients,
                    len(p.accepted),
                    len(p.failed),
                    len(p.unknown),
                    p.units,
                    p.cost,
                ]
                for p in parts
            ),
            total,
        ],
        right=figures,
    )
    out.pairs(
        "account and delivery",
        [
            ("balance before (yuan)", before),
            ("balance after (yuan)", after),
            ("charged (yuan)", _charged(before - after, total[-1])),
            (
                "-1 answers absorbed",
                f"{rate_limited:,} (the gateway gave {counters.rate_limited:,})",
            ),
            ("delivery codes", ", ".join(f"{k} {v:,}" for k, v in codes.items()) or "none"),
            ("reports for unknown outcomes", f"{len(untracked):,}"),
            ("elapsed", f"{elapsed:,.1f} s"),
        ],
    )
    _show_checks(ctx, checks)
    if passed:
        out.line("CHECK PASSED: every figure above matches the emulator's own record.")
        return ExitCode.OK
    out.line("CHECK FAILED: see the checks marked FAIL above.")
    return ExitCode.FAILED


def _charged(charged: Decimal, accepted_cost: object) -> str:
    """The balance's drop, and why it exceeds the campaign's cost when it does."""
    assert isinstance(accepted_cost, Decimal)
    extra = charged - accepted_cost
    if not extra:
        return f"{charged} (the campaign total above)"
    # Unknown outcomes are not priced in the campaign table (their answer was lost), but
    # the gateway charged those it took: the difference is theirs.
    return (
        f"{charged} = {accepted_cost} for accepted recipients + {extra} for unknown ones "
        "(answer lost, but sent and charged)"
    )


def _show_checks(ctx: Context, checks: list[Check]) -> None:
    ctx.out.table(
        "checked against the emulator's ledger",
        ["", "check", "figures"],
        [
            (
                Text("ok", style="green") if c.ok else Text("FAIL", style="bold red"),
                c.name,
                c.detail,
            )
            for c in checks
        ],
    )
