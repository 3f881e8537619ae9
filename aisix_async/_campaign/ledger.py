"""The journal's side of a bulk send: outcomes into records, records into a summary.

The bulk engine calls a ``ChunkLedger`` before each chunk's first request and with every
outcome before it is yielded; :class:`CampaignLedger` turns those calls into journal
transactions and decides nothing else: which failures are worth resending is the error
policy's ``worth_sending_again``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial

import attrs

from .._core.billing import NO_COST
from .._core.chunking import PlannedChunk
from .._core.errors import (
    CampaignError,
    worth_sending_again,
)
from .._features.bulk import ChunkLedger, OutcomeStatus, SendOutcome
from .._mechanics.hooks import log_hook_failure
from .journal import ChunkResult, ChunkState, Journal

__all__ = ["CampaignLedger", "CampaignSummary", "FoundHook", "FoundOnResume", "summarize"]

# The gateway refused these before acting (nothing sent, nothing charged), and they can
# clear: a balance topped up, a key unlocked, an account re-enabled, a limit lifted.
_STATES = {
    OutcomeStatus.ACCEPTED: ChunkState.ACCEPTED,
    OutcomeStatus.FAILED: ChunkState.FAILED,
    OutcomeStatus.UNKNOWN: ChunkState.UNKNOWN,
}


@attrs.frozen(kw_only=True)
class CampaignSummary:
    """Where a campaign stands, in recipients, from its journal."""

    accepted: int
    #: Failed for good (invalid input, -4): resuming will not send them again.
    failed: int
    #: May have been sent: listed in ``unknown_recipients`` and ``unknown_unread``.
    unknown: int
    #: Never sent, or failed harmlessly: a resumed run sends them. Counts the part of the
    #: input no run has reached only once a run has read the whole input.
    not_yet_sent: int
    #: Chunks on the wire now (a run is active).
    in_flight: int
    #: Of ``accepted``: unknown chunks a delivery report proved accepted.
    reconciled: int
    units: int
    cost: Decimal
    #: How many items the input holds, once a run has read all of it.
    input_size: int | None
    #: Recipients of this campaign with a final delivery report, by operator code
    #: (DELIVRD, UNDELIV ...): only reports whose (msgid, mobile) the campaign sent.
    delivery: Mapping[str, int]
    #: (input position, mobile) of the recipients whose fate is unknown.
    unknown_recipients: tuple[tuple[int, str], ...]
    #: Input positions of unknown recipients whose numbers the journal does not hold yet:
    #: their process died with their chunk in flight. A run that re-reads the input
    #: moves them to ``unknown_recipients`` (it reaches them first: they were the last
    #: chunks sent, and everything before them is only checked).
    unknown_unread: tuple[int, ...] = ()
    #: Delivery reports fetched through this campaign that are not its own (another
    #: campaign's, a send outside it): kept in the journal, counted here, never in
    #: ``delivery``.
    foreign_reports: int = 0
    #: How far into the input the runs so far got: one past the last input position of
    #: any chunk recorded (0 for a new journal). A resumed input shorter than this is
    #: refused (the chunks beyond its end would never be sent).
    reached: int = 0

    @property
    def pending(self) -> int:
        """Accepted recipients without a final delivery report yet."""
        return max(0, self.accepted - sum(self.delivery.values()))

    @property
    def complete(self) -> bool:
        """True when every recipient of the input has a settled fate."""
        return self.input_size is not None and self.not_yet_sent == 0 and self.in_flight == 0


@attrs.frozen(kw_only=True)
class FoundOnResume:
    """A chunk a stopped process left on the wire, found again by a resumed run.

    Until a run re-reads the input, the journal knows such a chunk's recipients by input
    position only (``CampaignSummary.unknown_unread``); this run has just recorded their
    numbers, and does not send them: no outcome of this run names them.
    """

    #: ``UNKNOWN`` (it may have been sent and charged: not resent), or ``ACCEPTED`` when
    #: delivery reports fetched before the resume proved it sent (reconciled; no receipt,
    #: so no msgid).
    status: OutcomeStatus
    #: (input position, mobile) of its recipients, in input order.
    recipients: tuple[tuple[int, str], ...]


#: ``on_found``: called synchronously, once per chunk found, right after the journal
#: recorded it (see :class:`FoundOnResume`).
FoundHook = Callable[[FoundOnResume], None]


def _items_hash(chunk: PlannedChunk) -> str:
    # This runs for every chunk (on the journal's worker thread): one join per field, and
    # SHA-256, which CPUs accelerate (twice as fast as BLAKE2 here). It detects a changed
    # input, nothing adversarial, so 128 bits of it are plenty.
    digest = hashlib.sha256(f"{chunk.action}\x00{chunk.template or ''}\x00".encode())
    _feed(digest, "\x00".join(chunk.mobiles).encode())
    digest.update(b"\x01")
    _feed(digest, "\x00".join(chunk.contents).encode("utf-8", "surrogatepass"))
    if chunk.values:
        rows = "\x00".join(["\x1f".join(row) for row in chunk.values])
        _feed(digest, b"\x01" + rows.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


#: hashlib lets go of the GIL while it hashes 2048 bytes or more at once.
_GIL_FREE_FROM = 2048


def _feed(digest: hashlib._Hash, data: bytes) -> None:
    """``digest.update(data)`` in pieces too short for hashlib to release the GIL.

    A thousand numbers are 12 kB: hashed in one piece, the GIL goes to the event loop
    and the worker thread waits to get it back (a few milliseconds when the loop is
    busy, with the chunk's request waiting on this hash), for 6 microseconds of SHA-256
    that are cheaper to do holding it. The digest is the same.
    """
    if len(data) < _GIL_FREE_FROM:
        digest.update(data)
        return
    view = memoryview(data)
    for start in range(0, len(data), _GIL_FREE_FROM - 1):
        digest.update(view[start : start + _GIL_FREE_FROM - 1])


def _receipts(outcome: SendOutcome) -> tuple[dict[str, str], ...]:
    per_mobile = len(outcome.receipts) == len(outcome.mobiles) and outcome.action != "sendOnce"
    out = []
    for i, r in enumerate(outcome.receipts):
        item = {"msgid": r.msgid, "total": str(r.total), "price": str(r.price)}
        item.update(cid=r.cid, sid=r.sid, remain=str(r.remain))
        if per_mobile:
            item["mobile"] = outcome.mobiles[i]
        out.append(item)
    return tuple(out)


class CampaignLedger(ChunkLedger):
    """The bulk engine's hook, writing to the journal before each step takes effect."""

    def __init__(
        self, journal: Journal, *, resend_unknown: bool, on_found: FoundHook | None = None
    ) -> None:
        self._journal = journal
        self._resend_unknown = resend_unknown
        self._on_found = on_found
        self._begun: set[int] = set()
        #: Outcomes for chunks this run did not send, that the journal already settled:
        #: each chunk's status in this run and its recipients, which the bulk engine
        #: counted and the campaign stream counts as "skipped" (see CampaignStream.stats).
        self.ignored: dict[int, tuple[OutcomeStatus, int]] = {}
        self.error: CampaignError | None = None
        #: Called with ``error`` when it is first set: the campaign stops dispatch then.
        self.on_error: Callable[[CampaignError], None] | None = None
        self.next_position = 0

    async def before_send(self, chunk: PlannedChunk) -> bool:
        self.next_position = max(self.next_position, chunk.positions[-1] + 1)
        verdict = await self._journal.begin_chunk(
            chunk.index,
            chunk.action,
            chunk.positions,
            chunk.mobiles,
            # Hashed on the journal's worker thread, off the event loop's critical path.
            partial(_items_hash, chunk),
            resend_unknown=self._resend_unknown,
            found=None if self._on_found is None else self._found,
        )
        if verdict.sends:
            self._begun.add(chunk.index)
        return verdict.sends

    def _found(self, state: ChunkState, recipients: tuple[tuple[int, str], ...]) -> None:
        # Called the moment the journal has committed their numbers: a caller writing
        # them somewhere (aisix send's --outcomes) has them even if this run is killed
        # before its end, when no later run would find them again (an operator's trial:
        # 11,500 of 200,000 lines missing after two kills in a row).
        assert self._on_found is not None
        status = OutcomeStatus.ACCEPTED if state is ChunkState.ACCEPTED else OutcomeStatus.UNKNOWN
        try:
            self._on_found(FoundOnResume(status=status, recipients=recipients))
        except Exception as exc:
            # What the journal recorded stands, and the send goes on: the hook only
            # reports what the journal holds (as on_unknown reports what a send did).
            log_hook_failure(
                "on_found",
                f"campaign {self._journal.path}",
                exc,
                then=(
                    f"the send goes on (the journal holds these {len(recipients)} "
                    "recipients: summary().unknown_recipients, reconciled_on_resume)"
                ),
            )

    async def on_wire(self, chunk: PlannedChunk) -> None:
        # Raised into the engine, unlike settle's errors: a chunk that could not be
        # recorded as going out must not go out (the scheduler turns this attempt down).
        await self._journal.mark_on_wire(chunk.index)

    async def off_wire(self, chunk: PlannedChunk) -> None:
        await self._journal.mark_planned(chunk.index)

    async def settle(self, outcome: SendOutcome) -> None:
        self.next_position = max(self.next_position, outcome.positions[-1] + 1)
        if outcome.chunk not in self._begun and outcome.chunk in self._journal.rows:
            # Dispatch stopped before this chunk was looked up, or an invalid item seen
            # again: what the journal holds from an earlier run stands (an accepted chunk
            # must never be turned into a resendable failure).
            self.ignored[outcome.chunk] = (outcome.status, len(outcome.positions))
            return
        if self.error is not None:
            return
        error = outcome.error
        result = ChunkResult(
            _STATES[outcome.status],
            attempts=outcome.attempts,
            error_class=None if error is None else type(error).__name__,
            error_message=None if error is None else error.message,
            retryable=outcome.status is OutcomeStatus.FAILED and worth_sending_again(error),
            units=outcome.units,
            cost=outcome.cost,
            receipts=_receipts(outcome),
        )
        try:
            await self._journal.settle_chunk(
                outcome.chunk, outcome.action or "", outcome.positions, outcome.mobiles, result
            )
        except CampaignError as exc:
            # Not raised into the engine (it would surface as an exception group from a
            # worker); the chunk stays "in flight" in the file, hence unknown on resume,
            # the next before_send fails the same way, and the stream raises this at its end.
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)


