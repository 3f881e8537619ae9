"""stdout written by a thread of its own: a reader that stops reading never stops a command.

A write to a pipe blocks once the pipe is full (64 kB on Linux) until its reader reads:
a pager left open, a consumer that hung, a fifo opened and never read. Made on the event
loop's thread, that write stopped everything there: the requests on the wire went
unanswered, the progress display froze, and the signal receivers never ran, so a Ctrl-C
(three, in a user's trial) did nothing until the reader went away 34 s later.

So the event loop only queues what it prints, as bytes, and a thread makes the writes.
The queue is bounded in the sense that matters: :attr:`StdoutWriter.behind` says when it
holds more than :data:`BEHIND` bytes, and a command that produces a lot (a send, a
follow) waits while it does, as a pipe would have made it wait, but with its event loop
free. What the thread has not written when the command gives up on it (the write failed,
or the reader never took it) is handed back, piece by piece, to be kept elsewhere.

Non-blocking writes (``O_NONBLOCK``) were the other way: the flag belongs to the open
file, shared with the shell and whatever else writes to the same terminal or pipe, which
would then meet ``EAGAIN`` themselves. A thread keeps the descriptor as it was.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["BEHIND", "Piece", "StdoutWriter"]

#: Bytes queued and not yet written past which a command waits for its reader: a few
#: pipe buffers, so a reader that keeps up never makes it wait.
BEHIND = 256 * 1024

# At most this much per write(): a reader that takes the output slowly is seen to make
# progress (see stalled_for), rather than one write blocking until all of it is taken.
_STEP = 4096


class Piece:
    """One write: its bytes, and what to do with it if stdout never takes it."""

    __slots__ = ("data", "records", "vital")

    def __init__(
        self,
        data: bytes,
        records: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        vital: Callable[[], None] | None = None,
    ) -> None:
        self.data = data
        #: The records behind ``data``, made only if they are to be kept elsewhere.
        self.records = records
        #: Shows ``data`` elsewhere (a send's summary table, on stderr).
        self.vital = vital


class StdoutWriter:
    """Writes queued pieces to a file descriptor, in order, on a daemon thread.

    The thread is a daemon, and writes to a descriptor of its own (a ``dup``): one stuck
    in a write forever must neither keep the process from exiting nor hold the lock of
    ``sys.stdout``'s buffer, which Python's last flush at exit would wait for (a fatal
    error at shutdown).
    """

    def __init__(self, fd: int, on_failure: Callable[[], None] | None = None) -> None:
        self._fd = os.dup(fd)
        self._on_failure = on_failure
        self._queue: collections.deque[Piece] = collections.deque()
        self._pending = 0
        self._lock = threading.Condition()
        self._stopped = False
        self._failed: OSError | None = None
        # When the last byte was taken (or the current piece begun): see stalled_for.
        self._progress = time.monotonic()
        self._thread: threading.Thread | None = None

    def put(self, piece: Piece) -> bool:
        """Queue ``piece``; never blocks. False if the writer has failed or was stopped:
        ``piece`` is not taken (its owner keeps it)."""
        with self._lock:
            if self._stopped or self._failed is not None:
                return False
            if not self._queue:
                self._progress = time.monotonic()
            self._queue.append(piece)
            self._pending += len(piece.data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aisix-stdout", daemon=True)
                self._thread.start()
            self._lock.notify_all()
        return True

    @property
    def failed(self) -> OSError | None:
        """The error a write met (EPIPE, EIO); from then on nothing more is written."""
        return self._failed

    @property
    def busy(self) -> bool:
        """Whether pieces are queued that the thread may still write."""
        return bool(self._queue) and not self._stopped and self._failed is None

    @property
    def behind(self) -> bool:
        """Whether more than :data:`BEHIND` bytes wait for the reader."""
        return self.busy and self._pending > BEHIND

    def stalled_for(self) -> float:
        """Seconds since the reader last took anything, while something waits for it."""
        return time.monotonic() - self._progress if self.busy else 0.0

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing is left to write (or the writer failed or was stopped), at
        most ``timeout`` seconds; whether it is so."""
        with self._lock:
            return self._lock.wait_for(lambda: not self.busy, timeout)

    def take_back(self) -> list[Piece]:
        """Stop writing; the pieces not written, the one being written included (it may
        have been written in part, or the reader may never read it: twice beats lost)."""
        with self._lock:
            self._stopped = True
            pieces = list(self._queue)
            self._queue.clear()
            self._pending = 0
            self._lock.notify_all()
        return pieces

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._queue) or self._stopped)
                if self._stopped:
                    return
                # Left in the queue while it is written: take_back hands it back too.
                piece = self._queue[0]
            try:
                self._write(piece.data)
            except OSError as exc:  # EPIPE (| head), EIO (a terminal hung up)
                with self._lock:
                    self._failed = exc
                    self._lock.notify_all()
                if self._on_failure is not None:
                    self._on_failure()
                return
            if not self._written(piece):
                return

    def _written(self, piece: Piece) -> bool:
        """Take ``piece`` off the queue, unless it was taken back meanwhile (with the rest)."""
        with self._lock:
            if self._stopped:
                return False
            self._queue.popleft()
            self._pending -= len(piece.data)
            self._lock.notify_all()
            return True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view[:_STEP])
            view = view[written:]
            self._progress = time.monotonic()
