"""Exit codes, and the one place SDK errors become a sentence for an operator.

A script driving ``aisix send`` decides what to do next from the exit code alone, so the
codes separate the cases that call for different actions: fix the command (2), look at
the refused numbers (1), do NOT resend blindly (3), fix the account or the network (4).
Unknown beats failed: a recipient whose fate is unknown may already have been charged,
and a script that resends on 1 must not do so on 3.

Messages name the account and the setting to check; they never quote the authkey (the
SDK's errors never carry it, and nothing here adds it).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from .. import (
    AccountFormatError,
    AisixError,
    AuthenticationError,
    BalanceTooLowError,
    CampaignError,
    ChannelGroupNotAllowedError,
    EndpointError,
    EnterpriseUnavailableError,
    ExtraNotInstalledError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    KeyLockedError,
    RateLimitedError,
    SharedLimitError,
    StaffUnavailableError,
    TransportError,
    ValidationError,
)
from ..validation import redact_keys

__all__ = [
    "ENVIRONMENT",
    "EXIT_CODES_HELP",
    "CliError",
    "ExitCode",
    "describe",
    "exit_codes_help",
    "redact_keys",
]


class ExitCode(enum.IntEnum):
    """What ``aisix`` exits with."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNKNOWN = 3
    GATEWAY = 4
    PENDING = 5
    INTERRUPTED = 130
    STDOUT_CLOSED = 141


#: Each exit code's lines in ``--help``, in order. A command's help lists those it can
#: return (see ``_args``); ``aisix --help`` lists them all.
_CODE_LINES = {
    ExitCode.OK: "  0    success: every recipient accepted (demo: the self-check passed)\n",
    ExitCode.FAILED: """\
  1    some recipients failed: refused, nothing charged for them (demo: check failed)
""",
    ExitCode.USAGE: """\
  2    usage or configuration error (bad arguments or input, missing credentials or
       extra, a base URL where no gateway answers, requests too large for the server
       at it, a Redis that refuses --shared-limit's password); nothing was sent
""",
    ExitCode.UNKNOWN: """\
  3    some recipients have an UNKNOWN outcome: they may have been sent and charged;
       do not resend them blindly (with --journal, the journal lists them)
""",
    ExitCode.GATEWAY: """\
  4    the gateway refused the account or could not be reached (wrong or locked key,
       -1 that never clears, balance too low, network; with --until-idle: every poll
       failed for the whole idle time; without --follow: every poll failed for 5 s)
""",
    ExitCode.PENDING: """\
  5    reports --journal --until-idle: the reports stopped coming while some of the
       campaign's recipients still wait for one (or have an unknown outcome)
""",
    ExitCode.INTERRUPTED: "  130  interrupted (Ctrl-C) after printing what was sent\n",
    ExitCode.STDOUT_CLOSED: """\
  141  stdout was closed early (| head, a reader that died): the command stopped as at
       a Ctrl-C
""",
}

#: Each environment variable's lines in ``--help``, in order; a command's help lists
#: those it reads (see ``_args``).
ENVIRONMENT = {
    "AISIX_ACCOUNT": "  AISIX_ACCOUNT    the account, staff@enterprise (or --account)\n",
    "AISIX_AUTHKEY": """\
  AISIX_AUTHKEY    the authentication key (or --authkey-file PATH; there is no
                   flag taking the key itself: it would land in shell history)
""",
    "AISIX_BASE_URL": "  AISIX_BASE_URL   e.g. http://api.aisix.com/OpenPlatform (or --base-url)\n",
    "AISIX_DATA_URL": """\
  AISIX_DATA_URL   the DataApi URL when it lives elsewhere (or --data-url)
""",
    "AISIX_SHARED_LIMIT": """\
  AISIX_SHARED_LIMIT
                   redis://... : share the account's pace with other processes
                   through Redis (or send --shared-limit)
""",
    "AISIX_HTTP_STACK": """\
  AISIX_HTTP_STACK httpx or httpx2: the HTTP stack (default: httpx2 when installed,
                   else httpx)
""",
    "XDG_CACHE_HOME": """\
  XDG_CACHE_HOME   where the rate cache lives ($XDG_CACHE_HOME/aisix/rate/, else
                   ~/.cache/aisix/rate/; send --no-rate-cache skips it)
""",
    "XDG_STATE_HOME": """\
  XDG_STATE_HOME   where records a closed stdout could not take are kept
                   ($XDG_STATE_HOME/aisix/unprinted/, else ~/.local/state/...)
""",
}


#: The 141 line of the commands that keep what a closed stdout could not take: those
#: that say where (XDG_STATE_HOME). The others' line promises no file.
_STDOUT_CLOSED_KEEPING = _CODE_LINES[ExitCode.STDOUT_CLOSED].removesuffix("\n") + (
    "; records it could not print are kept in a file named on stderr\n"
)


