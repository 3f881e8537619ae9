"""The gateway layer: one account's configuration, transport, scheduler and key gate,
and the gateway's nine actions.

Every request of a client goes through :meth:`Gateway.call` (or :meth:`Gateway.run`):
its turn from the scheduler, its attempts, its deadline, and what it tells observers.
Each action method validates its input completely, builds the form, and makes one
call. Features (bulk streams, report streams, estimates, campaigns) are given a
``Gateway``; ``AisixClient`` composes them.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio.lowlevel
import attrs

from ._core.billing import PriceBook
from ._core.errors import (
    AisixError,
    CircuitOpenError,
    ClientClosedError,
    DeadlineExceededError,
    EndpointError,
    KeyRotationHookError,
    ProtocolError,
    RateLimitedError,
    TransportError,
    UnusableKeyError,
    ValidationError,
    error_for_code,
    never_reached_the_gateway,
    redact_keys,
)
from ._core.models import (
    Balance,
    ChannelGroup,
    DeliveryReport,
    KeyRotation,
    MalformedRecord,
    Reply,
    SendReceipt,
    Signature,
    parse_records,
)
from ._core.validate import (
    Numbering,
    check_account,
    check_at,
    check_authkey,
    check_batch,
    check_cgid,
    check_content,
    check_csid,
    check_key_not_in_urls,
    check_mobiles,
    check_number,
    check_numbering,
    check_param_rows,
)
from ._core.wire import (
    DEFAULT_BASE_URL,
    GATEWAY_TZ,
    QUEUE_ACTIONS,
    SEND_ACTIONS,
    UNSAFE_ACTIONS,
    Endpoints,
    Fields,
    Secret,
    batch_fields,
    encode_form,
    hide_authkey,
    hide_keys,
    once_fields,
    param_fields,
    url_setting,
)
from ._core.xml import Answer, LazyAnswer, parse_answer, parse_answer_keeping, parse_head
from ._mechanics.http import HttpTransport
from ._mechanics.keygate import KeyGate
from ._mechanics.observe import CallObservation, ClientStats, Observer, UnknownHook
from ._mechanics.outlive import (
    AnsweredAfterCancel,
    CancelledOnWire,
    PendingAnswer,
    outlive_native_cancel,
)
from ._mechanics.scheduler import (
    AttemptTally,
    DispatchHooks,
    RateState,
    RetryDetails,
    RetryPolicy,
    Scheduler,
)
from ._mechanics.shared_limit import SharedLimit, hide_url

if TYPE_CHECKING:
    from ._mechanics.http import HttpClient

__all__ = ["GATEWAY_TZ", "Gateway", "KeyRotationHook", "receipts_of"]

logger = logging.getLogger("aisix_async")
_T = TypeVar("_T")
_R = TypeVar("_R")
#: An answer read whole (``parse_answer``), or one whose items wait (``parse_head``).
_A = TypeVar("_A", Answer, LazyAnswer)

KeyRotationHook = Callable[[KeyRotation], "Awaitable[None] | None"]


class Gateway:
    """One account on the gateway: what a feature is given to make requests.

    Holds the configuration (account, key, URLs, defaults, numbering policy), the HTTP
    transport, the scheduler every request goes through, and the key gate that holds
    requests back while the key rotates. Its action methods are the gateway's nine
    actions, one request each; :meth:`call` runs any action's fields through the same
    machinery for the bulk engine and the report streams.
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
        # Held as a Secret from the first line: should this constructor fail on another
        # argument, the key is a local of its frame, which error trackers print.
        authkey = hide_authkey(authkey)
        shared_limit = hide_url(shared_limit)  # its password, likewise
        # And a key pasted as the account (given, or from the environment), until refused.
        account = hide_keys(account if account is not None else _env("AISIX_ACCOUNT", "account"))
        base_url, data_url = hide_keys(base_url), hide_keys(data_url)  # a key pasted there
        self.account = check_account(account)
        if authkey is None:
            # A Secret too when read from the environment: a key there with a stray "\r"
            # (an env file saved on Windows) or in lower case is refused, and the refusing
            # frame's locals, which error trackers print, held it as a plain str.
            authkey = hide_authkey(_env("AISIX_AUTHKEY", "authkey"))
        self._authkey = Secret(check_authkey(authkey))
        if isinstance(base_url, str) and not base_url.strip():
            # An unset setting read as "" silently meant the real gateway, not the
            # emulator or staging host meant (a user's trial).
            raise ValidationError(
                "base_url is empty: give a URL, or leave it out (None) for AISIX_BASE_URL "
                f"or the default, {DEFAULT_BASE_URL}"
            )
        self.endpoints = Endpoints.from_base(
            base_url
            or _env_url("AISIX_BASE_URL", f"the default, {DEFAULT_BASE_URL}")
            or DEFAULT_BASE_URL,
            data_url or _env_url("AISIX_DATA_URL", "the DataApi under the base URL") or None,
        )
        check_key_not_in_urls(
            self._authkey, base_url=self.endpoints.open_url, data_url=self.endpoints.data_url
        )
        self.numbers = check_numbering(numbers)
        #: The channel group and signature a send uses when it names none.
        self.cgid = check_cgid(cgid) or None
        self.csid = check_csid(csid)
        check_number(timeout, "timeout")
        check_number(max_answer_bytes, "max_answer_bytes", integer=True, minimum=1)
        if not isinstance(gateway_tz, tzinfo):
            # A zone's name (a str) passed here failed only at the first send with `at=`,
            # as a TypeError that no `except AisixError` catches.
            raise ValidationError(
                "gateway_tz must be a datetime.tzinfo, such as "
                f"zoneinfo.ZoneInfo('Asia/Shanghai'), got {type(gateway_tz).__name__}"
            )
        self.gateway_tz = gateway_tz
        self.timeout = timeout
        for name, hook in (
            ("on_retry", on_retry),
            ("on_key_rotation", on_key_rotation),
            ("on_unknown", on_unknown),
        ):
            # Else taken, and failing only when first called, as a TypeError in a log:
            # on_unknown at the first unknown outcome, the one it was there to report.
            if hook is not None and not callable(hook):
                raise ValidationError(
                    f"{name} must be a function (or None), got {type(hook).__name__}"
                )
            if name != "on_key_rotation" and inspect.iscoroutinefunction(hook):
                # Called synchronously: the coroutine would never run, and every unknown
                # outcome go unreported but for a RuntimeWarning (an SRE's trial).
                raise ValidationError(
                    f"{name} is called synchronously, and must be a plain function: an "
                    "async one's coroutine would never run (start a task from it instead)"
                )
        # Counters, histograms, the on_unknown hook, and OpenTelemetry when installed.
        self.observer = Observer(on_unknown=on_unknown, otel=otel)
        self._on_key_rotation = on_key_rotation
        self._gate = KeyGate()
        self._given_state = rate_state if isinstance(rate_state, RateState) else None
        # Clients of one account in other processes share its pace through Redis.
        # None: as the environment says; "" turns it off where the environment turns it on
        # (a test, a one-off script on a host whose services share).
        if shared_limit is None:
            shared_limit = hide_url(os.environ.get("AISIX_SHARED_LIMIT"))
        shared_url = shared_limit or None
        self.shared = (
            SharedLimit(
                shared_url,
                account=self.account,
                gateway_url=self.endpoints.open_url,
                # Should Redis hold no schedule yet (or have lost it), a pace this client
                # was handed starts it, trusted as much as the client trusts it alone.
                seed_pace=_seed_pace(rate_state),
            )
            if shared_url is not None
            else None
        )
        # One scheduler for every request: the gateway limits the account.
        self.scheduler = Scheduler(
            shared=self.shared,
            max_concurrency=max_concurrency,
            initial_concurrency=initial_concurrency,
            max_rate=max_rate,
            retry=retry,
            on_retry=on_retry,
            rate_state=rate_state,
        )
        self._transport = HttpTransport(
            timeout=timeout,
            max_body=max_answer_bytes,
            max_connections=max_concurrency,
            http_client=http_client,
            http_stack=http_stack,
        )
        #: Channel groups and signatures, cached briefly, for estimates and balance checks.
        self.prices = PriceBook(self.get_channel_groups, self.get_signs)
        self.observer.bind(self.account, self.scheduler)
        self._closed = False
        # The event loop of the first request: the connection pool belongs to it.
        self._loop: weakref.ref[object] | None = None

    def __repr__(self) -> str:
        # The authkey is deliberately absent. Read with defaults: a constructor that
        # failed halfway leaves a frame whose locals a traceback may print.
        endpoints = getattr(self, "endpoints", None)
        # A key pasted as the URL's host is a valid host name: hidden here as elsewhere.
        url = redact_keys(endpoints.open_url) if endpoints is not None else None
        return f"<Gateway account={getattr(self, 'account', None)!r} url={url!r}>"

    @property
    def http_stack(self) -> str:
        """The HTTP library in use ("httpx" or "httpx2")."""
        return self._transport.stack

    async def aclose(self) -> None:
        """Refuse what is not yet sent, let the requests on the wire finish, then close
        the HTTP client we own (one passed in by the caller stays open)."""
        self._closed = True
        used_in = self._loop() if self._loop is not None else None
        if used_in is not None and used_in is not anyio.lowlevel.current_token().native_token:
            # Its pooled connections belong to the loop that used it (often closed by
            # now): closing them from here failed with "Event loop is closed", which
            # named neither the client nor the cause. Nothing waits in this loop either.
            logger.warning(
                "%r closed from another event loop than the one it was used in: its "
                "connections (HTTP, and Redis for shared_limit) belong to that loop and are "
                "not closed here (close a client in the loop that uses it)",
                self,
            )
            return
        # Calls still waiting for a turn (or to retry) would otherwise go out later on a
        # closed pool, each failing at its paced turn with the HTTP stack's words (11 s
        # after the close, in a user's trial), and requests on the wire would be cut off:
        # accepted sends reported as unknown. Bounded by a request's own timeout.
        self.scheduler.close()
        try:
            with anyio.move_on_after(self.timeout + 1.0):
                await self.scheduler.wait_idle()
            await self._transport.aclose()
        finally:
            if self.shared is not None:
                await self.shared.aclose()

    def check_open(self) -> None:
        """Refuse a closed gateway."""
        if self._closed:
            # Worded for the user, who holds an AisixClient, not this layer.
            raise ClientClosedError(
                f"this client (account {self.account!r}) is closed: create a new one"
            )

    def check_usable(self) -> None:
        """Refuse a closed gateway, and one used from another event loop than its first.

        The HTTP stack's pooled connections belong to the loop that opened them: from
        another loop a request fails with "Event loop is closed" (or worse, hangs), and
        the old sockets leak. Saying so at once is kinder (e.g. a client made at import
        time and used by tests that each run their own loop).
        """
        self.check_open()
        if self.shared is not None:
            self.shared.check_runtime()
        loop = anyio.lowlevel.current_token().native_token
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            raise RuntimeError(
                f"{self!r} was first used in another event loop, which owns its connections: "
                "create one client per event loop (inside the function asyncio.run or "
                "anyio.run runs)"
            )

    # -- defaults ------------------------------------------------------------------

    def targets(self, cgid: int | None, csid: int | None) -> tuple[int | None, int | None]:
        """The channel group and signature a send uses: its own, else the defaults.

        A call's 0 is the account's default, over the client's (a ``cgid=0`` was read as
        "none given", and the client's cgid went out: another group, another price); the
        group is then None, as a client without a default cgid sends it (left out).
        """
        cgid = check_cgid(cgid)
        csid = check_csid(csid)
        return (self.cgid if cgid is None else cgid or None, self.csid if csid is None else csid)

    def now(self) -> datetime:
        """The time the schedule check reads (a seam: tests pin it)."""
        return datetime.now(timezone.utc)

    def schedule(self, at: datetime | None) -> str | None:
        """``at`` checked (future, within the gateway's window) in the gateway's form."""
        return check_at(at, now=self.now(), gateway_tz=self.gateway_tz)

    # -- the exchange --------------------------------------------------------------

    async def exchange(
        self,
        action: str,
        fields: Fields,
        on_writing: Callable[[], None] | None = None,
        *,
        parse: Callable[[bytes, str], Answer] = parse_answer,
    ) -> Answer:
        """One request on the wire; the caller holds the key gate.

        Marks which failures leave a send (or a key rotation) in an unknown state: an
        answer lost after the request was written, a garbled answer, -10 and -11.
        ``on_writing``: see :attr:`reports_writing`. ``parse``: ``parse_answer_keeping``
        for an answer whose records exist nowhere else.
        """
        return await self._exchange(action, fields, parse, on_writing=on_writing)

    @property
    def reports_writing(self) -> bool:
        """Whether an ``on_writing`` callback is sure to be called before the first byte
        of a request is written (see ``HttpTransport.reports_writing``): then one not
        called proves that the gateway never saw the request."""
        return self._transport.reports_writing

    async def _exchange(
        self,
        action: str,
        fields: Fields,
        parse: Callable[[bytes, str], _A],
        on_written: Callable[[], None] | None = None,
        *,
        on_writing: Callable[[], None] | None = None,
    ) -> _A:
        unsafe = action in UNSAFE_ACTIONS
        body = encode_form(self.account, self._authkey, fields)
        try:
            raw = await self._transport.post_form(
                self.endpoints.url_for(action), body, on_written=on_written, on_writing=on_writing
            )
            answer = parse(raw, action)
        except TransportError as exc:
            if unsafe and exc.request_sent:
                # Only a request that changes something is worth this warning: an answer
                # lost for a balance or a list leaves nothing in doubt ...
                raise _may_have_acted(exc) from None
            if action in QUEUE_ACTIONS and exc.request_sent:
                # ... but for a report or reply queue it may have taken records.
                raise TransportError(
                    _may_have_taken(exc.message),
                    request_sent=True,
                    url=exc.url,
                    setting=exc.setting,
                ) from None
            raise
        except EndpointError:
            # Refused before any gateway saw it (a 404 from a mistyped URL, a 413 from a
            # proxy's size limit: see error_for_status), so a send is failed, certainly
            # not sent, and a poll took no records. Called unknown, a campaign would never
            # send those recipients again, though nobody got the message. (A 502 or 504
            # stays unknown: a proxy answers those after passing the request on.)
            raise
        except ProtocolError as exc:
            if action in QUEUE_ACTIONS:
                raise ProtocolError(_may_have_taken(exc.message), action=action) from None
            exc.outcome_unknown = unsafe
            raise
        if answer.result != 1:
            raise error_for_code(action, answer.result, is_send=unsafe)
        return answer

    def refuse_own_key(self, action: str, texts: Iterable[str]) -> None:
        """Refuse a send whose text holds this client's authkey, before it goes out.

        An SMS is read by whoever holds the phone: a key in one is given away (a user's
        trial sent one, pasted as the content; the CLI refused it, the library did not).
        Matched in either case, as the gateway's keys are hex. The error names neither
        the key nor the text.
        """
        key = str(self._authkey).upper()
        if any(key in text.upper() for text in texts):
            raise ValidationError(
                f"{action}: the text to send holds this client's authkey; refused, nothing "
                "was sent (an SMS would hand the key to whoever reads it)"
            )

    async def call(
        self,
        action: str,
        fields: Fields,
        *,
        tally: AttemptTally | None = None,
        hooks: DispatchHooks | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        single: bool = False,
        on_writing: Callable[[], None] | None = None,
        parse: Callable[[bytes, str], Answer] = parse_answer,
    ) -> Answer:
        """Run one action through the scheduler (``tally``/``hooks``: see Scheduler.run).

        ``single``: a call of the public API, bounded by ``deadline`` and by an enclosing
        cancel scope's deadline (the bulk engine has its own rules for cut-off chunks).
        ``on_writing`` is called as each attempt's request begins to be written (see
        :attr:`reports_writing`).
        """
        if action in SEND_ACTIONS:
            # Every send passes here, a bulk chunk's as much as a single call's.
            self.refuse_own_key(action, (value for name, value in fields if name not in _NOT_TEXT))
        writing = _Writing(on_writing)

        def exchange() -> Awaitable[Answer]:
            writing.began = False
            return self.exchange(action, fields, writing, parse=parse)

        return await self.run(
            action,
            exchange,
            mobiles=_mobiles_of(fields) if action in UNSAFE_ACTIONS else "",
            tally=tally,
            hooks=hooks,
            deadline=deadline,
            retry=retry,
            single=single,
            unwritten=(lambda: not writing.began) if self.reports_writing else None,
        )

    async def poll(
        self, action: str, *, on_written: Callable[[], None] | None = None
    ) -> LazyAnswer:
        """One poll of a queue (getSendState, getReply) through the scheduler, as
        :meth:`call` makes it, whose answer's items are read only when asked for.

        The poll's result is known once the answer's root is read, so the caller can send
        the next poll before reading the items (``LazyAnswer.read_items()``, which raises
        ProtocolError for a garbled rest). ``on_written`` is called once a request of this
        poll is written (where the HTTP stack reports it; see ``HttpTransport.post_form``).
        Only for actions that change nothing: a send's answer is read whole before its
        outcome is known.
        """
        if action in UNSAFE_ACTIONS:
            raise ValueError(f"{action} changes something: its answer is read whole (call())")
        return await self.run(action, lambda: self._exchange(action, [], parse_head, on_written))

    async def run(
        self,
        action: str,
        exchange: Callable[[], Awaitable[_T]],
        *,
        mobiles: str = "",
        tally: AttemptTally | None = None,
        hooks: DispatchHooks | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        single: bool = False,
        exclusive: bool = False,
        unwritten: Callable[[], bool] | None = None,
    ) -> _T:
        """One call: its turn, its attempts, its deadline, and what it tells observers.

        With a deadline (given, or an enclosing cancel scope's), the queue and the waits
        between attempts are bounded by it and end in DeadlineExceededError (nothing was
        sent); an attempt already on the wire is shielded and runs to its answer or to the
        client's ``timeout``, so the caller learns the truth instead of a bare
        cancellation. Without one, a cancellation that lands while a send is on the wire
        is recorded as an unknown outcome (WARNING, ``on_unknown``, ``stats()``) and
        propagates; unless ``unwritten()`` says that the attempt's request had not begun
        to be written (it waited for a connection): then the call was only cancelled.
        """
        self.check_usable()
        if deadline is not None:
            check_number(deadline, "deadline")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValidationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        unsafe = action in UNSAFE_ACTIONS
        call = CallObservation(self.observer, action, mobiles, single=single)
        deadline_at = math.inf
        if single:
            # A caller cancelled already (its effective deadline reads -inf) hears the
            # cancellation itself, before anything happens.
            await anyio.lowlevel.checkpoint_if_cancelled()
            deadline_at = anyio.current_effective_deadline()
            if deadline is not None:
                deadline_at = min(deadline_at, anyio.current_time() + deadline)
        bounded = deadline_at != math.inf
        cancelled = anyio.get_cancelled_exc_class()
        on_wire_when_cancelled = False
        # A send's answer that came after its caller was cancelled (see below): accepted.
        answered_late: object = None
        # A send whose caller no deadline held went on at once: its exchange, still running.
        pending: PendingAnswer | None = None
        # A queue read cut off on the wire lost the records its answer held (said below).
        queue_read = single and action in QUEUE_ACTIONS

        async def attempt() -> _T:
            nonlocal on_wire_when_cancelled, answered_late, pending
            gate = self._gate.exclusive() if exclusive else self._gate.shared()
            async with gate:
                # The last moment to give up with nothing sent. A turn that came without a
                # checkpoint would otherwise write a request whose deadline has passed, or
                # whose caller is already cancelled (and then call it "unknown").
                if bounded and anyio.current_time() >= deadline_at:
                    raise DeadlineExceededError(action, deadline, last_error=call.last_error)
                await anyio.lowlevel.checkpoint_if_cancelled()
                if single:
                    # The breaker may have opened while this call waited for its turn.
                    self.scheduler.breaker.recheck(action, time.monotonic())
                since = call.dispatched()
                try:
                    # updateKey is shielded whatever the caller: a cancel that cut its
                    # answer off rotated the key and lost the new one (a lockout).
                    if bounded or action == "updateKey":
                        result = await self._shielded(action, exchange, unwritten)
                    elif single:
                        # Cancelled on the wire, the caller goes on at once, and the
                        # scheduler waits for the answer in its place (see outlive.py).
                        result = await outlive_native_cancel(exchange, unwritten, wait=False)
                    else:
                        result = await exchange()
                except CancelledOnWire as gone:
                    call.answered(since, gone.cancel)
                    on_wire_when_cancelled = unsafe or queue_read
                    pending = gone.answer
                    raise
                except AnsweredAfterCancel as late:
                    # asyncio cancelled the caller while the request was on the wire, and
                    # its answer came meanwhile (see _shielded): the scheduler learns from
                    # it, then raises the cancellation. An answer that proves nothing was
                    # sent (-1, no connection) makes it a plain cancellation, not unknown.
                    call.answered(since, late.error)
                    on_wire_when_cancelled = not (
                        isinstance(late.error, RateLimitedError)
                        or never_reached_the_gateway(late.error)
                    )
                    answered_late = late.result
                    raise
                except BaseException as exc:
                    call.answered(since, exc)
                    if (unsafe or queue_read) and isinstance(exc, cancelled):
                        on_wire_when_cancelled = unwritten is None or not unwritten()
                    raise
                call.answered(since, None)
                return result

        def run() -> Awaitable[_T]:
            return self.scheduler.run(
                attempt,
                action=action,
                # A queue read is not retried once written either: a retry would hide a
                # poll whose records were lost behind one that succeeded.
                unsafe=unsafe or action in QUEUE_ACTIONS,
                tally=tally,
                hooks=hooks,
                retry=retry,
                log_extra=call.log_extra(),
                leave_when_open=single,
            )

        try:
            if not bounded:
                result = await run()
                call.finished("accepted")
                return result
            with anyio.CancelScope(deadline=deadline_at):
                result = await run()
                call.finished("accepted")
                return result
        except cancelled:
            if on_wire_when_cancelled and not unsafe:
                # A queue read: what it took is gone with its answer (each record is
                # handed out once), and went unsaid (300 reports in a user's trial). A
                # stream's poll says so itself (it is cancelled only at its close). No
                # traceback: the cancellation is the caller's, not a fault to trace.
                logger.error(  # noqa: TRY400
                    "%s: cancelled while its request was on the wire: the records its "
                    "answer held are lost (the gateway hands each out once; a stream's "
                    "polls are shielded, see watch_delivery_reports)",
                    action,
                )
                call.finished("cancelled")
                raise
            receipts = _late_receipts(answered_late) if unsafe and mobiles else None
            if on_wire_when_cancelled and receipts is not None:
                # Cancelled on the wire, but the answer came before the cancellation went
                # on, and it was accepted: sent, msgids and all. Reported as unknown, the
                # caller's record of it said "may have been sent" where the SDK knew, and
                # had the msgids that its delivery reports are matched by (a user's trial:
                # 38 sends cancelled on the wire, every one in the gateway's ledger).
                call.finished("accepted")
                self.observer.record_answered(action, mobiles, receipts, call.id, call.level)
                raise
            if on_wire_when_cancelled:
                call.finished("unknown")
                self.observer.record_unknown(
                    action, mobiles, "cancelled", None, call.id, call.level
                )
                if pending is not None and unsafe and mobiles:
                    self._settle_when_answered(pending, action, mobiles, call)
                raise
            if not bounded or anyio.current_time() < deadline_at:
                # Cancelled for another reason than the deadline, before anything went out.
                call.finished("cancelled")
                raise
            # An enclosing scope with the same deadline took the cancellation: it still
            # means "not sent", and saying so beats a bare TimeoutError.
            error = DeadlineExceededError(action, deadline, last_error=call.last_error)
            call.finished("deadline", error)
            raise error from None
        except AisixError as exc:
            if exc.outcome_unknown:
                call.finished("unknown", exc)
                self.observer.record_unknown(action, mobiles, "error", exc, call.id, call.level)
            elif isinstance(exc, DeadlineExceededError):
                call.finished("deadline", exc)
            elif isinstance(exc, ClientClosedError):
                # The user closed the client: said to the caller, not worth a WARNING each.
                call.finished("closed", exc)
            else:
                refused_here = isinstance(exc, CircuitOpenError)
                call.finished("circuit_open" if refused_here else "failed", exc)
            raise
        except BaseException:
            call.finished("stopped")
            raise
        # Only our own scope catches its deadline and lands here.
        error = DeadlineExceededError(action, deadline, last_error=call.last_error)
        call.finished("deadline", error)
        raise error

    def _settle_when_answered(
        self, answer: PendingAnswer, action: str, mobiles: str, call: CallObservation
    ) -> None:
        # A send whose caller no deadline held was reported unknown as the caller left;
        # its exchange goes on (see outlive.py), and its answer settles what was
        # reported. Accepted: it was sent, and its msgids are known (the caller's record
        # may say "sent", with what its delivery reports will carry). Left unsaid, the
        # SDK read the answer and kept it to itself (a user's trial).
        def done(future: PendingAnswer) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            receipts = _late_receipts(future.result())
            if receipts is not None:
                self.observer.record_answered(
                    action, mobiles, receipts, call.id, call.level, settles_unknown=True
                )

        answer.add_done_callback(done)

    async def _shielded(
        self,
        action: str,
        exchange: Callable[[], Awaitable[_T]],
        unwritten: Callable[[], bool] | None = None,
    ) -> _T:
        """Run an exchange that the caller's deadline may no longer interrupt.

        From here the request is (about to be) written: cutting it off would leave a
        send's fate unknown, so it runs to its answer, bounded by the client's own
        ``timeout`` instead. On asyncio, its own cancellation of the caller (which no
        anyio shield holds off) waits for the answer too, then goes on: see
        :mod:`._mechanics.outlive` (``unwritten``: as for :meth:`run`).
        """
        deadline = anyio.current_time() + self.timeout

        async def bounded() -> _T:
            with anyio.CancelScope(deadline=deadline):
                return await exchange()
            lost = TransportError(
                f"{action}: no answer within {self.timeout:g} s after the request was written",
                request_sent=True,
                url=self.endpoints.url_for(action).partition("?")[0],
                setting=url_setting(action),
            )
            raise _may_have_acted(lost) if action in UNSAFE_ACTIONS else lost

        with anyio.CancelScope(shield=True):
            result = await outlive_native_cancel(bounded, unwritten)
        # Returned after the block: mypy reads a scope as one that may swallow what is
        # raised in it (a shielded one never does), and a return inside as a missing one.
        return result  # noqa: RET504

    def stats(self) -> ClientStats:
        """A frozen snapshot: the scheduler (limit, pace, in flight, -1s, retries), counts
        of attempts by result code and of calls by outcome, histograms of queue wait and
        gateway latency, unknown outcomes, and whether the circuit breaker is open."""
        scheduler, shared = self.scheduler, self.shared
        return self.observer.snapshot(
            attrs.evolve(scheduler.stats(), http_stack=self.http_stack),
            circuit_open=scheduler.breaker.is_open,
            shared_limit_up=None if shared is None else shared.available,
            shared_limit_fallbacks=0 if shared is None else shared.fallbacks,
            shared_pace=None if shared is None else shared.last_pace,
            shared_clients=None if shared is None else shared.last_clients,
        )

    async def check_shared_limit(self) -> bool | None:
        """See :meth:`AisixClient.check_shared_limit`."""
        self.check_open()
        return None if self.shared is None else await self.shared.check()

    def rate_state(self) -> RateState:
        """What this client learned about the account's limit, to start another from.

        ``AisixClient(..., rate_state=state)`` starts at that pace instead of finding it
        again; ``state.as_dict()`` is JSON-ready and ``RateState.from_dict`` reads it back.
        With ``shared_limit`` its pace is the whole fleet's (the account's), not this
        client's share: a state kept from one of three processes used to start the next
        run, alone or as a fleet, at a third of the limit.
        """
        state = self.scheduler.rate_state()
        shared = self.shared
        if shared is None:
            return state
        if shared.last_ceiling is not None:
            return attrs.evolve(state, pace=shared.last_ceiling, learned_at=shared.measured_at)
        if shared.last_pace is None:
            # Redis never gave this client a turn (down all along): it paced itself, as a
            # client without shared_limit does, and what it measured is handed on as such
            # (it said None after four cuts of its own, and a journal or the CLI's cache
            # lost them; a user's trial).
            return state
        # Nothing measured by the fleet: this client's own pace is a share, not the
        # account's. A state it was given is handed on as given (a schedule seeded from
        # it measured nothing new: handed on lowered for its age with its old date, it
        # was lowered again by the next run).
        if self._given_state is not None:
            return attrs.evolve(self._given_state, concurrency=state.concurrency)
        return attrs.evolve(state, pace=None)

    # -- the nine actions -----------------------------------------------------------

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
        """sendOnce: one content to 1-1000 numbers in one request; one receipt for them all."""
        numbers = check_mobiles(mobiles, numbering=self.numbers)
        text = check_content(content, plain=True)
        cgid, csid = self.targets(cgid, csid)
        fields = once_fields(numbers, text, cgid=cgid, csid=csid, at=self.schedule(at))
        return (await self._send("sendOnce", fields, 1, deadline, retry))[0]

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
        """sendBatch: 2-100 (mobile, content) pairs in one request; a receipt each, in order."""
        pairs = check_batch(messages, numbering=self.numbers)
        cgid, csid = self.targets(cgid, csid)
        fields = batch_fields(pairs, cgid=cgid, csid=csid, at=self.schedule(at))
        return await self._send("sendBatch", fields, len(pairs), deadline, retry)

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
        """sendParam: a template and 2-100 rows of (mobile, values); a receipt each."""
        text, checked = check_param_rows(template, rows, numbering=self.numbers)
        cgid, csid = self.targets(cgid, csid)
        fields = param_fields(text, checked, cgid=cgid, csid=csid, at=self.schedule(at))
        return await self._send("sendParam", fields, len(checked), deadline, retry)

    async def _send(
        self,
        action: str,
        fields: Fields,
        expected: int,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> list[SendReceipt]:
        answer = await self.call(action, fields, deadline=deadline, retry=retry, single=True)
        try:
            return receipts_of(answer, expected)
        except AisixError as exc:
            self.observer.record_unknown(action, _mobiles_of(fields), "error", exc)
            raise

    async def get_delivery_reports(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[DeliveryReport | MalformedRecord]:
        """getSendState: the delivery reports not fetched before, unreadable ones kept."""
        answer = await self._read_queue("getSendState", deadline, retry)
        return parse_records(
            "getSendState", answer.items, DeliveryReport.from_item, DeliveryReport.from_items
        )

    async def get_replies(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[Reply | MalformedRecord]:
        """getReply: the replies not fetched before, unreadable ones kept."""
        answer = await self._read_queue("getReply", deadline, retry)
        return parse_records("getReply", answer.items, Reply.from_item)

    async def _read_queue(
        self, action: str, deadline: float | None, retry: RetryPolicy | None
    ) -> Answer:
        # The gateway hands each record out once: of an answer cut short, the records
        # read whole before the fault are returned, not dropped with an error (a trial
        # lost all 19 of a cut batch of 20). Said at ERROR, as a stream says it.
        answer = await self.call(
            action, [], deadline=deadline, retry=retry, single=True, parse=parse_answer_keeping
        )
        if answer.cut_short is not None:
            logger.error(
                "%s: the answer was cut short (%s); the %d records read whole before the "
                "fault are returned, those past it are lost (the gateway does not hand "
                "them out again)",
                action,
                answer.cut_short,
                len(answer.items),
            )
        return answer

    async def get_balance(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> Balance:
        """getBalance: the account's balance."""
        answer = await self.call("getBalance", [], deadline=deadline, retry=retry, single=True)
        return Balance.from_item(_single(answer, "getBalance"))

    async def get_channel_groups(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[ChannelGroup]:
        """getChannelGroup: the channel groups this account may use, with their billing."""
        answer = await self.call("getChannelGroup", [], deadline=deadline, retry=retry, single=True)
        return [ChannelGroup.from_item(item) for item in answer.items]

    async def get_signs(
        self, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> list[Signature]:
        """getSign: the signatures this account may use (csid 0 is the default)."""
        answer = await self.call("getSign", [], deadline=deadline, retry=retry, single=True)
        return [Signature.from_item(item) for item in answer.items]

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

        async def rotate() -> KeyRotation:
            # Inside the exclusive gate, and shielded with the exchange under a deadline:
            # a new key must be stored before anything else happens.
            # A new key read whole from an answer cut short after it is the new key: the
            # old one no longer works, and an "unknown" would leave the account locked out.
            answer = await self.exchange("updateKey", [], parse=parse_answer_keeping)
            if answer.cut_short is not None:
                logger.error(
                    "updateKey: the answer was cut short after the new key (%s); the new "
                    "key, read whole, is used",
                    answer.cut_short,
                )
            try:
                update = KeyRotation.from_item(_single(answer, "updateKey"))
            except AisixError as exc:
                # The gateway said 1: the old key no longer works, and the new one cannot
                # be read from the answer. Never "nothing happened".
                raise ProtocolError(
                    f"updateKey: the gateway rotated the key but its answer gives no usable "
                    f"new key ({exc.message}); the old key may no longer work",
                    action="updateKey",
                    outcome_unknown=True,
                ) from None
            # White space around the key is no part of it (an answer padded by hand).
            update = attrs.evolve(update, authkey=Secret(update.authkey.strip()))
            try:
                check_authkey(update.authkey)
            except ValidationError as exc:
                # Not thrown away: the gateway may have switched to it, and then it is the
                # only key that works. The caller gets it, to store and look into.
                raise UnusableKeyError(
                    f"updateKey: the gateway rotated the key, but the new key it gave is not "
                    f"one this client can use ({exc.message}); the old key may no longer "
                    "work. The new key, as given, is in this error's .rotation: store it",
                    rotation=update,
                ) from None
            self._authkey = Secret(update.authkey)
            logger.warning("updateKey: the authkey of %s was rotated", self.account)
            if self._on_key_rotation is not None:
                try:
                    result = self._on_key_rotation(update)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    # Whatever the hook could not do (a full disk), the new key must not
                    # be lost with its error: the caller gets it back with ours.
                    raise KeyRotationHookError(
                        f"updateKey: the key was rotated and this client uses the new one, "
                        f"but on_key_rotation raised {type(exc).__name__}; the new key is in "
                        "this error's .rotation: store it before anything else",
                        rotation=update,
                    ) from exc
            return update

        return await self.run(
            "updateKey", rotate, deadline=deadline, retry=retry, single=True, exclusive=True
        )


class _Writing:
    """An ``on_writing`` callback that remembers whether the current attempt's request
    began to be written, and passes the news on."""

    __slots__ = ("_then", "began")

    def __init__(self, then: Callable[[], None] | None) -> None:
        self.began = False
        self._then = then

    def __call__(self) -> None:
        self.began = True
        if self._then is not None:
            self._then()


def _mobiles_of(fields: Fields) -> str:
    """The comma-joined numbers of a send's fields ("" when there are none)."""
    for name, value in fields:
        if name == "m":
            return value
    return ""


def _env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValidationError(f"no {what} given, and {name} is not set")
    return value


def _env_url(name: str, otherwise: str) -> str | None:
    """The URL variable ``name``: None when unset, refused when set but blank.

    ``export AISIX_BASE_URL=$STAGING`` with $STAGING unset, or ``AISIX_BASE_URL=`` in an
    env file, silently meant the real gateway (base_url="" is refused for that reason).
    """
    value = os.environ.get(name)
    if value is not None and not value.strip():
        raise ValidationError(
            f"{name} is set but empty: give it a URL, or unset it for {otherwise}"
        )
    return value


def _single(answer: Answer, action: str) -> dict[str, str]:
    if len(answer.items) != 1:
        raise ProtocolError(
            f"{action}: expected one Item in the answer, got {len(answer.items)}", action=action
        )
    return answer.items[0]


def receipts_of(answer: Answer, expected: int) -> list[SendReceipt]:
    if len(answer.items) != expected:
        # Accepted, but the receipts cannot be matched to messages: whoever holds this
        # must not assume anything was, or was not, delivered.
        raise ProtocolError(
            f"{answer.name}: accepted with {len(answer.items)} receipts for {expected} messages",
            action=answer.name,
            outcome_unknown=True,
        )
    try:
        return [SendReceipt.from_item(item) for item in answer.items]
    except AisixError as exc:
        exc.outcome_unknown = True
        raise


#: The fields of a send that carry no text of the sender's: numbers, targets, schedule.
_NOT_TEXT = frozenset({"m", "cgid", "csid", "t"})


def _late_receipts(answer: object) -> tuple[SendReceipt, ...] | None:
    """The receipts of a send's answer that came after its caller had gone; None when it
    holds none that can be read (the outcome then stays unknown)."""
    if not isinstance(answer, Answer) or not answer.items:
        return None
    try:
        return tuple(SendReceipt.from_item(item) for item in answer.items)
    except AisixError:
        return None


def _may_have_taken(message: str) -> str:
    """A failed poll's message, saying what it may have cost."""
    return (
        f"{message}; the records the gateway handed out in this answer, if any, are lost "
        "(it hands each out once)"
    )


def _may_have_acted(error: TransportError) -> TransportError:
    """The same loss, for a request that changes something: its outcome is unknown."""
    return TransportError(
        f"{error.message}; the gateway may have acted on it",
        request_sent=True,
        outcome_unknown=True,
        url=error.url,
        setting=error.setting,
    )


def _seed_pace(state: object) -> float | None:
    # The pace a shared schedule is seeded with from a state handed to the client: as
    # lowered for its age as the client's own start (an old state must not start a whole
    # fleet at the pace of yesterday).
    if not isinstance(state, RateState) or state.pace is None:
        return None
    trust = Scheduler.state_trust(state, time.time())
    if trust is None or trust < Scheduler.STATE_COLD_BELOW:
        # Too old to start from its pace: the schedule starts cold, as the client
        # itself would (a seed lowered for twelve hours' age crawled).
        return None
    return state.pace * trust
