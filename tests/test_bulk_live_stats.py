"""A send stream's figures are live: a chunk retried through a -1 storm counts as it goes.

Against the emulator on 127.0.0.1 answering -1 to everything (an account bound to
another IP address), so the one chunk is retried for a while before it settles.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import client_for, numbers

from aisix_async import OutcomeStatus, RetryPolicy

pytestmark = pytest.mark.anyio


async def test_requests_and_minus_one_answers_count_before_the_chunk_settles(
    emulator: Any,
) -> None:
    emulator.state.configure(ip_bound=True)
    # Five attempts: below the six unbroken -1 answers that open the circuit breaker, so
    # the chunk is retried to the end of its policy rather than refused by the breaker.
    retry = RetryPolicy(attempts=5, timeout=30, initial_backoff=0.02, max_backoff=0.05)
    seen: list[tuple[int, int, int]] = []
    async with client_for(emulator, retry=retry) as client:
        stream = client.send_many(numbers(10), "hello", check_balance=False)
        async with stream, anyio.create_task_group() as group:

            async def watch() -> None:
                while True:
                    stats = stream.stats()
                    seen.append((stats.requests, stats.rate_limited, stats.retries))
                    await anyio.sleep(0.01)

            group.start_soon(watch)
            outcomes = [outcome async for outcome in stream]
            group.cancel_scope.cancel()
    assert [o.status for o in outcomes] == [OutcomeStatus.FAILED]
    assert outcomes[0].attempts == 5
    # Seen climbing while the chunk was still being retried, not only at its end.
    assert any(0 < requests < 5 and limited == requests for requests, limited, _ in seen)
    final = stream.stats()
    assert (final.requests, final.rate_limited, final.retries) == (5, 5, 4)
