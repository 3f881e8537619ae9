"""aisix_async: an async SDK for the Aisix HTTP SMS gateway.

Everything public is importable from here; every other module is private.
"""

from __future__ import annotations

from ._bulk import BulkStats, OutcomeStatus, SendOutcome, SendStream, SendSummary
from ._campaign import Campaign, CampaignStream
from ._campaign_ledger import CampaignSummary
from ._client import GATEWAY_TZ, AisixClient
from ._errors import (
    AccountFormatError,
    AisixError,
    AuthenticationError,
    BalanceTooLowError,
    CampaignError,
    ChannelGroupNotAllowedError,
    ChargeFailedError,
    EnterpriseUnavailableError,
    GatewayError,
    GatewayInternalError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    InvalidParameterError,
    KeyLockedError,
    NotSentError,
    ProtocolError,
    RateLimitedError,
    StaffUnavailableError,
    TransportError,
    UnknownResultError,
    ValidationError,
)
from ._models import (
    FINAL_OPERATOR_CODES,
    Balance,
    ChannelGroup,
    KeyUpdate,
    MalformedRecord,
    Reply,
    ReportResult,
    SendReceipt,
    Signature,
    StateReport,
)
from ._pricing import Estimate, segments
from ._reports import RecordStream, StreamStats
from ._scheduler import RetryDetails, RetryPolicy, SchedulerStats
from ._shared_limit import SharedLimitError
from ._tracker import DeliveryTracker, TrackerResult
from ._version import __version__

__all__ = [
    "FINAL_OPERATOR_CODES",
    "GATEWAY_TZ",
    "AccountFormatError",
    "AisixClient",
    "AisixError",
    "AuthenticationError",
    "Balance",
    "BalanceTooLowError",
    "BulkStats",
    "Campaign",
    "CampaignError",
    "CampaignStream",
    "CampaignSummary",
    "ChannelGroup",
    "ChannelGroupNotAllowedError",
    "ChargeFailedError",
    "DeliveryTracker",
    "EnterpriseUnavailableError",
    "Estimate",
    "GatewayError",
    "GatewayInternalError",
    "InsufficientBalanceError",
    "InterfaceNotEnabledError",
    "InvalidParameterError",
    "KeyLockedError",
    "KeyUpdate",
    "MalformedRecord",
    "NotSentError",
    "OutcomeStatus",
    "ProtocolError",
    "RateLimitedError",
    "RecordStream",
    "Reply",
    "ReportResult",
    "RetryDetails",
    "RetryPolicy",
    "SchedulerStats",
    "SendOutcome",
    "SendReceipt",
    "SendStream",
    "SendSummary",
    "SharedLimitError",
    "Signature",
    "StaffUnavailableError",
    "StateReport",
    "StreamStats",
    "TrackerResult",
    "TransportError",
    "UnknownResultError",
    "ValidationError",
    "__version__",
    "segments",
]

# Tracebacks and reprs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "aisix_async"
del _name, _obj
