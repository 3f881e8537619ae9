"""The pure request planner: sizes, re-balancing, rejections, determinism."""

from __future__ import annotations

import pytest
from helpers import numbers
from hypothesis import given, settings
from hypothesis import strategies as st

from aisix_async import ValidationError
from aisix_async._core.chunking import (
    BatchPlanner,
    OncePlanner,
    ParamPlanner,
    PlannedChunk,
    RejectedItem,
    plan,
)
from aisix_async.validation import SEPARATOR


def chunks_of(items: list[object]) -> list[PlannedChunk]:
    return [item for item in items if isinstance(item, PlannedChunk)]


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(0, []), (1, [1]), (2, [2]), (999, [999]), (1000, [1000]), (1001, [1000, 1])],
)
def test_once_boundaries(count: int, sizes: list[int]) -> None:
    items = list(plan(OncePlanner("hello"), numbers(count)))
    assert [c.size for c in chunks_of(items)] == sizes
    assert all(c.action == "sendOnce" and c.contents == ("hello",) for c in chunks_of(items))
    assert [c.index for c in chunks_of(items)] == list(range(len(sizes)))


@pytest.mark.parametrize(
    ("count", "shape"),
    [
        (1, [("sendOnce", 1)]),
        (2, [("sendBatch", 2)]),
        (100, [("sendBatch", 100)]),
        (101, [("sendBatch", 99), ("sendBatch", 2)]),
        (201, [("sendBatch", 100), ("sendBatch", 99), ("sendBatch", 2)]),
        (202, [("sendBatch", 100), ("sendBatch", 100), ("sendBatch", 2)]),
    ],
)
def test_batch_boundaries(count: int, shape: list[tuple[str, int]]) -> None:
    pairs = [(m, f"text {i}") for i, m in enumerate(numbers(count))]
    chunks = chunks_of(list(plan(BatchPlanner(), pairs)))
    assert [(c.action, c.size) for c in chunks] == shape
    flat = [(m, t) for c in chunks for m, t in zip(c.mobiles, c.texts(), strict=True)]
    assert flat == pairs


@pytest.mark.parametrize(
    ("count", "shape"),
    [
        (1, [("sendOnce", 1)]),
        (2, [("sendParam", 2)]),
        (100, [("sendParam", 100)]),
        (101, [("sendParam", 99), ("sendParam", 2)]),
        (201, [("sendParam", 100), ("sendParam", 99), ("sendParam", 2)]),
    ],
)
def test_param_boundaries(count: int, shape: list[tuple[str, int]]) -> None:
    rows = [(m, [f"n{i}", "x"]) for i, m in enumerate(numbers(count))]
    chunks = chunks_of(list(plan(ParamPlanner("Hi {p1}, {p2}!"), rows)))
    assert [(c.action, c.size) for c in chunks] == shape
    texts = [t for c in chunks for t in c.texts()]
    assert texts == [f"Hi n{i}, x!" for i in range(count)]


def test_lone_param_row_is_rendered_for_send_once() -> None:
    (chunk,) = plan(ParamPlanner("Hi {p1}"), [("13800000000", ["Ann"])])
    assert isinstance(chunk, PlannedChunk)
    assert chunk.action == "sendOnce"
    assert ("c", "Hi Ann") in chunk.fields(cgid=None, csid=None, at=None)


def test_chunk_size_two_sends_a_lone_remainder_by_send_once() -> None:
    pairs = [(m, "t") for m in numbers(5)]
    chunks = chunks_of(list(plan(BatchPlanner(2), pairs)))
    assert [(c.action, c.size) for c in chunks] == [
        ("sendBatch", 2),
        ("sendBatch", 2),
        ("sendOnce", 1),
    ]


def test_invalid_items_become_their_own_rejections() -> None:
    items = [
        ("13800000000", "ok"),
        ("bad number", "ok"),
        ("13800000001", f"a{SEPARATOR}b"),
        "not a pair",
        ("13800000002", "ok"),
    ]
    planned = list(plan(BatchPlanner(), items))
    rejected = [p for p in planned if isinstance(p, RejectedItem)]
    assert [r.position for r in rejected] == [1, 2, 3]
    assert all(isinstance(r.error, ValidationError) for r in rejected)
    assert "separator" in str(rejected[1].error)
    (chunk,) = chunks_of(planned)
    assert chunk.positions == (0, 4)
    assert sorted(p.index for p in planned) == list(range(len(planned)))


