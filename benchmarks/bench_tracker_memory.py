"""DeliveryTracker memory at 1M and 10M recipients (issue 18).

Each size runs in a fresh process: receipts of 1000 numbers each (one msgid per sendOnce
chunk, as the gateway answers) are tracked, then a final report is fed for every
recipient. Peak RSS (getrusage) is read before tracking and at the end; the growth per
million recipients must stay <= 30 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

from _common import peak_rss_mb, run_worker, table

from aisix_async import DeliveryReport, DeliveryTracker, ReportResult, SendReceipt

CHUNK = 1000
TARGET_MB_PER_MILLION = 30.0


def worker(count: int) -> None:
    before = peak_rss_mb()
    began = time.perf_counter()
    tracker = DeliveryTracker()
    for start in range(0, count, CHUNK):
        receipt = SendReceipt(
            cid="1",
            sid="1",
            msgid=f"m{start // CHUNK}",
            total=CHUNK,
            price=Decimal("0.1"),
            remain=Decimal(0),
        )
        tracker.track_receipt(receipt, [f"139{i:08d}" for i in range(start, start + CHUNK)])
    tracked_at = time.perf_counter()
    codes = ("DELIVRD", "UNDELIV", "EXPIRED")
    for start in range(0, count, CHUNK):
        msgid = f"m{start // CHUNK}"
        for i in range(start, start + CHUNK):
            code = codes[i % 3]
            result = ReportResult.DELIVERED if code == "DELIVRD" else ReportResult.FAILED
            tracker.feed(DeliveryReport(str(i), msgid, f"139{i:08d}", result, code))
    fed_at = time.perf_counter()
    assert tracker.done
    assert tracker.tracked == count
    print(
        json.dumps(
            {
                "before": before,
                "after": peak_rss_mb(),
                "track_s": tracked_at - began,
                "feed_s": fed_at - tracked_at,
            }
        )
    )


def run(sizes: list[int]) -> str:
    rows = []
    worst = 0.0
    for count in sizes:
        r = run_worker(Path(__file__), str(count), timeout=280)
        growth = r["after"] - r["before"]
        per_million = growth / (count / 1_000_000)
        worst = max(worst, per_million)
        rows.append(
            [
                f"{count:,}",
                f"{r['before']:.1f}",
                f"{r['after']:.1f}",
                f"{growth:.1f}",
                f"{per_million:.1f}",
                f"{r['track_s']:.1f}",
                f"{count / r['feed_s']:,.0f}",
            ]
        )
    verdict = "met" if worst <= TARGET_MB_PER_MILLION else "MISSED"
    return "\n".join(
        [
            "## DeliveryTracker memory",
            "",
            f"Receipts of {CHUNK} numbers (one msgid each), then one final report per "
            "recipient; each size in a fresh process (peak RSS from getrusage).",
            "",
            table(
                [
                    "recipients",
                    "peak RSS before MB",
                    "peak RSS after MB",
                    "growth MB",
                    "MB per million",
                    "track s",
                    "reports fed/s",
                ],
                rows,
            ),
            "",
            f"Target <= {TARGET_MB_PER_MILLION:.0f} MB per million recipients: **{verdict}** "
            f"(worst {worst:.1f}).",
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        worker(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,10000000")
    args = parser.parse_args()
    print(run([int(s) for s in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
