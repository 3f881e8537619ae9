"""A faithful emulator of the Aisix HTTP SMS gateway, as a raw ASGI application.

It is the real server of the integration tests, the engine of `aisix demo` and the
rate-limited target of the benchmarks. It shares no code with the rest of aisix_async on
purpose: it is a second, independent reading of the protocol, so it can judge the client
(its ledger of accepted messages is the ground truth a client's outcomes are checked
against).

    with EmulatorServer() as emu:                       # sync (pytest session fixtures)
        httpx.post(emu.open_url, data={"action": "getBalance", "ac": emu.account,
                                       "authkey": emu.authkey})

    async with serve_emulator(rate=50.0) as emu:        # asyncio or trio
        ...
        emu.state.messages()                            # ground truth

    app = create_app()                                  # in-process, httpx.ASGITransport

Command line: `python -m aisix_async.emulator --port 0` (see `__main__`); control over
HTTP: the `/_emulator/` endpoints (see `_control`).

Only the server (`EmulatorServer`, `serve_emulator`) needs uvicorn, the emulator extra:
the bare ASGI app and the state import without it (an app under test through
httpx.ASGITransport, or under another ASGI server).
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from ._app import ENDPOINTS, EmulatorApp, create_app
from ._billing import message_units, units_for_length
from ._config import (
    DEFAULT_ACCOUNT,
    DEFAULT_AUTHKEY,
    DEFAULT_REPORT_MIX,
    FAULT_NAMES,
    GATEWAY_TZ,
    AccountConfig,
    ChannelGroupConfig,
    EmulatorConfig,
    EmulatorOverrides,
    FaultConfig,
    ManualClock,
    SignConfig,
)
from ._faults import DeliberateDrop
from ._records import Counters, MessageRecord
from ._state import GatewayState

if TYPE_CHECKING:
    from ._server import EmulatorServer, serve_emulator

_NEEDS_UVICORN = {"EmulatorServer", "serve_emulator"}

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_AUTHKEY",
    "DEFAULT_REPORT_MIX",
    "ENDPOINTS",
    "FAULT_NAMES",
    "GATEWAY_TZ",
    "AccountConfig",
    "ChannelGroupConfig",
    "Counters",
    "DeliberateDrop",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorOverrides",
    "EmulatorServer",
    "FaultConfig",
    "GatewayState",
    "ManualClock",
    "MessageRecord",
    "SignConfig",
    "create_app",
    "message_units",
    "serve_emulator",
    "units_for_length",
]


def _public(obj: Any) -> Any:
    # Tracebacks and reprs show the public path, not the private module.
    if isinstance(obj, type) or inspect.isfunction(obj):
        obj.__module__ = __name__
    return obj


for _name in set(__all__) - _NEEDS_UVICORN:
    _public(globals()[_name])
del _name


def __getattr__(name: str) -> Any:
    """The server, imported on first use: only it needs uvicorn (the emulator extra)."""
    if name not in _NEEDS_UVICORN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        server = importlib.import_module(f"{__name__}._server")
    except ImportError as missing:
        if missing.name not in {"uvicorn", "httptools"}:
            raise
        raise ImportError(
            f"aisix_async.emulator.{name} needs the emulator extra: pip install "
            "'aisix-async[emulator]' from where aisix-async came (in a clone of the "
            "repository: pip install '.[emulator]')",
            name="uvicorn",
        ) from missing
    for public in _NEEDS_UVICORN:
        globals()[public] = _public(getattr(server, public))
    return globals()[name]
