"""Lazy request plans: how a recipient list becomes requests the gateway accepts (pure).

A plan is built one input item at a time (``feed``), so a list of ten million numbers is
never held whole: at most two chunks' worth of items wait here. Each item either joins a
chunk or, if it is invalid, becomes a :class:`RejectedItem` of its own, so one bad number
never sinks the valid ones that share its chunk.

Shapes the gateway refuses are never planned (PROTOCOL-NOTES, "Shapes the gateway
rejects"): sendOnce carries 1 to 1000 numbers; sendBatch and sendParam carry 2 to 100
messages. A batch list whose last chunk would hold one message is re-balanced (a full
chunk is held back until the next one has two messages; at the end 100 + 1 becomes
99 + 2); a lone pair or row goes by sendOnce, a sendParam row rendered locally.

Chunk numbers and boundaries depend only on the input and ``chunk_size``, never on timing,
so a resumed campaign that re-reads the same input gets the same chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from .errors import ValidationError
from .validate import (
    MAX_BATCH,
    MAX_NUMBERS,
    MIN_BATCH,
    MOBILE_PATTERN,
    NUMBERING_PATTERNS,
    Numbering,
    check_content,
    check_joinable,
    check_mobile,
    check_pair,
    check_param_row,
    check_template,
    render_template,
    shown_item,
)
from .wire import Fields, batch_fields, once_fields, param_fields

__all__ = [
    "BatchPlanner",
    "OncePlanner",
    "ParamPlanner",
    "PlanItem",
    "PlannedChunk",
    "Planner",
    "RejectedItem",
    "check_chunk_size",
    "plan",
]


@attrs.frozen
class PlannedChunk:
    """One request to make: its place in the call, its recipients and what they receive.

    ``contents`` holds one text for sendOnce (every number receives it) and one text per
    number for sendBatch; sendParam keeps the ``template`` and one tuple of values per
    number in ``values``.
    """

    index: int
    action: str
    positions: tuple[int, ...]
    mobiles: tuple[str, ...]
    contents: tuple[str, ...] = ()
    values: tuple[tuple[str, ...], ...] = ()
    template: str | None = None

    @property
    def size(self) -> int:
        """How many recipients the request carries."""
        return len(self.mobiles)

    def texts(self) -> list[str]:
        """What each recipient receives (without the signature), in ``mobiles`` order."""
        if self.action == "sendOnce":
            return [self.contents[0]] * len(self.mobiles)
        if self.action == "sendBatch":
            return list(self.contents)
        assert self.template is not None
        return [render_template(self.template, row) for row in self.values]

    def fields(self, *, cgid: int | None, csid: int | None, at: str | None) -> Fields:
        """The request's form fields (credentials are added when it is sent)."""
        if self.action == "sendOnce":
            return once_fields(self.mobiles, self.contents[0], cgid=cgid, csid=csid, at=at)
        if self.action == "sendBatch":
            pairs = list(zip(self.mobiles, self.contents, strict=True))
            return batch_fields(pairs, cgid=cgid, csid=csid, at=at)
        assert self.template is not None
        rows = list(zip(self.mobiles, self.values, strict=True))
        return param_fields(self.template, rows, cgid=cgid, csid=csid, at=at)


@attrs.frozen
class RejectedItem:
    """An input item refused before sending; it gets a chunk number and an outcome of its own."""

    index: int
    position: int
    mobile: str
    # Exceptions compare by identity; two plans of the same input are equal without it.
    error: ValidationError = attrs.field(eq=False)


PlanItem = PlannedChunk | RejectedItem

_MOBILE_MATCH = MOBILE_PATTERN.fullmatch
# A run of valid numbers joined by commas, checked in one C-level match.
_MOBILES_MATCH = re.compile(rf"(?:{MOBILE_PATTERN.pattern},)*{MOBILE_PATTERN.pattern}").fullmatch


def _never(_text: str) -> None:
    return None


def _fast_matches(numbering: Numbering) -> tuple[Callable[[str], object], Callable[[str], object]]:
    """The one-number and comma-joined matches of a policy that is a regex ("e164" is not:
    its numbers are normalised, so every one goes the general way)."""
    pattern = NUMBERING_PATTERNS.get(numbering)
    if pattern is None:
        return _never, _never
    if pattern is MOBILE_PATTERN:
        return _MOBILE_MATCH, _MOBILES_MATCH
    joined = re.compile(rf"(?:{pattern.pattern},)*{pattern.pattern}")
    return pattern.fullmatch, joined.fullmatch


# Returned (never mutated) when an item completes nothing.
_NOTHING: list[PlanItem] = []


def check_chunk_size(chunk_size: object, *, action: str) -> int:
    """The chunk size for ``action``, refused when the gateway could not take it."""
    low, high = (1, MAX_NUMBERS) if action == "sendOnce" else (MIN_BATCH, MAX_BATCH)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValidationError(f"chunk_size must be an integer, got {chunk_size!r}")
    if not low <= chunk_size <= high:
        raise ValidationError(
            f"chunk_size for {action} runs from {low} to {high}, got {chunk_size}"
        )
    return chunk_size