KEY_LIKE = "87B01469201D6557C2685137EB3B5DEC"


def test_a_rejected_item_shows_what_it_was_and_never_a_key() -> None:
    # Its outcome showed mobiles=('',): nothing said which item was wrong.
    items: list[object] = [
        "13800000000",
        18100002707,
        None,
        b"18100002707",
        KEY_LIKE,
        [f"{KEY_LIKE}!", "hi"],
        list(range(100)),
        {"key": KEY_LIKE, "n": 1},
    ]
    rejected = [p for p in plan(OncePlanner("hi"), items) if isinstance(p, RejectedItem)]
    shown = [r.mobile for r in rejected]
    assert shown[:3] == ["18100002707", "None", "b'18100002707'"]
    assert shown[3] == "<32 hex characters, not shown>"
    assert shown[4] == "<32 hex characters, not shown>!"
    # A long repr is cut, after its keys are hidden (no part of one is left showing).
    assert shown[5] == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1..."
    assert shown[6] == "{'key': '<32 hex characters, not shown>'..."
    assert str(rejected[0].error) == "mobile number 18100002707 must be a string, got int"
    pairs: list[object] = [(18100002707, "hi"), (KEY_LIKE, "hi"), ({"m": 1}, "hi"), ("1", 2, 3)]
    rejected = [p for p in plan(BatchPlanner(), pairs) if isinstance(p, RejectedItem)]
    assert [r.mobile for r in rejected] == [
        "18100002707",
        "<32 hex characters, not shown>",
        "{'m': 1}",
        "('1', 2, 3)",
    ]
    assert not any("87B0" in str(r.error) for r in rejected)


def test_invalid_content_template_and_sizes_are_refused() -> None:
    with pytest.raises(ValidationError):
        OncePlanner("")
    with pytest.raises(ValidationError):
        OncePlanner("x", 1001)
    with pytest.raises(ValidationError):
        BatchPlanner(1)
    with pytest.raises(ValidationError):
        ParamPlanner("no parameters")
    with pytest.raises(ValidationError):
        ParamPlanner("{p1}", 101)


def test_fields_carry_options() -> None:
    (chunk,) = plan(BatchPlanner(), [("13800000000", "a"), ("13800000001", "b")])
    assert isinstance(chunk, PlannedChunk)
    fields = dict(chunk.fields(cgid=80, csid=101, at="20300101000000"))
    assert fields == {
        "cgid": "80",
        "csid": "101",
        "t": "20300101000000",
        "c": f"a{SEPARATOR}b",
        "m": "13800000000,13800000001",
    }


_item = st.one_of(
    st.integers(0, 10**6).map(lambda n: f"139{n:08d}"),
    st.sampled_from(["", "12", "abc", "1380000000,1"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_item, max_size=260), st.integers(1, 1000))
def test_once_plan_covers_every_item_once(items: list[str], size: int) -> None:
    planned = list(plan(OncePlanner("x", size), items))
    positions = sorted(pos for p in planned for pos in _positions(p))
    assert positions == list(range(len(items)))
    for chunk in chunks_of(planned):
        assert 1 <= chunk.size <= size
    assert planned == list(plan(OncePlanner("x", size), items))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 420), st.integers(2, 100), st.sets(st.integers(0, 419), max_size=20))
def test_multi_plan_never_holds_one_and_is_deterministic(
    count: int, size: int, bad: set[int]
) -> None:
    pairs = [(("x" if i in bad else m), f"t{i}") for i, m in enumerate(numbers(count))]
    planned = list(plan(BatchPlanner(size), pairs))
    positions = sorted(pos for p in planned for pos in _positions(p))
    assert positions == list(range(count))
    for chunk in chunks_of(planned):
        if chunk.action == "sendBatch":
            assert 2 <= chunk.size <= size
        else:
            assert chunk.size == 1
    # Only a single valid pair, or a remainder that cannot be re-balanced (size 2), goes alone.
    lone = [c for c in chunks_of(planned) if c.action == "sendOnce"]
    valid = count - len([i for i in bad if i < count])
    assert len(lone) <= 1
    if lone:
        assert valid == 1 or (size == 2 and valid % 2 == 1)
    assert planned == list(plan(BatchPlanner(size), pairs))


