"""Everything the command line prints, in one place, in three forms.

Results go to stdout, everything about the run (progress, notes, errors) to stderr, so
``aisix send ... > results.txt`` or ``| jq`` gets results alone. Results are rich tables,
or with ``--json`` one JSON object per line (JSON lines stream: a follower of
``aisix reports --follow --json`` reads each record the moment it arrives). Money is
printed as a string of its exact decimal value, never a float.

stdout can close under a running command (``| head``, a consumer that crashed). What it
could not take is not lost: records (reports, replies, a send's outcomes) go on, as JSON
lines, into a file of their own in the user's state folder, named on stderr; tables go to
stderr; and the command is told, so that it stops fetching and sending, as at a Ctrl-C.
A pipe gives no receipt, though: lines it took before it closed may have been read and
dropped by the reader (``head`` reads a block and prints one line). A ``--journal`` or
``--outcomes`` file is the record to rely on.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exit import redact_keys
from ._folders import user_folder

__all__ = ["KEEPS_UNPRINTED", "Output", "counted", "jsonable", "unprinted_folder"]


def counted(count: int, one: str, many: str) -> str:
    """``"1 unit"``, ``"1,200 units"``: a count and its noun, in the right number."""
    return f"{count:,} {one if count == 1 else many}"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: Decimal as str, datetime ISO 8601, enums by name."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if attrs.has(type(value)):
        return {
            field.name: jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.repr is not False or field.name == "extra"
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


#: The commands whose records stdout could not take are kept: the gateway hands reports
#: and replies out once, a send's outcomes say who was charged, a new key exists nowhere
#: else.
KEEPS_UNPRINTED = frozenset({"send", "reports", "replies", "rotate-key"})


def unprinted_folder() -> Path:
    """Where records stdout could not take are kept (``$XDG_STATE_HOME/aisix/unprinted``)."""
    return user_folder("XDG_STATE_HOME", ".local/state") / "unprinted"


class _ResultConsole(Console):
    def on_broken_pipe(self) -> None:
        # rich's own reaction is SystemExit(1), mid-command: the records fetched with the
        # line it was printing would be lost. Raised as what it is, for Output to handle.
        raise BrokenPipeError


def _point_at_devnull(stream: TextIO) -> None:
    # Python flushes the standard streams once more at exit: one that failed would
    # print a traceback (or set exit status 120) there. Its descriptor gets /dev/null.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


class _Survivable(io.TextIOBase):
    """stderr as a stream that never raises: once a write fails (the terminal hung up),
    the rest is dropped, so a run still ends cleanly and keeps what it fetched."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._dead = False

    def write(self, text: str) -> int:
        if not self._dead:
            try:
                return self._stream.write(text)
            except OSError:
                self._died()
        return len(text)

    def flush(self) -> None:
        if not self._dead:
            try:
                self._stream.flush()
            except OSError:
                self._died()

    def _died(self) -> None:
        self._dead = True
        if self._stream is sys.stderr:
            _point_at_devnull(self._stream)

    def isatty(self) -> bool:
        return not self._dead and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding


