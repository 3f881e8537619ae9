"""What observability costs the client (issue 16): counters, histograms, OpenTelemetry.

Single ``send_once`` calls (one number each, 16 at a time, no rate limit): the shape of a
web service, and the worst case for per-call costs, which a bulk chunk of 1000 numbers
pays once per 1000 recipients. Three variants, each in a fresh process whose own CPU time
(user + system, getrusage around the loop) is measured, interleaved and repeated:

* ``stubbed``: the per-call observation replaced by no-ops (no counters, histograms,
  logs or spans): the baseline;
* ``counters``: what every client does without the ``otel`` extra (``otel=False`` takes
  exactly the path of a process where opentelemetry cannot be imported);
* ``otel api``: with opentelemetry-api installed and no SDK or exporter configured, so
  spans and metrics go to the API's no-op objects.

The emulator runs in its own process, so its CPU is not counted. On a small shared
machine those end-to-end figures move by more than the cost being measured, so the
per-call cost of the observation itself is also timed directly (a call's whole life as
``_run`` drives it: start, dispatch, answer, end; ``time.process_time`` over 50,000
calls, best of five) and set against the client CPU per call of the end-to-end run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import anyio
from _common import Emulator, cpu_seconds, emulator, numbers, run_worker, table

from aisix_async import AisixClient, RetryPolicy

CONCURRENCY = 16
VARIANTS = ("stubbed", "counters", "otel api")


def _stub_observation() -> None:
    from aisix_async._mechanics import observe as _observe

    def init(self: _observe.CallObservation, *args: object, **kwargs: object) -> None:
        # Only the attributes the client itself reads.
        self.id = 0
        self.level = logging.WARNING
        self.mobiles = ""
        self.attempts = 0
        self.last_error = None

    cls = _observe.CallObservation
    cls.__init__ = init  # type: ignore[method-assign,assignment]
    cls.log_extra = lambda self: {}  # type: ignore[method-assign]
    cls.dispatched = lambda self: 0.0  # type: ignore[method-assign]
    cls.answered = lambda self, since, error: None  # type: ignore[method-assign]
    cls.finished = lambda self, outcome, error=None: None  # type: ignore[method-assign]


async def send(emu: Emulator, calls: int, otel: bool) -> int:
    accepted = 0
    source = numbers(calls)
    client = AisixClient(
        emu.account, emu.authkey, base_url=emu.base_url, max_concurrency=CONCURRENCY,
        initial_concurrency=CONCURRENCY, retry=RetryPolicy(), otel=otel,
    )  # fmt: skip

    async def loop() -> None:
        nonlocal accepted
        for mobile in source:
            await client.send_once([mobile], "Your code is 1234")
            accepted += 1

    async with client, anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(loop)
    return accepted


def worker(kind: str, info: str, calls: int) -> None:
    emu = Emulator.__new__(Emulator)
    emu.__dict__.update(json.loads(info))
    if kind == "stubbed":
        _stub_observation()
    if kind == "otel api":
        import opentelemetry.trace  # noqa: F401  (fails loudly if the extra is missing)
    before, started = cpu_seconds(), time.monotonic()
    accepted = anyio.run(send, emu, calls, kind == "otel api")
    print(json.dumps({
        "cpu": cpu_seconds() - before, "wall": time.monotonic() - started, "accepted": accepted,
    }))  # fmt: skip


def micro(otel: bool, calls: int = 50_000, repeats: int = 5) -> float:
    """CPU seconds per call of one call's observation, without (False) or with the API."""
    from aisix_async._mechanics.observe import CallObservation, Observer

    observer = Observer(otel=otel)
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        for _ in range(calls):
            call = CallObservation(observer, "sendOnce", "18100002707")
            call.log_extra()
            since = call.dispatched()
            call.answered(since, None)
            call.finished("accepted")
        best = min(best, time.process_time() - began)
    return best / calls


def run(calls: int, rounds: int) -> str:
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in VARIANTS}
    with emulator() as emu:
        info = json.dumps(
            {k: getattr(emu, k) for k in ("base_url", "open_url", "account", "authkey")}
        )
        for _ in range(rounds):
            for kind in VARIANTS:
                emu.reset()
                results[kind].append(
                    run_worker(Path(__file__), kind, info, str(calls), timeout=300)
                )
    cpu = {kind: min(r["cpu"] for r in runs) for kind, runs in results.items()}
    base = cpu["stubbed"]
    rows = [
        [
            kind,
            f"{sum(r['accepted'] for r in results[kind]) // rounds:,}",
            " / ".join(f"{r['cpu']:.2f}" for r in results[kind]),
            f"{cpu[kind]:.2f}",
            f"{(cpu[kind] / base - 1) * 100:+.1f}%",
        ]
        for kind in VARIANTS
    ]
    per_call = cpu["counters"] / calls
    plain, with_api = micro(False), micro(True)
    plain_pct, api_pct = plain / per_call * 100, (with_api - plain) / per_call * 100
    return "\n".join(
        [
            "## Observability overhead",
            "",
            f"{calls:,} single `send_once` calls (1 number each), concurrency {CONCURRENCY}, "
            f"no limit; each variant in a fresh process, {rounds} interleaved rounds, least "
            "client CPU of the rounds; emulator in another process.",
            "",
            table(
                ["variant", "calls accepted", "client CPU s per round", "least", "vs stubbed"],
                rows,
            ),
            "",
            f"Timed directly: one call's observation costs {plain * 1e6:.1f} µs of CPU "
            f"without OpenTelemetry and {with_api * 1e6:.1f} µs with the API and no exporter, "
            f"against {per_call * 1e6:.0f} µs of client CPU per call end to end: the "
            f"counters and histograms cost **{plain_pct:.2f}%**, the OpenTelemetry API "
            f"**{api_pct:+.2f}%** more (target <= 3%: "
            f"**{'met' if api_pct <= 3 else 'MISSED'}**). Without the extra nothing of "
            "OpenTelemetry is imported or called (the `counters` path: 0% by construction). "
            "The end-to-end rows differ by more than that from run to run on 2 shared "
            'cores: read them as "no visible difference", not as measurements of it.',
            "",
        ]
    )


def main() -> None:
    if "--worker" in sys.argv:
        kind, info, calls = sys.argv[2:5]
        worker(kind, info, int(calls))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(run(args.calls, args.rounds))


if __name__ == "__main__":
    main()
