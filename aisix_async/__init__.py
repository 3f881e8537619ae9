"""aisix_async: an async SDK for the Aisix HTTP SMS gateway.

Everything public is importable from here; every other module is private.
"""

from __future__ import annotations

from contextlib import suppress as _suppress
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._campaign.campaign import Campaign, CampaignStream
from ._campaign.journal import CampaignRun
from ._campaign.ledger import CampaignSummary, FoundHook, FoundOnResume
from ._campaign.reader import CampaignJournal, open_campaign_journal
from ._client import GATEWAY_TZ, AisixClient
from ._core.billing import Estimate, count_units
from ._core.errors import (
    ACCOUNT_REFUSALS,
    BALANCE_REFUSALS,
    BUSY_REFUSALS,
    INPUT_REFUSALS,
    AccountFormatError,
    AisixError,
    AuthenticationError,
    BalanceTooLowError,
    CampaignError,
    ChannelGroupNotAllowedError,
    ChargeFailedError,
    CircuitOpenError,
    ClientAlreadyEnteredError,
    ClientClosedError,
    DeadlineExceededError,
    EndpointError,
    EnterpriseUnavailableError,
    ExtraNotInstalledError,
    GatewayError,
    GatewayInternalError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    InvalidParameterError,
    KeyLockedError,
    KeyRotationHookError,
    NotSentError,
    ProtocolError,
    RateLimitedError,
    SendStoppedError,
    SharedLimitError,
    StaffUnavailableError,
    TransportError,
    UnknownResultError,
    UnusableKeyError,
    ValidationError,
)
from ._core.models import (
    FINAL_OPERATOR_CODES,
    Balance,
    ChannelGroup,
    DeliveryReport,
    KeyRotation,
    MalformedRecord,
    Reply,
    ReportResult,
    SendReceipt,
    Signature,
)
from ._core.options import PollKeywords, PollOptions, SendKeywords, SendOptions
from ._core.validate import Numbering
from ._core.wire import Endpoints
from ._features.bulk import (
    BulkStats,
    OutcomeHook,
    OutcomeStatus,
    SendOutcome,
    SendStream,
    SendSummary,
)
from ._features.reports import BatchHook, RecordStream, StreamStats
from ._features.tracker import DeliveryTracker, ReportSource, TrackerResult
from ._gateway import KeyRotationHook
from ._mechanics.observe import ClientStats, Histogram, UnknownHook, UnknownOutcome, mobiles_hash
from ._mechanics.scheduler import RateState, RetryDetails, RetryPolicy, SchedulerStats
from ._version import __version__

__all__ = [
    "ACCOUNT_REFUSALS",
    "BALANCE_REFUSALS",
    "BUSY_REFUSALS",
    "FINAL_OPERATOR_CODES",
    "GATEWAY_TZ",
    "INPUT_REFUSALS",
    "AccountFormatError",
    "AisixClient",
    "AisixError",
    "AuthenticationError",
    "Balance",
    "BalanceTooLowError",
    "BatchHook",
    "BulkStats",
    "Campaign",
    "CampaignError",
    "CampaignJournal",
    "CampaignRun",
    "CampaignStream",
    "CampaignSummary",
    "ChannelGroup",
    "ChannelGroupNotAllowedError",
    "ChargeFailedError",
    "CircuitOpenError",
    "ClientAlreadyEnteredError",
    "ClientClosedError",
    "ClientStats",
    "DeadlineExceededError",
    "DeliveryReport",
    "DeliveryTracker",
    "EndpointError",
    "Endpoints",
    "EnterpriseUnavailableError",
    "Estimate",
    "ExtraNotInstalledError",
    "FoundHook",
    "FoundOnResume",
    "GatewayError",
    "GatewayInternalError",
    "Histogram",
    "InsufficientBalanceError",
    "InterfaceNotEnabledError",
    "InvalidParameterError",
    "KeyLockedError",
    "KeyRotation",
    "KeyRotationHook",
    "KeyRotationHookError",
    "MalformedRecord",
    "NotSentError",
    "Numbering",
    "OutcomeHook",
    "OutcomeStatus",
    "PollKeywords",
    "PollOptions",
    "ProtocolError",
    "RateLimitedError",
    "RateState",
    "RecordStream",
    "Reply",
    "ReportResult",
    "ReportSource",
    "RetryDetails",
    "RetryPolicy",
    "SchedulerStats",
    "SendKeywords",
    "SendOptions",
    "SendOutcome",
    "SendReceipt",
    "SendStoppedError",
    "SendStream",
    "SendSummary",
    "SharedLimitError",
    "Signature",
    "StaffUnavailableError",
    "StreamStats",
    "TrackerResult",
    "TransportError",
    "UnknownHook",
    "UnknownOutcome",
    "UnknownResultError",
    "UnusableKeyError",
    "ValidationError",
    "__version__",
    "count_units",
    "mobiles_hash",
    "open_campaign_journal",
]

# Tracebacks and reprs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    # Classes only: on Python 3.10 a Callable[...] alias (the hook types) passes for a
    # type too, and its __module__ cannot be set (the import failed there).
    if isinstance(_obj, type):
        with _suppress(AttributeError):
            _obj.__module__ = "aisix_async"
del _name, _obj

# Names renamed before 1.0 (CHANGELOG, "one vocabulary"): say what they are called now.
_RENAMED = {
    "StateReport": "DeliveryReport",
    "KeyUpdate": "KeyRotation",
    "KeyUpdateHook": "KeyRotationHook",
    "segments": "count_units",
}

if not _TYPE_CHECKING:  # a module __getattr__ would hide every misspelt import from mypy

    def __getattr__(name: str) -> object:
        if name in _RENAMED:
            raise AttributeError(
                f"aisix_async.{name} was renamed {_RENAMED[name]} (see the CHANGELOG)",
                name=name,
            )
        raise AttributeError(f"module 'aisix_async' has no attribute {name!r}", name=name)
