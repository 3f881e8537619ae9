"""What goes over the wire for each action: endpoint, query and form fields (pure).

Every request is a POST of an ``application/x-www-form-urlencoded`` UTF-8 body, because
the body is the one place the authkey does not end up in proxy logs, access logs or
tracebacks. The action itself goes in the query string: it is not secret, and it makes
each logged URL say what it was.

Credentials are added by :func:`encode_form` at the moment of sending, not when fields
are built, so a request retried after a key rotation carries the key in force then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta, timezone
from urllib.parse import quote_plus

import attrs

from .errors import redact_keys
from .validate import SEPARATOR, check_base_url, check_data_url

#: The gateway keeps China time: UTC+8, no daylight saving.
GATEWAY_TZ = timezone(timedelta(hours=8), "UTC+08:00")

__all__ = [
    "DATA_ACTIONS",
    "OPEN_ACTIONS",
    "QUEUE_ACTIONS",
    "SEND_ACTIONS",
    "UNSAFE_ACTIONS",
    "AnswerBody",
    "Endpoints",
    "Fields",
    "FormBody",
    "Secret",
    "batch_fields",
    "encode_form",
    "hide_authkey",
    "hide_keys",
    "once_fields",
    "param_fields",
    "url_setting",
]

Fields = list[tuple[str, str]]

SEND_ACTIONS = frozenset({"sendOnce", "sendBatch", "sendParam"})
#: Actions whose effect must not be repeated when their answer is lost.
UNSAFE_ACTIONS = SEND_ACTIONS | {"updateKey"}
OPEN_ACTIONS = SEND_ACTIONS | {"getBalance", "updateKey", "getChannelGroup", "getSign"}
DATA_ACTIONS = frozenset({"getSendState", "getReply"})
#: Reads that take what they return off a queue (reports, replies): the gateway hands a
#: record out once, so an answer lost after the request was written may have taken
#: records with it. Not retried blindly, so that a failed poll is seen, not hidden.
QUEUE_ACTIONS = DATA_ACTIONS

DEFAULT_BASE_URL = "http://api.aisix.com/OpenPlatform"


def url_setting(action: str) -> str:
    """The client option ``action``'s URL comes from: ``"data_url"`` for the report and
    reply queues (the DataApi, under ``base_url`` unless given), else ``"base_url"``."""
    return "data_url" if action in DATA_ACTIONS else "base_url"


def _shown_url(url: str) -> str:
    # A URL is a valid host name and path whatever hex it holds: a key pasted as the
    # base URL's host was taken and shown whole in every repr.
    return repr(redact_keys(url))


@attrs.frozen
class Endpoints:
    """The two URLs of a deployment; the data one can live elsewhere (``/DataPlatform``).

    Their repr (and every repr, log line and error that quotes them) hides a run of 32
    or more hex characters, as for any text that may hold a key given in the wrong place;
    the attributes themselves are the URLs requests go to.
    """

    open_url: str = attrs.field(repr=_shown_url)
    data_url: str = attrs.field(repr=_shown_url)

    @classmethod
    def from_base(cls, base_url: str, data_url: str | None = None) -> Endpoints:
        base = check_base_url(base_url)
        data = check_data_url(data_url) if data_url else f"{base}/DataApi"
        return cls(open_url=f"{base}/OpenApi", data_url=data)

    def url_for(self, action: str) -> str:
        base = self.data_url if action in DATA_ACTIONS else self.open_url
        return f"{base}?action={action}"


def _common(cgid: int | None, csid: int | None, at: str | None) -> Fields:
    fields: Fields = []
    # 0 and None both mean "the account's default", which the gateway assumes when the
    # field is absent, as the vendor's own SDK sends it.
    if cgid:
        fields.append(("cgid", str(cgid)))
    if csid:
        fields.append(("csid", str(csid)))
    if at is not None:
        fields.append(("t", at))
    return fields


def once_fields(
    mobiles: Sequence[str], content: str, *, cgid: int | None, csid: int | None, at: str | None
) -> Fields:
    """Fields of sendOnce: one content to every number."""
    return [*_common(cgid, csid, at), ("c", content), ("m", ",".join(mobiles))]


def batch_fields(
    messages: Sequence[tuple[str, str]], *, cgid: int | None, csid: int | None, at: str | None
) -> Fields:
    """Fields of sendBatch: the i-th content goes to the i-th number."""
    return [
        *_common(cgid, csid, at),
        ("c", SEPARATOR.join(content for _, content in messages)),
        ("m", ",".join(mobile for mobile, _ in messages)),
    ]


def param_fields(
    template: str,
    rows: Sequence[tuple[str, Sequence[str]]],
    *,
    cgid: int | None,
    csid: int | None,
    at: str | None,
) -> Fields:
    """Fields of sendParam: the template, the numbers, and p1..pN joined per parameter."""
    count = len(rows[0][1])
    params = [
        (f"p{n}", SEPARATOR.join(values[n - 1] for _, values in rows)) for n in range(1, count + 1)
    ]
    return [
        *_common(cgid, csid, at),
        ("c", template),
        ("m", ",".join(mobile for mobile, _ in rows)),
        *params,
    ]


# urllib quotes byte by byte in Python, which for a 1000-number "m" field (999 commas)
# was the largest single cost of a bulk send. ASCII text is quoted here with one C-level
# str.replace per distinct unsafe character instead.
_ASCII_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ASCII_QUOTE = {chr(code): f"%{code:02X}" for code in range(128)} | {" ": "+"}


def _quote(value: str) -> str:
    """``urllib.parse.quote_plus(value)``, character for character, faster for ASCII."""
    if not value.isascii():
        return quote_plus(value)
    unsafe = set(value) - _ASCII_SAFE
    # "%" first and "+" next: later replacements add both, which must stay as they are.
    for char in ("%", "+"):
        if char in unsafe:
            unsafe.discard(char)
            value = value.replace(char, _ASCII_QUOTE[char])
    for char in unsafe:
        value = value.replace(char, _ASCII_QUOTE[char])
    return value


class Secret(str):
    """The authkey as the client holds it: a ``str`` whose repr never shows it.

    Error trackers (Sentry by default), ``pytest --showlocals`` and
    ``traceback.TracebackException(capture_locals=True)`` print the repr of every local
    variable of every frame: wherever the key is a local, that repr is this one.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<authkey, not shown>'"


