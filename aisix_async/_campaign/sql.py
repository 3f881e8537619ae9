"""All of the journal's SQL: plain synchronous statements on one connection.

The file's own part (schema, migration, marks, settings, loading the mirror, the
transaction and savepoint mechanics) comes first. After it, each function is the body of
exactly one transaction (the caller, ``Journal._write``, opens and commits it on a
worker thread), so a crash leaves either all of a step or none of it: a chunk is never
"accepted" without its msgids, nor "unknown" without the list of its recipients. The
resume rules live in :func:`begin_chunk`, decided inside the same transaction that
records the decision.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from itertools import chain, compress, groupby, repeat
from operator import attrgetter, not_
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .._core.errors import CampaignError
from .._core.models import (
    DeliveryReport,
    MalformedRecord,
    Reply,
    ReportResult,
    settles,
)
from .encoding import decode_positions, encode_positions, pack_numbers, unpack_numbers

__all__ = [
    "EXPORT_COLUMNS",
    "INTERRUPTED",
    "META_TABLE",
    "ROWS_PER_STATEMENT",
    "SCHEMA",
    "SCHEMA_2",
    "Claimed",
    "Ingested",
    "Loaded",
    "ReportLookup",
    "adopt_reports",
    "begin_chunk",
    "begin_run",
    "campaign_identity",
    "claim_stored_reports",
    "configure",
    "create",
    "define",
    "end_run",
    "export_rows",
    "file_marks",
    "immediate",
    "in_savepoint",
    "insert_chunks",
    "load",
    "mark_on_wire",
    "mark_planned",
    "migrate_v1",
    "open_meta",
    "quick_check",
    "record_replies",
    "record_reports",
    "recover_interrupted",
    "runs",
    "set_input_size",
    "set_meta",
    "settle_accepted",
    "settle_chunk",
    "stored_replies",
    "stored_reports",
    "tallies",
    "unclaimed_reports",
]

_T = TypeVar("_T")

#: The error class recorded for a chunk whose process died while it was in flight.
INTERRUPTED = "Interrupted"


# -- the file: marks, settings, schema, migration ------------------------------------------

# Chunks are stored by their place in the input (ranges of positions), never the input
# itself before a request; the mobiles of chunks whose fate is open are kept, to list the
# unknown, and (schema 2) a settled chunk's numbers, compressed, to name its recipients.
SCHEMA = """
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
SCHEMA_2 = """
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

#: Facts about the run rather than the campaign (the rate the gateway was found to
#: accept): a key/value table, added to older files too when they are opened.
META_TABLE = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: all of the block's statements, or none of them."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def in_savepoint(
    conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]
) -> tuple[_T | None, Exception | None]:
    """Run ``body`` inside the open transaction, undoing only its own statements when it
    fails with an error of ours: (its result, None) or (None, that error). An SQLite error
    propagates: the whole transaction is lost then."""
    conn.execute("SAVEPOINT job")
    try:
        result = body(conn)
    except sqlite3.Error:
        raise
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return None, exc
    conn.execute("RELEASE job")
    return result, None


def file_marks(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """The file's application id, schema version, and how many objects it holds."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return app_id, version, objects


def quick_check(conn: sqlite3.Connection) -> str:
    """SQLite's own check of the file: "ok", or the first problem found."""
    (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    return str(check)


def configure(conn: sqlite3.Connection, *, durable: bool) -> None:
    """WAL, and a commit that survives a power cut only when ``durable``."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")


def create(conn: sqlite3.Connection, application_id: int, version: int) -> None:
    """Lay out an empty file as a journal of schema ``version``, marked as ours."""
    with immediate(conn):
        for statement in f"{SCHEMA};{SCHEMA_2}".split(";"):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id={application_id}")
        conn.execute(f"PRAGMA user_version={version}")


def migrate_v1(conn: sqlite3.Connection) -> None:
    """Bring a schema-1 journal to schema 2, in one transaction (all of it or none).

    Schema 1 did not keep the numbers of accepted chunks, so its reports are attributed
    to the campaign by msgid alone (a msgid the campaign recorded); later reports are
    checked on (msgid, mobile) once a run has written a chunk's numbers. Its runs are
    summed up as one, from the campaign's creation to the last change recorded.
    """
    # The rule that settles a recipient is models.settles, called from the SQL itself.
    conn.create_function(
        "settles", 2, lambda result, code: settles(int(result or 0), code or ""), deterministic=True
    )
    with immediate(conn):
        conn.execute("ALTER TABLE chunks ADD COLUMN numbers BLOB")
        conn.execute("ALTER TABLE reports ADD COLUMN chunk INTEGER")
        for statement in SCHEMA_2.split(";"):
            conn.execute(statement)
        conn.execute(
            "UPDATE reports SET chunk = (SELECT chunk FROM msgids WHERE msgids.msgid ="
            " reports.msgid) WHERE msgid IS NOT NULL"
        )
        conn.execute(
            "INSERT OR IGNORE INTO delivery (chunk, mobile, code, at, seq, id, msgid, result,"
            " raw) SELECT chunk, mobile, code, fetched_at, seq, id, msgid, result, raw"
            " FROM reports WHERE chunk IS NOT NULL AND settles(result, code) ORDER BY seq"
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


#: Reports not (yet) known to be the campaign's, by mobile: what a chunk whose numbers
#: become known on a resume looks through (:func:`claim_stored_reports`). Partial, so
#: the campaign's own reports, nearly all of them, cost nothing more to write.
FOREIGN_INDEX = (
    "CREATE INDEX IF NOT EXISTS reports_foreign_by_mobile ON reports (mobile) WHERE chunk IS NULL"
)


def open_meta(conn: sqlite3.Connection) -> None:
    """On open: the meta table and the index of reports not the campaign's (added to
    older files), and chunks a dead process left in flight recorded as unknown."""
    with immediate(conn):
        conn.execute(META_TABLE)
        conn.execute(FOREIGN_INDEX)
        recover_interrupted(conn)


@attrs.frozen(kw_only=True)
class Loaded:
    """What a journal keeps in memory, as the file holds it."""

    campaign: tuple[str, str, int | None] | None
    chunks: list[tuple[int, int, str, int, int, str, int, str | None]]
    unknown: dict[int, str]
    unread: dict[int, tuple[int, ...]]
    last_seq: int
    tallies: dict[str, int]
    meta: dict[str, str]
    #: One past the last input position of any chunk recorded (0: none).
    reached: int = 0


def load(conn: sqlite3.Connection) -> Loaded:
    """Everything the journal mirrors in memory, read in one go when it opens."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    (last_seq,) = conn.execute(
        "SELECT max(coalesce((SELECT max(seq) FROM reports), 0),"
        " coalesce((SELECT max(seq) FROM delivery), 0))"
    ).fetchone()
    (reached,) = conn.execute("SELECT coalesce(max(last_pos) + 1, 0) FROM chunks").fetchone()
    return Loaded(
        reached=reached,
        campaign=conn.execute(
            "SELECT fingerprint, definition, input_size FROM campaign"
        ).fetchone(),
        chunks=conn.execute(
            "SELECT idx, size, state, retryable, units, cost, reconciled, error_class FROM chunks"
        ).fetchall(),
        unknown=dict(conn.execute("SELECT position, mobile FROM unknown")),
        unread={
            idx: decode_positions(positions)
            for idx, positions in conn.execute(
                "SELECT idx, positions FROM chunks WHERE state='unknown' AND mobiles IS NULL"
            )
        },
        last_seq=last_seq,
        tallies=tallies(conn),
        # A read-only view of a file this version has not opened for writing yet may
        # lack the table (it is created on open): nothing learned then.
        meta=dict(conn.execute("SELECT key, value FROM meta")) if has_meta else {},
    )


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Record ``value`` under ``key`` in the meta table."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def define(conn: sqlite3.Connection, fingerprint: str, definition: str) -> None:
    conn.execute(
        "INSERT INTO campaign (id, fingerprint, definition, created_at) VALUES (1, ?, ?, ?)",
        (fingerprint, definition, time.time()),
    )


