"""Every error the SDK raises, in one hierarchy.

A caller can catch :class:`AisixError` for everything, or a branch of the tree for
one kind of trouble::

    AisixError
    ├── ValidationError (also ValueError)       bad input, refused before any request
    ├── TransportError                          the HTTP exchange failed
    ├── ProtocolError                           the answer is not a well-formed gateway answer
    │   ├── EndpointError                           HTTP 404 and the like, or TLS: a wrong URL
    │   └── UnusableKeyError                        updateKey gave a key unfit for use
    ├── GatewayError                            the gateway answered with a failure code
    │   ├── AccountFormatError                      0
    │   ├── RateLimitedError                       -1
    │   │   └── CircuitOpenError                      -1 that never clears: refused at once
    │   ├── AuthenticationError                    -2
    │   ├── KeyLockedError                         -3
    │   ├── InvalidParameterError                  -4
    │   ├── EnterpriseUnavailableError             -5
    │   ├── StaffUnavailableError                  -6
    │   ├── InterfaceNotEnabledError               -7
    │   ├── ChannelGroupNotAllowedError            -8
    │   ├── InsufficientBalanceError               -9
    │   ├── GatewayInternalError                  -10
    │   ├── ChargeFailedError                     -11
    │   └── UnknownResultError                  any code the document does not list
    ├── NotSentError                            a bulk send stopped before this recipient went out
    ├── SendStoppedError                        the cause of a NotSentError after stop()
    ├── DeadlineExceededError                   a call's deadline passed before it was written
    ├── BalanceTooLowError                      a local estimate says the balance will not do
    ├── CampaignError                           a campaign journal cannot be used as asked
    ├── ExtraNotInstalledError (also ImportError)  an option needs an extra not installed
    ├── SharedLimitError (also RuntimeError)    shared_limit cannot run here (under trio)
    ├── ClientClosedError (also RuntimeError)   the client was closed before this was sent
    ├── ClientAlreadyEnteredError (also RuntimeError)  `async with` on a client already in one
    └── KeyRotationHookError                    the key was rotated; on_key_rotation failed

Every error carries ``outcome_unknown``. It is true only when a *send* may or may not
have gone out (read timeout, a connection dropped after the request was written, -10,
-11, a garbled answer): whoever holds such an error must not resend blindly, because the
gateway may already have charged for and delivered the messages.

No message built here ever contains the authkey: errors are built from action names,
codes and counts, never from request bodies.
"""

from __future__ import annotations

import re
import ssl
from decimal import Decimal
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .models import KeyRotation

__all__ = [
    "ACCOUNT_REFUSALS",
    "BALANCE_REFUSALS",
    "BUSY_REFUSALS",
    "INPUT_REFUSALS",
    "AccountFormatError",
    "AisixError",
    "AuthenticationError",
    "BalanceTooLowError",
    "CampaignError",
    "ChannelGroupNotAllowedError",
    "ChargeFailedError",
    "CircuitOpenError",
    "ClientAlreadyEnteredError",
    "ClientClosedError",
    "DeadlineExceededError",
    "EndpointError",
    "EnterpriseUnavailableError",
    "ExtraNotInstalledError",
    "GatewayError",
    "GatewayInternalError",
    "InsufficientBalanceError",
    "InterfaceNotEnabledError",
    "InvalidParameterError",
    "KeyLockedError",
    "KeyRotationHookError",
    "NotSentError",
    "ProtocolError",
    "RateLimitedError",
    "SendStoppedError",
    "SharedLimitError",
    "StaffUnavailableError",
    "TransportError",
    "UnknownResultError",
    "UnusableKeyError",
    "ValidationError",
    "concerns_the_account",
    "ends_polling",
    "error_for_code",
    "error_for_status",
    "error_for_tls",
    "is_retryable",
    "never_reached_the_gateway",
    "result_of",
    "ssl_error_in",
    "worth_sending_again",
]


#: Added to an unknown outcome's text where its message does not say so itself.
_UNKNOWN_NOTE = "outcome unknown: it may have taken effect; do not repeat it blindly"


class AisixError(Exception):
    """Base of every error raised by aisix_async."""

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.message = message
        #: True when a send may have been delivered and charged although it failed here.
        self.outcome_unknown = outcome_unknown

    def __str__(self) -> str:
        # Read when shown, not when made: an error is marked unknown after it is raised
        # too (receipts that do not parse). A log of str(error) for a -10 said "internal
        # gateway error" and nothing of the message that may have gone out.
        if self.outcome_unknown and "may have" not in self.message:
            return f"{self.message} ({_UNKNOWN_NOTE})"
        return self.message


