"""Checks that run before anything is sent (pure: no I/O).

The gateway answers -4 to shapes it refuses, but some inputs it accepts are worse than a
refusal: a number holding a ``,`` adds a recipient, and a batch content or parameter value
holding the separator ``{|}`` shifts every later message onto the wrong phone (recipient
A gets recipient B's text or name). Those are caught here, with a message that says which
input is wrong and why, and raised as :class:`ValidationError` before a request exists.

No message built here quotes the authkey.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from datetime import datetime, timedelta, tzinfo
from itertools import islice
from typing import Any, Literal, get_args
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .errors import ExtraNotInstalledError, ValidationError, redact_keys

__all__ = [
    "CN_MOBILE_PATTERN",
    "MAX_BATCH",
    "MAX_CONTENT",
    "MAX_NUMBERS",
    "MAX_PARAMS",
    "MIN_BATCH",
    "MOBILE_PATTERN",
    "NUMBERING",
    "NUMBERING_PATTERNS",
    "SEPARATOR",
    "Numbering",
    "check_account",
    "check_at",
    "check_authkey",
    "check_base_url",
    "check_batch",
    "check_cgid",
    "check_content",
    "check_csid",
    "check_data_url",
    "check_encodable",
    "check_items",
    "check_joinable",
    "check_key_not_in_urls",
    "check_mobile",
    "check_mobiles",
    "check_not_mapping",
    "check_number",
    "check_numbering",
    "check_pair",
    "check_param_rows",
    "check_template",
    "check_url",
    "render_template",
    "shown_item",
]

#: Joins the contents of sendBatch and the values of each sendParam parameter.
SEPARATOR = "{|}"
#: Numbers one sendOnce request may carry.
MAX_NUMBERS = 1000
#: Messages (pairs or rows) one sendBatch or sendParam request may carry, at least and at most.
MIN_BATCH = 2
MAX_BATCH = 100
#: Characters (code points) one message's content may hold.
MAX_CONTENT = 1000
#: Parameters p1..p10 a template may use.
MAX_PARAMS = 10
#: How far ahead of the gateway's clock a scheduled send must be.
MIN_SCHEDULE_LEAD = timedelta(minutes=1)

MOBILE_PATTERN = re.compile(r"\+?[0-9]{3,20}")
_ACCOUNT = re.compile(r"[0-9]+@[0-9]+")
_AUTHKEY = re.compile(r"[0-9A-Fa-f]{32}")
#: 1.39E+10, 1,39E+10: how a spreadsheet shows (and may save) a long number.
_SCIENTIFIC = re.compile(r"[0-9]+(?:[.,][0-9]+)?[eE]\+?[0-9]+")
#: A template parameter typed with a full-width brace, p or digit (a Chinese input
#: method's): the gateway fills only the ASCII {pN}, and sent "｛p2｝" as written.
_WIDE_PLACEHOLDER = re.compile(r"[{｛][pPｐＰ][0-9０-９]+[}｝]")
_PLACEHOLDER = re.compile(r"\{p([0-9]+)\}")
_PARAM_NUMBERS = frozenset(str(n) for n in range(1, MAX_PARAMS + 1))


def check_account(account: object) -> str:
    """Return ``account`` if it is in ``staff@enterprise`` form, both numbers.

    The document's ``ac`` is "Employee Number @ Enterprise Numbers", and an account with
    letters is answered 0 ("account format incorrect"): refused here, before a bulk send
    meets it at its first request.
    """
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        # Shown without a key-like run: a key pasted into it must not reach the error.
        raise ValidationError(
            "account must be 'staff@enterprise', the employee number and the enterprise "
            f"number (e.g. '1001@100001'), got {redact_keys(repr(account))}"
        )
    if redact_keys(account) != account:
        # A key pasted into the account (f"{key}@100001") was taken, and the account is
        # shown everywhere: the client's repr, ClientClosedError, the log (a user's trial).
        raise ValidationError(
            f"account holds a run of 32 or more hex characters, as a key does: "
            f"{redact_keys(account)!r}; the account is 'staff@enterprise', numbers such as "
            "'1001@100001'"
        )
    return account


def check_authkey(authkey: object) -> str:
    """Return ``authkey`` if it is 32 hexadecimal characters; never quote it in the error."""
    if not isinstance(authkey, str):
        raise ValidationError(f"authkey must be a string, got {type(authkey).__name__}")
    if not _AUTHKEY.fullmatch(authkey):
        raise ValidationError(
            f"authkey must be 32 hexadecimal characters (got {len(authkey)} characters, not shown)"
        )
    if authkey != authkey.upper():
        # The gateway issues keys in upper case and compares them as written: a key in
        # lower case is refused with -2, and a few in a row lock the account's key.
        raise ValidationError(
            "authkey must be in upper case, as the gateway issues it (this one has lower-case "
            "letters; not shown)"
        )
    return authkey


#: The numbering policies a client checks numbers against (``AisixClient(numbers=...)``).
#: "lenient": 3 to 20 digits with an optional leading '+' (the rule before policies
#: existed, and the library's default: it cannot know an account's market);
#: "cn-mobile": a mainland China mobile, 11 digits from 13x to 19x (the command line's
#: default: a digit too many or too few is the usual typo); "e164": any country's number,
#: checked and normalised by phonenumbers (the ``phonenumbers`` extra).
#: A closed set, so a type: ``numbers="cn_mobile"`` fails ``mypy``, not the first run.
Numbering = Literal["lenient", "cn-mobile", "e164"]
NUMBERING: tuple[Numbering, ...] = get_args(Numbering)
CN_MOBILE_PATTERN = re.compile(r"1[3-9][0-9]{9}")
#: The policies whose check is one regular expression (the bulk planners' fast path).
NUMBERING_PATTERNS: dict[str, re.Pattern[str]] = {
    "lenient": MOBILE_PATTERN,
    "cn-mobile": CN_MOBILE_PATTERN,
}


def _phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError:
        raise ExtraNotInstalledError(
            "numbers='e164' checks numbers with the phonenumbers package: "
            "pip install 'aisix-async[phonenumbers]' (in a clone of the repository: "
            "pip install '.[phonenumbers]')",
            name="phonenumbers",
        ) from None
    return phonenumbers


def check_numbering(numbers: object) -> Numbering:
    """Return the numbering policy ``numbers`` if it is one of :data:`NUMBERING`."""
    # NUMBERING's own string is returned: typed as the Literal, with no cast.
    for policy in NUMBERING:
        if isinstance(numbers, str) and numbers == policy:
            if policy == "e164":
                _phonenumbers()  # a missing extra is said when the client is made, not mid-send
            return policy
    raise _unknown_numbering(numbers)


def _unknown_numbering(numbers: object) -> ValidationError:
    return ValidationError(
        f"numbers must be one of {', '.join(repr(n) for n in NUMBERING)}, got {numbers!r}"
    )


#: The characters of a refused number an error message shows (a number has at most 20).
_SHOWN = 40


def _shown(mobile: object) -> str:
    """A refused number as an error message quotes it: a runaway line is cut, not echoed."""
    if isinstance(mobile, str) and len(mobile) > _SHOWN:
        # A whole file read as one line (a missing newline translation) would otherwise
        # put megabytes into one message, and into every log that carries it.
        return f"{mobile[:_SHOWN]!r}... ({len(mobile):,} characters)"
    shown = repr(mobile)
    if len(shown) > _SHOWN:
        # A list or a record where a number goes: its repr may be as long as the input.
        return f"{shown[:_SHOWN]}... ({type(mobile).__name__})"
    return shown


def shown_item(item: object) -> str:
    """What a bulk outcome shows for an input item refused before sending.

    A string is shown as given; anything else (an int, None, bytes where a number goes)
    as its repr, cut short, so that ``outcome.mobiles`` says which item was wrong (it was
    "", which said nothing). A pair shows its first member, the mobile. A run of 32 or
    more hex characters is hidden either way: it may be the authkey, given in the wrong
    place. Hidden before the repr is cut, so that no part of one is left showing.
    """
    if isinstance(item, (tuple, list)) and len(item) == 2:
        item = item[0]
    if isinstance(item, str):
        return redact_keys(item)
    shown = redact_keys(repr(item))
    return shown if len(shown) <= _SHOWN else f"{shown[:_SHOWN]}..."


def check_mobile(mobile: object, numbers: Numbering = "lenient") -> str:
    """Return ``mobile`` checked against the numbering policy (normalised under "e164")."""
    if not isinstance(mobile, str):
        # Said as for a content: an int read as a number made "mobile number 18100002707
        # must be 3 to 20 digits", which it is.
        raise ValidationError(
            f"mobile number {_shown(mobile)} must be a string, got {type(mobile).__name__}"
        )
    if numbers == "e164":
        _refuse_scientific(mobile)
        return _e164(mobile)
    pattern = NUMBERING_PATTERNS.get(numbers) if isinstance(numbers, str) else None
    if pattern is None:
        # A policy no check knows, from an untyped caller: said, not a KeyError.
        raise _unknown_numbering(numbers)
    if pattern.fullmatch(mobile):
        return mobile
    _refuse_scientific(mobile)
    if numbers == "cn-mobile":
        raise ValidationError(
            f"mobile number {_shown(mobile)} is not a mainland China mobile number (11 digits, "
            "13x to 19x, no spaces or '+86'); for other countries use the 'e164' numbering "
            "policy"
        )
    raise ValidationError(
        f"mobile number {_shown(mobile)} must be 3 to 20 digits with an optional leading '+', "
        "and no spaces, dashes or commas"
    )


def _refuse_scientific(mobile: str) -> None:
    if _SCIENTIFIC.fullmatch(mobile.strip()):
        # A spreadsheet showed a long number as 1.39E+10 and saved it so: its digits are
        # gone, and no numbering policy brings them back (the hint was "use e164").
        raise ValidationError(
            f"mobile number {_shown(mobile)} is in a spreadsheet's scientific notation: its "
            "digits are lost; format the column as text in the spreadsheet and export again"
        )


def _e164(mobile: str) -> str:
    """A number of any country, as the gateway takes it: mainland China mobiles in their
    11-digit national form (as the gateway's document shows them), others as E.164
    (``+`` and the country code). A number without ``+`` is read as a Chinese one."""
    if "," in mobile:
        raise ValidationError(f"mobile number {_shown(mobile)} must be one number, not a list")
    phonenumbers = _phonenumbers()
    try:
        parsed = phonenumbers.parse(mobile, "CN")
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            f"mobile number {_shown(mobile)} is not a phone number ({exc})"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(
            f"mobile number {_shown(mobile)} is not a valid number"
            + ("" if mobile.startswith("+") else " in China (add + and the country code)")
        )
    if parsed.country_code == 86:
        national = str(parsed.national_number)
        if CN_MOBILE_PATTERN.fullmatch(national):
            return national
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def check_not_mapping(items: object, what: str) -> None:
    """Refuse a dict (any mapping) where a list of items goes."""
    if isinstance(items, Mapping):
        # Iterated, it gives its keys alone: {number: name} sent to its numbers, and
        # {number: text} to its numbers with no text (a user's trial).
        raise ValidationError(
            f"{what} must be a list, not a {type(items).__name__}: iterating it gives its "
            "keys alone (pass list(d.items()) for its pairs, or list(d) for its keys)"
        )


def check_items(items: object, what: str) -> Iterable[object]:
    """Return ``items`` if it can be iterated as a list of items (a string cannot)."""
    if isinstance(items, (str, bytes)):
        # A bare string would be iterated character by character: refuse it rather than
        # text each digit's "number".
        raise ValidationError(f"{what} must be a list, not one string")
    if not isinstance(items, Iterable):
        raise ValidationError(f"{what} must be a list, got {type(items).__name__}")
    check_not_mapping(items, what)
    return items


def _at_most(
    items: Iterable[object], limit: int, too_many: Callable[[str], ValidationError]
) -> Iterator[object]:
    """``items`` of one request's input, refused with ``too_many(count)`` past ``limit``.

    Read whole, an endless generator held the event loop for good (no timeout could
    fire), and a million numbers held it for seconds before the size was refused. A
    sized input is refused by its length before any item is read; any other, at the
    first item past the limit ("more than N").
    """
    if isinstance(items, Sized) and len(items) > limit:
        raise too_many(str(len(items)))
    reading = iter(items)
    yield from islice(reading, limit)
    for _ in islice(reading, 1):
        raise too_many(f"more than {limit}")


def check_mobiles(
    mobiles: Iterable[str], *, at_most: int = MAX_NUMBERS, numbering: Numbering = "lenient"
) -> list[str]:
    """Check a sendOnce recipient list: 1 to ``at_most`` valid numbers."""

    def too_many(count: str) -> ValidationError:
        return ValidationError(
            f"{count} numbers in one request; the gateway takes at most {at_most} "
            "(use send_many to split a larger list)"
        )

    listed = _at_most(check_items(mobiles, "mobiles"), at_most, too_many)
    numbers = [check_mobile(m, numbering) for m in listed]
    if not numbers:
        raise ValidationError("at least one mobile number is needed")
    return numbers


def check_content(
    content: object, *, what: str = "content", bounded: bool = True, plain: bool = False
) -> str:
    """Return ``content`` if it holds 1 to 1000 characters (any number if not ``bounded``).

    ``plain``: a message sent as written (sendOnce, sendBatch), which must not hold a
    template parameter: the gateway fills ``{p1}`` only in sendParam.
    """
    if not isinstance(content, str):
        raise ValidationError(f"{what} must be a string, got {type(content).__name__}")
    if not content:
        raise ValidationError(f"{what} must not be empty")
    if content.isspace():
        # Sent and charged as a blank message (an unset template variable, say).
        raise ValidationError(f"{what} is only white space ({len(content)} characters)")
    if not content.isascii() and all(
        char.isspace() or unicodedata.category(char) == "Cf" for char in content
    ):
        # Zero-width spaces, a BOM: as blank on a phone, and charged all the same.
        raise ValidationError(
            f"{what} is only invisible characters ({len(content)}, such as "
            f"U+{ord(next(c for c in content if not c.isspace())):04X})"
        )
    if "\x00" in content:
        # A NUL is no text a phone shows: a binary read as text, a C string's end.
        raise ValidationError(f"{what} holds a NUL character at {content.index(chr(0))}")
    if bounded and len(content) > MAX_CONTENT:
        raise ValidationError(
            f"{what} holds {len(content)} characters; the gateway takes at most {MAX_CONTENT}"
        )
    if not content.isascii():
        check_encodable(content, what)
        for wide in _WIDE_PLACEHOLDER.finditer(content):
            if not wide.group().isascii():
                raise ValidationError(
                    f"{what} holds {wide.group()}, a template parameter typed with full-width "
                    "characters (an input method's), which the gateway sends as written: "
                    "type it in ASCII, as {p1}"
                )
    if plain and (placeholder := _PLACEHOLDER.search(content)):
        # Sent as written, "Dear {p1}" reached every recipient with the braces in it.
        raise ValidationError(
            f"{what} holds {placeholder.group()}, a template parameter, which this send "
            "sends as written: fill it with send_param (or send_param_many)"
        )
    return content


def check_encodable(text: str, what: str) -> str:
    """Return ``text`` if UTF-8 can carry it: a lone surrogate (from a bad decode) cannot.

    Caught here, not when the request is encoded: there it would fail one chunk of a bulk
    send after others were sent, as an error that is not ours.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} holds U+{ord(text[exc.start]):04X} at character {exc.start}, a lone "
            "surrogate that UTF-8 cannot carry (was the text decoded with "
            "errors='surrogateescape'?)"
        ) from None
    return text