def set_input_size(conn: sqlite3.Connection, size: int) -> None:
    conn.execute("UPDATE campaign SET input_size = ?", (size,))


def _verdict(state: str, retryable: bool, resend_unknown: bool) -> str:
    if state == "planned":
        # Planned but never handed to the gateway (it was waiting for the scheduler).
        return "retry"
    if state == "accepted":
        return "skip_accepted"
    if state == "failed":
        return "retry" if retryable else "skip_failed"
    # Unknown, or in flight when its process died: both may have gone out.
    return "resend_unknown" if resend_unknown else "skip_unknown"


def begin_chunk(
    conn: sqlite3.Connection,
    path: Path,
    index: int,
    action: str,
    positions: Sequence[int],
    mobiles: Sequence[str],
    items_hash: str,
    *,
    resend_unknown: bool,
) -> tuple[str, bool | Claimed]:
    """Decide a planned chunk's fate in this run (a ``Verdict`` value) and record it.

    Also returns whether the chunk's unknown recipients were just written down: a chunk
    left in flight by a dead process is recorded by position only, and its numbers are
    known again once a run re-reads the input and finds it unchanged. Reports fetched
    before then, for its numbers, may prove it accepted: it is reconciled at once, and
    what those reports did is returned instead (see :func:`claim_stored_reports`).
    """
    encoded = encode_positions(positions)
    joined = "\n".join(mobiles)
    now = time.time()
    row = conn.execute(
        "SELECT positions, items_hash, state, retryable, mobiles FROM chunks WHERE idx=?",
        (index,),
    ).fetchone()
    if row is None:
        insert_chunks(conn, [(index, action, positions, items_hash)], state="planned")
        return "send", False
    old_positions, old_hash, state, retryable, old_mobiles = row
    # A chunk recorded from an outcome alone (never sent, dispatch had stopped) has no
    # hash of its contents yet: its numbers, kept while its fate is open, must match.
    same = old_hash == items_hash if old_hash else old_mobiles == joined
    if old_positions != encoded or not same:
        raise CampaignError(changed_input(path, index, old_positions, old_mobiles, mobiles))
    if not old_hash:
        conn.execute("UPDATE chunks SET items_hash=? WHERE idx=?", (items_hash, index))
    listed = state == "unknown" and old_mobiles is None
    if listed:
        conn.execute("UPDATE chunks SET mobiles=? WHERE idx=?", (joined, index))
        _add_unknown(conn, index, positions, mobiles)
        # Before a resend is decided too: a resend asked for at once, after a crash,
        # must not send again what stored reports prove accepted.
        claimed = claim_stored_reports(conn, index, action, mobiles, now)
        if claimed is not None:
            return "skip_accepted", claimed
    verdict = _verdict(state, bool(retryable), resend_unknown)
    if verdict in ("retry", "resend_unknown"):
        conn.execute(
            "UPDATE chunks SET state='planned', runs=runs+1, mobiles=?, error_class=NULL,"
            " error_message=NULL, retryable=0, updated_at=? WHERE idx=?",
            (joined, now, index),
        )
        conn.execute("DELETE FROM unknown WHERE chunk=?", (index,))
        return verdict, False
    return verdict, listed


# Rows per multi-row statement: far below SQLite's 32766 bound variables.
ROWS_PER_STATEMENT = 200


def insert_chunks(
    conn: sqlite3.Connection,
    chunks: Sequence[tuple[int, str, Sequence[int], str]],
    *,
    state: str,
) -> None:
    """Record chunks seen for the first time, by their place in the input and hash.

    Each item: (idx, action, positions, items_hash). Their numbers are not copied: this
    runs right before a chunk's request, and writing a thousand numbers there cost more
    than everything else the journal does per chunk; a resumed run re-reads them from
    the input (see :func:`begin_chunk`). Several chunks go in one statement, which
    matters more than its SQL suggests: every statement hands the GIL back to a busy
    event loop and waits to get it again, and a chunk's request waits for those waits.
    """
    now = time.time()
    rows = [
        (index, action, p[0], p[-1], len(p), encode_positions(p), items_hash, state, now)
        for index, action, p, items_hash in chunks
    ]
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        part = rows[start : start + ROWS_PER_STATEMENT]
        conn.execute(
            "INSERT INTO chunks (idx, action, first_pos, last_pos, size, positions,"
            " items_hash, state, updated_at, runs) VALUES "
            + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"] * len(part)),
            [value for row in part for value in row],
        )


