"""Reading ``aisix send``'s recipients from files, CSV columns or stdin (pure: files only).

A source is re-openable: the command reads it once to check every line (so a bad number
on line 9,000,001 is reported, with its line number, before the first request), and
again to send, lazily, so ten million numbers never sit in memory. A journal resumes by
reading the same source once more. Stdin cannot be read twice, so it alone is buffered.

Line numbers in messages are those a text editor shows (header included for CSV).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TextIO, TypeVar

import attrs

from ... import Numbering, ValidationError
from ...validation import (
    SEPARATOR,
    check_content,
    check_mobile,
    check_param_row,
    check_template,
)
from .._exit import CliError

_I = TypeVar("_I")

__all__ = [
    "Checked",
    "Item",
    "Problem",
    "Source",
    "batch_source",
    "check_source",
    "csv_numbers_source",
    "numbers_source",
    "param_source",
    "parse_at",
]

#: One recipient as read: (line number, what the bulk call takes for it).
Item = tuple[int, object]


@attrs.frozen
class Source:
    """A re-readable list of recipients; ``open()`` starts a fresh pass over it."""

    description: str
    open: Callable[[], Iterator[Item]]
    #: sendOnce numbers, sendBatch pairs, or sendParam rows.
    mode: str
    template: str | None = None
    #: How many parameters the template uses, and the CSV columns giving them (sendParam).
    params: int = 0
    param_columns: tuple[str, ...] = ()
    #: The numbering policy numbers are checked against (``--numbers``).
    numbering: Numbering = "lenient"


@attrs.frozen
class Problem:
    """One input line that would be refused."""

    line: int
    reason: str


_ZULU = re.compile(r"[zZ]$")


def parse_at(text: str) -> datetime:
    """An ISO 8601 time with its zone; a time without zone is refused (it is ambiguous)."""
    try:
        when = datetime.fromisoformat(_ZULU.sub("+00:00", text.strip()))
    except ValueError:
        raise CliError(
            f"--at {text!r} is not an ISO 8601 time (e.g. 2030-01-31T09:00+08:00)"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise CliError(
            f"--at {text!r} has no zone: add one (e.g. {text}+08:00 for China time, or Z for "
            "UTC); a time without zone could be read in the wrong zone"
        )
    return when.astimezone(timezone.utc)


def _open_text(path: str) -> TextIO:
    try:
        # utf-8-sig: spreadsheet programs put a byte-order mark in front of CSV exports.
        return open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror})") from None


def _not_utf8(name: str, data: BinaryIO) -> CliError:
    """The error for input that is not UTF-8, naming the first line that is not.

    Only called once decoding has failed, so reading the input a second time here costs
    nothing on the normal path. Latin-1 maps every byte to one character, so splitting
    through it finds the same lines as the UTF-8 reader would have.
    """
    head = data.read(2)
    data.seek(0)
    lines = io.TextIOWrapper(data, encoding="latin-1", newline="")
    for number, line in enumerate(lines, start=1):
        try:
            line.encode("latin-1").decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            break
    else:  # pragma: no cover - the caller saw a decoding error
        number, byte = 1, 0
    # Windows "Unicode" text (Notepad, Excel's "Unicode Text") is UTF-16 with a BOM.
    kind = " (it looks like UTF-16)" if head in (b"\xff\xfe", b"\xfe\xff") else ""
    return CliError(
        f"{name} line {number}: not UTF-8 text{kind}, byte 0x{byte:02x}; re-save the file "
        "as UTF-8 (in a spreadsheet program: CSV UTF-8)"
    )


def _nul_refused(name: str, number: int) -> CliError:
    # UTF-16 without a byte order mark decodes as UTF-8 with a NUL after every ASCII
    # character: two numbers read as five bad lines of "1\x008\x00...".
    return CliError(
        f"{name} line {number}: holds NUL bytes, so it is not UTF-8 text (UTF-16 without a "
        "byte order mark?); re-save the file as UTF-8 (in a spreadsheet program: CSV UTF-8)"
    )


def _text_lines(path: str) -> Generator[str, None, None]:
    """The lines of a UTF-8 file, endings kept (the csv module needs them)."""
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if "\x00" in line:
                    raise _nul_refused(path, number)
                yield line
        except UnicodeDecodeError:
            with open(path, "rb") as raw:
                raise _not_utf8(path, raw) from None


def _existing_file(path: str, option: str = "") -> None:
    """Refuse a path that is missing or not a file, saying which (and for which option)."""
    file = Path(path)
    if file.is_dir():
        raise CliError(f"{option}{path}: is a directory, not a file")
    if path == "-" and option:
        raise CliError(f"{option}takes a file, not stdin: save the rows to a file first")
    if file.exists() and not file.is_file():
        # A fifo, or <(...): there, but read once only, and the input is read twice.
        raise CliError(
            f"{option}{path}: not a regular file (a pipe?); the input is read twice (checked, "
            "then sent), so it must be a file"
            + ("" if option else f", or given on stdin: aisix send - < {path}")
        )
    if not file.is_file():
        raise CliError(f"{option}{path}: no such file")


def _stdin_lines() -> list[str]:
    buffer: BinaryIO | None = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # pragma: no cover - a replaced sys.stdin: already text
        return sys.stdin.read().splitlines()
    data = buffer.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8("stdin", io.BytesIO(data)) from None
    # Split as a file is read (newline=""): at \n, \r\n or \r only. splitlines() also
    # split at U+2028 and others inside a line, and numbered the lines after it wrong.
    lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]
    if "\x00" in text:
        raise _nul_refused("stdin", next(n for n, line in enumerate(lines, 1) if "\x00" in line))
    return lines


def _reader(path: str | None) -> Callable[[], Iterator[tuple[int, str]]]:
    """Lines of a file (or of stdin, buffered once) with their line numbers."""
    if path is None or path == "-":
        if sys.stdin.isatty():
            raise CliError(
                "no recipients: give a FILE of numbers, --csv FILE --column NAME, --batch FILE, "
                "or pipe numbers on stdin"
            )
        lines = _stdin_lines()
        return lambda: enumerate(lines, start=1)
    _existing_file(path)

    def read() -> Iterator[tuple[int, str]]:
        with closing(_text_lines(path)) as text:
            for number, line in enumerate(text, start=1):
                yield number, line.rstrip("\r\n")

    return read


def numbers_source(path: str | None) -> Source:
    """Numbers one per line; blank lines and ``#`` comments are skipped."""
    lines = _reader(path)

    def read() -> Iterator[Item]:
        for number, line in lines():
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text

    return Source("stdin" if path in (None, "-") else path or "", read, "once")


