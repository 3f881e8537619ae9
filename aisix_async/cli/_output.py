"""Everything the command line prints, in one place, in three forms.

Results go to stdout, everything about the run (progress, notes, errors) to stderr, so
``aisix send ... > results.txt`` or ``| jq`` gets results alone. Results are rich tables,
or with ``--json`` one JSON object per line (JSON lines stream: a follower of
``aisix reports --follow --json`` reads each record the moment it arrives). Money is
printed as a string of its exact decimal value, never a float.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exit import redact_keys

__all__ = ["Output", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: Decimal as str, datetime ISO 8601, enums by name."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if attrs.has(type(value)):
        return {
            field.name: jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.repr is not False or field.name == "extra"
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


class Output:
    """Where and how a command writes; one per command run."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._stdout = stdout if stdout is not None else sys.stdout
        self._stderr = stderr if stderr is not None else sys.stderr
        self.out = Console(file=self._stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=self._stderr, highlight=False, soft_wrap=True, stderr=True)

    @property
    def interactive(self) -> bool:
        """True when a live progress display suits stderr (a terminal, not silenced)."""
        return not self.quiet and self.err.is_terminal

    def emit(self, record: Mapping[str, Any]) -> None:
        """One JSON line on stdout, flushed at once (followers read it as it comes)."""
        self._stdout.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
        self._stdout.flush()

    def line(self, text: str) -> None:
        """A plain result line on stdout (no markup interpretation)."""
        self.out.print(text, markup=False)

    def note(self, text: str) -> None:
        """A line about the run on stderr (suppressed by --quiet)."""
        if not self.quiet:
            self.err.print(text, markup=False)

    def warn(self, text: str) -> None:
        """A warning on stderr, shown even with --quiet (a key-like token is not shown)."""
        self.err.print(f"aisix: warning: {redact_keys(text)}", markup=False)

    def error(self, text: str) -> None:
        """An error on stderr, shown even with --quiet (a key-like token is not shown)."""
        self.err.print(f"aisix: error: {redact_keys(text)}", markup=False)

    def table(
        self,
        title: str | None,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        right: Sequence[str] = (),
    ) -> None:
        """A table on stdout; ``right`` names the columns holding figures."""
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left")
        for row in rows:
            table.add_row(*(_cell(cell) for cell in row))
        self.out.print(table)

    def pairs(self, title: str | None, rows: Sequence[tuple[str, object]]) -> None:
        """A two-column table of labelled values (a summary)."""
        table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        for label, value in rows:
            table.add_row(Text(label), _cell(value))
        self.out.print(table)


def _cell(value: object) -> Text:
    # Text, not str: rich would read "[...]" in a content or signature as markup.
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))
