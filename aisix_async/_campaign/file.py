"""The journal file itself: telling ours from anything else, creating it, locking it.

Kept apart from what the journal records because it guards the one irreversible thing a
journal could do wrong: write into a file that is not ours. A file that is not an SQLite
database, another program's database, a damaged one, or one from a newer schema is
refused with :class:`CampaignError` before any write touches it.

Ours is marked by ``PRAGMA application_id`` (the bytes ``AiSx``) and versioned by
``PRAGMA user_version``. The file runs in WAL mode with ``synchronous=NORMAL``: a commit
is in the WAL (the OS page cache) when it returns, so it survives the process being
killed, ``kill -9`` included; only a power loss or OS crash can drop the last commits,
which ``durable=True`` (``synchronous=FULL``) covers at the price of an fsync per commit.

One process at a time: an advisory OS lock (``flock`` on POSIX, ``msvcrt.locking`` on
Windows) on a ``<journal>.lock`` sidecar is held while the journal is open. The sidecar,
not the database, carries the lock because SQLite takes and drops its own locks on the
database file, and closing any descriptor of a file drops POSIX locks on it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import IO

from .._core.errors import CampaignError
from . import sql

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "JournalInUse",
    "is_disk_full",
    "journal_files",
    "open_file",
    "open_read_only",
    "owner_only",
    "release_lock",
]

#: ``PRAGMA application_id``: the bytes "AiSx". Marks a file as a campaign journal.
APPLICATION_ID = int.from_bytes(b"AiSx", "big")
#: ``PRAGMA user_version``: the schema this code writes and reads. Version 1 files are
#: migrated in place when opened (``sql.migrate_v1``).
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"


#: What SQLite adds to a database's name for the files it keeps beside it: the write-ahead
#: log, its shared-memory index, and the rollback journal (before WAL mode is set).
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
#: What the process lock adds to the journal's name (see _lock).
_LOCK_SUFFIX = ".lock"


def journal_files(journal: str | os.PathLike[str]) -> tuple[Path, ...]:
    """The files a journal at ``journal`` is made of, symlinks followed: its own file,
    then those kept beside it (SQLite's ``-wal``, ``-shm`` and ``-journal``, and the
    process lock ``.lock``). Nothing is opened or created.

    Each is deleted or rewritten as the journal is used and closed (SQLite removes its
    ``-wal`` at close; the lock is rewritten, then removed): a file written there by
    anyone else vanishes. They sit beside the journal's own name, symlinks resolved
    (see _one_name), so a path given through a symlink names the same files.
    """
    real = Path(os.path.realpath(journal))
    beside = (real.with_name(real.name + suffix) for suffix in (*_SQLITE_SIDECARS, _LOCK_SUFFIX))
    # Followed too: SQLite and the lock open these names as they are, links and all.
    return (real, *(Path(os.path.realpath(path)) for path in beside))


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full")."""
    return isinstance(exc, sqlite3.Error) and "is full" in str(exc).lower()


class JournalInUse(CampaignError):
    """Another process holds the journal's lock (a send or a reports follower runs on it),
    or this one does, through a campaign opened on it earlier and not closed yet."""

    def __init__(self, path: Path, pid: int | None) -> None:
        if pid == os.getpid():
            # Two campaigns on one journal in one process: "another process" named this one.
            who = "by this process (a campaign opened on it earlier is still open)"
            advice = "one journal is driven by one campaign at a time (leave that one first)"
        else:
            who = "by another process" + ("" if pid is None else f" (pid {pid})")
            advice = (
                "one journal is driven by one process at a time (let it finish, or stop it, "
                "then resume)"
            )
        #: Who holds it, without the advice: what a read-only view says of itself.
        self.reason = f"the campaign journal {path} is in use {who}"
        super().__init__(f"{self.reason}; {advice}")


def _in_use(path: Path, pid: int | None) -> CampaignError:
    return JournalInUse(path, pid)


def _one_name(journal: Path) -> Path:
    """The journal's own path, symlinks followed; CampaignError if it has a second name.

    The lock (and SQLite's ``-wal`` file) sits beside the journal under its name: taken
    through a symlink's name it guarded nothing, and two processes, each through its own
    name for one journal, sent 2,200 recipients twice. A symlink leads to the file's own
    name; a second hard link cannot be followed, so it is refused.
    """
    real = Path(os.path.realpath(journal))
    try:
        links = os.stat(real).st_nlink
    except OSError:  # not made yet, or not readable (open says which)
        return real
    if links > 1:
        raise CampaignError(
            f"the campaign journal {journal} has {links} names (hard links): its lock and "
            "SQLite's own files are kept beside one name, so two processes could each take "
            "one and send twice; keep one name (remove the other links, or copy the file)"
        )
    return real


