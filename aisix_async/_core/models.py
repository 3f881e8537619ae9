"""Typed records for everything the gateway answers.

Each record is built from one ``<Item .../>`` of an answer by its ``from_item``
classmethod. Money is :class:`~decimal.Decimal` (never float), ``msgid`` stays a string
(18 digits overflow other languages' numbers, and nothing is computed from it), and
attributes a deployment adds that a record does not name are kept in ``extra`` rather
than dropped, so nothing the gateway said is lost on the way to the caller.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import TypeVar, cast

import attrs

from .errors import ProtocolError

__all__ = [
    "FINAL_OPERATOR_CODES",
    "PENDING_OPERATOR_CODES",
    "Balance",
    "ChannelGroup",
    "DeliveryReport",
    "KeyRotation",
    "MalformedRecord",
    "Reply",
    "ReportResult",
    "SendReceipt",
    "Signature",
    "parse_records",
    "settles",
]

_T = TypeVar("_T")

#: Operator codes after which a message's fate will not change any more. ACCEPTD,
#: UNKNOWN and ERRBUSY say "not known yet"; DTFALD is the document's misspelling of DTFAILD.
FINAL_OPERATOR_CODES = frozenset(
    {
        "DELIVRD",
        "EXPIRED",
        "DELETED",
        "UNDELIV",
        "REJECTD",
        "DTBLACK",
        "DTWORDS",
        "DTFAILD",
        "DTFALD",
    }
)

#: Codes that say "not known yet" whatever the report's ``result``: its recipient stays
#: pending until a later report.
PENDING_OPERATOR_CODES = frozenset({"ACCEPTD", "UNKNOWN", "ERRBUSY"})


def settles(result: int, code: str) -> bool:
    """Whether a report settles its recipient: a final code, or a code neither list knows
    (operators and gateways have many: ``MK:0001``, ``ID:0076`` ...) on a report whose
    ``result`` says failed (1) or delivered (2). The gateway hands each report out once:
    a recipient kept pending on such a report would stay pending for good."""
    upper = code.upper()
    if upper in FINAL_OPERATOR_CODES:
        return True
    return result in (1, 2) and upper not in PENDING_OPERATOR_CODES


class ReportResult(enum.IntEnum):
    """The ``result`` of a delivery report: what the operator's code amounts to."""

    UNKNOWN = 0
    FAILED = 1
    DELIVERED = 2


def _extra(item: Mapping[str, str], named: tuple[str, ...]) -> Mapping[str, str]:
    if len(item) <= len(named) and item.keys() <= set(named):
        # The usual item: nothing beyond the documented attributes (a C-level check).
        return {}
    return {key: value for key, value in item.items() if key not in named}


def _need(item: Mapping[str, str], key: str, what: str) -> str:
    try:
        return item[key]
    except KeyError:
        raise ProtocolError(f"{what} item lacks the {key!r} attribute") from None


def _int(item: Mapping[str, str], key: str, what: str) -> int:
    raw = _need(item, key, what)
    try:
        return int(raw)
    except ValueError:
        raise ProtocolError(f"{what} item has a non-integer {key!r}: {raw!r}") from None


def _money(item: Mapping[str, str], key: str, what: str) -> Decimal:
    raw = _need(item, key, what)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ProtocolError(f"{what} item has a non-numeric {key!r}: {raw!r}") from None
    if not value.is_finite():
        raise ProtocolError(f"{what} item has a non-finite {key!r}: {raw!r}")
    return value