class Planner:
    """Turns input items into plan items, one ``feed`` at a time; ``finish`` flushes the rest."""

    #: Items per chunk, set by each kind of planner.
    _size: int

    def __init__(self, numbering: Numbering = "lenient", *, distinct: bool = False) -> None:
        self._next_index = 0
        self._position = 0
        #: The client's numbering policy (see ``_validate.NUMBERING``).
        self._numbering = numbering
        #: No number twice in one chunk: a number met again closes the chunk first. A
        #: campaign's journal names a recipient by (chunk, number), so a number listed
        #: twice in one chunk had room for one delivery report: the other stayed pending
        #: for ever, and the export gave both lines one report's code (a user's trial).
        self._distinct = distinct

    @property
    def chunk_size(self) -> int:
        """Items per chunk: also how many items to read ahead at most."""
        return self._size

    def _index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def feed(self, item: object) -> list[PlanItem]:
        """Take the next input item; return the plan items it completes (often none)."""
        position = self._position
        self._position += 1
        try:
            entry = self._check(item, position)
        except ValidationError as exc:
            return [RejectedItem(self._index(), position, shown_item(item), exc)]
        return self._add(position, entry)

    def feed_many(self, items: list[object]) -> list[PlanItem]:
        """Take several input items at once; the same plan items as feeding them one by one."""
        return [planned for item in items for planned in self.feed(item)]

    def finish(self) -> list[PlanItem]:
        """The chunks still held once the input has ended."""
        raise NotImplementedError

    def _check(self, item: object, position: int) -> tuple[str, tuple[str, ...]]:
        raise NotImplementedError

    def _add(self, position: int, entry: tuple[str, tuple[str, ...]]) -> list[PlanItem]:
        raise NotImplementedError


class OncePlanner(Planner):
    """Numbers for one content: sendOnce chunks of ``chunk_size`` numbers."""

    def __init__(
        self,
        content: str,
        chunk_size: int = MAX_NUMBERS,
        *,
        numbering: Numbering = "lenient",
        distinct: bool = False,
    ) -> None:
        super().__init__(numbering, distinct=distinct)
        self._match, self._match_joined = _fast_matches(numbering)
        self._content = check_content(content, plain=True)
        self._size = check_chunk_size(chunk_size, action="sendOnce")
        self._positions: list[int] = []
        self._mobiles: list[str] = []
        #: The current chunk's numbers, when they must be distinct.
        self._seen: set[str] = set()

    def feed(self, item: object) -> list[PlanItem]:
        # The hot path of a ten-million-number send: one regex match and two appends per
        # valid number; anything else goes the general way (and is rejected there).
        if self._distinct:
            return super().feed(item)
        if type(item) is str and self._match(item):
            self._positions.append(self._position)
            self._position += 1
            self._mobiles.append(item)
            return [self._flush()] if len(self._mobiles) >= self._size else _NOTHING
        return super().feed(item)

    def feed_many(self, items: list[object]) -> list[PlanItem]:
        # The hot path for lists and generators: a slice of numbers is checked with one
        # regex match over the joined text instead of one Python call per number. The
        # comma count proves no item held a comma of its own (it would pass as two).
        try:
            joined = ",".join(items)  # type: ignore[arg-type]
        except TypeError:
            joined = ""
        if not (joined.count(",") == len(items) - 1 and self._match_joined(joined)):
            return super().feed_many(items)
        mobiles: list[str] = items  # type: ignore[assignment]
        planned: list[PlanItem] = []
        start = 0
        while start < len(mobiles):
            take = mobiles[start : start + self._size - len(self._mobiles)]
            if self._distinct:
                fresh = set(take)
                if len(fresh) != len(take) or not self._seen.isdisjoint(fresh):
                    # A number met again in this slice: one at a time (see _add).
                    for mobile in take:
                        planned.extend(super().feed(mobile))
                    start += len(take)
                    continue
                self._seen |= fresh
            self._mobiles.extend(take)
            self._positions.extend(range(self._position, self._position + len(take)))
            self._position += len(take)
            start += len(take)
            if len(self._mobiles) >= self._size:
                planned.append(self._flush())
        return planned

    def _check(self, item: object, position: int) -> tuple[str, tuple[str, ...]]:
        return check_mobile(item, self._numbering), ()

    def _add(self, position: int, entry: tuple[str, tuple[str, ...]]) -> list[PlanItem]:
        mobile = entry[0]
        out: list[PlanItem] = []
        if self._distinct:
            if mobile in self._seen:
                out.append(self._flush())
            self._seen.add(mobile)
        self._positions.append(position)
        self._mobiles.append(mobile)
        if len(self._mobiles) >= self._size:
            out.append(self._flush())
        return out

    def _flush(self) -> PlannedChunk:
        chunk = PlannedChunk(
            self._index(),
            "sendOnce",
            tuple(self._positions),
            tuple(self._mobiles),
            contents=(self._content,),
        )
        self._positions, self._mobiles = [], []
        self._seen = set()
        return chunk

    def finish(self) -> list[PlanItem]:
        return [self._flush()] if self._mobiles else []


_Entry = tuple[int, str, tuple[str, ...]]


