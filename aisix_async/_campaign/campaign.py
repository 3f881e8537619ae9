"""Campaigns: bulk sends that a crash can neither make send twice nor make forget anyone.

A campaign is a bulk send (``send_many``, ``send_batch_many``, ``send_param_many``) bound
to a journal file (:mod:`.journal`). The bulk engine calls the journal before each
chunk's first request and with every outcome before it is yielded, so whenever the
process dies, the file says for every chunk whether it was never sent, accepted, failed,
or on the wire. Running the same campaign again with the same input resumes it:

* accepted chunks are skipped (and not yielded again);
* never-sent chunks, and chunks that failed harmlessly (a -1 that never cleared, -9,
  an account refusal, a connection that never reached the gateway, dispatch stopped)
  are sent;
* chunks whose answer was lost, or that were in flight when the process died, are
  *unknown*: listed in :meth:`Campaign.summary`, resent only with ``resend_unknown=True``,
  and reconciled as accepted when a delivery report for one of their numbers arrives
  through :meth:`Campaign.watch_delivery_reports`.

The input is never stored: the journal keeps chunk boundaries by position and a hash of
each chunk's items, so resuming re-reads the same source (any length, sync or async),
and a source that changed is refused with the position where it differs.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from functools import partial
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs

from .._core.errors import AisixError, CampaignError, NotSentError, ValidationError, redact_keys
from .._core.models import DeliveryReport, MalformedRecord, Reply
from .._core.options import PollKeywords, PollOptions, SendKeywords, SendOptions
from .._features.bulk import (
    BulkStats,
    ChunkLedger,
    OutcomeStatus,
    SendOutcome,
    SendStream,
    SendSummary,
    batch_stream,
    once_stream,
    param_stream,
    refuse_partial_drain,
    summarize_outcomes,
)
from .._features.reports import BatchHook, RecordStream, watch_delivery_reports, watch_replies
from .._gateway import Gateway
from .._mechanics.scheduler import RateState
from .journal import GATEWAY_META, ChunkState, Journal, fingerprint
from .ledger import CampaignLedger, CampaignSummary, FoundHook, summarize

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:
    # As in _client: only (string) annotations name it, so 3.10 needs no typing_extensions.
    from typing_extensions import Unpack

__all__ = ["Campaign", "CampaignStream", "open_campaign"]

logger = logging.getLogger("aisix_async")

_R = TypeVar("_R")

#: The journal's meta key for the client's RateState (JSON).
_RATE_STATE_KEY = "rate_state"


@attrs.frozen
class _Lease:
    """The campaign's journal and its send claim, handed to a stream it creates."""

    journal: Callable[[], Journal]
    claim: Callable[[], Journal]
    release: Callable[[], None]


