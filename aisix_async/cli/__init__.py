"""The ``aisix`` command line: the SDK's main job (campaigns, reports, the demo) in one tool.

The command line needs the ``cli`` extra (rich for progress and tables, and the emulator
for ``aisix demo``); the core SDK does not. So this module imports nothing beyond the
standard library until it has checked that the extra is there: a user who installed the
bare package gets one line saying what to install, not a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["MISSING_EMULATOR_HINT", "MISSING_EXTRA_HINT", "main"]

# Said to a wheel install as much as to a clone: name the extra the way pip takes it for
# both (the package is installed from a clone or a wheel; it is not on PyPI yet).
MISSING_EXTRA_HINT = (
    "aisix: this command needs the cli extra: pip install 'aisix-async[cli]' from where "
    "aisix-async came (in a clone of the repository: pip install '.[cli]')"
)
MISSING_EMULATOR_HINT = (
    "aisix: the emulator needs the emulator extra: pip install 'aisix-async[emulator]' from "
    "where aisix-async came (in a clone of the repository: pip install '.[emulator]')"
)
_ASKS_ONLY_FOR_HELP = {"-h", "--help", "--version"}


def main(argv: list[str] | None = None) -> int:
    """Run ``aisix`` with ``argv`` (default: the process arguments); return the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["emulator"]:
        # The emulator needs only its own extra (uvicorn), not rich.
        return _emulator(args[1:])
    try:
        import rich  # noqa: F401
    except ImportError:
        if _ASKS_ONLY_FOR_HELP & set(args):
            # Help and the version need only argparse: a user finding out what aisix is,
            # or which version is installed, must not be refused.
            from ._args import build_parser

            try:
                build_parser().parse_args(args)
            except SystemExit as exc:
                if exc.code == 0 and "--version" not in args:
                    print(MISSING_EXTRA_HINT, file=sys.stderr)
                return exc.code if isinstance(exc.code, int) else 2
        print(MISSING_EXTRA_HINT, file=sys.stderr)
        return 2
    from ._app import run

    code = run(args)
    if argv is None:  # the process's own command line, not a caller's (a test's)
        _stop_signals_end_the_shutdown(code)
    return code


def _stop_signals_end_the_shutdown(code: int) -> None:
    """From here to the process's end, a stop signal ends it at once, quietly, with ``code``.

    The interpreter's shutdown waits for threads still at work (a check of the input that
    a Ctrl-C ended reads on to the end of its file); a second Ctrl-C then raised
    KeyboardInterrupt inside that wait, and Python printed a traceback under the
    command's own "interrupted" (an operator's trial, every time). All there was to say
    has been said: what is buffered is flushed first.
    """
    import contextlib
    import os
    import signal
    import threading

    from ._signals import stop_signals

    if threading.current_thread() is not threading.main_thread():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a pipe nobody reads any more
            stream.flush()

    def leave(signum: int, frame: object) -> None:
        os._exit(code)

    for stop in stop_signals():
        signal.signal(stop, leave)


def _emulator(argv: list[str]) -> int:
    try:
        from ..emulator.__main__ import main as emulator_main

        # (It imports its server, and so uvicorn, once its arguments are read.)
        return int(emulator_main(argv, prog="aisix emulator"))
    except ImportError as exc:
        if getattr(exc, "name", None) in {"uvicorn", "httptools"}:
            print(MISSING_EMULATOR_HINT, file=sys.stderr)
            return 2
        raise
