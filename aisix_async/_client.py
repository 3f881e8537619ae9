"""AisixClient: the facade. It composes the gateway layer and the features, and adds
nothing of its own but convenience.

Each single call is one request through the :class:`~._gateway.Gateway` (which checks
the input, takes a turn from the scheduler, and speaks the action). Bulk sends, report
streams, estimates and campaigns are the features in :mod:`._features` and
:mod:`._campaign`, each given the same gateway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal

from ._campaign.campaign import Campaign, open_campaign
from ._campaign.ledger import FoundHook
from ._core.billing import Estimate
from ._core.errors import ClientAlreadyEnteredError, redact_keys
from ._core.models import (
    Balance,
    ChannelGroup,
    DeliveryReport,
    KeyRotation,
    MalformedRecord,
    Reply,
    SendReceipt,
    Signature,
)
from ._core.options import PollKeywords, PollOptions, SendKeywords, SendOptions
from ._core.validate import Numbering
from ._core.wire import Endpoints, hide_authkey, hide_keys
from ._features import estimate as _estimate
from ._features.bulk import (
    OutcomeHook,
    SendStream,
    SendSummary,
    batch_stream,
    once_stream,
    param_stream,
    send_to_the_end,
)
from ._features.reports import BatchHook, RecordStream, watch_delivery_reports, watch_replies
from ._gateway import GATEWAY_TZ, Gateway, KeyRotationHook
from ._mechanics.observe import ClientStats, UnknownHook
from ._mechanics.scheduler import RateState, RetryDetails, RetryPolicy
from ._mechanics.shared_limit import hide_url

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:
    # Only annotations name it (they are strings here): Python 3.10 needs no
    # typing_extensions at run time, and type checkers ship it.
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from ._mechanics.http import HttpClient

__all__ = ["GATEWAY_TZ", "AisixClient"]


class AisixClient:
    """An async client for one Aisix account.

    Use it as ``async with AisixClient(...) as client:`` (or call :meth:`aclose`). It is
    safe to share between tasks: every request goes through one scheduler, which keeps
    the client within the gateway's per-account limits.

    ``shared_limit="redis://host:6379/0"`` (or ``AISIX_SHARED_LIMIT``) shares that pace with
    every client of the same account and gateway URL, in any process, through Redis
    (the ``redis`` extra, asyncio only): see README, "Running a fleet".
    """

    def __init__(
        self,
        account: str | None = None,
        authkey: str | None = None,
        *,
        base_url: str | None = None,
        data_url: str | None = None,
        cgid: int | None = None,
        csid: int | None = None,
        timeout: float = 30.0,
        http_client: HttpClient | None = None,
        gateway_tz: tzinfo = GATEWAY_TZ,
        max_concurrency: int = 16,
        initial_concurrency: int | None = None,
        max_rate: float | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryDetails], None] | None = None,
        on_key_rotation: KeyRotationHook | None = None,
        max_answer_bytes: int = 4 * 1024 * 1024,
        http_stack: Literal["httpx", "httpx2"] | None = None,
        numbers: Numbering = "lenient",
        on_unknown: UnknownHook | None = None,
        otel: bool | None = None,
        rate_state: RateState | None = None,
        shared_limit: str | None = None,
    ) -> None:
        # Whether an `async with` block holds this client: a second one is refused (see
        # __aenter__). Never reset: the block's exit closes the client for good.
        self._entered = False
        # Held as a Secret from the first line: should this constructor fail on another
        # argument, the key is a local of its frame, which error trackers print.
        authkey = hide_authkey(authkey)
        shared_limit = hide_url(shared_limit)  # its password, likewise
        account = hide_keys(account)  # and a key pasted as the account, until refused
        # And one pasted into a URL (a user's trial: shown by the frame's locals when
        # another argument was refused).
        base_url, data_url = hide_keys(base_url), hide_keys(data_url)
        self._gateway = Gateway(
            account,
            authkey,
            base_url=base_url,
            data_url=data_url,
            cgid=cgid,
            csid=csid,
            timeout=timeout,
            http_client=http_client,
            gateway_tz=gateway_tz,
            max_concurrency=max_concurrency,
            initial_concurrency=initial_concurrency,
            max_rate=max_rate,
            retry=retry,
            on_retry=on_retry,
            on_key_rotation=on_key_rotation,
            max_answer_bytes=max_answer_bytes,
            http_stack=http_stack,
            numbers=numbers,
            on_unknown=on_unknown,
            otel=otel,
            rate_state=rate_state,
            shared_limit=shared_limit,
        )

    # Methods renamed before 1.0 (CHANGELOG): an old name says what it is called now.
    _RENAMED: ClassVar[dict[str, str]] = {
        "get_send_states": "get_delivery_reports",
        "watch_send_states": "watch_delivery_reports",
        "update_key": "rotate_key",
    }

    if not TYPE_CHECKING:  # a __getattr__ would hide every typo from type checkers

        def __getattr__(self, name: str) -> object:
            renamed = AisixClient._RENAMED.get(name)
            if renamed is not None:
                raise AttributeError(
                    f"AisixClient.{name} was renamed {renamed} (see the CHANGELOG)", name=name
                )
            raise AttributeError(f"'AisixClient' object has no attribute {name!r}", name=name)

    def __repr__(self) -> str:
        # The authkey is deliberately absent. A constructor that failed leaves no gateway:
        # the repr still works (a traceback printed with its frames' locals calls it).
        gateway = self.__dict__.get("_gateway")
        if gateway is None:
            return "<AisixClient (not made: its constructor failed)>"
        # A key pasted as the URL's host is a valid host name: hidden here as elsewhere.
        url = redact_keys(gateway.endpoints.open_url)
        return f"<AisixClient account={gateway.account!r} url={url!r}>"

    @property
    def account(self) -> str:
        """The account this client speaks for, ``staff@enterprise``."""
        return self._gateway.account

    @property
    def numbers(self) -> Numbering:
        """The numbering policy every number is checked against: "lenient" (the default),
        "cn-mobile" or "e164" (see the README's list of AisixClient options)."""
        return self._gateway.numbers

    @property
    def endpoints(self) -> Endpoints:
        """The OpenApi and DataApi URLs in use."""
        return self._gateway.endpoints

    async def __aenter__(self) -> AisixClient:
        self._gateway.check_usable()
        if self._entered:
            # The inner block's exit would close the client under the outer one, whose
            # next call would fail with ClientClosedError (a user's helper did `async with
            # client:` on the app's shared client). httpx refuses a second open alike.
            raise ClientAlreadyEnteredError(
                f"{self!r} is already in an 'async with' block: a client is entered once, "
                "by its owner, and shared as it is (without 'async with'); leaving a "
                "second block would close it under its owner"
            )
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client we own; one passed in by the caller stays open."""
        await self._gateway.aclose()

    def stats(self) -> ClientStats:
        """A frozen snapshot: the scheduler (limit, pace, in flight, -1s, retries), counts
        of attempts by result code and of calls by outcome, histograms of queue wait and
        gateway latency, unknown outcomes, and whether the circuit breaker is open."""
        return self._gateway.stats()

    def rate_state(self) -> RateState:
        """What this client learned about the account's limit, to start another from.

        ``AisixClient(..., rate_state=state)`` starts at that pace instead of finding it
        again; ``state.as_dict()`` is JSON-ready and ``RateState.from_dict`` reads it back.
        """
        return self._gateway.rate_state()

    async def check_shared_limit(self) -> bool | None:
        """Ask the ``shared_limit`` Redis once (within its 0.5 s bound), e.g. at start-up.

        True: it answered; False: it did not, and this client paces itself until it does
        (as at any outage; logged once); None: no ``shared_limit``. Raises
        :class:`SharedLimitError` when Redis refused the URL (a wrong password, a database
        it does not have), which waiting will not mend, and under trio.
        """
        return await self._gateway.check_shared_limit()

    # -- sending -------------------------------------------------------------------

    async def send_once(
        self,
        mobiles: Iterable[str],
        content: str,
        *,
        cgid: int | None = None,
        csid: int | None = None,
        at: datetime | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SendReceipt:
        """Send one content to 1-1000 numbers in one request; one receipt for them all.

        ``deadline`` (seconds) bounds the wait for a turn and for retries; ``retry``
        overrides the client's policy for this call. See "Inside a web service".
        """
        return await self._gateway.send_once(
            mobiles, content, cgid=cgid, csid=csid, at=at, deadline=deadline, retry=retry
        )

    async def send_batch(
        self,
        messages: Iterable[tuple[str, str]],
        *,
        cgid: int | None = None,
        csid: int | None = None,
        at: datetime | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[SendReceipt]:
        """Send 2-100 (mobile, content) pairs in one request; a receipt per message, in order."""
        return await self._gateway.send_batch(
            messages, cgid=cgid, csid=csid, at=at, deadline=deadline, retry=retry
        )

    async def send_param(
        self,
        template: str,
        rows: Iterable[tuple[str, Sequence[str]]],
        *,
        cgid: int | None = None,
        csid: int | None = None,
        at: datetime | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[SendReceipt]:
        """Send a ``{p1}``..``{p10}`` template to 2-100 rows of (mobile, values); a receipt each."""
        return await self._gateway.send_param(
            template, rows, cgid=cgid, csid=csid, at=at, deadline=deadline, retry=retry
        )

    # -- bulk sending (the engine is _features.bulk) ------------------------------------

    def send_many(
        self,
        numbers: Iterable[str] | AsyncIterable[str],
        content: str,
        **options: Unpack[SendKeywords],
    ) -> SendStream:
        """One content to any number of recipients, as sendOnce chunks (1000 a request).

        ``async with client.send_many(numbers, text) as outcomes: async for o in outcomes``.
        An invalid content raises ValidationError here, before anything is sent. Entering
        the block starts sending: up to ``max_concurrency`` chunks (16,000 numbers with the
        defaults) go out before the first outcome is read, iterated or not; outcomes not
        read when the block ends are in ``outcomes.abandoned``.

        Options are the fields of :class:`SendOptions`, given as keywords
        (``chunk_size=500``, ``at=when``, ``check_balance=False``); ``help(SendOptions)``
        says what each does. An unknown keyword raises TypeError here.
        """
        return once_stream(self._gateway, numbers, content, SendOptions(**options))

    def send_batch_many(
        self,
        pairs: Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]],
        **options: Unpack[SendKeywords],
    ) -> SendStream:
        """(mobile, content) pairs in sendBatch chunks of 100 (a lone pair by sendOnce).

        Options: the fields of :class:`SendOptions` as keywords, as for :meth:`send_many`.
        """
        return batch_stream(self._gateway, pairs, SendOptions(**options))

    def send_param_many(
        self,
        template: str,
        rows: Iterable[tuple[str, Sequence[str]]] | AsyncIterable[tuple[str, Sequence[str]]],
        **options: Unpack[SendKeywords],
    ) -> SendStream:
        """A template and (mobile, [p1, ...]) rows in sendParam chunks of 100 (a lone row
        rendered here).

        An invalid template raises ValidationError here, before anything is sent.
        Options: the fields of :class:`SendOptions` as keywords, as for :meth:`send_many`.
        """
        return param_stream(self._gateway, template, rows, SendOptions(**options))

    async def send_all(
        self,
        numbers: Iterable[str] | AsyncIterable[str],
        content: str,
        *,
        on_outcome: OutcomeHook | None = None,
        **options: Unpack[SendKeywords],
    ) -> SendSummary:
        """``send_many`` to the end, for scripts: counts, cost, and the outcomes to look at.

        To bound it in time, give it ``deadline=`` (seconds): dispatch stops then, the
        requests on the wire finish, and the summary is returned with every recipient not
        sent among the failed. A cancellation (a ``move_on_after`` around it) returns no
        summary: ``on_outcome`` (a function) is called with every outcome as it settles,
        accepted ones with their receipts, and, when the send ends early (cancelled, or its
        input failed), with each outcome it still owed before the exception goes on.

        Options: the fields of :class:`SendOptions` as keywords, as for :meth:`send_many`.
        """
        stream = self.send_many(numbers, content, **options)
        return await send_to_the_end(stream, on_outcome)

    # -- reading -------------------------------------------------------------------

    async def get_delivery_reports(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[DeliveryReport | MalformedRecord]:
        """Fetch the delivery reports not fetched before (the gateway hands each out once).

        Every item of the answer is returned, in the gateway's order: one that cannot be
        read is a :class:`MalformedRecord` in its place (its raw attributes and why),
        logged at WARNING, so it does not cost the rest of its batch. Check
        ``isinstance(record, DeliveryReport)`` before reading a report's fields.
        """
        # Not filtered here: the gateway will not hand an item out again, so one left
        # out of this list is lost to the caller (PROTOCOL-NOTES: "a client must hand
        # every record it fetched to its caller; losing one in the client loses it for
        # good"). The streams keep theirs in ``stream.malformed`` for the same reason.
        return await self._gateway.get_delivery_reports(deadline=deadline, retry=retry)

    async def get_replies(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[Reply | MalformedRecord]:
        """Fetch the replies not fetched before (the gateway hands each out once).

        An item that cannot be read is a :class:`MalformedRecord` in its place, as in
        :meth:`get_delivery_reports`.
        """
        return await self._gateway.get_replies(deadline=deadline, retry=retry)

    def watch_delivery_reports(
        self,
        *,
        on_batch: BatchHook[DeliveryReport] | None = None,
        **options: Unpack[PollKeywords],
    ) -> RecordStream[DeliveryReport]:
        """Stream delivery reports as they arrive: ``async with ... as reports: async for``.

        Polls quickly while reports keep coming and every ``interval`` seconds when the
        queue is empty; -1 and transient errors back off without ending the stream.
        Reports fetched but not yet read when the block is left stay in
        ``reports.unread()``. See :class:`RecordStream`.

        ``on_batch`` is awaited with each batch, in order, before its reports are yielded.
        Options are the fields of :class:`PollOptions`, given as keywords (``interval=1``,
        ``stop_when_idle=30``); ``help(PollOptions)`` says what each does. An unknown
        keyword raises TypeError here.
        """
        return watch_delivery_reports(self._gateway, PollOptions(**options), on_batch)

    def watch_replies(
        self,
        *,
        on_batch: BatchHook[Reply] | None = None,
        **options: Unpack[PollKeywords],
    ) -> RecordStream[Reply]:
        """Stream inbound replies as they arrive; shaped as :meth:`watch_delivery_reports`.

        Options: the fields of :class:`PollOptions` as keywords, as for that method.
        """
        return watch_replies(self._gateway, PollOptions(**options), on_batch)

    async def estimate(
        self,
        content_or_template: str | None = None,
        *,
        recipients: int | None = None,
        messages: Iterable[str | tuple[str, str]] | None = None,
        rows: Iterable[tuple[str, Sequence[str]]] | None = None,
        cgid: int | None = None,
        csid: int | None = None,
    ) -> Estimate:
        """What a send would cost, and whether the balance covers it; sends nothing.

        ``estimate(content, recipients=N)`` for one content to N numbers;
        ``estimate(messages=[(mobile, content), ...])`` for a batch;
        ``estimate(template, rows=[(mobile, [p1, ...]), ...])`` for a template.
        Channel groups and signatures are cached for a minute; the balance is fresh.
        """
        return await _estimate.estimate(
            self._gateway,
            content_or_template,
            recipients=recipients,
            messages=messages,
            rows=rows,
            cgid=cgid,
            csid=csid,
        )

    def campaign(
        self,
        path: str | os.PathLike[str],
        *,
        resend_unknown: bool = False,
        durable: bool = False,
        on_found: FoundHook | None = None,
    ) -> Campaign:
        """A resumable campaign journalled in the SQLite file at ``path``.

        ``async with client.campaign("sale.db") as campaign:`` then
        ``campaign.send_many(...)`` as with the bulk calls. Running it again resumes:
        accepted chunks are skipped, never-sent ones sent, and chunks whose fate is
        unknown are listed, resent only with ``resend_unknown=True``.

        ``on_found`` is called (synchronously) with a :class:`FoundOnResume` for each
        chunk a stopped process left on the wire, as a send of this campaign re-reads it
        and the journal records its numbers: the recipients no outcome of the send names.
        A hook that raises is logged, and the send goes on.
        """
        return open_campaign(
            self._gateway, path, resend_unknown=resend_unknown, durable=durable, on_found=on_found
        )

    async def get_balance(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> Balance:
        """The account's balance."""
        return await self._gateway.get_balance(deadline=deadline, retry=retry)

    async def get_channel_groups(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[ChannelGroup]:
        """The channel groups this account may use, with their billing."""
        return await self._gateway.get_channel_groups(deadline=deadline, retry=retry)

    async def get_signs(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[Signature]:
        """The signatures this account may use (csid 0 is the default)."""
        return await self._gateway.get_signs(deadline=deadline, retry=retry)

    # -- the key -------------------------------------------------------------------

    async def rotate_key(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> KeyRotation:
        """Rotate the authkey; from then on this client uses the new one.

        Persist ``KeyRotation.authkey`` before anything else (``on_key_rotation`` is called
        before any other request may start): the old key stops working at once, and a
        process that loses the new key is locked out of the account. If the answer itself
        is lost, the error has ``outcome_unknown`` set: the key may or may not have
        changed, and the client keeps the old one.
        """
        return await self._gateway.rotate_key(deadline=deadline, retry=retry)
