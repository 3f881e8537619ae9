"""Several `aisix send` processes on one account share its pace through one real Redis."""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Any

import redis
from cli_support import ROOT, Cli, summary_of, write_lines
from helpers import numbers
from redis_support import RedisServer

from aisix_async._mechanics.shared_limit import schedule_key


def test_three_processes_share_one_schedule(
    cli: Cli, emulator: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator.state.configure(rate=20.0, burst=5.0)
    batches = [numbers(40, start=1000 * i) for i in range(3)]
    processes = []
    for i, batch in enumerate(batches):
        path = write_lines(tmp_path / f"numbers{i}.txt", batch)
        args = ["send", path, "--content", "Spring sale", "--json", "--chunk-size", "4"]
        env = dict(cli.env)
        if i == 0:
            # The environment variable does what the option does.
            env["AISIX_SHARED_LIMIT"] = redis_server.url
        else:
            args += ["--shared-limit", redis_server.url]
        processes.append(
            subprocess.Popen(
                cli.command(*args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        summary = summary_of(out)
        # The summary says what the fleet's schedule was at this process's last turn.
        shared = summary["shared_limit"]
        assert shared["up"] is True and shared["fallbacks"] == 0
        assert 0 < shared["pace"] <= 40 and 1 <= shared["clients"] <= 3
    ledger = collections.Counter(m.mobile for m in emulator.state.messages())
    assert sorted(ledger) == sorted(n for batch in batches for n in batch)
    assert set(ledger.values()) == {1}
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as conn:
        prefix = schedule_key(emulator.account, emulator.base_url.rstrip("/") + "/OpenApi")
        # All three took their turns from the one schedule of this account and gateway,
        # and each left it as it closed (a run after them counts none of them).
        assert conn.zcard(f"{prefix}:clients") == 0
        # Every request's turn (30 chunks, plus each process's balance check and retries).
        assert int(conn.hget(f"{prefix}:schedule", "turns") or 0) >= 33


def test_the_table_summary_says_what_the_fleet_did(
    cli: Cli, emulator: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator.state.configure(rate=20.0, burst=5.0)
    path = write_lines(tmp_path / "numbers.txt", numbers(12))
    result = cli.run(
        "send", path, "--content", "Spring sale", "--chunk-size", "4",
        "--shared-limit", redis_server.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "shared limit (Redis)" in line)
    assert "fleet pace" in row and "1 client(s)" in row and "Redis failed" not in row


def test_the_summary_says_when_redis_failed_the_client(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Nothing listens on port 1: the client paces itself, sends everything, and says so.
    path = write_lines(tmp_path / "numbers.txt", numbers(8))
    result = cli.run(
        "send", path, "--content", "Spring sale", "--chunk-size", "4", "--json",
        "--shared-limit", "redis://127.0.0.1:1/0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = summary_of(result.stdout)
    assert summary["accepted"] == 8
    assert summary["shared_limit"]["up"] is False
    assert summary["shared_limit"]["fallbacks"] >= 1


def test_a_redis_that_refuses_the_password_stops_the_send_before_it_starts(
    cli: Cli, emulator: Any, guarded_redis: RedisServer, tmp_path: Path
) -> None:
    # It used to send unshared and exit 0 under an "aisix: error:" line: a fleet of such
    # processes each pacing alone meets the limit N times over.
    path = write_lines(tmp_path / "numbers.txt", numbers(8))
    result = cli.run(
        "send", path, "--content", "Spring sale",
        "--shared-limit", guarded_redis.url.replace("//", "//:wr0ng@"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "refused the user name or password" in result.stderr
    assert "nothing was sent" in result.stderr and "wr0ng" not in result.stderr
    assert emulator.state.messages() == []


def test_a_redis_password_on_the_command_line_gets_one_warning_never_shown(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # The authkey is kept off the command line (shell history, ps); a Redis password in
    # --shared-limit went by silently. Nothing listens on port 1: the send paces alone.
    path = write_lines(tmp_path / "numbers.txt", numbers(2))
    secret = "s3cretpw"
    for url in (
        f"redis://:{secret}@127.0.0.1:1/0",
        f"redis://fleet:{secret}@127.0.0.1:1/0",
        f"redis://127.0.0.1:1/0?password={secret}",
    ):
        result = cli.run("send", path, "--content", "hi", "--shared-limit", url)
        assert result.returncode == 0, result.stderr
        warned = [line for line in result.stderr.splitlines() if "Redis password" in line]
        assert len(warned) == 1, result.stderr
        assert warned[0].startswith("aisix: warning: --shared-limit")
        assert "AISIX_SHARED_LIMIT" in warned[0]
        assert secret not in result.stdout + result.stderr
    # None for a URL without one, nor for the same URL in the environment.
    quiet = [
        cli.run("send", path, "--content", "hi", "--shared-limit", "redis://127.0.0.1:1/0"),
        cli.run(
            "send", path, "--content", "hi",
            env={**cli.env, "AISIX_SHARED_LIMIT": f"redis://:{secret}@127.0.0.1:1/0"},
        ),
    ]  # fmt: skip
    for result in quiet:
        assert result.returncode == 0, result.stderr
        assert "Redis password" not in result.stderr
        assert secret not in result.stdout + result.stderr


def test_a_mistyped_redis_url_is_refused_without_its_password(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A scheme one slash short is read as a path: the refusal quoted the URL whole,
    # password and all, from the option and from the environment alike, and the warning
    # for a password on the command line did not fire (an operator's trial).
    path = write_lines(tmp_path / "numbers.txt", numbers(2))
    secret = "s3cretpw"
    for url in (f"redis:/:{secret}@127.0.0.1:1/0", f"redis//:{secret}@127.0.0.1:1/0"):
        flag = cli.run("send", path, "--content", "hi", "--shared-limit", url)
        env = cli.run("send", path, "--content", "hi", env={**cli.env, "AISIX_SHARED_LIMIT": url})
        for result in (flag, env):
            assert result.returncode == 2, result.stderr
            assert "shared_limit" in result.stderr
            assert secret not in result.stdout + result.stderr
        assert "Redis password" in flag.stderr
    assert emulator.state.message_count == 0
