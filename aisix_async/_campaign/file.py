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
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .._core.errors import CampaignError
from .._core.models import FINAL_OPERATOR_CODES

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "JournalInUse",
    "decode_positions",
    "encode_positions",
    "is_disk_full",
    "open_file",
    "open_read_only",
    "pack_numbers",
    "release_lock",
    "unpack_numbers",
]

#: ``PRAGMA application_id``: the bytes "AiSx". Marks a file as a campaign journal.
APPLICATION_ID = int.from_bytes(b"AiSx", "big")
#: ``PRAGMA user_version``: the schema this code writes and reads. Version 1 files are
#: migrated in place when opened (:func:`_migrate_v1`).
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Chunks are stored by their place in the input (ranges of positions), never the input
# itself before a request; the mobiles of chunks whose fate is open are kept, to list the
# unknown, and (schema 2) a settled chunk's numbers, compressed, to name its recipients.
_SCHEMA = """
CREATE TABLE campaign (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at REAL NOT NULL,
    input_size INTEGER
);
CREATE TABLE chunks (
    idx INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    first_pos INTEGER NOT NULL,
    last_pos INTEGER NOT NULL,
    size INTEGER NOT NULL,
    positions TEXT NOT NULL,
    items_hash TEXT NOT NULL,
    mobiles TEXT,
    state TEXT NOT NULL CHECK (state IN ('planned', 'in_flight', 'accepted', 'failed', 'unknown')),
    error_class TEXT,
    error_message TEXT,
    retryable INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    units INTEGER NOT NULL DEFAULT 0,
    cost TEXT NOT NULL DEFAULT '0',
    receipts TEXT,
    reconciled INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    numbers BLOB
);
CREATE TABLE msgids (msgid TEXT PRIMARY KEY, chunk INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE unknown (
    position INTEGER PRIMARY KEY,
    chunk INTEGER NOT NULL,
    mobile TEXT NOT NULL
);
CREATE INDEX unknown_by_mobile ON unknown (mobile);
CREATE INDEX unknown_by_chunk ON unknown (chunk);
CREATE TABLE reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT, msgid TEXT, mobile TEXT, result INTEGER, code TEXT,
    raw TEXT, fetched_at REAL NOT NULL,
    chunk INTEGER
);
CREATE TABLE replies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT, time_ms INTEGER, mobile TEXT, content TEXT,
    raw TEXT, fetched_at REAL NOT NULL
)
"""

# Added by schema 2 (delivery truth per recipient, kept in the file rather than in memory):
# ``chunks.numbers`` holds a settled chunk's numbers (zlib of the numbers joined by
# newlines) so a recipient can be named by (chunk, mobile) and exported;
# ``reports.chunk`` names the chunk a report is for, NULL for a report that is not this
# campaign's (kept all the same: the gateway hands each out once); ``delivery`` holds each
# recipient's first final report, whole (it is not in ``reports`` too: one row per report
# is what ingestion costs; ``seq`` numbers the two tables' reports in one fetch order);
# ``tallies`` keeps the counts a summary shows (``final:CODE``,
# ``foreign``), updated in the transaction that records the reports; ``runs`` says when
# each run happened. (The rate controller's ``meta`` table is created apart, if missing.)
_SCHEMA_2 = """
CREATE TABLE delivery (
    chunk INTEGER NOT NULL,
    mobile TEXT NOT NULL,
    code TEXT NOT NULL,
    at REAL NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT,
    msgid TEXT NOT NULL,
    result INTEGER NOT NULL,
    raw TEXT,
    PRIMARY KEY (chunk, mobile)
) WITHOUT ROWID;
CREATE TABLE tallies (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    pid INTEGER
)
"""


def encode_positions(positions: Sequence[int]) -> str:
    """Ascending input positions as ranges (``"0-999"``, ``"3,5-7"``).

    A chunk is one range as a rule (only refused items leave gaps), hence the fast path.
    """
    if positions and positions[-1] - positions[0] + 1 == len(positions):
        first, last = positions[0], positions[-1]
        return str(first) if first == last else f"{first}-{last}"
    parts: list[str] = []
    i, n = 0, len(positions)
    while i < n:
        j = i
        while j + 1 < n and positions[j + 1] == positions[j] + 1:
            j += 1
        parts.append(str(positions[i]) if i == j else f"{positions[i]}-{positions[j]}")
        i = j + 1
    return ",".join(parts)


