"""Configuration of the emulated gateway: accounts, channel groups, signatures, faults.

Every class here is a frozen value. The running gateway never edits a configuration in
place: `GatewayState.configure` swaps in a whole new value, so a request handled under the
state lock always sees one consistent configuration (never half of a change made from
another thread), and `/_emulator/reset` can put back the original exactly.

The defaults are the account of the API document's examples (`1001@100001` with the
document's authkey), so a client pointed at the emulator with the document's values works.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TypedDict

import attrs

__all__ = [
    "ALL_ACTIONS",
    "DATA_API_ACTIONS",
    "DEFAULT_ACCOUNT",
    "DEFAULT_AUTHKEY",
    "DEFAULT_CHANNEL_GROUPS",
    "DEFAULT_REPORT_MIX",
    "DEFAULT_SIGNS",
    "FAULT_NAMES",
    "GATEWAY_TZ",
    "OPEN_API_ACTIONS",
    "SEND_ACTIONS",
    "AccountConfig",
    "ChannelGroupConfig",
    "EmulatorConfig",
    "EmulatorOverrides",
    "FaultConfig",
    "ManualClock",
    "SignConfig",
    "check_overrides",
    "to_money",
]

DEFAULT_AUTHKEY = "87B01469201D6557C2685137EB3B5DEC"

SEND_ACTIONS = frozenset({"sendOnce", "sendBatch", "sendParam"})
OPEN_API_ACTIONS = SEND_ACTIONS | {"getBalance", "updateKey", "getChannelGroup", "getSign"}
DATA_API_ACTIONS = frozenset({"getSendState", "getReply"})
ALL_ACTIONS = OPEN_API_ACTIONS | DATA_API_ACTIONS
DEFAULT_ACCOUNT = "1001@100001"

#: The gateway keeps China time (UTC+8, no daylight saving): `t` is read in this zone.
GATEWAY_TZ = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")

#: Fault kinds in the order one uniform draw is walked (see `FaultConfig`).
FAULT_NAMES: tuple[str, ...] = (
    "http_502",
    "error_before_charge",
    "error_after_charge",
    "drop_after_process",
    "truncated_xml",
    "slow_body",
    "charge_failed",
)


def to_money(value: Decimal | int | float | str) -> Decimal:
    """An amount of yuan as a Decimal; ValueError for NaN or an infinity (a balance of NaN
    was served as remain="NaN", and a send then failed with HTTP 500)."""
    # A float goes through str() so 0.1 becomes Decimal("0.1"), not its binary expansion.
    if isinstance(value, Decimal):
        amount = value
    else:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"an amount must be finite, got {value!r}")
    return amount


def _digits(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{attribute.name} must be ASCII digits, got {value!r}")


@attrs.frozen
class SignConfig:
    """One approved signature; csid 0 is the account's default signature."""

    csid: int
    sign: str


@attrs.frozen
class ChannelGroupConfig:
    """One channel group: `word` characters fit one unit, longer texts cost ceil(n/longword)."""

    cgid: int
    word: int = 70
    longword: int = 67
    price: Decimal = attrs.field(default=Decimal("0.10"), converter=to_money)

    def __attrs_post_init__(self) -> None:
        if self.cgid <= 0:
            raise ValueError("cgid 0 means 'the first group' on the wire: use a positive cgid")
        if self.word < 1 or self.longword < 1:
            raise ValueError("word and longword must be positive")
        if self.price < 0:
            raise ValueError("price must not be negative")


DEFAULT_CHANNEL_GROUPS: tuple[ChannelGroupConfig, ...] = (
    ChannelGroupConfig(cgid=1, word=70, longword=67, price=Decimal("0.10")),
    ChannelGroupConfig(cgid=80, word=70, longword=64, price=Decimal("0.08")),
)
DEFAULT_SIGNS: tuple[SignConfig, ...] = (
    SignConfig(csid=0, sign="【Aisix】"),
    SignConfig(csid=101, sign="【AisixShop】"),
)


def _to_groups(value: Iterable[ChannelGroupConfig]) -> tuple[ChannelGroupConfig, ...]:
    return tuple(value)


def _to_signs(value: Iterable[SignConfig]) -> tuple[SignConfig, ...]:
    return tuple(value)