def _guarded(reader: Any, path: str) -> Iterator[Any]:
    """The rows of a csv reader; a row it cannot read is a CliError naming its line."""
    try:
        yield from reader
    except csv.Error as exc:
        # Most often a field over csv's limit (131,072 characters, far beyond any message):
        # a double quote never closed, which swallows every line after it.
        raise CliError(
            f"{path} line {reader.line_num}: not a CSV row this command can read ({exc}); "
            "most often a double quote never closed, on that line or above"
        ) from None


def _csv_rows(path: str) -> Callable[[], Iterator[tuple[int, dict[str, str | None], int]]]:
    """Rows by column name, and how many cells past the header's columns hold something.

    A column a short row does not reach is None, not ''. Callers have checked the file
    and its header first (:func:`_need_columns`).
    """

    def read() -> Iterator[tuple[int, dict[str, str | None], int]]:
        with closing(_text_lines(path)) as text:
            reader = csv.DictReader(text)
            for row in _guarded(reader, path):
                # Cells beyond the header (under the key None) are not any column's: empty
                # ones are a spreadsheet's habit, others a comma not quoted (see below).
                beyond: list[str] = row.pop(None, None) or []
                cells = {k: v for k, v in row.items() if k is not None}
                if not any((value or "").strip() for value in cells.values()):
                    continue
                yield reader.line_num, cells, sum(1 for cell in beyond if cell.strip())

    return read


def _header(path: str) -> list[str]:
    with closing(_text_lines(path)) as text:
        return next(_guarded(csv.reader(text), path), [])


