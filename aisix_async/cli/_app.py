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
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

from .. import (
    AisixClient,
    Numbering,
    RateState,
    RetryDetails,
    RetryPolicy,
    TransportError,
    ValidationError,
)
from ..validation import check_authkey
from . import _rate_cache
from ._args import build_parser
from ._credentials import Credentials, Secret, refuse_key_in_arguments, resolve_credentials
from ._exit import ExitCode, describe, redact_keys
from ._output import Output, counted
from ._signals import held_signals, interrupted, restore_signals, stop_as_interrupt

__all__ = ["UNREACHABLE_RETRY", "Context", "run"]

#: Seconds a gateway that refuses connections is retried (at most --retry-timeout).
UNREACHABLE_RETRY = 10.0


class Context:
    """One command run: its arguments, its output, and (on demand) its credentials."""

    def __init__(self, args: argparse.Namespace, out: Output) -> None:
        self.args = args
        self.out = out
        self._credentials: Credentials | None = None
        self._told_unreachable = False
        self._clients: list[tuple[AisixClient, RateState | None]] = []

    @property
    def credentials(self) -> Credentials:
        """Flags and environment combined; raises a :class:`CliError` saying what is missing."""
        if self._credentials is None:
            creds = resolve_credentials(
                account=self.args.account,
                authkey_file=self.args.authkey_file,
                base_url=self.args.base_url,
                data_url=self.args.data_url,
            )
            # Every command asks for its credentials before it sends or creates a file.
            refuse_key_in_arguments(vars(self.args), creds.authkey)
            self._credentials = creds
        return self._credentials

    def refuse_key_from_environment(self) -> None:
        """For a command that needs no credentials: refuse, as one that does would, the
        key of AISIX_AUTHKEY typed into an argument (``aisix campaign j.db --export
        "$KEY"`` made a file named after it, and said so)."""
        # A Secret, as in resolve_credentials: the refusal leaves this frame to error
        # trackers, which print its locals.
        key = Secret(os.environ.get("AISIX_AUTHKEY", "").strip())
        try:
            check_authkey(key)
        except ValidationError:
            return  # not a key: nothing that could be one to look for
        refuse_key_in_arguments(vars(self.args), key)

    @property
    def account(self) -> str | None:
        return self._credentials.account if self._credentials else None

    def client(self, *, max_concurrency: int = 16, numbers: Numbering = "lenient") -> AisixClient:
        """A client for the resolved credentials, retrying per ``--retry-timeout``."""
        creds = self.credentials
        limit = self.args.retry_timeout
        # A gateway that refuses connections is retried briefly (a restart), not for the
        # whole --retry-timeout meant for -1 answers; a shorter --retry-timeout holds.
        unreachable = min(limit, UNREACHABLE_RETRY)
        cached = None
        if self._use_rate_cache:
            cached = _rate_cache.load(creds.account, self._cache_url)
        client = AisixClient(
            creds.account,
            creds.authkey,
            base_url=creds.base_url,
            data_url=creds.data_url,
            timeout=self.args.timeout,
            retry=RetryPolicy(timeout=limit, attempts=1000, unreachable_timeout=unreachable),
            on_retry=lambda details: self._on_retry(details, unreachable),
            max_concurrency=max_concurrency,
            numbers=numbers,
            rate_state=cached,
            # Unset: the client reads $AISIX_SHARED_LIMIT itself.
            shared_limit=getattr(self.args, "shared_limit", None),
        )
        self._clients.append((client, cached))
        return client

    def _on_retry(self, details: RetryDetails, unreachable: float) -> None:
        # Said at the first failed connection, not after the retries: a person must not
        # sit in front of a silent terminal wondering whether anything is happening.
        cause = details.cause
        if self._told_unreachable or not isinstance(cause, TransportError):
            return
        if cause.request_sent:
            return
        self._told_unreachable = True
        # The DataApi (reports, replies) by its own URL: --data-url may put it elsewhere.
        where = self.url
        if cause.setting == "data_url" and cause.url:
            where = f"{cause.url} (the DataApi: --data-url or AISIX_DATA_URL, if given)"
        self.out.warn(
            f"cannot reach the gateway at {where}: {cause.message}; retrying for up to "
            f"{unreachable:g} s (10 s, or --retry-timeout if shorter)"
        )

    def rate_cache_note(self, client: AisixClient) -> str | None:
        """What to say of a client that starts at a pace from the rate cache, if it does.

        Said because it is otherwise invisible: a pace cached low (runs that shared the
        account, a plan raised since) held a user's run at 5 requests/s for most of
        its 28 s, with no -1 and nothing on the screen to say why (a user's trial).
        """
        cached = next((c for known, c in self._clients if known is client), None)
        pace = client.stats().pace
        if cached is None or cached.pace is None or pace is None:
            return None
        age = max(0.0, time.time() - cached.learned_at)
        if age < 90:
            when = f"{age:.0f} s"
        elif age < 5400:
            when = f"{age / 60:.0f} min"
        else:
            when = f"{age / 3600:.1f} h"
        return (
            f"starting at {_rate_text(pace)} requests/s: the rate cache holds "
            f"{_rate_text(cached.pace)}, measured {when} ago for this account and URL (a "
            "limit raised since is found again by probing; --no-rate-cache starts cold)"
        )

    @property
    def _use_rate_cache(self) -> bool:
        return not getattr(self.args, "no_rate_cache", True)

    @property
    def _cache_url(self) -> str:
        return self.url or ""

    def save_rate_states(self) -> None:
        """Keep what the command's clients learned about the limit (see _rate_cache)."""
        if not self._use_rate_cache or self._credentials is None:
            return
        for client, cached in self._clients:
            state = client.rate_state()
            # Only a client that measured the limit learned something worth keeping: a
            # balance check must not replace what a send found, and a run that never met
            # the limit leaves the file (and its date) as it was.
            if state.pace is None or (
                cached is not None
                and (state.pace, state.learned_at) == (cached.pace, cached.learned_at)
            ):
                continue
            _rate_cache.save(client.account, self._cache_url, state)

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
    "send": ("send.command", "send"),
    "demo": ("_demo", "demo"),
    "campaign": ("_delivery", "campaign"),
}