# An authkey is 32 hex characters. Runs of more are hidden too: a key with a stray
# character typed after it is still a key.
_KEY_LIKE = re.compile(r"[0-9A-Fa-f]{32,}")


def ssl_error_in(error: BaseException | None) -> ssl.SSLError | None:
    """The ssl error ``error`` is, or was caused by, down its chain of causes; None if
    none is. HTTP stacks and redis-py wrap a TLS failure in errors of their own (under
    trio one more level down), whose names alone read like a server that is down."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ssl.SSLError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def redact_keys(text: str) -> str:
    """``text`` with every run of 32 or more hex characters replaced by a placeholder.

    For text that quotes what a user gave: a key passed in the wrong place (swapped with
    the account, as a base URL's port) must not land in a log or an error tracker. A run
    of digits alone is left (a runaway phone number; a key of 32 digits and no letter is
    one in three million).
    """

    def hidden(found: re.Match[str]) -> str:
        run = found.group()
        return run if run.isdigit() else f"<{len(run)} hex characters, not shown>"

    return _KEY_LIKE.sub(hidden, text)


# A form or a query quoting the key ("authkey=...", 'authkey="..."'): its value is hidden
# whatever it looks like, so a key cut short by the end of what was read goes too.
_KEY_VALUE = re.compile(r"""(authkey\s*(?:=|%3D)\s*["']?)([^&\s"'<>]*)""", re.IGNORECASE)
# Hex at the very end of a cut quote may be the first part of a key.
_CUT_HEX = re.compile(r"[0-9A-Fa-f]{6,}$")


def quote_answer(body: bytes, limit: int, *, cut: bool = False) -> str:
    """The first ``limit`` characters of an answer's body, fit for an error or a log line.

    A server or a proxy in front of it may echo the request, key and all, in an error
    page. The whole body is redacted before it is shortened: a key that straddles the
    limit would otherwise lose enough characters to pass for something else. ``cut`` says
    the body itself was read only in part, so a run of hex at its end is hidden too.
    """
    text = _KEY_VALUE.sub(
        lambda found: f"{found.group(1)}<not shown>", body.decode("utf-8", "replace")
    )
    text = redact_keys(text)
    if cut:
        text = _CUT_HEX.sub("<cut>", text)
    if len(text) > limit:
        return text[:limit] + "..."
    return text + ("..." if cut else "")


class ValidationError(AisixError, ValueError):
    """Raised before any request when an input would be refused or mis-delivered."""

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        # Its message quotes the value refused, which may be the authkey given in the
        # wrong place (AisixClient(key, key) said "account must be ..., got '<the key>'").
        super().__init__(redact_keys(message), outcome_unknown=outcome_unknown)


class TransportError(AisixError):
    """Raised when the HTTP exchange itself failed (connect, write, read, timeout)."""

    def __init__(
        self,
        message: str,
        *,
        request_sent: bool,
        outcome_unknown: bool = False,
        url: str | None = None,
        setting: str | None = None,
    ) -> None:
        # The message quotes the HTTP library's error, which may name the URL (and so a
        # key given as its host).
        super().__init__(redact_keys(message), outcome_unknown=outcome_unknown)
        #: False when the gateway cannot have seen the request (e.g. connection refused):
        #: only then is a send safe to retry.
        self.request_sent = request_sent
        #: The URL the request went to, without its query (key-like runs hidden, as in
        #: :class:`EndpointError`); None when not known.
        self.url = redact_keys(url) if url is not None else None
        #: The client option that URL comes from: ``"base_url"``, or ``"data_url"`` for
        #: the report and reply queues (which may live elsewhere); None when not known.
        #: An unreachable DataApi was reported as the base URL to check.
        self.setting = setting


class ProtocolError(AisixError):
    """Raised when an answer is not a well-formed gateway answer for the action asked."""

    def __init__(
        self, message: str, *, action: str | None = None, outcome_unknown: bool = False
    ) -> None:
        super().__init__(message, outcome_unknown=outcome_unknown)
        self.action = action


class EndpointError(ProtocolError):
    """The server at the URL answered with an HTTP status that no retry clears (404, 405,
    410; 400, 414; 401, 403, 407; 413), or an https:// URL's TLS handshake failed for good
    (the server does not speak TLS, or its certificate does not verify): the base URL (or
    the data URL) is wrong, or something in front of the gateway refuses the request (413:
    refuses one this large). No gateway saw it: nothing was done, and a send went out to
    nobody. Raised at once, not retried."""

    def __init__(
        self, message: str, *, action: str, status: int | None, url: str, setting: str
    ) -> None:
        # The message quotes the URL, whose host or path may hold a key pasted there by
        # mistake (base_url="http://" + key was accepted: it is a valid host name).
        super().__init__(redact_keys(message), action=action)
        #: The HTTP status the server answered with; None when there was no HTTP exchange
        #: (the TLS handshake failed).
        self.status = status
        #: The URL that answered it: the action's endpoint, without its query; a run of
        #: 32 or more hex characters in it shows as ``<32 hex characters, not shown>``.
        self.url = redact_keys(url)
        #: The client option the URL comes from: ``"base_url"``, or ``"data_url"`` for
        #: the report and reply queues (the DataApi, under ``base_url`` unless given).
        self.setting = setting


_NOT_THE_GATEWAY = "no gateway answers at this URL"
_UNREADABLE = (
    "the server at this URL cannot read the request (many answer so to an http:// URL "
    "for an https:// port)"
)
_REFUSED_BEFORE = (
    "the server at this URL, or a proxy or firewall in front of it, refused the request "
    "before any gateway saw it (the gateway refuses a wrong key with result -2, not with "
    "an HTTP status)"
)
_TOO_LARGE = (
    "the server at this URL, or a proxy in front of it, refuses a request body this large "
    "before any gateway sees it"
)
# HTTP statuses that say the request was refused where it arrived and will be refused the
# same way every time, so waiting and retrying cannot help (the CLI retried them for two
# minutes, in a user's trial). The gateway answers everything it acts on with HTTP 200 and
# a result code (-1 to -11), so these come from a server or proxy that did not pass the
# request on: a path or method nothing serves (404, 405, 410), a request it could not
# parse or would not take (400, 414), HTTP authentication or an allow-list (401, 403,
# 407), a body over its size limit (413: RFC 9110 says the server refuses to process the
# request, and a proxy answers it without passing the request on; a send meeting one was
# called unknown, and a resumed campaign never sent its recipients again). Left out, so
# retried as before where the action is safe to retry: 408 and 429 (they say "later"),
# and every 5xx (a gateway restarting, or a proxy whose upstream failed: a 502 or 504 may
# come after the gateway acted, so a send meeting one stays unknown).
_ENDPOINT_STATUSES = {
    404: _NOT_THE_GATEWAY,
    405: _NOT_THE_GATEWAY,
    410: _NOT_THE_GATEWAY,
    400: _UNREADABLE,
    414: _UNREADABLE,
    401: _REFUSED_BEFORE,
    403: _REFUSED_BEFORE,
    407: _REFUSED_BEFORE,
    413: _TOO_LARGE,
}


def error_for_status(
    action: str, status: int, url: str, quote: str, *, size: int | None = None
) -> ProtocolError:
    """The error for an HTTP status other than 200 answered to ``action`` at ``url``:
    an :class:`EndpointError` for a status no retry clears, else a ProtocolError.

    ``quote`` is the start of the page, already redacted (see :func:`quote_answer`);
    ``url`` is the endpoint without its query (it never holds the key, which goes in the
    body, nor user info, which ``check_base_url`` refuses). ``size``: the request body's
    length in bytes, told for a 413 (whoever raises the limit needs the figure).
    """
    meaning = _ENDPOINT_STATUSES.get(status)
    if meaning is None:
        return ProtocolError(
            f"{action}: HTTP {status} instead of an answer: {quote!r}", action=action
        )
    # Here, not at the top: wire's checks import this module.
    from .wire import DATA_ACTIONS

    data = action in DATA_ACTIONS
    setting = "data_url" if data else "base_url"
    answered = f"HTTP {status} {HTTPStatus(status).phrase} from {url} (the page: {quote!r})"
    if status == 413:
        # The URL is right: the request is too big for what stands at it. Resending the
        # same request meets the same refusal; a smaller one may pass.
        body = "" if size is None else f" (this one: {size:,} bytes)"
        return EndpointError(
            f"{action}: {answered}: {meaning}{body}. Nothing was done, and the same request "
            "is refused the same way: send fewer recipients or shorter messages per request "
            "(a smaller chunk_size), or raise the body size limit of the server or proxy "
            "at this URL",
            action=action,
            status=status,
            url=url,
            setting=setting,
        )
    return EndpointError(
        f"{action}: {answered}: {meaning}. Nothing was done, and no retry can help: "
        f"check {_url_advice(url, data=data)}",
        action=action,
        status=status,
        url=url,
        setting=setting,
    )


def error_for_tls(action: str, url: str, detail: str, *, certificate: bool) -> EndpointError:
    """The error for an https:// URL whose TLS handshake failed in a way no retry clears:
    the server does not speak TLS (an https:// URL for a plain port), or, ``certificate``,
    its certificate did not verify (a certificate does not become valid by waiting).

    ``detail`` is what the TLS library said (OpenSSL's words), without the key: nothing
    of the request is sent before the handshake.
    """
    from .wire import DATA_ACTIONS

    data = action in DATA_ACTIONS
    if certificate:
        what = (
            f"the TLS certificate of {url} did not verify ({detail}): signed by an "
            "authority this client does not trust, made out to another host name than the "
            "URL's, or expired (to trust another authority, hand the client an http_client "
            "that trusts it)"
        )
    else:
        what = (
            f"{url} does not answer in TLS ({detail}): the server at this port speaks plain "
            "HTTP or another protocol (an https:// URL for an http:// port, most often)"
        )
    return EndpointError(
        f"{action}: {what}. Nothing was sent, and no retry can help: "
        f"check {_url_advice(url, data=data)}",
        action=action,
        status=None,
        url=url,
        setting="data_url" if data else "base_url",
    )


def _url_advice(url: str, *, data: bool) -> str:
    """What to check for a URL that is not the gateway's: the base URL, or the data URL."""
    advice = "the data URL, or the base URL it is made from" if data else "the base URL"
    endpoint = url.rpartition("/")[2]
    if url.endswith(f"/{endpoint}/{endpoint}"):
        # The endpoint's own URL given as the base, a usual slip: the client appends it.
        advice += f" (it ends in /{endpoint} twice: give the URL before it)"
    return advice


class GatewayError(AisixError):
    """Raised when the gateway answers with a result code other than success."""

    #: The result code the gateway answered: every instance has one, so it is typed
    #: ``int`` (it was ``int | None``, and ``abs(error.code)`` failed ``mypy --strict``).
    #: Each documented code's class holds its own as a class attribute too
    #: (``InvalidParameterError.code == -4``); GatewayError and UnknownResultError do not.
    code: int
    meaning: ClassVar[str] = "the gateway refused the request"

    def __init__(
        self,
        action: str,
        code: int,
        *,
        outcome_unknown: bool = False,
        detail: str | None = None,
    ) -> None:
        text = f"{action} failed with result {code}: {self.meaning}"
        if detail:
            text = f"{text} ({detail})"
        super().__init__(text, outcome_unknown=outcome_unknown)
        self.action = action
        # Set on every instance: UnknownResultError carries whatever raw code was sent.
        self.code = code


class AccountFormatError(GatewayError):
    """Result 0: the account is not in ``staff@enterprise`` form."""

    code = 0
    meaning = "the account is not in staff@enterprise form"


class RateLimitedError(GatewayError):
    """Result -1: refused for sending too fast, a time window, or an unbound IP address."""

    code = -1
    meaning = (
        "refused by the server: too fast, outside the account's time window, or this "
        "IP address is not the one bound to the account"
    )


class CircuitOpenError(RateLimitedError):
    """-1 that never clears: the client refuses at once, without asking the gateway.

    Raised once the scheduler has seen nothing but -1 for several seconds (see
    ``aisix_async._mechanics.breaker``), until a probe request is accepted again. Nothing was sent.
    """

    meaning = (
        "refused at once: for several seconds the gateway has answered every request "
        "with -1 (too fast), which no pacing clears; the account is most likely bound to "
        "another IP address or limited to a time window. Nothing was sent; a probe request "
        "is let through now and then, and calls work again once one is accepted"
    )

    def __init__(self, action: str, *, detail: str | None = None) -> None:
        super().__init__(action, -1, detail=detail)


class AuthenticationError(GatewayError):
    """Result -2: the authkey is wrong for this account."""

    code = -2
    meaning = "the authentication key is wrong for this account"


class KeyLockedError(GatewayError):
    """Result -3: the authkey is locked (usually after repeated wrong keys)."""

    code = -3
    meaning = "the authentication key is locked; unlock it in the gateway console"


class InvalidParameterError(GatewayError):
    """Result -4: a parameter was refused (counts, lengths, schedule time ...)."""

    code = -4
    meaning = "a parameter was refused (numbers, content, counts or schedule time)"


class EnterpriseUnavailableError(GatewayError):
    """Result -5: the enterprise account does not exist or is not available."""

    code = -5
    meaning = "the enterprise account does not exist or is not available"


class StaffUnavailableError(GatewayError):
    """Result -6: the staff account does not exist, or is locked or expired."""

    code = -6
    meaning = "the staff account does not exist, or is locked or expired"


class InterfaceNotEnabledError(GatewayError):
    """Result -7: the HTTP interface is not enabled for this account."""

    code = -7
    meaning = "the HTTP sending interface is not enabled for this account"


class ChannelGroupNotAllowedError(GatewayError):
    """Result -8: the account may not use this channel group."""

    code = -8
    meaning = "this account may not use the channel group"


class InsufficientBalanceError(GatewayError):
    """Result -9: the balance does not cover the whole request (nothing was charged)."""

    code = -9
    meaning = "the account balance is too low for this request; nothing was charged"


class GatewayInternalError(GatewayError):
    """Result -10: internal gateway error; for a send, it may have gone out."""

    code = -10
    meaning = "internal gateway error"


class ChargeFailedError(GatewayError):
    """Result -11: charging failed; for a send, it may have gone out."""

    code = -11
    meaning = "charging failed"


class UnknownResultError(GatewayError):
    """Any result code the document does not list; ``code`` holds the raw value."""

    meaning = "a result code the gateway document does not list"


class NotSentError(AisixError):
    """A recipient of a bulk send was never sent: dispatch stopped on an earlier error."""

    def __init__(self, cause: AisixError) -> None:
        super().__init__(f"not sent: dispatch stopped because {cause.message}")
        #: The error that stopped dispatch (e.g. InsufficientBalanceError).
        self.cause = cause
        self.__cause__ = cause


class ExtraNotInstalledError(AisixError, ImportError):
    """An option needs a package of an optional extra that is not installed."""

    def __init__(self, message: str, *, name: str) -> None:
        AisixError.__init__(self, message)
        self.name = name


class SharedLimitError(AisixError, RuntimeError):
    """``shared_limit`` cannot work as given: redis-py's asyncio client needs asyncio (not
    trio), or Redis refused what the URL says (``check_shared_limit``: a wrong password, a
    database it does not have)."""


class ClientClosedError(AisixError, RuntimeError):
    """The client is closed (``aclose()``, or its ``async with`` ended): this call was not
    sent. A call made after the close, and one still waiting for its turn (or to retry)
    when it came, are refused with it; requests already written are let finish."""


class ClientAlreadyEnteredError(AisixError, RuntimeError):
    """``async with client`` on a client that is already in an ``async with`` block.

    A client is entered once, by its owner (the application's lifespan, a script's
    ``main``), and shared with everyone else as it is, without ``async with``: the inner
    block's exit would close it under its owner, whose next call would fail with
    :class:`ClientClosedError`. Nothing was closed or sent: the client is still usable.
    """


class SendStoppedError(AisixError):
    """Why a bulk send's recipients were not sent after its caller called ``stop()``, or
    after the send stopped itself (its schedule less than a minute away, its journal
    unable to record)."""


class DeadlineExceededError(AisixError):
    """A call's ``deadline=`` passed while it queued or waited to retry: nothing was sent.

    Certain: the request (or its retry) was never written. A request already written
    when the deadline passes is allowed to finish instead (see the README).
    """

    def __init__(
        self,
        action: str,
        deadline: float | None,
        *,
        last_error: AisixError | None = None,
        turn_in: float | None = None,
        left: float | None = None,
    ) -> None:
        bound = "the deadline" if deadline is None else f"the deadline ({deadline:g} s)"
        if turn_in is None:
            text = f"{action}: not sent: {bound} passed before the request was written"
        else:
            # Refused before the deadline: "passed" misled whoever chased the latency, and
            # "after the deadline (in 0.331 s)" of a call given 0.5 s read as a mistake
            # (a user's trial: part of it had gone by): what is left is said too.
            away = "" if left is None else f" ({max(0.0, left):.3g} s away)"
            text = (
                f"{action}: not sent: its turn would come in {turn_in:.3g} s, after "
                f"{bound}{away}, so it did not wait for it"
            )
        if last_error is not None:
            text = f"{text}; the last attempt failed: {last_error.message}"
        super().__init__(text)
        self.action = action
        #: The seconds the call was given (None: inherited from an enclosing cancel scope).
        self.deadline = deadline
        #: The error of the attempt before the deadline passed, if one was made.
        self.last_error = last_error
        #: Seconds until the turn the call would have had, when it was refused before its
        #: deadline because that turn comes after it (the calls queued ahead of it, at
        #: the pace; see the README); else None.
        self.turn_in = turn_in


class BalanceTooLowError(AisixError):
    """Raised before sending when the estimated cost exceeds the current balance."""

    def __init__(self, message: str, *, cost: Decimal, balance: Decimal) -> None:
        super().__init__(message)
        #: What the send would cost, in yuan (the estimate's ``cost``).
        self.cost = cost
        #: The balance it was compared with, in yuan, fetched fresh for the estimate.
        self.balance = balance


class KeyRotationHookError(AisixError):
    """The key was rotated, and the client uses the new one, but ``on_key_rotation``
    raised (its error is the ``__cause__``): the new key is in ``rotation``, and nowhere
    else this process can read it. Store it before anything else."""

    def __init__(self, message: str, *, rotation: KeyRotation) -> None:
        super().__init__(message)
        #: The rotation the hook was given; ``rotation.authkey`` is the new key.
        self.rotation = rotation


class UnusableKeyError(ProtocolError):
    """updateKey was accepted (the old key may no longer work), but the new key in the
    answer is not one this client can use (not 32 upper-case hexadecimal characters).
    It is in ``rotation`` all the same, as the gateway gave it: store it, as for any
    rotation, and ask the gateway's operator what it is; it is not used, nor shown."""

    def __init__(self, message: str, *, rotation: KeyRotation) -> None:
        super().__init__(message, action="updateKey", outcome_unknown=True)
        #: The rotation as answered; ``rotation.authkey`` is the key the gateway gave.
        self.rotation = rotation


class CampaignError(AisixError):
    """Raised when a campaign journal cannot be opened, resumed or written as asked."""


_BY_CODE: dict[int, type[GatewayError]] = {
    cls.code: cls
    for cls in (
        AccountFormatError,
        RateLimitedError,
        AuthenticationError,
        KeyLockedError,
        InvalidParameterError,
        EnterpriseUnavailableError,
        StaffUnavailableError,
        InterfaceNotEnabledError,
        ChannelGroupNotAllowedError,
        InsufficientBalanceError,
        GatewayInternalError,
        ChargeFailedError,
    )
}

#: The gateway refused the account itself (0, -2, -3, -5, -6, -7): it acted on nothing,
#: and no retry clears these; a person has to (fix the key, unlock, re-enable).
ACCOUNT_REFUSALS: tuple[type[GatewayError], ...] = (
    AccountFormatError,
    AuthenticationError,
    KeyLockedError,
    EnterpriseUnavailableError,
    StaffUnavailableError,
    InterfaceNotEnabledError,
)

#: The caller's own input was refused (locally, or -4 / -8 by the gateway): resending the
#: same request gets the same answer. In a web service: HTTP 400/422.
INPUT_REFUSALS: tuple[type[AisixError], ...] = (
    ValidationError,
    InvalidParameterError,
    ChannelGroupNotAllowedError,
)

#: The balance does not cover the send (-9, or a local estimate said so); nothing was
#: charged. In a web service: HTTP 503 for the caller, an alert for whoever pays.
BALANCE_REFUSALS: tuple[type[AisixError], ...] = (InsufficientBalanceError, BalanceTooLowError)

#: Refused for now, nothing sent: -1 after every retry, the circuit breaker, or a
#: ``deadline=`` that passed in the queue. Safe to try again later (HTTP 503/429).
BUSY_REFUSALS: tuple[type[AisixError], ...] = (RateLimitedError, DeadlineExceededError)

#: Sends whose answer carries these codes may have been delivered and charged.
AMBIGUOUS_SEND_CODES = frozenset({-10, -11})

#: ... except where the document says what they mean: updateKey's -10 reads "internal
#: error, update failed", so the key did not change (certain, not unknown).
_CERTAIN_FAILURES = {("updateKey", -10): "update failed: the key did not change"}


# -- the error policy: each question asked once, here ------------------------------------


def never_reached_the_gateway(error: BaseException | None) -> bool:
    """Certainly not sent: a connection that failed before the request was written, or a
    server at the URL that refused it before any gateway saw it (:class:`EndpointError`:
    every later request to that URL meets the same refusal)."""
    if isinstance(error, EndpointError):
        return True
    return isinstance(error, TransportError) and not error.request_sent


#: Refusals every later request of the account would get too (with an unreachable gateway).
_ACCOUNT_LEVEL: tuple[type[AisixError], ...] = (
    *ACCOUNT_REFUSALS,
    InsufficientBalanceError,
    ChannelGroupNotAllowedError,
    RateLimitedError,
)


def concerns_the_account(error: BaseException | None) -> bool:
    """An error about the account, not the request: a bulk send stops dispatch at it.

    The account refusals (0, -2, -3, -5, -6, -7), -8, -9, a -1 that never cleared, and a
    gateway that cannot be reached.
    """
    return isinstance(error, _ACCOUNT_LEVEL) or never_reached_the_gateway(error)


def worth_sending_again(error: BaseException | None) -> bool:
    """A failed send that a later run may make again: nothing went out, and the cause
    may pass (what :func:`concerns_the_account` covers, or dispatch was stopped).

    Invalid input and -4 are not: the same request would be refused the same way.
    """
    return concerns_the_account(error) or isinstance(error, NotSentError)


def ends_polling(error: BaseException | None) -> bool:
    """A poll error no amount of waiting clears (the account refused, or the client was
    closed): the stream ends; every other error is retried with backoff."""
    # A closed client was retried for ever, a WARNING a poll: a follower left running
    # held its service's shutdown (a user's trial).
    return isinstance(error, (*ACCOUNT_REFUSALS, ClientClosedError))


def is_retryable(error: BaseException, *, unsafe: bool) -> bool:
    """Whether one request may be tried again (``unsafe``: a send or updateKey).

    -1 always (nothing was done); a transport error when nothing was written, or for a
    safe action; a garbled answer or -10/-11 only for a safe action (a send may have gone
    out). Never the circuit breaker's refusal, nor an :class:`EndpointError` (a wrong URL):
    retrying would only wait to fail.
    """
    if isinstance(error, CircuitOpenError):
        return False
    if isinstance(error, RateLimitedError):
        return True
    if isinstance(error, TransportError):
        return not error.request_sent or not unsafe
    if isinstance(error, EndpointError):
        return False
    if isinstance(error, (ProtocolError, GatewayInternalError)):
        return not unsafe
    return False


def error_for_code(
    action: str, code: int, *, is_send: bool, detail: str | None = None
) -> GatewayError:
    """Build the error for a failure ``code`` answered to ``action``."""
    cls = _BY_CODE.get(code, UnknownResultError)
    certain = _CERTAIN_FAILURES.get((action, code))
    if certain is not None:
        return cls(action, code, detail=detail or certain)
    # A code nobody documented says nothing about whether a send went out, so it is
    # treated like -10: unknown, never resent blindly.
    ambiguous = code in AMBIGUOUS_SEND_CODES or cls is UnknownResultError
    return cls(action, code, outcome_unknown=is_send and ambiguous, detail=detail)


def result_of(error: BaseException) -> str:
    """How logs, stats and metrics name an attempt's result: the gateway's code as a
    string ("-1"), "transport", "protocol", "cancelled", or the error's class name.

    One spelling, one type: a retry's log record said -1 (an int) or "TransportError"
    beside an attempt's "-1" and "transport", and a typed log pipeline split the field.
    """
    if isinstance(error, GatewayError):
        return str(error.code)
    if isinstance(error, TransportError):
        return "transport"
    if isinstance(error, ProtocolError):
        return "protocol"
    if not isinstance(error, Exception):
        # asyncio's CancelledError and trio's Cancelled (BaseExceptions): the caller was
        # cancelled while the request was on the wire, as the README names it.
        return "cancelled"
    return type(error).__name__
