"""How fast is the gateway emulator, and how close to bare uvicorn?

The emulator is the rate-limited target of the SDK's benchmarks, so it must never be the
bottleneck: it has to answer at least 1000 sendOnce requests (10 numbers each) per second
on loopback. This script starts it as a subprocess (`python -m aisix_async.emulator
--port 0`, its own process as in real use), drives it at a fixed concurrency for a fixed
number of requests, once with plain httpx (one AsyncClient per worker) and once with a
minimal keep-alive client on asyncio streams, then does the same against a trivial ASGI
app that answers a constant XML under the same uvicorn settings. The ratio of the two
says how much the gateway logic costs on top of the HTTP stack. On a small machine httpx
itself is the bottleneck, so the raw client's figure is the one held to 1000 requests/s.

    python benchmarks/bench_emulator.py [--requests 5000] [--concurrency 32]

It prints markdown table rows (and appends them to --append FILE if given); it exits 1
if any answer is not result 1 or the emulator takes fewer than 1000 requests/s. Every request
goes to 127.0.0.1 only, the loops are bounded by count and by a deadline, and both server
processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 25.0  # per run: the whole script stays well under a minute
NUMBERS = ",".join(f"1380013{i:04d}" for i in range(10))
CONSTANT_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<xml name="sendOnce" result="1">'
    b'<Item cid="100001" sid="1001" msgid="359677163771000433" total="10" price="0.10"'
    b' remain="999.000"/></xml>'
)


async def _constant_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """The baseline: read the body, answer a constant XML, nothing else."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [
        (b"content-type", b"text/xml; charset=utf-8"),
        (b"content-length", b"%d" % len(CONSTANT_XML)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": CONSTANT_XML})


def serve_baseline() -> int:
    """Subprocess mode: the trivial app under the emulator's uvicorn settings."""
    import socket

    import uvicorn

    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (see emulator._server).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _constant_app,
        http="httptools",
        loop="asyncio",
        log_level="warning",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    print(f"base_url=http://127.0.0.1:{port}/OpenPlatform", flush=True)
    # uvicorn re-raises the SIGINT it handled once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def start(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server subprocess and read its `base_url=` line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("base_url="):
            base_url = line.strip().partition("=")[2]
            if not base_url.startswith("http://127.0.0.1:"):
                stop(proc)
                raise SystemExit(f"refusing a non-loopback target: {base_url}")
            return proc, base_url
    stop(proc)
    raise SystemExit(f"{command} printed no base_url")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT (a clean stop for the emulator), then kill if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _form() -> dict[str, str]:
    return {
        "action": "sendOnce",
        "ac": "1001@100001",
        "authkey": "87B01469201D6557C2685137EB3B5DEC",
        "m": NUMBERS,
        "c": "Your verification code is 123456, valid for 5 minutes.",
    }


def _result(text: str) -> str:
    marker = text.find('result="') + 8
    return text[marker : text.find('"', marker)]


async def drive_httpx(base_url: str, total: int, concurrency: int) -> tuple[float, Counter[str]]:
    """`total` sendOnce requests with plain httpx from `concurrency` workers.

    One AsyncClient per worker: a single client's pool shared by 32 concurrent requests
    measures httpcore's pool bookkeeping (about 200 requests/s on a 2-core machine), not
    the server.
    """
    url, form = base_url + "/OpenApi", _form()
    results: Counter[str] = Counter()
    clients = [httpx.AsyncClient(timeout=10.0) for _ in range(concurrency)]
    try:
        for client in clients:  # warm-up: one connection each
            await client.post(url, data=form)
        remaining = total
        deadline = time.monotonic() + DEADLINE_S

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                results[_result((await client.post(url, data=form)).text)] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return sum(results.values()) / elapsed, results


async def drive_raw(base_url: str, total: int, concurrency: int) -> tuple[float, Counter[str]]:
    """The same load from a minimal keep-alive HTTP/1.1 client on asyncio streams.

    httpx spends more CPU per request than the emulator does, so on a small machine it
    measures itself; this client is cheap enough to show what the server can take.
    """
    parts = urlsplit(base_url + "/OpenApi")
    assert parts.hostname == "127.0.0.1"
    assert parts.port is not None
    body = urlencode(_form()).encode()
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: Counter[str] = Counter()
    remaining = total
    deadline = time.monotonic() + DEADLINE_S

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"content-length:") + 15
                answer = await reader.readexactly(int(head[at : head.find(b"\r\n", at)]))
                results[_result(answer.decode())] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(results.values()) / (time.perf_counter() - started), results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--append", type=Path, help="append the markdown row to this file")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        return serve_baseline()

    python = sys.executable
    emulator_cmd = [python, "-m", "aisix_async.emulator", "--port", "0"]
    emulator_cmd += ["--balance", "100000000", "--no-reports"]
    figures: dict[tuple[str, str], float] = {}
    failures: list[str] = []
    for target, command in (
        ("emulator", emulator_cmd),
        ("bare", [python, __file__, "--serve-baseline"]),
    ):
        proc, base_url = start(command)
        try:
            for client, drive in (("httpx", drive_httpx), ("raw", drive_raw)):
                rps, results = asyncio.run(drive(base_url, args.requests, args.concurrency))
                figures[target, client] = rps
                if set(results) != {"1"}:
                    failures.append(f"{target}/{client}: {dict(results)}")
        finally:
            stop(proc)

    rows = []
    for client in ("httpx", "raw"):
        emu, bare = figures["emulator", client], figures["bare", client]
        rows.append(
            f"| sendOnce x10, {client} client | {args.requests} | {args.concurrency} "
            f"| {emu:,.0f} | {bare:,.0f} | {emu / bare:.2f} |"
        )
    print("| load | requests | concurrency | emulator req/s | bare uvicorn req/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    if args.append:
        with args.append.open("a", encoding="utf-8") as file:
            file.write("\n".join(rows) + "\n")
    if failures:
        print("unexpected results: " + "; ".join(failures), file=sys.stderr)
        return 1
    if figures["emulator", "raw"] < 1000:
        print("the emulator answered fewer than 1000 requests/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