def _rate_text(rate: float) -> str:
    # Three figures, but never as an exponent: "1e+03 requests/s" read as a typo.
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def _command(name: str) -> Command:
    module, function = _COMMANDS[name]
    found: Command = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return found


def _key_on_command_line(argv: list[str]) -> bool:
    """Whether someone tried to pass the key itself as a flag (never echo what follows)."""
    return any(arg == "--authkey" or arg.startswith("--authkey=") for arg in argv)


def leaf_error(error: BaseException) -> BaseException:
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


class _OperatorLog(logging.Filter):
    """The library's warnings as an operator reads them, minus what the command says itself.

    Without a handler, Python prints the SDK's warnings raw ("bulk send: stopping
    dispatch: ...", "updateKey: the authkey of ... was rotated") beside the command's own
    sentence about the same event. A stopped send and a rotated key are reported by the
    commands (their summary and error line); the rest (a report poll failing and going
    on, an unreadable record) keeps its line, in the command line's form.
    """

    _SAID_BY_THE_COMMANDS = ("bulk send: stopping dispatch", "updateKey: the authkey")

    def filter(self, record: logging.LogRecord) -> bool:
        # A call that gave up (its record carries the call's ``outcome``) ends in an error
        # the command reports in its own words; only an unknown outcome keeps its line.
        if getattr(record, "outcome", "unknown") != "unknown":
            return False
        message = record.getMessage()
        if message.startswith(self._SAID_BY_THE_COMMANDS):
            return False
        record.msg, record.args = redact_keys(message), None
        record.cli_level = record.levelname.lower()
        return True


def _library_warnings() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_OperatorLog())
    handler.setFormatter(logging.Formatter("aisix: %(cli_level)s: %(message)s"))
    library = logging.getLogger("aisix_async")
    if any(isinstance(f, _OperatorLog) for h in library.handlers for f in h.filters):
        return  # run() called again in the same process
    library.addHandler(handler)


#: Where the records a command printed are kept besides stdout, for the commands whose
#: records the gateway hands out once (or that say who was charged).
_RECORD_TO_RELY_ON = {
    "send": "a --journal or --outcomes file is the record to rely on",
    "reports": "a --journal is the record to rely on",
    "replies": (
        "nothing else holds replies (the gateway hands each out once): to keep every "
        "one, write them to a file (aisix replies > FILE)"
    ),
}


