"""Reading a campaign's journal through the public API alone (issue #15).

Every journal here is a real SQLite file written by a real campaign send against the
emulator; the reader needs no client.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from helpers import client_for as shared_client_for
from helpers import collect, journal_held_elsewhere, numbers

from aisix_async import (
    FINAL_OPERATOR_CODES,
    CampaignError,
    CampaignJournal,
    CampaignRun,
    open_campaign_journal,
)

pytestmark = pytest.mark.anyio

client_for = partial(shared_client_for, retry=None)


async def _sent_and_followed(emulator: Any, path: Path, mobiles: list[str]) -> list[bool]:
    """A campaign sent in chunks of 100, its reports followed as a recorded run; the
    per-report flags the watch gave, in the order the reports came."""
    emulator.state.configure(report_delay=0.0, reports_per_call=1000)
    flags: list[bool] = []

    async def recorded(verdicts: Sequence[bool]) -> None:
        flags.extend(verdicts)

    async with client_for(emulator) as client:
        outside = await client.send_once(numbers(30, start=9000), "not the campaign's")
        assert outside.msgid
        async with client.campaign(path) as campaign:
            assert dict(campaign.definition) == {}  # nothing recorded before the first send
            await collect(campaign.send_many(mobiles, "hello", chunk_size=100))
            async with campaign.record_run("reports"):
                watch = campaign.watch_delivery_reports(
                    interval=0.01, stop_when_idle=0.3, on_recorded=recorded
                )
                async with watch as reports:
                    got = [report async for report in reports]
    assert len(got) == len(flags)
    return flags


async def test_the_reader_tells_where_a_campaign_stands_without_a_client(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sale.db"
    mobiles = numbers(250)
    flags = await _sent_and_followed(emulator, path, mobiles)
    assert flags.count(True) == 250
    assert flags.count(False) == 30

    async with open_campaign_journal(path) as journal:
        assert not journal.read_only
        assert journal.read_only_reason is None
        definition = journal.definition
        summary = journal.summary()
        runs = await journal.runs()
        with pytest.raises(TypeError):
            definition["account"] = "someone else"  # type: ignore[index]
    assert definition["action"] == "send_many"
    assert definition["account"] == "1001@100001"
    assert definition["content"] == "hello"
    assert summary.accepted == 250
    assert summary.complete
    assert summary.foreign_reports == 30
    assert sum(summary.delivery.values()) + summary.pending == 250
    assert [run.kind for run in runs] == ["send", "reports"]
    assert all(isinstance(run, CampaignRun) for run in runs)
    assert [run.seq for run in runs] == sorted(run.seq for run in runs)
    for run in runs:
        assert run.ended_at is not None and run.ended_at >= run.started_at
    # The lock was taken and given back: no sidecar left behind.
    assert not path.with_name(path.name + ".lock").exists()


async def test_export_streams_a_header_and_one_line_per_recipient(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sale.db"
    mobiles = numbers(250)
    await _sent_and_followed(emulator, path, mobiles)
    ledger = {m.mobile: m.msgid for m in emulator.state.messages()}

    out = tmp_path / "out.csv"
    text = io.StringIO(newline="")
    async with open_campaign_journal(path) as journal:
        written = await journal.export_csv(out)
        again = await journal.export_csv(text)
        with pytest.raises(CampaignError, match="the journal itself"):
            await journal.export_csv(path)
        # Written whole, then removed with the -wal as the journal closed (a user's trial).
        for beside in ("sale.db-wal", "sale.db.lock", "./sale.db-shm"):
            with pytest.raises(CampaignError, match="removed when the journal closes"):
                await journal.export_csv(f"{tmp_path}/{beside}")
        # A mistyped path onto the campaign's input (or a key file) is refused, the file
        # untouched: it was replaced by the export (a user's trial). An earlier export
        # and an empty file are rewritten.
        data = tmp_path / "numbers.txt"
        data.write_text("\n".join(mobiles) + "\n")
        assert CampaignJournal.export_would_overwrite(data)
        with pytest.raises(CampaignError, match=r"not an earlier export.*give another path"):
            await journal.export_csv(data)
        assert data.read_text() == "\n".join(mobiles) + "\n"
        assert await journal.export_csv(out) == 250
        empty = tmp_path / "empty.csv"
        empty.touch()
        assert not CampaignJournal.export_would_overwrite(out)
        assert not CampaignJournal.export_would_overwrite(empty)
        assert not CampaignJournal.export_would_overwrite(tmp_path / "missing.csv")
        assert await journal.export_csv(empty) == 250
    assert written == again == 250
    assert out.read_bytes().decode("utf-8") == text.getvalue()
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CampaignJournal.EXPORT_COLUMNS
    assert CampaignJournal.EXPORT_COLUMNS[:3] == ("mobile", "position", "status")
    body = rows[1:]
    assert len(body) == 250
    for position, (mobile, at, status, msgid, code, when) in enumerate(body):
        assert (mobile, int(at), status) == (mobiles[position], position, "accepted")
        assert msgid == ledger[mobile]
        assert code == "" or code in FINAL_OPERATOR_CODES
        assert bool(when) == bool(code)


def test_the_files_of_a_journal_are_named_beside_its_real_name(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "sale.db"
    (tmp_path / "link.db").symlink_to(real)
    expected = tuple(
        Path(f"{real}{suffix}") for suffix in ("", "-wal", "-shm", "-journal", ".lock")
    )
    # Nothing need exist, and nothing is created.
    assert CampaignJournal.files(tmp_path / "link.db") == expected
    assert CampaignJournal.files(str(tmp_path / "data" / "." / "sale.db")) == expected
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "link.db"]


async def test_a_held_journal_is_read_as_committed_and_says_so(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sale.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(numbers(120), "hi", chunk_size=50))
        expected = campaign.summary()
        # Another handle in this process holds the lock now.
        async with open_campaign_journal(path) as journal:
            assert journal.read_only
            assert journal.read_only_reason is not None
            assert "in use by this process" in journal.read_only_reason
            assert journal.summary() == expected
            assert [run.kind for run in await journal.runs()] == ["send"]
            assert await journal.export_csv(tmp_path / "held.csv") == 120

    with journal_held_elsewhere(path) as pid:
        async with open_campaign_journal(path) as journal:
            assert journal.read_only
            assert journal.read_only_reason is not None
            assert f"(pid {pid})" in journal.read_only_reason
            summary = journal.summary()
            assert summary.accepted == 120
            assert summary.complete
        # The reader took no lock, so it left the holder's sidecar alone.
        assert path.with_name(path.name + ".lock").exists()


async def test_a_missing_or_empty_path_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(CampaignError, match="no such campaign journal"):
        async with open_campaign_journal(missing):
            pass
    assert list(tmp_path.iterdir()) == []

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(CampaignError, match="no such campaign journal"):
        async with open_campaign_journal(empty):
            pass
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]

    with pytest.raises(CampaignError, match="no such campaign journal"):
        async with open_campaign_journal(tmp_path):
            pass


async def test_the_reader_is_used_inside_its_block(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "sale.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(numbers(10), "hi"))
    journal = open_campaign_journal(path)
    with pytest.raises(CampaignError, match="inside 'async with'"):
        journal.summary()
    async with journal:
        assert journal.summary().accepted == 10
    with pytest.raises(CampaignError, match="inside 'async with'"):
        await journal.runs()


async def test_a_run_cut_short_still_records_its_end(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "sale.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(numbers(10), "hi"))
        with pytest.raises(KeyError):
            async with campaign.record_run("audit"):
                raise KeyError("the follower's own error")
    async with open_campaign_journal(path) as journal:
        runs = await journal.runs()
    assert [run.kind for run in runs] == ["send", "audit"]
    assert runs[-1].ended_at is not None


async def test_the_flags_pair_with_the_reports_in_order(emulator: Any, tmp_path: Path) -> None:
    # What ``aisix reports --journal`` does: one flag per report, consumed as read.
    emulator.state.configure(report_delay=0.0, reports_per_call=7)
    mine: deque[bool] = deque()

    async def recorded(verdicts: Sequence[bool]) -> None:
        mine.extend(verdicts)

    async with client_for(emulator) as client:
        outside = await client.send_once(numbers(20, start=9000), "other")
        async with client.campaign(tmp_path / "c.db") as campaign:
            await collect(campaign.send_many(numbers(40), "ours", chunk_size=10))
            watch = campaign.watch_delivery_reports(
                interval=0.01, stop_when_idle=0.3, on_recorded=recorded
            )
            paired = []
            async with watch as reports:
                async for report in reports:
                    paired.append((report.msgid != outside.msgid, mine.popleft()))
    assert len(paired) == 60
    assert all(expected == flag for expected, flag in paired)


async def test_check_definition_refuses_what_a_send_would_and_writes_nothing(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sale.db"
    mobiles = numbers(20)
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hello", chunk_size=10))
        same = client.campaign(path).send_many(mobiles, "hello", chunk_size=10)
        other = client.campaign(path).send_many(mobiles, "bye", chunk_size=10)
        before = path.read_bytes()
        async with open_campaign_journal(path) as journal:
            journal.check_definition(same.definition)
            with pytest.raises(CampaignError) as rehearsed:
                journal.check_definition(other.definition)
        assert path.read_bytes() == before
        # The send refuses it with the same words.
        async with client.campaign(path) as campaign:
            with pytest.raises(CampaignError) as refused:
                await collect(campaign.send_many(mobiles, "bye", chunk_size=10))
    assert rehearsed.value.message == refused.value.message
    assert "content='bye'" in rehearsed.value.message
    assert emulator.state.message_count == 20