def _positions(item: PlannedChunk | RejectedItem) -> tuple[int, ...]:
    return item.positions if isinstance(item, PlannedChunk) else (item.position,)


MOBILE_LIKE = st.one_of(
    st.from_regex(r"\+?[0-9]{3,20}", fullmatch=True),
    st.sampled_from(["12", "181,0000", "", "+", "18100002707 ", "１８１００００２７０７"]),
    st.integers(),
)


@settings(max_examples=150)
@given(st.lists(MOBILE_LIKE, max_size=60), st.integers(1, 7), st.integers(1, 25))
def test_reading_in_slices_plans_exactly_as_item_by_item(
    items: list[object], size: int, slice_size: int
) -> None:
    one_by_one = OncePlanner("hi", size)
    expected = [p for item in items for p in one_by_one.feed(item)] + one_by_one.finish()
    sliced = OncePlanner("hi", size)
    got = [
        p
        for i in range(0, len(items), slice_size)
        for p in sliced.feed_many(items[i : i + slice_size])
    ]
    assert got + sliced.finish() == expected


def test_a_campaigns_chunks_never_hold_a_number_twice() -> None:
    # A campaign's journal names a recipient by (chunk, number): a number twice in one
    # chunk had room for one delivery report, the other pending for ever (a user's trial).
    once = OncePlanner("hi", distinct=True)
    mobiles = ["13800000001", "13800000002", "13800000001", "13800000003", "13800000003"]
    chunks = chunks_of(list(plan(once, mobiles)))
    assert [c.mobiles for c in chunks] == [
        ("13800000001", "13800000002"),
        ("13800000001", "13800000003"),
        ("13800000003",),
    ]
    assert [p for c in chunks for p in c.positions] == list(range(5))
    # The same plan when read in slices (the fast path), and without the rule, one chunk.
    sliced = OncePlanner("hi", distinct=True)
    again = chunks_of([*sliced.feed_many(list(mobiles)), *sliced.finish()])
    assert [c.mobiles for c in again] == [c.mobiles for c in chunks]
    assert len(chunks_of(list(plan(OncePlanner("hi"), mobiles)))) == 1

    pairs = [(m, f"text {i}") for i, m in enumerate(numbers(5))]
    pairs.insert(3, (pairs[1][0], "again"))  # the second number again, fourth
    batch = chunks_of(list(plan(BatchPlanner(distinct=True), pairs)))
    assert [(c.action, c.size) for c in batch] == [("sendBatch", 3), ("sendBatch", 3)]
    assert all(len(set(c.mobiles)) == c.size for c in batch)
    # 100 + 1 would become 99 + 2, but not when those two are one number.
    rows = [(m, ["x"]) for m in numbers(100)] + [(numbers(100)[-1], ["y"])]
    param = chunks_of(list(plan(ParamPlanner("Hi {p1}", distinct=True), rows)))
    assert [(c.action, c.size) for c in param] == [("sendParam", 100), ("sendOnce", 1)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([f"1380000000{i}" for i in range(6)]), max_size=60),
    st.integers(1, 7),
    st.integers(1, 12),
)
def test_distinct_chunks_cover_every_item_once_however_read(
    mobiles: list[str], size: int, slice_size: int
) -> None:
    one_by_one = chunks_of(list(plan(OncePlanner("hi", size, distinct=True), mobiles)))
    sliced_planner = OncePlanner("hi", size, distinct=True)
    sliced: list[object] = []
    for start in range(0, len(mobiles), slice_size):
        sliced.extend(sliced_planner.feed_many(mobiles[start : start + slice_size]))
    sliced.extend(sliced_planner.finish())
    assert [c.positions for c in chunks_of(sliced)] == [c.positions for c in one_by_one]
    assert [p for c in one_by_one for p in c.positions] == list(range(len(mobiles)))
    assert all(len(set(c.mobiles)) == c.size <= size for c in one_by_one)
    pairs = [(m, "t") for m in mobiles]
    for batch in chunks_of(list(plan(BatchPlanner(max(2, size), distinct=True), pairs))):
        assert len(set(batch.mobiles)) == batch.size
