"""The shapes the gateway refuses with -4, as pure functions of the request's strings.

Apart from the handlers so each rule is one small function a test can hit directly, and
so the rules read like the document and PROTOCOL-NOTES: numbers `+?` and 3 to 20 ASCII
digits, comma separated; contents and rendered contents 1 to 1000 code points; batches
and parameter rows joined with the three characters `{|}`; `t` exactly 14 digits in
gateway time, at least 60 seconds ahead. Every regular expression is compiled once here
and matched with `fullmatch` (a `$` would let a trailing newline through).
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "MAX_CONTENT",
    "MIN_SCHEDULE_AHEAD",
    "SEPARATOR",
    "ShapeError",
    "check_content",
    "collect_params",
    "parse_group_id",
    "parse_schedule",
    "parse_sign_id",
    "render_template",
    "split_contents",
    "split_numbers",
]

SEPARATOR = "{|}"
MAX_CONTENT = 1000
#: A scheduled time must be at least this many seconds after the gateway's clock.
MIN_SCHEDULE_AHEAD = 60.0

# ASCII only: `\d` would also accept Arabic-Indic and full-width digits.
_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_TIME = re.compile(r"[0-9]{14}")
_PLACEHOLDER = re.compile(r"\{p([0-9]+)\}")
_PARAM_NUMBERS = tuple(str(n) for n in range(1, 11))


class ShapeError(ValueError):
    """A request the gateway answers with -4 (parameter error)."""


def split_numbers(m: str, low: int, high: int) -> list[str]:
    """The comma-separated numbers of `m`, between `low` and `high` of them, each valid.

    Duplicates are kept: each is one more message, as the gateway charges it.
    """
    numbers = m.split(",")
    if not low <= len(numbers) <= high:
        raise ShapeError(f"{len(numbers)} numbers, allowed {low} to {high}")
    match = _NUMBER.fullmatch
    for number in numbers:
        if match(number) is None:
            raise ShapeError(f"bad number {number!r}")
    return numbers


def check_content(content: str) -> str:
    """`content` itself if it is 1 to 1000 code points long."""
    if not 1 <= len(content) <= MAX_CONTENT:
        raise ShapeError(f"content of {len(content)} characters, allowed 1 to {MAX_CONTENT}")
    return content


def split_contents(c: str, count: int) -> list[str]:
    """sendBatch: `count` contents joined with `{|}`, each 1 to 1000 code points."""
    contents = c.split(SEPARATOR)
    if len(contents) != count:
        raise ShapeError(f"{len(contents)} contents for {count} numbers")
    for content in contents:
        check_content(content)
    return contents


def render_template(template: str, params: dict[str, str], count: int) -> list[str]:
    """sendParam: the text of each of `count` recipients.

    `params` maps "1".."10" to the raw `pN` values; at least one is needed (not p1 in
    particular). Every parameter given has exactly `count` values, used or not: the
    notes ask it of "each parameter", and the document's "valid where the content
    contains it" says where a value goes, not that an unused one may be any length.
    Every placeholder needs its parameter; an unused one is counted, never substituted.
    Substitution is one pass, so a value that itself looks like `{p2}` is sent as written.
    """
    if not params:
        raise ShapeError("sendParam needs at least one of p1..p10")
    used = set(_PLACEHOLDER.findall(template))
    if not used <= set(_PARAM_NUMBERS):
        raise ShapeError("placeholder outside {p1}..{p10}")
    rows: dict[str, list[str]] = {}
    for number, raw in params.items():
        values = raw.split(SEPARATOR)
        if len(values) != count:
            raise ShapeError(f"p{number} has {len(values)} values for {count} numbers")
        rows[number] = values
    for number in used:
        if number not in rows:
            raise ShapeError(f"{{p{number}}} has no p{number}")
    rendered = []
    for index in range(count):

        def value(match: re.Match[str], index: int = index) -> str:
            return rows[match.group(1)][index]

        rendered.append(check_content(_PLACEHOLDER.sub(value, template)))
    return rendered


def collect_params(params: dict[str, str]) -> dict[str, str]:
    """The `p1`..`p10` values of a request, keyed "1".."10" (lower-case p only)."""
    return {n: params[f"p{n}"] for n in _PARAM_NUMBERS if f"p{n}" in params}


def parse_schedule(t: str | None, now: float, tz: dt.tzinfo) -> float | None:
    """`t` as epoch seconds, or None to send now; -4 if malformed or too soon.

    An empty `t` means "now", as clients that always send the field expect.
    """
    if not t:
        return None
    if _TIME.fullmatch(t) is None:
        raise ShapeError(f"t must be yyyyMMddHHmmss, got {t!r}")
    try:
        when = dt.datetime(
            int(t[0:4]),
            int(t[4:6]),
            int(t[6:8]),
            int(t[8:10]),
            int(t[10:12]),
            int(t[12:14]),
            tzinfo=tz,
        ).timestamp()
    except ValueError:
        raise ShapeError(f"t is not a calendar time: {t!r}")
    if when - now < MIN_SCHEDULE_AHEAD:
        raise ShapeError("t must be at least one minute after the gateway's time")
    return when


def parse_group_id(cgid: str | None) -> int | None:
    """The requested channel group, or None for the account's first group (omitted, 0)."""
    if not cgid or cgid == "0":
        return None
    if not (cgid.isascii() and cgid.isdigit()):
        raise ShapeError(f"cgid must be a number, got {cgid!r}")
    return int(cgid)


def parse_sign_id(csid: str | None) -> int:
    """The requested signature number; anything unusable means 0, the default.

    Never an error: the document says an invalid signature falls back to the default.
    """
    if csid and csid.isascii() and csid.isdigit():
        return int(csid)
    return 0
