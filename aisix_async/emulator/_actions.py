"""One handler per gateway action: request parameters in, (result code, items) out.

`handle` runs with `GatewayState.lock` held and never awaits, so the checks, the charge
and the ledger record of one request happen as one step however many requests are in
flight. It applies the checks in the gateway's order:

    action served on this endpoint, else -4
    ac is digits@digits, else 0
    ip_bound mode: -1
    rate limit (token bucket per account): -1
    unknown or disabled enterprise: -5
    unknown or disabled staff: -6
    key locked: -3
    wrong key: -2 (the `lock_after`-th wrong key in a row locks the key)
    interface disabled (OpenApi actions): -7
    parameter shape: -4
    channel group not the account's: -8
    balance short for the whole request: -9 (nothing charged, nothing recorded)

Items are plain dicts of attribute strings, in the order the document lists them. The
three sends live in `_sends`; the reads, updateKey and the two queues are here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ._config import ALL_ACTIONS, DATA_API_ACTIONS, OPEN_API_ACTIONS, SEND_ACTIONS
from ._queues import report_result
from ._sends import Items, send_batch, send_once, send_param
from ._state import AccountState, GatewayState
from ._validate import ShapeError

__all__ = [
    "ALL_ACTIONS",
    "DATA_API_ACTIONS",
    "OPEN_API_ACTIONS",
    "SEND_ACTIONS",
    "UNKNOWN_ACTION",
    "Items",
    "handle",
]

Handler = Callable[
    [GatewayState, AccountState, dict[str, str], int, "str | None"], "tuple[int, Items]"
]

#: The counter key for actions the gateway does not know (keeps the counter small).
UNKNOWN_ACTION = "(unknown)"

_AC = re.compile(r"[0-9]+@[0-9]+")
_SUCCESS = 1


def handle(
    state: GatewayState,
    action: str,
    params: dict[str, str],
    served: frozenset[str],
    request_id: int,
    fault: str | None = None,
) -> tuple[int, Items]:
    """Process one request and count it; the caller holds `state.lock`.

    With `fault="error_after_charge"` the request is processed in full (charged and
    recorded) and the answer is -10 all the same: the ambiguous case clients must handle.
    A request refused before acting (-1 when the limit is met, a bad parameter) was not
    charged: it keeps its own answer, and the fault is not counted as fired.
    """
    counters = state.counters
    counters.requests[action if action in ALL_ACTIONS else UNKNOWN_ACTION] += 1
    code, items = _dispatch(state, action, params, served, request_id, fault)
    if fault == "error_after_charge" and code == _SUCCESS:
        counters.faults[fault] += 1
        code, items = -10, []
    counters.results[code] += 1
    return code, items


def _dispatch(
    state: GatewayState,
    action: str,
    params: dict[str, str],
    served: frozenset[str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    if action not in served:
        return -4, []
    config = state.config
    ac = params.get("ac", "")
    if _AC.fullmatch(ac) is None:
        return 0, []
    if config.ip_bound:
        return -1, []
    account = state.accounts.get(ac)
    if account is not None and not state.take_token(account, config):
        state.counters.rate_limited += 1
        return -1, []
    if account is None:
        members = state.enterprises.get(ac.partition("@")[2])
        if not members or not any(m.enterprise_enabled for m in members):
            return -5, []
        return -6, []
    if not account.enterprise_enabled:
        return -5, []
    if not account.staff_enabled:
        return -6, []
    if account.locked:
        return -3, []
    if params.get("authkey") != account.authkey:
        account.wrong_keys += 1
        if account.wrong_keys >= config.lock_after:
            account.locked = True
        return -2, []
    account.wrong_keys = 0
    if action in OPEN_API_ACTIONS and not account.interface_enabled:
        return -7, []
    try:
        return _HANDLERS[action](state, account, params, request_id, fault)
    except ShapeError:
        return -4, []


# ------------------------------------------------------------------ account reads


def _get_balance(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    config = account.config
    return _SUCCESS, [
        {"cid": config.enterprise, "sid": config.staff, "remain": f"{account.balance:.3f}"}
    ]


def _update_key(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    # The old key stops working with this very answer: a client that loses the answer
    # (fault drop_after_process) has lost its key, which is the case worth testing.
    account.authkey = state.new_authkey()
    config = account.config
    return _SUCCESS, [{"cid": config.enterprise, "sid": config.staff, "authkey": account.authkey}]


def _get_channel_group(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    config = account.config
    return _SUCCESS, [
        {
            "cid": config.enterprise,
            "sid": config.staff,
            "cgid": str(group.cgid),
            "word": str(group.word),
            "longword": str(group.longword),
            "price": str(group.price),
        }
        for group in config.channel_groups
    ]


def _get_sign(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    config = account.config
    return _SUCCESS, [
        {"cid": config.enterprise, "sid": config.staff, "csid": str(s.csid), "sign": s.sign}
        for s in config.signs
    ]


# ------------------------------------------------------------------------ queues


def _get_send_state(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    config = state.config
    reports = account.reports.pop_due(config.clock(), config.reports_per_call)
    return _SUCCESS, [
        {
            "id": report_id,
            "msgid": msgid,
            "mobile": mobile,
            "result": report_result(code),
            "return": code,
        }
        for report_id, msgid, mobile, code in reports
    ]


def _get_reply(
    state: GatewayState,
    account: AccountState,
    params: dict[str, str],
    request_id: int,
    fault: str | None,
) -> tuple[int, Items]:
    replies = account.replies.pop(state.config.reports_per_call)
    return _SUCCESS, [
        {"id": reply_id, "time": time_ms, "mobile": mobile, "content": content}
        for reply_id, time_ms, mobile, content in replies
    ]


_HANDLERS: dict[str, Handler] = {
    "sendOnce": send_once,
    "sendBatch": send_batch,
    "sendParam": send_param,
    "getBalance": _get_balance,
    "updateKey": _update_key,
    "getChannelGroup": _get_channel_group,
    "getSign": _get_sign,
    "getSendState": _get_send_state,
    "getReply": _get_reply,
}