def summarize(journal: Journal) -> CampaignSummary:
    """Counts, money, delivery and the unknown, as the journal holds them now (no I/O)."""
    accepted = failed = retry = in_flight = reconciled = units = recorded = 0
    cost = NO_COST
    for row in journal.rows.values():
        recorded += row.size
        if row.state is ChunkState.ACCEPTED:
            accepted += row.size
            units += row.units
            cost += row.cost
            reconciled += row.size if row.reconciled else 0
        elif row.state is ChunkState.FAILED:
            if row.retryable:
                retry += row.size
            else:
                failed += row.size
        elif row.state is ChunkState.IN_FLIGHT:
            in_flight += row.size
        elif row.state is ChunkState.PLANNED:
            retry += row.size
    unread = 0 if journal.input_size is None else max(0, journal.input_size - recorded)
    return CampaignSummary(
        accepted=accepted,
        failed=failed,
        unknown=len(journal.unknown) + sum(map(len, journal.unread.values())),
        not_yet_sent=retry + unread,
        in_flight=in_flight,
        reconciled=reconciled,
        units=units,
        cost=cost,
        input_size=journal.input_size,
        delivery=dict(journal.delivery),
        unknown_recipients=tuple(sorted(journal.unknown.items())),
        unknown_unread=tuple(sorted(p for ps in journal.unread.values() for p in ps)),
        foreign_reports=journal.foreign_reports,
        reached=journal.reached,
    )
