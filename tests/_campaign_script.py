"""A campaign run as a separate process, for the crash test to ``kill -9`` at random moments.

Usage: ``python tests/_campaign_script.py BASE_URL JOURNAL COUNT CHUNK_SIZE``. It prints
``open`` once the journal is open (the test's cue to start its kill timer) and, if it
lives to the end, ``done`` followed by the summary as JSON.
"""

from __future__ import annotations

import json
import sys

import anyio

# Run as a script: its own folder (tests/) is first on sys.path, so helpers imports.
from helpers import ACCOUNT, KEY, numbers

from aisix_async import AisixClient, RetryPolicy


async def main(base_url: str, journal: str, count: int, chunk_size: int) -> None:
    retry = RetryPolicy(attempts=50, timeout=60, initial_backoff=0.005, max_backoff=0.05)
    async with (
        AisixClient(ACCOUNT, KEY, base_url=base_url, retry=retry, max_concurrency=8) as client,
        client.campaign(journal) as campaign,
    ):
        print("open", flush=True)
        stream = campaign.send_many(numbers(count), "Spring sale", chunk_size=chunk_size)
        async with stream:
            async for _ in stream:
                pass
        summary = campaign.summary()
    report = {
        "accepted": summary.accepted,
        "failed": summary.failed,
        "unknown": summary.unknown,
        "not_yet_sent": summary.not_yet_sent,
        "complete": summary.complete,
        "unknown_recipients": [m for _, m in summary.unknown_recipients],
    }
    print("done " + json.dumps(report), flush=True)


if __name__ == "__main__":
    url, path, n, size = sys.argv[1:5]
    anyio.run(main, url, path, int(n), int(size))
