"""How several clients on one account share its limit, on the simulated gateway.

Not a test (nothing is asserted): a measurement to run by hand while working on the
rate controller, in a second or so per cell, deterministic (virtual time, seeded jitter):

    python tests/sim_fairness.py              # R in 2, 10, 40, 200
    python tests/sim_fairness.py 40 --breaker # one limit, with the client's breaker on

Per cell: R (requests/s, burst 5, 100 ms answers), the number of clients (each with 16
requests waiting at once), whether they start together or one after another over the
first quarter of the run, and over the second half of the run (the settling time is the
first half): Jain's fairness index of the clients' accepted rates (1: equal shares), the
total accepted against R, the share of requests answered -1, and the smallest client's
accepted rate against an equal share.

The breaker is off by default so that the controller alone is measured: a client kept
small by the others can see an unbroken run of -1 for a few seconds and trip it, which
ends the simulated client (``--breaker`` says whether and when that happens).
"""

from __future__ import annotations

import math
import sys

from sim_gateway import ClientRun, Gateway, SimResult, default_scheduler, simulate

from aisix_async import CircuitOpenError
from aisix_async._mechanics.breaker import Breaker
from aisix_async._mechanics.scheduler import Scheduler


def jain(shares: list[float]) -> float:
    """Jain's index: (sum x)^2 / (n * sum x^2), from 1/n (one takes all) to 1 (equal)."""
    squares = sum(x * x for x in shares)
    return sum(shares) ** 2 / (len(shares) * squares) if squares else 0.0


def _without_breaker() -> Scheduler:
    scheduler = default_scheduler()
    scheduler.breaker = Breaker(open_after=math.inf)
    return scheduler


def _has_circuit_open(error: BaseException) -> bool:
    if isinstance(error, CircuitOpenError):
        return True
    return any(_has_circuit_open(inner) for inner in getattr(error, "exceptions", ()))


def seconds_for(rate: float, clients: int) -> float:
    """At least 120 s, and about 150 requests per client in the measured second half."""
    return max(120.0, 2 * 150 * clients / rate)


def cell(rate: float, clients: int, staggered: bool, breaker: bool) -> str:
    seconds = seconds_for(rate, clients)
    gateway = Gateway(rate, burst=5, latency=0.1)
    runs = []
    for index in range(clients):
        start = index * seconds / (4 * clients) if staggered else 0.0
        runs.append(
            ClientRun(
                start=start,
                seconds=seconds - start,
                demand=16,
                make=None if breaker else _without_breaker,
            )
        )
    try:
        result: SimResult = simulate(gateway, runs)
    except Exception as exc:
        if not _has_circuit_open(exc):
            raise
        last = max(at for at, _, _ in gateway.decisions)
        return f"the breaker opened: the run ended at {last:.1f} s"
    settle = seconds / 2
    shares = [gateway.accepted(i, settle, seconds) / (seconds - settle) for i in range(clients)]
    total = sum(shares)
    return (
        f"window [{settle:.0f}, {seconds:.0f}] s  jain {jain(shares):.3f}  "
        f"total {total / rate:.3f} R  -1 {result.refused_share(start=settle, end=seconds):.3f}  "
        f"smallest {min(shares) * clients / total if total else 0.0:.2f} of equal"
    )


def main(argv: list[str]) -> None:
    breaker = "--breaker" in argv
    rates = [float(arg) for arg in argv if not arg.startswith("--")] or [2.0, 10.0, 40.0, 200.0]
    for rate in rates:
        for clients in (2, 4, 8):
            for staggered in (False, True):
                start = "staggered" if staggered else "together "
                line = cell(rate, clients, staggered, breaker)
                print(f"R={rate:<5g} clients={clients} {start}  {line}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