class CampaignStream:
    """A bulk send recorded in the campaign's journal: ``async with``, then ``async for``.

    Yields the :class:`SendOutcome` of every chunk this run settles; chunks an earlier
    run settled are skipped, not yielded (``stats().skipped`` counts their recipients).
    """

    def __init__(
        self,
        campaign: Campaign,
        definition: dict[str, Any],
        build: Callable[[ChunkLedger, bool], SendStream],
        check_balance: bool,
        lease: _Lease,
    ) -> None:
        self._campaign = campaign
        # What the campaign lends its stream: its journal, and the one-send-at-a-time claim.
        self._lease = lease
        self._definition = definition
        self._build = build
        self._check_balance = check_balance
        self._stream: SendStream | None = None
        self._ledger: CampaignLedger | None = None
        self._stop_reason: str | None = None
        self._run: int | None = None
        self._iterated = False

    async def __aenter__(self) -> CampaignStream:
        journal = self._lease.claim()
        try:
            await journal.define(fingerprint(self._definition), self._definition)
            resuming = bool(journal.rows)
            await self._campaign._note_gateway(journal)
            self._run = await journal.begin_run("send")
            if resuming and self._check_balance:
                # The estimate would price the whole input, most of it already paid for;
                # a -9 still stops the run, and its chunks stay resendable.
                logger.info("campaign %s: resuming; no balance check up front", journal.path)
            self._ledger = CampaignLedger(
                journal,
                resend_unknown=self._campaign.resend_unknown,
                on_found=self._campaign.on_found,
            )
            self._stream = self._build(self._ledger, self._check_balance and not resuming)
            # A journal that cannot record (a full disk) stops dispatch at once: the rest
            # of the input is reported not sent (safe to send on resume), not failed one
            # chunk after another on the same error (291,000 "failed" in a user's trial).
            self._ledger.on_error = partial(_stop_unrecorded, self._stream)
            if self._stop_reason is not None:
                self._stream.stop(self._stop_reason)
            await self._stream.__aenter__()
        except BaseException:
            # A run begun and then refused (a short balance, a cancellation during the
            # check) ends here, or the journal would show it as a crashed process's.
            try:
                if self._run is not None:
                    await self._end_run(self._run)
            finally:
                self._lease.release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stream is not None
        assert self._ledger is not None
        try:
            result = await self._stream.__aexit__(exc_type, exc, tb)
        finally:
            # Also when the stream's exit re-raises a cancellation (the usual way out).
            try:
                await self._record_abandoned(self._stream, self._ledger)
                if self._run is not None:
                    await self._end_run(self._run)
            finally:
                self._lease.release()
        with contextlib.suppress(CampaignError):
            # A hint for a resumed run; a broken journal says so on its own.
            await self._campaign.save_rate_state()
        if exc_type is None and self._ledger.error is not None:
            raise self._ledger.error
        return result

    async def _end_run(self, seq: int) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._lease.journal().end_run(seq)
            except CampaignError:
                # A broken journal (a full disk) already said so; the error that matters
                # is the run's own, not that its end could not be recorded.
                logger.warning(
                    "campaign %s: the end of this run was not recorded", self._campaign.path
                )

    async def _record_abandoned(self, stream: SendStream, ledger: CampaignLedger) -> None:
        # Chunks cut off on the wire (the block was left early): recorded as unknown now,
        # with their numbers, rather than left "in flight" until a resumed run finds them.
        # So are those recorded in flight whose request was cut off before it was written
        # (see SendStream._abandon): not sent, and sent again by a resumed run. And so are
        # the chunks this run planned that never got their turn: unrecorded, they were
        # "not yet sent" in this run's summary and absent from the file, so `aisix send`
        # and `aisix campaign` disagreed about what was left (the ledger ignores those an
        # earlier run recorded and this one did not begin).
        journal = self._lease.journal()
        cut_off = [
            outcome
            for outcome in stream.abandoned
            if (row := journal.rows.get(outcome.chunk)) is not None
            and (
                (
                    isinstance(outcome.error, NotSentError)
                    and row.state in (ChunkState.IN_FLIGHT, ChunkState.PLANNED)
                )
                or (outcome.status is OutcomeStatus.UNKNOWN and row.state is ChunkState.IN_FLIGHT)
            )
        ]
        with anyio.CancelScope(shield=True):
            for outcome in cut_off:
                await ledger.settle(outcome)

    @property
    def abandoned(self) -> list[SendOutcome]:
        """The outcomes this run owed when its block was left early (see SendStream)."""
        if self._stream is None or self._ledger is None:
            return []
        ignored = self._ledger.ignored
        return [outcome for outcome in self._stream.abandoned if outcome.chunk not in ignored]

    @property
    def definition(self) -> Mapping[str, Any]:
        """What this send records as its campaign's definition (action, account, content
        or template, cgid, csid, schedule, chunk size); a journal that records another
        refuses it (see :meth:`CampaignJournal.check_definition`)."""
        return MappingProxyType(self._definition)

    def __aiter__(self) -> CampaignStream:
        return self

    async def __anext__(self) -> SendOutcome:
        if self._stream is None or self._ledger is None:
            raise RuntimeError("use the stream in 'async with' before iterating it")
        ledger = self._ledger
        while True:
            try:
                outcome = await self._stream.__anext__()
            except StopAsyncIteration:
                if ledger.error is not None:
                    raise ledger.error from None
                if self._stream.stopped_by is None:
                    await self._lease.journal().set_input_size(ledger.next_position)
                raise
            if outcome.chunk not in ledger.ignored:
                self._iterated = True
                return outcome

    def stats(self) -> BulkStats:
        """The live statistics of the bulk send.

        The outcomes this run does not yield (an earlier run settled those recipients:
        invalid items seen again, chunks it did not begin) count as ``skipped``, not as
        ``done``: counted as done, ``done`` never met the outcomes read, and a resumed
        `aisix send` told to stop waited for ever for the rest (a user's trial).
        """
        if self._stream is None:
            raise RuntimeError("the stream has not been entered")
        stats = self._stream.stats()
        if self._ledger is None or not self._ledger.ignored:
            return stats
        by_status: dict[OutcomeStatus, int] = dict.fromkeys(OutcomeStatus, 0)
        for status, size in list(self._ledger.ignored.values()):
            by_status[status] += size
        ignored = sum(by_status.values())
        return attrs.evolve(
            stats,
            done=stats.done - ignored,
            accepted=stats.accepted - by_status[OutcomeStatus.ACCEPTED],
            failed=stats.failed - by_status[OutcomeStatus.FAILED],
            unknown=stats.unknown - by_status[OutcomeStatus.UNKNOWN],
            skipped=stats.skipped + ignored,
        )

    @property
    def stopped_by(self) -> AisixError | None:
        """The error that stopped dispatch (e.g. -9), if one did."""
        return None if self._stream is None else self._stream.stopped_by

    def stop(self, reason: str = "its caller stopped it") -> None:
        """Stop dispatch now (see :meth:`SendStream.stop`); a resumed run sends the rest.

        Called before the block is entered (a signal while the journal opens), the send
        starts stopped: nothing is sent.
        """
        self._stop_reason = reason
        if self._stream is not None:
            self._stream.stop(reason)

    async def drain(self) -> SendSummary:
        """Iterate to the end and summarise this run, as ``SendStream.drain`` does (the
        whole campaign's standing is ``campaign.summary()``); refused once outcomes were read."""
        refuse_partial_drain(self._iterated)
        return await summarize_outcomes(self, self.stats)


