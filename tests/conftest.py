"""Shared fixtures: both async backends, and one emulator on 127.0.0.1 for the session.

Async tests are marked ``anyio`` and run once on asyncio and once on trio. pytest-asyncio
is installed in strict mode, so it leaves them to anyio's plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
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
    """The session's emulator (uvicorn, real HTTP on 127.0.0.1), reset for this test."""
    _emulator_server.state.reset()
    yield _emulator_server
    _emulator_server.state.reset()


@pytest.fixture
def gateway_mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A respx-like router standing in for the network, on the stack under test."""
    with mocked_gateway(monkeypatch) as router:
        yield router
