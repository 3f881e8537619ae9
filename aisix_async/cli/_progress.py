"""The live progress display of a send: a rich panel on a terminal, plain lines otherwise.

What an operator watching a campaign needs to see: how far it is, how fast it goes, and
whether the gateway is pushing back: the client's current concurrency limit and pace, the
-1 answers it has absorbed, and recipients whose fate is unknown. On a terminal this is
redrawn in place a few times a second; in a log file (CI, cron, ``nohup``) one line every
few seconds is more useful than a redraw, so that is what a non-terminal stderr gets.
Everything goes to stderr; stdout is reserved for results.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import attrs
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._output import Output

__all__ = ["Figures", "Snapshot", "format_line", "progress"]


@attrs.frozen
class Snapshot:
    """Where a send stands, read from its stream's live statistics."""

    done: int
    total: int | None
    accepted: int
    #: Refused recipients; those never sent are in ``not_sent``, as in the summary.
    failed: int
    unknown: int
    not_sent: int = 0
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    limit: int | None = None
    pace: float | None = None
    in_flight: int = 0
    elapsed: float = 0.0


class _Rate:
    """Recipients per second over the last few seconds (the overall mean hides a stall)."""

    def __init__(self, window: float = 3.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, done: int) -> float:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        first_at, first_done = self._samples[0]
        span = now - first_at
        return (done - first_done) / span if span > 0 else 0.0


def _figures(snap: Snapshot, rate: float) -> str:
    parts = [
        f"{rate:,.0f}/s",
        f"accepted {snap.accepted:,}",
        f"failed {snap.failed:,}",
        f"unknown {snap.unknown:,}",
    ]
    if snap.not_sent:
        parts.append(f"not sent {snap.not_sent:,}")
    parts += [f"requests {snap.requests:,}", f"-1 answers {snap.rate_limited:,}"]
    if snap.limit is not None:
        parts.append(f"concurrency limit {snap.limit}")
        parts.append(f"queued or in flight {snap.in_flight}")
    if snap.pace is not None:
        parts.append(f"pace {snap.pace:,.1f} req/s")
    parts.append(f"{snap.elapsed:,.1f} s")
    return "  ".join(parts)


Figures = Callable[[Snapshot, float], str]


def format_line(title: str, snap: Snapshot, rate: float, figures: Figures = _figures) -> str:
    """One plain progress line."""
    of = f"/{snap.total:,}" if snap.total is not None else ""
    return f"{title}: {snap.done:,}{of} done  {figures(snap, rate)}"


def _panel(title: str, snap: Snapshot, rate: float, figures: Figures) -> Table:
    of = f" of {snap.total:,}" if snap.total is not None else ""
    head = Text.assemble((title, "bold"), f"  {snap.done:,}{of}")
    bar = ProgressBar(total=float(snap.total) if snap.total else None, completed=snap.done)
    # One row each: a ProgressBar ends without a newline, so in a Group the figures were
    # drawn on the bar's line and cropped away. They wrap rather than crop when narrow.
    panel = Table.grid()
    panel.add_column(overflow="fold")
    panel.add_row(head)
    panel.add_row(bar)
    panel.add_row(Text(figures(snap, rate), style="dim"))
    return panel


@asynccontextmanager
async def progress(
    out: Output,
    title: str,
    read: Callable[[], Snapshot | None],
    *,
    plain_every: float = 5.0,
    figures: Figures = _figures,
) -> AsyncIterator[None]:
    """Show ``read()`` while the block runs; a last line (or frame) when it ends.

    ``read()`` returns None while there is nothing to show (the send has not started, or
    could not: then no line at all). ``figures`` renders the detail line (the default
    suits a send).
    """
    meter = _Rate()
    if out.quiet:
        yield
        return
    if out.interactive:
        with Live(console=out.err, refresh_per_second=8, transient=False) as live:

            async def redraw() -> None:
                while True:
                    snap = read()
                    if snap is not None:
                        live.update(_panel(title, snap, meter.update(snap.done), figures))
                    await anyio.sleep(0.2)

            async with anyio.create_task_group() as group:
                group.start_soon(redraw)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
                    snap = read()
                    if snap is not None:
                        live.update(_panel(title, snap, meter.update(snap.done), figures))
        return

    async def lines() -> None:
        while True:
            await anyio.sleep(plain_every)
            snap = read()
            if snap is not None:
                out.note(format_line(title, snap, meter.update(snap.done), figures))

    meter.update(0)
    async with anyio.create_task_group() as group:
        group.start_soon(lines)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
            # The last figures, even when the send was cut short.
            snap = read()
            if snap is not None:
                out.note(format_line(title, snap, meter.update(snap.done), figures))
