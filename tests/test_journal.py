"""The campaign journal on its own: resume rules, foreign files, locks, a full disk."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from hypothesis import given
from hypothesis import strategies as st

from aisix_async import CampaignError, DeliveryReport, MalformedRecord, ReportResult
from aisix_async._campaign import sql
from aisix_async._campaign.encoding import decode_positions, encode_positions
from aisix_async._campaign.file import APPLICATION_ID
from aisix_async._campaign.journal import ChunkResult, ChunkState, Journal, Verdict
from aisix_async._campaign.ledger import _items_hash, summarize
from aisix_async._core.chunking import PlannedChunk

pytestmark = pytest.mark.anyio

MOBILES = tuple(f"1380000{i:04d}" for i in range(10))
MANY = tuple(f"139{i:08d}" for i in range(1000))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _begin(journal: Journal, index: int, *, resend_unknown: bool = False) -> Verdict:
    positions = tuple(range(index * 5, index * 5 + 5))
    mobiles = MOBILES[index * 5 : index * 5 + 5]
    return await journal.begin_chunk(
        index, "sendOnce", positions, mobiles, f"h{index}", resend_unknown=resend_unknown
    )


async def _settle(journal: Journal, index: int, result: ChunkResult) -> None:
    positions = tuple(range(index * 5, index * 5 + 5))
    await journal.settle_chunk(
        index, "sendOnce", positions, MOBILES[index * 5 : index * 5 + 5], result
    )


@given(st.lists(st.integers(0, 10_000), unique=True).map(sorted))
def test_positions_round_trip(positions: list[int]) -> None:
    assert decode_positions(encode_positions(positions)) == tuple(positions)


def test_positions_are_ranges() -> None:
    assert encode_positions(range(1000, 2000)) == "1000-1999"  # type: ignore[arg-type]
    assert encode_positions([3, 5, 6, 7, 9]) == "3,5-7,9"


@pytest.mark.parametrize(
    "chunk",
    [
        PlannedChunk(0, "sendOnce", tuple(range(1000)), MANY, ("hi",)),
        PlannedChunk(1, "sendBatch", (0, 1), ("13900000000", "13900000001"), ("é" * 1500, "x")),
        PlannedChunk(
            2, "sendParam", (0, 1), ("13900000000", "13900000001"),
            values=(("a" * 3000, "b"), ("c", "d")), template="{1} {2}",
        ),
    ],
)  # fmt: skip
def test_a_chunk_hashes_as_journals_written_before_recorded_it(chunk: PlannedChunk) -> None:
    # Resuming compares this hash with the one an earlier run (maybe an earlier version)
    # stored: however it is fed to SHA-256, it must stay the digest of the same bytes.
    data = f"{chunk.action}\x00{chunk.template or ''}\x00".encode()
    data += "\x00".join(chunk.mobiles).encode() + b"\x01"
    data += "\x00".join(chunk.contents).encode()
    if chunk.values:
        data += b"\x01" + "\x00".join("\x1f".join(row) for row in chunk.values).encode()
    assert _items_hash(chunk) == hashlib.sha256(data).hexdigest()[:32]


async def test_accepted_is_skipped_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {"action": "sendOnce"})
    assert await _begin(journal, 0) is Verdict.SEND
    receipt = {"msgid": "123456789012345678", "total": "5"}
    await _settle(
        journal,
        0,
        ChunkResult(
            ChunkState.ACCEPTED, attempts=2, units=5, cost=Decimal("0.5"), receipts=(receipt,)
        ),
    )
    await journal.aclose()

    journal = await Journal.open(path)
    try:
        assert journal.rows[0].state is ChunkState.ACCEPTED
        assert journal.rows[0].units == 5
        assert journal.rows[0].cost == Decimal("0.5")
        assert await _begin(journal, 0) is Verdict.SKIP_ACCEPTED
        # Accepted chunks keep no copy of their numbers.
        (mobiles,) = journal._conn.execute("SELECT mobiles FROM chunks WHERE idx=0").fetchone()
        assert mobiles is None
    finally:
        await journal.aclose()


async def test_in_flight_at_a_crash_becomes_unknown_and_is_not_resent(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {})
    assert await _begin(journal, 0) is Verdict.SEND
    await journal.mark_on_wire(0)
    await journal.aclose()  # as if killed: the answer never got recorded

    journal = await Journal.open(path)
    try:
        # Whoever takes the lock next knows the sender died: its chunk's fate is unknown.
        assert journal.rows[0].state is ChunkState.UNKNOWN
        assert journal.rows[0].error_class == "Interrupted"
        # Known by position only: numbers are not copied before a request.
        assert journal.unknown == {}
        assert journal.unread == {0: (0, 1, 2, 3, 4)}
        # Re-reading the unchanged input names them, and still does not send them.
        assert await _begin(journal, 0) is Verdict.SKIP_UNKNOWN
        assert journal.unread == {}
        assert journal.unknown == dict(zip(range(5), MOBILES[:5], strict=True))
        # Asked again: still unknown, still not sent.
        assert await _begin(journal, 0) is Verdict.SKIP_UNKNOWN
    finally:
        await journal.aclose()
    journal = await Journal.open(path)
    try:
        # The names were recorded, not only remembered.
        assert journal.unread == {}
        assert journal.unknown == dict(zip(range(5), MOBILES[:5], strict=True))
        assert await _begin(journal, 0, resend_unknown=True) is Verdict.RESEND_UNKNOWN
        assert journal.unknown == {}
        assert journal.rows[0].state is ChunkState.PLANNED
    finally:
        await journal.aclose()


async def test_a_chunk_only_planned_at_a_crash_is_sent_again(tmp_path: Path) -> None:
    # Planned, but still waiting for the scheduler when the process died: the gateway
    # cannot have seen it, so it is sent in the next run, not listed as unknown.
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {})
    assert await _begin(journal, 0) is Verdict.SEND
    assert journal.rows[0].state is ChunkState.PLANNED
    # Chunk 1 went on the wire and the gateway answered -1 (it did nothing): planned again.
    assert await _begin(journal, 1) is Verdict.SEND
    await journal.mark_on_wire(1)
    await journal.mark_planned(1)
    await journal.aclose()

    journal = await Journal.open(path)
    try:
        # Chunk 0 left no trace (nothing is written before a chunk goes on the wire).
        assert 0 not in journal.rows
        assert journal.rows[1].state is ChunkState.PLANNED
        assert journal.unknown == {}
        assert await _begin(journal, 0) is Verdict.SEND
        assert await _begin(journal, 1) is Verdict.RETRY
        await journal.mark_on_wire(1)
        assert journal.rows[1].state is ChunkState.IN_FLIGHT
    finally:
        await journal.aclose()


async def test_failed_chunks_are_retried_only_when_harmless(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        for index in (0, 1):
            assert await _begin(journal, index) is Verdict.SEND
            await journal.mark_on_wire(index)
        await _settle(
            journal,
            0,
            ChunkResult(ChunkState.FAILED, error_class="RateLimitedError", retryable=True),
        )
        await _settle(
            journal,
            1,
            ChunkResult(ChunkState.FAILED, error_class="InvalidParameterError", retryable=False),
        )
        assert await _begin(journal, 0) is Verdict.RETRY
        assert await _begin(journal, 1) is Verdict.SKIP_FAILED
        (runs,) = journal._conn.execute("SELECT runs FROM chunks WHERE idx=0").fetchone()
        assert runs == 2
    finally:
        await journal.aclose()


async def test_a_changed_input_is_refused_naming_the_position(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        await _begin(journal, 0)
        await _settle(journal, 0, ChunkResult(ChunkState.FAILED, retryable=True))
        changed = (*MOBILES[:3], "13999999999", MOBILES[4])
        with pytest.raises(CampaignError, match=r"position 3 \('13800000003' before"):
            await journal.begin_chunk(
                0, "sendOnce", tuple(range(5)), changed, "other", resend_unknown=False
            )
        # The refusal wrote nothing: the chunk is still the retryable failure it was.
        assert await _begin(journal, 0) is Verdict.RETRY
    finally:
        await journal.aclose()


async def test_another_definition_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp1", {"content": "hello"})
    await journal.aclose()
    journal = await Journal.open(path)
    try:
        await journal.define("fp1", {"content": "hello"})
        with pytest.raises(CampaignError, match=r"another campaign.*content='hello'"):
            await journal.define("fp2", {"content": "bye"})
    finally:
        await journal.aclose()


async def test_input_size_change_is_refused(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        await journal.set_input_size(10)
        await journal.set_input_size(10)
        with pytest.raises(CampaignError, match=r"input now holds 11 items.*recorded 10"):
            await journal.set_input_size(11)
    finally:
        await journal.aclose()


async def test_a_journal_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"the folder .*nowhere does not exist"):
        await Journal.open(tmp_path / "nowhere" / "c.db")
    assert list(tmp_path.iterdir()) == []


async def test_a_text_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a journal\n")
    before = _digest(path)
    with pytest.raises(CampaignError, match="not an SQLite database"):
        await Journal.open(path)
    assert _digest(path) == before


async def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(CampaignError, match="another program"):
        await Journal.open(path)
    assert _digest(path) == before


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.aclose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(CampaignError, match="newer aisix_async"):
        await Journal.open(path)


async def test_a_damaged_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {})
    for index in (0, 1):
        await _begin(journal, index)
    await journal.aclose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    assert int.from_bytes(data[68:72], "big") == APPLICATION_ID
    page = int.from_bytes(data[16:18], "big")
    # Scribble over every page after the first: the header still says "ours".
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(CampaignError, match="damaged"):
        await Journal.open(path)
    assert _digest(path) == before


async def test_one_journal_one_opener(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = await Journal.open(path)
    try:
        with pytest.raises(CampaignError, match="in use by this process"):
            await Journal.open(path)
    finally:
        await first.aclose()
    second = await Journal.open(path)  # released on close
    await second.aclose()


async def test_a_full_disk_stops_writes_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {})
    assert await _begin(journal, 0) is Verdict.SEND
    await _settle(journal, 0, ChunkResult(ChunkState.ACCEPTED, units=5))
    # SQLite's own SQLITE_FULL: the file may not grow by one more page.
    (pages,) = journal._conn.execute("PRAGMA page_count").fetchone()
    journal._conn.execute(f"PRAGMA max_page_count={pages}")
    big = tuple(f"139{i:08d}" for i in range(3000))
    # Scattered positions (items refused in between) take pages of their own to record.
    verdict = await journal.begin_chunk(
        1, "sendOnce", tuple(range(5, 6005, 2)), big, "x", resend_unknown=False
    )
    assert verdict is Verdict.SEND
    # The write before its request fails, so the engine does not send it.
    with pytest.raises(CampaignError, match=r"disk is full.*intact"):
        await journal.mark_on_wire(1)
    # From now on every write fails at once, the same way: nothing is sent unrecorded.
    with pytest.raises(CampaignError, match="disk is full"):
        await journal.mark_on_wire(2)
    with pytest.raises(CampaignError, match="disk is full"):
        await _settle(journal, 1, ChunkResult(ChunkState.FAILED, retryable=True))
    await journal.aclose()

    journal = await Journal.open(path)
    try:
        assert journal.rows[0].state is ChunkState.ACCEPTED
        assert 1 not in journal.rows
        assert await _begin(journal, 1) is Verdict.SEND
    finally:
        await journal.aclose()


async def test_reports_are_kept_and_reconcile_an_unknown_chunk(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    try:
        await journal.define("fp", {})
        await _begin(journal, 0)
        await _settle(journal, 0, ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "100"},)))
        await _begin(journal, 1)
        await _settle(
            journal, 1, ChunkResult(ChunkState.UNKNOWN, error_class="GatewayInternalError")
        )
        assert set(journal.unknown) == set(range(5, 10))
        batch = [
            DeliveryReport("1", "100", MOBILES[0], ReportResult.DELIVERED, "DELIVRD"),
            MalformedRecord("getSendState", {"msgid": "x"}, "no mobile"),
            # An msgid we never learned, for a number of the unknown chunk.
            DeliveryReport("2", "555", MOBILES[7], ReportResult.FAILED, "UNDELIV"),
        ]
        assert await journal.record_reports(batch) == [1]
        assert journal.unknown == {}
        assert journal.rows[1].state is ChunkState.ACCEPTED
        assert journal.rows[1].reconciled
        assert journal.delivery == {"DELIVRD": 1, "UNDELIV": 1}
    finally:
        await journal.aclose()
    journal = await Journal.open(path)
    try:
        assert [r.msgid for r in await journal.stored_reports()] == ["100", "555"]
        assert journal.delivery == {"DELIVRD": 1, "UNDELIV": 1}
        assert journal.rows[1].reconciled
        (bad,) = journal._conn.execute("SELECT raw FROM reports WHERE msgid IS NULL").fetchone()
        assert "no mobile" in bad
        # The export gives the settled chunk the msgid its report proved it by (it has no
        # receipt of its own), as the chunk with a receipt has its own.
        rows: list[Any] = []
        await journal.export(rows.append)
        assert [row[3] for row in rows] == ["100"] * 5 + ["555"] * 5
    finally:
        await journal.aclose()


async def test_concurrent_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "c.db")
    results: dict[int, object] = {}
    try:
        await journal.define("fp", {})
        await journal.begin_chunk(
            1, "sendOnce", tuple(range(5, 10)), MOBILES[5:], "".join(MOBILES[5:]),
            resend_unknown=False,
        )  # fmt: skip
        await _settle(journal, 1, ChunkResult(ChunkState.FAILED, retryable=True))

        async def begin(index: int, mobiles: tuple[str, ...]) -> None:
            positions = tuple(range(index * 5, index * 5 + 5))
            try:
                results[index] = await journal.begin_chunk(
                    index, "sendOnce", positions, mobiles, "".join(mobiles), resend_unknown=False
                )
                await journal.mark_on_wire(index)
            except CampaignError as exc:
                results[index] = exc

        async with anyio.create_task_group() as group:
            group.start_soon(begin, 0, MOBILES[:5])
            group.start_soon(begin, 1, ("13700000000", *MOBILES[6:10]))  # changed
            for index in range(2, 6):
                group.start_soon(begin, index, tuple(f"1360000{index}{k:03d}" for k in range(5)))
    finally:
        await journal.aclose()
    assert isinstance(results.pop(1), CampaignError)
    assert results == dict.fromkeys((0, 2, 3, 4, 5), Verdict.SEND)
    journal = await Journal.open(tmp_path / "c.db")
    try:
        # The refused write undid only itself; the others were committed with it.
        assert sorted(journal.rows) == [0, 1, 2, 3, 4, 5]
        assert journal.rows[1].state is ChunkState.FAILED
        # On the wire at "the crash": its fate is unknown.
        assert journal.rows[0].state is ChunkState.UNKNOWN
    finally:
        await journal.aclose()


async def _run_chunks(journal: Journal, indexes: range) -> None:
    """Begin, put on the wire and accept chunks all at once, as a bulk send's workers do."""

    async def one(index: int) -> None:
        assert await _begin(journal, index) is Verdict.SEND
        await journal.mark_on_wire(index)
        receipt = {"msgid": f"9{index:05d}", "total": "5"}
        await _settle(
            journal,
            index,
            ChunkResult(ChunkState.ACCEPTED, attempts=1, units=5, cost=Decimal("0.5"),
                        receipts=(receipt,)),
        )  # fmt: skip

    async with anyio.create_task_group() as group:
        for index in indexes:
            group.start_soon(one, index)


