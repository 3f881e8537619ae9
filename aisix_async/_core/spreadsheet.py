"""Cells of a CSV written for people, made safe to open in a spreadsheet.

Excel and LibreOffice run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (a tab or
a carriage return too, which they skip) as a formula: ``=HYPERLINK(...)`` in an input
line or a gateway's answer became a live link, or worse, in the operator's spreadsheet
(CSV injection). The usual remedy (OWASP's) is a single quote before such a cell, which
the spreadsheet shows as text and does not run.

A plain number is left as it is: ``-1``, ``+8613800138000`` are no formula, and a
column of numbers must stay numbers for the scripts that read it.
"""

from __future__ import annotations

import re

__all__ = ["spreadsheet_safe"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a ``'`` before it if a spreadsheet would run it as a formula."""
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text
