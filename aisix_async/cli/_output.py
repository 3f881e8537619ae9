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

stdout's reader can also stop reading without closing it (a pager left open, a consumer
that hung). Writes are made by a thread of their own (see _stdout), so the event loop,
and Ctrl-C with it, never waits on them; a command that produces a lot waits for a reader
that is behind (:meth:`Output.wait_for_reader`) until it is stopped. What the reader
of a command that was stopped still has not taken at its end (:meth:`Output.close`) is
kept, as what a closed stdout could not take is.
"""

from __future__ import annotations

import array
import contextlib
import enum
import errno
import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exit import redact_keys
from ._folders import user_folder
from ._signals import drain_ahead, held_signals, repeats_end_the_wait, say_waiting_for_reader
from ._stdout import Piece, StdoutWriter

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


#: What stdout's trouble is called on stderr: closed (a write failed), or not read (its
#: reader took nothing for GRACE seconds once the command had stopped).
CLOSED = "stdout was closed"
NOT_READ = "stdout was not read"

#: Seconds a stdout whose reader takes nothing is waited for once the command stopped
#: (interrupted, or failed); then what it has not taken is kept as a closed one's is.
GRACE = 3.0
# How often a wait for stdout looks again; how long a line on stderr waits, at most, for
# the results queued before it (see Output._results_first).
_POLL = 0.02
_IN_ORDER = 0.05


def _point_at_devnull(stream: TextIO) -> None:
    # Python flushes the standard streams once more at exit: one that failed would
    # print a traceback (or set exit status 120) there. Its descriptor gets /dev/null.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


class _RenderOnly(io.TextIOBase):
    """What rich asks of stdout to render for it (a terminal? its descriptor, its
    encoding), and a sink for what it would write itself: Output writes the results."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


