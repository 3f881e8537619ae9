"""What a send will cost, worked out before anything is sent.

The gateway charges per *unit*: the text a phone receives (signature + content, counted
in code points, as the operators count it) costs one unit up to the channel group's
``word`` characters, and ``ceil(length / longword)`` units beyond. Getting this rule
exactly right matters more than anything else here: an estimate that is one unit short per
message on a ten-million-recipient campaign is a bill nobody planned for.

The rule itself (:func:`segments`, :func:`tally`) is pure. The shell around it fetches the
account's channel groups and signatures through the client, cached for a short time by
:class:`PriceBook` (they change rarely, and an estimate before every bulk call must not
cost two requests each time), and the balance, which is never cached: it is the one figure
that decides whether a campaign may start.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio
import attrs

from .._core.errors import BalanceTooLowError, ValidationError
from .._core.models import ChannelGroup, Signature
from .._core.validate import (
    check_cgid,
    check_content,
    check_csid,
    check_param_row,
    check_template,
    render_template,
)

if TYPE_CHECKING:
    from .._client import AisixClient

__all__ = [
    "Estimate",
    "PriceBook",
    "Tally",
    "check_affordable",
    "estimate",
    "segments",
    "tally",
]

#: The signature the gateway uses for csid 0, an omitted csid, and an unknown one.
DEFAULT_CSID = 0


def segments(text: str, word: int = 70, longword: int = 67) -> int:
    """Units one message costs: 1 up to ``word`` code points, else ceil(len / longword).

    ``text`` must be what the phone receives, signature included: that is what the
    operators count.
    """
    if word < 1 or longword < 1:
        raise ValidationError(f"word and longword must be positive, got {word} and {longword}")
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
    by_units: Counter[int] = Counter()
    for content, recipients in messages:
        if recipients < 0:
            raise ValidationError(f"a message cannot have {recipients} recipients")
        if recipients:
            by_units[segments(signature + content, word, longword)] += recipients
    if not by_units:
        return Tally(min_units=0, max_units=0, total_units=0, messages=0)
    return Tally(
        min_units=min(by_units),
        max_units=max(by_units),
        total_units=sum(units * count for units, count in by_units.items()),
        messages=sum(by_units.values()),
    )


@attrs.frozen
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
        return max(Decimal(0), self.cost - self.balance)


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
        if ttl < 0:
            raise ValidationError(f"ttl must not be negative, got {ttl!r}")
        self._fetch_groups = fetch_groups
        self._fetch_signs = fetch_signs
        self._ttl = ttl
        self._clock = clock
        self._groups: tuple[float, list[ChannelGroup]] | None = None
        self._signs: tuple[float, list[Signature]] | None = None
        # Created on first use: a client (and its PriceBook) is built outside any event
        # loop, and a lock made there would not belong to the loop that later uses it.
        self._lock: anyio.Lock | None = None

    def _fresh(self, fetched_at: float) -> bool:
        return self._clock() - fetched_at < self._ttl

    def invalidate(self) -> None:
        """Forget both lists: the next call fetches them again."""
        self._groups = None
        self._signs = None

    async def groups(self) -> list[ChannelGroup]:
        """The account's channel groups (cached)."""
        cached = self._groups
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        async with self._locked():
            cached = self._groups
            if cached is None or not self._fresh(cached[0]):
                cached = (self._clock(), list(await self._fetch_groups()))
                self._groups = cached
            return cached[1]

    async def signs(self) -> list[Signature]:
        """The account's signatures (cached)."""
        cached = self._signs
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        async with self._locked():
            cached = self._signs
            if cached is None or not self._fresh(cached[0]):
                cached = (self._clock(), list(await self._fetch_signs()))
                self._signs = cached
            return cached[1]

    def _locked(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

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


async def _terms(
    client: AisixClient, cgid: int | None, csid: int | None
) -> tuple[ChannelGroup, Signature]:
    cgid = check_cgid(cgid)
    csid = check_csid(csid)
    book: PriceBook = client._prices
    group = await book.group(cgid if cgid is not None else client._cgid)
    sign = await book.signature(csid if csid is not None else client._csid)
    return group, sign


async def _price(
    client: AisixClient, messages: Iterable[tuple[str, int]], cgid: int | None, csid: int | None
) -> Estimate:
    group, sign = await _terms(client, cgid, csid)
    counted = tally(messages, word=group.word, longword=group.longword, signature=sign.sign)
    balance = (await client.get_balance()).remain
    cost = group.price * counted.total_units
    same = counted.min_units == counted.max_units and counted.messages > 0
    return Estimate(
        units_per_message=counted.min_units if same else None,
        min_units=counted.min_units,
        max_units=counted.max_units,
        total_units=counted.total_units,
        messages=counted.messages,
        cost=cost,
        balance=balance,
        enough=cost <= balance,
        cgid=group.cgid,
        csid=sign.csid,
        price=group.price,
        signature=sign.sign,
    )


def _plan(
    content_or_template: str | None,
    recipients: int | None,
    messages: Iterable[str | tuple[str, str]] | None,
    rows: Iterable[tuple[str, Sequence[str]]] | None,
) -> Iterable[tuple[str, int]]:
    """The (content, recipients) pairs an estimate covers, checked like a send would be."""
    if messages is not None:
        if content_or_template is not None or rows is not None or recipients is not None:
            raise ValidationError("give messages alone: each message is one recipient's content")
        return ((_content(m, i), 1) for i, m in enumerate(messages))
    if rows is not None:
        if content_or_template is None or recipients is not None:
            raise ValidationError("rows need the template as the first argument, and no recipients")
        template, count = check_template(content_or_template)
        return (
            (render_template(template, check_param_row(template, count, row, i)[1]), 1)
            for i, row in enumerate(rows)
        )
    if content_or_template is None:
        raise ValidationError(
            "nothing to estimate: give a content, messages, or a template and rows"
        )
    if recipients is None:
        recipients = 1
    if isinstance(recipients, bool) or not isinstance(recipients, int) or recipients < 0:
        raise ValidationError(f"recipients must be a whole number >= 0, got {recipients!r}")
    return [(check_content(content_or_template), recipients)]


def _content(message: str | tuple[str, str], index: int) -> str:
    # A (mobile, content) pair, as send_batch takes it, is accepted as well as a bare text.
    text = message[1] if isinstance(message, tuple) else message
    return check_content(text, what=f"message #{index}")


async def estimate(
    client: AisixClient,
    content_or_template: str | None = None,
    *,
    recipients: int | None = None,
    messages: Iterable[str | tuple[str, str]] | None = None,
    rows: Iterable[tuple[str, Sequence[str]]] | None = None,
    cgid: int | None = None,
    csid: int | None = None,
) -> Estimate:
    """Estimate a send before making it.

    * ``estimate(client, content, recipients=N)``: one content to N numbers (sendOnce).
    * ``estimate(client, messages=[...])``: one message per recipient, given as texts or
      as (mobile, content) pairs (sendBatch).
    * ``estimate(client, template, rows=[(mobile, [p1, ...]), ...])``: each row's rendered
      message (sendParam).

    The channel group is ``cgid``, else the client's default, else the account's first;
    the signature is ``csid``, else the client's default, else 0 (an unknown csid is
    signed with the default signature, as the gateway does). The balance is fetched
    fresh; channel groups and signatures come from the client's :class:`PriceBook`.
    Inputs are checked as a send would check them (:class:`ValidationError`).
    """
    plan = _plan(content_or_template, recipients, messages, rows)
    return await _price(client, plan, cgid, csid)


async def check_affordable(
    client: AisixClient,
    messages: Iterable[tuple[str, int]],
    *,
    cgid: int | None,
    csid: int | None,
) -> Estimate:
    """Estimate (content, recipients) pairs and refuse when the cost exceeds the balance.

    Raises :class:`BalanceTooLowError`, stating both figures, before anything is sent;
    otherwise returns the estimate. Contents are taken as given (without signature).
    """
    result = await _price(client, messages, cgid, csid)
    if not result.enough:
        raise BalanceTooLowError(
            f"this send would cost {result.cost} yuan ({result.total_units} units at "
            f"{result.price} yuan, channel group {result.cgid}) but the balance is "
            f"{result.balance} yuan; nothing was sent",
            cost=result.cost,
            balance=result.balance,
        )
    return result