def _extra_field() -> Mapping[str, str]:
    # Kept out of eq and repr: two reports are the same report whatever a deployment
    # adds, and extras may be long.
    return attrs.field(factory=dict, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class SendReceipt:
    """One accepted send: sendOnce answers one for all its numbers, sendBatch one per message."""

    cid: str
    sid: str
    msgid: str
    total: int
    price: Decimal
    remain: Decimal
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("cid", "sid", "msgid", "total", "price", "remain")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> SendReceipt:
        what = "a send receipt"
        return cls(
            cid=item.get("cid", ""),
            sid=item.get("sid", ""),
            msgid=_need(item, "msgid", what),
            total=_int(item, "total", what),
            price=_money(item, "price", what),
            remain=_money(item, "remain", what),
            extra=_extra(item, cls._NAMED),
        )


#: ``result`` as the gateway writes it, for the fast path of DeliveryReport.from_item.
_RESULTS = {"0": ReportResult.UNKNOWN, "1": ReportResult.FAILED, "2": ReportResult.DELIVERED}
_STATE_KEYS = frozenset({"id", "msgid", "mobile", "result", "return"})


@attrs.frozen
class DeliveryReport:
    """A delivery report for one (msgid, mobile), as getSendState hands it out once."""

    id: str
    msgid: str
    mobile: str
    result: ReportResult
    #: The operator's code (DELIVRD, UNDELIV ...), kept as sent even when unknown to us.
    code: str
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("id", "msgid", "mobile", "result", "return")

    @property
    def is_final(self) -> bool:
        """True when this report settles the message's fate: a final operator code, or a
        code we do not know on a report whose result says failed or delivered."""
        return settles(self.result, self.code)

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> DeliveryReport:
        # A million of these per campaign: the usual item takes three dict lookups; any
        # other (a missing attribute, a result written otherwise) the checked path below.
        try:
            result = _RESULTS[item["result"]]
            msgid, mobile = item["msgid"], item["mobile"]
        except KeyError:
            return cls._checked(item)
        extra = {} if item.keys() <= _STATE_KEYS else _extra(item, cls._NAMED)
        return cls(item.get("id", ""), msgid, mobile, result, item.get("return", ""), extra=extra)

    @classmethod
    def from_items(cls, items: Sequence[Mapping[str, str]]) -> list[DeliveryReport] | None:
        """A whole batch at once, when every item is the usual one: the five documented
        attributes and no other, ``result`` written 0, 1 or 2. None otherwise (then each
        item goes through :meth:`from_item`, whose reports these equal in every way).

        Ten thousand reports a poll, on the event loop: the items are read a column at a
        time (``itemgetter`` and ``zip``) and the reports made by ``map`` over the
        columns, with no Python loop of ours around each item.
        """
        if not items:
            return []
        if set(map(len, items)) != {len(_REPORT_ATTRIBUTES_ORDER)}:
            return None
        try:
            ids, msgids, mobiles, raw_results, codes = zip(
                *map(_REPORT_ATTRIBUTES, items), strict=True
            )
            results = list(map(_RESULTS.__getitem__, raw_results))
        except KeyError:
            return None
        return list(map(cls, ids, msgids, mobiles, results, codes))

    @classmethod
    def _checked(cls, item: Mapping[str, str]) -> DeliveryReport:
        what = "a delivery report"
        raw_result = _int(item, "result", what)
        try:
            result = ReportResult(raw_result)
        except ValueError:
            raise ProtocolError(f"a delivery report has an unknown result {raw_result}") from None
        return cls(
            id=item.get("id", ""),
            msgid=_need(item, "msgid", what),
            mobile=_need(item, "mobile", what),
            result=result,
            code=item.get("return", ""),
            extra=_extra(item, cls._NAMED),
        )


#: The usual report item's attributes, in the order of DeliveryReport's fields.
_REPORT_ATTRIBUTES_ORDER = ("id", "msgid", "mobile", "result", "return")
_REPORT_ATTRIBUTES = itemgetter(*_REPORT_ATTRIBUTES_ORDER)


@attrs.frozen(kw_only=True)
class Reply:
    """An inbound SMS a recipient sent back; ``time`` is an aware UTC datetime."""

    id: str
    time: datetime
    mobile: str
    content: str
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("id", "time", "mobile", "content")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> Reply:
        what = "a reply"
        # The document says milliseconds since the epoch, UTC; the vendor's own SDK
        # reads seconds, which puts 2013 replies in the year 45000.
        millis = _int(item, "time", what)
        try:
            when = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ProtocolError(f"a reply has an impossible time {millis}") from None
        return cls(
            id=item.get("id", ""),
            time=when,
            mobile=_need(item, "mobile", what),
            content=item.get("content", ""),
            extra=_extra(item, cls._NAMED),
        )


@attrs.frozen(kw_only=True)
class Balance:
    """The account's balance in yuan."""

    cid: str
    sid: str
    remain: Decimal
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("cid", "sid", "remain")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> Balance:
        return cls(
            cid=item.get("cid", ""),
            sid=item.get("sid", ""),
            remain=_money(item, "remain", "a balance"),
            extra=_extra(item, cls._NAMED),
        )


def _redacted(_key: str) -> str:
    return "'<redacted>'"


@attrs.frozen(kw_only=True)
class KeyRotation:
    """The answer to updateKey. Store ``authkey`` at once: the old key no longer works."""

    cid: str
    sid: str
    authkey: str = attrs.field(repr=_redacted)
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("cid", "sid", "authkey")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> KeyRotation:
        return cls(
            cid=item.get("cid", ""),
            sid=item.get("sid", ""),
            authkey=_need(item, "authkey", "a key rotation"),
            extra=_extra(item, cls._NAMED),
        )


@attrs.frozen(kw_only=True)
class ChannelGroup:
    """A channel group the account may use, with how it bills."""

    cid: str
    sid: str
    cgid: int
    #: A message of up to ``word`` characters costs one unit ...
    word: int
    #: ... a longer one costs ceil(length / longword) units.
    longword: int
    #: Yuan per unit.
    price: Decimal
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("cid", "sid", "cgid", "word", "longword", "price")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> ChannelGroup:
        what = "a channel group"
        return cls(
            cid=item.get("cid", ""),
            sid=item.get("sid", ""),
            cgid=_int(item, "cgid", what),
            word=_int(item, "word", what),
            longword=_int(item, "longword", what),
            price=_money(item, "price", what),
            extra=_extra(item, cls._NAMED),
        )


@attrs.frozen(kw_only=True)
class Signature:
    """A signature the account may use; csid 0 is the default one."""

    cid: str
    sid: str
    csid: int
    sign: str
    extra: Mapping[str, str] = _extra_field()

    _NAMED = ("cid", "sid", "csid", "sign")

    @classmethod
    def from_item(cls, item: Mapping[str, str]) -> Signature:
        return cls(
            cid=item.get("cid", ""),
            sid=item.get("sid", ""),
            csid=_int(item, "csid", "a signature"),
            sign=item.get("sign", ""),
            extra=_extra(item, cls._NAMED),
        )


@attrs.frozen
class MalformedRecord:
    """An item of a report or reply answer that could not be read, kept with its raw attributes.

    The gateway hands each record out once, so one bad item must neither vanish nor cost
    the rest of its batch: it is handed over like this instead.
    """

    action: str
    attributes: Mapping[str, str]
    reason: str


logger = logging.getLogger("aisix_async")
_P = TypeVar("_P")


def parse_records(
    action: str,
    items: Sequence[Mapping[str, str]],
    from_item: Callable[[Mapping[str, str]], _P],
    from_items: Callable[[Sequence[Mapping[str, str]]], list[_P] | None] | None = None,
) -> list[_P | MalformedRecord]:
    """Parse each item on its own: a bad one becomes a MalformedRecord, the rest survive.

    ``from_items`` may read a batch of usual items at once (None when it holds another).
    """
    # Ten thousand items a poll, parsed on the event loop while nothing else it does can
    # go on: a batch without a bad item (the usual one) is parsed whole, or by ``map``,
    # with no Python loop of our own around each item; a bad one sends it item by item.
    if from_items is not None:
        whole = from_items(items)
        if whole is not None:
            return cast("list[_P | MalformedRecord]", whole)
    try:
        return list(map(from_item, items))
    except ProtocolError:
        pass
    out: list[_P | MalformedRecord] = []
    for item in items:
        try:
            out.append(from_item(item))
        except ProtocolError as exc:
            logger.warning("%s: an item could not be read (%s): %r", action, exc.message, item)
            out.append(MalformedRecord(action=action, attributes=dict(item), reason=exc.message))
    return out
