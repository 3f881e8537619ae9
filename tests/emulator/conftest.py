"""Fixtures for the emulator tests: one real uvicorn server per session, reset per test.

Starting uvicorn costs little but stopping it costs a fifth of a second, so the session
shares one `EmulatorServer` and every test loads its own configuration into the live
state (`GatewayState.reset(config)`), with a `ManualClock` so report due times, scheduled
sends and token refills are reached without sleeping. Requests go over real loopback HTTP
with plain httpx (or httpx2, the stack under test), never through the SDK's client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from emulator_helpers import START, Gateway
from stack_support import hx

from aisix_async.emulator import EmulatorConfig, EmulatorServer, ManualClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Async tests run on both event loops the SDK supports."""
    return str(request.param)


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="session")
def http_client() -> Iterator[hx.Client]:
    # One client for the session: building one (its TLS context) costs more than a test.
    with hx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def make_gateway(
    emulator_server: EmulatorServer, http_client: hx.Client, clock: ManualClock
) -> Callable[..., Gateway]:
    """Load a fresh configuration (defaults + overrides, manual clock) into the server."""

    def make(**overrides: Any) -> Gateway:
        settings: dict[str, Any] = {"clock": clock, "monotonic": clock, "seed": 7}
        config = EmulatorConfig(**{**settings, **overrides})
        emulator_server.state.reset(config)
        return Gateway(emulator_server, http_client, clock)

    return make


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway]) -> Gateway:
    """The default gateway: account 1001@100001, balance 1000.000, no limits, no faults."""
    return make_gateway()
