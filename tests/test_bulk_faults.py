"""Every recipient exactly once, under random fault mixes, checked against the ledger.

Hypothesis picks the mix (-1 from a token bucket, -10 after charging, -11, connections
dropped after processing, HTTP 502, truncated answers) and the input's size and kind; the
emulator's ledger says what really went out. Few examples, small latencies: fast.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import client_for, collect, numbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bulk import check_against_ledger

from aisix_async import OutcomeStatus, RetryPolicy

pytestmark = pytest.mark.anyio

_probability = st.sampled_from([0.0, 0.05, 0.15])


@st.composite
def fault_mixes(draw: st.DrawFn) -> dict[str, float]:
    return {
        "error_after_charge": draw(_probability),
        "drop_after_process": draw(_probability),
        "http_502": draw(_probability),
        "truncated_xml": draw(_probability),
        "error_before_charge": draw(_probability),
        "charge_failed": draw(_probability),
    }


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    faults=fault_mixes(),
    rate=st.sampled_from([None, 300.0]),
    count=st.integers(0, 260),
    kind=st.sampled_from(["once", "batch", "param"]),
    chunk_size=st.sampled_from([2, 7, 50]),
)
async def test_every_recipient_exactly_once_under_faults(
    emulator: Any,
    faults: dict[str, float],
    rate: float | None,
    count: int,
    kind: str,
    chunk_size: int,
) -> None:
    emulator.state.reset()
    emulator.state.configure(rate=rate, burst=3.0 if rate else None)
    emulator.state.set_faults(**faults, fault_actions=["sendOnce", "sendBatch", "sendParam"])
    mobiles = numbers(count, prefix="137")
    policy = RetryPolicy(attempts=12, timeout=10, initial_backoff=0.001, max_backoff=0.01)
    async with client_for(emulator, retry=policy) as client:
        if kind == "once":
            stream = client.send_many(mobiles, "hi", chunk_size=chunk_size)
        elif kind == "batch":
            stream = client.send_batch_many(
                [(m, f"t{i}") for i, m in enumerate(mobiles)], chunk_size=chunk_size
            )
        else:
            stream = client.send_param_many(
                "{p1}!", [(m, [f"v{i}"]) for i, m in enumerate(mobiles)], chunk_size=chunk_size
            )
        outcomes = await collect(stream)
    check_against_ledger(emulator, mobiles, outcomes)
    statuses = {o.status for o in outcomes}
    if not any(faults.values()):
        assert statuses <= {OutcomeStatus.ACCEPTED}
    # A failed recipient is one the gateway certainly did not take: never an ambiguous one.
    for outcome in outcomes:
        if outcome.status is OutcomeStatus.FAILED:
            assert outcome.error is not None and not outcome.error.outcome_unknown
