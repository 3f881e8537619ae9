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
* Only final operator codes (:data:`FINAL_OPERATOR_CODES`) settle a recipient. ACCEPTD,
  UNKNOWN, ERRBUSY are kept as the latest word on a recipient, who stays pending.

Memory is one dict entry per tracked recipient.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ._errors import ValidationError
from ._models import MalformedRecord, SendReceipt, StateReport

if TYPE_CHECKING:
    from ._client import AisixClient

__all__ = ["DeliveryTracker", "TrackerResult"]

_Key = tuple[str, str]


class _OutcomeLike(Protocol):
    """What the tracker reads from a bulk SendOutcome."""

    @property
    def status(self) -> Any: ...

    @property
    def mobiles(self) -> Sequence[str]: ...

    @property
    def receipts(self) -> Sequence[SendReceipt]: ...


@attrs.frozen
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
    untracked: tuple[StateReport, ...]
    #: Numbers of outcomes the gateway refused (FAILED): nothing to wait for.
    not_sent: tuple[str, ...]
    #: Numbers of outcomes whose fate is unknown (answer lost): no msgid to match.
    unknown: tuple[str, ...]

    @property
    def finished(self) -> int:
        """Recipients with a final report."""
        return sum(self.counts.values())


class DeliveryTracker:
    """Matches delivery reports to the recipients of accepted sends.

    Feed it what was sent (:meth:`track` for a bulk outcome, :meth:`track_receipt` for a
    receipt and its numbers) and the reports (:meth:`feed`, or hand a report stream to
    :meth:`wait`, or let :meth:`follow` run one); ask it at any moment for
    :meth:`counts`, :meth:`pending` and :attr:`done`.
    """

    def __init__(self) -> None:
        # Final reports still expected per (msgid, mobile): a number listed twice in one
        # request gets two messages, two reports.
        self._waiting: dict[_Key, int] = {}
        self._tracked = 0
        self._counts: Counter[str] = Counter()
        self._latest: dict[_Key, StateReport] = {}
        self._orphans: dict[int, StateReport] = {}
        self._orphan_index: defaultdict[_Key, list[int]] = defaultdict(list)
        self._orphan_seq = 0
        self._not_sent: list[str] = []
        self._unknown: list[str] = []
        self._duplicates = 0
        #: Report items a stream run by :meth:`follow` could not read (raw attributes kept).
        self.malformed: list[MalformedRecord] = []
        self._changed = anyio.Event()

    # -- what was sent ---------------------------------------------------------------

    def track_receipt(self, receipt: SendReceipt, mobiles: Iterable[str]) -> int:
        """Track the numbers one receipt covers (all of a sendOnce request, or one mobile).

        Returns how many recipients were added.
        """
        added = 0
        for mobile in mobiles:
            key = (receipt.msgid, mobile)
            self._waiting[key] = self._waiting.get(key, 0) + 1
            self._tracked += 1
            added += 1
            self._adopt(key)
        if added:
            self._wake()
        return added

    def track(self, outcome: _OutcomeLike) -> int:
        """Track a bulk SendOutcome; returns how many recipients were added.

        ACCEPTED: one receipt covers every number (sendOnce), or one receipt per number in
        the same order (sendBatch, sendParam). FAILED numbers go to ``not_sent`` and
        UNKNOWN ones to ``unknown``: neither has a msgid a report could match.
        """
        status = str(getattr(outcome.status, "name", outcome.status)).upper()
        mobiles = list(outcome.mobiles)
        receipts = list(outcome.receipts)
        if status == "FAILED":
            self._not_sent.extend(mobiles)
            return 0
        if status != "ACCEPTED" or not receipts:
            self._unknown.extend(mobiles)
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
        seqs = self._orphan_index.get(key)
        while seqs and self._waiting.get(key):
            self._apply(key, self._orphans.pop(seqs.pop(0)))
        if seqs is not None and not seqs:
            del self._orphan_index[key]

    # -- what came back --------------------------------------------------------------

    def feed(self, report: StateReport) -> bool:
        """Take one report; True if it belongs to a tracked recipient.

        A report for a recipient not tracked is kept in :attr:`untracked` (adopted later
        if its receipt gets tracked) and False is returned: pass it on.
        """
        key = (report.msgid, report.mobile)
        if key not in self._waiting and key not in self._latest:
            self._orphan_seq += 1
            self._orphans[self._orphan_seq] = report
            self._orphan_index[key].append(self._orphan_seq)
            return False
        self._apply(key, report)
        return True

    def feed_many(self, reports: Iterable[StateReport]) -> list[StateReport]:
        """Feed several reports; returns those that were not tracked, in order."""
        return [report for report in reports if not self.feed(report)]

    def _apply(self, key: _Key, report: StateReport) -> None:
        self._latest[key] = report
        if not report.is_final:
            return
        left = self._waiting.get(key, 0)
        if left <= 0:
            # A final report for a recipient already settled: the gateway sent one twice.
            self._duplicates += 1
            return
        self._counts[report.code.upper()] += 1
        if left == 1:
            del self._waiting[key]
        else:
            self._waiting[key] = left - 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- where it stands -------------------------------------------------------------

    @property
    def untracked(self) -> list[StateReport]:
        """Reports that matched no tracked recipient (yet), in arrival order."""
        return list(self._orphans.values())

    def take_untracked(self) -> list[StateReport]:
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
        return not self._waiting

    def counts(self) -> Counter[str]:
        """Final reports so far, by operator code (a copy)."""
        return Counter(self._counts)

    def pending(self) -> list[tuple[str, str]]:
        """(msgid, mobile) of tracked recipients still without a final report."""
        out: list[tuple[str, str]] = []
        for key, left in self._waiting.items():
            out.extend([key] * left)
        return out

    def latest(self, msgid: str, mobile: str) -> StateReport | None:
        """The last report seen for a recipient, final or not."""
        return self._latest.get((msgid, mobile))

    def result(self) -> TrackerResult:
        """A snapshot of where the campaign stands."""
        return TrackerResult(
            counts=Counter(self._counts),
            pending=tuple(self.pending()),
            tracked=self._tracked,
            done=self.done,
            untracked=tuple(self._orphans.values()),
            not_sent=tuple(self._not_sent),
            unknown=tuple(self._unknown),
        )

    # -- waiting ---------------------------------------------------------------------

    # A timeout parameter rather than the caller's own cancel scope, on purpose: when time
    # is up the caller wants the pending list, not a cancellation.
    async def wait(
        self,
        reports: AsyncIterable[StateReport] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> TrackerResult:
        """Return when every tracked recipient has a final report, or after ``timeout``.

        With ``reports`` (e.g. a stream from ``client.watch_send_states()``), they are
        fed as they come; without, someone else feeds the tracker meanwhile. Whatever is
        still pending at the end is listed in the result. Iteration of ``reports`` stops
        as soon as the tracker is done: records a stream fetched but did not yield stay
        in its ``unread()``.
        """
        with anyio.move_on_after(timeout):
            if reports is None:
                while self._waiting:
                    await self._changed.wait()
            elif self._waiting:
                async for report in reports:
                    self.feed(report)
                    if not self._waiting:
                        break
        return self.result()

    async def follow(
        self,
        client: AisixClient,
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
        from ._reports import watch_send_states

        stream = watch_send_states(client, interval=interval, max_backoff=max_backoff)
        async with stream:
            result = await self.wait(stream, timeout=timeout)
        self.malformed.extend(stream.malformed)
        leftovers = stream.unread()
        if leftovers:
            self.feed_many(leftovers)
            result = self.result()
        return result