class _Unprinted:
    """The file that takes the records stdout could not: JSON lines, owner-only."""

    def __init__(self, command: str, stderr: TextIO) -> None:
        # stderr never raises (see _Survivable): the last place records can go.
        self.command = command
        self._stderr = stderr
        self.count = 0
        #: Of ``count``, how many went to stderr (no file could be made, or it filled).
        self.on_stderr = 0
        self.path: Path | None = None
        self._file: TextIO | None = None
        self._failed = False

    def add(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(jsonable(record), ensure_ascii=False) + "\n"
        self.count += 1
        if self._file is None and not self._failed:
            self._open()
        if self._file is not None:
            try:
                self._file.write(line)
                self._file.flush()  # per record: a crash after this keeps it
                return
            except OSError as exc:  # a full disk: this record and the rest go to stderr
                self._failed = True
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
                self._say(
                    f"aisix: error: {self.path} could not take more ({exc.strerror}): the "
                    "records not printed follow here, as JSON lines\n"
                )
        # No file could be made, or it is full: stderr is the last place they can go.
        self.on_stderr += 1
        self._say(line)

    def _say(self, text: str) -> None:
        self._stderr.write(text)
        self._stderr.flush()

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"{self.command}-{stamp}-{os.getpid()}.jsonl"
        try:
            # Inside: with no home folder (a container's user) Path.home() raises.
            folder = unprinted_folder()
            path = folder / name
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Numbers and message texts: readable by the owner only, and never over a file.
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(handle, "w", encoding="utf-8")
        except (OSError, RuntimeError) as exc:
            self._failed = True
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self._say(
                f"aisix: error: stdout was closed and no file could be made for {name} "
                f"({reason}): the records not printed follow here, as JSON lines\n"
            )
            return
        self.path = path
        # Said now, not only at the end: a kill -9 later must not hide where they are.
        self._say(f"aisix: warning: stdout was closed: what it could not take is kept in {path}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Output:
    """Where and how a command writes; one per command run."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        command: str = "aisix",
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._stdout = stdout if stdout is not None else sys.stdout
        self._stderr: TextIO = _Survivable(stderr if stderr is not None else sys.stderr)  # type: ignore[assignment]
        self.out = _ResultConsole(file=self._stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=self._stderr, highlight=False, soft_wrap=True, stderr=True)
        self.stdout_closed = False
        # Records nobody can fetch again are kept; a balance or a table is asked again.
        self._keeps = command in KEEPS_UNPRINTED
        self._unprinted = _Unprinted(command, self._stderr)
        self._on_closed: list[Callable[[], None]] = []

    def when_stdout_closes(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once stdout is found closed (a command stops its work there)."""
        if self.stdout_closed:
            callback()
        else:
            self._on_closed.append(callback)

    def mark_stdout_closed(self) -> None:
        """stdout refused a write: keep what follows, and tell the command to stop."""
        if self.stdout_closed:
            return
        self.stdout_closed = True
        if self._stdout is sys.stdout:
            _point_at_devnull(self._stdout)
        for callback in self._on_closed:
            callback()

    @property
    def unprinted(self) -> tuple[int, Path | None]:
        """How many records stdout could not take, and the file they are in (None: stderr)."""
        return self._unprinted.count, self._unprinted.path

    @property
    def unprinted_on_stderr(self) -> int:
        """Of those, how many went to stderr (no file could be made, or it filled)."""
        return self._unprinted.on_stderr

    def close(self) -> None:
        """Close the file of unprinted records, if one was made."""
        self._unprinted.close()

    @property
    def stdout(self) -> TextIO:
        """The results' stream itself, for output made elsewhere (a CSV export)."""
        return self._stdout

    @property
    def interactive(self) -> bool:
        """True when a live progress display suits stderr (a terminal, not silenced)."""
        return not self.quiet and self.err.is_terminal

    def emit(self, record: Mapping[str, Any]) -> None:
        """One JSON line on stdout, flushed at once (followers read it as it comes)."""
        self.result(record, None)

    def result(self, record: Mapping[str, Any], text: str | None, *, keep: bool = True) -> None:
        """A record on stdout: ``text`` as a line, or with --json (or no text) JSON.

        Flushed at once, so that a write stdout refuses is this record's, and it goes to
        the file of unprinted records instead (unless not ``keep``: kept elsewhere).
        """
        if text is None or self.json_mode:
            printed = self._write_stdout(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
        else:
            printed = self._print_result(text, markup=False)
        if not printed and keep:
            self.keep_unprinted(record)

    def write_results(self, text: str, records: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        """Many records' lines at once (``text``), flushed: the fast path of big batches.

        ``records`` makes the records behind ``text``, only if stdout refuses it: they are
        kept, every one (the failed flush may have written some: twice beats lost).
        """
        if not self._write_stdout(text):
            for record in records():
                self.keep_unprinted(record)

    def _write_stdout(self, text: str) -> bool:
        """Write and flush ``text``; False if stdout is (or is now found) closed."""
        if self.stdout_closed:
            return False
        try:
            self._stdout.write(text)
            self._stdout.flush()
        except OSError:  # EPIPE (| head), EIO (a terminal hung up)
            self.mark_stdout_closed()
            return False
        return True

    def keep_unprinted(self, record: Mapping[str, Any]) -> None:
        """Keep a record stdout could not take in the file of unprinted records."""
        if self._keeps:
            self._unprinted.add(record)

    def line(self, text: str) -> None:
        """A plain result line on stdout (no markup interpretation); dropped once closed."""
        self._print_result(text, markup=False)

    def note(self, text: str) -> None:
        """A line about the run on stderr (suppressed by --quiet)."""
        if not self.quiet:
            self._say(text)

    def warn(self, text: str) -> None:
        """A warning on stderr, shown even with --quiet (a key-like token is not shown)."""
        self._say(f"aisix: warning: {redact_keys(text)}")

    def error(self, text: str) -> None:
        """An error on stderr, shown even with --quiet (a key-like token is not shown)."""
        self._say(f"aisix: error: {redact_keys(text)}")

    def _say(self, text: str) -> None:
        # (stderr never raises, gone or not: see _Survivable.)
        self.err.print(text, markup=False)

    def table(
        self,
        title: str | None,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        right: Sequence[str] = (),
    ) -> None:
        """A table on stdout; ``right`` names the columns holding figures."""
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left")
        for row in rows:
            table.add_row(*(_cell(cell) for cell in row))
        self._print_result(table)

    def pairs(
        self, title: str | None, rows: Sequence[tuple[str, object]], *, vital: bool = False
    ) -> None:
        """A two-column table of labelled values (a summary).

        ``vital``: what an operator must see even once stdout is closed (what a send
        did): then it goes to stderr. Other tables are dropped with stdout.
        """
        table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        for label, value in rows:
            table.add_row(Text(label), _cell(value))
        self._print_result(table)
        if vital and self.stdout_closed:
            self.err.print(table)

    def _print_result(self, renderable: str | Table, *, markup: bool | None = None) -> bool:
        """Print on stdout through rich; False if stdout is (or is now found) closed."""
        if self.stdout_closed:
            return False
        try:
            self.out.print(renderable, markup=markup)
        except OSError:  # EPIPE (| head), EIO (a terminal hung up)
            self.mark_stdout_closed()
            return False
        return True


def _cell(value: object) -> Text:
    # Text, not str: rich would read "[...]" in a content or signature as markup.
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))