async def test_chunks_written_together_are_recorded_each(tmp_path: Path) -> None:
    # Many chunks' "on the wire" marks and outcomes share commits (one statement per
    # kind); each one still ends up recorded whole.
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    trips: list[int] = []
    commit = journal._writer._commit

    def counting(batch: list[Any]) -> None:
        trips.append(len(batch))
        commit(batch)

    journal._writer._commit = counting  # type: ignore[method-assign]
    try:
        await journal.define("fp", {})
        await _run_chunks(journal, range(40))
    finally:
        await journal.aclose()
    assert max(trips) > 1  # writes were in fact gathered
    journal = await Journal.open(path)
    try:
        rows = journal._conn.execute(
            "SELECT idx, state, attempts, units, cost, positions, items_hash FROM chunks"
            " ORDER BY idx"
        ).fetchall()
        assert rows == [
            (i, "accepted", 1, 5, "0.5", f"{i * 5}-{i * 5 + 4}", f"h{i}") for i in range(40)
        ]
        msgids = dict(journal._conn.execute("SELECT msgid, chunk FROM msgids"))
        assert msgids == {f"9{i:05d}": i for i in range(40)}
    finally:
        await journal.aclose()


async def test_chunks_accepted_on_an_old_sqlite_are_recorded_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UPDATE ... FROM arrived in SQLite 3.33; an older library takes one statement per row.
    monkeypatch.setattr(sql.sqlite3, "sqlite_version_info", (3, 31, 1))
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        await _run_chunks(journal, range(6))
        states = journal._conn.execute("SELECT state, units FROM chunks").fetchall()
        assert states == [("accepted", 5)] * 6
    finally:
        await journal.aclose()


