"""Counting outcomes as they land, and writing them where the operator asked.

The command line never keeps every outcome: a ten-million-recipient send would hold ten
million numbers. It keeps counts, money, a few examples of each failure for the summary,
and writes the rest as it goes: one CSV line per recipient with ``--outcomes``, one JSON
line per chunk with ``--json``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
from collections import Counter
from decimal import Decimal
from typing import Any, TextIO

import attrs

from ... import FoundOnResume, NotSentError, OutcomeStatus, SendOutcome
from ...validation import spreadsheet_safe
from .._exit import CliError
from .._stdout import Piece, StdoutWriter

__all__ = [
    "PIPE_STALL",
    "SAMPLES",
    "PipedOutcomes",
    "Tally",
    "found_rows_text",
    "open_outcomes",
    "outcome_record",
    "outcome_rows_text",
    "write_outcome_rows",
]

#: Failed and unknown recipients shown in a summary; the rest are counted.
SAMPLES = 10


def _reason(outcome: SendOutcome) -> str:
    error = outcome.error
    if error is None:
        return ""
    return f"{type(error).__name__}: {error.message}"


@attrs.define
class Tally:
    """Running totals of one send (or of one part of the demo)."""

    accepted: int = 0
    #: Refused recipients; those never sent (NotSentError) are counted in ``not_sent``.
    failed: int = 0
    unknown: int = 0
    #: Failed with NotSentError: dispatch stopped (-9, an account refusal, a stream left
    #: early) before their request was made.
    not_sent: int = 0
    units: int = 0
    #: Yuan, two decimals as the gateway writes them even when nothing was charged.
    cost: Decimal = Decimal("0.00")
    chunks: int = 0
    #: Recipients per failure reason ("InvalidParameterError: ..."), for the summary.
    reasons: Counter[str] = attrs.Factory(Counter)
    #: ... and per reason dispatch stopped, for those never sent.
    not_sent_reasons: Counter[str] = attrs.Factory(Counter)
    failed_examples: list[tuple[str, str]] = attrs.Factory(list)
    unknown_examples: list[tuple[str, str]] = attrs.Factory(list)

    @property
    def done(self) -> int:
        """Recipients with an outcome."""
        return self.accepted + self.failed + self.unknown + self.not_sent

    def unread(self, total: int, skipped: int) -> int:
        """Recipients of the input a stop left unread: no outcome, never sent."""
        return max(0, total - self.done - skipped)

    def add(self, outcome: SendOutcome) -> None:
        """Count one outcome."""
        size = len(outcome.mobiles)
        self.chunks += 1
        if outcome.status is OutcomeStatus.ACCEPTED:
            self.accepted += size
            self.units += outcome.units
            self.cost += outcome.cost
            return
        reason = _reason(outcome)
        if outcome.action is None:
            # An invalid input line (--skip-invalid): warned about once already, by its
            # line number, before sending; the engine's wording would only repeat it.
            self.failed += size
            return
        if outcome.status is OutcomeStatus.FAILED and isinstance(outcome.error, NotSentError):
            # Kept apart from refusals: nothing was asked of the gateway for them, so a
            # script may send them again as they are (a refused one needs fixing first).
            self.not_sent += size
            # Its message says "not sent: ..." already; the type name would only repeat it.
            self.not_sent_reasons[outcome.error.message] += size
            return
        self.reasons[reason] += size
        if outcome.status is OutcomeStatus.FAILED:
            self.failed += size
            examples = self.failed_examples
        else:
            self.unknown += size
            examples = self.unknown_examples
        for mobile in outcome.mobiles[: max(0, SAMPLES - len(examples))]:
            examples.append((mobile, reason))


def outcome_record(outcome: SendOutcome) -> dict[str, Any]:
    """One outcome as a JSON-ready record (``--json``)."""
    unknown = outcome.status is OutcomeStatus.UNKNOWN
    record: dict[str, Any] = {
        "type": "outcome",
        "chunk": outcome.chunk,
        "action": outcome.action,
        "status": outcome.status.value,
        "recipients": len(outcome.mobiles),
        "mobiles": list(outcome.mobiles),
        "msgids": [receipt.msgid for receipt in outcome.receipts],
        # Unknown: it may have been charged, by an amount no receipt said; 0 would read
        # as "nothing charged".
        "units": None if unknown else outcome.units,
        "cost": None if unknown else outcome.cost,
        "attempts": outcome.attempts,
        # Present (None) on accepted outcomes too: every record of a type has one shape.
        "error": _reason(outcome) or None,
        "error_code": getattr(outcome.error, "code", None),
    }
    return record


def outcome_rows_text(outcome: SendOutcome) -> str:
    """A chunk's rows (see :func:`write_outcome_rows`) as one text, to be written at once:
    written row by row, a ``kill -9`` in the middle left part of a chunk in the file (its
    buffer filled), and a resumed run, finding the chunk settled, never wrote the rest."""
    text = io.StringIO()
    write_outcome_rows(csv.writer(text), outcome)
    return text.getvalue()


#: The error cell of the lines of a chunk a killed process left on the wire, found again
#: by a resumed run, by the status the journal gives it.
_FOUND_REASONS = {
    OutcomeStatus.UNKNOWN: (
        "a process was stopped (killed) while its request was on the wire: it may have "
        "been sent and charged (found in the journal by this run)"
    ),
    OutcomeStatus.ACCEPTED: (
        "a process was stopped (killed) while its request was on the wire; a delivery "
        "report proved it sent (reconciled): charged, no receipt"
    ),
}


def found_rows_text(found: FoundOnResume) -> str:
    """The rows of a chunk a resumed run found left on the wire, as one text (see
    :func:`outcome_rows_text`): no msgid (no receipt came back for it)."""
    text = io.StringIO()
    writer = csv.writer(text)
    reason = _FOUND_REASONS[found.status]
    for _, mobile in found.recipients:
        writer.writerow(outcome_row(mobile, found.status.value, "", reason))
    return text.getvalue()


def outcome_row(mobile: str, status: str, msgid: str, error: str) -> tuple[str, ...]:
    """One --outcomes row, safe to open in a spreadsheet.

    The mobile (an invalid line --skip-invalid reports is kept as typed), the msgid
    (the gateway's) and the error (the gateway's words inside ours) come from outside:
    one a spreadsheet would run as a formula (``=HYPERLINK(...)``) is written after a
    ``'``. The status is ours, and a plain number (``-1``, ``+86...``) is left as it is.
    """
    return (spreadsheet_safe(mobile), status, spreadsheet_safe(msgid), spreadsheet_safe(error))


def write_outcome_rows(writer: Any, outcome: SendOutcome) -> None:
    """One CSV row per recipient: mobile, status, msgid, error."""
    receipts = outcome.receipts
    reason = _reason(outcome)
    for index, mobile in enumerate(outcome.mobiles):
        if not receipts:
            msgid = ""
        elif len(receipts) == 1:
            msgid = receipts[0].msgid
        else:
            msgid = receipts[index].msgid if index < len(receipts) else ""
        writer.writerow(outcome_row(mobile, outcome.status.value, msgid, reason))


def _owner_only(path: str, flags: int) -> int:
    # An opener for open(): a file it creates is its owner's alone (0600, not 0644).
    return os.open(path, flags, 0o600)


#: Seconds a pipe's reader may take nothing while outcome lines wait for it, before the
#: lines are given up on: the send stops (as for a full disk), and the command ends.
PIPE_STALL = 5.0


class PipedOutcomes(io.TextIOBase):
    """``--outcomes`` into a pipe or a FIFO, written by a thread of its own.

    A write to a pipe blocks once the pipe is full, until its reader reads. Made on the
    event loop's thread, a FIFO whose reader stopped reading froze the send, and Ctrl-C
    with it (only kill -9 ended it). Here the loop only queues each chunk's lines; a
    reader that takes nothing for :data:`PIPE_STALL` seconds while lines wait is a write
    that failed (OSError), which stops the send as a full disk does, and what it never
    took is counted (:attr:`lost`) rather than waited for.
    """

    def __init__(self, handle: TextIO) -> None:
        super().__init__()
        self._handle = handle
        self._writer = StdoutWriter(handle.fileno())
        #: Lines queued that the reader never took (known once closed).
        self.lost = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._writer.failed is not None:
            raise self._writer.failed
        if self._writer.behind and self._writer.stalled_for() > PIPE_STALL:
            raise OSError(errno.EPIPE, f"its reader took nothing for {PIPE_STALL:g} s")
        if not self._writer.put(Piece(text.encode("utf-8"))):
            raise OSError(errno.EPIPE, "it was closed")
        return len(text)

    def flush(self) -> None:
        # Lines are queued whole, a chunk's at a time; the thread writes them as the
        # reader takes them.
        if self._writer.failed is not None:
            raise self._writer.failed

    def close(self) -> None:
        if self.closed:
            return
        try:
            # The reader is given the lines left for as long as it keeps taking them.
            while self._writer.busy and self._writer.stalled_for() <= PIPE_STALL:
                self._writer.wait_idle(0.1)
            left = self._writer.take_back()
            self.lost = sum(piece.data.count(b"\n") for piece in left)
            failed = self._writer.failed
            with contextlib.suppress(OSError):
                self._handle.close()
        finally:
            super().close()
        if self.lost:
            raise OSError(
                errno.EPIPE,
                f"its reader did not take the last {self.lost:,} lines "
                f"({failed or f'nothing taken for {PIPE_STALL:g} s'})",
            )


def open_outcomes(path: str) -> TextIO:
    """The file for ``--outcomes``, its header written (appending: a resumed run adds its
    own lines; see :func:`outcome_rows_text`).

    A pipe, a FIFO or a terminal (``/dev/stdout`` into ``| gzip``, ``>(...)``) cannot be
    appended to, nor asked how much it holds: its reader gets a stream of its own, so
    it gets the header, then each chunk's lines as the chunk settles (written by a
    thread: see :class:`PipedOutcomes`).
    """
    try:
        # Phone numbers: a new file is readable by its owner only (as the unprinted
        # records are); one that exists, appended to by a resumed run, keeps its mode.
        handle = open(path, "a", encoding="utf-8", newline="", opener=_owner_only)  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"--outcomes {path}: cannot write it ({exc.strerror})") from None
    # tell() on a pipe raised "underlying stream is not seekable" before anything was
    # sent; only a file that already has lines (a resumed run's) goes without a header.
    target: TextIO = handle if handle.seekable() else PipedOutcomes(handle)  # type: ignore[assignment]
    if target is not handle or handle.tell() == 0:
        csv.writer(target).writerow(("mobile", "status", "msgid", "error"))
    return target