class KeyHidden(str):
    """A ``str`` given where no key belongs (the account), whose repr hides a key in it.

    As for :class:`Secret`: error trackers print the repr of every frame's locals, and a
    key pasted as the account is a local of the constructors' frames until refused.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_keys(str(self)))


def hide_keys(value: str | None) -> str | None:
    """``value`` as a :class:`KeyHidden` if it is a plain string (what a constructor was
    given)."""
    return KeyHidden(value) if type(value) is str else value


def hide_authkey(value: str | None) -> str | None:
    """``value`` as a :class:`Secret` if it is a string (what a constructor was given)."""
    return Secret(value) if isinstance(value, str) and not isinstance(value, Secret) else value


class FormBody(bytes):
    """A request body that carries the authkey, with a repr that does not (see Secret)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<form body: {len(self)} bytes, credentials not shown>"

    __str__ = __repr__


class AnswerBody(bytes):
    """An answer's bytes as read, with a repr that does not show them (see Secret).

    They are a local of every frame that reads, checks and parses the answer, and so of
    the traceback of any error found there, whose locals error trackers print. Such an
    answer may hold a key: a proxy's or a servlet's error page may quote the form it was
    given (the key in it), and updateKey's answer is the new key. Errors quote an answer
    through ``quote_answer``, which redacts it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<answer: {len(self)} bytes, not shown>"

    __str__ = __repr__


def encode_form(account: str, authkey: Secret, fields: Fields) -> FormBody:
    """The request body: credentials first, then the action's fields, UTF-8 and %-encoded."""
    pairs = [("ac", account), ("authkey", authkey), *fields]
    return FormBody(
        "&".join(f"{_quote(key)}={_quote(value)}" for key, value in pairs).encode("ascii")
    )
