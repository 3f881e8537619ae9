"""Where the command line finds the account, the key and the gateway's address.

The key is taken from the environment (``AISIX_AUTHKEY``) or from a file
(``--authkey-file``), never from a flag: a key passed as an argument shows in ``ps``
output, in process titles and in shell history, where anyone on the machine reads it.
Flags win over the environment for the account and URLs, so one shell can point a single
command elsewhere.

Every error here says which variable or flag to set, and none quotes the key.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from .. import ValidationError
from ..validation import check_account, check_authkey
from ._args import option_name
from ._exit import CliError, ExitCode, redact_keys

__all__ = ["Credentials", "Secret", "refuse_key_in_arguments", "resolve_credentials"]


class Secret(str):
    """The key as the command line holds it: a ``str`` whose repr never shows it.

    As the SDK's own (private, and the command line uses the public API only): error
    trackers print the repr of every local of every frame a traceback passes through.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<authkey, not shown>'"


def _redacted(_value: str) -> str:
    return "'<redacted>'"


@attrs.frozen
class Credentials:
    """An account, its key, and where its gateway lives (None: the SDK's default URL)."""

    account: str
    authkey: str = attrs.field(repr=_redacted)
    base_url: str | None
    data_url: str | None
    #: Where the key was read from, for messages ("AISIX_AUTHKEY" or the file's path).
    key_source: str


def _read_key_file(path: str) -> str:
    file = Path(path)
    try:
        # utf-8-sig: a key saved by Notepad starts with a byte order mark, which read as
        # a character made the key "33 characters" (input files already allow it).
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"--authkey-file {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"--authkey-file {path}: is a directory, not a file") from None
    except OSError as exc:
        raise CliError(f"--authkey-file {path}: cannot read it ({exc.strerror})") from None
    try:
        mode = file.stat().st_mode
    except OSError:  # pragma: no cover - it was just read
        mode = 0
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            redact_keys(f"aisix: warning: {path} is readable by other users; chmod 600 it"),
            file=sys.stderr,
        )
    # A key file holds the key alone, possibly with a trailing newline from an editor.
    # A Secret, as everywhere the key is a local (see resolve_credentials).
    return Secret(text.strip())


def resolve_credentials(
    *,
    account: str | None,
    authkey_file: str | None,
    base_url: str | None,
    data_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Combine flags and environment into credentials, or say exactly what is missing.

    Every error raised here leaves this frame to error trackers, which print each local's
    repr (Sentry's default): no local may hold the key as a plain str, nor the whole
    environment (os.environ's repr lists AISIX_AUTHKEY), so the key is a Secret and the
    environment is read through a view that does not show it.
    """
    env = _EnvView(os.environ if environ is None else environ)
    account = account or env.get("AISIX_ACCOUNT") or None
    if account is None:
        raise CliError(
            "no account: set AISIX_ACCOUNT (e.g. export AISIX_ACCOUNT=1001@100001) "
            "or pass --account",
            ExitCode.USAGE,
        )
    try:
        check_account(account)
    except ValidationError as exc:
        raise CliError(f"account: {exc.message}") from None

    if authkey_file:
        key, source = _read_key_file(authkey_file), authkey_file
    elif env.get("AISIX_AUTHKEY"):
        key, source = Secret(env["AISIX_AUTHKEY"].strip()), "AISIX_AUTHKEY"
    else:
        raise CliError(
            f"no authkey for account {account}: set AISIX_AUTHKEY, or put the key alone in a "
            "file readable only by you and pass --authkey-file PATH "
            "(there is no flag taking the key itself: it would land in shell history)",
            ExitCode.USAGE,
        )
    try:
        check_authkey(key)
    except ValidationError as exc:
        raise CliError(f"authkey from {source}: {exc.message}") from None

    if base_url is not None and not base_url.strip():
        # `--base-url "$UNSET"` meant the real gateway, not the emulator or staging host.
        raise CliError(
            "--base-url is empty: give a URL, or leave the flag out for AISIX_BASE_URL "
            "or the default",
            ExitCode.USAGE,
        )
    for flag, given, name in (
        ("--base-url", base_url, "AISIX_BASE_URL"),
        ("--data-url", data_url, "AISIX_DATA_URL"),
    ):
        value = env.get(name)
        if not given and value is not None and not value.strip():
            # As an empty --base-url: the real gateway, not the host the variable was for.
            raise CliError(
                f"{name} is set but empty: give it a URL, or unset it (or pass {flag})",
                ExitCode.USAGE,
            )
    return Credentials(
        account=account,
        authkey=key,
        base_url=base_url or env.get("AISIX_BASE_URL") or None,
        data_url=data_url or env.get("AISIX_DATA_URL") or None,
        key_source=source,
    )


class _EnvView:
    """The environment, read by name, with a repr that lists none of it (see above)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        return self._environ.get(name)

    def __getitem__(self, name: str) -> str:
        return self._environ[name]

    def __repr__(self) -> str:
        return "<the environment, not shown>"


def refuse_key_in_arguments(arguments: Mapping[str, object], authkey: str) -> None:
    """Refuse arguments one of which holds the account's own key, naming the option alone.

    A key pasted where a path or a text goes (``--journal "$KEY"``, ``--content "$KEY"``)
    would be used: sent as the SMS text, made the name of a journal that the summary then
    prints. Redacting what is printed cannot undo that, so the command stops before it
    sends or creates anything. Compared without case: the gateway issues keys in upper
    case, and a key typed in lower case is still the key.
    """
    authkey = Secret(authkey)
    wanted = Secret(authkey.casefold())
    for dest, value in arguments.items():  # (a parsed value, as a list when repeatable)
        values: Iterable[object] = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(text, str) and wanted in text.casefold() for text in values):
            # The CliError leaves this frame to error trackers, which print its locals:
            # the arguments hold the key (that is why it is raised), so they go first.
            del arguments, value, values
            raise CliError(
                f"the authkey was typed into {option_name(dest)}: no argument may hold the "
                "key (it would be used as the value and shown back, and a command line lands "
                "in shell history and process lists: rotate the key if others can read "
                "those); nothing was sent",
                ExitCode.USAGE,
            )
