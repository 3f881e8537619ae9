"""User code that must type-check under ``mypy --strict``: ``nox -s typecheck`` checks this
file with the package, and tests/test_typed_usage.py runs mypy on it where mypy is
installed. Nothing here is run.

Correct code must pass unchanged: each function is what a user writes, typed as a user
types it. A line ending in ``# type: ignore[...]`` is a mistake that mypy must catch:
under ``--strict`` an ignore that silences nothing is itself an error, so a wrong call the
annotations let through fails the check.
"""

from __future__ import annotations

from decimal import Decimal

from aisix_async import (
    BalanceTooLowError,
    GatewayError,
    InvalidParameterError,
    UnknownResultError,
)


def metric_label(error: GatewayError) -> int:
    # Every GatewayError has the code the gateway answered.
    return abs(error.code)


def raw_code(error: UnknownResultError) -> str:
    return f"result {error.code:+d}"


def documented_code() -> int:
    return InvalidParameterError.code


def shortfall(error: BalanceTooLowError) -> Decimal:
    # "Raised with both figures" (README): money, as Estimate gives it.
    return error.cost - error.balance
