"""Run the emulator under uvicorn on a background thread, from sync, asyncio or trio code.

Why a thread with its own event loop: uvicorn runs only on asyncio, a trio test cannot
host it on its own loop, and even an asyncio test is better off not sharing its loop with
the server it is testing (a client bug that blocks the loop would also stall the server
and hide the bug). The socket is bound here, on port 0 unless told otherwise, and handed
to uvicorn already listening, so the port is known before the server starts and no other
process can take it in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
import threading
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs
import uvicorn

from ._app import EmulatorApp, create_app
from ._config import EmulatorConfig, EmulatorOverrides, check_overrides
from ._control import CONTROL_PREFIX
from ._faults import quiet_deliberate_drops
from ._state import GatewayState

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:
    # Only annotations name it (strings here): 3.10 needs no typing_extensions to run.
    from typing_extensions import Unpack

__all__ = ["EmulatorServer", "bind_socket", "serve_emulator", "uvicorn_config"]


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and accepted sockets inherit proto 0 from a plain socket.socket().
    # With Nagle on, uvicorn's two writes (headers, body) wait for the client's delayed
    # ACK: 40 ms per answer, about 23 requests/s per connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now means connections made before uvicorn starts wait in the backlog.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: EmulatorApp) -> uvicorn.Config:
    """uvicorn settings for the emulator: fast parser, quiet logs, host logging untouched."""
    quiet_deliberate_drops()
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return uvicorn.Config(
        app,
        http=http,
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        # None: do not replace the logging set-up of the process hosting the server.
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=2,
    )


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling a threading.Event once it accepts connections."""

    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._started_event.set()


class EmulatorServer:
    """A running emulator on 127.0.0.1: `with EmulatorServer() as emu: ...`.

    Keyword arguments beyond host, port and state override fields of `config`
    (e.g. `EmulatorServer(rate=5.0)`; `EmulatorOverrides` names them all). The URLs and
    credentials a client needs are properties; `state` is the live `GatewayState` to
    steer and inspect.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        state: GatewayState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Unpack[EmulatorOverrides],
    ) -> None:
        check_overrides(overrides)
        if state is None:
            base = config if config is not None else EmulatorConfig()
            state = GatewayState(attrs.evolve(base, **overrides) if overrides else base)
        elif config is not None:
            raise ValueError("pass either config or state, not both")
        elif overrides:
            state.configure(**overrides)
        self.app = create_app(state=state)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: _Uvicorn | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> None:
        """Bind, start uvicorn on its thread, and return once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        sock = bind_socket(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        started = threading.Event()
        self._server = _Uvicorn(uvicorn_config(self.app), started)
        self._error = None
        self._thread = threading.Thread(
            target=self._run,
            args=(self._server, sock, started),
            name=f"aisix-emulator-{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not started.wait(timeout) or not self._server.started:
            error = self._error
            self.stop()
            raise RuntimeError("the emulator did not start") from error

    def _run(self, server: _Uvicorn, sock: socket.socket, started: threading.Event) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # uvicorn exits with SystemExit on startup failure
            self._error = exc
        finally:
            sock.close()
            started.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop uvicorn (open connections are closed) and join its thread."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._thread = None
        self._server = None

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else f"{self.host}, not started"
        return f"<EmulatorServer {where}>"

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- the handle

    @property
    def state(self) -> GatewayState:
        """The live gateway state (steer it from any thread)."""
        return self.app.state

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The document's base: `http://127.0.0.1:PORT/OpenPlatform`."""
        return f"{self.root_url}/OpenPlatform"

    @property
    def open_url(self) -> str:
        """The OpenApi endpoint (sends, balance, key, channel groups, signatures)."""
        return f"{self.base_url}/OpenApi"

    @property
    def data_url(self) -> str:
        """The DataApi endpoint under /OpenPlatform (reports and replies)."""
        return f"{self.base_url}/DataApi"

    @property
    def data_platform_url(self) -> str:
        """The same DataApi at /DataPlatform, as some deployments serve it."""
        return f"{self.root_url}/DataPlatform/DataApi"

    @property
    def control_url(self) -> str:
        """The JSON control endpoints: `http://127.0.0.1:PORT/_emulator`."""
        return f"{self.root_url}{CONTROL_PREFIX}"

    @property
    def account(self) -> str:
        """The first (default) account, `1001@100001` unless configured otherwise."""
        return self.state.default_ac

    @property
    def authkey(self) -> str:
        """The default account's current key (it changes after updateKey)."""
        return self.state.authkey(self.account)


@contextlib.asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    state: GatewayState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Unpack[EmulatorOverrides],
) -> AsyncIterator[EmulatorServer]:
    """Run an emulator for the duration of an `async with` (asyncio or trio).

    Starting and stopping block on the server thread, so they run in a worker thread;
    stopping is shielded from cancellation so the server never outlives the block.
    """
    server = EmulatorServer(config, state=state, host=host, port=port, **overrides)
    await anyio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)
