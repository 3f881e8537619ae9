"""The `/_emulator/` control endpoints: JSON in, JSON out, never faulted or rate limited.

They let a test, a benchmark or the `aisix demo` command steer a gateway running in
another process. Reference (all answers are JSON objects; errors are
`{"error": "..."}` with HTTP 400, 404 or 405):

    GET  /_emulator/state
         counters (requests per action, results per code, faults fired, http_errors,
         accepted_messages, units_charged, amount_charged, rate_limited), ledger_size,
         clock, accounts {ac: balance, authkey, locked, wrong_keys, flags,
         pending_reports, due_reports, pending_replies}, config (as GET /config)
    GET  /_emulator/messages?offset=N&limit=M          (limit default 1000, max 100000)
         {"total", "offset", "limit", "messages": [{account, action, msgid, mobile,
         text, units, cost, accepted_at, scheduled_for, cgid, csid, request_id, fault}]}
    GET  /_emulator/config
    POST /_emulator/config     any of: rate (number|null), burst (number|null),
         ip_bound, lock_after, seed, report_delay, report_mix {code: weight},
         blacklist [numbers], reports, reports_per_call, record_messages,
         latency_ms, jitter_ms, slow_body_ms, faults {http_502, error_before_charge,
         error_after_charge, drop_after_process, truncated_xml, slow_body, latency_ms,
         jitter_ms, slow_body_ms, fault_actions [names]|null}. Only the fields given
         change (faults too); answers the new config.
    POST /_emulator/replies    {"mobile", "content", "account"?, "time_ms"?}, or a list
         of such objects; answers {"queued": n}
    GET  /_emulator/accounts/{ac}
    POST /_emulator/accounts/{ac}   any of: balance, authkey, enterprise_enabled,
         staff_enabled, interface_enabled, unlock (true clears a key lock)
    POST /_emulator/reset      clear ledger, counters and queues; restore accounts
         and settings as the gateway started
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import attrs

from ._state import GatewayState, config_to_json

__all__ = ["CONTROL_PREFIX", "control_request"]

CONTROL_PREFIX = "/_emulator"

_NUMBER = (int, float)


class _BadRequest(ValueError):
    """The JSON did not say something the emulator can do."""


def _number(name: str, value: Any, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise _BadRequest(f"{name} must be a number")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{name} must be an integer")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _BadRequest(f"{name} must be true or false")
    return value


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _BadRequest(f"{name} must be a string")
    return value


def _money(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _BadRequest(f"{name} must be a decimal string or a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise _BadRequest(f"{name} is not a decimal: {value!r}")


_CONFIG_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "rate": lambda n, v: _number(n, v, nullable=True),
    "burst": lambda n, v: _number(n, v, nullable=True),
    "ip_bound": _boolean,
    "lock_after": _integer,
    "seed": _integer,
    "report_delay": _number,
    "reports": _boolean,
    "reports_per_call": _integer,
    "record_messages": _boolean,
}
_FAULT_FIELDS = (
    "http_502",
    "error_before_charge",
    "error_after_charge",
    "drop_after_process",
    "truncated_xml",
    "slow_body",
    "charge_failed",
    "latency_ms",
    "jitter_ms",
    "slow_body_ms",
)


def _apply_config(state: GatewayState, data: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    fault_changes: dict[str, Any] = {}
    for key, value in data.items():
        if key in _CONFIG_FIELDS:
            changes[key] = _CONFIG_FIELDS[key](key, value)
        elif key == "report_mix":
            if not isinstance(value, dict):
                raise _BadRequest("report_mix must be an object {code: weight}")
            changes[key] = {str(c): _number(f"report_mix.{c}", w) for c, w in value.items()}
        elif key == "blacklist":
            if not isinstance(value, list):
                raise _BadRequest("blacklist must be a list of numbers")
            changes[key] = frozenset(_string("blacklist[]", v) for v in value)
        elif key in ("latency_ms", "jitter_ms", "slow_body_ms"):
            fault_changes[key] = _number(key, value)
        elif key == "faults":
            if not isinstance(value, dict):
                raise _BadRequest("faults must be an object")
            for name, setting in value.items():
                if name == "fault_actions":
                    if setting is not None and not isinstance(setting, list):
                        raise _BadRequest("fault_actions must be a list of actions or null")
                    fault_changes[name] = (
                        None if setting is None else [_string(name, a) for a in setting]
                    )
                elif name in _FAULT_FIELDS:
                    fault_changes[name] = _number(f"faults.{name}", setting)
                else:
                    raise _BadRequest(f"unknown fault setting {name!r}")
        else:
            raise _BadRequest(f"unknown setting {key!r}")
    if fault_changes:
        # Built first and applied with the rest, so a bad value changes nothing at all.
        changes["faults"] = attrs.evolve(state.config.faults, **fault_changes)
    config = state.configure(**changes)
    return config_to_json(config)


def _inject_replies(state: GatewayState, data: Any) -> dict[str, Any]:
    entries = data if isinstance(data, list) else [data]
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise _BadRequest("a reply is an object {mobile, content, account?, time_ms?}")
        unknown = set(entry) - {"mobile", "content", "account", "time_ms"}
        if unknown:
            raise _BadRequest(f"unknown reply fields {sorted(unknown)}")
        account = entry.get("account")
        time_ms = entry.get("time_ms")
        parsed.append(
            (
                _string("mobile", entry.get("mobile")),
                _string("content", entry.get("content")),
                None if account is None else _string("account", account),
                None if time_ms is None else _integer("time_ms", time_ms),
            )
        )
    for mobile, content, account, time_ms in parsed:
        state.inject_reply(mobile, content, account=account, time_ms=time_ms)
    return {"queued": len(parsed)}


def _update_account(state: GatewayState, ac: str, data: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "balance":
            kwargs[key] = _money(key, value)
        elif key == "authkey":
            kwargs[key] = _string(key, value)
        elif key in ("enterprise_enabled", "staff_enabled", "interface_enabled", "unlock"):
            kwargs[key] = _boolean(key, value)
        else:
            raise _BadRequest(f"unknown account field {key!r}")
    return state.update_account(ac, **kwargs)


def _messages(state: GatewayState, query: bytes) -> dict[str, Any]:
    args = dict(parse_qsl(query.decode("latin-1")))
    try:
        offset = int(args.get("offset", "0"))
        limit = int(args.get("limit", "1000"))
    except ValueError:
        raise _BadRequest("offset and limit must be integers")
    if offset < 0 or not 0 <= limit <= 100_000:
        raise _BadRequest("offset >= 0 and 0 <= limit <= 100000")
    with state.lock:
        total = len(state.ledger)
        records = state.ledger[offset : offset + limit]
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "messages": [record.to_json() for record in records],
    }


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise _BadRequest("the body is not JSON")


def _json_object(body: bytes) -> dict[str, Any]:
    data = _json_body(body)
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


def control_request(
    state: GatewayState, method: str, path: str, query: bytes, body: bytes
) -> tuple[int, Any]:
    """Serve one `/_emulator/...` request: (HTTP status, JSON-ready answer)."""
    route = path[len(CONTROL_PREFIX) :].rstrip("/")
    try:
        if route == "/state":
            if method == "GET":
                return 200, state.snapshot()
        elif route == "/messages":
            if method == "GET":
                return 200, _messages(state, query)
        elif route == "/config":
            if method == "GET":
                return 200, config_to_json(state.config)
            if method == "POST":
                return 200, _apply_config(state, _json_object(body))
        elif route == "/replies":
            if method == "POST":
                return 200, _inject_replies(state, _json_body(body))
        elif route.startswith("/accounts/"):
            ac = route[len("/accounts/") :]
            if ac not in state.accounts:
                return 404, {"error": f"no account {ac!r}"}
            if method == "GET":
                return 200, state.update_account(ac)
            if method == "POST":
                return 200, _update_account(state, ac, _json_object(body))
        elif route == "/reset":
            if method == "POST":
                state.reset()
                return 200, {"reset": True}
        else:
            return 404, {"error": f"no control endpoint {path!r}"}
        return 405, {"error": f"{method} not allowed on {path}"}
    except (_BadRequest, ValueError, TypeError, KeyError) as exc:
        return 400, {"error": str(exc)}