class _Survivable(io.TextIOBase):
    """stderr as a stream that never raises: once a write fails (the terminal hung up),
    the rest is dropped, so a run still ends cleanly and keeps what it fetched."""

    def __init__(self, stream: TextIO, before: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._dead = False
        self._before = before

    def write(self, text: str) -> int:
        if not self._dead:
            if self._before is not None:
                self._before()
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
        #: What became of stdout, as the warnings say it (CLOSED or NOT_READ).
        self.trouble = CLOSED

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
                f"aisix: error: {self.trouble} and no file could be made for {name} "
                f"({reason}): the records not printed follow here, as JSON lines\n"
            )
            return
        self.path = path
        # Said now, not only at the end: a kill -9 later must not hide where they are.
        self._say(f"aisix: warning: {self.trouble}: what it could not take is kept in {path}\n")

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
        # None when the command was started with stdout closed (">&-"): a stream whose
        # every write fails, as a closed descriptor's does, so it ends as any closed stdout
        # (141, what was not printed kept), not with an AttributeError.
        closed: TextIO = _ClosedStream()  # type: ignore[assignment]
        self._stdout: TextIO = stdout if stdout is not None else (sys.stdout or closed)
        # The thread writing stdout (see _stdout), made at the first write: a stream with
        # a descriptor only (one in memory never blocks), and not on Windows, whose
        # console takes text through its own API, not bytes on the descriptor.
        self._writer: StdoutWriter | None = None
        self._direct = os.name != "posix" or not _has_descriptor(self._stdout)
        self._token: Any = None
        # While the writer has yet to be waited for (see close): a repeated stop signal
        # is left to that wait (see drain_ahead).
        self._drain_to_come = contextlib.ExitStack()
        self._waits_for_reader = True
        #: Whether a repeated stop signal ended the wait for stdout's reader (see close).
        self.signal_ended_wait = False
        self._stderr: TextIO = _Survivable(  # type: ignore[assignment]
            stderr if stderr is not None else sys.stderr, before=self._results_first
        )
        # Results are rendered by rich (for stdout's width and colours) and written by
        # _write_stdout: rich never writes to stdout itself.
        rendering: TextIO = _RenderOnly(self._stdout)  # type: ignore[assignment]
        self.out = Console(file=rendering, highlight=False, soft_wrap=True)
        self.err = Console(file=self._stderr, highlight=False, soft_wrap=True, stderr=True)
        self.stdout_closed = False
        #: stdout carries another stream (see yield_stdout): results go to stderr.
        self._stdout_yielded = False
        # Records nobody can fetch again are kept; a balance or a table is asked again.
        self._keeps = command in KEEPS_UNPRINTED
        self._unprinted = _Unprinted(command, self._stderr)
        # Records handed to stdout (see taken_by_stdout): with those kept, what the
        # command fetched is all accounted for.
        self._offered = 0
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
        # Queued for stdout and never written (or the write that failed): kept, in order,
        # before anything that comes after.
        unwritten = self._writer.take_back() if self._writer is not None else []
        if self._stdout is sys.stdout:
            _point_at_devnull(self._stdout)
        for callback in self._on_closed:
            callback()
        for piece in unwritten:
            self._not_taken(piece.records, piece.vital)

    @property
    def stdout_trouble(self) -> str:
        """What became of stdout, as messages say it: "stdout was closed" or "... not read"."""
        return self._unprinted.trouble

    @property
    def unprinted(self) -> tuple[int, Path | None]:
        """How many records stdout could not take, and the file they are in (None: stderr)."""
        return self._unprinted.count, self._unprinted.path

    @property
    def taken_by_stdout(self) -> int:
        """How many records stdout took (written, whether or not its reader read them):
        those handed to it, less those it could not take. Final once :meth:`close` ran."""
        return max(0, self._offered - self._unprinted.count)

    @property
    def unprinted_on_stderr(self) -> int:
        """Of those, how many went to stderr (no file could be made, or it filled)."""
        return self._unprinted.on_stderr

    async def wait_for_reader(self) -> None:
        """Wait while stdout's reader is far behind (a slow one paces the command, as a
        pipe does), unless :meth:`stop_waiting_for_reader` was called.

        Only the task that produces the output waits: the event loop goes on (requests on
        the wire are answered, Ctrl-C is heard), where a write to a full pipe made on it
        stopped it all.
        """
        # Polled, only while the reader is far behind: the writer is another thread, with
        # no event of this loop's to set.
        while self._far_behind():
            self._notice_failure()
            await anyio.sleep(_POLL)
        self._notice_failure()

    def _far_behind(self) -> bool:
        writer = self._writer
        return writer is not None and writer.behind and self._waits_for_reader

    async def wait_until_taken(self) -> None:
        """Wait until stdout has taken all that was written to it, or is found closed:
        :attr:`stdout_closed` then says which (for a record that exists nowhere else)."""
        writer = self._writer
        # Polled, as wait_for_reader is.
        while writer is not None and writer.busy:  # noqa: ASYNC110
            await anyio.sleep(_POLL)
        self._notice_failure()

    def stop_waiting_for_reader(self) -> None:
        """From now on the command never waits for stdout's reader (it is stopping: what
        the reader does not take is kept when it ends, see :meth:`close`)."""
        self._waits_for_reader = False

    def close(self, *, patient: bool = True) -> None:
        """Let stdout's reader take what is queued for it; close the file of unprinted records.

        ``patient``: the command ended as it should; its reader is waited for as long as
        it takes (a pipe's reader sets the pace), until a second stop signal after the
        end (the first stops nothing: see hold_stop_signals). Otherwise (it was
        interrupted, or failed) a reader that takes nothing for :data:`GRACE` seconds is
        given up on. Either way what it has not taken is kept, as what a closed stdout
        could not take is.
        """
        writer = self._writer
        try:
            if writer is not None and not self.stdout_closed:
                try:
                    self._drain(writer, patient)
                except BaseException:
                    # A KeyboardInterrupt (a command with no receivers of its own): nothing
                    # queued is dropped on the way out.
                    self._give_up()
                    raise
                self._notice_failure()
        finally:
            self._drain_to_come.close()
        self._unprinted.close()

    def _drain(self, writer: StdoutWriter, patient: bool) -> None:
        # A stop signal held once the command has ended stops nothing: the reader may
        # still take the summary (see hold_stop_signals). A repeated one ends the wait.
        said = False
        with repeats_end_the_wait():
            while not writer.wait_idle(_POLL * 5):
                held = len(held_signals()[0])
                if held >= 2:
                    self.signal_ended_wait = True
                    self._give_up()
                    return
                if held == 1 and not said:
                    say_waiting_for_reader()
                    said = True
                if not patient and writer.stalled_for() >= GRACE:
                    self._give_up()
                    return

    def _give_up(self) -> None:
        # The command has ended: nobody is left to tell (its callbacks belonged to an
        # event loop that is gone).
        self._on_closed.clear()
        if not self.stdout_closed and self._writer is not None and self._writer.failed is None:
            self._unprinted.trouble = NOT_READ
        self.mark_stdout_closed()

    def _notice_failure(self) -> None:
        """On the event loop's thread: a write the thread made failed, so stdout is closed."""
        writer = self._writer
        if writer is not None and writer.failed is not None:
            self.mark_stdout_closed()

    def _failed_in_thread(self) -> None:
        # Told to the event loop at once (it stops a send's dispatch, a follower's
        # fetching), not at the next write. A loop that has ended cannot be told: close()
        # finds the failure instead.
        token = self._token
        if token is None:
            return
        with contextlib.suppress(Exception):
            anyio.from_thread.run_sync(self._notice_failure, token=token)

    def _results_first(self) -> None:
        # A line on stderr waits for the results queued before it, so that a terminal
        # shows them in the order they were made (a summary before its warnings); only
        # briefly for a reader that has stalled (and not at all once it has for longer).
        writer = self._writer
        if writer is not None:
            writer.wait_idle(max(0.0, _IN_ORDER - writer.stalled_for()))

    def yield_stdout(self) -> None:
        """Leave stdout to another stream the command writes there itself (``--outcomes
        /dev/stdout``): the results (text mode only) go to stderr from now on."""
        self._stdout_yielded = True

    @property
    def stdout(self) -> TextIO:
        """The results' stream itself, for output made elsewhere (a CSV export, which
        nothing is written before: it does not go through the thread that writes)."""
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
            line = json.dumps(jsonable(record), ensure_ascii=False) + "\n"
        else:
            line = self._render(text, markup=False)
        if keep:
            self._offered += 1
        self._write_stdout(line, (lambda: [record]) if keep else None)

    def write_results(
        self, text: str, records: Callable[[], Iterable[Mapping[str, Any]]], *, count: int
    ) -> None:
        """Many records' lines at once (``text``), flushed: the fast path of big batches.

        ``records`` makes the ``count`` records behind ``text``, only if stdout refuses
        it: they are kept, every one (the failed flush may have written some: twice
        beats lost). It may be called later (stdout is written by a thread): it must not
        read anything the caller changes afterwards.
        """
        self._offered += count
        self._write_stdout(text, records)

    def _write_stdout(
        self,
        text: str,
        records: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        vital: Callable[[], None] | None = None,
    ) -> None:
        """Write ``text``; if stdout is (or is now found) closed, keep ``records`` and show
        what is ``vital`` elsewhere instead."""
        if self._stdout_yielded:
            self._stderr.write(text)
            return
        self._notice_failure()
        if self.stdout_closed:
            self._not_taken(records, vital)
            return
        if self._direct:
            try:
                self._stdout.write(text)
                self._stdout.flush()
            except OSError:  # EPIPE (| head), EIO (a terminal hung up)
                self.mark_stdout_closed()
                self._not_taken(records, vital)
            return
        if self._writer is None:
            with contextlib.suppress(Exception):  # outside an event loop: no token
                self._token = anyio.lowlevel.current_token()
            self._writer = StdoutWriter(self._stdout.fileno(), on_failure=self._failed_in_thread)
            self._drain_to_come.enter_context(drain_ahead(lambda: not self.stdout_closed))
        encoding = getattr(self._stdout, "encoding", None) or "utf-8"
        errors = getattr(self._stdout, "errors", None) or "strict"
        if not self._writer.put(Piece(text.encode(encoding, errors), records, vital)):
            # It failed since the look above: what it holds is kept first, then this.
            self._notice_failure()
            self._not_taken(records, vital)

    def from_thread(self) -> TextIO:
        """stdout for text made on a worker thread (a CSV export): written, a piece at a
        time, by the thread that writes stdout, the worker waiting (in the event loop)
        while the reader is far behind. A write to a full pipe made on the worker itself
        held it for good when nobody read: a Ctrl-C said "interrupted", and the process
        waited for that thread at exit (a user's trial). Raises OSError (EPIPE) from
        ``write`` or ``flush`` once stdout is closed."""
        return _FromThread(self)  # type: ignore[return-value]

    def put_from_thread(self, text: str) -> None:
        """For :meth:`from_thread`'s stream: write ``text`` (called in the event loop)."""
        self._write_stdout(text)
        self._check_open()

    def behind_for_thread(self) -> bool:
        """For :meth:`from_thread`'s stream: whether the reader is far behind (called in
        the event loop); raises OSError once stdout is closed."""
        # As wait_for_reader's test, asked from the worker between its short sleeps: a
        # task of the event loop's waiting instead outlived a Ctrl-C, with a traceback.
        self._check_open()
        return self._far_behind()

    def _check_open(self) -> None:
        self._notice_failure()
        if self.stdout_closed:
            raise OSError(errno.EPIPE, "stdout was closed")

    def _not_taken(
        self,
        records: Callable[[], Iterable[Mapping[str, Any]]] | None,
        vital: Callable[[], None] | None,
    ) -> None:
        for record in records() if records is not None else ():
            self.keep_unprinted(record)
        if vital is not None:
            vital()

    async def wait_until_read(self, patience: float) -> bool:
        """Whether stdout's reader read everything written, where a pipe can say so.

        A write to a pipe succeeds once the bytes are in its buffer, read or not: a
        reader that hung, or left without reading, takes them with it. On Linux the
        bytes still unread in a pipe can be counted (FIONREAD); this waits up to
        ``patience`` seconds for that count to fall to 0. True as well where nothing can
        be counted (a terminal, a file, another system): their writes are the receipt.
        """
        try:
            fd = self._stdout.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return True
            import fcntl
            import termios

            unread = array.array("i", [0])
            give_up = anyio.current_time() + patience
            while True:
                fcntl.ioctl(fd, termios.FIONREAD, unread)
                if unread[0] == 0:
                    return True
                if anyio.current_time() >= give_up:
                    return False
                await anyio.sleep(0.05)
        except (OSError, ValueError, ImportError, AttributeError):
            return True

    def keep_unprinted(self, record: Mapping[str, Any]) -> None:
        """Keep a record stdout could not take in the file of unprinted records."""
        if self._keeps:
            self._unprinted.add(record)

    def line(self, text: str) -> None:
        """A plain result line on stdout (no markup interpretation); dropped once closed."""
        self._write_stdout(self._render(text, markup=False))

    def note(self, text: str) -> None:
        """A line about the run on stderr (suppressed by --quiet; a key-like token is not
        shown: notes name the files a command wrote, and a file may be named after a key)."""
        if not self.quiet:
            self._say(redact_keys(text))

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
        # Titles name files ("campaign FILE"): a key-like token in one is not shown.
        title = redact_keys(title) if title is not None else None
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left")
        for row in rows:
            table.add_row(*(_cell(cell) for cell in row))
        self._write_stdout(self._render(table))

    def pairs(
        self, title: str | None, rows: Sequence[tuple[str, object]], *, vital: bool = False
    ) -> None:
        """A two-column table of labelled values (a summary).

        ``vital``: what an operator must see even if stdout does not take it (what a
        send did): then it goes to stderr. Other tables are dropped with stdout.
        """
        title = redact_keys(title) if title is not None else None  # as in table()
        table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        # Folded, not cut with an ellipsis: a gateway's URL in `aisix campaign | less` (80
        # columns when not a terminal) ended ".../OpenPlatform/Op…" (a user's trial).
        table.add_column("value", justify="right", overflow="fold")
        for label, value in rows:
            table.add_row(Text(label), _cell(value))
        shown = (lambda: self.err.print(table)) if vital else None
        self._write_stdout(self._render(table), vital=shown)

    def _render(self, renderable: str | Table, *, markup: bool | None = None) -> str:
        """What rich would print on stdout (its width, its colours), as text to write."""
        with self.out.capture() as captured:
            self.out.print(renderable, markup=markup)
        return captured.get()


class _FromThread(io.TextIOBase):
    """See :meth:`Output.from_thread`: gathered in pieces of 64 kB, one trip to the event
    loop each (a trip a CSV line would cost more than the export)."""

    _PIECE = 65536

    def __init__(self, out: Output) -> None:
        self._out = out
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._PIECE:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        out = self._out
        anyio.from_thread.run_sync(out.put_from_thread, text)
        # Once the event loop is gone (a Ctrl-C ended the command), this raises: the
        # worker ends rather than hold the process at exit.
        while anyio.from_thread.run_sync(out.behind_for_thread):
            time.sleep(_POLL)


class _ClosedStream(io.TextIOBase):
    """stdout as a process started without one has it: nothing can be written."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")

    def flush(self) -> None:
        pass


def _has_descriptor(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return True


def _cell(value: object) -> Text:
    # Text, not str: rich would read "[...]" in a content or signature as markup.
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))
