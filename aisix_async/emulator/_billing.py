"""How many billing units a message costs, as the operators count it.

Kept apart from the request handlers because it is the one rule a client's own estimate
must agree with: the text counted is what the phone receives (signature + content), in
code points; up to `word` of them is one unit, a longer text costs ceil(len / longword).
"""

from __future__ import annotations

from ._config import ChannelGroupConfig

__all__ = ["message_units", "units_for_length"]


def units_for_length(length: int, word: int, longword: int) -> int:
    """Units for a text of `length` code points in a group with `word`/`longword`."""
    if length <= word:
        return 1
    # Integer ceiling division: no float rounding for long texts.
    return -(-length // longword)


def message_units(text: str, group: ChannelGroupConfig) -> int:
    """Units for `text`, the exact text the phone receives (signature included)."""
    return units_for_length(len(text), group.word, group.longword)
