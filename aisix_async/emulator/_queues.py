"""The per-account queues behind getSendState and getReply.

The project reads both actions as queues (PROTOCOL-NOTES): each call returns records not
fetched before, and a fetched record is gone. A delivery report becomes visible only when
it is due (`report_delay` after acceptance, or after a scheduled send's time), so reports
sit in a heap keyed by due time; since almost all are pushed in due order, a push costs one
comparison. Replies are visible at once, so a deque is enough.

Report codes come from a weighted mix drawn with the state's seeded random generator, so
a run with the same seed and the same requests gives the same reports.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import deque

__all__ = ["REPORT_RESULTS", "ReplyQueue", "ReportMix", "ReportQueue", "report_result"]

#: getSendState `result`: 2 delivered, 0 state unknown, 1 failed (every other code).
REPORT_RESULTS: dict[str, str] = {
    "DELIVRD": "2",
    "UNKNOWN": "0",
    "ACCEPTD": "0",
    "ERRBUSY": "0",
}


def report_result(code: str) -> str:
    """The `result` attribute for an operator `return` code."""
    return REPORT_RESULTS.get(code, "1")


class ReportMix:
    """A weighted choice of operator codes, drawn with one `random()` and a bisect."""

    __slots__ = ("_codes", "_cumulative")

    def __init__(self, mix: tuple[tuple[str, float], ...]) -> None:
        self._codes = [code for code, _ in mix]
        self._cumulative = list(itertools.accumulate(weight for _, weight in mix))

    def pick(self, rng: random.Random) -> str:
        """One code, with probability proportional to its weight."""
        point = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, point)
        return self._codes[min(index, len(self._codes) - 1)]


class ReportQueue:
    """Pending delivery reports of one account, handed out once each in due-time order."""

    __slots__ = ("_heap", "_next_id", "_seq")

    def __init__(self) -> None:
        # (due, seq, msgid, mobile, code): seq keeps equal due times in acceptance order.
        self._heap: list[tuple[float, int, str, str, str]] = []
        self._seq = 0
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, msgid: str, mobile: str, code: str) -> None:
        """Queue the report of (msgid, mobile), visible from `due` on."""
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, msgid, mobile, code))

    def due_count(self, now: float) -> int:
        """How many reports a call at `now` could return (counts the whole heap: not hot)."""
        return sum(1 for entry in self._heap if entry[0] <= now)

    def peek(self) -> list[tuple[str, str, str]]:
        """Every pending report as (msgid, mobile, code), in due order; nothing removed."""
        return [(msgid, mobile, code) for _, _, msgid, mobile, code in sorted(self._heap)]

    def pop_due(self, now: float, limit: int) -> list[tuple[str, str, str, str]]:
        """Remove and return up to `limit` due reports as (id, msgid, mobile, code)."""
        out: list[tuple[str, str, str, str]] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= now:
            _, _, msgid, mobile, code = heapq.heappop(heap)
            out.append((str(self._next_id), msgid, mobile, code))
            self._next_id += 1
        return out


class ReplyQueue:
    """Replies (mobile-originated messages) of one account, handed out once each."""

    __slots__ = ("_items", "_next_id")

    def __init__(self) -> None:
        self._items: deque[tuple[int, str, str]] = deque()
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._items)

    def push(self, time_ms: int, mobile: str, content: str) -> None:
        """Queue a reply received at `time_ms` (milliseconds since the epoch, UTC)."""
        self._items.append((time_ms, mobile, content))

    def pop(self, limit: int) -> list[tuple[str, str, str, str]]:
        """Remove and return up to `limit` replies as (id, time_ms, mobile, content)."""
        out: list[tuple[str, str, str, str]] = []
        while self._items and len(out) < limit:
            time_ms, mobile, content = self._items.popleft()
            out.append((str(self._next_id), str(time_ms), mobile, content))
            self._next_id += 1
        return out
