"""The signals that stop a command as Ctrl-C does, and how they do before a command
installs its own receivers (see _interrupts) and once those are gone again (a send's
summary: :func:`hold_stop_signals`)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._exit import ExitCode

__all__ = [
    "drain_ahead",
    "held_signals",
    "hold_stop_signals",
    "interrupted",
    "poll_on_the_wire",
    "repeats_end_the_wait",
    "restore_signals",
    "say_waiting_for_reader",
    "stop_as_interrupt",
    "stop_signals",
]

#: The stop signals that came while they were held (see hold_stop_signals), in order.
_held: list[int] = []
#: What had ended when they began to be held, for the warning (see held_signals).
_ended: list[str] = []
#: Set while Output waits for stdout's reader at the end (see repeats_end_the_wait).
_waiting_for_reader: list[bool] = []
#: Whether a wait for stdout's reader is still to come (see drain_ahead): each Output
#: with a thread writing its stdout puts a check here until its close() has run.
_drains: list[Callable[[], bool]] = []
#: While they are held: the pipe signal.set_wakeup_fd writes each signal's number to,
#: read end and write end (see _count_arrivals).
_wakeup: list[int] = []
#: The stop signals read from that pipe, in order: one per signal the process took.
_arrived: list[int] = []
#: The stop signal that ended a follow, taken by its own receiver before the others were
#: held: the first of the repeats _hold counts (see hold_stop_signals' ``first``).
_first: list[int] = []
#: While a stopped follower waits for the poll on the wire: what an exit at once loses,
#: said as it exits (see poll_on_the_wire).
_lost: list[bytes] = []


def stop_signals() -> tuple[signal.Signals, ...]:
    # A terminal that hangs up (SIGHUP) stops a run as Ctrl-C does: killed by it, a send
    # would leave its outcomes nowhere and a follow would lose the reports it fetched.
    # Unless it is ignored (``nohup aisix send ...``): handling it would undo nohup.
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None or signal.getsignal(hangup) is signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, hangup)


#: The stop signals raised as KeyboardInterrupt since stop_as_interrupt (see interrupted).
_raised: list[int] = []


def _raise_interrupt(signum: int, frame: object) -> None:
    _raised.append(signum)
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether a stop signal was raised as KeyboardInterrupt in this command.

    Raised wherever the main thread was, it can land inside an event loop's own
    bookkeeping (a cancel scope being left), which then fails with an error of its own,
    a RuntimeError, instead: that is the interrupt all the same (a CI run: SIGHUP during
    a send's checks, exit 1 and a traceback, where "interrupted", 130, was due).
    """
    return bool(_raised)


