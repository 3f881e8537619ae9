"""The small commands: balance, channels, signs, reports, replies, rotate-key.

``reports`` and ``replies`` read queues the gateway empties as it answers (each record
is handed out once), so every record is printed, and flushed, the moment it is fetched;
records a stream fetched but had not yielded when it stopped (Ctrl-C) are printed too,
and those stdout could not take (it closed) are kept in a file (see ``_output``).

``rotate-key`` is the one command that prints a key: the new one, once, on stdout, with
a warning on stderr to store it before anything else, because the old key stops working
at once and nobody can show the new one again.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import anyio
from rich.markup import escape

from .. import DeliveryReport, KeyRotation, RecordStream, Reply
from ._app import Context
from ._args import poll_options
from ._delivery import reports_journal
from ._exit import CliError, ExitCode
from ._interrupts import FollowInterrupt
from ._output import counted
from ._records import one_line, report_line, show_malformed

__all__ = ["balance", "channels", "replies", "reports", "rotate_key", "signs"]

_R = TypeVar("_R", DeliveryReport, Reply)


async def balance(ctx: Context) -> int:
    """Print the account's balance."""
    async with ctx.client() as client:
        result = await client.get_balance()
    if ctx.out.json_mode:
        # "type" as on every other command's lines, so one consumer can tell them apart.
        ctx.out.emit({"type": "balance", "account": client.account, "balance": result.remain})
    else:
        ctx.out.pairs(None, [("account", client.account), ("balance (yuan)", result.remain)])
    return ExitCode.OK


async def channels(ctx: Context) -> int:
    """Print the channel groups with their billing."""
    async with ctx.client() as client:
        groups = await client.get_channel_groups()
    if ctx.out.json_mode:
        for group in groups:
            ctx.out.emit(
                {
                    "type": "channel_group",
                    "cgid": group.cgid,
                    "word": group.word,
                    "longword": group.longword,
                    "price": group.price,
                }
            )
    else:
        ctx.out.table(
            f"channel groups of {client.account}",
            ["cgid", "one unit up to", "then per unit", "price (yuan/unit)"],
            [(g.cgid, g.word, g.longword, g.price) for g in groups],
            right=["cgid", "one unit up to", "then per unit", "price (yuan/unit)"],
        )
    return ExitCode.OK


async def signs(ctx: Context) -> int:
    """Print the signatures."""
    async with ctx.client() as client:
        found = await client.get_signs()
    if ctx.out.json_mode:
        for sign in found:
            ctx.out.emit(
                {"type": "sign", "csid": sign.csid, "sign": sign.sign, "default": sign.csid == 0}
            )
    else:
        ctx.out.table(
            f"signatures of {client.account}",
            ["csid", "signature", ""],
            [(s.csid, s.sign, "default" if s.csid == 0 else "") for s in found],
            right=["csid"],
        )
    return ExitCode.OK


def _reply_line(reply: Reply) -> str:
    return f"{reply.time.isoformat()}  {reply.mobile}  {one_line(reply.content)}"


def _record_json(record: DeliveryReport | Reply) -> dict[str, Any]:
    # "type" as in aisix send's records, so one consumer can tell every line apart.
    if isinstance(record, DeliveryReport):
        data: dict[str, Any] = {
            "type": "report",
            "id": record.id,
            "msgid": record.msgid,
            "mobile": record.mobile,
            "code": record.code,
            "result": record.result,
            "final": record.is_final,
        }
    else:
        data = {
            "type": "reply",
            "id": record.id,
            "time": record.time,
            "mobile": record.mobile,
            "content": record.content,
        }
    if record.extra:
        data["extra"] = dict(record.extra)
    return data


async def _stream(ctx: Context, stream: RecordStream[_R], kind: tuple[str, str]) -> int:
    out = ctx.out
    # Every record fetched, printed or kept: counting only those shown while stdout was
    # open counted twice the ones a closing pipe handed back ("17 replies" beside 199
    # kept, of 200 fetched). How many stdout took is said where it closed (_app).
    count = 0

    def show(record: DeliveryReport | Reply) -> None:
        nonlocal count
        text = report_line(record) if isinstance(record, DeliveryReport) else _reply_line(record)
        # Once stdout is closed, Output keeps the record in its file of unprinted ones.
        out.result(_record_json(record), text)
        count += 1

    interrupt = FollowInterrupt(kind[1])

    async def follow(scope: anyio.CancelScope) -> None:
        with anyio.CancelScope() as reading:
            # Nobody reads any more: fetch no more (the gateway hands each record out
            # once). A poll on the wire is still waited for, as at Ctrl-C, and its
            # records kept; Ctrl-C stays handled meanwhile.
            out.when_stdout_closes(reading.cancel)
            async with stream:
                async for record in stream:
                    show(record)
                    # A reader far behind: fetch no more until it catches up (Ctrl-C
                    # is still heard meanwhile).
                    await out.wait_for_reader()
        scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(follow, group.cancel_scope)
            group.start_soon(interrupt.cancel_on_signal, group.cancel_scope)
    except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C before the receiver is set
        interrupt.seen = True
    finally:
        interrupt.answered()
        # Fetched but not yet shown: the gateway will not send these again.
        for record in stream.unread():
            show(record)
        for bad in stream.malformed:
            show_malformed(ctx, bad)
        out.note(counted(count, *kind) + (" (interrupted)" if interrupt.seen else ""))
    return ExitCode.INTERRUPTED if interrupt.seen else ExitCode.OK