def check_joinable(text: str, what: str) -> str:
    if SEPARATOR in text:
        raise ValidationError(
            f"{what} contains the separator {SEPARATOR!r}, which would shift every later "
            "message onto the wrong recipient"
        )
    return text


def _batch_size_error(count: str, what: str) -> ValidationError:
    return ValidationError(
        f"{count} {what} in one request; the gateway takes {MIN_BATCH} to {MAX_BATCH} "
        "(use the *_many calls for other sizes)"
    )


def _batch_items(items: object, what: str) -> Iterator[object]:
    """A batch's items, refused past the largest batch (see _at_most)."""
    return _at_most(check_items(items, what), MAX_BATCH, lambda n: _batch_size_error(n, what))


def _check_too_few(count: int, what: str) -> None:
    # Too many were refused while the items were read (see _batch_items).
    if count < MIN_BATCH:
        raise _batch_size_error(str(count), what)


def check_batch(
    messages: Iterable[tuple[str, str]], *, numbering: Numbering = "lenient"
) -> list[tuple[str, str]]:
    """Check sendBatch input: 2 to 100 (mobile, content) pairs."""
    pairs: list[tuple[str, str]] = []
    for index, pair in enumerate(_batch_items(messages, "messages")):
        mobile, content = check_pair(pair, index)
        what = f"content #{index} (for {mobile})"
        pairs.append(
            (
                check_mobile(mobile, numbering),
                check_joinable(check_content(content, what=what, plain=True), what),
            )
        )
    _check_too_few(len(pairs), "messages")
    return pairs


