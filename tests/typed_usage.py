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
    AisixClient,
    BalanceTooLowError,
    Campaign,
    FoundOnResume,
    GatewayError,
    InvalidParameterError,
    Numbering,
    OutcomeStatus,
    UnknownResultError,
)
from aisix_async.emulator import serve_emulator
from aisix_async.validation import check_numbering


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


def client_for(policy: Numbering) -> AisixClient:
    return AisixClient(numbers=policy)


def client_from_a_setting(setting: str) -> AisixClient:
    # A str read from a file or the environment: checked first, then typed.
    return AisixClient(numbers=check_numbering(setting))


def cn_client() -> AisixClient:
    return AisixClient(numbers="cn-mobile")


def mistyped_policy() -> AisixClient:
    # The set is closed: a misspelt policy is caught here, not at run time.
    return AisixClient(numbers="cn_mobile")  # type: ignore[arg-type]


async def emulator_with_latency() -> int:
    async with serve_emulator(rate=20, report_delay=0) as emulator:
        emulator.state.set_faults(latency_ms=150)
        return emulator.port


async def emulator_with_a_fault_as_a_setting() -> None:
    # latency_ms is a fault setting (FaultConfig), no setting of the emulator's own.
    async with serve_emulator(latency_ms=150):  # type: ignore[call-arg]
        pass


def campaign_writing_what_it_finds(client: AisixClient, lines: list[str]) -> Campaign:
    # The recipients a killed run left on the wire, as a resumed run finds them.
    def found(chunk: FoundOnResume) -> None:
        unknown = chunk.status is OutcomeStatus.UNKNOWN
        lines.extend(
            f"{mobile},{'unknown' if unknown else 'accepted'}" for _, mobile in chunk.recipients
        )

    return client.campaign("sale.db", on_found=found)


def campaign_with_an_async_hook(client: AisixClient) -> Campaign:
    async def found(chunk: FoundOnResume) -> None: ...

    # Called synchronously: a coroutine function is no FoundHook.
    return client.campaign("sale.db", on_found=found)  # type: ignore[arg-type]
