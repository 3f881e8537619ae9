"""sendOnce, sendBatch, sendParam: shape checks, then charge, record and queue reports.

The charge is all or nothing: the cost of the whole request is compared with the
balance first (-9 charges and records nothing), then every message is charged, recorded
in the ledger and given its delivery report, with no await anywhere (the caller holds the
state lock). This is the hot path of every benchmark, so the shared-text case (sendOnce,
one msgid and one cost for every number) is computed once, not per number.

Answers: sendOnce gives one Item whose `total` sums the units of all numbers; the others
give one Item per message, whose `remain` is the running balance after that message.
"""

from __future__ import annotations

from ._billing import units_for_length
from ._config import ChannelGroupConfig, SignConfig
from ._records import MessageRecord
from ._state import AccountState, GatewayState
from ._validate import (
    check_content,
    collect_params,
    parse_group_id,
    parse_schedule,
    parse_sign_id,
    render_template,
    split_contents,
    split_numbers,
)

__all__ = ["Items", "send_batch", "send_once", "send_param"]

Items = list[dict[str, str]]


def send_once(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    """One content to 1..1000 numbers, one msgid for all."""
    numbers = split_numbers(params.get("m", ""), 1, 1000)
    content = check_content(params.get("c", ""))
    return _accept(state, account, "sendOnce", numbers, [content], params, request_id, fault)


def send_batch(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    """2..100 numbers, each with its own content (`c` joined with `{|}`)."""
    numbers = split_numbers(params.get("m", ""), 2, 100)
    contents = split_contents(params.get("c", ""), len(numbers))
    return _accept(state, account, "sendBatch", numbers, contents, params, request_id, fault)


def send_param(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    """A `{pN}` template rendered per number with `p1`..`p10` (values joined with `{|}`)."""
    numbers = split_numbers(params.get("m", ""), 2, 100)
    contents = render_template(params.get("c", ""), collect_params(params), len(numbers))
    return _accept(state, account, "sendParam", numbers, contents, params, request_id, fault)


def _resolve_group(account: AccountState, cgid: int | None) -> ChannelGroupConfig | None:
    groups = account.config.channel_groups
    if cgid is None:
        return groups[0]
    for group in groups:
        if group.cgid == cgid:
            return group
    return None


def _resolve_sign(account: AccountState, csid: int) -> SignConfig:
    default = None
    for sign in account.config.signs:
        if sign.csid == csid:
            return sign
        if sign.csid == 0:
            default = sign
    assert default is not None  # AccountConfig guarantees csid 0
    return default


def _accept(
    state: GatewayState,
    account: AccountState,
    action: str,
    numbers: list[str],
    contents: list[str],
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    """Charge and record a send whose numbers and contents passed the shape checks.

    `contents` holds one content per number, or (sendOnce) one shared by every number.
    """
    config = state.config
    now = config.clock()
    scheduled = parse_schedule(params.get("t"), now, config.gateway_tz)
    group = _resolve_group(account, parse_group_id(params.get("cgid")))
    if group is None:
        return -8, []
    sign = _resolve_sign(account, parse_sign_id(params.get("csid")))
    word, longword, price = group.word, group.longword, group.price
    texts = [sign.sign + content for content in contents]
    units = [units_for_length(len(text), word, longword) for text in texts]
    shared = action == "sendOnce"
    total_units = units[0] * len(numbers) if shared else sum(units)
    total_cost = price * total_units
    balance = account.balance
    if total_cost > balance:
        return -9, []

    cid, sid, ac = account.config.enterprise, account.config.staff, account.ac
    price_text = str(price)
    cgid, csid = group.cgid, sign.csid
    record = config.record_messages
    ledger = state.ledger
    items: Items = []
    if shared:
        msgid = state.next_msgid()
        msgids = [msgid] * len(numbers)
        text, n_units = texts[0], units[0]
        cost = price * n_units
        if record:
            ledger.extend(
                MessageRecord(
                    ac, action, msgid, mobile, text, n_units, cost, now, scheduled,
                    cgid, csid, request_id, fault,
                )
                for mobile in numbers
            )  # fmt: skip
        balance -= total_cost
        items.append(
            {
                "cid": cid,
                "sid": sid,
                "msgid": msgid,
                "total": str(total_units),
                "price": price_text,
                "remain": f"{balance:.3f}",
            }
        )
    else:
        msgids = []
        for mobile, text, n_units in zip(numbers, texts, units, strict=True):
            msgid = state.next_msgid()
            msgids.append(msgid)
            cost = price * n_units
            balance -= cost
            if record:
                ledger.append(
                    MessageRecord(
                        ac, action, msgid, mobile, text, n_units, cost, now, scheduled,
                        cgid, csid, request_id, fault,
                    )
                )  # fmt: skip
            items.append(
                {
                    "cid": cid,
                    "sid": sid,
                    "msgid": msgid,
                    "total": str(n_units),
                    "price": price_text,
                    "remain": f"{balance:.3f}",
                }
            )
    account.balance = balance

    if config.reports:
        push, pick, rng = account.reports.push, state.report_mix.pick, state.report_rng
        blacklist = config.blacklist
        due = (now if scheduled is None else scheduled) + config.report_delay
        for msgid, mobile in zip(msgids, numbers, strict=True):
            push(due, msgid, mobile, "DTBLACK" if mobile in blacklist else pick(rng))

    counters = state.counters
    counters.accepted_messages += len(numbers)
    counters.units_charged += total_units
    counters.amount_charged += total_cost
    return 1, items