@attrs.frozen
class AccountConfig:
    """An account as the gateway starts with it (`ac` is `staff@enterprise`)."""

    enterprise: str = attrs.field(default="100001", validator=_digits)
    staff: str = attrs.field(default="1001", validator=_digits)
    authkey: str = DEFAULT_AUTHKEY
    balance: Decimal = attrs.field(default=Decimal("1000.000"), converter=to_money)
    channel_groups: tuple[ChannelGroupConfig, ...] = attrs.field(
        default=DEFAULT_CHANNEL_GROUPS, converter=_to_groups
    )
    signs: tuple[SignConfig, ...] = attrs.field(default=DEFAULT_SIGNS, converter=_to_signs)
    enterprise_enabled: bool = True
    staff_enabled: bool = True
    interface_enabled: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.channel_groups:
            raise ValueError("an account needs at least one channel group")
        if len({g.cgid for g in self.channel_groups}) != len(self.channel_groups):
            raise ValueError("duplicate cgid in channel_groups")
        csids = [s.csid for s in self.signs]
        if len(set(csids)) != len(csids):
            raise ValueError("duplicate csid in signs")
        # The document: csid 0 is the default signature, used for 0, omitted and unknown.
        if 0 not in csids:
            raise ValueError("signs must include csid 0, the default signature")

    @property
    def ac(self) -> str:
        """The wire form of the account: `staff@enterprise`."""
        return f"{self.staff}@{self.enterprise}"


def _probability(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} is a probability in [0, 1], got {value}")


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    # Finite too: float() and JSON take NaN and Infinity, which pass a "< 0" test and
    # were served as answers (and a config) no client could read.
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be finite and not negative, got {value}")