async def reports(ctx: Context) -> int:
    """Print delivery reports as they are fetched; with --follow, until Ctrl-C or idle."""
    options = poll_options(ctx.args)  # refused before anything is opened or fetched
    if getattr(ctx.args, "journal", None):
        return await reports_journal(ctx, options)
    async with ctx.client() as client:
        stream = client.watch_delivery_reports(**options)
        return await _stream(ctx, stream, ("delivery report", "delivery reports"))


async def replies(ctx: Context) -> int:
    """Print replies as they are fetched; with --follow, until Ctrl-C or idle."""
    options = poll_options(ctx.args)  # refused before anything is opened or fetched
    async with ctx.client() as client:
        stream = client.watch_replies(**options)
        return await _stream(ctx, stream, ("reply", "replies"))


def _confirm(ctx: Context) -> None:
    if ctx.args.yes:
        return
    account = ctx.credentials.account
    if not sys.stdin.isatty():
        raise CliError(
            f"rotate-key changes the key of {account} for every program using it: "
            "add --yes to confirm"
        )
    sys.stderr.write(
        f"Rotate the authkey of {account}? The old key stops working at once for every "
        "program that uses it. Type 'yes' to go on: "
    )
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() != "yes":
        raise CliError("not rotated")


#: What a key file holds: the key alone, whitespace (a trailing newline) around it.
_KEY_FILE = re.compile(rb"\s*[0-9A-Fa-f]{32}\s*")
#: The longest key file read as one: the key, a byte order mark and some whitespace.
_KEY_FILE_MOST = 64


