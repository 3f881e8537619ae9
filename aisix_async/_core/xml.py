"""Turn the bytes of a gateway answer into ``(name, result, items)``.

This is the only place that parses XML, and it does so through defusedxml, because the
answer comes from the network: entity expansion ("billion laughs"), external entities
and DTDs are refused outright. Whatever goes wrong (an HTML error page from a proxy, an
empty or truncated body, an answer for another action) becomes a :class:`ProtocolError`,
never a parser exception from below.

An answer is read straight off the expat parser that defusedxml arms with its refusals:
only the ``<xml>`` root's attributes and those of its ``<Item>`` children are kept, as
the dicts expat builds, without a tree or defusedxml's pure-Python element handler in
between. A delivery-report answer holds ten thousand items, and building them one by one
in Python cost twice as long as expat's own reading of the bytes. An answer that uses
XML namespaces (names then need the tree builder's ``{uri}name`` spelling) is read
through defusedxml's ``fromstring`` instead, as is every answer should defusedxml stop
arming its parser the way it is checked for here.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ExpatError

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, fromstring

from .errors import ProtocolError

__all__ = ["Answer", "parse_answer"]

_BOM = b"\xef\xbb\xbf"

#: The handlers through which defusedxml refuses DTDs, entity declarations and external
#: entities: the fast reading runs only on a parser that has all of them.
_REFUSALS = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "ExternalEntityRefHandler",
)


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


def _armed_parser() -> Any | None:
    """A pyexpat parser armed by defusedxml, or None if it cannot be had as expected."""
    expat = getattr(
        DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True),
        "parser",
        None,
    )
    if expat is None or any(getattr(expat, name, None) is None for name in _REFUSALS):
        return None
    return expat


def _read_fast(body: bytes) -> tuple[str, dict[str, str], list[dict[str, str]]] | None:
    """The root's tag and attributes and its Item children's attributes, or None when
    this answer must go through the tree (see the module docstring)."""
    if b"xmlns" in body or b"xml:" in body:
        return None
    expat = _armed_parser()
    if expat is None:
        return None
    root: list[tuple[str, dict[str, str]]] = []
    items: list[dict[str, str]] = []
    ended: list[str] = []
    started = 0

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal started
        # Depth is starts minus ends; the ends are counted by a C-level append, so only
        # one Python call per element is made.
        if started - len(ended) == 1:
            if tag == "Item":
                items.append(attributes)
        elif not started:
            root.append((tag, attributes))
        started += 1

    # Dicts of attributes made by expat itself, rather than pairs walked in Python.
    expat.ordered_attributes = False
    expat.StartElementHandler = start
    expat.EndElementHandler = ended.append
    # Text is of no use in an answer, and ignored rather than gathered.
    expat.CharacterDataHandler = None
    expat.Parse(body, True)
    tag, attributes = root[0]
    return tag, attributes, items


def _read_tree(body: bytes) -> tuple[str, dict[str, str], list[dict[str, str]]]:
    root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    # The tree is dropped here: its attribute dicts are handed over, not copied.
    return root.tag, root.attrib, [child.attrib for child in root if child.tag == "Item"]


def parse_answer(body: bytes, action: str) -> Answer:
    """Parse ``body`` as the answer to ``action``; raise ProtocolError if it is not one."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        raise ProtocolError(f"{action}: the gateway sent an empty answer", action=action)
    try:
        found = _read_fast(body)
        if found is None:
            found = _read_tree(body)
    except DefusedXmlException as exc:
        raise ProtocolError(
            f"{action}: the answer uses forbidden XML ({type(exc).__name__})", action=action
        ) from None
    except (ParseError, ExpatError) as exc:
        raise ProtocolError(
            f"{action}: the answer is not well-formed XML ({exc}): {_snippet(body)!r}",
            action=action,
        ) from None
    tag, attributes, items = found
    if tag != "xml":
        raise ProtocolError(
            f"{action}: expected an <xml> answer, got <{tag}>: {_snippet(body)!r}",
            action=action,
        )
    name = attributes.get("name")
    if name != action:
        raise ProtocolError(f"{action}: the answer is named {name!r}", action=action)
    raw_result = attributes.get("result")
    try:
        result = int(raw_result or "")
    except ValueError:
        raise ProtocolError(
            f"{action}: the answer's result {raw_result!r} is not an integer", action=action
        ) from None
    return Answer(name=name, result=result, items=tuple(items))