class Campaign:
    """A resumable bulk send bound to a journal file; see the module docstring.

    ``async with client.campaign("spring-sale.db") as campaign:`` opens (or creates) the
    journal and holds its process lock until the block ends.
    """

    def __init__(
        self,
        gateway: Gateway,
        path: str | os.PathLike[str],
        *,
        resend_unknown: bool = False,
        durable: bool = False,
        on_found: FoundHook | None = None,
    ) -> None:
        if on_found is not None and not callable(on_found):
            # Else taken, and failing only at the first chunk found, in a log.
            raise ValidationError(
                f"on_found must be a function (or None), got {type(on_found).__name__}"
            )
        if inspect.iscoroutinefunction(on_found):
            # Called synchronously: the coroutine would never run, and the recipients
            # found go unreported but for a RuntimeWarning.
            raise ValidationError(
                "on_found is called synchronously, and must be a plain function: an "
                "async one's coroutine would never run (start a task from it instead)"
            )
        self._gateway = gateway
        self.path = Path(path)
        #: Resend chunks whose fate is unknown (they may reach their recipients twice).
        self.resend_unknown = resend_unknown
        #: Called with each chunk a stopped process left on the wire as a send of this
        #: campaign finds it again (see :class:`FoundOnResume`).
        self.on_found = on_found
        self._durable = durable
        self._journal: Journal | None = None
        self._sending = False

    def __repr__(self) -> str:
        return f"<Campaign {str(self.path)!r} open={self._journal is not None}>"

    async def __aenter__(self) -> Campaign:
        if self._journal is not None:
            raise RuntimeError("a Campaign can be entered only once at a time")
        self._journal = await Journal.open(self.path, durable=self._durable)
        self._start_from_saved_rate(self._journal)
        return self

    def _start_from_saved_rate(self, journal: Journal) -> None:
        # A resumed campaign starts at the pace its last run found (RateState decays
        # it with age), unless the client already knows better (it sent, or was given
        # a rate_state of its own).
        text = journal.meta.get(_RATE_STATE_KEY)
        if text is None:
            return
        recorded = journal.meta.get(GATEWAY_META)
        if recorded is not None and recorded != self._gateway_here():
            # Another gateway's limit (a staging host, the emulator) says nothing of this one's.
            logger.info(
                "campaign %s: the saved rate state is another gateway's; ignored", self.path
            )
            return
        try:
            state = RateState.from_dict(json.loads(text))
        except (ValueError, ValidationError):
            logger.warning("campaign %s: the saved rate state is unreadable; ignored", self.path)
            return
        self._gateway.scheduler.adopt(state)

    def _gateway_here(self) -> str:
        # One spelling per gateway (check_base_url), and no credentials in it.
        return self._gateway.endpoints.open_url

    async def _note_gateway(self, journal: Journal) -> None:
        # Chunks an earlier run had accepted are skipped whatever gateway accepted them:
        # a campaign rehearsed against the emulator or a staging host, then run for real
        # on the same journal, would skip (and never send) everyone the rehearsal took.
        # Not refused (a gateway may move: another host name, https for http), but said,
        # each time it changes, before anything is sent.
        here = self._gateway_here()
        recorded = journal.meta.get(GATEWAY_META)
        if recorded == here:
            return
        if recorded is not None:
            logger.warning(
                "campaign %s: its earlier runs sent to %s, this one sends to %s; what %s "
                "accepted is skipped, not sent again here (use another journal file for a "
                "new campaign)",
                journal.path,
                redact_keys(recorded),
                redact_keys(here),
                redact_keys(recorded),
            )
        await journal.set_meta(GATEWAY_META, here)

    def _note_reading_gateway(self, journal: Journal, read: str) -> None:
        # A gateway hands out the delivery reports of the messages it accepted, and the
        # replies to them: read at another one, a campaign's are not there, and that
        # gateway's records of other sends are taken off its queue into this journal.
        # Not refused (a gateway may move: another host name, https for http), but said
        # before any poll, as a send says it. ``read``: "reports" or "replies".
        recorded = journal.meta.get(GATEWAY_META)
        if recorded is None or recorded == self._gateway_here():
            return
        logger.warning(
            "campaign %s: its last send went to %s, these %s are read from %s; unless "
            "both are one gateway (moved, or named another way), the campaign's %s are "
            "not there, and those read are kept in the journal as not this campaign's",
            journal.path,
            redact_keys(recorded),
            read,
            redact_keys(self._gateway.endpoints.data_url),
            read,
        )

    async def save_rate_state(self) -> None:
        """Record the client's :meth:`~AisixClient.rate_state` in the journal now.

        Done when a send ends and when the campaign closes; a resumed run starts from it.
        """
        journal = self._opened()
        if not self._gateway.scheduler.stats().requests:
            return
        # The gateway's, not the scheduler's: with shared_limit the scheduler's pace is
        # this client's share, while the state is the fleet's (the account's).
        state = self._gateway.rate_state()
        if state.pace is None and journal.meta.get(_RATE_STATE_KEY) is not None:
            return  # nothing measured: what an earlier run measured stays
        await journal.set_meta(_RATE_STATE_KEY, json.dumps(state.as_dict(), sort_keys=True))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._journal is not None and not self._sending:
                # Shielded and bounded: also on the way out of a cancelled block.
                with anyio.move_on_after(5, shield=True):
                    await self.save_rate_state()
        except CampaignError as error:
            # Only a hint for the next run: never worth masking how this one ended.
            logger.warning("campaign %s: the rate state was not saved: %s", self.path, error)
        finally:
            journal, self._journal = self._journal, None
            if journal is not None:
                await journal.aclose()

    def _opened(self) -> Journal:
        if self._journal is None:
            raise CampaignError("use the campaign inside 'async with' first")
        return self._journal

    def _lease(self) -> _Lease:
        return _Lease(journal=self._opened, claim=self._claim, release=self._release)

    def _claim(self) -> Journal:
        journal = self._opened()
        if self._sending:
            raise CampaignError("this campaign is already sending: one send at a time per journal")
        self._sending = True
        return journal

    def _release(self) -> None:
        self._sending = False

    def _definition(self, action: str, options: SendOptions, **rest: Any) -> dict[str, Any]:
        cgid, csid = self._gateway.targets(options.cgid, options.csid)
        at = options.at
        return {
            "action": action,
            "account": self._gateway.account,
            "cgid": cgid,
            # csid 0 is the default signature, the same as none (PROTOCOL-NOTES).
            "csid": csid or None,
            "at": None if at is None else at.isoformat(),
            **rest,
        }

    # -- sending -------------------------------------------------------------------

    def send_many(
        self,
        numbers: Iterable[str] | AsyncIterable[str],
        content: str,
        **options: Unpack[SendKeywords],
    ) -> CampaignStream:
        """``client.send_many``, recorded; run it again with the same input to resume.

        Options: the fields of :class:`SendOptions` as keywords, as for ``client.send_many``.
        """
        record = SendOptions(**options)
        definition = self._definition(
            "send_many", record, content=content, chunk_size=record.chunk_size_for("sendOnce")
        )

        def build(ledger: ChunkLedger, check: bool) -> SendStream:
            checked = attrs.evolve(record, check_balance=check)
            return once_stream(self._gateway, numbers, content, checked, ledger)

        return CampaignStream(self, definition, build, record.check_balance, self._lease())

    def send_batch_many(
        self,
        pairs: Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]],
        **options: Unpack[SendKeywords],
    ) -> CampaignStream:
        """``client.send_batch_many``, recorded; options as for :meth:`send_many`."""
        record = SendOptions(**options)
        definition = self._definition(
            "send_batch_many", record, chunk_size=record.chunk_size_for("sendBatch")
        )

        def build(ledger: ChunkLedger, check: bool) -> SendStream:
            checked = attrs.evolve(record, check_balance=check)
            return batch_stream(self._gateway, pairs, checked, ledger)

        return CampaignStream(self, definition, build, record.check_balance, self._lease())

    def send_param_many(
        self,
        template: str,
        rows: Iterable[tuple[str, Sequence[str]]] | AsyncIterable[tuple[str, Sequence[str]]],
        **options: Unpack[SendKeywords],
    ) -> CampaignStream:
        """``client.send_param_many``, recorded; options as for :meth:`send_many`."""
        record = SendOptions(**options)
        definition = self._definition(
            "send_param_many",
            record,
            template=template,
            chunk_size=record.chunk_size_for("sendParam"),
        )

        def build(ledger: ChunkLedger, check: bool) -> SendStream:
            checked = attrs.evolve(record, check_balance=check)
            return param_stream(self._gateway, template, rows, checked, ledger)

        return CampaignStream(self, definition, build, record.check_balance, self._lease())

    # -- reports and replies ---------------------------------------------------------

    def watch_delivery_reports(
        self,
        *,
        on_batch: BatchHook[DeliveryReport] | None = None,
        on_recorded: Callable[[Sequence[bool]], Awaitable[None]] | None = None,
        **options: Unpack[PollKeywords],
    ) -> RecordStream[DeliveryReport]:
        """``client.watch_delivery_reports``, each batch journalled before it is yielded.

        Reports also reconcile unknown chunks (see the module docstring). A batch is
        written while the next is fetched; if a write fails (a full disk), the batch
        fetched meanwhile is yielded unrecorded, as the gateway will not hand it out
        again, and then the journal's error is raised.

        ``on_recorded`` is awaited once a batch is written (before ``on_batch``), with
        one flag per delivery report of the batch, in order (malformed records get
        none): True when the report is this campaign's (one of the (msgid, mobile) it
        sent), False for another campaign's or a send outside it (kept and counted in
        ``summary().foreign_reports``). The stream yields the reports in the same order,
        so the flags can be paired with them as they are read.

        When the campaign's last send went to another gateway than this client's, a
        WARNING says so here, before any poll (its reports are in that gateway's queue);
        the reports are read all the same.

        Options: the fields of :class:`PollOptions` as keywords, as for
        ``client.watch_delivery_reports``.
        """
        journal = self._opened()
        self._note_reading_gateway(journal, "reports")

        async def write(batch: Sequence[DeliveryReport | MalformedRecord]) -> None:
            done = await journal.ingest_reports(batch)
            if on_recorded is not None:
                await on_recorded(done.mine)

        record = _journalled(write, on_batch)
        return watch_delivery_reports(self._gateway, PollOptions(**options), record)

    def watch_replies(
        self,
        *,
        on_batch: BatchHook[Reply] | None = None,
        **options: Unpack[PollKeywords],
    ) -> RecordStream[Reply]:
        """``client.watch_replies``, each batch written to the journal before it is yielded.

        When the campaign's last send went to another gateway than this client's, a
        WARNING says so here, before any poll (the replies to its messages are in that
        gateway's queue); the replies are read all the same.

        Options: the fields of :class:`PollOptions` as keywords, as for ``client.watch_replies``.
        """
        journal = self._opened()
        self._note_reading_gateway(journal, "replies")
        record = _journalled(journal.record_replies, on_batch)
        return watch_replies(self._gateway, PollOptions(**options), record)

    async def stored_reports(self) -> list[DeliveryReport]:
        """Every delivery report this campaign's journal recorded, in the order fetched."""
        return await self._opened().stored_reports()

    async def stored_replies(self) -> list[Reply]:
        """Every reply this campaign's journal recorded, in the order fetched."""
        return await self._opened().stored_replies()

    @contextlib.asynccontextmanager
    async def record_run(self, kind: str = "reports") -> AsyncIterator[None]:
        """Record in the journal that a run of ``kind`` goes on while the block runs.

        Sends record their own runs ("send"); a program that follows the campaign's
        delivery reports wraps its watch in ``async with campaign.record_run():`` so
        :meth:`CampaignJournal.runs` lists it, with its process and when it ended. The
        end is recorded also when the block is cancelled.
        """
        journal = self._opened()
        seq = await journal.begin_run(kind)
        try:
            yield
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await journal.end_run(seq)
                except CampaignError:
                    # A broken journal already said so; the block's own error matters.
                    logger.warning("campaign %s: the end of this run was not recorded", self.path)
            raise
        with anyio.CancelScope(shield=True):
            await journal.end_run(seq)

    # -- where it stands -------------------------------------------------------------

    @property
    def definition(self) -> Mapping[str, Any]:
        """What this campaign sends (action, account, content or template, cgid, csid,
        schedule, chunk size), as its first send recorded it; empty before any send."""
        return MappingProxyType(dict(self._opened().definition or {}))

    def summary(self) -> CampaignSummary:
        """Counts, money, delivery and the unknown, as the journal holds them now."""
        return summarize(self._opened())

    @property
    def reconciled_on_resume(self) -> tuple[tuple[int, str], ...]:
        """(input position, mobile) of the recipients this session found sent as it
        re-read the input: chunks a stopped process left on the wire, proved accepted by
        delivery reports fetched before the resume (``aisix reports`` first). They are
        accepted (reconciled) and skipped, so no outcome of this session's sends names
        them."""
        return tuple(self._opened().claimed)


def _stop_unrecorded(stream: SendStream, error: CampaignError) -> None:
    stream.stop(f"the journal cannot record the run ({error.message})")


def _journalled(
    write: Callable[[Sequence[_R | MalformedRecord]], Awaitable[object]],
    then: BatchHook[_R] | None,
) -> BatchHook[_R]:
    """A batch hook that writes each batch to the journal, then calls the caller's own."""

    async def record(batch: Sequence[_R | MalformedRecord]) -> None:
        await write(batch)
        if then is not None:
            await then(batch)

    return record


def open_campaign(
    gateway: Gateway,
    path: str | os.PathLike[str],
    *,
    resend_unknown: bool = False,
    durable: bool = False,
    on_found: FoundHook | None = None,
) -> Campaign:
    """What ``client.campaign(path, ...)`` returns: ``async with`` it to open the journal."""
    return Campaign(
        gateway, path, resend_unknown=resend_unknown, durable=durable, on_found=on_found
    )
