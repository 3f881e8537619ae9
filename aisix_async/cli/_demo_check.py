"""The demo's self-check: the client's account of a campaign against the gateway's record.

A demo that only prints the client's own figures proves nothing: they could all be wrong
together. The emulator keeps a ledger of every message it accepted (msgid, number, the
exact text the phone receives, units, cost), and that is the ground truth each claim of
the client is checked against here. Pure: it compares data, it does no I/O.

What is checked, and why each matters:

* every recipient has exactly one outcome (nothing lost, nothing counted twice);
* an accepted recipient was charged exactly once, under the msgid the client holds;
* a failed recipient was not charged (failed means "nothing went out");
* the gateway charged nobody outside the campaign, and nobody twice (no blind resend);
* units and cost the client reports equal what the ledger charged for them;
* the balance fell by exactly what the ledger charged (money is exact);
* each phone received the text it should (signature + content or rendered template);
* every accepted recipient got a final delivery report, and blacklisted ones DTBLACK;
* an "unknown" recipient is one the client could not know about: the check reports how
  many were in fact charged, and that each charged one was confirmed by its report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import attrs

from .. import OutcomeStatus, SendOutcome

__all__ = ["Check", "LedgerEntry", "Part", "verify"]


@attrs.frozen
class LedgerEntry:
    """One message the gateway accepted, as its ledger records it."""

    msgid: str
    mobile: str
    text: str
    units: int
    cost: Decimal


@attrs.define
class Part:
    """One send of the demo (sendOnce, sendBatch or sendParam) and what became of it."""

    name: str
    #: number -> the content the phone should receive after the signature.
    expected: dict[str, str]
    accepted: dict[str, str] = attrs.Factory(dict)
    failed: set[str] = attrs.Factory(set)
    unknown: set[str] = attrs.Factory(set)
    units: int = 0
    cost: Decimal = Decimal(0)
    #: Recipients seen in more than one outcome (must stay 0).
    repeated: int = 0

    def add(self, outcome: SendOutcome) -> None:
        """Record one outcome of this part."""
        mobiles = outcome.mobiles
        for mobile in mobiles:
            if mobile in self.accepted or mobile in self.failed or mobile in self.unknown:
                self.repeated += 1
        if outcome.status is OutcomeStatus.ACCEPTED:
            receipts = outcome.receipts
            if len(receipts) == 1:
                self.accepted.update(dict.fromkeys(mobiles, receipts[0].msgid))
            else:
                self.accepted.update(zip(mobiles, (r.msgid for r in receipts), strict=True))
            self.units += outcome.units
            self.cost += outcome.cost
        elif outcome.status is OutcomeStatus.FAILED:
            self.failed.update(mobiles)
        else:
            self.unknown.update(mobiles)

    @property
    def recipients(self) -> int:
        return len(self.expected)


@attrs.frozen
class Check:
    """One claim, whether the ground truth bears it out, and the figures behind it."""

    name: str
    ok: bool
    detail: str


def verify(
    parts: Sequence[Part],
    ledger: Iterable[LedgerEntry],
    *,
    signature: str,
    balance_before: Decimal,
    balance_after: Decimal,
    charged_by_gateway: Decimal,
    delivered: Mapping[tuple[str, str], str],
    pending: int,
    reported_unknown: Iterable[str],
    blacklist: Iterable[str],
) -> list[Check]:
    """Check every figure of the demo against the emulator's ledger.

    ``delivered`` maps (msgid, mobile) of tracked recipients to their final code;
    ``pending`` counts tracked recipients without one; ``reported_unknown`` holds the
    numbers of reports that matched no tracked recipient (the unknown outcomes' reports).
    """
    checks: list[Check] = []
    by_mobile: defaultdict[str, list[LedgerEntry]] = defaultdict(list)
    total_cost = Decimal(0)
    entries = 0
    for entry in ledger:
        by_mobile[entry.mobile].append(entry)
        total_cost += entry.cost
        entries += 1

    # 1. one outcome per recipient
    bad = []
    for part in parts:
        seen = len(part.accepted) + len(part.failed) + len(part.unknown)
        union = set(part.accepted) | part.failed | part.unknown
        if part.repeated or seen != part.recipients or union != set(part.expected):
            bad.append(f"{part.name}: {seen} outcomes for {part.recipients} recipients")
    recipients = sum(p.recipients for p in parts)
    checks.append(
        Check(
            "every recipient has exactly one outcome",
            not bad,
            "; ".join(bad) or f"{recipients:,} recipients, {recipients:,} outcomes",
        )
    )

    # 2. accepted = charged once, same msgid
    accepted = {m: msgid for p in parts for m, msgid in p.accepted.items()}
    wrong = [
        m
        for m, msgid in accepted.items()
        if len(by_mobile.get(m, ())) != 1 or by_mobile[m][0].msgid != msgid
    ]
    checks.append(
        Check(
            "accepted recipients were charged once, under the msgid the client holds",
            not wrong,
            f"{len(accepted):,} accepted, {len(wrong):,} not matching the ledger",
        )
    )

    # 3. failed = not charged
    failed = set().union(*(p.failed for p in parts))
    charged_failed = [m for m in failed if m in by_mobile]
    checks.append(
        Check(
            "failed recipients were not charged",
            not charged_failed,
            f"{len(failed):,} failed, {len(charged_failed):,} of them in the ledger",
        )
    )

    # 4. nothing charged outside the campaign, nobody twice
    unknown = set().union(*(p.unknown for p in parts))
    stray = [m for m in by_mobile if m not in accepted and m not in unknown]
    twice = [m for m, found in by_mobile.items() if len(found) > 1]
    checks.append(
        Check(
            "no message charged twice or outside the campaign",
            not stray and not twice,
            f"{entries:,} messages in the ledger; {len(twice):,} numbers charged twice, "
            f"{len(stray):,} unexplained",
        )
    )

    # 5. units and cost of the accepted ones
    ledger_units = sum(by_mobile[m][0].units for m in accepted if m in by_mobile)
    ledger_cost = sum((by_mobile[m][0].cost for m in accepted if m in by_mobile), Decimal(0))
    units = sum(p.units for p in parts)
    cost = sum((p.cost for p in parts), Decimal(0))
    checks.append(
        Check(
            "units and cost of accepted messages match the ledger",
            units == ledger_units and cost == ledger_cost,
            f"client {units:,} units / {cost} yuan; ledger {ledger_units:,} / {ledger_cost}",
        )
    )

    # 6. money
    spent = balance_before - balance_after
    checks.append(
        Check(
            "the balance fell by exactly what the gateway charged",
            spent == total_cost == charged_by_gateway,
            f"{balance_before} - {balance_after} = {spent} yuan; ledger {total_cost}",
        )
    )

    # 7. texts
    expected = {m: t for p in parts for m, t in p.expected.items()}
    mistexted = [
        m
        for m, found in by_mobile.items()
        if m in expected and any(e.text != signature + expected[m] for e in found)
    ]
    checks.append(
        Check(
            "every phone received its own text",
            not mistexted,
            f"{entries - len(mistexted):,} of {entries:,} texts as intended",
        )
    )

    # 8. delivery reports
    codes = Counter(delivered.values())
    black = set(blacklist)
    not_black = [m for (_, m), code in delivered.items() if m in black and code != "DTBLACK"]
    blacklisted = sum(1 for (_, m) in delivered if m in black)
    checks.append(
        Check(
            "every accepted recipient got a final delivery report",
            pending == 0 and sum(codes.values()) == len(accepted),
            f"{sum(codes.values()):,} final reports for {len(accepted):,} accepted, "
            f"{pending:,} pending",
        )
    )
    checks.append(
        Check(
            "blacklisted numbers were reported DTBLACK",
            not not_black,
            f"{blacklisted:,} blacklisted recipients, {len(not_black):,} with another code",
        )
    )

    # 9. unknowns
    charged_unknown = {m for m in unknown if m in by_mobile}
    confirmed = set(reported_unknown) & unknown
    checks.append(
        Check(
            "unknown outcomes reconciled: each one charged was confirmed by a report",
            confirmed == charged_unknown,
            f"{len(unknown):,} unknown: {len(charged_unknown):,} in fact charged "
            f"({len(confirmed):,} confirmed by a report), "
            f"{len(unknown) - len(charged_unknown):,} not charged",
        )
    )
    return checks
