"""The argument parser: every command, its options and its ``--help``.

Options shared by the commands that talk to a gateway (credentials, URLs, output) are
accepted after the command name (``aisix balance --json``), where people type them.
There is deliberately no option taking the authkey itself (see ``_credentials``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .. import PollKeywords, __version__
from ._exit import EXIT_CODES_HELP, CliError, ExitCode, exit_codes_help, redact_keys

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "ONE_PASS_RETRY",
    "build_parser",
    "option_name",
    "poll_interval",
    "poll_options",
]

DEFAULT_POLL_INTERVAL = 5.0
#: How long one pass over a queue (``reports``, ``replies`` without --follow or
#: --until-idle) retries polls that fail (a -10, a lost answer) before it ends with
#: their error (exit 4): long enough for a few retries, short enough for a script.
ONE_PASS_RETRY = 5.0

_DESCRIPTION = """\
aisix: send SMS through the Aisix gateway, follow delivery reports, and try it all
offline against a built-in emulator (aisix demo).
"""

_SEND_EPILOG = """\
inputs (one of):
  FILE or stdin           numbers, one per line (blank lines and # comments skipped)
  --csv FILE --column C   numbers from column C of a CSV file with a header row
  --batch FILE            a CSV of (mobile, content) rows: each recipient its own text

examples:
  aisix send numbers.txt --content "Your code is 1234"
  aisix send --csv users.csv --column phone --template "Hi {p1}, code {p2}" \\
      --param-columns name,code
  aisix send numbers.txt --content "Sale!" --journal sale.db   # run again to resume
  aisix send numbers.txt --content "Sale!" --dry-run           # estimate, send nothing
"""


# What each command's --help lists: the exit codes it can return and the environment
# variables it reads, as traced in the code; `aisix --help` lists them all.
#
# Every command: 2 (argparse refuses bad usage; CliError's default), 130 (_app turns a
# Ctrl-C into it) and 141 (_app's _stdout_closed, or a BrokenPipeError of a write).
_EVERY = (ExitCode.USAGE, ExitCode.INTERRUPTED, ExitCode.STDOUT_CLOSED)
# And those that talk to the gateway: 0, and 4 for what describe() makes of the SDK's
# errors (a refused account, a network, -1 that never clears).
_GATEWAY_CODES = (ExitCode.OK, ExitCode.GATEWAY, *_EVERY)
# resolve_credentials reads the account, key and both URLs (an empty URL variable is
# refused even where the command needs no DataApi); AisixClient reads
# AISIX_SHARED_LIMIT itself unless given a value, which only send's --shared-limit
# gives; Context.client() loads and saves the rate cache unless --no-rate-cache.
_GATEWAY_ENV = (
    "AISIX_ACCOUNT",
    "AISIX_AUTHKEY",
    "AISIX_BASE_URL",
    "AISIX_DATA_URL",
    "AISIX_SHARED_LIMIT",
    "AISIX_HTTP_STACK",
    "XDG_CACHE_HOME",
)
# The commands whose records a closed stdout keeps in $XDG_STATE_HOME (_output's
# KEEPS_UNPRINTED, not imported: --help works without rich, which _output needs).
_KEEPS = ("XDG_STATE_HOME",)
_EPILOGS = {
    "send": exit_codes_help(
        # 1: recipients refused; 3: unknown outcomes (send/report.py).
        (*_GATEWAY_CODES, ExitCode.FAILED, ExitCode.UNKNOWN),
        (*_GATEWAY_ENV, *_KEEPS),
    ),
    "balance": exit_codes_help(_GATEWAY_CODES, _GATEWAY_ENV),
    "channels": exit_codes_help(_GATEWAY_CODES, _GATEWAY_ENV),
    "signs": exit_codes_help(_GATEWAY_CODES, _GATEWAY_ENV),
    # 5: --journal --until-idle with reports still pending (_delivery).
    "reports": exit_codes_help((*_GATEWAY_CODES, ExitCode.PENDING), (*_GATEWAY_ENV, *_KEEPS)),
    "replies": exit_codes_help(_GATEWAY_CODES, (*_GATEWAY_ENV, *_KEEPS)),
    # 3: the answer to updateKey was lost (_commands.rotate_key).
    "rotate-key": exit_codes_help((*_GATEWAY_CODES, ExitCode.UNKNOWN), (*_GATEWAY_ENV, *_KEEPS)),
    # The journal alone: no client, no rate cache, no records kept. AISIX_AUTHKEY is
    # looked at only to refuse the key typed into an argument; it configures nothing,
    # and its line (the key, or --authkey-file) would say credentials are needed.
    "campaign": exit_codes_help((ExitCode.OK, *_EVERY)),
    # The demo's client is given the emulator's account, key and URL; 1: the check
    # failed; 4: the client gave up on the emulator (its faults, past the retry time).
    # It names its own endpoints and shares no limit, so of the environment only the
    # HTTP stack applies.
    "demo": exit_codes_help(
        (ExitCode.OK, ExitCode.FAILED, ExitCode.GATEWAY, *_EVERY), ("AISIX_HTTP_STACK",)
    ),
}

#: The arguments whose dest does not name them: the positionals, and --numbers.
_NAMED_APART = {
    "numbers": "the numbers FILE",
    "journal_file": "the journal FILE",
    "numbering": "--numbers",
}


def option_name(dest: str) -> str:
    """How a person typed the argument parsed into ``dest`` ("--journal"), for messages."""
    return _NAMED_APART.get(dest, "--" + dest.replace("_", "-"))


def poll_interval(args: argparse.Namespace) -> float:
    """``--interval``, refused where nothing polls twice (one pass over the queue)."""
    if args.interval is None:
        return DEFAULT_POLL_INTERVAL
    if not (args.follow or args.until_idle is not None):
        # A typo'd --follow would otherwise go unnoticed: one pass, then exit.
        raise CliError(
            "--interval applies to --follow or --until-idle; without them, one pass is read"
        )
    return float(args.interval)


def poll_options(args: argparse.Namespace) -> PollKeywords:
    """How a ``reports`` or ``replies`` stream polls, and when it ends (``--interval``
    refused here, before anything is opened or fetched, as :func:`poll_interval` says)."""
    interval = poll_interval(args)
    # --until-idle implies --follow; --follow alone runs until Ctrl-C.
    if args.until_idle is not None:
        return {"interval": interval, "stop_when_idle": float(args.until_idle)}
    if args.follow:
        return {"interval": interval, "stop_when_idle": None}
    # One pass: it ends at the first empty answer, but a failed poll is retried for a
    # while, as a follower's is, not taken for the end: the first -10 ended it with
    # exit 4, the queue still full.
    return {"interval": interval, "stop_when_idle": 0.0, "stop_when_failing": ONE_PASS_RETRY}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors never quote a key typed in the wrong place."""

    #: A command's own parser (``aisix send``'s): it refuses an option it does not know
    #: with its own usage. argparse leaves that to the top-level parser, whose usage
    #: ("aisix [-h] [--version] COMMAND ...") told an operator who typed --contnet
    #: nothing about the options of the command he meant.
    refuses_unknown = False

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it could not use ("unrecognized arguments: --auth KEY").
        super().error(redact_keys(message))

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra and self.refuses_unknown:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def _number(
    kind: Callable[[str], float], name: str, valid: Callable[[float], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, refused unless ``valid``, saying ``rule``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {name}: {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "at least 1")
_non_negative_int = _number(int, "a whole number", lambda v: v >= 0, "0 or more")
# Finite too: "inf" parses as a float, and a timeout that never ends is not a timeout.
_positive_float = _number(float, "a number", lambda v: 0 < v < math.inf, "positive and finite")


def _output_options() -> _Parser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("output")
    group.add_argument(
        "--json", action="store_true", help="machine-readable output: one JSON object per line"
    )
    group.add_argument("-q", "--quiet", action="store_true", help="no progress or notes on stderr")
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log requests and retries on stderr"
    )
    return parent


def _gateway_options() -> _Parser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group(
        "gateway and credentials",
        "the key comes from AISIX_AUTHKEY or --authkey-file, never from a flag",
    )
    group.add_argument("--account", metavar="STAFF@ENT", help="default: $AISIX_ACCOUNT")
    group.add_argument(
        "--authkey-file",
        metavar="PATH",
        help="read the key from this file (default: $AISIX_AUTHKEY)",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="e.g. http://api.aisix.com/OpenPlatform (default: $AISIX_BASE_URL, then that)",
    )
    group.add_argument("--data-url", metavar="URL", help="the DataApi URL if not under --base-url")
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="per-request timeout (default 30)",
    )
    group.add_argument(
        "--no-rate-cache",
        action="store_true",
        help="neither start from nor keep the pace learned for this account "
        "(kept in the user's cache folder, aisix/rate/)",
    )
    group.add_argument(
        "--retry-timeout",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="give up retrying one request after -1 answers after this long (default 120); "
        "a connection that cannot be made is retried for 10 s, or this long if shorter",
    )
    return parent


def _add_send(
    sub: argparse._SubParsersAction[_Parser],
    parents: list[_Parser],
) -> None:
    send = sub.add_parser(
        "send",
        allow_abbrev=False,
        parents=parents,
        help="send one content, a template, or a batch to many numbers",
        description="Send SMS to many recipients: chunked, rate-adaptive, every recipient "
        "accounted for.",
        epilog=_SEND_EPILOG + "\n" + _EPILOGS["send"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = send.add_argument_group("recipients")
    inputs.add_argument(
        "numbers", nargs="?", metavar="FILE", help="numbers, one per line ('-' or omitted: stdin)"
    )
    inputs.add_argument("--csv", metavar="FILE", help="a CSV file with a header row")
    inputs.add_argument("--column", metavar="NAME", help="the CSV column holding the numbers")
    inputs.add_argument(
        "--batch",
        metavar="FILE",
        help="a CSV of mobile,content rows (header optional; columns 'mobile' and 'content')",
    )
    inputs.add_argument(
        "--numbers",
        dest="numbering",
        choices=("cn-mobile", "e164", "lenient"),
        default="cn-mobile",
        help="which numbers are valid: cn-mobile (default): mainland China mobiles, 11 digits; "
        "e164: any country's, checked by phonenumbers (the phonenumbers extra; a number "
        "without + is read as Chinese); lenient: 3 to 20 digits, an optional +",
    )
    inputs.add_argument(
        "--skip-invalid",
        action="store_true",
        help="report invalid numbers as failed and send the rest (default: refuse the run)",
    )
    what = send.add_argument_group("message")
    what.add_argument("--content", metavar="TEXT", help="the text every recipient receives")
    what.add_argument(
        "--template",
        metavar="TEXT",
        help="a template with {p1}..{p10}, values from --param-columns of the --csv",
    )
    what.add_argument(
        "--param-columns",
        metavar="A,B,...",
        help="the CSV columns giving {p1}, {p2}, ... in order",
    )
    what.add_argument(
        "--cgid",
        type=_non_negative_int,
        help="channel group (0 or left out: the account's default, as in the library)",
    )
    what.add_argument(
        "--csid", type=_non_negative_int, help="signature id (0: the default signature)"
    )
    what.add_argument(
        "--at",
        metavar="ISO-8601",
        help="schedule for this time, with its zone (e.g. 2030-01-31T09:00+08:00); "
        "a time without zone is refused",
    )
    run = send.add_argument_group("run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check every input and print the estimate (units, cost, balance); send nothing; "
        "exit as the send would start (2: invalid lines, 4: balance too low, 1: lines "
        "--skip-invalid would report as failed)",
    )
    run.add_argument(
        "--journal",
        metavar="FILE",
        help="record the campaign in this SQLite file; running the same command again "
        "resumes it (never resending what was accepted)",
    )
    run.add_argument(
        "--resend-unknown",
        action="store_true",
        help="with --journal: resend recipients whose outcome is unknown (may send twice!)",
    )
    run.add_argument(
        "--no-balance-check",
        action="store_true",
        help="do not refuse the run when the estimate exceeds the balance",
    )
    run.add_argument(
        "--chunk-size",
        type=_positive_int,
        metavar="N",
        help="numbers per sendOnce request (at most 1000, the default); --content sends only",
    )
    run.add_argument(
        "--outcomes",
        metavar="FILE",
        help="write one CSV line per recipient: mobile,status,msgid,error, flushed as each "
        "chunk settles; an existing FILE is appended to (the header is written only when "
        "it is new or empty), so a resumed --journal run adds its own lines; a pipe or "
        "FIFO (/dev/stdout into |, >(gzip > FILE)) gets the header, then its lines",
    )
    run.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="at most N requests at once (default 16; the client adapts below it)",
    )
    run.add_argument(
        "--shared-limit",
        metavar="URL",
        help="share the account's learned pace with every other sender of it (other "
        "processes, other hosts) through Redis at URL, e.g. redis://cache:6379/0 "
        '(default: $AISIX_SHARED_LIMIT; "" turns it off; needs the redis extra: pip install '
        "'.[redis]' in a clone of the repository)",
    )


def _add_reports_journal(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--journal",
        metavar="FILE",
        help="the campaign journal of an aisix send --journal: each batch of reports is "
        "written there before it is shown, unknown chunks they prove sent are settled, and "
        "stderr shows the campaign's delivery (delivered / failed / pending by code); "
        "reports not the campaign's are kept and counted apart. With --until-idle it exits "
        "0 when no report is pending, 5 when some are",
    )


def _add_campaign(sub: argparse._SubParsersAction[_Parser], output: _Parser) -> None:
    text = "show a campaign journal's state without sending; --export one line per recipient"
    cmd = sub.add_parser(
        "campaign",
        allow_abbrev=False,
        parents=[output],
        help=text,
        description="Where a campaign stands, from its journal alone: accepted / failed / "
        "unknown / not yet sent, units and cost, delivery by operator code, reports still "
        "pending, reports not the campaign's, and when each run happened. Sends nothing and "
        "needs no credentials. While a send runs on the journal, it is read as committed so "
        "far (read only).",
        epilog=_EPILOGS["campaign"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("journal_file", metavar="FILE", help="the journal of aisix send --journal")
    cmd.add_argument(
        "--export",
        metavar="OUT.csv",
        help="write one CSV line per recipient the journal knows (mobile, position, status, "
        "msgid, delivery, reported_at), streamed from the journal a chunk at a time; an "
        "existing OUT.csv is rewritten only when it is empty or an earlier export; - writes "
        "the CSV alone to stdout",
    )
    cmd.add_argument(
        "--take-reports-from",
        metavar="OTHER.db",
        action="append",
        default=[],
        help="record in FILE this campaign's delivery reports that the journal OTHER.db "
        "holds as not its own (a follower of another campaign on the account took them: "
        "the gateway keeps one report queue per account); OTHER.db is only read; "
        "repeatable; taken again, only what OTHER.db fetched since is looked at",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``aisix`` parser with all its commands."""
    # Sub-command parsers are made of the same class (argparse's parser_class default).
    parser = _Parser(
        prog="aisix",
        # No abbreviations: "--authkey KEY" must not be taken for "--authkey-file KEY".
        allow_abbrev=False,
        description=_DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aisix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    output, gateway = _output_options(), _gateway_options()
    both = [gateway, output]

    def simple(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            allow_abbrev=False,
            parents=both,
            help=text,
            description=text,
            epilog=_EPILOGS[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    demo = sub.add_parser(
        "demo",
        allow_abbrev=False,
        parents=[output],
        help="run a whole campaign against a local emulator, offline, and check it",
        description="Start the gateway emulator on 127.0.0.1 with a rate limit the client "
        "is not told, some faults and delivery reports; send a campaign by sendOnce, "
        "sendBatch and sendParam; wait for the reports; check every figure against the "
        "emulator's own record. Exit 0 only if the check passed.",
        epilog=_EPILOGS["demo"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--size", type=_positive_int, default=100_000, help="numbers sent by sendOnce (100000)"
    )
    demo.add_argument(
        "--rate",
        type=_positive_float,
        default=20.0,
        help="the emulator's hidden limit, requests per second (20)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed for numbers, faults, reports")
    demo.add_argument(
        "--report-wait",
        type=_positive_float,
        default=20.0,
        metavar="SECONDS",
        help="wait at most this long for delivery reports (20)",
    )

    _add_send(sub, both)
    simple("balance", "show the account's balance")
    simple("channels", "list the channel groups the account may use, with their prices")
    simple("signs", "list the signatures the account may use (csid 0 is the default)")
    for name, what in (("reports", "delivery reports"), ("replies", "replies from recipients")):
        cmd = simple(
            name,
            f"fetch {what} (the gateway hands each out once: they are printed as they come)",
        )
        cmd.add_argument("-f", "--follow", action="store_true", help="keep polling until Ctrl-C")
        cmd.add_argument(
            "--interval",
            type=_positive_float,
            metavar="SECONDS",
            help="with --follow or --until-idle: poll at least this often when nothing "
            f"comes ({DEFAULT_POLL_INTERVAL:g})",
        )
        cmd.add_argument(
            "--until-idle",
            type=_positive_float,
            metavar="SECONDS",
            help="follow, and end by itself once nothing has come for SECONDS",
        )
        if name == "reports":
            _add_reports_journal(cmd)
    _add_campaign(sub, output)
    rotate = simple(
        "rotate-key",
        "rotate the account's authkey; the new key is printed ONCE: store it at once",
    )
    rotate.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (the old key dies)"
    )
    rotate.add_argument(
        "--write-to",
        metavar="PATH",
        help="also write the new key to this file (mode 600), replacing it atomically; an "
        "existing PATH must be empty or hold a key alone (an earlier key file), or nothing "
        "is rotated",
    )
    sub.add_parser(
        "emulator",
        help="run the gateway emulator (aisix emulator --help for its options)",
        add_help=False,
    )
    for command in sub.choices.values():
        if isinstance(command, _Parser):
            command.refuses_unknown = True
    return parser
