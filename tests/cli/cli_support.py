"""Driving ``aisix`` as a subprocess against the session's emulator (used by conftest).

The command line is what users run, so it is tested the way they run it: a separate
process (``python -m aisix_async.cli``), credentials in its environment, talking HTTP to
the emulator on 127.0.0.1, its exit code and output checked against the emulator's
ledger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Re-exported: test_cli_delivery (owned elsewhere just now) still imports numbers from here.
from helpers import numbers as numbers

import aisix_async

ROOT = str(Path(aisix_async.__file__).resolve().parent.parent)


class Cli:
    """Runs ``aisix`` in a subprocess with the emulator's credentials in its environment."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISIX_")}
        env.update(
            AISIX_ACCOUNT=emulator.account,
            AISIX_AUTHKEY=emulator.authkey,
            AISIX_BASE_URL=emulator.base_url,
            PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])),
            # Wide, so rich tables do not wrap the figures the tests look for.
            COLUMNS="200",
            PYTHONUNBUFFERED="1",
        )
        self.env = env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "aisix_async.cli", *args]

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        drop: Sequence[str] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        environ = dict(self.env if env is None else env)
        for name in drop:
            environ.pop(name, None)
        return subprocess.run(
            self.command(*args),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=environ,
            timeout=timeout,
            cwd=ROOT,
        )

    def run_bytes(
        self, *args: str, input: bytes, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Like :meth:`run`, with raw bytes on stdin (an encoding the CLI must refuse)."""
        done = subprocess.run(
            self.command(*args),
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            cwd=ROOT,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def run_with_closed_stdout(
        self, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run with stdout a pipe nobody reads: its reader closed before the first line.

        What ``| head`` does after a line, without the race of a reader that may or may
        not have taken the next lines first: the command's first write to stdout fails,
        so everything it fetched must be found in its file of unprinted records.
        """
        read_end, write_end = os.pipe()
        os.close(read_end)
        # Buffered, as a user's run is: Python's own flush at exit must not fail either.
        env = {k: v for k, v in self.env.items() if k != "PYTHONUNBUFFERED"}
        try:
            done = subprocess.run(
                self.command(*args),
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                timeout=timeout,
                cwd=ROOT,
            )
        finally:
            os.close(write_end)
        return subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """A running command whose output the test reads as it comes (pipes)."""
        return subprocess.Popen(
            self.command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )

    def start(self, *args: str) -> Running:
        """A running command whose output goes to files, read when it ends.

        For long sends a test interrupts: with pipes nobody reads until the end, a
        ``--json`` send fills the pipe after a few chunks' outcome lines and blocks in its
        write, which would stall its event loop (no requests, no signal handling) and
        measure the test's own plumbing instead of the command.
        """
        return Running(self.command(*args), self.env)


def hangups_as_on_a_terminal() -> None:
    """For ``preexec_fn``: SIGHUP's default action, as in a command run from a terminal.

    Under ``nohup`` (a test run left in the background) SIGHUP is ignored, children
    inherit that, and ``aisix`` rightly keeps it: a test of what a hang-up does would
    see nothing happen.
    """
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


#: Keyword arguments for subprocess.Popen: started as from a terminal (POSIX).
AS_ON_A_TERMINAL: dict[str, Any] = (
    {"preexec_fn": hangups_as_on_a_terminal} if hasattr(signal, "SIGHUP") else {}
)


class Running:
    """``aisix`` in a subprocess, its stdout and stderr spooled to temporary files."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        # Open as long as the process runs; closed in communicate().
        self._out = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._err = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            text=True,
            env=env,
            cwd=ROOT,
            **AS_ON_A_TERMINAL,
        )

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.kill()

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for the end; its whole stdout and stderr."""
        self.process.wait(timeout=timeout)
        texts = []
        for spool in (self._out, self._err):
            spool.seek(0)
            texts.append(spool.read())
            spool.close()
        return texts[0], texts[1]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def sent_with_journal(cli: Cli, emulator: Any, tmp_path: Path, count: int = 40) -> str:
    """Send ``count`` numbers with a journal whose reports come at once, ten a poll;
    return the journal's path (for the report followers' tests)."""
    emulator.state.configure(report_delay=0.0, reports_per_call=10)
    journal = str(tmp_path / "j.db")
    sent = cli.run("send", write_lines(tmp_path / "n.txt", numbers(count)), "--content", "hi",
                   "--journal", journal)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    return journal


def summary_of(stdout: str) -> dict[str, Any]:
    records = [r for r in json_lines(stdout) if r.get("type") == "summary"]
    assert len(records) == 1
    return records[0]
