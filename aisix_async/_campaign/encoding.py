"""How a chunk's positions and numbers are stored: compact text and compressed bytes.

Pure functions, shared by the SQL module (which writes and reads them) and the journal
(which decodes what it loads).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

__all__ = ["decode_positions", "encode_positions", "pack_numbers", "unpack_numbers"]


def encode_positions(positions: Sequence[int]) -> str:
    """Ascending input positions as ranges (``"0-999"``, ``"3,5-7"``).

    A chunk is one range as a rule (only refused items leave gaps), hence the fast path.
    """
    if positions and positions[-1] - positions[0] + 1 == len(positions):
        first, last = positions[0], positions[-1]
        return str(first) if first == last else f"{first}-{last}"
    parts: list[str] = []
    i, n = 0, len(positions)
    while i < n:
        j = i
        while j + 1 < n and positions[j + 1] == positions[j] + 1:
            j += 1
        parts.append(str(positions[i]) if i == j else f"{positions[i]}-{positions[j]}")
        i = j + 1
    return ",".join(parts)


def decode_positions(text: str) -> tuple[int, ...]:
    """The inverse of :func:`encode_positions`."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return tuple(out)


def pack_numbers(mobiles: Sequence[str]) -> bytes:
    """A chunk's numbers as stored in ``chunks.numbers``: joined by newlines, zlib level 1.

    Numbers of a campaign compress to about a third (digits, shared prefixes); level 1
    costs some 50 microseconds a chunk, on the journal's worker thread.
    """
    return zlib.compress("\n".join(mobiles).encode("utf-8", "surrogatepass"), 1)


def unpack_numbers(blob: bytes) -> list[str]:
    """The inverse of :func:`pack_numbers`."""
    return zlib.decompress(blob).decode("utf-8", "surrogatepass").split("\n")
