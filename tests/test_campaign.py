"""Campaigns against the emulator over real HTTP: resume, unknown, reconcile, refusals.

Each test checks the journal's account against the emulator's ledger, the ground truth
of what the gateway accepted and charged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import client_for, collect, eventually, journal_held_elsewhere, numbers

from aisix_async import (
    BalanceTooLowError,
    CampaignError,
    NotSentError,
    OutcomeStatus,
    RateState,
    RetryPolicy,
    SendOutcome,
    open_campaign_journal,
)
from aisix_async._mechanics.scheduler import Scheduler

pytestmark = pytest.mark.anyio


def sent_counts(emulator: Any) -> Counter[str]:
    return Counter(m.mobile for m in emulator.state.messages())


async def test_a_finished_campaign_sends_nothing_again(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(2500)
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        outcomes = await collect(campaign.send_many(mobiles, "Spring sale", chunk_size=1000))
        assert [o.status for o in outcomes] == [OutcomeStatus.ACCEPTED] * 3
        summary = campaign.summary()
    assert summary.accepted == 2500
    assert summary.complete
    assert summary.input_size == 2500
    assert (summary.failed, summary.unknown, summary.not_yet_sent) == (0, 0, 0)
    ledger = emulator.state.messages()
    assert summary.units == sum(m.units for m in ledger)
    assert summary.cost == sum((m.cost for m in ledger), Decimal(0))
    assert sent_counts(emulator) == Counter(mobiles)

    requests = emulator.state.get_counters().requests["sendOnce"]
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        stream = campaign.send_many(mobiles, "Spring sale", chunk_size=1000)
        assert await collect(stream) == []
        assert stream.stats().skipped == 2500
        assert campaign.summary().accepted == 2500
    assert emulator.state.get_counters().requests["sendOnce"] == requests
    assert sent_counts(emulator) == Counter(mobiles)


async def test_a_run_stopped_by_the_balance_resumes_where_it_stopped(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(3000)
    emulator.state.set_balance(None, "150")  # one chunk of 1000 at 0.10 each
    async with client_for(emulator, max_concurrency=1) as client:
        async with client.campaign(path) as campaign:
            stream = campaign.send_many(mobiles, "Spring sale", check_balance=False)
            outcomes = await collect(stream)
            summary = campaign.summary()
        assert sum(len(o.mobiles) for o in outcomes) == 3000
        assert any(isinstance(o.error, NotSentError) for o in outcomes)
        assert summary.accepted == 1000
        assert summary.not_yet_sent == 2000
        assert summary.failed == 0
        assert not summary.complete

        emulator.state.set_balance(None, "1000")
        async with client.campaign(path) as campaign:
            outcomes = await collect(campaign.send_many(mobiles, "Spring sale"))
            summary = campaign.summary()
    assert {o.status for o in outcomes} == {OutcomeStatus.ACCEPTED}
    assert sum(len(o.mobiles) for o in outcomes) == 2000
    assert summary.accepted == 3000
    assert summary.complete
    assert sent_counts(emulator) == Counter(mobiles)


async def test_a_run_refused_by_the_balance_check_is_ended_in_the_journal(
    emulator: Any, tmp_path: Path
) -> None:
    # The check refuses before anything is sent; the run it had begun is ended, not left
    # open as if its process had crashed mid-send.
    path = tmp_path / "c.db"
    emulator.state.set_balance(None, "0.01")
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        with pytest.raises(BalanceTooLowError):
            async with campaign.send_many(numbers(50), "Spring sale"):
                pass
    async with open_campaign_journal(path) as journal:
        runs = await journal.runs()
    assert [run.kind for run in runs] == ["send"]
    assert runs[0].ended_at is not None
    assert emulator.state.get_counters().requests.get("sendOnce", 0) == 0


async def test_unknown_chunks_are_listed_not_resent_then_reconciled(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(300)
    emulator.state.configure(report_delay=0.0)
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            outcomes = await collect(campaign.send_many(mobiles, "hello", chunk_size=100))
            assert {o.status for o in outcomes} == {OutcomeStatus.UNKNOWN}
            summary = campaign.summary()
        assert summary.unknown == 300
        assert [m for _, m in summary.unknown_recipients] == mobiles
        assert summary.complete  # every recipient's fate is settled, if unknown
        emulator.state.set_faults(error_after_charge=0.0)

        async with client.campaign(path) as campaign:
            stream = campaign.send_many(mobiles, "hello", chunk_size=100)
            assert await collect(stream) == []
            assert stream.stats().skipped == 300
            # The reports prove the lost answers were acceptances.
            async with campaign.watch_delivery_reports(
                interval=0.01, stop_when_idle=0.3
            ) as reports:
                got = [r async for r in reports]
            summary = campaign.summary()
        assert len(got) == 300
        assert summary.unknown == 0
        assert summary.accepted == summary.reconciled == 300
        assert sum(summary.delivery.values()) == 300
        async with client.campaign(path) as campaign:
            assert len(await campaign.stored_reports()) == 300
    # Sent once each (and charged), never a second time.
    assert sent_counts(emulator) == Counter(mobiles)


async def test_resend_unknown_sends_them_again_when_asked(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(50)
    emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hello"))
            assert campaign.summary().unknown == 50
        emulator.state.set_faults(error_after_charge=0.0)
        async with client.campaign(path, resend_unknown=True) as campaign:
            outcomes = await collect(campaign.send_many(mobiles, "hello"))
            summary = campaign.summary()
    assert [o.status for o in outcomes] == [OutcomeStatus.ACCEPTED]
    assert (summary.accepted, summary.unknown) == (50, 0)
    assert sent_counts(emulator) == Counter(dict.fromkeys(mobiles, 2))


async def test_a_changed_input_is_refused_and_nothing_more_is_sent(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(300)
    emulator.state.set_balance(None, "10")  # 100 numbers
    async with client_for(emulator, max_concurrency=1) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi", chunk_size=100, check_balance=False))
            before = campaign.summary()
        assert before.accepted == 100
        emulator.state.set_balance(None, "1000")
        changed = list(mobiles)
        changed[150] = "13700000000"
        async with client.campaign(path) as campaign:
            with pytest.raises(CampaignError, match=r"position 150 \('13900000150' before"):
                await collect(campaign.send_many(changed, "hi", chunk_size=100))
            assert campaign.summary() == before
        async with client.campaign(path) as campaign:
            with pytest.raises(CampaignError, match="another campaign"):
                await collect(campaign.send_many(mobiles, "hi!", chunk_size=100))
            with pytest.raises(CampaignError, match="another campaign"):
                await collect(campaign.send_many(mobiles, "hi", chunk_size=50))
    assert sent_counts(emulator) == Counter(mobiles[:100])


@pytest.mark.parametrize("more", [1, 30])
async def test_a_longer_input_after_a_finished_run_is_refused_before_sending(
    emulator: Any, tmp_path: Path, more: int
) -> None:
    # The recorded input ended on a chunk's boundary, so the extra items make chunks the
    # journal never saw: they were sent and charged, and only the input's end said it
    # had changed (a user's trial; the journal then counted 101 accepted of 100).
    path = tmp_path / "c.db"
    mobiles = numbers(100)
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi", chunk_size=50))
            before = campaign.summary()
        assert before.complete
        longer = numbers(100 + more)
        async with client.campaign(path) as campaign:
            beyond = r"more than the 100 items .*position 100 is beyond"
            with pytest.raises(CampaignError, match=beyond):
                await collect(campaign.send_many(longer, "hi", chunk_size=50))
            assert campaign.summary() == before
        async with client.campaign(path) as campaign:
            assert await collect(campaign.send_many(mobiles, "hi", chunk_size=50)) == []
            assert campaign.summary() == before
    assert sent_counts(emulator) == Counter(mobiles)


async def test_a_shorter_input_than_a_run_reached_is_refused_at_its_end(
    emulator: Any, tmp_path: Path
) -> None:
    # A run stopped by the balance reached 200 items; resumed with the first 150 only,
    # the input's end was recorded as the whole input: the chunks beyond it could never
    # be sent again, and the whole input was then refused as "changed" (a user's trial).
    path = tmp_path / "c.db"
    mobiles = numbers(300)
    emulator.state.set_balance(None, "10")  # 100 numbers
    async with client_for(emulator, max_concurrency=1) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi", chunk_size=50, check_balance=False))
            assert campaign.summary().reached == 200
        emulator.state.set_balance(None, "1000")
        async with client.campaign(path) as campaign:
            reached = campaign.summary().reached
            assert reached >= 200
            with pytest.raises(CampaignError, match="ends after 150 items, but an earlier run"):
                await collect(campaign.send_many(mobiles[:150], "hi", chunk_size=50))
            summary = campaign.summary()
            assert (summary.input_size, summary.accepted, summary.reached) == (None, 150, reached)
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi", chunk_size=50))
            summary = campaign.summary()
    assert summary.complete and summary.accepted == 300
    assert sent_counts(emulator) == Counter(mobiles)


async def test_async_inputs_and_batches_resume(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    pairs = [(m, f"Dear {i}, your code is {i:04d}") for i, m in enumerate(numbers(250))]

    async def source() -> Any:
        for pair in pairs:
            yield pair

    emulator.state.set_balance(None, "10")
    async with client_for(emulator, max_concurrency=1) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_batch_many(source(), check_balance=False))
            assert campaign.summary().accepted == 100
        emulator.state.set_balance(None, "1000")
        edited = list(pairs)
        edited[160] = (pairs[160][0], "another text")
        async with client.campaign(path) as campaign:
            with pytest.raises(CampaignError, match="input differs"):
                await collect(campaign.send_batch_many(edited))
        async with client.campaign(path) as campaign:
            await collect(campaign.send_batch_many(source()))
            summary = campaign.summary()
    assert summary.accepted == 250
    assert summary.complete
    texts = {(m.mobile, m.text) for m in emulator.state.messages()}
    assert texts == {(m, "【Aisix】" + t) for m, t in pairs}


async def test_invalid_numbers_are_failed_for_good(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    mobiles = [*numbers(10), "not-a-number", *numbers(5, start=10)]
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi"))
            summary = campaign.summary()
        assert (summary.accepted, summary.failed, summary.not_yet_sent) == (15, 1, 0)
        assert summary.complete
        async with client.campaign(path) as campaign:
            assert await collect(campaign.send_many(mobiles, "hi")) == []
            assert campaign.summary() == summary


async def test_replies_are_recorded_before_they_are_yielded(emulator: Any, tmp_path: Path) -> None:
    emulator.state.inject_reply("13900000001", "STOP")
    emulator.state.inject_reply("13900000002", "yes please")
    async with client_for(emulator) as client:
        async with (
            client.campaign(tmp_path / "c.db") as campaign,
            campaign.watch_replies(interval=0.01, stop_when_idle=0.2) as replies,
        ):
            async for _reply in replies:
                break  # the rest stays unread in the stream, and in the journal
        async with client.campaign(tmp_path / "c.db") as campaign:
            stored = await campaign.stored_replies()
    assert [(r.mobile, r.content) for r in stored] == [
        ("13900000001", "STOP"),
        ("13900000002", "yes please"),
    ]


@pytest.mark.parametrize("read", ["reports", "replies"])
async def test_reports_and_replies_read_at_another_gateway_say_so(
    emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, read: str
) -> None:
    # Replies were read silently at another gateway than the campaign's sends went to
    # (reports said so): a campaign's replies are in the queue of the gateway it sent
    # through.
    path = tmp_path / "c.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(numbers(5), "hi"))
    emulator.state.inject_reply("13900000001", "STOP")
    moved = emulator.base_url.replace("127.0.0.1", "localhost")
    for base_url, said in ((emulator.base_url, False), (moved, True)):
        caplog.clear()
        async with (
            client_for(emulator, base_url=base_url) as client,
            client.campaign(path) as campaign,
        ):
            watch = campaign.watch_delivery_reports if read == "reports" else campaign.watch_replies
            async with watch(interval=0.01, stop_when_idle=0.1) as stream:
                async for _ in stream:
                    pass
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        line = (
            f"campaign {path}: its last send went to {emulator.base_url}/OpenApi, these "
            f"{read} are read from {moved}/DataApi"
        )
        assert any(m.startswith(line) for m in warned) is said, warned
        assert not any(emulator.authkey in m for m in warned)


async def test_a_foreign_file_is_refused(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("13900000001\n13900000002\n")
    async with client_for(emulator) as client:
        with pytest.raises(CampaignError, match="not a campaign journal"):
            async with client.campaign(path):
                pass
    assert path.read_text() == "13900000001\n13900000002\n"


async def test_two_processes_on_one_journal(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(20)
    async with client_for(emulator) as client:
        async with client.campaign(path) as campaign:
            await collect(campaign.send_many(mobiles, "hi"))
        with (
            journal_held_elsewhere(path) as pid,
            pytest.raises(CampaignError, match=rf"in use by another process \(pid {pid}\)"),
        ):
            async with client.campaign(path):
                pass
        async with client.campaign(path) as campaign:
            assert campaign.summary().accepted == 20


async def test_two_campaigns_on_one_journal_in_one_process(emulator: Any, tmp_path: Path) -> None:
    # The lock is held per open file, so a second campaign in the same process is refused
    # too; its message named "another process" with this process's own pid.
    path = tmp_path / "c.db"
    async with client_for(emulator) as one, client_for(emulator) as two:
        async with one.campaign(path):
            with pytest.raises(CampaignError, match=r"in use by this process") as refused:
                async with two.campaign(path):
                    pass
            assert "another process" not in str(refused.value)
        async with two.campaign(path) as campaign:
            assert await collect(campaign.send_many(numbers(5), "hi")) != []


async def test_a_full_disk_stops_the_run_and_loses_nothing(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(3000)
    async with client_for(emulator, max_concurrency=4) as client:
        async with client.campaign(path) as campaign:
            journal = campaign._opened()
            (pages,) = journal._conn.execute("PRAGMA page_count").fetchone()
            journal._conn.execute(f"PRAGMA max_page_count={pages + 1}")
            with pytest.raises(CampaignError, match="disk is full"):
                await collect(campaign.send_many(mobiles, "hi", chunk_size=100))
        sent = sent_counts(emulator)
        assert sent, "some chunks went out before the disk filled"
        assert max(sent.values()) == 1
        async with client.campaign(path) as campaign:
            summary = campaign.summary()
            # Every number the gateway accepted is in the journal: accepted, or unknown.
            assert summary.accepted + summary.unknown >= sum(sent.values())
            await collect(campaign.send_many(mobiles, "hi", chunk_size=100))
            final = campaign.summary()
    unknown = {m for _, m in final.unknown_recipients}
    counts = sent_counts(emulator)
    assert final.complete
    assert final.accepted + final.unknown == 3000
    for mobile in mobiles:
        assert counts[mobile] == 1 or (mobile in unknown and counts[mobile] <= 1)


async def test_a_journal_that_cannot_record_stops_dispatch(emulator: Any, tmp_path: Path) -> None:
    # Once the journal could not record, every later chunk failed on the same error while
    # the whole input was read (291,000 "failed" of 300,000 in a user's trial): now
    # dispatch stops, and the rest is not sent (safe to send on resume).
    from aisix_async import NotSentError

    path = tmp_path / "c.db"
    mobiles = numbers(3000)
    outcomes: list[Any] = []
    async with client_for(emulator, max_concurrency=4) as client, client.campaign(path) as campaign:
        journal = campaign._opened()
        (pages,) = journal._conn.execute("PRAGMA page_count").fetchone()
        journal._conn.execute(f"PRAGMA max_page_count={pages + 1}")
        with pytest.raises(CampaignError, match="disk is full"):
            async with campaign.send_many(mobiles, "hi", chunk_size=100) as stream:
                async for outcome in stream:
                    outcomes.append(outcome)
        assert stream.stopped_by is not None
        assert "the journal cannot record the run" in stream.stopped_by.message
    # The chunks the journal could not record before their requests are not sent (they
    # were counted failed, among the gateway's refusals, in a user's trial), as is the
    # rest: every recipient was sent, or reported not sent.
    assert not any(isinstance(o.error, CampaignError) for o in outcomes)
    not_sent = [o for o in outcomes if isinstance(o.error, NotSentError)]
    assert sum(isinstance(o.error.cause, CampaignError) for o in not_sent) <= 4
    assert len(sent_counts(emulator)) + sum(len(o.mobiles) for o in not_sent) == 3000
    assert sum(len(o.mobiles) for o in not_sent) >= 1000


async def test_one_send_at_a_time(emulator: Any, tmp_path: Path) -> None:
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as c:
        async with c.send_many(numbers(5), "hi") as first:
            with pytest.raises(CampaignError, match="already sending"):
                async with c.send_many(numbers(5), "hi"):
                    pass
            assert len([o async for o in first]) == 1
        with anyio.fail_after(5):
            assert await collect(c.send_many(numbers(5), "hi")) == []


async def test_a_run_cancelled_mid_send_records_its_cut_off_chunks_as_unknown(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "c.db"
    mobiles = numbers(3000)
    # Answers spread over 0.4 s, and the block left once the gateway holds a request: a
    # loaded machine may hand over the first outcome late (see test_bulk_abandon).
    emulator.state.set_faults(latency_ms=80, jitter_ms=400, fault_actions=["sendOnce"])
    async with client_for(emulator, max_concurrency=8, initial_concurrency=8) as client:
        async with client.campaign(path) as campaign:
            stream = campaign.send_many(mobiles, "Spring sale", chunk_size=100)
            yielded: list[SendOutcome] = []
            with anyio.CancelScope() as scope:
                async with stream:
                    async for outcome in stream:
                        yielded.append(outcome)
                        await eventually(lambda: emulator.state.requests_held, timeout=10)
                        scope.cancel()  # as a timeout around the block would
            summary = campaign.summary()
            cut_off = [o for o in stream.abandoned if o.status is OutcomeStatus.UNKNOWN]
        await anyio.sleep(0.6)  # the emulator finishes what it had taken on
    assert cut_off
    # Listed at once, with their numbers, instead of "in flight" until a resume.
    assert summary.in_flight == 0
    assert summary.unknown == sum(len(o.mobiles) for o in cut_off)
    listed = {m for _, m in summary.unknown_recipients}
    assert listed == {m for o in cut_off for m in o.mobiles}
    accepted = {
        m
        for o in yielded + stream.abandoned
        if o.status is OutcomeStatus.ACCEPTED
        for m in o.mobiles
    }
    assert summary.accepted == len(accepted)
    assert set(sent_counts(emulator)) <= listed | accepted

    # Resuming sends everything else, and nothing twice.
    emulator.state.set_faults(latency_ms=0, jitter_ms=0)
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(mobiles, "Spring sale", chunk_size=100))
        summary = campaign.summary()
    assert summary.complete
    assert summary.accepted + summary.unknown == 3000
    assert all(n == 1 for n in sent_counts(emulator).values())
    assert set(mobiles) - set(sent_counts(emulator)) <= listed


async def test_a_block_left_early_leaves_the_file_saying_what_its_summary_says(
    emulator: Any, tmp_path: Path
) -> None:
    # The chunks a run planned that never got their turn (waiting for a slot) were "not
    # yet sent" in its summary, and absent from the file: a reader of the journal
    # (`aisix campaign`) counted 1,200 recipients fewer left to send, and a shorter reach.
    path = tmp_path / "c.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        stream = campaign.send_many(numbers(20_000), "Sale", chunk_size=100, check_balance=False)
        async with stream:
            async for outcome in stream:
                if outcome.chunk >= 2:
                    break
        waiting = [o for o in stream.abandoned if isinstance(o.error, NotSentError)]
        summary = campaign.summary()
    assert waiting, "no planned chunk was waiting for its turn"
    async with open_campaign_journal(path) as journal:
        stored = journal.summary()
    assert stored == summary
    assert summary.not_yet_sent >= sum(len(o.mobiles) for o in waiting)


async def test_the_journal_keeps_the_rate_learned_and_a_resumed_run_starts_from_it(
    emulator: Any, tmp_path: Path
) -> None:
    emulator.state.configure(rate=20.0, burst=2.0)
    path = tmp_path / "c.db"
    # Enough requests that a rate is measured (at the second cut or so: after 12-45
    # requests at this limit on the simulated gateway) before the run is stopped.
    mobiles = numbers(100)
    retry = RetryPolicy(attempts=50, timeout=60, initial_backoff=0.01, max_backoff=0.05)
    async with client_for(emulator, retry=retry) as client, client.campaign(path) as campaign:
        stream = campaign.send_many(mobiles, "Spring sale", chunk_size=1)
        async with stream:
            async for outcome in stream:
                if outcome.chunk >= 70:
                    break  # stopped early: a later run resumes
        learned = client.rate_state()
    # Loose: on a busy machine answers come back in clumps, and a cold start's estimate
    # read 33 once (under a full test run with other work beside it); a machine too busy
    # to send 20 a second measures what it could send (7.5 and 9.5 in a CI-time survey).
    # The floor only says the pace was measured, not left at its minimum (0.5).
    assert learned.pace is not None and 3 <= learned.pace <= 40
    # A plain key/value table beside the campaign's own, in the same file.
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute("SELECT value FROM meta WHERE key = 'rate_state'").fetchone()
    assert RateState.from_dict(json.loads(text)).pace == pytest.approx(learned.pace)

    async with client_for(emulator, retry=retry) as client, client.campaign(path) as campaign:
        # Before sending anything, the resumed run is already paced at what was learned.
        pace = client.stats().pace
        assert pace is not None and pace == pytest.approx(Scheduler.BETA * learned.pace, rel=0.05)
        await collect(campaign.send_many(mobiles, "Spring sale", chunk_size=1))
        summary = campaign.summary()
    # Cut-off chunks stay unknown (never resent blindly); the rest went out once each.
    assert summary.accepted + summary.unknown == 100 and summary.accepted >= 70
    assert max(sent_counts(emulator).values()) == 1


async def test_a_client_given_a_rate_state_keeps_it_over_the_journal(
    emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "c.db"
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        await collect(campaign.send_many(numbers(3), "Spring sale", chunk_size=1))
    mine = RateState(pace=7.0, concurrency=2, learned_at=time.time())
    async with (
        client_for(emulator, rate_state=mine) as client,
        client.campaign(path) as campaign,
    ):
        # Within a thousandth: the state ages (and is trusted less) by the milliseconds
        # between its making and the client's, which under load failed an exact match.
        assert client.stats().pace == pytest.approx(Scheduler.BETA * 7.0, rel=1e-3)


async def test_a_campaign_resumed_at_another_gateway_is_said_and_takes_no_rate_from_it(
    emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A campaign rehearsed against one gateway (the emulator, a staging host) and then
    # resumed at another on the same journal skips everyone the first one took: not
    # refused (a gateway may move), but said before anything is sent, and the first
    # gateway's limit is not taken for the second's.
    path = tmp_path / "c.db"
    mobiles = numbers(6)
    first_url = emulator.base_url
    other_url = first_url.replace("127.0.0.1", "localhost")
    assert other_url != first_url  # the same emulator, as another gateway's URL
    async with client_for(emulator) as client, client.campaign(path) as campaign:
        stream = campaign.send_many(mobiles, "Spring sale", chunk_size=1)
        async with stream:
            async for outcome in stream:
                if outcome.chunk >= 2:
                    break
    async with open_campaign_journal(path) as journal:
        assert journal.gateway == f"{first_url}/OpenApi"
    with sqlite3.connect(path) as conn:
        state = RateState(pace=7.0, concurrency=2, learned_at=time.time())
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('rate_state', ?)",
            (json.dumps(state.as_dict()),),
        )

    caplog.set_level("WARNING", logger="aisix_async")
    async with (
        client_for(emulator, base_url=other_url) as client,
        client.campaign(path) as campaign,
    ):
        assert client.stats().pace is None  # a cold start, not the other gateway's pace
        await collect(campaign.send_many(mobiles, "Spring sale", chunk_size=1))
        summary = campaign.summary()
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1
    assert f"sent to {first_url}/OpenApi, this one sends to {other_url}/OpenApi" in said[0]
    assert summary.accepted + summary.unknown == 6
    assert max(sent_counts(emulator).values()) == 1
    async with open_campaign_journal(path) as journal:
        assert journal.gateway == f"{other_url}/OpenApi"

    caplog.clear()
    async with (
        client_for(emulator, base_url=other_url) as client,
        client.campaign(path) as campaign,
    ):
        await collect(campaign.send_many(mobiles, "Spring sale", chunk_size=1))
    # Said once per change, not at every run after it.
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
