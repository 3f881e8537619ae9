"""The CLI's memory of each account's limit: one small JSON file per account and gateway.

A run that met the gateway's limit leaves the :class:`~aisix_async.RateState` it learned
in the user's cache folder (``$XDG_CACHE_HOME/aisix/rate/``, else ``~/.cache/aisix/rate/``),
and the next run for the same account and base URL starts at that pace instead of
finding the limit again with -1 answers. The file holds the state only (pace,
concurrency, when it was learned): no key, and its name is a hash of the account and
URL, so a directory listing says nothing either. It is readable by its owner only. A file
that cannot be read or written is ignored with a note in the log: it is only a hint.
``--no-rate-cache`` skips it both ways.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from .. import RateState, ValidationError
from ..validation import check_base_url
from ._folders import user_folder

__all__ = ["cache_path", "load", "save"]

logger = logging.getLogger("aisix_async")


def _cache_root() -> Path:
    return user_folder("XDG_CACHE_HOME", ".cache") / "rate"


def _same_gateway(base_url: str) -> str:
    # One gateway however its URL is typed (a user's trial started cold with "/" added):
    # the spelling the client itself uses, which its shared schedule in Redis is keyed
    # on too. A URL the client refuses keys nothing the client will use: as typed.
    try:
        return check_base_url(base_url)
    except ValidationError:
        return base_url


def cache_path(account: str, base_url: str) -> Path:
    """Where the state for ``account`` at ``base_url`` is kept."""
    key = f"{account}\n{_same_gateway(base_url)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return _cache_root() / f"{digest}.json"


def load(account: str, base_url: str) -> RateState | None:
    """The state a previous run left for this account and gateway, or None."""
    path = cache_path(account, base_url)
    try:
        if path.exists() and not path.is_file():
            # A FIFO there would block the run for good; a device, worse.
            logger.info("rate cache %s is not a regular file; starting cold", path)
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.info("rate cache %s not read (%s); starting cold", path, exc.strerror)
        return None
    try:
        # Bytes, decoded here: a file that is not UTF-8 is malformed like any other
        # (read as text, it raised UnicodeDecodeError out of every command).
        return RateState.from_dict(json.loads(data))
    except (ValueError, ValidationError):
        logger.info("rate cache %s is malformed; starting cold", path)
        return None


def save(account: str, base_url: str, state: RateState) -> None:
    """Keep ``state`` for the next run: written whole or not at all, owner-only."""
    path = cache_path(account, base_url)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600; the rename makes it appear complete.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".rate-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(state.as_dict(), out)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        logger.info("rate cache %s not written (%s)", path, exc.strerror)