@pytest.mark.parametrize("sqlite_version", [sql.sqlite3.sqlite_version_info, (3, 31, 1)])
async def test_an_outcome_for_a_chunk_never_recorded_breaks_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_version: tuple[int, ...]
) -> None:
    # A bug, not a user error: an "accepted" for a chunk the file does not hold must not
    # be dropped silently; the journal stops, as on a full disk. Old SQLite included.
    monkeypatch.setattr(sql.sqlite3, "sqlite_version_info", sqlite_version)
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        with pytest.raises(CampaignError, match="not recorded"):
            await _settle(journal, 7, ChunkResult(ChunkState.ACCEPTED, units=5))
        # ... and every later write fails the same way: nothing goes out unrecorded.
        assert await _begin(journal, 8) is Verdict.SEND
        with pytest.raises(CampaignError, match="not recorded"):
            await journal.mark_on_wire(8)
    finally:
        await journal.aclose()


async def test_the_summary_names_unknown_recipients_once_the_input_is_read_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.define("fp", {})
    await _run_chunks(journal, range(1))
    assert await _begin(journal, 1) is Verdict.SEND
    await journal.mark_on_wire(1)
    await journal.aclose()  # killed with chunk 1 on the wire

    journal = await Journal.open(path)
    try:
        summary = summarize(journal)
        assert (summary.accepted, summary.unknown) == (5, 5)
        assert summary.unknown_unread == (5, 6, 7, 8, 9)
        assert summary.unknown_recipients == ()
        assert await _begin(journal, 0) is Verdict.SKIP_ACCEPTED
        assert await _begin(journal, 1) is Verdict.SKIP_UNKNOWN
        summary = summarize(journal)
        assert summary.unknown == 5 and summary.unknown_unread == ()
        assert summary.unknown_recipients == tuple(zip(range(5, 10), MOBILES[5:], strict=True))
    finally:
        await journal.aclose()


