"""Billing: how many units a message costs, and the account's price book.

The gateway charges per *unit*: the text a phone receives (signature + content, counted
in code points, as the operators count it) costs one unit up to the channel group's
``word`` characters, and ``ceil(length / longword)`` units beyond. Getting this rule
exactly right matters more than anything else here: an estimate that is one unit short per
message on a ten-million-recipient campaign is a bill nobody planned for.

:func:`count_units` and :func:`tally` are pure. :class:`PriceBook` keeps the account's channel
groups and signatures for a short time (they change rarely, and an estimate before every
bulk call must not cost two requests each time); it is handed the functions that fetch
them, so it knows nothing of HTTP.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Generic, TypeVar

import anyio
import attrs

from .errors import ValidationError
from .models import ChannelGroup, Signature
from .validate import check_number

__all__ = [
    "DEFAULT_CSID",
    "NO_COST",
    "Estimate",
    "PriceBook",
    "Tally",
    "TtlCache",
    "count_units",
    "tally",
]

_T = TypeVar("_T")

#: The signature the gateway uses for csid 0, an omitted csid, and an unknown one.
DEFAULT_CSID = 0

#: Nothing charged, written as the gateway writes yuan (two decimals): a sum that starts
#: here reads "0.00" when nothing was added, like every other amount a user is shown.
NO_COST = Decimal("0.00")


def count_units(text: str, word: int = 70, longword: int = 67) -> int:
    """Units one message costs: 1 up to ``word`` code points, else ceil(len / longword).

    ``text`` must be what the phone receives, signature included: that is what the
    operators count. Raises :class:`ValidationError` for a ``text`` that is not a string
    and for a ``word`` or ``longword`` that is not a whole number of 1 or more.
    """
    if not isinstance(text, str):
        # len() of a list or of bytes would count something else than code points, and
        # an int or None failed with a TypeError that named neither the call nor the fix.
        raise ValidationError(f"text must be a string, got {type(text).__name__}")
    _check_group(word, longword)
    return _units(text, word, longword)


def _check_group(word: object, longword: object) -> None:
    # A float passed the old "< 1" test and NaN compared false with everything: the count
    # came out as 1, or as NaN, for a text of any length.
    check_number(word, "word", integer=True, minimum=1)
    check_number(longword, "longword", integer=True, minimum=1)


def _units(text: str, word: int, longword: int) -> int:
    """:func:`count_units` without its checks, for a loop over checked input."""
    length = len(text)
    if length <= word:
        return 1
    # Integer ceiling: a float division could round a long text one unit short.
    return -(-length // longword)


@attrs.frozen
class Tally:
    """Units over a set of messages: per-message extremes, total, and how many messages."""

    min_units: int
    max_units: int
    total_units: int
    messages: int


def tally(
    messages: Iterable[tuple[str, int]], *, word: int, longword: int, signature: str = ""
) -> Tally:
    """Count units for (content, recipients) pairs; each content is signed with ``signature``.

    Pure, and streaming: one pass, memory independent of the number of messages.
    """
    _check_group(word, longword)
    by_units: Counter[int] = Counter()
    for content, recipients in messages:
        if recipients < 0:
            raise ValidationError(f"a message cannot have {recipients} recipients")
        if recipients:
            by_units[_units(signature + content, word, longword)] += recipients
    if not by_units:
        return Tally(min_units=0, max_units=0, total_units=0, messages=0)
    return Tally(
        min_units=min(by_units),
        max_units=max(by_units),
        total_units=sum(units * count for units, count in by_units.items()),
        messages=sum(by_units.values()),
    )


@attrs.frozen(kw_only=True)
class Estimate:
    """What a send will cost, and whether the balance covers it (money in yuan)."""

    #: Units each message costs when they all cost the same, else None (see min/max).
    units_per_message: int | None
    min_units: int
    max_units: int
    total_units: int
    #: Messages the estimate covers: one per recipient.
    messages: int
    cost: Decimal
    balance: Decimal
    enough: bool
    cgid: int
    #: The signature the gateway will use (an unknown csid falls back to 0).
    csid: int
    #: Yuan per unit in the channel group.
    price: Decimal
    #: The signature text counted in front of every content.
    signature: str

    @property
    def shortfall(self) -> Decimal:
        """How much more the balance would need (0 when it is enough)."""
        return max(NO_COST, self.cost - self.balance)


class TtlCache(Generic[_T]):
    """One value fetched on demand and kept for ``ttl`` seconds; concurrent callers share
    one fetch."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[_T]],
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValidationError(f"ttl must not be negative, got {ttl!r}")
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._value: tuple[float, _T] | None = None
        # Created on first use: a client is built outside any event loop, and a lock
        # made there would not belong to the loop that later uses it.
        self._lock: anyio.Lock | None = None

    def invalidate(self) -> None:
        """Forget the value: the next call fetches it again."""
        self._value = None

    def _fresh(self) -> _T | None:
        cached = self._value
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        return None

    async def get(self) -> _T:
        """The value, fetched again when older than ``ttl``."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            fresh = self._fresh()
            if fresh is None:
                fresh = await self._fetch()
                self._value = (self._clock(), fresh)
            return fresh


class PriceBook:
    """The account's channel groups and signatures, fetched once and kept for ``ttl`` seconds.

    Concurrent callers share one fetch: the bulk calls of a campaign, started together,
    must not each spend a request on lists that did not change.
    """

    def __init__(
        self,
        fetch_groups: Callable[[], Awaitable[list[ChannelGroup]]],
        fetch_signs: Callable[[], Awaitable[list[Signature]]],
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._groups = TtlCache(fetch_groups, ttl=ttl, clock=clock)
        self._signs = TtlCache(fetch_signs, ttl=ttl, clock=clock)

    def invalidate(self) -> None:
        """Forget both lists: the next call fetches them again."""
        self._groups.invalidate()
        self._signs.invalidate()

    async def groups(self) -> list[ChannelGroup]:
        """The account's channel groups (cached)."""
        return list(await self._groups.get())

    async def signs(self) -> list[Signature]:
        """The account's signatures (cached)."""
        return list(await self._signs.get())

    async def group(self, cgid: int | None) -> ChannelGroup:
        """The channel group ``cgid``, or the first one (the gateway's default) for None."""
        groups = await self.groups()
        if not groups:
            raise ValidationError("the account has no channel group to send through")
        if cgid is None:
            return groups[0]
        for group in groups:
            if group.cgid == cgid:
                return group
        known = ", ".join(str(g.cgid) for g in groups)
        raise ValidationError(
            f"cgid {cgid} is not one of this account's channel groups ({known}); "
            "the gateway would refuse it with -8"
        )

    async def signature(self, csid: int | None) -> Signature:
        """The signature the gateway will use for ``csid`` (unknown ones fall back to 0)."""
        signs = await self.signs()
        wanted = DEFAULT_CSID if csid is None else csid
        by_csid = {s.csid: s for s in signs}
        if wanted in by_csid:
            return by_csid[wanted]
        if DEFAULT_CSID in by_csid:
            return by_csid[DEFAULT_CSID]
        if not signs:
            return Signature(cid="", sid="", csid=DEFAULT_CSID, sign="")
        # No default listed: assume the longest signature, so the estimate errs high
        # rather than letting a campaign run dry.
        return max(signs, key=lambda s: len(s.sign))
