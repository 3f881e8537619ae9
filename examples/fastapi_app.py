"""A FastAPI service that sends one-time codes through one shared AisixClient.

Run it against the emulator (``aisix emulator`` in another terminal)::

    pip install '.[cli]' fastapi
    export AISIX_ACCOUNT=1001@100001 AISIX_AUTHKEY=87B01469201D6557C2685137EB3B5DEC
    export AISIX_BASE_URL=http://127.0.0.1:8765/OpenPlatform AISIX_CGID=1
    # numbers are checked as mainland China mobiles: OTP_NUMBERS=e164 for any country's
    uvicorn --app-dir examples fastapi_app:app --port 8000
    curl -X POST localhost:8000/otp -H 'content-type: application/json' \\
         -d '{"mobile": "18100002707", "code": "123456"}'

What it shows: the client is made once, in the lifespan, and shared by every request
(one scheduler keeps the whole process within the account's limits); each send has a
deadline; every SDK error maps to an HTTP status that tells the caller whether to try
again, and a send whose outcome is unknown is never reported as "failed, retry".
With ``OTP_RATE_STATE=/path/file.json`` the pace it learned is kept there at shutdown
and started from at the next start-up: a restart or a deploy does not meet the limit
cold again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aisix_async import (
    ACCOUNT_REFUSALS,
    BALANCE_REFUSALS,
    BUSY_REFUSALS,
    INPUT_REFUSALS,
    AisixClient,
    AisixError,
    RateState,
)
from aisix_async.validation import check_numbering

#: The longest a caller waits for its turn (seconds). A request already written when it
#: passes still runs to its answer (at most the client's TIMEOUT), so the caller hears
#: "sent" or "unknown" rather than a timeout for a message that went out.
DEADLINE = float(os.environ.get("OTP_DEADLINE", "5"))
#: The most one exchange with the gateway may take once written (seconds).
TIMEOUT = float(os.environ.get("OTP_TIMEOUT", "10"))
#: Where the learned pace is kept between runs (unset: every start is a cold one).
RATE_STATE = os.environ.get("OTP_RATE_STATE")

logger = logging.getLogger("fastapi_app")


def load_rate_state(path: str | None) -> RateState | None:
    """The state the last run kept; None (a cold start) when there is none to trust."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return RateState.from_dict(json.load(file))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AisixError) as error:
        # A file cut short or edited by hand must not stop the service: a cold start.
        logger.warning("rate state in %s not used: %s", path, error)
        return None


def save_rate_state(path: str | None, client: AisixClient) -> None:
    if not path:
        return
    # Written whole, then moved into place: a crash mid-write leaves the old one.
    scratch = f"{path}.tmp"
    with open(scratch, "w", encoding="utf-8") as file:
        json.dump(client.rate_state().as_dict(), file)
    os.replace(scratch, path)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Account, key and URL come from AISIX_ACCOUNT, AISIX_AUTHKEY, AISIX_BASE_URL.
    cgid = os.environ.get("AISIX_CGID")
    # cn-mobile: a code typed to a number a digit short is refused (422), not charged and
    # "sent" to nobody; the library's default ("lenient") takes any 3 to 20 digits.
    # check_numbering: a typo in the variable is refused at start-up, and the policy typed.
    numbers = check_numbering(os.environ.get("OTP_NUMBERS", "cn-mobile"))
    async with AisixClient(
        cgid=int(cgid) if cgid else None,
        timeout=TIMEOUT,
        numbers=numbers,
        rate_state=load_rate_state(RATE_STATE),  # where the last run left off
    ) as client:
        # Replicas sharing the pace (AISIX_SHARED_LIMIT): a Redis that refuses the URL's
        # password stops the start-up here; one merely down does not (each paces itself).
        await client.check_shared_limit()
        app.state.aisix = client
        try:
            yield
        finally:
            save_rate_state(RATE_STATE, client)


app = FastAPI(lifespan=lifespan)


class Otp(BaseModel):
    mobile: str
    code: str = Field(pattern=r"^[0-9]{4,8}$")
    #: A caller may be more impatient than the service's default, never less.
    deadline: float | None = Field(default=None, gt=0)


def _client(request: Request) -> AisixClient:
    client: AisixClient = request.app.state.aisix
    return client


def error_response(error: AisixError) -> JSONResponse:
    """The HTTP answer for an SDK error: whether it went out decides the status."""
    if error.outcome_unknown:
        # It may have been delivered and charged: 202, so that neither the caller nor a
        # retrying proxy sends a second code. Log it and reconcile with delivery reports.
        return JSONResponse({"status": "unknown", "error": type(error).__name__}, status_code=202)
    body: dict[str, Any] = {"status": "not_sent", "error": type(error).__name__}
    if isinstance(error, INPUT_REFUSALS):
        return JSONResponse({**body, "detail": error.message}, status_code=422)
    if isinstance(error, BUSY_REFUSALS):
        # -1 after retries, the circuit breaker, or the deadline: nothing went out, so
        # trying again later is safe.
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    if isinstance(error, (*BALANCE_REFUSALS, *ACCOUNT_REFUSALS)):
        # Our account, not the caller's request: page someone.
        return JSONResponse(body, status_code=503)
    return JSONResponse(body, status_code=502)


@app.post("/otp")
async def send_otp(otp: Otp, request: Request) -> JSONResponse:
    # uvicorn does not cancel this handler when the caller hangs up: the send goes on
    # and its outcome is still counted, logged and reported here.
    deadline = DEADLINE if otp.deadline is None else min(otp.deadline, DEADLINE)
    try:
        receipt = await _client(request).send_once(
            [otp.mobile], f"Your code is {otp.code}", deadline=deadline
        )
    except AisixError as error:
        return error_response(error)
    return JSONResponse({"status": "sent", "msgid": receipt.msgid})


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    # No gateway call: a health check must stay fast when the gateway is slow.
    stats = _client(request).stats()
    return {
        "status": "degraded" if stats.circuit_open else "ok",
        "circuit_open": stats.circuit_open,
        "in_flight": stats.in_flight,
        "waiting": stats.waiting,
        "pace": stats.pace,
    }


@app.get("/metrics")
async def metrics(request: Request) -> dict[str, Any]:
    stats = _client(request).stats()
    return {
        "attempts": [
            {"action": action, "result": result, "count": count}
            for (action, result), count in sorted(stats.results.items())
        ],
        "calls": [
            {"action": action, "outcome": outcome, "count": count}
            for (action, outcome), count in sorted(stats.calls.items())
        ],
        "outcome_unknown": stats.outcome_unknown,
        "queue_wait_seconds": _histogram(stats.queue_wait),
        "latency_seconds": _histogram(stats.latency),
        "pace": stats.pace,
        "limit": stats.limit,
        "circuit_open": stats.circuit_open,
        # What a restart would start from (see OTP_RATE_STATE): pace None until measured.
        "rate_state": _client(request).rate_state().as_dict(),
    }


def _histogram(histogram: Any) -> dict[str, Any]:
    return {
        "buckets": dict(zip([*map(str, histogram.bounds), "+Inf"], histogram.counts, strict=True)),
        "count": histogram.count,
        "sum": histogram.total,
        "p50": _finite(histogram.quantile(0.5)),
        "p99": _finite(histogram.quantile(0.99)),
    }


def _finite(value: float | None) -> float | None:
    # JSON has no infinity: past the last bucket reads as "unknown" (None).
    return value if value is not None and value != float("inf") else None