def stop_as_interrupt() -> dict[int, Any]:
    """Until a command installs its own receivers (a send, a follow), SIGTERM and SIGHUP
    end it as Ctrl-C does: "interrupted", exit 130. During a send's checks (balance,
    signatures) they killed it silently, exit 143 or 129, where Ctrl-C said why.

    SIGINT too, though Python's own handler raises KeyboardInterrupt as well: under
    asyncio.run that handler is replaced by one that cancels the main task, and once in
    a while (1 run in dozens, under load) that cancellation was lost during a check's
    request, and the send went ahead (exit 0 after a Ctrl-C). Raised here, as for
    SIGTERM, it ends the run at once.

    Returns the handlers replaced, for :func:`restore_signals`.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (a test calling main())
    _held.clear()
    _arrived.clear()
    _ended.clear()
    _first.clear()
    _lost.clear()
    _raised.clear()
    _drains.clear()  # an Output of an earlier run in this process (tests) left unclosed
    saved: dict[int, Any] = {}
    for stop in stop_signals():
        saved[stop] = signal.signal(stop, _raise_interrupt)
    return saved


def _count_arrivals() -> None:
    """Read the stop signals the wakeup pipe recorded since the last look (main thread).

    Python runs a handler once for all the times its signal came since the main thread
    last looked (a flag per signal, not a count): two Ctrl-C close together, while the
    main thread waited or was not scheduled (a loaded machine), made one call to _hold,
    the repeat was never seen, and a summary stuck on a full stdout waited for its
    reader forever (a CI run; 3 runs in 1,400 of that test on a loaded machine). The
    C-level handler writes one byte per signal to the wakeup descriptor, every time:
    that is the count.
    """
    if not _wakeup:
        return
    stops = {int(stop) for stop in stop_signals()}
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more to read
        while data := os.read(_wakeup[0], 512):
            _arrived.extend(byte for byte in data if byte in stops)


def _came() -> list[int]:
    """The stop signals that came while held: a call of _hold may stand for several (see
    _count_arrivals), and a byte may be written just after its handler ran."""
    _count_arrivals()
    return _arrived if len(_arrived) > len(_held) else _held


def _hold(signum: int, frame: object) -> None:
    _held.append(signum)
    # The signal that stopped a follow counts: it came to the follower's own receiver,
    # not here. Left out, the third Ctrl-C of a follower waiting for its poll counted as a
    # second and, once a batch had been printed (a wait for stdout's reader to come, see
    # below), was held too: the process waited the whole poll (a user's trial, 10.8 s).
    came = len(_first) + len(_came())
    if came == 1 or _waiting_for_reader:
        # (A repeat while Output waits for stdout's reader is that wait's to act on: it
        # ends it and keeps what the reader did not take, which exiting here would lose.)
        return
    if came == 2 and _first:
        # A stopped follower's second: it stops nothing more (the poll on the wire is
        # still waited for, its records handed out once); the third ends the process.
        return
    if came == 2 and any(ahead() for ahead in _drains):
        # ... and so is one that comes before that wait has begun (the summary being
        # made, or queued for a reader that takes nothing): the wait sees it as it
        # begins, and ends at once. Exiting here lost the summary queued for stdout (1 run
        # in 800 of a test, under load: two SIGINTs close together as the send ended).
        # A third still ends the process at once, should the main thread be stuck
        # before it gets there (a stderr nobody reads).
        return
    # A repeat: the summary may be stuck on a stream nobody reads (stderr on a paused
    # terminal; stdout, whose writes Output's thread makes, is waited for as above),
    # and holding every signal would leave Ctrl-C no way out. The
    # send has ended, and what it records was flushed as it went (outcome rows per chunk,
    # the journal per commit, made to survive a kill -9), so the process ends here, at
    # once: an exception raised from this handler could land anywhere in the shutdown,
    # and the final flush of a stuck stdout would block again. Written to the descriptor
    # itself, not through sys.stderr, which the interrupted code may be in the middle of.
    with contextlib.suppress(OSError):
        os.write(2, b"aisix: error: interrupted again: " + (_lost[0] if _lost else _INCOMPLETE))
    os._exit(ExitCode.INTERRUPTED)


_INCOMPLETE = b"what it was writing may be incomplete\n"


def hold_stop_signals(ended: str, first: int | None = None) -> None:
    """From now until :func:`restore_signals`, a stop signal is noted, not acted on.

    Called once a send has ended (its receivers are gone): what is left is its summary,
    which says what was sent, and a signal then has nothing to stop. Acted on, it cut the
    summary off (KeyboardInterrupt) or killed the process (SIGTERM, SIGHUP): an operator
    pressing Ctrl-C a second time as the send ended lost the account of what it sent.
    So is a follower stopped by its first signal, which still waits for the poll on the
    wire (records the gateway hands out once). A second signal after the end ends the
    process at once (exit 130), for a summary that cannot be written; or, while Output
    waits for stdout's reader (:func:`repeats_end_the_wait`), ends that wait, and what
    the reader did not take is kept. ``ended`` says what had ended, for
    :func:`held_signals`, which tells what came.

    ``first``: the stop signal that stopped a follow, taken by its receiver. It counts
    as the first of the repeats: a second is held (the poll on the wire is waited for),
    a third ends the process at once, as the README says.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    _ended[:] = [ended]
    _first[:] = [] if first is None else [first]
    if not _wakeup and os.name == "posix":
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        replaced = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        if replaced == -1:
            _wakeup[:] = [read, write]
        else:
            # An event loop's signal handling still uses it (receivers of its own):
            # left to it, and a repeat is counted by the handler's calls alone.
            signal.set_wakeup_fd(replaced)
            os.close(read)
            os.close(write)
    for stop in stop_signals():
        signal.signal(stop, _hold)


@contextlib.contextmanager
def repeats_end_the_wait() -> Iterator[None]:
    """Within it, a repeated held stop signal does not end the process (see _hold): the
    caller, waiting for stdout's reader to take the last of the output, looks at
    :func:`held_signals` and ends its wait itself, keeping what was not taken."""
    _waiting_for_reader.append(True)
    try:
        yield
    finally:
        _waiting_for_reader.pop()


@contextlib.contextmanager
def drain_ahead(ahead: Callable[[], bool]) -> Iterator[None]:
    """Within it, while ``ahead()`` says a wait for stdout's reader is still to come
    (Output's close, which sees a repeated signal, see :func:`repeats_end_the_wait`), a
    second held stop signal is left to that wait; a third ends the process (see _hold)."""
    _drains.append(ahead)
    try:
        yield
    finally:
        _drains.remove(ahead)


@contextlib.contextmanager
def poll_on_the_wire(lost: str) -> Iterator[None]:
    """Within it (a stopped follower waiting for the poll on the wire), a stop signal
    that ends the process at once says ``lost``: what that poll carries, which the
    gateway hands out once and this process will then never take. "What it was writing
    may be incomplete" did not say it (a user's trial: a batch gone each time)."""
    _lost[:] = [f"{lost}\n".encode()]
    try:
        yield
    finally:
        _lost.clear()


def say_waiting_for_reader() -> None:
    """Tell the operator, whose stop signal was held, what the command waits for.

    An operator's Ctrl-C seemed to do nothing (stdout a pipe nobody read): nothing said
    what the command waited for, nor that a second one would end the wait. Written to
    the descriptor, not through sys.stderr: its writes wait for stdout's (in order).
    """
    with contextlib.suppress(OSError):
        os.write(
            2,
            b"aisix: the command has ended; waiting for stdout's reader to take the rest "
            b"of its output (Ctrl-C again to stop waiting: what it has not taken is kept)\n",
        )


def held_signals() -> tuple[tuple[int, ...], str]:
    """The stop signals that came while they were held (see :func:`hold_stop_signals`),
    and what had ended when they began to be ("the send had ended")."""
    return tuple(_came()), (_ended[0] if _ended else "the command had ended")


def restore_signals(saved: dict[int, Any]) -> None:
    for stop, handler in saved.items():
        signal.signal(stop, handler)
    if _wakeup:
        _count_arrivals()  # what came before the handlers went back: held_signals says it
        signal.set_wakeup_fd(-1)
        for end in _wakeup:
            os.close(end)
        _wakeup.clear()
