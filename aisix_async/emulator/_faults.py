"""Seeded fault decisions, and the bytes a faulty answer is made of.

A client is only as good as its handling of a gateway that misbehaves, so each kind of
misbehaviour a real deployment shows can be switched on with a probability:

    http_502             proxy error page, request never reached the gateway (no charge)
    error_before_charge  result -10, nothing charged or recorded
    error_after_charge   charged and recorded, then result -10 (did it go out? unknown)
    drop_after_process   charged and recorded, then the connection is cut mid-body
    truncated_xml        charged and recorded, then half the XML with a matching length
    slow_body            charged and recorded, the answer trickles out over slow_body_ms
    charge_failed        result -11 (the document's "chargeback failure"), nothing charged
                         or recorded; sends only

"Charge" faults mean what they say for the sends alone. For another action,
error_after_charge acts as error_before_charge (the document's -10 for updateKey means
"update failed": the key must not change), and charge_failed does not fire.

The decision comes from the state's own seeded generator, so a run repeats exactly.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ._actions import SEND_ACTIONS
from ._config import FAULT_NAMES, FaultConfig
from ._xmlout import html_page

__all__ = [
    "BAD_GATEWAY_PAGE",
    "DeliberateDrop",
    "draw_fault",
    "quiet_deliberate_drops",
    "slow_pieces",
    "truncate",
]

BAD_GATEWAY_PAGE = html_page(502, "Bad Gateway")


class DeliberateDrop(Exception):
    """Raised by the app after a partial answer so the server cuts the connection."""


# What a charge fault becomes for an action that charges nothing.
_OUTSIDE_SENDS: dict[str | None, str | None] = {
    "error_after_charge": "error_before_charge",
    "charge_failed": None,
}


def draw_fault(faults: FaultConfig, rng: random.Random, action: str) -> tuple[str | None, float]:
    """The fault for one request (or None) and the delay (seconds) to apply first.

    One uniform draw walks FAULT_NAMES in order, so faults exclude each other and each
    fires with its own probability.
    """
    if faults.fault_actions is not None and action not in faults.fault_actions:
        return None, 0.0
    delay = faults.latency_ms
    if faults.jitter_ms:
        delay += rng.uniform(0.0, faults.jitter_ms)
    fault = None
    total = faults.total_probability
    if total > 0:
        point = rng.random()
        if point < total:
            edge = 0.0
            for name in FAULT_NAMES:
                edge += faults.probability(name)
                if point < edge:
                    fault = name
                    break
    if action not in SEND_ACTIONS:
        fault = _OUTSIDE_SENDS.get(fault, fault)
    return fault, delay / 1000.0


def truncate(body: bytes) -> bytes:
    """The first half of an answer: a complete HTTP body that is not well-formed XML."""
    return body[: max(1, len(body) // 2)]


def slow_pieces(body: bytes, pieces: int = 8) -> list[bytes]:
    """`body` cut into up to `pieces` parts, sent one by one with pauses between."""
    size = max(1, -(-len(body) // pieces))
    return [body[i : i + size] for i in range(0, len(body), size)]


class _QuietDeliberateDrops(logging.Filter):
    """Keeps uvicorn from logging our own drops as application crashes.

    ... and the requests a stop cut short (a Ctrl-C while an answer waits out its
    latency): uvicorn cancels them once its grace time is over and logs each as a
    crash with a traceback, after its own line saying it cancelled them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        error = exc_info[1] if exc_info else None
        if isinstance(error, DeliberateDrop):
            return False
        cut_by_stop = isinstance(error, asyncio.CancelledError) and "shutdown" in str(error)
        return not cut_by_stop


_FILTER = _QuietDeliberateDrops()


def quiet_deliberate_drops() -> None:
    """Silence uvicorn's error log for deliberate drops only (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