async def test_marks_before_a_request_jump_ahead_of_other_writes(tmp_path: Path) -> None:
    # A chunk waiting for its "on the wire" mark holds its request's turn: queued marks
    # take the next trip alone (one statement), and the writes queued before them follow.
    journal = await Journal.open(tmp_path / "c.db")
    trips: list[list[str | None]] = []
    commit = journal._writer._commit

    def recording(batch: list[Any]) -> None:
        trips.append([job.kind for job in batch])
        commit(batch)

    journal._writer._commit = recording  # type: ignore[method-assign]
    release = threading.Event()
    try:
        await journal.define("fp", {})
        assert await _begin(journal, 0) is Verdict.SEND
        trips.clear()
        async with anyio.create_task_group() as group:
            group.start_soon(journal._write, "a slow write", lambda conn: release.wait(5))
            await wait_all_tasks_blocked()
            group.start_soon(journal.record_replies, [])
            group.start_soon(journal.mark_on_wire, 0)
            await wait_all_tasks_blocked()
            release.set()
        assert trips == [[None], ["in_flight"], [None]]
        assert journal.rows[0].state is ChunkState.IN_FLIGHT
        (state,) = journal._conn.execute("SELECT state FROM chunks WHERE idx=0").fetchone()
        assert state == "in_flight"
    finally:
        release.set()
        await journal.aclose()


