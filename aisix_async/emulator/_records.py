"""The gateway's ground truth and tallies: one record per accepted message, and counters.

Apart from the state so the two shapes a client is judged against are easy to find:
`MessageRecord` (what the gateway charged for and will deliver, with the exact text the
phone receives) and `Counters` (what it saw and answered since the last reset).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import attrs

from ._config import FAULT_NAMES

__all__ = ["Counters", "MessageRecord"]


@attrs.define
class MessageRecord:
    """One accepted message: what the gateway charged for and will deliver.

    Read-only by convention. It is a plain slotted class rather than a frozen one because a
    frozen attrs `__init__` costs four times as much, and benchmarks record millions.
    """

    account: str
    action: str
    msgid: str
    mobile: str
    text: str
    units: int
    cost: Decimal
    accepted_at: float
    scheduled_for: float | None
    cgid: int
    csid: int
    request_id: int
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values (money as a string, never a float)."""
        data = attrs.asdict(self)
        data["cost"] = str(self.cost)
        return data


@attrs.define
class Counters:
    """What the gateway has seen and done since the last reset."""

    requests: Counter[str] = attrs.Factory(Counter)
    results: Counter[int] = attrs.Factory(Counter)
    faults: Counter[str] = attrs.Factory(Counter)
    http_errors: Counter[int] = attrs.Factory(Counter)
    accepted_messages: int = 0
    units_charged: int = 0
    amount_charged: Decimal = Decimal("0")
    rate_limited: int = 0

    def copy(self) -> Counters:
        """An independent copy (the live one keeps changing on the server thread)."""
        return Counters(
            requests=Counter(self.requests),
            results=Counter(self.results),
            faults=Counter(self.faults),
            http_errors=Counter(self.http_errors),
            accepted_messages=self.accepted_messages,
            units_charged=self.units_charged,
            amount_charged=self.amount_charged,
            rate_limited=self.rate_limited,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready counters (result codes and statuses as string keys)."""
        return {
            "requests": dict(self.requests),
            "results": {str(code): n for code, n in sorted(self.results.items())},
            "faults": {name: self.faults[name] for name in FAULT_NAMES if self.faults[name]},
            "http_errors": {str(code): n for code, n in sorted(self.http_errors.items())},
            "accepted_messages": self.accepted_messages,
            "units_charged": self.units_charged,
            "amount_charged": str(self.amount_charged),
            "rate_limited": self.rate_limited,
        }
