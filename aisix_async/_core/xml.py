"""Turn the bytes of a gateway answer into ``(name, result, items)``.

This is the only place that parses XML, and it does so through defusedxml, because the
answer comes from the network: entity expansion ("billion laughs"), external entities
and DTDs are refused outright. Whatever goes wrong (an HTML error page from a proxy, an
empty or truncated body, an answer for another action) becomes a :class:`ProtocolError`,
never a parser exception from below.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .errors import ProtocolError

__all__ = ["Answer", "parse_answer"]

_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class Answer:
    """One parsed answer: the action it names, its result code, and each Item's attributes."""

    name: str
    result: int
    items: tuple[dict[str, str], ...]


def _snippet(body: bytes) -> str:
    # Enough of the body to recognise an HTML error page in a log, and no more.
    text = body[:80].decode("utf-8", "replace")
    return text + ("..." if len(body) > 80 else "")


def parse_answer(body: bytes, action: str) -> Answer:
    """Parse ``body`` as the answer to ``action``; raise ProtocolError if it is not one."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        raise ProtocolError(f"{action}: the gateway sent an empty answer", action=action)
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ProtocolError(
            f"{action}: the answer uses forbidden XML ({type(exc).__name__})", action=action
        ) from None
    except ParseError as exc:
        raise ProtocolError(
            f"{action}: the answer is not well-formed XML ({exc}): {_snippet(body)!r}",
            action=action,
        ) from None
    if root.tag != "xml":
        raise ProtocolError(
            f"{action}: expected an <xml> answer, got <{root.tag}>: {_snippet(body)!r}",
            action=action,
        )
    name = root.get("name")
    if name != action:
        raise ProtocolError(f"{action}: the answer is named {name!r}", action=action)
    raw_result = root.get("result")
    try:
        result = int(raw_result or "")
    except ValueError:
        raise ProtocolError(
            f"{action}: the answer's result {raw_result!r} is not an integer", action=action
        ) from None
    # The tree is dropped here: its attribute dicts are handed over, not copied.
    items = tuple(child.attrib for child in root if child.tag == "Item")
    return Answer(name=name, result=result, items=items)
