"""The live gateway: accounts, balances, keys, the ground-truth ledger, queues, counters.

One `threading.Lock` (`GatewayState.lock`) guards every mutation. The server runs on its
own thread and event loop while tests and benchmarks steer the state from theirs, and the
protocol handlers do check-charge-record under the lock with no await in between, so 200
concurrent sends leave balances and counters exact. Public methods take the lock
themselves; the handlers in `_actions` run with it held and use the unlocked internals.

The ledger is the ground truth a client is judged against: one `MessageRecord` per
accepted (msgid, mobile), with the exact text the phone receives. Benchmarks that send
millions can turn it off (`record_messages=False`) and keep only the counters.
"""

from __future__ import annotations

import random
import sys
import threading
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ._config import (
    FAULT_NAMES,
    AccountConfig,
    EmulatorConfig,
    EmulatorOverrides,
    FaultConfig,
    check_overrides,
    to_money,
)
from ._queues import ReplyQueue, ReportMix, ReportQueue
from ._records import Counters, MessageRecord

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:
    # Only annotations name it (strings here): 3.10 needs no typing_extensions to run.
    from typing_extensions import Unpack

__all__ = ["AccountState", "GatewayState", "config_to_json"]


@attrs.define(eq=False)
class AccountState:
    """The mutable side of one account: key, balance, flags, lock, bucket, queues."""

    config: AccountConfig
    authkey: str
    balance: Decimal
    enterprise_enabled: bool
    staff_enabled: bool
    interface_enabled: bool
    wrong_keys: int = 0
    locked: bool = False
    # An infinite start fills the bucket to `burst` on first use, and again whenever a
    # limit is switched on at run time.
    tokens: float = float("inf")
    tokens_at: float = 0.0
    reports: ReportQueue = attrs.Factory(ReportQueue)
    replies: ReplyQueue = attrs.Factory(ReplyQueue)

    @classmethod
    def from_config(cls, config: AccountConfig) -> AccountState:
        """A fresh account as configured."""
        return cls(
            config=config,
            authkey=config.authkey,
            balance=config.balance,
            enterprise_enabled=config.enterprise_enabled,
            staff_enabled=config.staff_enabled,
            interface_enabled=config.interface_enabled,
        )

    @property
    def ac(self) -> str:
        """`staff@enterprise`."""
        return self.config.ac

    def to_json(self, now: float) -> dict[str, Any]:
        """What `/_emulator/state` shows of this account."""
        return {
            "ac": self.ac,
            "balance": f"{self.balance:.3f}",
            "authkey": self.authkey,
            "locked": self.locked,
            "wrong_keys": self.wrong_keys,
            "enterprise_enabled": self.enterprise_enabled,
            "staff_enabled": self.staff_enabled,
            "interface_enabled": self.interface_enabled,
            "pending_reports": len(self.reports),
            # Counting due reports walks the heap under the lock: skipped when it is huge
            # (a benchmark's millions), so polling the state never stalls the gateway.
            "due_reports": self.reports.due_count(now) if len(self.reports) <= 100_000 else None,
            "pending_replies": len(self.replies),
        }


