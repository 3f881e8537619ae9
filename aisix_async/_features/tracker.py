"""DeliveryTracker: follow what a campaign produced until every recipient has a final report.

A send's receipt says the gateway *accepted* messages; only delivery reports say what
reached phones. The tracker joins the two on ``(msgid, mobile)``, never on msgid alone:
sendOnce answers one msgid for every number of its request, so a msgid names up to a
thousand recipients.

Two rules keep the count honest:

* A report is never discarded. One the tracker does not know is kept in
  :attr:`DeliveryTracker.untracked` (and ``feed`` returns False) for the caller to pass
  on. Reports can even arrive before their receipt is tracked (a fast report queue, a
  receipt still being processed): when that receipt is tracked later, the waiting report
  is adopted and leaves ``untracked``.
* Only a final report settles a recipient (``DeliveryReport.is_final``): a final operator
  code (:data:`FINAL_OPERATOR_CODES`), or a code we do not know on a report whose result
  says failed or delivered. ACCEPTD, UNKNOWN, ERRBUSY are kept as the latest word on a
  recipient, who stays pending.

Memory: a tracker may follow ten million recipients, so nothing is kept per recipient
that can be shared. A msgid's recipients are one :class:`_Group`: their numbers as 64-bit
integers in a sorted ``array`` (found by bisection), a two-byte count of final reports
still expected each, and a one-byte index of the final code received (codes, with their
``result``, live once in a table). That is 11 bytes per recipient of a sendOnce chunk,
plus the group itself. A msgid of one recipient (sendBatch, sendParam) is packed into one
integer in a dict instead, about 130 bytes. Non-final reports are kept whole only while
their recipient is pending; untracked reports are kept whole (they are the caller's).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import anyio
import attrs

from .._core.errors import ValidationError
from .._core.models import DeliveryReport, MalformedRecord, ReportResult, SendReceipt
from .reports import RecordStream

__all__ = ["DeliveryTracker", "ReportSource", "TrackerResult"]

_Key = tuple[str, str]

# A one-recipient msgid packs (number, final code index, reports still expected) into
# one int: number * _PACK + code * 2 + left. Code indexes stay below 255 (a byte).
_PACK = 1024
_NO_CODE = 0
_MAX_CODES = 255


class ReportSource(Protocol):
    """What :meth:`DeliveryTracker.follow` polls: an ``AisixClient`` (or a stand-in)."""

    def watch_delivery_reports(
        self, *, interval: float = ..., max_backoff: float = ...
    ) -> RecordStream[DeliveryReport]: ...


class _OutcomeLike(Protocol):
    """What the tracker reads from a bulk SendOutcome."""

    @property
    def status(self) -> Any: ...

    @property
    def mobiles(self) -> Sequence[str]: ...

    @property
    def receipts(self) -> Sequence[SendReceipt]: ...


@attrs.frozen(kw_only=True)
class TrackerResult:
    """Where a tracked campaign stands: final counts, who is still pending, what was not sent."""

    #: Final reports by operator code (DELIVRD, UNDELIV, DTBLACK ...): ``most_common()``.
    counts: Counter[str]
    #: (msgid, mobile) of every tracked recipient without a final report yet.
    pending: tuple[tuple[str, str], ...]
    tracked: int
    #: True when every tracked recipient has a final report.
    done: bool
    #: Reports that matched no tracked recipient, kept for the caller.
    untracked: tuple[DeliveryReport, ...]
    #: Numbers of outcomes the gateway refused (FAILED): nothing to wait for.
    not_sent: tuple[str, ...]
    #: Numbers of outcomes whose fate is unknown (answer lost): no msgid to match.
    unknown: tuple[str, ...]

    @property
    def finished(self) -> int:
        """Recipients with a final report."""
        return sum(self.counts.values())


class _Numbers:
    """Phone numbers as integers: digits (with an optional leading +) up to 17 of them.

    ``"1" + digits`` (``"2"`` for a leading +) keeps leading zeros and fits in 64 bits.
    Anything else (letters, longer strings) gets a negative id from an intern table, so
    every string the gateway or a caller uses round-trips exactly.
    """

    __slots__ = ("_odd", "_odd_names")

    def __init__(self) -> None:
        self._odd: dict[str, int] = {}
        self._odd_names: list[str] = []

    def encode(self, mobile: str) -> int:
        if mobile.isascii():
            if mobile.isdigit() and len(mobile) <= 17:
                return int("1" + mobile)
            if mobile[:1] == "+" and mobile[1:].isdigit() and 1 < len(mobile) <= 18:
                return int("2" + mobile[1:])
        code = self._odd.get(mobile)
        if code is None:
            self._odd_names.append(mobile)
            code = self._odd[mobile] = -len(self._odd_names)
        return code

    def find(self, mobile: str) -> int | None:
        """Like :meth:`encode`, without interning a string never seen (a lookup)."""
        if mobile.isascii():
            if mobile.isdigit() and len(mobile) <= 17:
                return int("1" + mobile)
            if mobile[:1] == "+" and mobile[1:].isdigit() and 1 < len(mobile) <= 18:
                return int("2" + mobile[1:])
        return self._odd.get(mobile)

    def decode(self, code: int) -> str:
        if code < 0:
            return self._odd_names[-code - 1]
        text = str(code)
        return text[1:] if text[0] == "1" else "+" + text[1:]


class _Group:
    """The recipients of one msgid: sorted numbers, reports still expected, final codes."""

    __slots__ = ("codes", "left", "numbers")

    def __init__(self, encoded: list[int]) -> None:
        encoded.sort()
        numbers = array("q")
        left = array("H")
        for value in encoded:
            if numbers and numbers[-1] == value:
                # A number listed twice in one request: two messages, two reports.
                left[-1] += 1
            else:
                numbers.append(value)
                left.append(1)
        self.numbers = numbers
        self.left = left
        self.codes = bytearray(len(numbers))

    def slot(self, number: int) -> int:
        """The index of ``number``, or -1."""
        i = bisect_left(self.numbers, number)
        return i if i < len(self.numbers) and self.numbers[i] == number else -1

    def merged(self, encoded: list[int]) -> _Group:
        """A group holding these recipients and ``encoded`` (the same msgid tracked again).

        Reports still expected add up; final codes already received are kept.
        """
        group = _Group(list(self.numbers) + encoded)
        for j in range(len(group.numbers)):
            group.left[j] -= 1 if self.slot(group.numbers[j]) >= 0 else 0
        for i, number in enumerate(self.numbers):
            j = group.slot(number)
            group.left[j] += self.left[i]
            group.codes[j] = self.codes[i]
        return group


class DeliveryTracker:
    """Matches delivery reports to the recipients of accepted sends.

    Feed it what was sent (:meth:`track` for a bulk outcome, :meth:`track_receipt` for a
    receipt and its numbers) and the reports (:meth:`feed`, or hand a report stream to
    :meth:`wait`, or let :meth:`follow` run one); ask it at any moment for
    :meth:`counts`, :meth:`pending` and :attr:`done`.
    """

    def __init__(self) -> None:
        self._numbers = _Numbers()
        # msgid -> its recipients; one-recipient msgids packed in _single (see _PACK).
        self._groups: dict[str, _Group] = {}
        self._single: dict[str, int] = {}
        #: Final reports still expected, over every tracked recipient.
        self._expected = 0
        self._tracked = 0
        self._counts: Counter[str] = Counter()
        # Final codes as received (with their result), indexed from 1 (0: none yet).
        self._code_index: dict[tuple[str, ReportResult], int] = {}
        self._code_list: list[tuple[str, ReportResult]] = [("", ReportResult.UNKNOWN)]
        # Final reports beyond the 255 codes a byte can index (never seen in practice).
        self._final_overflow: dict[_Key, DeliveryReport] = {}
        # The latest non-final report of a recipient still pending.
        self._interim: dict[_Key, DeliveryReport] = {}
        self._orphans: dict[int, DeliveryReport] = {}
        self._orphan_index: defaultdict[_Key, list[int]] = defaultdict(list)
        self._orphan_seq = 0
        self._not_sent = array("q")
        self._unknown = array("q")
        self._duplicates = 0
        #: Report items that could not be read (raw attributes kept): a stream's run by
        #: :meth:`follow`, and those given to :meth:`feed_many`.
        self.malformed: list[MalformedRecord] = []
        # Made by a waiter, set and dropped by the next change: a change nobody waits for
        # (most of them, fed from a stream) costs no Event.
        self._changed: anyio.Event | None = None

    # -- what was sent ---------------------------------------------------------------

    def track_receipt(self, receipt: SendReceipt, mobiles: Iterable[str]) -> int:
        """Track the numbers one receipt covers (all of a sendOnce request, or one mobile).

        Returns how many recipients were added.
        """
        msgid = receipt.msgid
        listed = list(mobiles)
        if not listed:
            return 0
        encode = self._numbers.encode
        encoded = [encode(mobile) for mobile in listed]
        group = self._groups.get(msgid)
        packed = self._single.get(msgid)
        if group is None and packed is None and len(encoded) == 1:
            self._single[msgid] = encoded[0] * _PACK + 1
        else:
            if packed is not None:
                # The msgid was a one-recipient entry: it becomes a group.
                del self._single[msgid]
                number, rest = divmod(packed, _PACK)
                code, left = divmod(rest, 2)
                group = _Group([number])
                group.left[0], group.codes[0] = left, code
            self._groups[msgid] = _Group(encoded) if group is None else group.merged(encoded)
        self._tracked += len(encoded)
        self._expected += len(encoded)
        if self._orphans:
            for mobile in dict.fromkeys(listed):
                self._adopt((msgid, mobile))
        self._wake()
        return len(encoded)

    def track(self, outcome: _OutcomeLike) -> int:
        """Track a bulk SendOutcome; returns how many recipients were added.

        ACCEPTED: one receipt covers every number (sendOnce), or one receipt per number in
        the same order (sendBatch, sendParam). FAILED numbers go to ``not_sent`` and
        UNKNOWN ones to ``unknown``: neither has a msgid a report could match.
        """
        if not all(hasattr(outcome, field) for field in ("status", "mobiles", "receipts")):
            # A number or a receipt passed here failed with an AttributeError.
            raise ValidationError(
                "track takes a bulk send's SendOutcome (status, mobiles, receipts), got "
                f"{type(outcome).__name__}; for a single call's receipt use track_receipt"
            )
        status = str(getattr(outcome.status, "name", outcome.status)).upper()
        mobiles = list(outcome.mobiles)
        receipts = list(outcome.receipts)
        if status == "FAILED":
            self._not_sent.extend(map(self._numbers.encode, mobiles))
            return 0
        if status != "ACCEPTED" or not receipts:
            self._unknown.extend(map(self._numbers.encode, mobiles))
            return 0
        if len(receipts) == 1:
            return self.track_receipt(receipts[0], mobiles)
        if len(receipts) != len(mobiles):
            raise ValidationError(
                f"an outcome with {len(receipts)} receipts for {len(mobiles)} numbers cannot "
                "be matched to its recipients"
            )
        return sum(self.track_receipt(r, [m]) for r, m in zip(receipts, mobiles, strict=True))

    def _adopt(self, key: _Key) -> None:
        # Every report waiting for this recipient is its own now, as if fed after the
        # receipt: a second final one is a duplicate (counted), not left untracked for
        # the caller to pass on as someone else's.
        seqs = self._orphan_index.pop(key, None)
        for seq in seqs or ():
            self._apply(key, self._orphans.pop(seq))

    # -- the compact store -----------------------------------------------------------

    def _locate(self, key: _Key) -> tuple[_Group | None, int] | None:
        """Where a recipient is kept: (group, slot), (None, packed), or None if untracked."""
        msgid, mobile = key
        number = self._numbers.find(mobile)
        if number is None:
            return None
        group = self._groups.get(msgid)
        if group is not None:
            slot = group.slot(number)
            return None if slot < 0 else (group, slot)
        packed = self._single.get(msgid)
        if packed is not None and packed // _PACK == number:
            return None, packed
        return None

    def _code_of(self, report: DeliveryReport) -> int:
        entry = (report.code, report.result)
        index = self._code_index.get(entry)
        if index is None:
            if len(self._code_list) > _MAX_CODES:
                return -1
            index = self._code_index[entry] = len(self._code_list)
            self._code_list.append(entry)
        return index

    # -- what came back --------------------------------------------------------------

    def feed(self, report: DeliveryReport) -> bool:
        """Take one report; True if it belongs to a tracked recipient.

        A report for a recipient not tracked is kept in :attr:`untracked` (adopted later
        if its receipt gets tracked) and False is returned: pass it on.
        """
        key = (report.msgid, report.mobile)
        where = self._locate(key)
        if where is None:
            self._orphan_seq += 1
            self._orphans[self._orphan_seq] = report
            self._orphan_index[key].append(self._orphan_seq)
            return False
        self._apply_at(key, report, where)
        return True

    def feed_many(
        self, reports: Iterable[DeliveryReport | MalformedRecord]
    ) -> list[DeliveryReport]:
        """Feed several reports; returns those that were not tracked, in order.

        Takes what ``client.get_delivery_reports()`` returns as it is: an item that could
        not be read is kept in :attr:`malformed`, as :meth:`follow` keeps its stream's.
        """
        untracked: list[DeliveryReport] = []
        for report in reports:
            if isinstance(report, MalformedRecord):
                self.malformed.append(report)
            elif not self.feed(report):
                untracked.append(report)
        return untracked

    def _apply(self, key: _Key, report: DeliveryReport) -> None:
        where = self._locate(key)
        assert where is not None
        self._apply_at(key, report, where)

    def _apply_at(
        self, key: _Key, report: DeliveryReport, where: tuple[_Group | None, int]
    ) -> None:
        group, at = where
        left = group.left[at] if group is not None else at % 2
        if not report.is_final:
            if left > 0:
                self._interim[key] = report
            return
        if left <= 0:
            # A final report for a recipient already settled: the gateway sent one twice.
            self._duplicates += 1
            return
        code = self._code_of(report)
        if code < 0:
            self._final_overflow[key] = report
            code = _NO_CODE
        if group is not None:
            group.left[at] = left - 1
            group.codes[at] = code
        else:
            number = at // _PACK
            self._single[key[0]] = number * _PACK + code * 2
        self._counts[report.code.upper()] += 1
        self._expected -= 1
        if left == 1:
            self._interim.pop(key, None)
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- where it stands -------------------------------------------------------------

    @property
    def untracked(self) -> list[DeliveryReport]:
        """Reports that matched no tracked recipient (yet), in arrival order."""
        return list(self._orphans.values())

    def take_untracked(self) -> list[DeliveryReport]:
        """Return the untracked reports and forget them (they are the caller's now)."""
        reports = self.untracked
        self._orphans.clear()
        self._orphan_index.clear()
        return reports

    @property
    def tracked(self) -> int:
        """Recipients tracked so far."""
        return self._tracked

    @property
    def duplicates(self) -> int:
        """Final reports for recipients already settled (not counted twice)."""
        return self._duplicates

    @property
    def done(self) -> bool:
        """True when every tracked recipient has a final report."""
        return self._expected == 0

    @property
    def expected(self) -> int:
        """Final reports still expected (recipients pending, a number listed twice twice)."""
        return self._expected

    def counts(self) -> Counter[str]:
        """Final reports so far, by operator code (a copy)."""
        return Counter(self._counts)

    def _iter_pending(self) -> Iterator[tuple[str, str]]:
        decode = self._numbers.decode
        for msgid, group in self._groups.items():
            for number, left in zip(group.numbers, group.left, strict=True):
                if left:
                    mobile = decode(number)
                    for _ in range(left):
                        yield msgid, mobile
        for msgid, packed in self._single.items():
            if packed % 2:
                yield msgid, decode(packed // _PACK)

    def pending(self) -> list[tuple[str, str]]:
        """(msgid, mobile) of tracked recipients still without a final report."""
        return list(self._iter_pending())

    def latest(self, msgid: str, mobile: str) -> DeliveryReport | None:
        """The last report seen for a recipient, final or not.

        A pending recipient's non-final report is kept whole. A settled recipient's final
        report is rebuilt from what is kept of it (msgid, mobile, code, result): its
        gateway ``id`` and extra attributes are not kept, to keep memory small.
        """
        key = (msgid, mobile)
        interim = self._interim.get(key)
        if interim is not None:
            return interim
        overflow = self._final_overflow.get(key)
        if overflow is not None:
            return overflow
        where = self._locate(key)
        if where is None:
            return None
        group, at = where
        code = group.codes[at] if group is not None else (at % _PACK) // 2
        if code == _NO_CODE:
            return None
        text, result = self._code_list[code]
        return DeliveryReport(id="", msgid=msgid, mobile=mobile, result=result, code=text)

    def result(self) -> TrackerResult:
        """A snapshot of where the campaign stands."""
        decode = self._numbers.decode
        return TrackerResult(
            counts=Counter(self._counts),
            pending=tuple(self._iter_pending()),
            tracked=self._tracked,
            done=self.done,
            untracked=tuple(self._orphans.values()),
            not_sent=tuple(map(decode, self._not_sent)),
            unknown=tuple(map(decode, self._unknown)),
        )

    # -- waiting ---------------------------------------------------------------------

    # A timeout parameter rather than the caller's own cancel scope, on purpose: when time
    # is up the caller wants the pending list, not a cancellation.
    async def wait(
        self,
        reports: AsyncIterable[DeliveryReport] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> TrackerResult:
        """Return when every tracked recipient has a final report, or after ``timeout``.

        With ``reports`` (e.g. a stream from ``client.watch_delivery_reports()``), they are
        fed as they come; without, someone else feeds the tracker meanwhile. Whatever is
        still pending at the end is listed in the result. Iteration of ``reports`` stops
        as soon as the tracker is done: records a stream fetched but did not yield stay
        in its ``unread()``.
        """
        _check_timeout(timeout)
        with anyio.move_on_after(timeout):
            if reports is None:
                while self._expected:
                    if self._changed is None:
                        self._changed = anyio.Event()
                    await self._changed.wait()
            elif self._expected:
                async for report in reports:
                    self.feed(report)
                    if not self._expected:
                        break
        return self.result()

    async def follow(
        self,
        client: ReportSource,
        *,
        timeout: float,  # noqa: ASYNC109
        interval: float = 5.0,
        max_backoff: float = 60.0,
    ) -> TrackerResult:
        """Poll ``client``'s delivery reports into the tracker until done or ``timeout``.

        Reports fetched for other msgids land in :attr:`untracked`, including those the
        stream fetched but had not yielded when the tracker finished; unreadable report
        items land in :attr:`malformed`. A fatal account error (-2, -3 ...) is raised.
        """
        _check_timeout(timeout)  # before anything is fetched
        stream = client.watch_delivery_reports(interval=interval, max_backoff=max_backoff)
        try:
            async with stream:
                await self.wait(stream, timeout=timeout)
        finally:
            # Cancelled too (a caller's timeout, a shutdown): the reports the stream had
            # fetched and not yet yielded were handed out once by the gateway, and this
            # stream is nobody else's to read them from (500 stayed pending for good).
            self.malformed.extend(stream.malformed)
            leftovers = stream.unread()
            if leftovers:
                self.feed_many(leftovers)
        return self.result()


def _check_timeout(timeout: object) -> None:
    # NaN reached anyio as a bare ValueError, and a negative one ended the wait at once
    # with a result that read as done; inf is allowed (wait until done), and so is 0.
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or timeout != timeout
        or timeout < 0
    ):
        raise ValidationError(f"timeout must be a number of seconds, 0 or more, got {timeout!r}")