def reader_may_have_dropped(command: str, taken: int) -> str | None:
    """The caveat of a closed pipe about the ``taken`` records it did take, for the
    commands that have one; None when stdout took none (nothing to drop) or for others.

    A pipe gives no receipt: ``head -1`` reads a block and prints one line, so what stdout
    took before it closed may have been read and dropped. Said the same way whichever
    command it is (replies said nothing at all).
    """
    rely = _RECORD_TO_RELY_ON.get(command)
    if rely is None or not taken:
        return None
    return (
        "A reader that stopped early, like head, may also have dropped some of the "
        f"{counted(taken, 'record', 'records')} stdout took: {rely}"
    )


def _stdout_closed(out: Output, command: str, code: int) -> int:
    """Say what a closed stdout left behind; the exit code it makes of ``code``."""
    count, path = out.unprinted
    if count:
        on_stderr = out.unprinted_on_stderr
        where = "printed on stderr above"
        if path is not None and on_stderr:  # the file filled: the rest went to stderr
            where = f"{count - on_stderr:,} kept in {path} and {on_stderr:,} {where}"
        elif path is not None:
            where = f"kept in {path}"
        said = (
            f"{out.stdout_trouble}: {count:,} record(s) it could not take: {where}, as JSON lines"
        )
        caveat = reader_may_have_dropped(command, out.taken_by_stdout)
        if caveat is not None:
            said += f". {caveat}"
        out.error(said)
    elif command == "send":
        out.warn(f"{out.stdout_trouble}: the summary above is on stderr")
    if code == ExitCode.INTERRUPTED or command == "send":
        # A send's code says itself whether the closure stopped it (141) or it had
        # sent everything (its own code: 3 for unknown outcomes matters more).
        return code
    if command == "rotate-key" and not count:
        return code  # the new key is in the --write-to file: nothing was lost
    return int(ExitCode.STDOUT_CLOSED)


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
    out = Output(json_mode=args.json, quiet=args.quiet, command=args.command)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="aisix: %(levelname)s %(message)s"
        )
    else:
        _library_warnings()
    ctx = Context(args, out)
    command = _command(args.command)
    saved = stop_as_interrupt()
    try:
        code = _execute(ctx, command)
        late, ended = held_signals()
        if out.signal_ended_wait:
            # What the reader had not taken is kept (said above), not cut off by an exit.
            out.error("interrupted again while stdout's reader had not taken all of the output")
            return int(ExitCode.INTERRUPTED)
        if late:
            # Said, or the operator would not know whether the key press did anything.
            out.warn(f"{signal.Signals(late[0]).name} came after {ended}: it stopped nothing")
        return code
    finally:
        # Last: a signal held once a send ended (see hold_stop_signals) stays held while
        # the rate cache is saved and the last lines are written.
        restore_signals(saved)


def _execute(ctx: Context, command: Command) -> int:
    """Run ``command`` on an event loop; its exit code, or that of what it raised."""
    out, args = ctx.out, ctx.args
    code: int | None = None
    try:
        try:
            code = int(anyio.run(command, ctx))
        finally:
            ctx.save_rate_states()
            # A command that ended as it should waits for stdout's reader as long as it
            # reads; one interrupted (or failed) does not wait forever for one that stalled.
            out.close(patient=code is not None and code != ExitCode.INTERRUPTED)
        return _stdout_closed(out, args.command, code) if out.stdout_closed else code
    except KeyboardInterrupt:
        return _interrupted(out, args.command)
    except BaseException as raised:  # every failure becomes a sentence
        error = leaf_error(raised)
        if isinstance(error, BrokenPipeError):
            # A write outside Output's care (an export to stdout): a code, no traceback.
            out.mark_stdout_closed()
            return _stdout_closed(out, args.command, ExitCode.STDOUT_CLOSED)
        if isinstance(error, KeyboardInterrupt) or (
            interrupted() and not isinstance(error, (SystemExit, GeneratorExit))
        ):
            return _interrupted(out, args.command)
        if isinstance(error, (SystemExit, GeneratorExit)):
            raise
        try:
            problem = describe(error, account=ctx.account, url=ctx.url)
        except BaseException:
            raise raised from None
        out.error(problem.message)
        if out.stdout_closed:
            _stdout_closed(out, args.command, problem.code)
        return int(problem.code)


def _interrupted(out: Output, command: str) -> int:
    out.error("interrupted")
    if out.stdout_closed:
        _stdout_closed(out, command, ExitCode.INTERRUPTED)
    return int(ExitCode.INTERRUPTED)
