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
"""

from __future__ import annotations

import inspect

try:
    import uvicorn  # noqa: F401  (checked here so a missing extra says what to install)
except ImportError as _missing:  # pragma: no cover - the test installs have the extra
    raise ImportError(
        "aisix_async.emulator needs the emulator extra: pip install '.[emulator]' in the clone",
        name="uvicorn",
    ) from _missing

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
    FaultConfig,
    ManualClock,
    SignConfig,
)
from ._faults import DeliberateDrop
from ._records import Counters, MessageRecord
from ._server import EmulatorServer, serve_emulator
from ._state import GatewayState

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

# Tracebacks and reprs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or inspect.isfunction(_obj):
        _obj.__module__ = __name__
del _name, _obj