def settle_accepted(
    conn: sqlite3.Connection,
    accepted: Sequence[tuple[int, int, int, str, str | None, float, Sequence[str]]],
    msgids: Sequence[tuple[str, int]],
) -> None:
    """Accepted outcomes of chunks already recorded, several per statement.

    Each row: (idx, attempts, units, cost, receipts, updated_at, mobiles); ``msgids``
    pairs each msgid with its chunk. The numbers are packed here, on the worker thread.
    """
    rows = [(*row[:6], pack_numbers(row[6])) for row in accepted]
    if sqlite3.sqlite_version_info < (3, 33):  # no UPDATE ... FROM before 3.33 (2020)
        done = conn.executemany(
            "UPDATE chunks SET state='accepted', error_class=NULL, error_message=NULL,"
            " retryable=0, attempts=attempts+?, units=?, cost=?, receipts=?, mobiles=NULL,"
            " updated_at=?, numbers=? WHERE idx=?",
            [(*row[1:], row[0]) for row in rows],
        ).rowcount
    else:
        done = 0
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            part = rows[start : start + ROWS_PER_STATEMENT]
            done += conn.execute(
                "UPDATE chunks SET state='accepted', error_class=NULL, error_message=NULL,"
                " retryable=0, attempts=chunks.attempts + v.column2, units=v.column3,"
                " cost=v.column4, receipts=v.column5, mobiles=NULL, updated_at=v.column6,"
                " numbers=v.column7 FROM (VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(part))
                + ") AS v WHERE chunks.idx = v.column1",
                [value for row in part for value in row],
            ).rowcount
    # Both paths: an outcome for a chunk the file does not hold is a bug, never dropped.
    if done != len(rows):
        raise RuntimeError(f"{len(rows) - done} accepted chunks were not recorded")
    for start in range(0, len(msgids), ROWS_PER_STATEMENT):
        pairs = msgids[start : start + ROWS_PER_STATEMENT]
        conn.execute(
            "INSERT OR IGNORE INTO msgids (msgid, chunk) VALUES "
            + ",".join(["(?, ?)"] * len(pairs)),
            [value for pair in pairs for value in pair],
        )


def mark_on_wire(conn: sqlite3.Connection, index: int) -> None:
    """The chunk's first request is about to be written: from now on its fate may be unknown."""
    conn.execute(
        "UPDATE chunks SET state='in_flight', updated_at=? WHERE idx=? AND state='planned'",
        (time.time(), index),
    )


def mark_planned(conn: sqlite3.Connection, index: int) -> None:
    """The chunk's last request was refused before the gateway acted: safe to resend."""
    conn.execute(
        "UPDATE chunks SET state='planned', updated_at=? WHERE idx=? AND state='in_flight'",
        (time.time(), index),
    )


def recover_interrupted(conn: sqlite3.Connection) -> None:
    """Chunks left in flight by a dead process become unknown.

    Called right after the process lock was taken: no live process can hold them. A
    chunk whose numbers were kept (one resent by a resumed run) lists its recipients at
    once; the others are listed by position until a run re-reads the input.
    """
    now = time.time()
    rows = conn.execute("SELECT idx, positions, mobiles FROM chunks WHERE state='in_flight'")
    for index, positions, mobiles in rows.fetchall():
        conn.execute(
            "UPDATE chunks SET state='unknown', error_class=?, error_message=?, updated_at=?"
            " WHERE idx=?",
            (INTERRUPTED, "the process stopped while this chunk was in flight", now, index),
        )
        if mobiles is not None:
            _add_unknown(conn, index, decode_positions(positions), mobiles.split("\n"))


def _add_unknown(
    conn: sqlite3.Connection, index: int, positions: Sequence[int], mobiles: Sequence[str]
) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO unknown (position, chunk, mobile) VALUES (?, ?, ?)",
        [(p, index, m) for p, m in zip(positions, mobiles, strict=True)],
    )


def settle_chunk(
    conn: sqlite3.Connection,
    index: int,
    action: str,
    positions: Sequence[int],
    mobiles: Sequence[str],
    *,
    state: str,
    error_class: str | None,
    error_message: str | None,
    retryable: bool,
    attempts: int,
    units: int,
    cost: str,
    receipts: str | None,
    msgids: Sequence[str],
    items_hash: str = "",
) -> None:
    """Record an outcome; insert the chunk first if it was never recorded before."""
    now = time.time()
    # Mobiles are kept only while a chunk's fate is open: enough to list the unknown,
    # without copying the whole input into the journal.
    kept = None if state == "accepted" else "\n".join(mobiles)
    values = (
        state,
        error_class,
        error_message,
        int(retryable),
        attempts,
        units,
        cost,
        receipts,
        kept,
        now,
        pack_numbers(mobiles),
        index,
    )
    updated = conn.execute(
        "UPDATE chunks SET state=?, error_class=?, error_message=?, retryable=?,"
        " attempts=attempts+?, units=?, cost=?, receipts=?, mobiles=?, updated_at=?,"
        " numbers=? WHERE idx=?",
        values,
    )
    if updated.rowcount == 0:
        conn.execute(
            "INSERT INTO chunks (state, error_class, error_message, retryable, attempts,"
            " units, cost, receipts, mobiles, updated_at, numbers, idx, action, first_pos,"
            " last_pos, size, positions, items_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?)",
            (
                *values,
                action,
                positions[0],
                positions[-1],
                len(positions),
                encode_positions(positions),
                items_hash,
            ),
        )
    conn.executemany(
        "INSERT OR IGNORE INTO msgids (msgid, chunk) VALUES (?, ?)", [(m, index) for m in msgids]
    )
    if state == "unknown":
        _add_unknown(conn, index, positions, mobiles)


