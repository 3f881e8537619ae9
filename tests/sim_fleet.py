"""Clients sharing one limit through a real Redis, against tests/sim_gateway.py's token
bucket, on virtual time: a fleet's cold start in a few seconds, deterministic enough to
count its -1 answers.

The schedule's scripts take the time from the test (the loop's virtual clock), while
their answers come over a real socket: while a command is on its way, the loop waits for
its answer in real time before it moves its clock to the next timer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
from redis.asyncio import Redis
from sim_gateway import Gateway, run_virtual

from aisix_async import AisixError, RetryPolicy
from aisix_async._mechanics.scheduler import Scheduler
from aisix_async._mechanics.shared_limit import SharedLimit

__all__ = ["simulate_fleet"]


def simulate_fleet(
    redis_url: str,
    gateway: Gateway,
    clients: int,
    seconds: float,
    account: str,
    tasks: int = 8,
    starts: Sequence[float] | None = None,
    errors: list[tuple[float, int, AisixError]] | None = None,
) -> list[SharedLimit]:
    """``clients`` schedulers, each with ``tasks`` tasks sending one request after another
    for ``seconds``, all taking their turns from one schedule in Redis; ``starts``: when
    each begins (runs one after another), else all at once. ``errors``: given, a call's
    error is recorded there (when, which client, what) and its task goes on 0.1 s later;
    else it ends the simulation."""
    limits: list[SharedLimit] = []

    async def main() -> None:
        async def client(index: int) -> None:
            # Processes do not start in the same instant.
            start = starts[index] if starts is not None else 0.03 * index
            await anyio.sleep(start)
            stop = start + seconds if starts is not None else seconds
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
                while anyio.current_time() < stop:
                    try:
                        await scheduler.run(send, action="sendOnce", unsafe=True)
                    except AisixError as error:
                        if errors is None:
                            raise
                        errors.append((anyio.current_time(), index, error))
                        await anyio.sleep(0.1)

            async with anyio.create_task_group() as group:
                for _ in range(tasks):
                    group.start_soon(worker)
            await shared.aclose()

        async with anyio.create_task_group() as group:
            for index in range(clients):
                group.start_soon(client, index)

    # The virtual clock waits for every Redis answer, however slow the machine: with a
    # fixed few ms of patience, a loaded CI host let the clock run past answers, and the
    # fleet's turns came late (goodput 0.83 of the limit in one run).
    with _commands_counted() as pending:
        run_virtual(main, "asyncio", awaited=lambda: pending[0] > 0)
    return limits


@contextlib.contextmanager
def _commands_counted() -> Iterator[list[int]]:
    """Count the Redis commands on their way (every one goes through execute_command)."""
    pending = [0]
    original = Redis.execute_command

    async def counted(self: Redis, *args: Any, **options: Any) -> Any:
        pending[0] += 1
        try:
            return await original(self, *args, **options)
        finally:
            pending[0] -= 1

    Redis.execute_command = counted  # type: ignore[method-assign]
    try:
        yield pending
    finally:
        Redis.execute_command = original  # type: ignore[method-assign]