async def test_a_write_returns_once_recorded_while_later_writes_keep_the_writer_busy(
    tmp_path: Path,
) -> None:
    # The task that sent the writer on its trips used to drive it until nothing was left
    # waiting: at full speed its caller (a chunk's outcome) waited a second or more.
    journal = await Journal.open(tmp_path / "c.db")
    first_done, later_done = threading.Event(), threading.Event()
    returned: list[str] = []

    async def write(name: str, hold: threading.Event) -> None:
        await journal._write(name, lambda conn: hold.wait(5))
        returned.append(name)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(write, "first", first_done)
            await wait_all_tasks_blocked()
            group.start_soon(write, "later", later_done)
            await wait_all_tasks_blocked()
            first_done.set()
            with anyio.fail_after(5):
                while not returned:
                    await anyio.sleep(0.01)
            # The later write is still on its trip: the first returned without it.
            assert returned == ["first"]
            later_done.set()
        assert returned == ["first", "later"]
    finally:
        first_done.set()
        later_done.set()
        await journal.aclose()


async def test_reports_fetched_before_their_chunk_is_recorded_are_claimed(
    tmp_path: Path,
) -> None:
    # Reports followed while sending: one can come before its chunk's outcome is written.
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    try:
        await journal.define("fp", {})
        await _begin(journal, 0)
        await journal.mark_on_wire(0)
        early = [
            DeliveryReport("1", "100", MOBILES[0], ReportResult.DELIVERED, "DELIVRD"),
            DeliveryReport("2", "100", MOBILES[1], ReportResult.UNKNOWN, "ACCEPTD"),
            # The same msgid with a number the chunk does not hold stays apart.
            DeliveryReport("3", "100", "13999999999", ReportResult.DELIVERED, "DELIVRD"),
            DeliveryReport("4", "777", MOBILES[2], ReportResult.FAILED, "UNDELIV"),
        ]
        done = await journal.ingest_reports(early)
        assert done.mine == [False, False, False, False]
        assert journal.foreign_reports == 4
        await _settle(journal, 0, ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "100"},)))
        assert journal.delivery == {"DELIVRD": 1}
        assert journal.foreign_reports == 2
        summary = summarize(journal)
        assert summary.pending == 4
    finally:
        await journal.aclose()
    journal = await Journal.open(path)
    try:
        assert journal.delivery == {"DELIVRD": 1}
        assert journal.foreign_reports == 2
        (mine,) = journal._conn.execute(
            "SELECT (SELECT count(*) FROM reports WHERE chunk = 0)"
            " + (SELECT count(*) FROM delivery WHERE chunk = 0)"
        ).fetchone()
        assert mine == 2
        assert [r.id for r in await journal.stored_reports()] == ["1", "2", "3", "4"]
    finally:
        await journal.aclose()


