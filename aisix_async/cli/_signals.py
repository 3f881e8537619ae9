"""The signals that stop a command as Ctrl-C does, and how they do before a command
installs its own receivers (see _interrupts)."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["restore_signals", "stop_as_interrupt", "stop_signals"]


def stop_signals() -> tuple[signal.Signals, ...]:
    # A terminal that hangs up (SIGHUP) stops a run as Ctrl-C does: killed by it, a send
    # would leave its outcomes nowhere and a follow would lose the reports it fetched.
    # Unless it is ignored (``nohup aisix send ...``): handling it would undo nohup.
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None or signal.getsignal(hangup) is signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, hangup)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    saved: dict[int, Any] = {}
    for stop in stop_signals():
        saved[stop] = signal.signal(stop, _raise_interrupt)
    return saved


def restore_signals(saved: dict[int, Any]) -> None:
    for stop, handler in saved.items():
        signal.signal(stop, handler)
