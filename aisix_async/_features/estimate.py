"""Estimates: what a send will cost, worked out before anything is sent.

The unit rule and the price book are in :mod:`.._core.billing`; this module fetches
through the gateway what they need: the channel group and signature (from the gateway's
price book, cached briefly) and the balance, which is never cached: it is the one figure
that decides whether a campaign may start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._core.billing import Estimate, tally
from .._core.errors import BalanceTooLowError, ValidationError
from .._core.models import ChannelGroup, Signature
from .._core.validate import (
    check_content,
    check_items,
    check_pair,
    check_param_row,
    check_template,
    render_template,
)
from .._gateway import Gateway

__all__ = ["check_affordable", "estimate"]


async def _terms(
    gateway: Gateway, cgid: int | None, csid: int | None
) -> tuple[ChannelGroup, Signature]:
    cgid, csid = gateway.targets(cgid, csid)
    group = await gateway.prices.group(cgid)
    sign = await gateway.prices.signature(csid)
    return group, sign


async def _price(
    gateway: Gateway, messages: Iterable[tuple[str, int]], cgid: int | None, csid: int | None
) -> Estimate:
    group, sign = await _terms(gateway, cgid, csid)
    counted = tally(messages, word=group.word, longword=group.longword, signature=sign.sign)
    balance = (await gateway.get_balance()).remain
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
        # Checked here, before the price book is fetched: a string was estimated as one
        # message per character, and an int failed with a TypeError. The items are
        # checked as they are read (the input may be a stream of millions).
        listed = check_items(messages, "messages")
        return ((_content(m, i), 1) for i, m in enumerate(listed))
    if rows is not None:
        if content_or_template is None or recipients is not None:
            raise ValidationError("rows need the template as the first argument, and no recipients")
        template, count = check_template(content_or_template)
        listed = check_items(rows, "rows")
        return (
            (render_template(template, check_param_row(template, count, row, i)[1]), 1)
            for i, row in enumerate(listed)
        )
    if content_or_template is None:
        raise ValidationError(
            "nothing to estimate: give a content, messages, or a template and rows"
        )
    if recipients is None:
        recipients = 1
    if isinstance(recipients, bool) or not isinstance(recipients, int) or recipients < 0:
        raise ValidationError(f"recipients must be a whole number >= 0, got {recipients!r}")
    # A plain content, as the send checks it: an estimate of "Hi {p1}" was given, and the
    # send refused it (or, for rows, the template is checked above).
    return [(check_content(content_or_template, plain=True), recipients)]


def _content(message: object, index: int) -> str:
    # A (mobile, content) pair, as send_batch takes it (a tuple or a list of two), is
    # accepted as well as a bare text; a pair of another length is refused, not cut.
    text = check_pair(message, index)[1] if isinstance(message, (tuple, list)) else message
    return check_content(text, what=f"message #{index}", plain=True)


async def estimate(
    gateway: Gateway,
    content_or_template: str | None = None,
    *,
    recipients: int | None = None,
    messages: Iterable[str | tuple[str, str]] | None = None,
    rows: Iterable[tuple[str, Sequence[str]]] | None = None,
    cgid: int | None = None,
    csid: int | None = None,
) -> Estimate:
    """Estimate a send before making it.

    * ``estimate(gateway, content, recipients=N)``: one content to N numbers (sendOnce).
    * ``estimate(gateway, messages=[...])``: one message per recipient, given as texts or
      as (mobile, content) pairs (sendBatch).
    * ``estimate(gateway, template, rows=[(mobile, [p1, ...]), ...])``: each row's rendered
      message (sendParam).

    The channel group is ``cgid``, else the client's default, else the account's first;
    the signature is ``csid``, else the client's default, else 0 (an unknown csid is
    signed with the default signature, as the gateway does). The balance is fetched
    fresh; channel groups and signatures come from the gateway's price book.
    Inputs are checked as a send would check them (:class:`ValidationError`).
    """
    plan = _plan(content_or_template, recipients, messages, rows)
    return await _price(gateway, plan, cgid, csid)


async def check_affordable(
    gateway: Gateway,
    messages: Iterable[tuple[str, int]],
    *,
    cgid: int | None,
    csid: int | None,
) -> Estimate:
    """Estimate (content, recipients) pairs and refuse when the cost exceeds the balance.

    Raises :class:`BalanceTooLowError`, stating both figures, before anything is sent;
    otherwise returns the estimate. Contents are taken as given (without signature).
    """
    result = await _price(gateway, messages, cgid, csid)
    if not result.enough:
        raise BalanceTooLowError(
            f"this send would cost {result.cost} yuan ({result.total_units} units at "
            f"{result.price} yuan, channel group {result.cgid}) but the balance is "
            f"{result.balance} yuan; nothing was sent",
            cost=result.cost,
            balance=result.balance,
        )
    return result