@pytest.mark.parametrize("variables", [32766, 999])
async def test_a_batch_spanning_several_statements_is_recorded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: int
) -> None:
    # Reports go in hundreds to a statement (fewer than 999 bound variables each on an
    # SQLite older than 3.32): every row of every statement, in fetch order, once.
    monkeypatch.setattr(sql, "_VARIABLES", variables)
    mobiles = [f"1390000{i:04d}" for i in range(1200)]
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        await journal.begin_chunk(0, "sendOnce", range(1200), mobiles, "h0", resend_unknown=False)
        await journal.settle_chunk(
            0,
            "sendOnce",
            range(1200),
            mobiles,
            ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "100"},)),
        )
        batch: list[DeliveryReport | MalformedRecord] = []
        for i, mobile in enumerate(mobiles):
            code = "DELIVRD" if i % 3 else "UNDELIV"
            batch.append(DeliveryReport(f"r{i}", "100", mobile, ReportResult.DELIVERED, code))
            if i % 100 == 0:
                batch.append(DeliveryReport(f"f{i}", "999", mobile, ReportResult.FAILED, "UNDELIV"))
        done = await journal.ingest_reports(batch)
        assert done.finals == {"DELIVRD": 800, "UNDELIV": 400}
        assert done.foreign == 12
        # A later batch repeats 300 finals: kept, counted once.
        again = await journal.ingest_reports(batch[:300])
        assert again.finals == {}
        assert journal.delivery == {"DELIVRD": 800, "UNDELIV": 400}
        assert journal.foreign_reports == 12 + 3
        stored = [r.id for r in await journal.stored_reports()]
        expected = [r.id for r in batch if isinstance(r, DeliveryReport)]
        assert stored == expected + expected[:300]
    finally:
        await journal.aclose()


async def test_runs_of_one_msgid_mixed_with_others_are_recorded_as_one_by_one(
    tmp_path: Path,
) -> None:
    # Runs of a known msgid are taken whole; a run that is not the usual (non-final codes
    # among finals, a recipient settled by an earlier run, extra attributes) must come
    # out exactly as report by report would record it.
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        await _begin(journal, 0)
        await _settle(journal, 0, ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "100"},)))
        await _begin(journal, 1)
        await _settle(journal, 1, ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "101"},)))

        def report(n: int, msgid: str, mobile: str, code: str, **extra: str) -> DeliveryReport:
            return DeliveryReport(str(n), msgid, mobile, ReportResult.DELIVERED, code, extra=extra)

        batch: list[DeliveryReport | MalformedRecord] = [
            report(1, "100", MOBILES[0], "DELIVRD"),
            report(2, "100", MOBILES[1], "ACCEPTD"),  # not final: kept, recipient pending
            report(3, "100", MOBILES[2], "undeliv"),  # final, whatever its case
            report(4, "999", MOBILES[3], "DELIVRD"),  # not the campaign's
            report(5, "101", MOBILES[5], "DELIVRD", note="x"),  # extra attributes
            report(6, "100", MOBILES[0], "EXPIRED"),  # a repeat: settles nothing again
            report(7, "100", MOBILES[1], "DELIVRD"),  # settles the one pending
            MalformedRecord("getSendState", {"msgid": "100"}, "no mobile"),
            report(8, "101", MOBILES[6], "DELIVRD"),
        ]
        done = await journal.ingest_reports(batch)
        assert done.mine == [True, True, True, False, True, True, True, True]
        assert done.finals == {"DELIVRD": 4, "UNDELIV": 1}
        assert done.foreign == 1
        stored = await journal.stored_reports()
        assert [r.id for r in stored] == [str(n) for n in range(1, 9)]
        assert stored[4].extra == {"note": "x"}
        assert journal.delivery == {"DELIVRD": 4, "UNDELIV": 1}
        assert summarize(journal).pending == 10 - 5
    finally:
        await journal.aclose()