def decode_positions(text: str) -> tuple[int, ...]:
    """The inverse of :func:`encode_positions`."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return tuple(out)


def pack_numbers(mobiles: Sequence[str]) -> bytes:
    """A chunk's numbers as stored in ``chunks.numbers``: joined by newlines, zlib level 1.

    Numbers of a campaign compress to about a third (digits, shared prefixes); level 1
    costs some 50 microseconds a chunk, on the journal's worker thread.
    """
    return zlib.compress("\n".join(mobiles).encode("utf-8", "surrogatepass"), 1)


def unpack_numbers(blob: bytes) -> list[str]:
    """The inverse of :func:`pack_numbers`."""
    return zlib.decompress(blob).decode("utf-8", "surrogatepass").split("\n")


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full")."""
    return isinstance(exc, sqlite3.Error) and "is full" in str(exc).lower()


class JournalInUse(CampaignError):
    """Another process holds the journal's lock (a send or a reports follower runs on it)."""


def _in_use(path: Path, holder: str) -> CampaignError:
    return JournalInUse(
        f"the campaign journal {path} is in use by another process{holder}; one journal "
        "is driven by one process at a time (let it finish, or stop it, then resume)"
    )


def _lock(journal: Path) -> IO[str]:
    """Take the sidecar lock, or raise CampaignError when another process holds it."""
    path = journal.with_name(journal.name + ".lock")
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held while open
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
                raise _in_use(journal, "") from None
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
                return _lock(journal)
        # Who holds it, for the next process's error message.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


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


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


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
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
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
        (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise CampaignError(f"{path} is damaged ({check}); it was left untouched")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    if app_id == APPLICATION_ID and version == 1:
        _migrate_v1(conn)
    if app_id == 0:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in f"{_SCHEMA};{_SCHEMA_2}".split(";"):
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Bring a schema-1 journal to schema 2, in one transaction (all of it or none).

    Schema 1 did not keep the numbers of accepted chunks, so its reports are attributed
    to the campaign by msgid alone (a msgid the campaign recorded); later reports are
    checked on (msgid, mobile) once a run has written a chunk's numbers. Its runs are
    summed up as one, from the campaign's creation to the last change recorded.
    """
    finals = ",".join(f"'{code}'" for code in sorted(FINAL_OPERATOR_CODES))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE chunks ADD COLUMN numbers BLOB")
        conn.execute("ALTER TABLE reports ADD COLUMN chunk INTEGER")
        for statement in _SCHEMA_2.split(";"):
            conn.execute(statement)
        conn.execute(
            "UPDATE reports SET chunk = (SELECT chunk FROM msgids WHERE msgids.msgid ="
            " reports.msgid) WHERE msgid IS NOT NULL"
        )
        conn.execute(
            "INSERT OR IGNORE INTO delivery (chunk, mobile, code, at, seq, id, msgid, result,"
            " raw) SELECT chunk, mobile, code, fetched_at, seq, id, msgid, result, raw"
            f" FROM reports WHERE chunk IS NOT NULL AND upper(code) IN ({finals}) ORDER BY seq"
        )
        conn.execute("DELETE FROM reports WHERE seq IN (SELECT seq FROM delivery)")
        conn.execute(
            "INSERT INTO tallies (name, n) SELECT 'final:' || upper(code), count(*)"
            " FROM delivery GROUP BY upper(code)"
        )
        conn.execute(
            "INSERT INTO tallies (name, n) SELECT 'foreign', count(*) FROM reports"
            " WHERE msgid IS NOT NULL AND chunk IS NULL"
        )
        conn.execute(
            "INSERT INTO runs (kind, started_at, ended_at) SELECT 'schema 1 runs', created_at,"
            " (SELECT max(updated_at) FROM chunks) FROM campaign"
        )
        conn.execute("PRAGMA user_version=2")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
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
    lock = _lock(path)
    try:
        _check_header(path)
        try:
            conn = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=5.0
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