def check_pair(pair: object, index: int) -> tuple[object, object]:
    """Unpack item ``index`` of a batch or template input, which must be a pair."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValidationError(f"message #{index} must be a (mobile, content) pair")
    return pair[0], pair[1]


def check_template(template: object) -> tuple[str, int]:
    """Return the template and how many values each row gives it: N for a highest ``{pN}``.

    Rows give values by position, p1 first, and all N are sent; one the template does not
    use (``{p2}`` alone) is sent and ignored, as the document says the gateway does.
    """
    # The bound is on each rendered message (PROTOCOL-NOTES' decision), checked row by
    # row: a template longer than 1000 characters may render shorter.
    text = check_content(template, what="template", bounded=False)
    written = set(_PLACEHOLDER.findall(text))
    if not written:
        raise ValidationError("template uses no parameter; write {p1} to {p10} where values go")
    # As the gateway reads them: {p01} or {p0} is no parameter of its (it refuses the
    # send), though int() would read {p01} as {p1}.
    strange = sorted(n for n in written if n not in _PARAM_NUMBERS)
    if strange:
        raise ValidationError(
            f"template parameters run from {{p1}} to {{p{MAX_PARAMS}}}, without leading "
            f"zeros; got {{p{strange[0]}}}"
        )
    return text, max(int(n) for n in written)


def render_template(template: str, values: Sequence[str]) -> str:
    """The text a recipient receives: every ``{pN}`` replaced, in one pass."""
    return _PLACEHOLDER.sub(lambda m: values[int(m.group(1)) - 1], template)


def check_param_row(
    template: str, count: int, row: object, index: int, numbering: Numbering = "lenient"
) -> tuple[str, list[str]]:
    """Check one (mobile, [p1, p2, ...]) row against a template of ``count`` parameters."""
    mobile, values = check_pair(row, index)
    checked_mobile = check_mobile(mobile, numbering)
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValidationError(f"row #{index} ({checked_mobile}) needs a list of parameter values")
    if len(values) != count:
        raise ValidationError(
            f"row #{index} ({checked_mobile}) has {len(values)} values; the template uses "
            f"{count} ({{p1}}..{{p{count}}})"
        )
    checked: list[str] = []
    for position, value in enumerate(values, start=1):
        what = f"p{position} of row #{index} ({checked_mobile})"
        if not isinstance(value, str):
            raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
        check_joinable(value, what)
        if _PLACEHOLDER.search(value):
            # The gateway substitutes placeholders itself; a value that looks like one
            # could be substituted again with another parameter's value.
            raise ValidationError(f"{what} contains a placeholder like {{pN}}")
        checked.append(value)
    check_content(render_template(template, checked), what=f"the message for row #{index}")
    return checked_mobile, checked


def check_param_rows(
    template: object, rows: Iterable[object], *, numbering: Numbering = "lenient"
) -> tuple[str, list[tuple[str, list[str]]]]:
    """Check sendParam input: a template and 2 to 100 rows of matching values."""
    text, count = check_template(template)
    items = enumerate(_batch_items(rows, "rows"))
    checked = [check_param_row(text, count, row, index, numbering) for index, row in items]
    _check_too_few(len(checked), "rows")
    return text, checked


def check_number(value: object, what: str, *, integer: bool = False, minimum: float = 0) -> None:
    """Refuse ``value`` unless it is a number (an int when ``integer``) above ``minimum``.

    ``integer`` settings must be at least ``minimum``; others strictly above it (so a
    timeout of 0 or NaN is refused as well).
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValidationError(f"{what} must be {kind}, got {value!r}")
    if not (value >= minimum if integer else value > minimum):
        bound = f"at least {minimum:g}" if integer else f"above {minimum:g}"
        raise ValidationError(f"{what} must be {bound}, got {value!r}")
    if value == math.inf or (not integer and isinstance(value, int) and value > _FLOAT_MAX):
        # A timeout or deadline of infinity waits forever; a rate of it means nothing. An
        # int beyond any float (10**400) raised OverflowError from the arithmetic, past
        # every `except AisixError` (a user's trial).
        shown = repr(value) if value == math.inf else "an integer beyond any float"
        raise ValidationError(f"{what} must be finite, got {shown}")