def _ingested_rows(path: Path) -> tuple[list[tuple[Any, ...]], ...]:
    """Both report tables and the tallies as the file holds them, fetch times left out."""
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute(
                "SELECT seq, id, msgid, mobile, result, code, raw, chunk FROM reports ORDER BY seq"
            ).fetchall(),
            conn.execute(
                "SELECT seq, chunk, mobile, code, id, msgid, result, raw FROM delivery ORDER BY seq"
            ).fetchall(),
            conn.execute("SELECT name, n FROM tallies ORDER BY name").fetchall(),
        )
    finally:
        conn.close()


@pytest.mark.parametrize("variables", [32766, 999])
async def test_whole_runs_record_what_report_by_report_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: int
) -> None:
    # Whole runs are written flat, with the batch's fetch time bound once and raw left
    # NULL: the same rows, counts and flags must come out as when every report goes one
    # by one. Runs of finals only, of both finals and pending codes, of pending codes
    # only; another campaign's reports between them; a second batch repeating
    # recipients the first settled.
    monkeypatch.setattr(sql, "_VARIABLES", variables)
    mobiles = [f"1393{i:07d}" for i in range(600)]

    def batches() -> list[list[DeliveryReport | MalformedRecord]]:
        first: list[DeliveryReport | MalformedRecord] = []
        for chunk in range(3):
            for i in range(chunk * 200, chunk * 200 + 200):
                code = ("DELIVRD", "ACCEPTD", "undeliv")[chunk] if i % 7 else "EXPIRED"
                result = ReportResult.UNKNOWN if code == "ACCEPTD" else ReportResult.FAILED
                first.append(DeliveryReport(f"r{i}", f"m{chunk}", mobiles[i], result, code))
                if i % 150 == 0:
                    first.append(
                        DeliveryReport(f"x{i}", "other", mobiles[i], ReportResult.FAILED, "UNDELIV")
                    )
        repeat = [
            DeliveryReport(f"again{i}", "m0", mobiles[i], ReportResult.DELIVERED, "DELIVRD")
            for i in range(0, 200, 3)
        ]
        pending = [
            DeliveryReport(f"later{i}", "m1", mobiles[i], ReportResult.UNKNOWN, "ACCEPTD")
            for i in range(200, 260)
        ]
        return [first, repeat + pending]

    async def record(path: Path) -> list[sql.Ingested]:
        journal = await Journal.open(path)
        try:
            await journal.define("fp", {})
            for index in range(3):
                positions = range(index * 200, index * 200 + 200)
                numbers = mobiles[index * 200 : index * 200 + 200]
                await journal.begin_chunk(
                    index, "sendOnce", positions, numbers, f"h{index}", resend_unknown=False
                )
                await journal.settle_chunk(
                    index,
                    "sendOnce",
                    positions,
                    numbers,
                    ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": f"m{index}"},)),
                )
            return [await journal.ingest_reports(batch) for batch in batches()]
        finally:
            await journal.aclose()

    whole = await record(tmp_path / "whole.db")
    monkeypatch.setattr(sql._Ingest, "whole_run", lambda self, msgid, items: False)
    one_by_one = await record(tmp_path / "one.db")
    assert whole == one_by_one
    assert whole[0].foreign == 4
    assert whole[0].finals == {"DELIVRD": 171, "EXPIRED": 86, "UNDELIV": 172}
    assert whole[1].finals == {}
    assert _ingested_rows(tmp_path / "whole.db") == _ingested_rows(tmp_path / "one.db")