def _check_key_target(path: str) -> None:
    """Refuse a --write-to file that is something else than a key file, before rotating.

    The file is replaced whole by the new key: ``--write-to sale.db`` (a mistyped path, a
    completed command line) replaced a campaign journal, a numbers file or an outcomes
    CSV with the key, after the old key was dead (a user's trial). Only a missing or
    empty file, or an earlier key file, may be replaced.
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return  # made new
    except OSError as exc:
        raise CliError(
            f"--write-to {path}: cannot look at it ({exc.strerror}); not rotated"
        ) from None
    if stat.S_ISDIR(found.st_mode):
        return  # refused by _KeyFile, in its own words
    if not stat.S_ISREG(found.st_mode):
        # Opened to be read, a FIFO would wait for a writer; replaced, a device would go.
        raise CliError(
            f"--write-to {path}: is not a regular file (a device, a pipe) and would be "
            "replaced by one; give a file; not rotated"
        )
    head = b""
    if found.st_size <= _KEY_FILE_MOST:
        try:
            head = Path(path).read_bytes()
        except OSError as exc:
            raise CliError(
                f"--write-to {path}: cannot read it ({exc.strerror}); not rotated"
            ) from None
        if head.startswith(b"\xef\xbb\xbf"):  # a key saved by Notepad (see _credentials)
            head = head[3:]
    if found.st_size and not _KEY_FILE.fullmatch(head):
        # The refusal leaves this frame to error trackers, which print its locals: what
        # was read may be the old key, still in force, with something after it.
        del head
        raise CliError(
            f"--write-to {path} exists and does not hold just a key (one line of 32 hex "
            "characters): it would be replaced by the new key; give a new file, or the "
            "file of the old key; not rotated"
        )


class _KeyFile:
    """The --write-to file, made ready before the key is rotated.

    A path that cannot be written must be refused while the old key still works, not
    found out with the new key on screen: the temporary file the key will be renamed
    from is created first, beside the target (readable by its owner only: mkstemp), so
    every reason the write could fail (no folder, no permission, a full disk's
    directory) shows before anything changes.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        target = Path(path)
        if target.is_dir():
            raise CliError(f"--write-to {path}: is a directory; give a file name in it")
        folder = target.parent
        if not folder.is_dir():
            raise CliError(f"--write-to {path}: the folder {folder} does not exist; not rotated")
        try:
            self._fd, self._temp = tempfile.mkstemp(prefix=".aisix-key-", dir=folder)
        except OSError as exc:
            raise CliError(
                f"--write-to {path}: cannot create a file in {folder} ({exc.strerror}); not rotated"
            ) from None

    def write(self, key: str) -> None:
        """Write the key and rename it over the target: a crash leaves one or the other."""
        try:
            with os.fdopen(self._fd, "w", encoding="utf-8") as handle:
                handle.write(key + "\n")
            os.replace(self._temp, self.path)
        except BaseException:
            Path(self._temp).unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        """Remove the temporary file when the key was not rotated."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        Path(self._temp).unlink(missing_ok=True)


async def _rotate(ctx: Context) -> tuple[KeyRotation, str]:
    async with ctx.client() as client:
        try:
            return await client.rotate_key(), client.account
        except Exception as exc:
            if getattr(exc, "outcome_unknown", False):
                raise CliError(
                    f"the answer to updateKey was lost: the key of {client.account} may or may "
                    "not have changed. Run 'aisix balance' with the old key: if it works, "
                    "nothing changed; if it fails with -2, the key was rotated and the new one "
                    "was lost: reset it in the gateway's console.",
                    ExitCode.UNKNOWN,
                ) from None
            raise


#: Seconds a pipe's reader has to read the new key before it is kept in a file too.
_KEY_READ = 5.0


async def rotate_key(ctx: Context) -> int:
    """Rotate the key; print the new one once and say to store it now."""
    if ctx.args.write_to is not None and not ctx.args.write_to.strip():
        # `--write-to "$UNSET"`: rotated, the key file would keep the dead key.
        raise CliError("--write-to is empty: give the file to write the new key to; not rotated")
    # Resolved (and the arguments checked for the key) before the --write-to file is made.
    _ = ctx.credentials
    if ctx.args.write_to:
        _check_key_target(ctx.args.write_to)
    _confirm(ctx)
    out = ctx.out
    key_file = _KeyFile(ctx.args.write_to) if ctx.args.write_to else None
    try:
        update, account = await _rotate(ctx)
    except BaseException:
        if key_file is not None:
            key_file.discard()
        raise
    # The key first, before anything that could fail: it exists nowhere else. If stdout
    # is closed, Output keeps it in an owner-only file (lost, the account would have no
    # usable key), unless the --write-to file is to have it: no copy nobody asked for.
    record = {"type": "key", "account": account, "authkey": update.authkey}
    out.result(record, update.authkey, keep=key_file is None)
    # Known taken or not before saying where the key is (stdout is written by a thread).
    await out.wait_until_taken()
    unread = False
    if key_file is None and not out.stdout_closed and not await out.wait_until_read(_KEY_READ):
        # In a pipe whose reader has not read it: a reader that hung or left takes it
        # with it (a user's trial: exit 0, the account locked out). Kept as if stdout
        # had closed.
        unread = True
        out.keep_unprinted(record)
    written: OSError | None = None
    if key_file is not None:
        try:
            await anyio.to_thread.run_sync(key_file.write, update.authkey)
        except OSError as exc:
            written = exc
            if out.stdout_closed:  # the key file failed too: now it is kept
                out.keep_unprinted(record)
    stored = key_file is not None and written is None
    _, kept_in = out.unprinted
    if unread and kept_in is not None:
        where = (
            f"stdout's reader did not read it within {_KEY_READ:g} s: the new key is also in "
            f"{escape(str(kept_in))} (delete that file once it is stored)"
        )
    elif not out.stdout_closed:
        where = "The key above is shown only this once"
    elif stored:
        where = f"stdout was closed: the new key is in {escape(ctx.args.write_to)} only"
    elif kept_in is not None:
        where = (
            f"stdout was closed: the new key is in {escape(str(kept_in))} and nowhere else "
            "(delete that file once it is stored)"
        )
    else:  # no file could be made for it either: stderr was the last place left
        where = "stdout was closed and no file could be made: the new key is on stderr above"
    out.err.print(
        f"[bold red]The authkey of {account} was rotated.[/] {where}, and the old key no "
        "longer works: store it now (e.g. in your secret store, then AISIX_AUTHKEY or an "
        "--authkey-file) before doing anything else.",
        highlight=False,
    )
    if written is not None:
        raise CliError(
            f"the key was rotated but could not be written to {ctx.args.write_to} "
            f"({written.strerror}): copy it from the output above NOW",
            ExitCode.GATEWAY,
        )
    if stored:
        out.note(f"the new key was written to {ctx.args.write_to}")
    return ExitCode.OK