def exit_codes_help(codes: Iterable[ExitCode], variables: Iterable[str] = ()) -> str:
    """The epilog listing ``codes`` and the environment ``variables``, in the usual order."""
    wanted, named = set(codes), set(variables)
    lines = dict(_CODE_LINES)
    if "XDG_STATE_HOME" in named:
        lines[ExitCode.STDOUT_CLOSED] = _STDOUT_CLOSED_KEEPING
    text = "exit codes:\n" + "".join(line for c, line in lines.items() if c in wanted)
    if named:
        text += "\nenvironment:\n" + "".join(
            line for name, line in ENVIRONMENT.items() if name in named
        )
    return text


EXIT_CODES_HELP = exit_codes_help(ExitCode, ENVIRONMENT)


class CliError(Exception):
    """A problem the command line reports in one sentence and an exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_TRIES = re.compile(r"still refused after \d+ attempts")

#: Where the command line takes each of the client's URLs from.
_URL_OPTIONS = {
    "base_url": "--base-url or AISIX_BASE_URL (the URL before /OpenApi, as in "
    "http://api.aisix.com/OpenPlatform)",
    "data_url": "--data-url or AISIX_DATA_URL if given, else --base-url or AISIX_BASE_URL",
}


def describe(error: BaseException, *, account: str | None, url: str | None) -> CliError:
    """Turn an error raised while running a command into a sentence and an exit code."""
    if isinstance(error, CliError):
        return error
    who = f"account {account}" if account else "the account"
    where = f" at {url}" if url else ""
    if isinstance(error, (ValidationError, ExtraNotInstalledError)):
        return CliError(error.message, ExitCode.USAGE)
    if isinstance(error, CampaignError):
        return CliError(f"journal: {error.message}", ExitCode.USAGE)
    if isinstance(error, SharedLimitError):
        return CliError(
            f"{error.message}; nothing was sent (--shared-limit or AISIX_SHARED_LIMIT)",
            ExitCode.USAGE,
        )
    if isinstance(error, EndpointError):
        # A URL that is not the gateway's is the command's configuration: 2, not the 4
        # of a gateway that refuses the account or cannot be reached, and said at once
        # (the SDK does not retry it).
        if error.status == 413:
            # The URL is right; the requests are too big for what stands at it.
            return CliError(
                f"{error.message}: with --content, a smaller --chunk-size sends fewer "
                "numbers per request",
                ExitCode.USAGE,
            )
        options = _URL_OPTIONS.get(error.setting, _URL_OPTIONS["base_url"])
        return CliError(f"{error.message}: {options}", ExitCode.USAGE)
    if isinstance(error, AuthenticationError):
        return CliError(
            f"the gateway{where} refused the authkey for {who} (result -2). Check that "
            "AISIX_AUTHKEY (or the --authkey-file) holds this account's current key and that "
            "it was not rotated since; note that 5 wrong keys in a row lock the key (-3).",
            ExitCode.GATEWAY,
        )
    if isinstance(error, KeyLockedError):
        return CliError(
            f"the authkey of {who} is locked (result -3), usually after repeated wrong keys: "
            "unlock it in the gateway's web console, then check the key you use.",
            ExitCode.GATEWAY,
        )
    if isinstance(error, RateLimitedError):
        # The SDK's message carries its own advice; said once here, in an operator's terms.
        tries = _TRIES.search(error.message)
        said = f"{error.action}: {tries.group()}" if tries else error.action
        return CliError(
            f"the gateway{where} kept refusing {who} with -1 ({said}). If this never "
            "clears, the account is probably bound to another IP address (send from the bound "
            "machine or ask the provider to bind this one) or limited to a time window.",
            ExitCode.GATEWAY,
        )
    if isinstance(error, AccountFormatError):
        return CliError(
            f"the gateway says {who} is not in staff@enterprise form (result 0): "
            "check AISIX_ACCOUNT or --account.",
            ExitCode.USAGE,
        )
    if isinstance(error, (EnterpriseUnavailableError, StaffUnavailableError)):
        return CliError(
            f"{who}: {error.message}; check AISIX_ACCOUNT or --account, and the account's "
            "status with the provider.",
            ExitCode.GATEWAY,
        )
    if isinstance(error, (InterfaceNotEnabledError, ChannelGroupNotAllowedError)):
        return CliError(f"{who}: {error.message}.", ExitCode.GATEWAY)
    if isinstance(error, (InsufficientBalanceError, BalanceTooLowError)):
        return CliError(f"{who}: {error.message}", ExitCode.GATEWAY)
    if isinstance(error, TransportError):
        if error.setting == "data_url":
            # A poll of the DataApi, which --data-url may put elsewhere: the base URL was
            # named instead, and it was not the one that failed.
            at = f" at {error.url}" if error.url else ""
            return CliError(
                f"could not talk to the gateway's DataApi{at}: {error.message}. Check "
                f"{_URL_OPTIONS['data_url']}, and the network.",
                ExitCode.GATEWAY,
            )
        return CliError(
            f"could not talk to the gateway{where}: {error.message}. Check AISIX_BASE_URL "
            "(or --base-url) and the network.",
            ExitCode.GATEWAY,
        )
    if isinstance(error, AisixError):
        return CliError(error.message, ExitCode.GATEWAY)
    if isinstance(error, OSError):
        return CliError(str(error), ExitCode.USAGE)
    raise error