class GatewayState:
    """The whole mutable gateway; share one between an app and the code steering it."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.lock = threading.Lock()
        config = config if config is not None else EmulatorConfig()
        # msgids and request ids run on across resets, so a msgid is never reused by one
        # emulator process, even by a session-wide server reset between tests.
        start_rng = random.Random(f"msgid:{config.seed}")
        self._msgid = start_rng.randrange(10**17, 5 * 10**17)
        self._msgid_rng = random.Random(f"msgid-step:{config.seed}")
        self._request_id = 0
        # Requests held in the latency fault, not yet processed. Kept across resets: a
        # request held when a test ends still leaves the count when its delay is over.
        self.held = 0
        self._load(config)

    # ----------------------------------------------------------------- configuration

    def _load(self, config: EmulatorConfig) -> None:
        self._initial = config
        self._config = config
        self.accounts: dict[str, AccountState] = {
            a.ac: AccountState.from_config(a) for a in config.accounts
        }
        self.enterprises: dict[str, list[AccountState]] = {}
        for account in self.accounts.values():
            self.enterprises.setdefault(account.config.enterprise, []).append(account)
        self.default_ac = config.accounts[0].ac
        self.ledger: list[MessageRecord] = []
        self.counters = Counters()
        self._seed_generators(config)

    def _seed_generators(self, config: EmulatorConfig) -> None:
        # Separate streams, so turning faults on does not change which reports come back.
        self.fault_rng = random.Random(f"faults:{config.seed}")
        self.report_rng = random.Random(f"reports:{config.seed}")
        self.key_rng = random.Random(f"keys:{config.seed}")
        self.report_mix = ReportMix(config.report_mix)

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force (a frozen value; replace it with `configure`)."""
        return self._config

    def configure(self, **changes: Unpack[EmulatorOverrides]) -> EmulatorConfig:
        """Change settings at run time (rate, burst, faults, report_mix, seed, ...).

        Passing `seed` (even the same one) restarts the fault, report and key generators.

        Accounts cannot change this way: their live balances and keys would be lost;
        use `reset(config)` or `update_account` instead.
        """
        check_overrides(changes)
        if "accounts" in changes:
            raise ValueError("accounts change only through reset(config) or update_account")
        with self.lock:
            old = self._config
            new = attrs.evolve(old, **changes)
            self._config = new
            if "seed" in changes:
                self._seed_generators(new)
            elif new.report_mix != old.report_mix:
                self.report_mix = ReportMix(new.report_mix)
            return new

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change some fault settings, keeping the others (e.g. `set_faults(http_502=0.5)`)."""
        with self.lock:
            faults = attrs.evolve(self._config.faults, **changes)
            self._config = attrs.evolve(self._config, faults=faults)
            return faults

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Clear ledger, counters and queues, and restore accounts and settings.

        With `config`, that configuration is loaded instead and becomes the one later
        resets restore.
        """
        with self.lock:
            self._load(config if config is not None else self._initial)

    # --------------------------------------------------------- used under the lock

    def next_request_id(self) -> int:
        """A new request number (caller holds the lock)."""
        self._request_id += 1
        return self._request_id

    def next_msgid(self) -> str:
        """A new 18-digit msgid, larger than every earlier one (caller holds the lock)."""
        # A seeded step of 1..16, so clients cannot come to rely on consecutive msgids.
        self._msgid += 1 + self._msgid_rng.getrandbits(4)
        return str(self._msgid)

    def take_token(self, account: AccountState, config: EmulatorConfig) -> bool:
        """Spend one token of the account's bucket, or say the request is too fast."""
        rate = config.rate
        if rate is None:
            return True
        now = config.monotonic()
        tokens = min(config.effective_burst, account.tokens + (now - account.tokens_at) * rate)
        account.tokens_at = now
        if tokens >= 1.0:
            account.tokens = tokens - 1.0
            return True
        account.tokens = tokens
        return False

    def new_authkey(self) -> str:
        """A fresh 32-hex-digit upper-case key (seeded, so runs repeat)."""
        return f"{self.key_rng.getrandbits(128):032X}"

    # ----------------------------------------------------------- steering (locked)

    def _account(self, ac: str | None) -> AccountState:
        key = self.default_ac if ac is None else ac
        try:
            return self.accounts[key]
        except KeyError:
            raise KeyError(f"no account {key!r} in the emulator") from None

    def balance(self, ac: str | None = None) -> Decimal:
        """An account's balance now (default: the first account)."""
        with self.lock:
            return self._account(ac).balance

    def authkey(self, ac: str | None = None) -> str:
        """An account's current key (changes after updateKey)."""
        with self.lock:
            return self._account(ac).authkey

    def update_account(
        self,
        ac: str | None = None,
        *,
        balance: Decimal | int | str | None = None,
        authkey: str | None = None,
        enterprise_enabled: bool | None = None,
        staff_enabled: bool | None = None,
        interface_enabled: bool | None = None,
        unlock: bool = False,
    ) -> dict[str, Any]:
        """Change an account at run time; returns its new `/_emulator/state` view."""
        with self.lock:
            account = self._account(ac)
            if balance is not None:
                account.balance = to_money(balance)
            if authkey is not None:
                account.authkey = authkey
            if enterprise_enabled is not None:
                account.enterprise_enabled = enterprise_enabled
            if staff_enabled is not None:
                account.staff_enabled = staff_enabled
            if interface_enabled is not None:
                account.interface_enabled = interface_enabled
            if unlock:
                account.locked = False
                account.wrong_keys = 0
            return account.to_json(self._config.clock())

    def set_balance(self, ac: str | None, balance: Decimal | int | str) -> None:
        """Set an account's balance (e.g. to provoke -9)."""
        self.update_account(ac, balance=balance)

    def unlock_key(self, ac: str | None = None) -> None:
        """Unlock a key locked by too many wrong keys, and clear the count."""
        self.update_account(ac, unlock=True)

    def inject_reply(
        self,
        mobile: str,
        content: str,
        *,
        account: str | None = None,
        time_ms: int | None = None,
    ) -> None:
        """Queue a reply from `mobile` for getReply (time defaults to the gateway clock)."""
        with self.lock:
            target = self._account(account)
            when = int(self._config.clock() * 1000) if time_ms is None else int(time_ms)
            target.replies.push(when, mobile, content)

    # ------------------------------------------------------------ reading (locked)

    @property
    def message_count(self) -> int:
        """How many messages the ledger holds."""
        with self.lock:
            return len(self.ledger)

    @property
    def requests_held(self) -> int:
        """Requests received and held by `latency_ms`/`jitter_ms`: on the wire for a client."""
        with self.lock:
            return self.held

    def messages(self, offset: int = 0, limit: int | None = None) -> list[MessageRecord]:
        """A slice of the ground-truth ledger, in acceptance order."""
        with self.lock:
            end = None if limit is None else offset + limit
            return self.ledger[offset:end]

    def get_counters(self) -> Counters:
        """A copy of the counters."""
        with self.lock:
            return self.counters.copy()

    def pending_reports(self, ac: str | None = None) -> int:
        """Reports not yet fetched, due or not."""
        with self.lock:
            return len(self._account(ac).reports)

    def queued_reports(self, ac: str | None = None) -> list[tuple[str, str, str]]:
        """The reports not yet fetched, as (msgid, mobile, code), in the order they will come.

        The codes were drawn when their messages were accepted: a test compares what a
        client recorded with these, before the client fetches them.
        """
        with self.lock:
            return self._account(ac).reports.peek()

    def pending_replies(self, ac: str | None = None) -> int:
        """Replies not yet fetched."""
        with self.lock:
            return len(self._account(ac).replies)

    def snapshot(self) -> dict[str, Any]:
        """Counters, accounts and settings as JSON-ready data (`GET /_emulator/state`)."""
        with self.lock:
            now = self._config.clock()
            data = self.counters.to_json()
            data["ledger_size"] = len(self.ledger)
            data["clock"] = now
            data["accounts"] = {ac: a.to_json(now) for ac, a in self.accounts.items()}
            data["config"] = config_to_json(self._config)
            return data


def config_to_json(config: EmulatorConfig) -> dict[str, Any]:
    """The run-time settings of `config` as JSON-ready data (accounts shown apart)."""
    faults = config.faults
    return {
        "rate": config.rate,
        "burst": config.burst,
        "effective_burst": config.effective_burst if config.rate is not None else None,
        "ip_bound": config.ip_bound,
        "lock_after": config.lock_after,
        "seed": config.seed,
        "report_delay": config.report_delay,
        "report_mix": dict(config.report_mix),
        "blacklist": sorted(config.blacklist),
        "reports": config.reports,
        "reports_per_call": config.reports_per_call,
        "record_messages": config.record_messages,
        "max_body_bytes": config.max_body_bytes,
        "faults": {
            **{name: faults.probability(name) for name in FAULT_NAMES},
            "latency_ms": faults.latency_ms,
            "jitter_ms": faults.jitter_ms,
            "slow_body_ms": faults.slow_body_ms,
            "fault_actions": None if faults.fault_actions is None else sorted(faults.fault_actions),
        },
    }