def _refuse_repeated(path: str, header: Sequence[str], wanted: Sequence[str]) -> None:
    # A column named twice would be read from one of them silently (the last, for csv):
    # only the operator knows which. Repeats of columns not used (often several unnamed
    # ones at the end of a spreadsheet export) do no harm.
    repeated = [name for name in dict.fromkeys(wanted) if header.count(name) > 1]
    if repeated:
        raise CliError(
            f"{path}: the header names the column {', '.join(repr(r) for r in repeated)} "
            "more than once: rename the one not meant, so it is clear which to read"
        )


def _need_columns(path: str, wanted: Sequence[str]) -> list[str]:
    """The file's header, which names every column ``wanted``, once, or a CliError."""
    _existing_file(path, "--csv ")
    header = _header(path)
    missing = [name for name in wanted if name not in header]
    if missing:
        # A spreadsheet set to another locale saves "CSV" with ';' (or tabs): one column
        # whose name holds them all, and a header that reads as nonsense.
        other = next((sep for sep in (";", "\t") if len(header) == 1 and sep in header[0]), None)
        hint = (
            f" (it looks separated by {other!r}: this command reads comma-separated CSV; "
            "save it as CSV with commas)"
            if other
            else ""
        )
        raise CliError(
            f"{path}: no column {', '.join(repr(m) for m in missing)}; its header has "
            f"{', '.join(repr(h) for h in header) or 'nothing'}{hint}"
        )
    _refuse_repeated(path, header, wanted)
    return header


def csv_numbers_source(path: str, column: str) -> Source:
    """The numbers of one CSV column (the file has a header row)."""
    _need_columns(path, [column])
    rows = _csv_rows(path)

    def read() -> Iterator[Item]:
        # A cell past the header does not move the number's own column before it; one
        # after it is caught as a bad number.
        for number, row, _ in rows():
            yield number, (row[column] or "").strip()

    return Source(f"{path} column {column!r}", read, "once")


def param_source(path: str, column: str, param_columns: Sequence[str], template: str) -> Source:
    """(mobile, [p1, p2 ...]) rows from CSV columns, for a ``{p1}``.. template."""
    try:
        text, count = check_template(template)
    except ValidationError as exc:
        raise CliError(f"--template: {exc.message}") from None
    if len(param_columns) != count:
        raise CliError(
            f"the template uses {count} parameter(s) ({{p1}}..{{p{count}}}) but "
            f"--param-columns names {len(param_columns)}"
        )
    columns = len(_need_columns(path, [column, *param_columns]))
    rows = _csv_rows(path)

    def read() -> Iterator[Item]:
        for number, row, beyond in rows():
            mobile = (row[column] or "").strip()
            if beyond:
                # A value holding a comma not quoted shifts the cells after it: "Zhao, Liu"
                # in a name sent " Liu" as the code, and the code was lost, exit 0 (a
                # user's trial). Invalid, as --batch's line is; three items, which the
                # bulk engine refuses too (--skip-invalid).
                reason = (
                    f"{columns + beyond} fields where the header names {columns}: put a value "
                    'that holds a comma in double quotes ("Zhao, Liu")'
                )
                yield number, (mobile, None, reason)
                continue
            # A missing value stays None, so the check reports the row rather than the send
            # filling the template with an empty string.
            yield number, (mobile, [row[name] for name in param_columns])

    return Source(
        f"{path} column {column!r}",
        read,
        "param",
        template=text,
        params=count,
        param_columns=tuple(param_columns),
    )


