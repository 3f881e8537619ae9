"""Clients sharing one limit through a real Redis, against tests/sim_gateway.py's token
bucket, on virtual time: a fleet's cold start in a few seconds, deterministic enough to
count its -1 answers.

The schedule's scripts take the time from the test (the loop's virtual clock), while
their answers come over a real socket: the loop waits a little real time for ready
sockets before it moves its clock to the next timer.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

import anyio
from sim_gateway import Gateway

from aisix_async import RetryPolicy
from aisix_async._mechanics.scheduler import Scheduler
from aisix_async._mechanics.shared_limit import SharedLimit

__all__ = ["simulate_fleet"]


class _PatientSelector(selectors.DefaultSelector):
    """As sim_gateway's, but a Redis answer on its way gets a few ms of real time."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0) or super().select(0.002)
        if not events and timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set")
        if not events and timeout:
            self._clock[0] += timeout
        return events


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual_now = [0.0]
        super().__init__(_PatientSelector(self._virtual_now))

    def time(self) -> float:
        return self._virtual_now[0]


def simulate_fleet(
    redis_url: str, gateway: Gateway, clients: int, seconds: float, account: str, tasks: int = 8
) -> list[SharedLimit]:
    """``clients`` schedulers, each with ``tasks`` tasks sending one request after another
    for ``seconds``, all taking their turns from one schedule in Redis."""
    limits: list[SharedLimit] = []

    async def main() -> None:
        async def client(index: int) -> None:
            # Processes do not start in the same instant.
            await anyio.sleep(0.03 * index)
            shared = SharedLimit(
                redis_url,
                account=account,
                gateway_url="http://127.0.0.1:1/OpenApi",
                # Virtual seconds: a Redis answer late in real time must not look slow.
                timeout=60.0,
                clock=anyio.current_time,
                sleep=anyio.sleep,
                monotonic=anyio.current_time,
            )
            limits.append(shared)
            scheduler = Scheduler(
                retry=RetryPolicy(attempts=100, timeout=10_000),
                clock=anyio.current_time,
                sleep=anyio.sleep,
                shared=shared,
            )
            send = gateway.attempt(index)

            async def worker() -> None:
                while anyio.current_time() < seconds:
                    await scheduler.run(send, action="sendOnce", unsafe=True)

            async with anyio.create_task_group() as group:
                for _ in range(tasks):
                    group.start_soon(worker)
            await shared.aclose()

        async with anyio.create_task_group() as group:
            for index in range(clients):
                group.start_soon(client, index)

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": _VirtualLoop})
    return limits
