"""`python -m aisix_async.emulator`: serve an emulated Aisix gateway until Ctrl-C.

The `aisix emulator` subcommand calls `main(argv)`. The first lines printed are
`key=value` pairs (`base_url=http://127.0.0.1:PORT/OpenPlatform` first), flushed at once,
so a parent process can start the emulator on `--port 0` and read where it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import NoReturn

import attrs

from ._config import FAULT_NAMES, AccountConfig, EmulatorConfig, FaultConfig

__all__ = ["build_parser", "config_from_args", "main"]


def _fault(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in FAULT_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PROB with NAME in {', '.join(FAULT_NAMES)}"
        )
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a probability")


def _money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal amount")


def _port(text: str) -> int:
    # Out of range, the socket's bind() raised OverflowError: a traceback, not a usage error.
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _names(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


#: A run of hex as long as a gateway key: not echoed (see _Parser).
_KEY_LIKE = re.compile(r"[0-9A-Fa-f]{32,}")


def _redacted(text: str) -> str:
    # The SDK's redact_keys, repeated: the emulator imports nothing of the client.
    return _KEY_LIKE.sub(
        lambda found: found.group() if found.group().isdigit() else "<hex, not shown>", text
    )


class _Parser(argparse.ArgumentParser):
    """A parser whose errors do not quote a key typed in the wrong place.

    ``aisix emulator --port "$AISIX_AUTHKEY"`` said "'<the key>' is not a port number",
    where every other aisix command hides such a run of hex.
    """

    def error(self, message: str) -> NoReturn:
        super().error(_redacted(message))


def build_parser(prog: str = "python -m aisix_async.emulator") -> argparse.ArgumentParser:
    """The command line of the emulator (``prog``: how its help names it)."""
    parser = _Parser(
        prog=prog,
        description="Serve an emulated Aisix HTTP SMS gateway (for tests, demos and benchmarks).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=_port, default=8765, help="port to bind; 0 picks a free one (default 8765)")
    add("--rate", type=float, help="requests per second per account before -1 (default: no limit)")
    add("--burst", type=float, help="token bucket capacity (default: one second of --rate)")
    add("--latency-ms", type=float, default=0.0, help="fixed delay added to every request")
    add("--jitter-ms", type=float, default=0.0, help="uniform random extra delay per request")
    add("--slow-body-ms", type=float, default=400.0, help="total delay of a slow_body answer")
    add(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=PROB",
        help=f"fault probability, repeatable; NAME in {', '.join(FAULT_NAMES)}",
    )
    add(
        "--fault-actions", type=_names, help="comma-separated actions faults apply to (default all)"
    )
    add("--seed", type=int, default=0, help="seed of faults, reports, msgids and keys")
    add("--report-delay", type=float, default=1.0, help="seconds until a delivery report is due")
    add("--reports-per-call", type=int, default=100, help="most records per getSendState/getReply")
    add("--no-reports", action="store_true", help="queue no delivery reports (benchmarks)")
    add("--no-record", action="store_true", help="keep counters only, no message ledger")
    add("--balance", type=_money, default=Decimal("1000.000"), help="default account's balance")
    add("--blacklist", type=_names, default=[], help="comma-separated numbers that get DTBLACK")
    add(
        "--ip-bound",
        action="store_true",
        help="answer -1 to every request of a well-formed account (bound-IP mismatch)",
    )
    add("--lock-after", type=int, default=5, help="wrong keys in a row that lock the key")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the parsed options describe (ValueError if inconsistent)."""
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        slow_body_ms=args.slow_body_ms,
        fault_actions=args.fault_actions,
        **dict(args.fault),
    )
    account = attrs.evolve(AccountConfig(), balance=args.balance)
    return EmulatorConfig(
        accounts=(account,),
        rate=args.rate,
        burst=args.burst,
        ip_bound=args.ip_bound,
        lock_after=args.lock_after,
        faults=faults,
        seed=args.seed,
        report_delay=args.report_delay,
        reports_per_call=args.reports_per_call,
        reports=not args.no_reports,
        record_messages=not args.no_record,
        blacklist=args.blacklist,
    )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 if it cannot bind, 2 on usage."""
    parser = build_parser() if prog is None else build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: hand the code back, do not exit
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as exc:
        print(_redacted(f"error: {exc}"), file=sys.stderr)
        return 2
    # Here, not at the top: without the emulator extra (uvicorn) the import fails, and
    # each way in says so in its own words (see the end of this file, and `aisix emulator`).
    from ._server import EmulatorServer

    server = EmulatorServer(config, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        print(_redacted(f"error: cannot listen on {args.host}:{args.port}: {exc}"), file=sys.stderr)
        return 1

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        _say(
            f"base_url={server.base_url}",
            f"port={server.port}",
            f"open_url={server.open_url}",
            f"data_url={server.data_url}",
            f"control_url={server.control_url}",
            f"account={server.account}",
            f"authkey={server.authkey}",
            "Aisix gateway emulator running; press Ctrl-C to stop.",
        )
        # A timed wait, so a signal is acted on within half a second whatever the platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say("emulator stopped")
    return 0


def _say(*lines: str) -> None:
    # A parent that read what it needed (`| head -2`) and closed the pipe must not
    # stop a server that others may use: the rest of what it would print is dropped.
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImportError as missing:
        # `python -m aisix_async.emulator` printed a ModuleNotFoundError traceback, where
        # `aisix emulator` names the extra to install.
        if missing.name not in {"uvicorn", "httptools"}:
            raise
        print(
            "error: the emulator needs the emulator extra: pip install "
            "'aisix-async[emulator]' (in a clone of the repository: pip install "
            "'.[emulator]')",
            file=sys.stderr,
        )
        sys.exit(2)
