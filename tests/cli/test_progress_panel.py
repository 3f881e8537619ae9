"""The live panel a terminal shows: rendered by rich itself, at fixed widths."""

from __future__ import annotations

import io

import pytest

from aisix_async.cli._progress import Snapshot, _figures, _panel


@pytest.mark.parametrize("width", [60, 100, 200])
def test_the_panel_shows_the_figures_line_whole(width: int) -> None:
    from rich.console import Console

    snap = Snapshot(
        done=5_000,
        total=10_000,
        accepted=4_990,
        failed=7,
        unknown=3,
        requests=12,
        rate_limited=10,
        retries=10,
        limit=4,
        pace=47.8,
        in_flight=2,
        elapsed=12.5,
    )
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True)
    console.print(_panel("sending (once)", snap, 250.0, _figures))
    text = " ".join(console.export_text().split())
    assert "sending (once) 5,000 of 10,000" in text
    for figure in (
        "250/s",
        "accepted 4,990",
        "failed 7",
        "unknown 3",
        "requests 12",
        "-1 answers 10",
        "concurrency limit 4",
        "pace 47.8 req/s",
        "12.5 s",
    ):
        assert figure in text, (figure, text)


def test_the_last_line_of_a_stopped_send_adds_up_to_the_whole() -> None:
    from aisix_async import BulkStats
    from aisix_async.cli.send.report import snapshot

    # A send stopped after its first chunk: the stream counted 1,000 not sent among its
    # failed, and 49,013 items of the input were never read. "1,001/50,014 done" beside
    # "not sent 50,013" added up to more than the whole (a user's trial).
    stats = BulkStats(
        done=1_001, accepted=0, failed=1_001, unknown=0, skipped=0, requests=1,
        rate_limited=0, retries=0, limit=1, pace=None, in_flight=0, elapsed=1.0,
    )  # fmt: skip
    snap = snapshot(stats, 50_014, not_sent=1_000, unread=49_013)
    assert (snap.done, snap.total) == (50_014, 50_014)
    assert snap.accepted + snap.failed + snap.unknown + snap.not_sent == snap.done
