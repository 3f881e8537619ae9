"""DeliveryTracker: a campaign followed to its end, checked against the emulator's ledger."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import pytest
from helpers import client_for, numbers

from aisix_async import (
    DeliveryReport,
    DeliveryTracker,
    MalformedRecord,
    OutcomeStatus,
    ReportResult,
    SendOutcome,
    SendReceipt,
)

pytestmark = pytest.mark.anyio


# The library's own retry policy, and numbers of their own (137...).
_client = partial(client_for, retry=None)
_numbers = partial(numbers, prefix="137")


def _receipt(msgid: str) -> SendReceipt:
    return SendReceipt(
        cid="c", sid="s", msgid=msgid, total=1, price=Decimal("0.10"), remain=Decimal("1")
    )


def _report(msgid: str, mobile: str, code: str) -> DeliveryReport:
    result = ReportResult.DELIVERED if code == "DELIVRD" else ReportResult.FAILED
    return DeliveryReport("1", msgid, mobile, result, code)


# -- matching (pure) --------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_nan_timeout_is_refused_as_such() -> None:
    # It reached anyio, which raised a bare ValueError.
    from aisix_async import ValidationError

    with pytest.raises(ValidationError, match="timeout must be a number of seconds"):
        await DeliveryTracker().wait(timeout=float("nan"))


@pytest.mark.anyio
async def test_a_negative_timeout_is_refused_before_anything_is_fetched() -> None:
    # It ended the wait at once, with a result that read as done.
    from aisix_async import ValidationError

    class Source:
        def watch_delivery_reports(self, **options: Any) -> Any:
            raise AssertionError("nothing may be fetched")

    with pytest.raises(ValidationError, match="0 or more"):
        await DeliveryTracker().wait(timeout=-1)
    with pytest.raises(ValidationError, match="0 or more"):
        await DeliveryTracker().follow(Source(), timeout=-1)  # type: ignore[arg-type]
    assert (await DeliveryTracker().wait(timeout=0)).done


def test_track_refuses_what_is_not_a_send_outcome() -> None:
    # A number passed here failed with "'str' object has no attribute 'status'".
    from aisix_async import ValidationError

    with pytest.raises(ValidationError, match=r"SendOutcome .* got str"):
        DeliveryTracker().track("18100002707")  # type: ignore[arg-type]


def test_matching_is_on_msgid_and_mobile() -> None:
    tracker = DeliveryTracker()
    assert tracker.result().done  # nothing tracked, nothing to wait for
    assert tracker.track_receipt(_receipt("9"), ["1", "2", "3"]) == 3
    assert not tracker.result().done
    assert tracker.feed(_report("9", "1", "DELIVRD"))
    # Same msgid, a number that was not in the request: not ours.
    stranger = _report("9", "4", "DELIVRD")
    assert not tracker.feed(stranger)
    # A non-final code is tracked but settles nothing.
    assert tracker.feed(_report("9", "2", "ACCEPTD"))
    assert tracker.latest("9", "2") is not None
    assert sorted(tracker.pending()) == [("9", "2"), ("9", "3")]
    assert tracker.feed(_report("9", "2", "undeliv"))
    assert tracker.feed(_report("9", "3", "DTBLACK"))
    assert tracker.done
    assert tracker.counts() == Counter({"DELIVRD": 1, "UNDELIV": 1, "DTBLACK": 1})
    assert tracker.untracked == [stranger]
    # A repeated final report is recognised, not counted twice.
    assert tracker.feed(_report("9", "3", "DTBLACK"))
    assert tracker.duplicates == 1
    assert tracker.counts()["DTBLACK"] == 1


def test_feed_many_takes_what_get_delivery_reports_returns() -> None:
    # Items it could not read come back as MalformedRecord in their place: kept here,
    # not fed as reports (nor an error for the whole batch).
    tracker = DeliveryTracker()
    tracker.track_receipt(_receipt("9"), ["1", "2"])
    bad = MalformedRecord("getSendState", {"msgid": "9", "mobile": "2"}, "no result")
    stranger = _report("8", "1", "DELIVRD")
    assert tracker.feed_many([_report("9", "1", "DELIVRD"), bad, stranger]) == [stranger]
    assert tracker.malformed == [bad]
    assert sorted(tracker.pending()) == [("9", "2")]


def test_a_report_that_beats_its_receipt_is_adopted() -> None:
    tracker = DeliveryTracker()
    early = _report("7", "5", "DELIVRD")
    assert not tracker.feed(early)
    assert tracker.untracked == [early]
    tracker.track_receipt(_receipt("7"), ["5", "6"])
    assert tracker.untracked == []
    assert tracker.pending() == [("7", "6")]


def test_a_duplicate_that_beats_its_receipt_is_counted_as_one() -> None:
    # Both final reports of one recipient came before its receipt was tracked: the
    # second stayed untracked for good (a caller passing untracked reports on forwarded
    # its own campaign's duplicate), where after the receipt it counts as a duplicate.
    tracker = DeliveryTracker()
    tracker.feed(_report("7", "5", "DELIVRD"))
    tracker.feed(_report("7", "5", "DELIVRD"))
    tracker.track_receipt(_receipt("7"), ["5", "6"])
    assert tracker.untracked == []
    assert tracker.duplicates == 1
    tracker.feed(_report("7", "6", "DELIVRD"))
    tracker.feed(_report("7", "6", "DELIVRD"))
    assert (tracker.untracked, tracker.duplicates, tracker.pending()) == ([], 2, [])


def test_outcomes_of_each_kind() -> None:
    tracker = DeliveryTracker()
    once = SendOutcome(
        chunk=0,
        positions=(0, 1),
        mobiles=("a", "b"),
        status=OutcomeStatus.ACCEPTED,
        action="sendOnce",
        receipts=(_receipt("1"),),
    )
    batch = SendOutcome(
        chunk=1,
        positions=(2, 3),
        mobiles=("c", "d"),
        status=OutcomeStatus.ACCEPTED,
        action="sendBatch",
        receipts=(_receipt("2"), _receipt("3")),
    )
    failed = SendOutcome(
        chunk=2, positions=(4,), mobiles=("e",), status=OutcomeStatus.FAILED, action="sendOnce"
    )
    unknown = SendOutcome(
        chunk=3, positions=(5,), mobiles=("f",), status=OutcomeStatus.UNKNOWN, action="sendOnce"
    )
    assert [tracker.track(o) for o in (once, batch, failed, unknown)] == [2, 2, 0, 0]
    assert sorted(tracker.pending()) == [("1", "a"), ("1", "b"), ("2", "c"), ("3", "d")]
    result = tracker.result()
    assert result.not_sent == ("e",)
    assert result.unknown == ("f",)
    assert result.tracked == 4


async def test_wait_without_a_stream_returns_when_others_feed_it() -> None:
    tracker = DeliveryTracker()
    tracker.track_receipt(_receipt("1"), ["a", "b"])

    async def feeder() -> None:
        await anyio.sleep(0.01)
        tracker.feed(_report("1", "a", "DELIVRD"))
        await anyio.sleep(0.01)
        tracker.feed(_report("1", "b", "EXPIRED"))

    async with anyio.create_task_group() as group:
        group.start_soon(feeder)
        result = await tracker.wait(timeout=5)
    assert result.done
    assert result.counts == {"DELIVRD": 1, "EXPIRED": 1}
    assert result.counts.most_common(1)[0][1] == 1  # a Counter, as the README says


# -- against the emulator ---------------------------------------------------------------

# Each phase of the campaign runs under one report code, so the emulator's ledger says
# exactly which code every recipient gets: the phase's, or DTBLACK on the blacklist.
_PHASES = [("DELIVRD", 8000), ("UNDELIV", 6000), ("EXPIRED", 3000), ("REJECTD", 3000)]


async def test_a_20000_recipient_campaign_is_tracked_to_the_exact_truth(emulator: Any) -> None:
    numbers = _numbers(20_000)
    blacklist = set(numbers[::37])
    state = emulator.state
    state.configure(
        report_delay=0.0, reports_per_call=1000, blacklist=blacklist, report_mix={"DELIVRD": 1}
    )
    state.set_balance(None, "5000")  # 20,050 messages at 0.10
    tracker = DeliveryTracker()
    async with _client(emulator, max_concurrency=8) as client:
        # Messages nobody tracks: their reports must come out as untracked, not vanish.
        other = await client.send_once(_numbers(50, start=50_000), "not part of the campaign")
        phase_slices: list[tuple[str, int, int]] = []
        offset = 0
        for index, (code, count) in enumerate(_PHASES):
            state.configure(report_mix={code: 1})
            start = state.message_count
            chunk = numbers[offset : offset + count]
            offset += count
            if index % 2 == 0:
                # The bulk engine: outcomes straight into the tracker.
                async with client.send_many(chunk, f"campaign phase {index}") as outcomes:
                    async for outcome in outcomes:
                        assert outcome.status is OutcomeStatus.ACCEPTED
                        tracker.track(outcome)
            else:
                # Single sends in 1000-number chunks, concurrently, tracked by receipt.
                async def send(part: list[str], text: str) -> None:
                    tracker.track_receipt(await client.send_once(part, text), part)

                async with anyio.create_task_group() as group:
                    for at in range(0, count, 1000):
                        group.start_soon(send, chunk[at : at + 1000], f"campaign phase {index}")
            phase_slices.append((code, start, state.message_count))
        assert tracker.tracked == 20_000
        result = await tracker.follow(client, timeout=30, interval=0.01)

    truth: Counter[str] = Counter()
    for code, start, end in phase_slices:
        for record in state.messages(start, end - start):
            truth["DTBLACK" if record.mobile in blacklist else code] += 1
    assert sum(truth.values()) == 20_000
    assert result.done
    assert result.pending == ()
    assert dict(result.counts) == dict(truth)
    assert truth["DTBLACK"] == len(blacklist)
    assert sorted((r.msgid, r.mobile) for r in result.untracked) == sorted(
        (other.msgid, n) for n in _numbers(50, start=50_000)
    )
    assert state.pending_reports() == 0


async def test_time_up_lists_the_pending(emulator: Any) -> None:
    # ACCEPTD is not final: these recipients never settle.
    emulator.state.configure(report_delay=0.0, report_mix={"ACCEPTD": 1})
    tracker = DeliveryTracker()
    async with _client(emulator) as client:
        numbers = _numbers(20)
        receipt = await client.send_once(numbers, "hello")
        tracker.track_receipt(receipt, numbers)
        with anyio.fail_after(5):
            result = await tracker.follow(client, timeout=0.3, interval=0.01)
    assert not result.done
    assert sorted(result.pending) == sorted((receipt.msgid, n) for n in numbers)
    assert result.counts == {}
    latest = tracker.latest(receipt.msgid, numbers[0])
    assert latest is not None
    assert latest.code == "ACCEPTD"


async def test_a_cancelled_follow_keeps_the_reports_its_stream_had_fetched(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelled (a caller's timeout, a shutdown) while the stream held batches it had
    # fetched (it polls ahead of its reader): they went with the stream, handed out once
    # by the gateway, and stayed pending for good.
    emulator.state.configure(report_delay=0.0, reports_per_call=100, report_mix={"DELIVRD": 1})
    tracker = DeliveryTracker()
    async with _client(emulator) as client:
        numbers = _numbers(500)
        tracker.track_receipt(await client.send_once(numbers[:250], "hello"), numbers[:250])
        tracker.track_receipt(await client.send_once(numbers[250:], "hello"), numbers[250:])
        with anyio.CancelScope() as scope:
            feed = tracker.feed

            def feed_then_cancel(report: Any) -> None:
                feed(report)
                scope.cancel()

            monkeypatch.setattr(tracker, "feed", feed_then_cancel)
            await tracker.follow(client, timeout=30, interval=0.01)
        assert scope.cancelled_caught
        # Every report the gateway handed out reached the tracker ...
        handed_out = 500 - emulator.state.pending_reports()
        assert handed_out >= 100
        assert sum(tracker.result().counts.values()) == handed_out
        # ... and a follow after it gets the rest.
        monkeypatch.undo()
        result = await tracker.follow(client, timeout=10, interval=0.01)
    assert result.done and result.counts == {"DELIVRD": 500}


# -- the compact store (pure) -----------------------------------------------------------


def test_numbers_of_every_shape_round_trip() -> None:
    # Leading zeros, a leading +, letters, a long string: each kept exactly as given.
    odd = ["0086139000", "+8613900000000", "abc", "1" * 30, "+", "", "١٢٣"]
    tracker = DeliveryTracker()
    tracker.track_receipt(_receipt("m"), odd)
    assert sorted(tracker.pending()) == sorted(("m", mobile) for mobile in odd)
    for mobile in odd:
        assert tracker.feed(_report("m", mobile, "DELIVRD")), mobile
    assert tracker.done
    assert not tracker.feed(_report("m", "86139000", "DELIVRD"))  # zeros matter
    latest = tracker.latest("m", "+8613900000000")
    assert latest is not None
    assert (latest.code, latest.result) == ("DELIVRD", ReportResult.DELIVERED)
    assert latest.is_final


def test_a_number_twice_in_one_request_expects_two_reports() -> None:
    tracker = DeliveryTracker()
    assert tracker.track_receipt(_receipt("d"), ["5", "5", "6"]) == 3
    assert sorted(tracker.pending()) == [("d", "5"), ("d", "5"), ("d", "6")]
    tracker.feed(_report("d", "5", "DELIVRD"))
    assert tracker.pending().count(("d", "5")) == 1
    tracker.feed(_report("d", "5", "UNDELIV"))
    tracker.feed(_report("d", "5", "UNDELIV"))  # a third: a duplicate
    assert tracker.duplicates == 1
    assert tracker.pending() == [("d", "6")]


def test_one_recipient_receipts_and_a_msgid_tracked_again() -> None:
    tracker = DeliveryTracker()
    tracker.track_receipt(_receipt("s"), ["1"])  # packed as one integer
    assert tracker.feed(_report("s", "1", "REJECTD"))
    # The same msgid again with more numbers: the settled one stays settled.
    tracker.track_receipt(_receipt("s"), ["2", "1"])
    assert sorted(tracker.pending()) == [("s", "1"), ("s", "2")]
    latest = tracker.latest("s", "1")
    assert latest is not None and latest.code == "REJECTD"
    tracker.feed(_report("s", "1", "DELIVRD"))
    tracker.feed(_report("s", "2", "DELIVRD"))
    assert tracker.done
    assert tracker.counts() == Counter({"DELIVRD": 2, "REJECTD": 1})
    assert tracker.tracked == 3


def test_a_non_final_report_is_kept_while_pending_only() -> None:
    tracker = DeliveryTracker()
    tracker.track_receipt(_receipt("n"), ["1"])
    interim = DeliveryReport("42", "n", "1", ReportResult.UNKNOWN, "ACCEPTD", extra={"x": "y"})
    tracker.feed(interim)
    assert tracker.latest("n", "1") is interim  # whole, with id and extra
    tracker.feed(_report("n", "1", "EXPIRED"))
    latest = tracker.latest("n", "1")
    assert latest is not None and latest.code == "EXPIRED"
    assert tracker.latest("n", "2") is None
    assert tracker.latest("zz", "1") is None


def test_failed_and_unknown_numbers_are_listed_as_given() -> None:
    tracker = DeliveryTracker()
    failed = SendOutcome(
        chunk=0,
        positions=(0, 1),
        mobiles=("+861", "x"),
        status=OutcomeStatus.FAILED,
        action="sendOnce",
    )
    unknown = SendOutcome(
        chunk=1, positions=(2,), mobiles=("007",), status=OutcomeStatus.UNKNOWN, action="sendOnce"
    )
    tracker.track(failed)
    tracker.track(unknown)
    result = tracker.result()
    assert result.not_sent == ("+861", "x")
    assert result.unknown == ("007",)
