"""The CLI's rate cache: a run that measured the limit leaves its pace for the next run.

A rate is measured at the second cut or so (the first -1 of a cold start only ends slow
start): at 20 requests/s and a burst of 2, after 12-45 requests on the simulated gateway.
The sends that must leave a file send 100.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, summary_of, write_lines
from helpers import numbers

from aisix_async import RateState


def _cache_files(cli: Cli) -> list[Path]:
    return sorted((Path(cli.env["XDG_CACHE_HOME"]) / "aisix" / "rate").glob("*.json"))


def _send(cli: Cli, path: str, *extra: str) -> Any:
    result = cli.run(
        "send", path, "--content", "Spring sale", "--chunk-size", "1", "--json", "-v", *extra
    )
    assert result.returncode == 0, result.stderr
    return result


def _learned(cli: Cli, emulator: Any, tmp_path: Path) -> Path:
    """The cache file a send that met the limit (20 requests/s, burst 2) left: the one."""
    emulator.state.configure(rate=20.0, burst=2.0)
    _send(cli, write_lines(tmp_path / "a.txt", numbers(100)))
    (cached,) = _cache_files(cli)
    return cached


def _holding(cli: Cli, emulator: Any, tmp_path: Path, state: RateState) -> Path:
    """The cache file, made by a run that met the limit, then holding ``state`` instead."""
    cached = _learned(cli, emulator, tmp_path)
    cached.write_text(json.dumps(state.as_dict()))
    return cached


def _note(result: Any) -> str:
    """The one line of a run's stderr that speaks of the rate cache."""
    [line] = [line for line in result.stderr.splitlines() if "rate cache" in line]
    return str(line)


def test_a_run_that_met_the_limit_leaves_its_pace_and_the_next_starts_from_it(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    emulator.state.configure(rate=20.0, burst=2.0)
    first = _send(cli, write_lines(tmp_path / "a.txt", numbers(100)))
    assert summary_of(first.stdout)["accepted"] == 100
    (cached,) = _cache_files(cli)
    # Owner-only; named by a hash; holding the state and nothing else (no key, no account).
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700
    text = cached.read_text()
    for secret in (emulator.authkey, emulator.account):
        assert secret not in text and secret not in cached.name
    state = RateState.from_dict(json.loads(text))
    assert state.pace is not None and 10 <= state.pace <= 30
    assert "starting from a rate state" not in first.stderr

    second = _send(cli, write_lines(tmp_path / "b.txt", numbers(30, start=100)))
    assert summary_of(second.stdout)["accepted"] == 30
    assert "starting from a rate state" in second.stderr


def test_a_run_that_starts_from_the_cache_says_so(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    # Without -v: a pace cached low (runs that shared the account, a plan raised since)
    # held a user's run at 5 requests/s for most of its 28 s, and nothing on the screen
    # said why (a user's trial).
    _learned(cli, emulator, tmp_path)
    result = cli.run(
        "send", write_lines(tmp_path / "b.txt", numbers(5, start=100)), "--content", "Hi"
    )
    assert result.returncode == 0, result.stderr
    line = _note(result)
    assert line.startswith("starting at ") and "--no-rate-cache starts cold" in line
    assert re.search(r"measured \d+ s ago", line), line
    quiet = cli.run(
        "send", write_lines(tmp_path / "c.txt", numbers(5, start=200)), "--content", "Hi",
        "--no-rate-cache",
    )  # fmt: skip
    assert quiet.returncode == 0 and "rate cache" not in quiet.stderr


def test_the_cache_note_writes_rates_and_ages_as_a_person_reads_them(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # "the rate cache holds 1e+03, measured 1 min ago" for a state 33 s old (a user's
    # trial).
    _holding(
        cli, emulator, tmp_path, RateState(pace=1000.0, concurrency=4, learned_at=time.time() - 20)
    )
    emulator.state.configure(rate=None)
    result = cli.run(
        "send", write_lines(tmp_path / "b.txt", numbers(5, start=100)), "--content", "Hi"
    )
    assert result.returncode == 0, result.stderr
    line = _note(result)
    assert "the rate cache holds 1,000, measured 2" in line, line
    assert "e+" not in line and re.search(r"measured 2\d s ago", line), line


def test_the_same_gateway_typed_another_way_starts_from_the_same_state(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A trailing slash or an upper-case scheme is the same gateway: it started cold.
    cached = _learned(cli, emulator, tmp_path)
    typed = "HTTP" + emulator.base_url.removeprefix("http") + "/"
    again = _send(cli, write_lines(tmp_path / "b.txt", numbers(30, start=100)), "--base-url", typed)
    assert summary_of(again.stdout)["accepted"] == 30
    assert "starting from a rate state" in again.stderr
    assert _cache_files(cli) == [cached]


def test_no_rate_cache_neither_reads_nor_writes_it(cli: Cli, emulator: Any, tmp_path: Path) -> None:
    emulator.state.configure(rate=20.0, burst=2.0)
    path = write_lines(tmp_path / "a.txt", numbers(40))
    result = _send(cli, path, "--no-rate-cache")
    assert summary_of(result.stdout)["accepted"] == 40
    assert _cache_files(cli) == []
    _send(cli, write_lines(tmp_path / "b.txt", numbers(100, start=100)))
    assert len(_cache_files(cli)) == 1
    third = _send(cli, write_lines(tmp_path / "c.txt", numbers(5, start=200)), "--no-rate-cache")
    assert "starting from a rate state" not in third.stderr


@pytest.mark.parametrize(
    "content",
    # Not UTF-8 (a user's trial): it raised UnicodeDecodeError out of every command.
    [b"{not json", b"\xff\xfe garbage"],
)
def test_a_malformed_cache_file_is_ignored(
    cli: Cli, emulator: Any, tmp_path: Path, content: bytes
) -> None:
    cached = _learned(cli, emulator, tmp_path)
    cached.write_bytes(content)
    result = _send(cli, write_lines(tmp_path / "b.txt", numbers(100, start=200)))
    assert "malformed" in result.stderr
    # ... and replaced by what this run learned.
    assert RateState.from_dict(json.loads(cached.read_text())).pace is not None


def test_a_run_that_never_met_the_limit_leaves_the_file_as_it_was(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # Accepted answers say the limit is at least the pace, not what it is: a run that met
    # no -1 leaves the state and its date alone, so an old pace keeps ageing. (Every run
    # used to renew the date: a pace remembered too low was kept for good.)
    remembered = RateState(pace=5.0, concurrency=1, learned_at=time.time() - 600)
    cached = _holding(cli, emulator, tmp_path, remembered)
    before = cached.read_text()
    emulator.state.configure(rate=500.0, burst=5.0)
    result = _send(cli, write_lines(tmp_path / "b.txt", numbers(8, start=100)))
    assert "starting from a rate state" in result.stderr
    assert summary_of(result.stdout)["accepted"] == 8
    assert cached.read_text() == before


def test_a_cache_path_that_is_not_a_regular_file_is_not_read(
    cli: Cli, emulator: Any, tmp_path: Path
) -> None:
    # A FIFO there blocked the run for good, reading it.
    cached = _learned(cli, emulator, tmp_path)
    cached.unlink()
    os.mkfifo(cached)
    result = _send(cli, write_lines(tmp_path / "b.txt", numbers(10, start=200)))
    assert "not a regular file" in result.stderr
