"""The client-wide scheduler: every request of a client takes its turn here.

The gateway limits an *account*, not a call, so one scheduler per client sees every
request (a single send from a web handler as much as a bulk chunk), and a -1 seen by one
caller slows all of them.

What is retried, and why:

* ``-1`` (too fast): the gateway refused before acting, so a resend is always safe.
* A connection that failed before the request was written: the gateway never saw it.
* For actions that change nothing (balance, lists, report polls): any transient failure.

A send whose answer was lost (read timeout, dropped connection, -10, -11) is never
retried here: it is raised with ``outcome_unknown`` for the caller to report.
Retries are visible: each one is logged and handed to ``on_retry``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from ._errors import (
    AisixError,
    GatewayInternalError,
    ProtocolError,
    RateLimitedError,
    TransportError,
)

__all__ = ["RetryDetails", "RetryPolicy", "Scheduler", "SchedulerStats"]

_T = TypeVar("_T")
logger = logging.getLogger("aisix_async")


@attrs.frozen
class RetryPolicy:
    """How hard one request is retried: bounded by attempts and by time."""

    attempts: int = 10
    #: Seconds over all attempts of one request, waits included.
    timeout: float = 120.0
    initial_backoff: float = 0.1
    max_backoff: float = 10.0


@attrs.frozen
class RetryDetails:
    """What a retry hook is told: which action, which attempt failed, how long we wait."""

    action: str
    attempt: int
    wait: float
    cause: AisixError


@attrs.frozen
class SchedulerStats:
    """A snapshot for progress displays."""

    limit: int
    in_flight: int
    rate_limited: int
    retries: int


def is_retryable(error: BaseException, *, unsafe: bool) -> bool:
    """True when ``error`` may be retried for an action (``unsafe``: a send or updateKey)."""
    if isinstance(error, RateLimitedError):
        return True
    if isinstance(error, TransportError):
        return not error.request_sent or not unsafe
    if isinstance(error, (ProtocolError, GatewayInternalError)):
        return not unsafe
    return False


class Scheduler:
    """Runs each request attempt when its turn comes, retrying what is safe to retry."""

    def __init__(
        self,
        *,
        max_concurrency: int = 16,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryDetails], None] | None = None,
    ) -> None:
        self._limit = max_concurrency
        self._slots = anyio.CapacityLimiter(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._rate_limited = 0
        self._retries = 0

    @property
    def max_concurrency(self) -> int:
        return self._limit

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            limit=self._limit,
            in_flight=int(self._slots.borrowed_tokens),
            rate_limited=self._rate_limited,
            retries=self._retries,
        )

    def _wait(self, state: RetryCallState) -> float:
        policy = self._retry
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        # Full jitter: clients that were refused together must not come back together.
        return random.uniform(0, ceiling) if ceiling > 0 else 0.0

    def _before_sleep(self, action: str) -> Callable[[RetryCallState], None]:
        def hook(state: RetryCallState) -> None:
            outcome = state.outcome
            cause = outcome.exception() if outcome is not None else None
            assert isinstance(cause, AisixError)
            wait = state.upcoming_sleep
            self._retries += 1
            logger.info(
                "%s: attempt %d failed (%s); retrying in %.3f s",
                action,
                state.attempt_number,
                type(cause).__name__,
                wait,
            )
            if self._on_retry is not None:
                self._on_retry(RetryDetails(action, state.attempt_number, wait, cause))

        return hook

    async def run(self, attempt: Callable[[], Awaitable[_T]], *, action: str, unsafe: bool) -> _T:
        """Run ``attempt`` in a slot; retry it per the policy; raise its last error."""
        policy = self._retry
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: is_retryable(exc, unsafe=unsafe)),
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.timeout),
            wait=self._wait,
            sleep=anyio.sleep,
            before_sleep=self._before_sleep(action),
            reraise=True,
        )
        try:
            async for try_state in retrying:
                with try_state:
                    async with self._slots:
                        try:
                            return await attempt()
                        except RateLimitedError:
                            self._rate_limited += 1
                            raise
        except RateLimitedError as exc:
            raise RateLimitedError(
                action,
                exc.code,
                detail=(
                    f"still refused after {retrying.statistics.get('attempt_number', 1)} "
                    "attempts; if it never clears, the account may be bound to another IP "
                    "address or limited to a time window"
                ),
            ) from None
        except RetryError:  # pragma: no cover - reraise=True hands back the real error
            raise
        raise AssertionError("unreachable")  # pragma: no cover
