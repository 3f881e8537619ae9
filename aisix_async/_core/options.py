"""Options records: what a bulk send and a report poll can be told, in one place each.

Each record has a ``TypedDict`` twin of the same fields (``SendKeywords``,
``PollKeywords``). The public methods take ``**options: Unpack[SendKeywords]`` and build
the record with ``SendOptions(**options)``; everything below the facade passes the
record. Adding an option is therefore an edit here only: a field with its default on the
record, a line in its docstring, and the same name and type on its twin (a test checks
that the two agree). Defaults live on the record alone: the twin is ``total=False``, so a
keyword left out takes the record's default.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import attrs

from .errors import ValidationError
from .validate import check_number

__all__ = ["PollKeywords", "PollOptions", "SendKeywords", "SendOptions"]


@attrs.frozen(kw_only=True)
class SendOptions:
    """How a bulk send goes out; every field is also a keyword of the bulk calls.

    - ``cgid``, ``csid``: the channel group and the signature (None: the client's
      defaults).
    - ``at``: send later, at this time (timezone-aware, or naive in the gateway's zone).
    - ``chunk_size``: recipients per request (None: 1000 for sendOnce, 100 for
      sendBatch and sendParam; lower values only).
    - ``check_balance``: estimate the cost first and raise ``BalanceTooLowError``, before
      anything is sent, when the balance is short (an input without a length is not
      estimated: a -9 stops the send instead).
    - ``deadline``: seconds from entering the send (``async with``, or the call of
      ``send_all``) after which dispatch stops, as ``stop()`` stops it: no request leaves
      after it, the requests already written finish (each within the client's
      ``timeout``), and every recipient not sent is reported failed with ``NotSentError``
      (its ``cause`` a ``SendStoppedError`` naming the deadline). The send then ends as
      usual: ``send_all`` returns its summary. None: no limit.

    The defaults are the signature's, and are written nowhere else.
    """

    cgid: int | None = None
    csid: int | None = None
    at: datetime | None = None
    chunk_size: int | None = None
    check_balance: bool = attrs.field(default=True)

    @check_balance.validator
    def _a_bool(self, _: object, value: object) -> None:
        # check_balance="no" is truthy: it checked the balance when asked not to.
        if not isinstance(value, bool):
            raise ValidationError(f"check_balance must be True or False, got {value!r}")

    deadline: float | None = attrs.field(default=None)

    @deadline.validator
    def _seconds(self, _: object, value: object) -> None:
        # Checked here, before anything is sent: refused inside the stream, it would stop
        # a send already under way.
        if value is not None:
            check_number(value, "deadline (seconds before a bulk send stops dispatch)")

    def chunk_size_for(self, action: str) -> int:
        """The chunk size to plan with for ``action``."""
        if self.chunk_size is not None:
            return self.chunk_size
        return 1000 if action == "sendOnce" else 100


class SendKeywords(TypedDict, total=False):
    """The fields of :class:`SendOptions` as keywords (``**options`` of the bulk calls)."""

    cgid: int | None
    csid: int | None
    at: datetime | None
    chunk_size: int | None
    check_balance: bool
    deadline: float | None


@attrs.frozen(kw_only=True)
class PollOptions:
    """How a report or reply stream polls; every field is also a keyword of the watch calls.

    - ``interval``: seconds between polls while the queue is empty.
    - ``max_backoff``: the longest wait, in seconds, after errors and -1 answers (a
      failure while the queue may hold records is retried within 0.1 s at first, after
      an empty answer or a -1 within ``interval``; each failure in a row doubles it).
    - ``stop_when_idle``: end the stream once it has been idle this many seconds: the
      gateway answered and had nothing, time spent failing not counted (None: never).
      Failures alone for as long end it with the error, unless ``stop_when_failing``
      says otherwise.
    - ``stop_when_failing``: end the stream with the error once polls have failed, none
      answered, for this many seconds (a -1 aside: it backs off as ever). None: as
      long as ``stop_when_idle`` (never, without it). ``stop_when_idle=0`` reads the
      queue once; with ``stop_when_failing=5`` that pass rides out a -10 or a lost
      answer instead of ending at the first.
    - ``close_grace``: seconds a poll on the wire gets to finish when the stream closes;
      its records go to ``unread()``.
    - ``max_buffered``: the poller pauses while this many records wait to be read.

    The defaults are the signature's, and are written nowhere else.
    """

    interval: float = 5.0
    max_backoff: float = 60.0
    stop_when_idle: float | None = None
    stop_when_failing: float | None = None
    close_grace: float = 30.0
    max_buffered: int = 10_000


class PollKeywords(TypedDict, total=False):
    """The fields of :class:`PollOptions` as keywords (``**options`` of the watch calls)."""

    interval: float
    max_backoff: float
    stop_when_idle: float | None
    stop_when_failing: float | None
    close_grace: float
    max_buffered: int
