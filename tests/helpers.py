"""Helpers the test modules share: credentials, numbers, fast retry policies, a client factory.

Imported by bare name (``from helpers import client_for``), as ``stack_support`` is:
pytest puts ``tests/`` on ``sys.path`` for its rootdir conftest, and the subprocess
script ``_campaign_script.py`` lives beside this file. One copy here, so a change to the
emulator's credentials or to what "fast" means for a test is one edit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from aisix_async import AisixClient, RetryPolicy, SendOutcome

# The emulator's default account and key, and the gateway URL the mocked-transport tests
# match requests against.
ACCOUNT = "1001@100001"
KEY = "87B01469201D6557C2685137EB3B5DEC"
OPEN = "http://api.aisix.com/OpenPlatform/OpenApi"

#: Retries that back off for milliseconds: a test against the emulator still goes through
#: the retry path without waiting as long as the library's defaults would.
FAST = RetryPolicy(attempts=3, timeout=10, initial_backoff=0.001, max_backoff=0.005)
#: Retries with no backoff at all, for the mocked transport where nothing runs between tries.
NO_BACKOFF = RetryPolicy(attempts=2, timeout=5, initial_backoff=0, max_backoff=0)


def numbers(n: int, start: int = 0, *, prefix: str = "139") -> list[str]:
    """``n`` distinct valid mobiles from ``start``: 11 digits, ``prefix`` then 8."""
    return [f"{prefix}{i:08d}" for i in range(start, start + n)]


def numbers_csv(n: int, start: int = 0, *, prefix: str = "139") -> str:
    """The same numbers as one ``m=`` field, comma-separated, as the gateway takes them."""
    return ",".join(numbers(n, start, prefix=prefix))


def client_for(emulator: Any, **options: Any) -> AisixClient:
    """A client for the emulator, retrying with :data:`FAST` unless ``retry`` is given.

    ``retry=None`` asks for the library's default policy (the abandon and pricing tests
    want the real backoffs, not the fast ones).
    """
    options.setdefault("retry", FAST)
    options.setdefault("base_url", emulator.base_url)
    return AisixClient(emulator.account, emulator.authkey, **options)


def reset_when_quiet(server: Any, timeout: float = 30.0) -> None:
    """Resets a shared emulator once no request is held in its latency fault.

    A held request was read whole before its delay began, so it is acted on when the
    delay ends whether or not its client is still there: a test that cancels a send
    under latency leaves such requests behind. Reset before they land and they are
    charged and recorded in the next test's ledger (10 messages too many, once).
    """
    deadline = time.monotonic() + timeout
    while server.state.requests_held:
        if time.monotonic() >= deadline:
            raise AssertionError(f"the emulator still holds a request after {timeout:g} s")
        time.sleep(0.005)
    server.state.reset()


async def collect(stream: Any) -> list[SendOutcome]:
    """Every outcome of a send stream (bulk or campaign), read to its end inside its block."""
    async with stream as outcomes:
        return [outcome async for outcome in outcomes]


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> None:
    """Polls ``condition`` from a synchronous test (a CLI subprocess runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


async def eventually(
    condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.02
) -> None:
    """Polls ``condition`` from an async test; TimeoutError after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(interval)


class VirtualClock:
    """A clock and a sleep for code that takes them injected (``Scheduler(clock=, sleep=)``).

    ``sleep`` moves the clock by exactly what was asked and records it, so a test of
    backoffs and time limits runs in no real time and its sums are exact. It still
    yields once, as a real sleep does, so cancellation and other tasks get their turn.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await checkpoint()


_HOLDER = """
import sys, anyio
from aisix_async import AisixClient

async def main():
    client = AisixClient("1001@100001", "87B01469201D6557C2685137EB3B5DEC")
    async with client.campaign(sys.argv[1]):
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

anyio.run(main)
"""


@contextmanager
def journal_held_elsewhere(path: Path) -> Iterator[int]:
    """Another process holds the campaign journal at ``path`` (its lock) inside the block.

    Yields that process's pid; on leaving, the process lets go of the journal and exits.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