@pytest.mark.parametrize("variables", [32766, 999])
async def test_what_a_batch_looks_up_is_read_before_it_and_forgotten_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: int
) -> None:
    # A batch's msgids and their chunks' numbers are read in a statement or two before
    # it. More chunks than the lookup keeps, a msgid no chunk has in one batch that a
    # chunk recorded afterwards has in the next, an msgid never learned that a
    # reconciliation gives a chunk halfway through a batch: each lands where report by
    # report would put it.
    monkeypatch.setattr(sql, "_VARIABLES", variables)
    chunks = sql.ReportLookup._MAX_CHUNKS + 6
    numbers = [f"1391{i:07d}" for i in range(chunks * 2)]
    journal = await Journal.open(tmp_path / "c.db")
    try:
        await journal.define("fp", {})
        for index in range(chunks):
            positions, mobiles = range(index * 2, index * 2 + 2), numbers[index * 2 : index * 2 + 2]
            await journal.begin_chunk(
                index, "sendOnce", positions, mobiles, f"h{index}", resend_unknown=False
            )
            await journal.settle_chunk(
                index,
                "sendOnce",
                positions,
                mobiles,
                ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": f"m{index}"},)),
            )
        # One more chunk, whose answer was lost: its reports come with an msgid it
        # never learned.
        lost = chunks
        lost_numbers = ("13920000001", "13920000002")
        await journal.begin_chunk(
            lost, "sendOnce", range(lost * 2, lost * 2 + 2), lost_numbers, "hl",
            resend_unknown=False,
        )  # fmt: skip
        await journal.settle_chunk(
            lost,
            "sendOnce",
            range(lost * 2, lost * 2 + 2),
            lost_numbers,
            ChunkResult(ChunkState.UNKNOWN, error_class="GatewayInternalError"),
        )

        def report(msgid: str, mobile: str) -> DeliveryReport:
            return DeliveryReport(msgid, msgid, mobile, ReportResult.DELIVERED, "DELIVRD")

        first: list[DeliveryReport | MalformedRecord] = [
            report(f"m{i // 2}", mobile) for i, mobile in enumerate(numbers)
        ]
        first.insert(5, report("late", "13930000001"))
        first.insert(9, report("lost", lost_numbers[0]))
        first.insert(12, report("lost", lost_numbers[1]))
        done = await journal.ingest_reports(first)
        assert done.foreign == 1
        assert sorted(done.reconciled) == [lost]
        assert done.mine.count(False) == 1
        assert journal.delivery == {"DELIVRD": len(numbers) + 2}
        # The msgid no chunk had is recorded by a chunk now: the next batch's report of
        # it is the campaign's (the earlier one was claimed when the chunk was).
        late = lost + 1
        await journal.begin_chunk(
            late, "sendOnce", [late * 2], ["13930000002"], "hz", resend_unknown=False
        )
        await journal.settle_chunk(
            late,
            "sendOnce",
            [late * 2],
            ["13930000002"],
            ChunkResult(ChunkState.ACCEPTED, receipts=({"msgid": "late"},)),
        )
        again = await journal.ingest_reports([report("late", "13930000002")])
        assert again.mine == [True]
        assert again.foreign == 0
    finally:
        await journal.aclose()


async def test_a_symlink_to_a_journal_finds_its_lock(tmp_path: Path) -> None:
    # The lock sits beside the journal under its own name: through a symlink's name it
    # guarded nothing, and two processes, one through each name, sent recipients twice.
    path = tmp_path / "c.db"
    link = tmp_path / "link.db"
    first = await Journal.open(path)
    try:
        link.symlink_to(path)
        with pytest.raises(CampaignError, match="in use by this process"):
            await Journal.open(link)
    finally:
        await first.aclose()
    through_link = await Journal.open(link)
    try:
        with pytest.raises(CampaignError, match="in use by this process"):
            await Journal.open(path)
    finally:
        await through_link.aclose()
    # SQLite's own files went beside the journal, not the link.
    assert not list(tmp_path.glob("link.db-*")) and not (tmp_path / "link.db.lock").exists()


async def test_a_journal_with_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    journal = await Journal.open(path)
    await journal.aclose()
    os.link(path, tmp_path / "other.db")
    before = _digest(path)
    for name in ("c.db", "other.db"):
        with pytest.raises(CampaignError, match=r"has 2 names \(hard links\)"):
            await Journal.open(tmp_path / name)
    assert _digest(path) == before