def _to_actions(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _known_actions(
    _instance: object,
    attribute: attrs.Attribute[frozenset[str] | None],
    value: frozenset[str] | None,
) -> None:
    # A typo ("getbalance", " sendOnce") fired no fault at all, silently.
    unknown = sorted((value or frozenset()) - ALL_ACTIONS)
    if unknown:
        raise ValueError(
            f"{attribute.name}: unknown action {unknown[0]!r}; actions are "
            f"{', '.join(sorted(ALL_ACTIONS))}"
        )


@attrs.frozen
class FaultConfig:
    """Seeded fault injection on the protocol endpoints (never on `/_emulator/`).

    Each request draws one uniform number and walks `FAULT_NAMES` in order, so at most one
    fault fires per request and each fires with exactly its configured probability (the
    probabilities must add up to at most 1). `latency_ms` + uniform `jitter_ms` delay every
    request before it is processed. `fault_actions` (None: all) narrows faults and latency
    to some actions, e.g. only the sends.
    """

    http_502: float = attrs.field(default=0.0, converter=float, validator=_probability)
    error_before_charge: float = attrs.field(default=0.0, converter=float, validator=_probability)
    error_after_charge: float = attrs.field(default=0.0, converter=float, validator=_probability)
    drop_after_process: float = attrs.field(default=0.0, converter=float, validator=_probability)
    truncated_xml: float = attrs.field(default=0.0, converter=float, validator=_probability)
    slow_body: float = attrs.field(default=0.0, converter=float, validator=_probability)
    charge_failed: float = attrs.field(default=0.0, converter=float, validator=_probability)
    latency_ms: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    jitter_ms: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    slow_body_ms: float = attrs.field(default=400.0, converter=float, validator=_non_negative)
    fault_actions: frozenset[str] | None = attrs.field(
        default=None, converter=_to_actions, validator=_known_actions
    )
    # Computed once: every request asks, and the value cannot change (frozen).
    _active: bool = attrs.field(init=False, default=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.total_probability > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        active = self.total_probability > 0 or self.latency_ms > 0 or self.jitter_ms > 0
        object.__setattr__(self, "_active", active)

    @property
    def total_probability(self) -> float:
        """The chance that some fault fires on one request."""
        return math.fsum(self.probability(name) for name in FAULT_NAMES)

    @property
    def active(self) -> bool:
        """Whether any fault or delay can apply at all (the hot path skips the draw if not)."""
        return self._active

    def probability(self, name: str) -> float:
        """The configured probability of the fault called `name`."""
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
        value: float = getattr(self, name)
        return value


DEFAULT_REPORT_MIX: tuple[tuple[str, float], ...] = (
    ("DELIVRD", 0.90),
    ("UNDELIV", 0.04),
    ("REJECTD", 0.02),
    ("EXPIRED", 0.02),
    ("DTBLACK", 0.02),
)


def _to_mix(
    value: Mapping[str, float] | Iterable[tuple[str, float]],
) -> tuple[tuple[str, float], ...]:
    pairs = tuple(value.items()) if isinstance(value, Mapping) else tuple(value)
    mix = tuple((str(code), float(weight)) for code, weight in pairs)
    if (
        not mix
        or any(not (math.isfinite(w) and w >= 0) for _, w in mix)
        or not (math.fsum(w for _, w in mix) > 0)
    ):
        raise ValueError("report_mix needs non-negative weights with a positive sum")
    return mix


def _to_blacklist(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _to_accounts(value: Iterable[AccountConfig]) -> tuple[AccountConfig, ...]:
    return tuple(value)


def _optional_positive(
    _instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be finite and positive, or None, got {value}")


def _at_least_one(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class EmulatorConfig:
    """Everything that shapes the emulated gateway's answers.

    `rate` (requests per second per account, None: no limit) and `burst` (bucket capacity,
    None: one second's worth, `max(1, rate)`) drive a token bucket: a client that keeps
    under `rate` on average never sees -1, one that bursts past `burst` does at once.
    `clock` is the gateway's wall clock (epoch seconds: `t`, report due times, reply
    times) and `monotonic` drives the rate limiter; tests pass a `ManualClock` for both.
    """

    accounts: tuple[AccountConfig, ...] = attrs.field(
        default=(AccountConfig(),), converter=_to_accounts
    )
    rate: float | None = attrs.field(default=None, validator=_optional_positive)
    burst: float | None = attrs.field(default=None, validator=_optional_positive)
    ip_bound: bool = False
    lock_after: int = attrs.field(default=5, validator=_at_least_one)
    faults: FaultConfig = FaultConfig()
    seed: int = 0
    report_delay: float = attrs.field(default=1.0, validator=_non_negative)
    report_mix: tuple[tuple[str, float], ...] = attrs.field(
        default=DEFAULT_REPORT_MIX, converter=_to_mix
    )
    blacklist: frozenset[str] = attrs.field(default=frozenset(), converter=_to_blacklist)
    reports: bool = True
    reports_per_call: int = attrs.field(default=100, validator=_at_least_one)
    record_messages: bool = True
    max_body_bytes: int = attrs.field(default=2 * 1024 * 1024, validator=_at_least_one)
    gateway_tz: dt.tzinfo = GATEWAY_TZ
    clock: Callable[[], float] = attrs.field(default=time.time, eq=False)
    monotonic: Callable[[], float] = attrs.field(default=time.monotonic, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("the gateway needs at least one account")
        acs = [a.ac for a in self.accounts]
        if len(set(acs)) != len(acs):
            raise ValueError("duplicate account in accounts")

    @property
    def effective_burst(self) -> float:
        """The bucket capacity in force: `burst`, or one second's worth of `rate`."""
        if self.burst is not None:
            return self.burst
        return max(1.0, self.rate or 1.0)


class EmulatorOverrides(TypedDict, total=False):
    """The fields of `EmulatorConfig` as keywords: `EmulatorServer(**overrides)`,
    `serve_emulator(**overrides)` and `GatewayState.configure(**changes)`.

    Typed, so that a name that is no setting (`latency_ms`, a fault setting) fails the
    type check rather than the run; each takes what its field's converter takes. A test
    checks that the names are the config's.
    """

    accounts: Iterable[AccountConfig]
    rate: float | None
    burst: float | None
    ip_bound: bool
    lock_after: int
    faults: FaultConfig
    seed: int
    report_delay: float
    report_mix: Mapping[str, float] | Iterable[tuple[str, float]]
    blacklist: Iterable[str]
    reports: bool
    reports_per_call: int
    record_messages: bool
    max_body_bytes: int
    gateway_tz: dt.tzinfo
    clock: Callable[[], float]
    monotonic: Callable[[], float]


_SETTINGS = tuple(field.name for field in attrs.fields(EmulatorConfig) if field.init)
_FAULT_SETTINGS = frozenset(field.name for field in attrs.fields(FaultConfig) if field.init)


def check_overrides(changes: Mapping[str, object]) -> None:
    """Refuse a keyword that is no `EmulatorConfig` setting, naming those that are.

    attrs said only "unexpected keyword argument": not which settings exist, nor that a
    fault's (`latency_ms`) goes in `faults=` (or `state.set_faults`).
    """
    unknown = sorted(set(changes) - set(_SETTINGS))
    if not unknown:
        return
    name = unknown[0]
    hint = (
        f" ({name} is a fault setting: pass faults=FaultConfig({name}=...), or call "
        f"state.set_faults({name}=...) on the running emulator)"
        if name in _FAULT_SETTINGS
        else ""
    )
    raise TypeError(
        f"{name!r} is not an emulator setting{hint}; the settings are: {', '.join(_SETTINGS)}"
    )


class ManualClock:
    """A clock that moves only when told: `clock()` reads it, `advance()` moves it.

    Pass one as both `clock` and `monotonic` so tests reach report due times, scheduled
    send times and token refills without sleeping. Reads and writes of one float are
    atomic, so a test thread may advance it while the server thread reads it.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never backward: a gateway's clock does not rewind)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds

    def set(self, epoch_seconds: float) -> None:
        """Put the clock at an absolute time, e.g. just before a document example's `t`."""
        self._now = float(epoch_seconds)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
