"""What the SDK does when a caller's hook (``on_unknown``, ``on_retry``) raises."""

from __future__ import annotations

import logging

__all__ = ["log_hook_failure"]

logger = logging.getLogger("aisix_async")


def log_hook_failure(
    hook: str, action: str, exc: BaseException, then: str = "the call goes on as without it"
) -> None:
    """Log a caller's hook that raised, with its traceback from the hook down only.

    It raised while the SDK handled a send's error: the traceback chained to that error,
    whose frames hold the request's fields and numbers as locals, which an error tracker
    printing locals (Sentry's default) showed in full (an SRE's trial). The hook's own
    frames are the caller's to show. ``then`` says what the SDK does next.
    """
    exc.__suppress_context__ = True
    exc.__context__ = None
    tb = exc.__traceback__
    logger.error(
        "%s: the %s hook failed; %s",
        action,
        hook,
        then,
        exc_info=(type(exc), exc, tb.tb_next if tb is not None else None),
    )