_FLOAT_MAX = sys.float_info.max


def check_url(url: object, what: str) -> str:
    """Return ``url``, without surrounding white space, if it is an http(s) URL with a host."""
    if not isinstance(url, str):
        raise ValidationError(f"{what} must be a URL string, got {type(url).__name__}")
    # A URL read from a file or an environment variable often ends in a newline or a
    # space, which urllib keeps in the path: every request went to ".../x /OpenApi".
    url = url.strip()
    parts = urlsplit(url)
    if "://" not in url:
        # "api.aisix.com/OpenPlatform" reads as a path with no scheme and no host, which
        # the message below said as "got scheme 'none', host 'none'" (a user's trial).
        raise ValidationError(
            f"{what} must start with http:// or https:// (as http://api.aisix.com/"
            "OpenPlatform); the one given has neither"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not quoted whole: a URL may carry a password in its user part.
        raise ValidationError(
            f"{what} must be an http:// or https:// URL with a host (got scheme "
            f"{parts.scheme or 'none'!r}, host {parts.hostname or 'none'!r})"
        )
    if any(char.isspace() for char in url):
        raise ValidationError(f"{what} must not contain white space (host {parts.hostname!r})")
    if parts.username is not None or parts.password is not None:
        # The URL is shown in reprs, logs and errors, where a password would leak; the
        # gateway wants none (the account and authkey go in the form), and a proxy's
        # credentials belong in HTTPS_PROXY, which httpx reads.
        raise ValidationError(
            f"{what} must not carry a user name or password (host {parts.hostname!r}): "
            "the gateway authenticates with the account and authkey, and a proxy's "
            "credentials go in HTTPS_PROXY"
        )
    try:
        # A port out of range raises; port 0 names no server (nothing can connect to it).
        valid = parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        # Found here, not when the first request fails deep in the HTTP stack.
        raise ValidationError(
            f"{what} must have a port number from 1 to 65535 (host {parts.hostname!r}, got "
            f"{parts.netloc.rsplit(':', 1)[-1]!r})"
        )
    return url


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _refuse_query(parts: SplitResult, what: str, *, adds: str) -> None:
    if parts.query or parts.fragment:
        # What the client appends ("/OpenApi", "?action=...") would follow the query or
        # fragment: every request's URL would be something no gateway serves.
        raise ValidationError(
            f"{what} must not carry a query (?...) or fragment (#...) "
            f"(host {parts.hostname!r}): the client adds {adds} itself"
        )


def check_key_not_in_urls(authkey: str, **urls: str) -> None:
    """Refuse a URL that holds the authkey (a gateway's path copied with the key in it).

    The key goes in each request's form body, never in a URL: the HTTP stack writes each
    request's URL to its own INFO log line, and the journal and the rate cache keep the
    base URL. Compared ignoring case, since a hand-typed path may have lowered it.
    """
    for name, url in urls.items():
        if authkey.lower() in url.lower():
            # Out of the frame's locals, which error trackers print (a user's trial).
            del url, urls
            raise ValidationError(
                f"{name} holds the authkey (not shown): take it out of the URL. The key is "
                "sent in each request's body; a URL is written to logs, journals and caches"
            )


def check_data_url(url: object, what: str = "data_url") -> str:
    """Return the DataApi URL ``url`` if it is an http(s) URL with no query or fragment.

    Checked as a base URL is, since "?action=" is appended to it too (a query here sent
    every poll to ".../DataApi?region=cn?action=getSendState", whose answer could not be
    read, and each failed poll was reported as records lost). Unlike a base URL it is kept
    as written: it is the endpoint itself, and a server may tell ".../DataApi/" apart.
    """
    checked = check_url(url, what)
    _refuse_query(urlsplit(checked), what, adds="each action's query")
    return checked


def check_base_url(url: object, what: str = "base_url") -> str:
    """Return a gateway's base URL in one spelling, so that one gateway typed two ways
    is one gateway (one rate cache entry, one shared schedule in Redis): scheme and host
    in lower case (neither is case-sensitive), the scheme's own port and a trailing
    slash dropped. The path keeps its case: a server may tell paths apart by it.
    """
    parts = urlsplit(check_url(url, what))
    _refuse_query(parts, what, adds="each action's path and query")
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if last.lower() in ("openapi", "dataapi"):
        # The document's full endpoint pasted as the base: every request went to
        # ".../OpenApi/OpenApi", a 404 at the first call.
        raise ValidationError(
            f"{what} must be the gateway's base (such as http://api.aisix.com/OpenPlatform), "
            f"not its endpoint: leave out the /{last} (host {parts.hostname!r}); the client "
            "adds it"
        )
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address keeps its brackets
    scheme = parts.scheme.lower()
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


#: The largest id the gateway can read: it is a Java servlet (PROTOCOL-NOTES), whose int
#: ends here. A larger one went out, to come back -8 ("channel group not allowed"),
#: which stops a bulk send as if the account were refused it (a user's trial).
_MAX_ID = 2**31 - 1


def check_cgid(cgid: object) -> int | None:
    """A channel group id is an integer >= 0 (0 is the account's default group), or None.

    0 reads as the default, as for csid: the vendor's own SDK leaves a 0 cgid out of the
    request (PROTOCOL-NOTES), and the wire layer does too. It is returned as 0, not None:
    a call's ``cgid=0`` asks for the account's group over a client's default cgid.
    """
    if cgid is None:
        return None
    if isinstance(cgid, bool) or not isinstance(cgid, int) or not 0 <= cgid <= _MAX_ID:
        raise ValidationError(
            f"cgid must be an integer from 0 (the default) to {_MAX_ID}, got {cgid!r}"
        )
    return cgid


def check_csid(csid: object) -> int | None:
    """A signature id is an integer >= 0 (0 is the default signature), or None."""
    if csid is None:
        return None
    if isinstance(csid, bool) or not isinstance(csid, int) or not 0 <= csid <= _MAX_ID:
        raise ValidationError(
            f"csid must be an integer from 0 (the default) to {_MAX_ID}, got {csid!r}"
        )
    return csid


def check_at(at: object, *, now: datetime, gateway_tz: tzinfo) -> str | None:
    """Format a scheduled time for the gateway, or refuse it.

    A naive datetime is refused: it is impossible to tell whether the caller meant their
    own zone, UTC or the gateway's, and guessing wrong sends at the wrong hour.
    """
    if at is None:
        return None
    if not isinstance(at, datetime):
        raise ValidationError(f"at must be a datetime, got {type(at).__name__}")
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValidationError(
            "at must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)); a naive "
            "time is ambiguous"
        )
    # The gateway reads whole seconds: the lead is checked on the time it will read.
    at = at.replace(microsecond=0)
    if at - now < MIN_SCHEDULE_LEAD:
        raise ValidationError(
            f"at ({at.isoformat()}) must be at least one minute after now ({now.isoformat()})"
        )
    try:
        return at.astimezone(gateway_tz).strftime("%Y%m%d%H%M%S")
    except OverflowError:
        raise ValidationError(f"at ({at.isoformat()}) is out of the range of dates") from None
