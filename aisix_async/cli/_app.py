"""Dispatch: parse the arguments, run one command on an event loop, map failures to codes.

Each command is an async function of a :class:`Context`; it returns its exit code, and
anything it raises is turned into one sentence on stderr and a documented code here, so
no operator ever reads a traceback for an expected failure (a wrong key, a bad file, an
unreachable gateway). The emulator's own command line is handed its arguments untouched.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable

import anyio

from .._client import AisixClient
from .._scheduler import RetryPolicy
from ._args import build_parser
from ._credentials import Credentials, resolve_credentials
from ._exit import ExitCode, describe
from ._output import Output

__all__ = ["Context", "run"]


class Context:
    """One command run: its arguments, its output, and (on demand) its credentials."""

    def __init__(self, args: argparse.Namespace, out: Output) -> None:
        self.args = args
        self.out = out
        self._credentials: Credentials | None = None

    @property
    def credentials(self) -> Credentials:
        """Flags and environment combined; raises a :class:`CliError` saying what is missing."""
        if self._credentials is None:
            self._credentials = resolve_credentials(
                account=self.args.account,
                authkey_file=self.args.authkey_file,
                base_url=self.args.base_url,
                data_url=self.args.data_url,
            )
        return self._credentials

    @property
    def account(self) -> str | None:
        return self._credentials.account if self._credentials else None

    def client(self, *, max_concurrency: int = 16) -> AisixClient:
        """A client for the resolved credentials, retrying per ``--retry-timeout``."""
        creds = self.credentials
        return AisixClient(
            creds.account,
            creds.authkey,
            base_url=creds.base_url,
            data_url=creds.data_url,
            timeout=self.args.timeout,
            retry=RetryPolicy(timeout=self.args.retry_timeout, attempts=1000),
            max_concurrency=max_concurrency,
            # Unset: the client reads $AISIX_SHARED_LIMIT itself.
            shared_limit=getattr(self.args, "shared_limit", None),
        )

    @property
    def url(self) -> str | None:
        creds = self._credentials
        if creds is None:
            return None
        return creds.base_url or "http://api.aisix.com/OpenPlatform"


Command = Callable[[Context], Awaitable[int]]


#: command -> (module, function); imported on use, so `aisix balance` does not pay for
#: importing the demo's emulator.
_COMMANDS = {
    "balance": ("_commands", "balance"),
    "channels": ("_commands", "channels"),
    "signs": ("_commands", "signs"),
    "reports": ("_commands", "reports"),
    "replies": ("_commands", "replies"),
    "rotate-key": ("_commands", "rotate_key"),
    "send": ("_send", "send"),
    "demo": ("_demo", "demo"),
}


def _command(name: str) -> Command:
    module, function = _COMMANDS[name]
    found: Command = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return found


def _key_on_command_line(argv: list[str]) -> bool:
    """Whether someone tried to pass the key itself as a flag (never echo what follows)."""
    return any(arg == "--authkey" or arg.startswith("--authkey=") for arg in argv)


def _leaf(error: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (task groups wrap).

    Duck-typed on ``exceptions``: on Python 3.10 the groups come from the exceptiongroup
    backport, which anyio installs there, and this module need not import it.
    """
    while True:
        inner = getattr(error, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return error
        if not isinstance(inner[0], BaseException):  # pragma: no cover - defensive
            return error
        error = inner[0]


def run(argv: list[str]) -> int:
    """Parse ``argv``, run the command, and return its exit code."""
    if _key_on_command_line(argv):
        # Said before argparse, whose error would quote the key back.
        print(
            "aisix: error: there is no --authkey option: a key on the command line lands in "
            "shell history and process lists. Set AISIX_AUTHKEY or use --authkey-file PATH.",
            file=sys.stderr,
        )
        return int(ExitCode.USAGE)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 after --help
        return int(exc.code) if isinstance(exc.code, int) else int(ExitCode.USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    out = Output(json_mode=args.json, quiet=args.quiet)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="aisix: %(levelname)s %(message)s"
        )
    ctx = Context(args, out)
    command = _command(args.command)
    try:
        return int(anyio.run(command, ctx))
    except KeyboardInterrupt:
        out.error("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BaseException as raised:  # every failure becomes a sentence
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            out.error("interrupted")
            return int(ExitCode.INTERRUPTED)
        if isinstance(error, (SystemExit, GeneratorExit)):
            raise
        try:
            problem = describe(error, account=ctx.account, url=ctx.url)
        except BaseException:
            raise raised from None
        out.error(problem.message)
        return int(problem.code)
