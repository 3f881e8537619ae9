"""Options records: what a bulk send and a report poll can be told, in one place each.

The facade's methods take the same names as keywords and build these; everything below
the facade passes the record, so adding an option is an edit here and in the facade.
"""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["PollOptions", "SendOptions"]


@attrs.frozen(kw_only=True)
class SendOptions:
    """How a bulk send goes out (the defaults are the client's and the action's)."""

    #: Channel group and signature; None: the client's default.
    cgid: int | None = None
    csid: int | None = None
    #: Send later (a timezone-aware time, or naive in the gateway's time zone).
    at: datetime | None = None
    #: Recipients per request; None: 1000 for sendOnce, 100 for sendBatch/sendParam.
    chunk_size: int | None = None
    #: Estimate the cost first and refuse (BalanceTooLowError) when the balance is short.
    check_balance: bool = True

    def chunk_size_for(self, action: str) -> int:
        """The chunk size to plan with for ``action``."""
        if self.chunk_size is not None:
            return self.chunk_size
        return 1000 if action == "sendOnce" else 100


@attrs.frozen(kw_only=True)
class PollOptions:
    """How a report or reply stream polls (see ``RecordStream``)."""

    #: Seconds between polls while the queue is empty.
    interval: float = 5.0
    #: Longest wait after errors and -1 answers.
    max_backoff: float = 60.0
    #: End the stream once nothing has arrived for this many seconds (None: never).
    stop_when_idle: float | None = None
    #: Seconds a poll on the wire gets to finish when the stream closes.
    close_grace: float = 30.0
    #: The poller pauses while this many records wait to be read.
    max_buffered: int = 10_000
