"""Four ``aisix send`` workers sharing one limit through Redis, which restarts empty mid-run.

An operator's set-up (issue 17's trial): one campaign split into 4 files of 10,000
numbers, one ``aisix send --chunk-size 40 --shared-limit redis://...`` per file, all at
once, against an account limited to R = 10 requests/s (burst 5, 100 ms answers). Each
worker is a bulk send: a window of callers queued at its pace. A first run without a
fault fills the CLI's rate cache, as an operator's earlier run would; then the measured
run, in which Redis is killed at 30 s and started again, empty, at 40 s.

Per second, the requests the gateway accepted (the emulator's count of accepted numbers
over the chunk size); the means before, during and after the outage, and the run's wall
time against the run without a fault. Nothing may be lost or sent twice: every number is
accepted exactly once (the emulator's ledger), and every worker exits 0.

    python benchmarks/bench_fleet_restart.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Emulator, emulator, redis_server, table
from redis_support import RedisServer

WORKERS = 4
NUMBERS = 10_000  # per worker
CHUNK = 40
RATE = 10.0
KILL_AT, BACK_AT = 30.0, 40.0


def _run(
    emu: Emulator, server: RedisServer, folder: Path, tag: str, fault: bool
) -> tuple[list[float], float, list[int]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AISIX_BASE_URL": emu.base_url,
        "AISIX_ACCOUNT": emu.account,
        "AISIX_AUTHKEY": emu.authkey,
        "XDG_CACHE_HOME": str(folder / "cache"),
        "XDG_STATE_HOME": str(folder / "state"),
    }
    processes = []
    for worker in range(WORKERS):
        path = folder / f"{tag}{worker}.txt"
        path.write_text("\n".join(f"139{tag}{worker}{k:06d}" for k in range(NUMBERS)))
        command = [
            sys.executable, "-m", "aisix_async.cli", "send", str(path), "--content", "Sale",
            "--chunk-size", str(CHUNK), "--shared-limit", server.url,
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    began = time.monotonic()
    last = emu.state()["accepted_messages"]
    per_second: list[float] = []
    killed = back = False
    while any(p.poll() is None for p in processes):
        time.sleep(1.0)
        now = time.monotonic() - began
        if fault and not killed and now >= KILL_AT:
            server.kill()
            killed = True
        if fault and killed and not back and now >= BACK_AT:
            server.start()
            back = True
        accepted = emu.state()["accepted_messages"]
        per_second.append((accepted - last) / CHUNK)
        last = accepted
    return per_second, time.monotonic() - began, [p.wait() for p in processes]


def main() -> None:
    args = ("--rate", str(RATE), "--burst", "5", "--latency-ms", "100", "--balance", "1e7")
    with redis_server("Fleet restart") as server:
        if server is None:
            return
        with emulator(*args) as emu, tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _, clean_s, clean_codes = _run(emu, server, folder, "5", fault=False)
            emu.reset()
            per_second, took, codes = _run(emu, server, folder, "7", fault=True)
            state = emu.state()

    def mean(a: float, b: float) -> float:
        window = per_second[int(a) : int(b)]
        return sum(window) / max(1, len(window)) / RATE

    sent = WORKERS * NUMBERS
    whole = state["accepted_messages"]
    phases = [
        ("before (Redis up)", 2.0, KILL_AT),
        ("Redis killed", KILL_AT, BACK_AT),
        ("back, first 10 s", BACK_AT, BACK_AT + 10),
        ("back, next 20 s", BACK_AT + 10, BACK_AT + 30),
        ("back, next 30 s", BACK_AT + 30, BACK_AT + 60),
    ]
    rows = [[name, f"{a:g}-{b:g}", f"{mean(a, b):.3f}"] for name, a, b in phases]
    refused = int(state["results"].get("-1", 0))
    requests = sum(state["requests"].values())
    print(
        "\n".join(
            [
                "## Four `aisix send` workers, Redis restarted empty mid-run",
                "",
                f"Emulator: R = {RATE:g} requests/s, burst 5, 100 ms answers. {WORKERS} "
                f"workers, {NUMBERS:,} numbers each in chunks of {CHUNK}, `--shared-limit`; "
                f"Redis killed at {KILL_AT:g} s and started again, empty, at {BACK_AT:g} s "
                "(after a run without a fault that filled the rate cache). Accepted "
                "requests/s of all workers against R:",
                "",
                table(["phase", "seconds", "goodput / R"], rows),
                "",
                f"Wall time {took:.1f} s against {clean_s:.1f} s without the fault "
                f"(**{took / clean_s:.2f}x**); numbers accepted {whole:,} of {sent:,}; "
                f"-1 share {refused / max(1, requests):.3f} ({refused} of {requests}); "
                f"exit codes {codes} (without the fault {clean_codes}). Per second: "
                f"{[round(x) for x in per_second]}.",
                "",
                "Before the change that tells the schedule how long a rejoining client's "
                "own queue lasts and keeps the ceiling through a rejoin's -1 answers, "
                "this script on commit 98f661f (2026-12-04 03:44 UTC): goodput / R 1.018 "
                "/ 0.970 before and during the outage, then 0.880, 0.470 and 0.480 in the "
                "three phases after it; wall time 141.3 s against 103.4 s (1.37x).",
                "",
            ]
        )
    )


if __name__ == "__main__":
    main()