class ReportLookup:
    """What report ingestion looks up again and again, kept on the worker thread's side.

    Reports come roughly in the order their chunks were sent, a thousand or so per
    msgid, so a msgid's chunk and a chunk's numbers are read once and kept: a bounded
    cache of what the file says, never a second source of truth (only positive answers
    are kept across batches, and a chunk's numbers never change once settled: a changed
    input is refused). What a batch needs is read before it, by :meth:`prefetch`.
    """

    _MAX_MSGIDS = 100_000
    _MAX_CHUNKS = 64

    def __init__(self) -> None:
        self._chunk_of: dict[str, int] = {}
        self._numbers: dict[int, frozenset[str]] = {}
        self._next_seq: int | None = None
        #: Msgids the last prefetch found no chunk for: valid in its transaction only.
        self._absent: set[str] = set()
        #: The numbers of reconciled sendBatch and sendParam chunks, each to its chunks;
        #: read when first needed in a batch (see :meth:`reconciled_holding`).
        self._reconciled: dict[str, list[int]] | None = None

    def prefetch(self, conn: sqlite3.Connection, msgids: set[str]) -> None:
        """Read the chunks of ``msgids`` and their numbers that are not kept yet.

        Two statements for a batch, rather than two per msgid and chunk: every statement
        hands the GIL to the event loop, busy parsing the next batch, and waits to get
        it back. Until the next prefetch (within the transaction that made it: only a
        reconciliation gives a msgid a chunk there, and it is learned), a msgid it did
        not find is known to have none, without asking the file again.
        """
        self._reconciled = None
        wanted = [msgid for msgid in msgids if msgid not in self._chunk_of]
        if len(self._chunk_of) + len(wanted) > self._MAX_MSGIDS:
            self._chunk_of.clear()
            wanted = list(msgids)
        found: dict[str, int] = {}
        for part in _slices(wanted, _VARIABLES):
            found.update(
                conn.execute(
                    f"SELECT msgid, chunk FROM msgids WHERE msgid IN ({_marks(len(part))})", part
                )
            )
        self._chunk_of.update(found)
        self._absent = set(wanted).difference(found)
        chunks = {self._chunk_of[m] for m in msgids if m in self._chunk_of}
        missing = [chunk for chunk in chunks if chunk not in self._numbers][: self._MAX_CHUNKS]
        if not missing:
            return
        rows = conn.execute(
            f"SELECT idx, numbers, mobiles FROM chunks WHERE idx IN ({_marks(len(missing))})",
            missing,
        ).fetchall()
        for chunk, packed, mobiles in rows:
            if packed is not None or mobiles is not None:
                self._keep_numbers(chunk, packed, mobiles)

    def sequence(self, conn: sqlite3.Connection, count: int) -> int:
        """The first of ``count`` fetch-order numbers, shared by ``reports`` and ``delivery``.

        A transaction that rolls back leaves a gap, never a number used twice.
        """
        if self._next_seq is None:
            (last,) = conn.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM reports), 0),"
                " coalesce((SELECT max(seq) FROM delivery), 0),"
                " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'reports'), 0))"
            ).fetchone()
            self._next_seq = last + 1
        first = self._next_seq
        self._next_seq += count
        return first

    def chunk_of(self, conn: sqlite3.Connection, msgid: str) -> int | None:
        chunk = self._chunk_of.get(msgid)
        if chunk is None:
            if msgid in self._absent:
                return None
            row = conn.execute("SELECT chunk FROM msgids WHERE msgid=?", (msgid,)).fetchone()
            if row is None:
                return None
            if len(self._chunk_of) >= self._MAX_MSGIDS:
                self._chunk_of.clear()
            chunk = self._chunk_of[msgid] = row[0]
        return chunk

    def learn(self, msgid: str, chunk: int) -> None:
        # Kept chunks are looked at before the absent: nothing to forget there.
        self._chunk_of[msgid] = chunk

    def reconciled_holding(self, conn: sqlite3.Connection, mobile: str) -> list[int]:
        """The reconciled sendBatch and sendParam chunks that hold ``mobile``.

        Such a chunk's answer was lost, so its msgids were never learned, and they are one
        per recipient: the report that reconciled it taught one. Its other recipients'
        reports are known by their number. There are few such chunks (those on the wire
        when a process died), read once a batch and only for a report whose msgid is
        unknown. A sendOnce chunk has a single msgid, learned when it was reconciled.
        """
        if self._reconciled is None:
            held: dict[str, list[int]] = {}
            for chunk, packed, mobiles in conn.execute(
                "SELECT idx, numbers, mobiles FROM chunks"
                " WHERE reconciled=1 AND action != 'sendOnce'"
            ):
                listed = _listed(packed, mobiles)
                for number in listed:
                    held.setdefault(number, []).append(chunk)
            self._reconciled = held
        return self._reconciled.get(mobile, [])

    def forget_reconciled(self) -> None:
        """A chunk was reconciled: :meth:`reconciled_holding` reads them again."""
        self._reconciled = None

    def numbers(self, conn: sqlite3.Connection, chunk: int) -> frozenset[str] | None:
        """The chunk's numbers; None when the file does not hold them (schema 1)."""
        found = self._numbers.get(chunk)
        if found is None:
            row = conn.execute(
                "SELECT numbers, mobiles FROM chunks WHERE idx=?", (chunk,)
            ).fetchone()
            if row is None or (row[0] is None and row[1] is None):
                return None
            found = self._keep_numbers(chunk, *row)
        return found

    def _keep_numbers(
        self, chunk: int, packed: bytes | None, mobiles: str | None
    ) -> frozenset[str]:
        listed = _listed(packed, mobiles)
        if len(self._numbers) >= self._MAX_CHUNKS:
            self._numbers.pop(next(iter(self._numbers)))
        found = self._numbers[chunk] = frozenset(listed)
        return found


@attrs.frozen
class Ingested:
    """What one batch of reports did to the journal."""

    #: Unknown chunks the batch proved accepted, with their input positions.
    reconciled: dict[int, tuple[int, ...]]
    #: For each DeliveryReport of the batch, in order: True if it is the campaign's.
    mine: list[bool]
    #: Recipients of the campaign settled by this batch, by final code (upper case).
    finals: dict[str, int]
    #: Reports of the batch that are not the campaign's.
    foreign: int
    #: Their msgids (a chunk recorded later may claim them: see :func:`adopt_reports`).
    foreign_msgids: frozenset[str] = frozenset()


def record_reports(
    conn: sqlite3.Connection,
    batch: Sequence[DeliveryReport | MalformedRecord],
    lookup: ReportLookup | None = None,
    *,
    only_mine: bool = False,
) -> Ingested:
    """Store reports, each marked with the campaign's chunk it is for, or none.

    A report is the campaign's when its msgid is one the campaign recorded and its
    mobile one of that chunk's numbers; or when its msgid was never learned (the answer
    was lost) and its mobile belongs to exactly one unknown chunk, which it proves
    accepted (reconciled here). A final report of the campaign's settles its recipient
    in ``delivery`` (the first final one: a repeat is not counted twice); every other
    report is kept too, and counted as not the campaign's; with ``only_mine``, those are
    left out (reports another campaign's journal holds, see :func:`unclaimed_reports`).
    """
    lookup = lookup if lookup is not None else ReportLookup()
    ingest = _Ingest(conn, lookup, time.time())
    ingest.only_mine = only_mine
    ingest.seq = lookup.sequence(conn, len(batch)) - 1
    ingest.any_unknown = conn.execute("SELECT 1 FROM unknown LIMIT 1").fetchone() is not None
    clean = MalformedRecord not in set(map(type, batch))
    lookup.prefetch(
        conn,
        set(map(_MSGID, batch))
        if clean
        else {item.msgid for item in batch if not isinstance(item, MalformedRecord)},
    )
    # Reports come a run of equal msgids at a time (a sendOnce chunk's, a thousand to a
    # msgid): a run whose chunk and numbers are known is taken whole, at C speed (see
    # _Ingest.whole_run); any other report one by one.
    for msgid, run in groupby(batch, key=_MSGID if clean else _msgid_or_none):
        items = list(run)
        if msgid is None or not ingest.whole_run(msgid, items):  # type: ignore[arg-type]
            ingest.one_by_one(items)
    finals = ingest.finals
    rows = ingest.rows
    settled = len(ingest.settled) // _SETTLED_WIDTH + len(ingest.delivery)
    if settled:
        before = conn.total_changes
        _insert_flat(conn, _SETTLED_INSERT, _SETTLED_WIDTH, ingest.settled, ingest.now)
        _insert_many(conn, _DELIVERY_INSERT, len(_DELIVERY_COLUMNS), ingest.delivery)
        if conn.total_changes - before < settled:
            # Some recipients were settled by an earlier batch: their reports are repeats,
            # kept in ``reports`` (rare: look each up).
            for chunk, mobile, code, at, seq_, id_, msgid, result, raw in ingest.delivery_rows():
                (first,) = conn.execute(
                    "SELECT seq FROM delivery WHERE chunk=? AND mobile=?", (chunk, mobile)
                ).fetchone()
                if first != seq_:
                    rows.append((seq_, id_, msgid, mobile, result, code, raw, at, chunk))
                    finals[code.upper()] -= 1
            finals = Counter({code: n for code, n in finals.items() if n})
    _insert_flat(conn, _KEPT_INSERT, _KEPT_WIDTH, ingest.kept, ingest.now)
    _insert_many(conn, _REPORTS_INSERT, len(_REPORTS_COLUMNS), rows)
    counts = [(f"final:{code}", n) for code, n in finals.items()]
    if ingest.foreign:
        counts.append(("foreign", ingest.foreign))
    _add_tallies(conn, counts)
    return Ingested(
        ingest.reconciled,
        ingest.mine,
        dict(finals),
        ingest.foreign,
        frozenset(ingest.foreign_msgids),
    )