class _MultiPlanner(Planner):
    """sendBatch/sendParam: chunks of 2..chunk_size messages; re-balanced so none holds one."""

    action = ""

    def __init__(
        self, chunk_size: int, numbering: Numbering = "lenient", *, distinct: bool = False
    ) -> None:
        super().__init__(numbering, distinct=distinct)
        self._size = check_chunk_size(chunk_size, action=self.action)
        # A full chunk is held back until the next one has two messages, so the end of the
        # input can still move one message into the last chunk instead of leaving it alone.
        self._held: list[_Entry] | None = None
        self._current: list[_Entry] = []

    def _add(self, position: int, entry: tuple[str, tuple[str, ...]]) -> list[PlanItem]:
        out: list[PlanItem] = []
        if self._distinct and any(queued[1] == entry[0] for queued in self._current):
            # The current chunk closes before a number it holds comes again (see
            # Planner._distinct): the one held back goes first, then the current one,
            # alone by sendOnce if it holds one message.
            if self._held is not None:
                out.append(self._chunk(self._held))
                self._held = None
            if len(self._current) == 1:
                out.append(self._lone(self._current[0]))
            else:
                out.append(self._chunk(self._current))
            self._current = []
        self._current.append((position, *entry))
        if self._held is not None and len(self._current) >= MIN_BATCH:
            out.append(self._chunk(self._held))
            self._held = None
        if len(self._current) == self._size:
            self._held, self._current = self._current, []
        return out

    def finish(self) -> list[PlanItem]:
        held, current = self._held, self._current
        self._held, self._current = None, []
        out: list[PlanItem] = []
        # Unless the two would then hold one number twice (see Planner._distinct).
        movable = not (
            self._distinct and held is not None and current and held[-1][1] == current[0][1]
        )
        if held is not None and len(current) == 1 and len(held) > MIN_BATCH and movable:
            # 100 + 1 becomes 99 + 2.
            out.append(self._chunk(held[:-1]))
            out.append(self._chunk([held[-1], current[0]]))
            return out
        if held is not None:
            out.append(self._chunk(held))
        if len(current) == 1:
            out.append(self._lone(current[0]))
        elif current:
            out.append(self._chunk(current))
        return out

    def _chunk(self, entries: Sequence[_Entry]) -> PlannedChunk:
        raise NotImplementedError

    def _lone(self, entry: _Entry) -> PlannedChunk:
        raise NotImplementedError


class BatchPlanner(_MultiPlanner):
    """(mobile, content) pairs: sendBatch chunks; a lone pair goes by sendOnce."""

    action = "sendBatch"

    def __init__(
        self,
        chunk_size: int = MAX_BATCH,
        *,
        numbering: Numbering = "lenient",
        distinct: bool = False,
    ) -> None:
        super().__init__(chunk_size, numbering, distinct=distinct)

    def _check(self, item: object, position: int) -> tuple[str, tuple[str, ...]]:
        mobile, content = check_pair(item, position)
        checked = check_mobile(mobile, self._numbering)
        what = f"content #{position} (for {checked})"
        return checked, (check_joinable(check_content(content, what=what, plain=True), what),)

    def _chunk(self, entries: Sequence[_Entry]) -> PlannedChunk:
        return PlannedChunk(
            self._index(),
            "sendBatch",
            tuple(e[0] for e in entries),
            tuple(e[1] for e in entries),
            contents=tuple(e[2][0] for e in entries),
        )

    def _lone(self, entry: _Entry) -> PlannedChunk:
        position, mobile, (content,) = entry
        return PlannedChunk(self._index(), "sendOnce", (position,), (mobile,), contents=(content,))


class ParamPlanner(_MultiPlanner):
    """(mobile, [p1, ...]) rows for one template: sendParam chunks; a lone row is rendered here."""

    action = "sendParam"

    def __init__(
        self,
        template: str,
        chunk_size: int = MAX_BATCH,
        *,
        numbering: Numbering = "lenient",
        distinct: bool = False,
    ) -> None:
        self._template, self._count = check_template(template)
        super().__init__(chunk_size, numbering, distinct=distinct)

    @property
    def template(self) -> str:
        return self._template

    def _check(self, item: object, position: int) -> tuple[str, tuple[str, ...]]:
        mobile, values = check_param_row(
            self._template, self._count, item, position, self._numbering
        )
        return mobile, tuple(values)

    def _chunk(self, entries: Sequence[_Entry]) -> PlannedChunk:
        return PlannedChunk(
            self._index(),
            "sendParam",
            tuple(e[0] for e in entries),
            tuple(e[1] for e in entries),
            values=tuple(e[2] for e in entries),
            template=self._template,
        )

    def _lone(self, entry: _Entry) -> PlannedChunk:
        position, mobile, values = entry
        text = render_template(self._template, values)
        return PlannedChunk(self._index(), "sendOnce", (position,), (mobile,), contents=(text,))


def plan(planner: Planner, items: Iterable[object]) -> Iterator[PlanItem]:
    """The whole plan of a synchronous input, lazily."""
    for item in items:
        yield from planner.feed(item)
    yield from planner.finish()
