"""Where a campaign's recipients stand, as every table of a journal says it.

``aisix send --journal`` ends with the campaign's figures over all its runs, and
``aisix campaign`` shows them from the journal alone: two tables of the same journal
that worded and counted "not yet sent" each its own way told an operator two different
things about what was left to send. Both take these rows from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .. import CampaignSummary

__all__ = ["NOT_YET_SENT", "standing_rows"]

#: The label of what a resumed run would send (tests and scripts look for it).
NOT_YET_SENT = "not yet sent (a new run sends them)"


def standing_rows(summary: CampaignSummary) -> list[tuple[str, object]]:
    """The recipients by fate: accepted, failed, unknown, not yet sent (and in flight,
    and reconciled, when there are any), labelled and formatted for a table."""
    rows: list[tuple[str, object]] = [
        ("accepted", f"{summary.accepted:,}"),
        ("failed for good", f"{summary.failed:,}"),
        ("unknown (may have been sent)", f"{summary.unknown:,}"),
        (NOT_YET_SENT, _not_yet_sent(summary)),
    ]
    if summary.in_flight:
        # Only while a run sends (a journal read as another process holds it).
        rows.append(("in flight (a run is sending them)", f"{summary.in_flight:,}"))
    if summary.reconciled:
        # Of "accepted": unknown chunks a delivery report proved sent.
        rows.append(("of which reconciled by reports", f"{summary.reconciled:,}"))
    return rows


def _not_yet_sent(summary: CampaignSummary) -> str:
    if summary.input_size is not None:
        return f"{summary.not_yet_sent:,}"
    # Until a run has read the whole input, the journal cannot know how much is left.
    return f"{summary.not_yet_sent:,} + input not read yet"