_MSGID = attrgetter("msgid")
_MOBILE = attrgetter("mobile")
_CODE = attrgetter("code")
_ID = attrgetter("id")
_RESULT = attrgetter("result")
_EXTRA = attrgetter("extra")


def _msgid_or_none(item: DeliveryReport | MalformedRecord) -> str | None:
    return None if isinstance(item, MalformedRecord) else item.msgid


class _Ingest:
    """One batch of reports on its way to the journal: the rows, counts and verdicts."""

    def __init__(self, conn: sqlite3.Connection, lookup: ReportLookup, now: float) -> None:
        self.conn = conn
        self.lookup = lookup
        self.now = now
        self.seq = 0
        self.any_unknown = False
        #: Reports not the campaign's are left out rather than kept.
        self.only_mine = False
        self.reconciled: dict[int, tuple[int, ...]] = {}
        #: For each DeliveryReport, in order: True if it is the campaign's.
        self.mine: list[bool] = []
        self.foreign = 0
        self.foreign_msgids: set[str] = set()
        #: Rows in ``reports``' column order (_REPORTS_COLUMNS), of reports taken one by
        #: one.
        self.rows: list[tuple[Any, ...]] = []
        #: A recipient's first final report goes to ``delivery`` (whole), not to
        #: ``reports``: rows in ``delivery``'s column order (_DELIVERY_COLUMNS), of
        #: reports taken one by one.
        self.delivery: list[tuple[Any, ...]] = []
        #: Reports of whole runs, flat (one value after another, _SETTLED_WIDTH and
        #: _KEPT_WIDTH a report): the final ones, to ``delivery``, and the others, to
        #: ``reports``. Flat because that is how a statement takes them: no tuple per
        #: report is made, then taken apart again.
        self.settled: list[object] = []
        self.kept: list[object] = []
        #: Recipients settled by the batch, by chunk.
        self.settling: dict[int, set[str]] = {}
        #: Recipients settled, by final code (upper case).
        self.finals: Counter[str] = Counter()

    def whole_run(self, msgid: str, items: list[DeliveryReport]) -> bool:
        """Record a run of reports of one msgid at once, if nothing in it needs a look.

        The common case at ten thousand reports a batch: the msgid is the campaign's,
        every mobile one of its chunk's numbers, no recipient twice, no extra attributes.
        Each column is then taken with ``map`` and the values laid out with ``zip``,
        never a Python loop per report: this runs on the journal's worker thread and
        every moment it holds the GIL is one the event loop waits for. False (nothing
        recorded) when the run must go report by report.
        """
        conn, lookup = self.conn, self.lookup
        chunk = lookup.chunk_of(conn, msgid)
        if chunk is None or any(map(_EXTRA, items)):
            return False
        mobiles = list(map(_MOBILE, items))
        numbers = lookup.numbers(conn, chunk)
        if numbers is not None and not numbers.issuperset(mobiles):
            return False
        distinct = set(mobiles)
        settling = self.settling.setdefault(chunk, set())
        if len(distinct) != len(mobiles) or not settling.isdisjoint(distinct):
            return False
        codes = list(map(_CODE, items))
        count = len(items)
        seqs: Sequence[int] = range(self.seq + 1, self.seq + 1 + count)
        self.seq += count
        ids = list(map(_ID, items))
        results = list(map(int, map(_RESULT, items)))
        columns = (mobiles, codes, seqs, ids, results)
        # Final reports settle their recipients; the others ("not known yet") are kept.
        final = list(map(settles, results, codes))
        if all(final):
            self._settle(chunk, msgid, *columns)
        elif not any(final):
            self._keep(chunk, msgid, *columns)
        else:
            keeps = list(map(not_, final))
            self._settle(chunk, msgid, *(list(compress(c, final)) for c in columns))
            self._keep(chunk, msgid, *(list(compress(c, keeps)) for c in columns))
        self.mine.extend(repeat(True, count))
        return True

    def _settle(
        self,
        chunk: int,
        msgid: str,
        mobiles: list[str],
        codes: list[str],
        seqs: Sequence[int],
        ids: list[str],
        results: list[int],
    ) -> None:
        # In _SETTLED_COLUMNS' order.
        self.settled.extend(
            chain.from_iterable(
                zip(repeat(chunk), mobiles, codes, seqs, ids, repeat(msgid), results)
            )
        )
        self.settling[chunk].update(mobiles)
        # Counted as the gateway wrote them, then upper-cased once a code, not a report.
        for code, n in Counter(codes).items():
            self.finals[code.upper()] += n

    def _keep(
        self,
        chunk: int,
        msgid: str,
        mobiles: list[str],
        codes: list[str],
        seqs: Sequence[int],
        ids: list[str],
        results: list[int],
    ) -> None:
        # In _KEPT_COLUMNS' order.
        self.kept.extend(
            chain.from_iterable(
                zip(seqs, ids, repeat(msgid), mobiles, results, codes, repeat(chunk))
            )
        )

    def delivery_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every row for ``delivery`` of the batch, in its column order (_DELIVERY_COLUMNS)."""
        flat = iter(self.settled)
        for chunk, mobile, code, seq, id_, msgid, result in zip(
            *[flat] * _SETTLED_WIDTH, strict=True
        ):
            yield chunk, mobile, code, self.now, seq, id_, msgid, result, None
        yield from self.delivery

    def one_by_one(self, items: list[DeliveryReport | MalformedRecord]) -> None:
        """Record reports one at a time: malformed, foreign, reconciling, repeated."""
        conn, lookup, now = self.conn, self.lookup, self.now
        last_msgid: str | None = None
        last_chunk: int | None = None
        last_numbers: frozenset[str] | None = None
        for item in items:
            self.seq += 1
            seq = self.seq
            if isinstance(item, MalformedRecord):
                if self.only_mine:
                    continue
                bad = json.dumps({"reason": item.reason, "attributes": dict(item.attributes)})
                self.rows.append((seq, None, None, None, None, None, bad, now, None))
                continue
            msgid, mobile = item.msgid, item.mobile
            if msgid != last_msgid:
                last_msgid = msgid
                last_chunk = lookup.chunk_of(conn, msgid)
                last_numbers = None if last_chunk is None else lookup.numbers(conn, last_chunk)
            chunk = last_chunk
            if chunk is not None:
                if last_numbers is not None and mobile not in last_numbers:
                    chunk = None
            elif self.any_unknown:
                chunk = _sole_unknown_chunk(conn, mobile)
                if chunk is not None:
                    self.reconciled[chunk] = _reconcile(conn, chunk, msgid, now)
                    lookup.learn(msgid, chunk)
                    lookup.forget_reconciled()
                    # The msgid now has a chunk (and the chunk its numbers): look again.
                    last_msgid = None
            if chunk is None and last_chunk is None:
                # A msgid never learned may be one of a reconciled chunk's others.
                held = lookup.reconciled_holding(conn, mobile)
                if len(held) == 1:
                    chunk = held[0]
                    conn.execute(
                        "INSERT OR IGNORE INTO msgids (msgid, chunk) VALUES (?, ?)", (msgid, chunk)
                    )
                    lookup.learn(msgid, chunk)
                    last_msgid = None
            self.mine.append(chunk is not None)
            extra = json.dumps(dict(item.extra)) if item.extra else None
            code = item.code
            if chunk is None:
                if self.only_mine:
                    continue
                self.foreign += 1
                self.foreign_msgids.add(msgid)
            else:
                upper = code.upper()
                settling = self.settling.setdefault(chunk, set())
                if settles(item.result, code) and mobile not in settling:
                    settling.add(mobile)
                    self.delivery.append(
                        (chunk, mobile, code, now, seq, item.id, msgid, int(item.result), extra)
                    )
                    self.finals[upper] += 1
                    continue
            self.rows.append(
                (seq, item.id, msgid, mobile, int(item.result), code, extra, now, chunk)
            )


_REPORTS_COLUMNS = ("seq", "id", "msgid", "mobile", "result", "code", "raw", "fetched_at", "chunk")
_REPORTS_INSERT = f"INSERT INTO reports ({', '.join(_REPORTS_COLUMNS)}) VALUES "
_DELIVERY_COLUMNS = ("chunk", "mobile", "code", "at", "seq", "id", "msgid", "result", "raw")
# OR IGNORE: a recipient an earlier batch settled keeps its first final report.
_DELIVERY_INSERT = f"INSERT OR IGNORE INTO delivery ({', '.join(_DELIVERY_COLUMNS)}) VALUES "
# Reports of whole runs (see _Ingest.whole_run) leave out what is the same for all of
# a batch: the time it was fetched, bound once as ?1, and ``raw``, NULL (a report with
# extra attributes never comes this way). Binding a NULL goes through the sqlite3
# module's adapters, a Python lookup per value, which cost as much as the SQL.
_SETTLED_COLUMNS = ("chunk", "mobile", "code", "seq", "id", "msgid", "result")
_SETTLED_WIDTH = len(_SETTLED_COLUMNS)
_SETTLED_INSERT = (
    f"INSERT OR IGNORE INTO delivery (at, raw, {', '.join(_SETTLED_COLUMNS)}) VALUES ",
    "(?1, NULL, " + ", ".join("?" * _SETTLED_WIDTH) + ")",
)
_KEPT_COLUMNS = ("seq", "id", "msgid", "mobile", "result", "code", "chunk")
_KEPT_WIDTH = len(_KEPT_COLUMNS)
_KEPT_INSERT = (
    f"INSERT INTO reports (fetched_at, raw, {', '.join(_KEPT_COLUMNS)}) VALUES ",
    "(?1, NULL, " + ", ".join("?" * _KEPT_WIDTH) + ")",
)
# Bound variables one statement may hold: 32766 since SQLite 3.32, 999 before.
_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _insert_many(
    conn: sqlite3.Connection, head: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` with ``head`` (``INSERT ... VALUES``), as many rows a statement as
    SQLite's bound on variables allows (3640 rows of 9 columns).

    Not ``executemany``: that runs the statement once per row, and each run hands the GIL
    to the event loop and waits to get it back (see ``writer``); so does every
    statement, which is why they are as long as they may be. Ten thousand reports in
    statements of 500 rows took three times their CPU time in wall time beside a busy
    event loop; in three statements, two.
    """
    per = max(1, _VARIABLES // width)
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        conn.execute(head + ",".join([one] * len(part)), list(chain.from_iterable(part)))


def _insert_flat(
    conn: sqlite3.Connection,
    statement: tuple[str, str],
    width: int,
    values: list[object],
    first: object,
) -> None:
    """Insert rows laid out flat in ``values``, ``width`` values a row, with ``first``
    bound once as ?1 for all of them: ``statement`` is (``INSERT ... VALUES``, one row's
    placeholders), as many rows a statement as SQLite's bound allows (as _insert_many)."""
    head, one = statement
    per = max(1, (_VARIABLES - 1) // width) * width
    for start in range(0, len(values), per):
        part = values[start : start + per]
        conn.execute(head + ",".join([one] * (len(part) // width)), [first, *part])


@attrs.frozen
class Claimed:
    """What making stored reports one chunk's did: those kept as not the campaign's that
    proved an unknown chunk accepted (:func:`claim_stored_reports`), or that came before
    their chunk's outcome was recorded (:func:`adopt_reports`)."""

    #: Recipients the reports settled, by final code (upper case).
    finals: dict[str, int]
    #: Reports that changed sides.
    moved: int


def claim_stored_reports(
    conn: sqlite3.Connection, index: int, action: str, mobiles: Sequence[str], now: float
) -> Claimed | None:
    """Reconcile unknown chunk ``index`` from reports stored before its numbers were known.

    A chunk a dead process left on the wire is known by input position only until a run
    re-reads the input; reports fetched in between (``aisix reports`` before the resume)
    could not be matched and were kept as not the campaign's. Now that its numbers are
    known, the same rule as for a report fetched now applies: a report for one of them,
    whose mobile is in no other unknown chunk, proves the request accepted. A sendOnce
    chunk has one msgid, so only the reports of the first such report's msgid are
    claimed; a sendBatch or sendParam chunk has one per recipient.
    """
    if not tallies(conn).get("foreign"):
        return None
    numbers = sorted(set(mobiles))
    found: list[tuple[Any, ...]] = []
    for part in _slices(numbers, _VARIABLES):
        found += conn.execute(
            "SELECT seq, id, msgid, mobile, result, code, raw, fetched_at FROM reports"
            f" WHERE chunk IS NULL AND msgid IS NOT NULL AND mobile IN ({_marks(len(part))})",
            part,
        ).fetchall()
    found.sort()
    proof = next((row for row in found if _sole_unknown_chunk(conn, row[3]) == index), None)
    if proof is None:
        return None
    _reconcile(conn, index, proof[2], now)
    if action == "sendOnce":
        found = [row for row in found if row[2] == proof[2]]
    else:
        conn.executemany(
            "INSERT OR IGNORE INTO msgids (msgid, chunk) VALUES (?, ?)",
            [(msgid, index) for msgid in {row[2] for row in found}],
        )
    return _move_reports(conn, index, found)


def _move_reports(
    conn: sqlite3.Connection, index: int, found: Sequence[tuple[Any, ...]]
) -> Claimed:
    """Make stored reports (seq, id, msgid, mobile, result, code, raw, fetched_at) chunk
    ``index``'s: a recipient's first final one moves to ``delivery``, the others are
    marked."""
    finals: dict[str, int] = {}
    for seq, id_, msgid, mobile, result, code, raw, at in found:
        upper = (code or "").upper()
        if settles(result, code or ""):
            added = conn.execute(
                "INSERT OR IGNORE INTO delivery (chunk, mobile, code, at, seq, id, msgid,"
                " result, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (index, mobile, code, at, seq, id_, msgid, result, raw),
            ).rowcount
            if added:
                finals[upper] = finals.get(upper, 0) + 1
                conn.execute("DELETE FROM reports WHERE seq=?", (seq,))
                continue
        conn.execute("UPDATE reports SET chunk=? WHERE seq=?", (index, seq))
    counts = [(f"final:{code}", n) for code, n in finals.items()]
    if found:
        counts.append(("foreign", -len(found)))
    _add_tallies(conn, counts)
    return Claimed(finals, len(found))


def adopt_reports(
    conn: sqlite3.Connection, index: int, msgids: Sequence[str], since: int
) -> Claimed:
    """Claim for chunk ``index`` the reports recorded before its outcome was.

    A report can be fetched before its chunk's outcome is recorded (reports followed
    while sending, a slow disk): it was counted as not the campaign's. Only reports of
    this session (``seq > since``) can be such, and only these msgids'.
    """
    row = conn.execute("SELECT numbers, mobiles FROM chunks WHERE idx=?", (index,)).fetchone()
    if row is None or (row[0] is None and row[1] is None):
        return Claimed({}, 0)
    numbers = set(_listed(*row))
    found: list[tuple[Any, ...]] = []
    for msgid in msgids:
        found += [
            row
            for row in conn.execute(
                "SELECT seq, id, msgid, mobile, result, code, raw, fetched_at FROM reports"
                " WHERE seq > ? AND chunk IS NULL AND msgid = ? ORDER BY seq",
                (since, msgid),
            )
            if row[3] in numbers
        ]
    return _move_reports(conn, index, found)


def _reconcile(conn: sqlite3.Connection, index: int, msgid: str, now: float) -> tuple[int, ...]:
    text, mobiles = conn.execute(
        "SELECT positions, mobiles FROM chunks WHERE idx=?", (index,)
    ).fetchone()
    numbers = pack_numbers(mobiles.split("\n")) if mobiles is not None else None
    conn.execute(
        "UPDATE chunks SET state='accepted', reconciled=1, mobiles=NULL,"
        " numbers=coalesce(?, numbers), updated_at=? WHERE idx=?",
        (numbers, now, index),
    )
    conn.execute("DELETE FROM unknown WHERE chunk=?", (index,))
    conn.execute("INSERT OR IGNORE INTO msgids (msgid, chunk) VALUES (?, ?)", (msgid, index))
    return decode_positions(text)


def _listed(packed: bytes | None, mobiles: str | None) -> list[str]:
    """A chunk's numbers from its row: ``numbers`` once settled (packed), else the
    ``mobiles`` kept while its fate is open."""
    return unpack_numbers(packed) if packed is not None else (mobiles or "").split("\n")


def _sole_unknown_chunk(conn: sqlite3.Connection, mobile: str) -> int | None:
    """The one unknown chunk that holds ``mobile``; None for none, or for the same number
    in two unknown chunks (a report for it proves only one of them)."""
    chunks = conn.execute(
        "SELECT DISTINCT chunk FROM unknown WHERE mobile=? LIMIT 2", (mobile,)
    ).fetchall()
    return chunks[0][0] if len(chunks) == 1 else None


def _marks(count: int) -> str:
    """``count`` placeholders, comma-separated."""
    return ",".join("?" * count)


def _slices(values: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _add_tallies(conn: sqlite3.Connection, counts: Sequence[tuple[str, int]]) -> None:
    """Add ``counts`` (name, n) to the tallies, in one statement (not one per name)."""
    if counts:
        conn.execute(
            "INSERT INTO tallies (name, n) VALUES "
            + ",".join(["(?, ?)"] * len(counts))
            + " ON CONFLICT (name) DO UPDATE SET n = n + excluded.n",
            list(chain.from_iterable(counts)),
        )


def tallies(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, n FROM tallies"))


def begin_run(conn: sqlite3.Connection, kind: str, pid: int) -> int:
    cursor = conn.execute(
        "INSERT INTO runs (kind, started_at, pid) VALUES (?, ?, ?)", (kind, time.time(), pid)
    )
    return int(cursor.lastrowid or 0)


def end_run(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("UPDATE runs SET ended_at=? WHERE seq=?", (time.time(), seq))


def runs(conn: sqlite3.Connection) -> list[tuple[int, str, float, float | None, int | None]]:
    return list(conn.execute("SELECT seq, kind, started_at, ended_at, pid FROM runs ORDER BY seq"))


#: Export columns, in order.
EXPORT_COLUMNS = ("mobile", "position", "status", "msgid", "delivery", "reported_at")


def _status(state: str, retryable: bool) -> str:
    if state == "failed":
        # Failed harmlessly: a resumed run sends it, so it is not sent yet.
        return "not_sent" if retryable else "failed"
    return "not_sent" if state == "planned" else state


def _msgids(receipts: str | None, size: int) -> list[str]:
    if not receipts:
        return [""] * size
    items = json.loads(receipts)
    if len(items) == 1 and "mobile" not in items[0]:
        return [items[0].get("msgid", "")] * size  # sendOnce: one msgid for all
    listed = [item.get("msgid", "") for item in items]
    return listed + [""] * (size - len(listed))


def _pending_msgids(conn: sqlite3.Connection) -> dict[int, dict[str, str]]:
    """The msgids of reports that settled nothing, by chunk and mobile (the first a
    recipient had), for the chunks without a receipt that hold a msgid per recipient.

    One read of the reports for the whole export rather than one per such chunk: the
    table has no index by chunk, and these chunks are few (answers lost or killed).
    """
    found: dict[int, dict[str, str]] = {}
    for chunk, mobile, msgid in conn.execute(
        "SELECT chunk, mobile, msgid FROM reports WHERE chunk IN (SELECT idx FROM chunks"
        " WHERE coalesce(receipts, '') = '' AND action != 'sendOnce') AND msgid IS NOT NULL"
        " ORDER BY seq"
    ):
        found.setdefault(chunk, {}).setdefault(mobile, msgid)
    return found


def export_rows(conn: sqlite3.Connection, write: Callable[[Sequence[object]], object]) -> int:
    """One row per recipient the journal knows (see ``EXPORT_COLUMNS``), in input order.

    Read a chunk at a time: its numbers, its msgid(s), and its recipients' final reports.
    A chunk whose numbers the file does not hold (accepted under schema 1) gives its
    positions with an empty mobile. Input no run has reached is not in the journal.
    """
    written = 0
    pending = _pending_msgids(conn)
    chunks = conn.execute(
        "SELECT idx, action, positions, state, retryable, receipts, numbers, mobiles FROM chunks"
        " ORDER BY first_pos"
    )
    for index, action, positions, state, retryable, receipts, numbers, mobiles in chunks:
        places = decode_positions(positions)
        if numbers is not None:
            listed = unpack_numbers(numbers)
        elif mobiles is not None:
            listed = mobiles.split("\n")
        else:
            listed = [""] * len(places)
        status = _status(state, bool(retryable))
        msgids = _msgids(receipts, len(places))
        delivered = conn.execute(
            "SELECT mobile, code, at, msgid FROM delivery WHERE chunk=?", (index,)
        ).fetchall()
        reported = {mobile: (code, at) for mobile, code, at, _ in delivered}
        if not receipts and action == "sendOnce":
            # No receipt (an unknown chunk settled by its reports): the msgid the reports
            # proved it by is the whole request's, its only one.
            proved = conn.execute("SELECT msgid FROM msgids WHERE chunk=?", (index,)).fetchall()
            if len(proved) == 1:
                msgids = [proved[0][0]] * len(places)
        elif not receipts:
            # A sendBatch or sendParam request has a msgid per recipient, and its lost
            # answer held them all: each recipient's is the one its own report carried
            # (its final one, else the first that settled nothing). A recipient not
            # reported yet has none to give; another's is never it.
            carried = {**pending.get(index, {}), **{m: msgid for m, _, _, msgid in delivered}}
            msgids = [carried.get(mobile, "") for mobile in listed]
        for mobile, position, msgid in zip(listed, places, msgids, strict=False):
            code, at = reported.get(mobile, ("", None))
            when = "" if at is None else datetime.fromtimestamp(at, tz=timezone.utc).isoformat()
            write((mobile, position, status, msgid, code, when))
            written += 1
    return written


def _reply_rows(batch: Iterable[Reply | MalformedRecord], now: float) -> Iterator[tuple[Any, ...]]:
    for item in batch:
        if isinstance(item, MalformedRecord):
            bad = json.dumps({"reason": item.reason, "attributes": dict(item.attributes)})
            yield (None, None, None, None, bad, now)
        else:
            millis = round(item.time.timestamp() * 1000)
            extra = json.dumps(dict(item.extra)) if item.extra else None
            yield (item.id, millis, item.mobile, item.content, extra, now)


def record_replies(conn: sqlite3.Connection, batch: Sequence[Reply | MalformedRecord]) -> None:
    conn.executemany(
        "INSERT INTO replies (id, time_ms, mobile, content, raw, fetched_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        list(_reply_rows(batch, time.time())),
    )


def campaign_identity(conn: sqlite3.Connection) -> str | None:
    """What tells this journal's campaign from any other: its definition's fingerprint and
    when it was created (a campaign sent again into a new journal has a new one)."""
    row = conn.execute("SELECT fingerprint, created_at FROM campaign").fetchone()
    return None if row is None else f"{row[0]}@{row[1]!r}"


def unclaimed_reports(
    conn: sqlite3.Connection, after: int, limit: int
) -> list[tuple[int, DeliveryReport]]:
    """Up to ``limit`` reports kept as not this campaign's, fetched after report ``after``
    (by fetch order), each with its place in that order."""
    return [
        (seq, _stored(id_, msgid, mobile, result, code, raw))
        for seq, id_, msgid, mobile, result, code, raw in conn.execute(
            "SELECT seq, id, msgid, mobile, result, code, raw FROM reports"
            " WHERE chunk IS NULL AND msgid IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
    ]


def _stored(
    id_: str, msgid: str, mobile: str, result: int, code: str, raw: str | None
) -> DeliveryReport:
    extra = json.loads(raw) if raw else {}
    return DeliveryReport(
        id=id_, msgid=msgid, mobile=mobile, result=ReportResult(result), code=code, extra=extra
    )


def stored_reports(conn: sqlite3.Connection) -> list[DeliveryReport]:
    return [
        _stored(id_, msgid, mobile, result, code, raw)
        for _, id_, msgid, mobile, result, code, raw in conn.execute(
            "SELECT seq, id, msgid, mobile, result, code, raw FROM reports"
            " WHERE msgid IS NOT NULL UNION ALL"
            " SELECT seq, id, msgid, mobile, result, code, raw FROM delivery ORDER BY 1"
        )
    ]


def stored_replies(conn: sqlite3.Connection) -> list[Reply]:
    return [
        Reply(
            id=id_,
            time=datetime.fromtimestamp(millis / 1000, tz=timezone.utc),
            mobile=mobile,
            content=content,
            extra=json.loads(raw) if raw else {},
        )
        for id_, millis, mobile, content, raw in conn.execute(
            "SELECT id, time_ms, mobile, content, raw FROM replies"
            " WHERE mobile IS NOT NULL ORDER BY seq"
        )
    ]


def changed_input(
    path: Path, index: int, positions: str, old_mobiles: str | None, mobiles: Sequence[str]
) -> str:
    """The message for an input that differs from the one recorded, naming where."""
    where = f"positions {positions}"
    if old_mobiles:
        pairs = zip(decode_positions(positions), old_mobiles.split("\n"), mobiles, strict=False)
        for position, old, new in pairs:
            if old != new:
                where = f"position {position} ({old!r} before, {new!r} now)"
                break
    return (
        f"the input differs from the one the journal {path} recorded, at {where} "
        f"(chunk {index}); resume a campaign with the same input in the same order, "
        "or use another journal file"
    )
