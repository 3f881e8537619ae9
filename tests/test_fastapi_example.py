"""examples/fastapi_app.py under uvicorn, against the emulator, driven over HTTP.

The app runs in its own process (as in production), pointed at the session's emulator.
Whatever the app told each caller is checked against the emulator's ledger: "sent" means
the message is there (once, with that msgid), "not_sent" means it is not, "unknown" may
go either way; no number is ever charged twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import eventually
from stack_support import hx as httpx  # the stack under test (httpx2 runs without httpx)

pytest.importorskip("fastapi")

from aisix_async.emulator._server import bind_socket

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def running_app(emulator: Any, **more_env: str) -> Iterator[str]:
    """The example under uvicorn in a process of its own, until SIGTERM (its shutdown)."""
    sock = bind_socket()
    port = sock.getsockname()[1]
    env = {
        **os.environ,
        "AISIX_ACCOUNT": emulator.account,
        "AISIX_AUTHKEY": emulator.authkey,
        "AISIX_BASE_URL": emulator.base_url,
        "AISIX_CGID": "1",
        "OTP_DEADLINE": "4",
        "OTP_TIMEOUT": "1",
        **more_env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "--fd",
         str(sock.fileno()), "--log-level", "warning", "fastapi_app:app"],
        env=env, pass_fds=[sock.fileno()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    sock.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        # The app's own log (WARNINGs included) must never show the key.
        assert emulator.authkey.encode() not in output


@pytest.fixture
def app_url(emulator: Any) -> Iterator[str]:
    with running_app(emulator) as url:
        yield url


def number(i: int) -> str:
    return f"181{i:08d}"


async def post_all(url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    answers: list[tuple[int, dict[str, Any]]] = [(0, {})] * len(bodies)
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def one(i: int) -> None:
            response = await http.post("/otp", json=bodies[i])
            answers[i] = (response.status_code, response.json())

        async with anyio.create_task_group() as tg:
            for i in range(len(bodies)):
                tg.start_soon(one, i)
    return answers


def check_against_ledger(
    emulator: Any, bodies: list[dict[str, Any]], answers: list[tuple[int, dict[str, Any]]]
) -> dict[str, int]:
    ledger = emulator.state.messages()
    mobiles = [record.mobile for record in ledger]
    assert len(mobiles) == len(set(mobiles)), "a number was charged twice"
    by_mobile = {record.mobile: record for record in ledger}
    tally = {"sent": 0, "not_sent": 0, "unknown": 0}
    for body, (status, answer) in zip(bodies, answers, strict=True):
        outcome = answer["status"]
        tally[outcome] += 1
        if outcome == "sent":
            assert status == 200
            assert by_mobile[body["mobile"]].msgid == answer["msgid"]
        elif outcome == "not_sent":
            assert status in (422, 502, 503), answer
            assert body["mobile"] not in by_mobile, answer
        else:
            assert status == 202
    # And the other way round: nothing in the ledger that the app called "not sent".
    said = {
        body["mobile"]: answer["status"] for body, (_, answer) in zip(bodies, answers, strict=True)
    }
    assert all(said[mobile] in ("sent", "unknown") for mobile in mobiles)
    return tally


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_recipe_under_load_impatience_and_an_ip_bound_account(
    emulator: Any, app_url: str
) -> None:
    # 1. A burst of 40 at a 10/s limit (burst 10), half of the callers impatient (1 s):
    #    the patient ones are sent, the impatient ones sent or certainly not sent.
    emulator.state.configure(rate=10, burst=10)
    emulator.state.set_faults(latency_ms=30, jitter_ms=30, fault_actions=["sendOnce"])
    bodies = [
        {"mobile": number(i), "code": "123456", **({"deadline": 1.0} if i % 2 else {})}
        for i in range(40)
    ]
    answers = await post_all(app_url, bodies)
    await anyio.sleep(0.3)  # shielded sends finish on their own
    tally = check_against_ledger(emulator, bodies, answers)
    assert tally["sent"] >= 20, tally
    assert tally["not_sent"] >= 1, tally  # some impatient callers gave up in the queue
    for body, (_, answer) in zip(bodies, answers, strict=True):
        if answer["status"] == "not_sent":
            assert answer["error"] == "DeadlineExceededError"
            assert "deadline" in body  # only the impatient ones

    # 2. A gateway slower than the client's timeout: the callers hear "unknown" (202, so
    #    nobody resends), and indeed the gateway did send them.
    emulator.state.set_faults(latency_ms=1500, fault_actions=["sendOnce"])
    slow = [{"mobile": number(50 + i), "code": "222222"} for i in range(3)]
    slow_answers = await post_all(app_url, slow)
    assert [a["status"] for _, a in slow_answers] == ["unknown"] * 3, slow_answers
    await eventually(
        lambda: emulator.state.message_count >= tally["sent"] + 3, timeout=5, interval=0.05
    )
    emulator.state.set_faults(latency_ms=0)
    ledger = {r.mobile for r in emulator.state.messages()}
    assert all(body["mobile"] in ledger for body in slow)
    bodies, answers = bodies + slow, answers + slow_answers

    # 3. A caller that hangs up: uvicorn does not cancel the handler, so the send goes on
    #    and completes (what the README says; here it is checked).
    emulator.state.set_faults(latency_ms=600, fault_actions=["sendOnce"])
    gone = number(70)
    async with httpx.AsyncClient(base_url=app_url, timeout=0.15) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/otp", json={"mobile": gone, "code": "333333"})
    await eventually(
        lambda: gone in {r.mobile for r in emulator.state.messages()}, timeout=5, interval=0.05
    )
    emulator.state.set_faults(latency_ms=0)
    async with httpx.AsyncClient(base_url=app_url) as http:
        metrics = (await http.get("/metrics")).json()
    calls = {(c["action"], c["outcome"]): c["count"] for c in metrics["calls"]}
    assert calls[("sendOnce", "accepted")] == tally["sent"] + 1
    tally["sent"] += 1
    # For the ledger check: accepted, though its caller heard nothing (not a "not sent").
    bodies, answers = [*bodies, {"mobile": gone}], [*answers, (202, {"status": "unknown"})]

    # 4. The account is bound to another IP, under steady traffic (a caller every 0.3 s):
    #    each gets a 503 "not sent" within its deadline, and within seconds the breaker
    #    opens; callers after that are failed at once. Callers keep coming until /health
    #    says it opened (how many seconds that takes depends on how busy the machine is),
    #    then three more arrive.
    emulator.state.configure(rate=None, ip_bound=True)
    bound: list[dict[str, Any]] = []
    answered: dict[int, tuple[int, dict[str, Any]]] = {}
    waited: dict[int, float] = {}
    bound_at = time.monotonic()
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:

        async def caller(i: int) -> None:
            began = time.monotonic()
            response = await http.post("/otp", json=bound[i])
            waited[i] = time.monotonic() - began
            answered[i] = (response.status_code, response.json())

        def newcomer() -> int:
            bound.append({"mobile": number(100 + len(bound)), "code": "654321"})
            return len(bound) - 1

        async with anyio.create_task_group() as tg:
            while not (await http.get("/health")).json()["circuit_open"]:
                # 7-9 s on a quiet machine; the bound is a guard for loaded CI hosts.
                assert time.monotonic() - bound_at < 40, "the breaker did not open"
                tg.start_soon(caller, newcomer())
                await anyio.sleep(0.3)
            opened_after = time.monotonic() - bound_at
        for _ in range(3):
            await caller(newcomer())
    bound_answers = [answered[i] for i in range(len(bound))]
    took = [waited[i] for i in range(len(bound))]
    assert all(status == 503 for status, _ in bound_answers), bound_answers
    assert max(took) < 4.5  # nobody waited past its deadline (4 s) by much
    # The callers after it opened are refused at once.
    errors = [answer["error"] for _, answer in bound_answers]
    assert errors[-3:] == ["CircuitOpenError"] * 3, (errors, took, opened_after)
    # At once: well under the 4 s deadline they would wait for otherwise (the bound is
    # loose for loaded CI hosts).
    assert max(took[-3:]) < 2.0, took
    check_against_ledger(emulator, bodies + bound, answers + bound_answers)
    async with httpx.AsyncClient(base_url=app_url) as http:
        health = (await http.get("/health")).json()
        assert health["circuit_open"] is True and health["status"] == "degraded"
        started = time.monotonic()
        late = await http.post("/otp", json={"mobile": number(200), "code": "111111"})
        assert late.status_code == 503
        assert late.json() == {"status": "not_sent", "error": "CircuitOpenError"}
        assert time.monotonic() - started < 2.0  # failed at once, no 10 attempts
        metrics = (await http.get("/metrics")).json()
    assert metrics["circuit_open"] is True
    assert metrics["outcome_unknown"] == 3
    calls = {(c["action"], c["outcome"]): c["count"] for c in metrics["calls"]}
    assert calls[("sendOnce", "accepted")] == tally["sent"]
    assert calls.get(("sendOnce", "circuit_open"), 0) >= 1
    assert metrics["latency_seconds"]["count"] >= tally["sent"]
    assert number(200) not in {r.mobile for r in emulator.state.messages()}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_recipe_refuses_a_number_a_digit_short(emulator: Any, app_url: str) -> None:
    # The library's default numbering ("lenient") would send it, charged, to nobody.
    answers = await post_all(app_url, [{"mobile": "1810000270", "code": "123456"}])
    assert answers == [(422, answers[0][1])]
    assert answers[0][1]["status"] == "not_sent"
    assert answers[0][1]["error"] == "ValidationError"
    assert emulator.state.message_count == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_recipe_keeps_its_pace_over_a_restart(emulator: Any, tmp_path: Path) -> None:
    # A user's trial: every restart of a service met the limit cold again (15-25% of its
    # first requests answered -1). With OTP_RATE_STATE the pace learned is kept at
    # shutdown (SIGTERM, as a deploy stops it) and started from at the next start-up.
    emulator.state.configure(rate=10, burst=5)
    kept = tmp_path / "rate.json"
    with running_app(emulator, OTP_RATE_STATE=str(kept)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json()["pace"] is None  # a cold start
        # Until the client has measured the limit (a -1 from one empty bucket to the
        # next): the first -1 only ends the cold start, and a loaded machine's timing
        # may need more than one round for the second.
        bodies: list[dict[str, Any]] = []
        answers: list[tuple[int, dict[str, Any]]] = []
        for turn in range(8):
            more = [{"mobile": number(40 * turn + i), "code": "123456"} for i in range(40)]
            bodies, answers = bodies + more, answers + await post_all(url, more)
            async with httpx.AsyncClient(base_url=url) as http:
                state = (await http.get("/metrics")).json()["rate_state"]
            if state["pace"] is not None:
                break
        check_against_ledger(emulator, bodies, answers)
    saved = json.loads(kept.read_text())
    assert set(saved) == {"pace", "concurrency", "learned_at"}
    assert saved["pace"] is not None and 7 < saved["pace"] < 13, saved  # measured near 10
    with running_app(emulator, OTP_RATE_STATE=str(kept)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            health = (await http.get("/health")).json()
    # Just under the pace kept (trusted a hair less for the seconds it aged).
    assert health["pace"] == pytest.approx(0.9 * saved["pace"], rel=1e-2), (health, saved)
    # A file that cannot be read is a cold start, not a service that will not start.
    kept.write_text("{not json")
    with running_app(emulator, OTP_RATE_STATE=str(kept)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json()["pace"] is None