def _lock(journal: Path, real: Path) -> IO[str]:
    """Take the sidecar lock beside ``real`` (the journal's own path, see _one_name), or
    raise CampaignError when another process holds it."""
    path = real.with_name(real.name + _LOCK_SUFFIX)
    try:
        # Created owner-only, as the journal is: no other user has a send to run on it.
        handle = open(path, "a+", encoding="utf-8", opener=owner_only)  # noqa: SIM115 - held while open
    except OSError as exc:
        # The first file a journal creates: where a missing folder or a read-only one shows.
        reason = (
            f"the folder {journal.parent} does not exist"
            if not journal.parent.is_dir()
            else (exc.strerror or type(exc).__name__).lower()
        )
        raise CampaignError(f"cannot open the campaign journal {journal}: {reason}") from None
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            try:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                raise _in_use(journal, None) from None
        else:
            import fcntl

            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _in_use(journal, _holder(path)) from None
            if not _still_at(handle, path):
                # Its holder removed it as it let go (release_lock) after we opened it: a
                # lock on that file locks nothing now; take the one at the path.
                handle.close()
                return _lock(journal, real)
        # Who holds it, for the next process's error message.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


def owner_only(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open`: a file it creates is readable and writable by its
    owner only; a file that exists keeps the mode its owner gave it."""
    return os.open(path, flags, 0o600)


def _create_private(journal: Path, real: Path) -> None:
    """Create the journal's file, empty and owner-only, before SQLite opens it.

    A journal holds phone numbers; SQLite would create it readable by everyone (0644,
    less the umask), and it gives the ``-wal`` and ``-shm`` files it makes beside it the
    main file's mode, so those follow. An existing file is left as it is.
    """
    try:
        os.close(owner_only(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise CampaignError(f"cannot create the campaign journal {journal}: {reason}") from None


def _still_at(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def release_lock(handle: IO[str]) -> None:
    """Let go of the sidecar lock, removing the file: a clean exit leaves no ``.lock``.

    Removed while still held, so no other process can have locked it in between (one
    that opened it meanwhile sees it gone and takes a new one: ``_still_at``). Windows
    cannot remove an open file; the sidecar stays there, harmless (an OS lock, not the
    file's existence, is what excludes).
    """
    try:
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
    finally:
        handle.close()


def _holder(path: Path) -> int | None:
    """The pid the lock's holder wrote in it, if one can be read."""
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(pid) if pid.isdigit() else None


def _check_header(path: Path) -> None:
    """Refuse, without writing to it, a file that is not an SQLite database."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CampaignError(f"cannot read the campaign journal {path}: {exc}") from None
    if head and head != _SQLITE_MAGIC:
        raise CampaignError(
            f"{path} exists and is not a campaign journal (not an SQLite database); "
            "it was left untouched: pass another path"
        )


def _prepare(conn: sqlite3.Connection, path: Path, durable: bool) -> None:
    app_id, version, objects = sql.file_marks(conn)
    if app_id != APPLICATION_ID and (app_id != 0 or objects):
        raise CampaignError(
            f"{path} is an SQLite database of another program, not a campaign journal; "
            "it was left untouched: pass another path"
        )
    if app_id == APPLICATION_ID and version > SCHEMA_VERSION:
        raise CampaignError(
            f"{path} was written by a newer aisix_async (journal schema {version}; this "
            f"version reads {SCHEMA_VERSION}): upgrade aisix_async to resume it"
        )
    if app_id == APPLICATION_ID:
        check = sql.quick_check(conn)
        if check != "ok":
            raise CampaignError(f"{path} is damaged ({check}); it was left untouched")
    sql.configure(conn, durable=durable)
    if app_id == APPLICATION_ID and version == 1:
        sql.migrate_v1(conn)
    if app_id == 0:
        sql.create(conn, APPLICATION_ID, SCHEMA_VERSION)


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open the journal at ``path`` to read it while another process drives it.

    No lock, no recovery, no migration: what a running send has committed is read as it
    stands (WAL readers never block the writer). A schema-1 file must be opened once
    normally first, to be migrated. Blocking: call it from a worker thread.
    """
    _check_header(path)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            timeout=5.0,
        )
        app_id, version, _ = sql.file_marks(conn)
    except sqlite3.Error as exc:
        raise CampaignError(f"cannot read the campaign journal {path}: {exc}") from None
    if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
        conn.close()
        raise CampaignError(
            f"{path} cannot be read while another process holds it (journal schema "
            f"{version}, this version reads {SCHEMA_VERSION}); try again once it is free"
        )
    return conn


def open_file(path: Path, *, durable: bool) -> tuple[sqlite3.Connection, IO[str]]:
    """Lock, open (or create) and check the journal at ``path``: (connection, lock handle).

    Blocking: call it from a worker thread.
    """
    real = _one_name(path)
    lock = _lock(path, real)
    try:
        _create_private(path, real)
        _check_header(path)
        try:
            # By its own name (see _one_name), as the lock: the -wal file goes beside it.
            conn = sqlite3.connect(
                str(real), check_same_thread=False, isolation_level=None, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise CampaignError(f"cannot open the campaign journal {path}: {exc}") from None
        try:
            _prepare(conn, path, durable)
        except sqlite3.Error as exc:
            conn.close()
            if is_disk_full(exc):
                raise CampaignError(f"cannot create the campaign journal {path}: disk full")
            raise CampaignError(
                f"{path} is damaged or not a campaign journal ({exc}); it was left untouched"
            ) from None
        except BaseException:
            conn.close()
            raise
    except BaseException:
        release_lock(lock)
        raise
    return conn, lock
