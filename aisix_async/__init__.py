"""aisix_async: an async SDK for the Aisix HTTP SMS gateway.

Everything public is importable from here; every other module is private.
"""

from __future__ import annotations

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
from ._scheduler import RetryDetails, RetryPolicy, SchedulerStats
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
    "CampaignError",
    "ChannelGroup",
    "ChannelGroupNotAllowedError",
    "ChargeFailedError",
    "EnterpriseUnavailableError",
    "GatewayError",
    "GatewayInternalError",
    "InsufficientBalanceError",
    "InterfaceNotEnabledError",
    "InvalidParameterError",
    "KeyLockedError",
    "KeyUpdate",
    "MalformedRecord",
    "ProtocolError",
    "RateLimitedError",
    "Reply",
    "ReportResult",
    "RetryDetails",
    "RetryPolicy",
    "SchedulerStats",
    "SendReceipt",
    "Signature",
    "StaffUnavailableError",
    "StateReport",
    "TransportError",
    "UnknownResultError",
    "ValidationError",
    "__version__",
]

# Tracebacks and reprs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "aisix_async"
del _name, _obj
