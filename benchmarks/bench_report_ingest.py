"""Delivery reports through a campaign journal, against what the gateway can hand out (issue 18).

Three fresh processes against one emulator (reports on, due at once, ``reports_per_call``
as large as the benchmark asks):

* the gateway's pace: 1M numbers sent plainly, then their reports drained by a bare
  loop (httpx + defusedxml, one getSendState after another, nothing stored): how fast
  one poller can be handed reports;
* the SDK's stream alone: the same, drained by ``client.watch_delivery_reports()`` (parsed
  into records, nothing stored);
* ours: a 1M-recipient campaign sent with a journal, then its reports drained through
  ``campaign.watch_delivery_reports()`` (each batch matched to its recipients and committed
  before it is yielded): time from the last send to the last report journalled,
  reports/s, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from _common import emulator, numbers, peak_rss_mb, run_worker, table
from defusedxml.ElementTree import fromstring

from aisix_async import AisixClient


async def _send(client: AisixClient, count: int, prefix: str) -> None:
    async with client.send_many(numbers(count, prefix), "Your code is 1234") as outcomes:
        async for _ in outcomes:
            pass


async def bare(base_url: str, account: str, authkey: str, count: int) -> None:
    async with AisixClient(account, authkey, base_url=base_url) as client:
        await _send(client, count, "137")
    last_send = time.perf_counter()
    received = 0
    form = {"ac": account, "authkey": authkey}
    async with httpx.AsyncClient(timeout=60) as http:
        url = f"{base_url}/DataApi?action=getSendState"
        while True:
            answer = await http.post(url, data=form)
            got = len(list(fromstring(answer.content)))
            if not got:
                break
            received += got
    took = time.perf_counter() - last_send
    print(json.dumps({"received": received, "seconds": took, "rss": peak_rss_mb()}))


async def stream(base_url: str, account: str, authkey: str, count: int) -> None:
    received = 0
    async with AisixClient(account, authkey, base_url=base_url) as client:
        await _send(client, count, "138")
        last_send = time.perf_counter()
        last_at = last_send
        async with client.watch_delivery_reports(interval=0.05, stop_when_idle=1.0) as reports:
            async for _ in reports:
                received += 1
                last_at = time.perf_counter()
    print(json.dumps({"received": received, "seconds": last_at - last_send, "rss": peak_rss_mb()}))


async def campaign(base_url: str, account: str, authkey: str, count: int) -> None:
    received = 0
    last_journalled = 0.0

    async def journalled(batch: object) -> None:
        nonlocal last_journalled
        last_journalled = time.perf_counter()

    with tempfile.TemporaryDirectory() as folder:
        client = AisixClient(account, authkey, base_url=base_url)
        async with client, client.campaign(Path(folder) / "bench.db") as run:
            async with run.send_many(numbers(count, "139"), "Your code is 1234") as outcomes:
                async for _ in outcomes:
                    pass
            last_send = time.perf_counter()
            reports = run.watch_delivery_reports(
                interval=0.05, stop_when_idle=1.0, on_batch=journalled
            )
            async with reports:
                async for _ in reports:
                    received += 1
            summary = run.summary()
        size = sum(f.stat().st_size for f in Path(folder).iterdir()) / 1e6
    print(
        json.dumps(
            {
                "received": received,
                "seconds": last_journalled - last_send,
                "rss": peak_rss_mb(),
                "settled": sum(summary.delivery.values()),
                "pending": summary.pending,
                "accepted": summary.accepted,
                "journal_mb": size,
            }
        )
    )


def run(count: int, per_call: int, poll_latency_ms: float = 0.0) -> str:
    results = {}
    with emulator("--reports-per-call", str(per_call), "--report-delay", "0") as emu:
        for name in ("bare", "stream", "campaign"):
            emu.reset()
            emu.configure(reports=True, reports_per_call=per_call, report_delay=0.0)
            if poll_latency_ms:
                # A gateway across a network: each poll waits this long before its answer
                # (sends are not delayed), which a journal write can overlap.
                emu.configure(
                    faults={"latency_ms": poll_latency_ms, "fault_actions": ["getSendState"]}
                )
            url = emu.base_url
            results[name] = run_worker(
                Path(__file__), name, url, emu.account, emu.authkey, str(count), timeout=280
            )
    ours, gateway, plain = results["campaign"], results["bare"], results["stream"]
    rate = ours["received"] / ours["seconds"]
    pace = gateway["received"] / gateway["seconds"]
    rows = [
        [
            "gateway's pace (bare loop, nothing stored)",
            f"{gateway['received']:,}",
            f"{gateway['seconds']:.1f}",
            f"{pace:,.0f}",
            f"{gateway['rss']:.0f}",
        ],
        [
            "SDK stream, nothing stored (client.watch_delivery_reports)",
            f"{plain['received']:,}",
            f"{plain['seconds']:.1f}",
            f"{plain['received'] / plain['seconds']:,.0f}",
            f"{plain['rss']:.0f}",
        ],
        [
            "campaign journal (campaign.watch_delivery_reports)",
            f"{ours['received']:,}",
            f"{ours['seconds']:.1f}",
            f"{rate:,.0f}",
            f"{ours['rss']:.0f}",
        ],
    ]
    verdict = "met" if rate >= pace else "MISSED"
    return "\n".join(
        [
            "## Delivery reports into a campaign journal"
            + (f" ({poll_latency_ms:g} ms per poll)" if poll_latency_ms else " (loopback)"),
            "",
            f"{count:,} recipients by sendOnce (chunks of 1000), reports due at once, "
            f"{per_call:,} reports per getSendState call"
            + (f", each answered after {poll_latency_ms:g} ms" if poll_latency_ms else "")
            + "; each client in a fresh process, "
            "the emulator in another. Seconds: from the last send's outcome to the last "
            "report journalled (bare loop: to the last report received).",
            "",
            table(["drain", "reports", "seconds", "reports/s", "peak RSS MB"], rows),
            "",
            f"Campaign: {ours['settled']:,} of {ours['accepted']:,} accepted recipients "
            f"settled by a final report, {ours['pending']:,} pending; journal file "
            f"{ours['journal_mb']:,.0f} MB (WAL included). Ingestion at least as "
            f"fast as the gateway hands reports out ({rate / pace:.2f}x): **{verdict}**.",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        name, base_url, account, authkey, count = sys.argv[2:7]
        work = {"bare": bare, "stream": stream, "campaign": campaign}[name]
        anyio.run(work, base_url, account, authkey, int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--reports-per-call", type=int, default=10_000)
    parser.add_argument(
        "--poll-latency-ms",
        default="0,50",
        help="delays of each getSendState answer to measure, comma-separated (default 0,50: "
        "loopback, and a gateway across a network, where a journal write can overlap a poll)",
    )
    args = parser.parse_args()
    for latency in (float(ms) for ms in args.poll_latency_ms.split(",")):
        print(run(args.count, args.reports_per_call, latency))
        print()


if __name__ == "__main__":
    main()
