"""The checks the client runs on every input before it sends, for your own use.

A web form, an import script or a command line that reads recipients one by one can say
"line 41: ..." before anything is sent, with the same rules and the same words the client
would use. Each check returns the value it accepted (a number under "e164" comes back
normalised) or raises :class:`~aisix_async.ValidationError`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ._core.errors import redact_keys
from ._core.spreadsheet import spreadsheet_safe
from ._core.validate import (
    NUMBERING,
    SEPARATOR,
    Numbering,
    check_account,
    check_authkey,
    check_base_url,
    check_content,
    check_mobile,
    check_numbering,
    check_param_row,
    check_template,
)
from ._core.validate import check_at as _check_at
from ._core.wire import GATEWAY_TZ

__all__ = [
    "NUMBERING",
    "SEPARATOR",
    "Numbering",
    "check_account",
    "check_at",
    "check_authkey",
    "check_base_url",
    "check_content",
    "check_mobile",
    "check_numbering",
    "check_param_row",
    "check_template",
    "redact_keys",
    "spreadsheet_safe",
]


def check_at(at: datetime | None, *, now: datetime | None = None) -> str | None:
    """A scheduled time as the gateway reads it (its own zone), or refused.

    ``at`` must be timezone-aware and at least a minute after ``now`` (the present by
    default); None means "send now" and is returned as None.
    """
    return _check_at(at, now=now or datetime.now(timezone.utc), gateway_tz=GATEWAY_TZ)