def batch_source(path: str) -> Source:
    """(mobile, content) rows; a header row naming 'mobile' and 'content' is optional."""
    _existing_file(path, "--batch ")
    header = [cell.strip().lower() for cell in _header(path)]
    has_header = "mobile" in header and "content" in header
    if has_header:
        _refuse_repeated(path, header, ["mobile", "content"])
    mobile_at = header.index("mobile") if has_header else 0
    content_at = header.index("content") if has_header else 1
    # A content holding an unquoted comma splits into more fields than the header names:
    # sending the first piece would cut the message silently, so the line is invalid.
    fields = len(header) if has_header else 2

    def read() -> Iterator[Item]:
        with closing(_text_lines(path)) as text:
            reader = csv.reader(text)
            for row in _guarded(reader, path):
                if has_header and reader.line_num == 1:
                    continue
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(mobile_at, content_at):
                    # Kept, so the check reports this line rather than skipping it.
                    mobile = row[mobile_at].strip() if len(row) > mobile_at else ""
                    yield reader.line_num, (mobile, None)
                    continue
                if len(row) > fields:
                    named = f"the header names {fields}" if has_header else "mobile,content is 2"
                    reason = (
                        f"{len(row)} fields where {named}: put a content that holds a comma "
                        'in double quotes (139...,"Hi Peter, see you at 9")'
                    )
                    # Three items, not a pair: the bulk engine refuses it too (--skip-invalid).
                    yield reader.line_num, (row[mobile_at].strip(), None, reason)
                    continue
                yield reader.line_num, (row[mobile_at].strip(), row[content_at])

    return Source(path, read, "batch")


def problem(source: Source, value: object) -> str | None:
    try:
        if source.mode == "once":
            check_mobile(value, source.numbering)
        elif source.mode == "batch":
            assert isinstance(value, tuple)
            if len(value) == 3:
                return str(value[2])
            mobile, text = value
            check_mobile(mobile, source.numbering)
            if text is None:
                return "needs two columns: mobile,content"
            # As the send checks it: a {p1} in a sendBatch content goes out with its braces.
            check_content(text, plain=True)
            if SEPARATOR in text:
                return f"the content contains {SEPARATOR!r}, which the gateway splits on"
        else:
            assert source.template is not None
            assert isinstance(value, tuple)
            if len(value) == 3:
                return str(value[2])
            cells = zip(source.param_columns, value[1], strict=True)
            missing = [name for name, cell in cells if cell is None]
            if missing:
                return f"too few columns: no {', '.join(repr(m) for m in missing)}"
            check_param_row(source.template, source.params, value, 0, source.numbering)
    except ValidationError as exc:
        # The line is named beside it; "row #0" is the library's index of a lone row.
        return exc.message.replace("for row #0 ", "").replace("row #0 ", "")
    return None


@attrs.frozen
class Checked:
    """What a full pass over a source found."""

    count: int
    problems: tuple[Problem, ...]
    #: Problems beyond those kept in ``problems``.
    more_problems: int
    duplicates: int


#: Items read between two looks at whether a check in a thread is still wanted.
HEED_EVERY = 10_000


def heeding(items: Iterable[_I], heed: Callable[[], None]) -> Iterator[_I]:
    """``items``, calling ``heed`` every :data:`HEED_EVERY` of them.

    A check of the input runs in a worker thread, which a Ctrl-C cannot stop: it read a
    million lines to their end (1.5 s) before the process could exit. Given a ``heed``
    that raises once the command is interrupted, it stops at the next look instead.
    """
    for count, item in enumerate(items, 1):
        if count % HEED_EVERY == 0:
            heed()
        yield item


def check_source(
    source: Source,
    *,
    keep: int = 20,
    duplicates: bool = False,
    heed: Callable[[], None] | None = None,
) -> Checked:
    """Read the whole source once and check every item as the send would.

    ``duplicates`` also counts numbers listed more than once (memory grows with the
    number of distinct numbers, so only a dry run asks for it). ``heed`` is called every
    :data:`HEED_EVERY` items, to raise if the check is no longer wanted (see heeding).
    """
    count = 0
    problems: list[Problem] = []
    more = 0
    seen: set[str] = set()
    repeated = 0
    for line, value in source.open():
        count += 1
        if heed is not None and count % HEED_EVERY == 0:
            heed()
        reason = problem(source, value)
        if reason is not None:
            if len(problems) < keep:
                problems.append(Problem(line, reason))
            else:
                more += 1
            continue
        if duplicates:
            mobile = value if isinstance(value, str) else str(value[0])  # type: ignore[index]
            if mobile in seen:
                repeated += 1
            else:
                seen.add(mobile)
    return Checked(count, tuple(problems), more, repeated)
