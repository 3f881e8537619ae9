"""Turn the bytes of a gateway answer into ``(name, result, items)``.

This is the only place that parses XML, and it does so through defusedxml, because the
answer comes from the network: entity expansion ("billion laughs"), external entities
and DTDs are refused outright. Whatever goes wrong (an HTML error page from a proxy, an
empty or truncated body, an answer for another action) becomes a :class:`ProtocolError`,
never a parser exception from below.

An answer is read straight off the expat parser that defusedxml arms with its refusals:
only the ``<xml>`` root's attributes and those of its ``<Item>`` children are kept, as
the dicts expat builds, without a tree or defusedxml's pure-Python element handler in
between (of any other child only its tag is kept: it makes an accepted answer a
ProtocolError, see :func:`_check_strays`). A delivery-report answer holds ten thousand
items, and building them one by one in Python cost twice as long as expat's own reading
of the bytes. An answer that uses
XML namespaces (names then need the tree builder's ``{uri}name`` spelling) is read
through defusedxml's ``fromstring`` instead, as is every answer should defusedxml stop
arming its parser the way it is checked for here.

A queue's poll (getSendState, getReply) may be read in two steps (:func:`parse_head`):
its root (name and result) at once, so the poller learns the outcome and can send the
next poll, and its Items later, when :meth:`LazyAnswer.read_items` feeds the rest of the
bytes to the same armed parser. Ten thousand items take expat about 20 ms, which the
next poll then no longer waits for. Nothing is read around the parser: the part read
first and the part read later are one document to expat, and refused or malformed XML
in either is a :class:`ProtocolError`, only raised at a different time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ExpatError

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, fromstring

from .errors import ProtocolError, quote_answer
from .wire import AnswerBody, Secret

__all__ = ["Answer", "LazyAnswer", "parse_answer", "parse_answer_keeping", "parse_head"]

_BOM = b"\xef\xbb\xbf"

#: The handlers through which defusedxml refuses DTDs, entity declarations and external
#: entities: the fast reading runs only on a parser that has all of them.
_REFUSALS = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "ExternalEntityRefHandler",
)

#: The bytes first fed to the parser when only an answer's head is wanted: the root and
#: the first Item of a usual answer fit (an Item is about 150 bytes). Each further step
#: feeds twice as much, so an unusual prologue costs a few calls, not one per kilobyte.
_HEAD_STEP = 1024

#: The root's tag and attributes, its Item children's attributes, and the tags of its
#: other children, in document order.
_Found = tuple[str, dict[str, str], list[dict[str, str]], list[str]]


@attrs.frozen
class Answer:
    """One parsed answer: the action it names, its result code, and each Item's attributes."""

    name: str
    result: int
    items: tuple[dict[str, str], ...]
    #: Set by :func:`parse_answer_keeping` when the answer was cut short: what was wrong,
    #: the Items being those read whole before the fault.
    cut_short: str | None = None


def _snippet(body: bytes) -> str:
    # Enough of the body to recognise an HTML error page in a log, and no more; a key
    # in it (a garbled updateKey answer, a page echoing the request) is not shown.
    return quote_answer(body, 80)


def _item(attributes: dict[str, str]) -> dict[str, str]:
    # updateKey's item holds the new authkey: as a Secret, whose repr hides it, so that
    # an answer or an item that is a local of a frame in a traceback does not show it
    # (an error tracker prints every frame's locals).
    if "authkey" in attributes:
        attributes["authkey"] = Secret(attributes["authkey"])
    return attributes


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


@contextmanager
def _refused_as_protocol_errors(body: bytes, action: str) -> Iterator[None]:
    """Whatever the parser raises, as the ProtocolError it means for ``action``."""
    try:
        yield
    except DefusedXmlException as exc:
        raise ProtocolError(
            f"{action}: the answer uses forbidden XML ({type(exc).__name__})", action=action
        ) from None
    except (ParseError, ExpatError) as exc:
        raise ProtocolError(
            f"{action}: the answer is not well-formed XML ({exc}): {_snippet(body)!r}",
            action=action,
        ) from None
    except (ValueError, LookupError) as exc:
        # expat refuses what it cannot decode this way: an encoding it does not know
        # (LookupError) or a multi-byte one such as GBK (ValueError). The gateway writes
        # UTF-8; an answer that says otherwise cannot be read, which for a send means
        # its outcome is unknown, never a crash.
        raise ProtocolError(
            f"{action}: the answer could not be decoded ({exc}): {_snippet(body)!r}",
            action=action,
        ) from None


class _Reading:
    """One answer being read off an armed expat parser, in one step or in two.

    The parser keeps its state between :meth:`to_head` and :meth:`to_end`: the bytes fed
    in the second step continue the document of the first, so expat (and defusedxml's
    refusals) see one document, exactly as when it is fed whole.
    """

    __slots__ = ("_body", "_closed", "_expat", "_fed", "_items", "_root", "_strays")

    def __init__(self, body: bytes, expat: Any) -> None:
        self._body = body
        self._expat = expat
        self._fed = 0
        root: list[tuple[str, dict[str, str]]] = []
        items: list[dict[str, str]] = []
        strays: list[str] = []
        ended: list[str] = []
        started = 0

        def start(tag: str, attributes: dict[str, str]) -> None:
            nonlocal started
            # Depth is starts minus ends; the ends are counted by a C-level append, so
            # only one Python call per element is made.
            if started - len(ended) == 1:
                if tag == "Item":
                    items.append(_item(attributes))
                else:
                    # Only its tag: its attributes are no record of ours, and they may
                    # hold a key (updateKey's), which a traceback's locals would show.
                    strays.append(tag)
            elif not started:
                root.append((tag, attributes))
            started += 1

        def closed() -> bool:
            """Whether the root has ended (nothing but a tail may follow)."""
            return started > 0 and started == len(ended)

        self._root = root
        self._items = items
        self._strays = strays
        self._closed = closed
        # Dicts of attributes made by expat itself, rather than pairs walked in Python.
        expat.ordered_attributes = False
        expat.StartElementHandler = start
        expat.EndElementHandler = ended.append
        # Text is of no use in an answer, and ignored rather than gathered.
        expat.CharacterDataHandler = None

    @classmethod
    def of(cls, body: bytes) -> _Reading | None:
        """A reading of ``body`` off an armed parser, or None when this answer must go
        through the tree (see the module docstring)."""
        if b"xmlns" in body or b"xml:" in body:
            return None
        expat = _armed_parser()
        return None if expat is None else cls(body, expat)

    def to_head(self) -> bool:
        """Feed the body until the root and its first Item are read, or the root ended.

        True when the rest may be read later: the root and an Item were read, and bytes
        are left or the root has not ended. Expat reports every complete element in what
        it is fed, so the first step usually reads a few Items besides the root; they are
        kept. A short answer cut before its end is read later too (its end refused then),
        or it would keep none of the Items read whole before the cut (see
        LazyAnswer.salvaged).
        """
        body, expat = self._body, self._expat
        step = _HEAD_STEP
        while self._fed < len(body):
            end = self._fed + step
            # Not final: an element cut at the end of a step is read with the next one.
            expat.Parse(body[self._fed : end], False)
            self._fed = min(end, len(body))
            if self._root and (self._items or self._closed()):
                break
            step *= 2
        return bool(self._root and self._items) and (self._fed < len(body) or not self._closed())

    def head(self) -> tuple[str, dict[str, str]]:
        """The root's tag and attributes, once :meth:`to_head` said the rest may wait."""
        return self._root[0]

    @property
    def items_so_far(self) -> list[dict[str, str]]:
        """The Items read whole so far (each is read at its start tag, attributes whole)."""
        return self._items

    @property
    def has_strays(self) -> bool:
        """Whether a child other than an Item was read so far."""
        return bool(self._strays)

    def to_end(self) -> _Found:
        """Feed the rest of the body, final (expat's own checks of the end included)."""
        if self._expat is None:
            raise RuntimeError("this answer was read to its end already")
        expat, rest = self._expat, memoryview(self._body)[self._fed :]
        # The parser and the bytes are let go whatever happens: an answer is read once.
        self._expat = None
        self._body = b""
        with rest:
            expat.Parse(rest, True)
        tag, attributes = self._root[0]
        return tag, attributes, self._items, self._strays


def _read_fast(body: bytes) -> _Found | None:
    """The root's tag and attributes and its Item children's attributes, or None when
    this answer must go through the tree (see the module docstring)."""
    reading = _Reading.of(body)
    return None if reading is None else reading.to_end()


def _read_tree(body: bytes) -> _Found:
    root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    # The tree is dropped here: its attribute dicts are handed over, not copied.
    items = [_item(child.attrib) for child in root if child.tag == "Item"]
    return root.tag, root.attrib, items, [child.tag for child in root if child.tag != "Item"]


def _unwrapped(body: bytes, action: str) -> bytes:
    """``body`` without a byte order mark or whitespace before the document; an empty
    answer is refused here."""
    # Servers that write their answer from a template (a JSP, say) often put a line break
    # before the <?xml ...?> declaration, which expat refuses anywhere but first: every
    # answer would read as garbled, and every send as unknown.
    body = body.lstrip()
    if body.startswith(_BOM):
        body = body[len(_BOM) :].lstrip()
    if not body.strip():
        raise ProtocolError(f"{action}: the gateway sent an empty answer", action=action)
    # Hidden again: lstrip() gives plain bytes, whose repr shows them in every parsing
    # frame's locals, and the answer may quote a key (see AnswerBody).
    return AnswerBody(body)


def _checked_root(body: bytes, action: str, tag: str, attributes: dict[str, str]) -> int:
    """The result code of a root that answers ``action``; ProtocolError for any other."""
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
        return int(raw_result or "")
    except ValueError:
        raise ProtocolError(
            f"{action}: the answer's result {raw_result!r} is not an integer", action=action
        ) from None


def _check_strays(body: bytes, action: str, items: int, strays: list[str]) -> None:
    """Refuse an accepted answer that holds children other than ``<Item>``.

    Every answer the document shows, for each of its nine actions, holds its records as
    ``<Item>`` children and nothing else, so there is no other child to let through.
    Skipping one (an ``<item>``, a ``<Report>``, a wrapper around the Items) would read
    the answer as "no records": the reports and replies in it would be gone for good, as
    the gateway hands each out once, and an account would seem to have no channel group.
    Text, comments and whitespace between the children hold no record and are not
    looked at. A refusal (any other result) is not checked: its code says what happened.
    """
    if not strays:
        return
    others = "element" if len(strays) == 1 else "elements"
    raise ProtocolError(
        f"{action}: the gateway accepted the request (result 1), but its answer holds "
        f"{len(strays)} child {others} other than <Item> (the first <{strays[0]}>, beside "
        f"{items} <Item>), which this client cannot read as records: {_snippet(body)!r}",
        action=action,
    )


def parse_answer(body: bytes, action: str) -> Answer:
    """Parse ``body`` as the answer to ``action``; raise ProtocolError if it is not one."""
    body = _unwrapped(body, action)
    with _refused_as_protocol_errors(body, action):
        found = _read_fast(body)
        if found is None:
            found = _read_tree(body)
    tag, attributes, items, strays = found
    result = _checked_root(body, action, tag, attributes)
    if result == 1:
        _check_strays(body, action, len(items), strays)
    return Answer(name=action, result=result, items=tuple(items))


class LazyAnswer:
    """An answer whose root is read and checked, and whose Items are read when asked for.

    Made by :func:`parse_head`. :meth:`read_items` reads the rest of the body once; what
    it finds wrong there (malformed or forbidden XML) it raises as a ProtocolError, then
    and every time it is asked again.
    """

    __slots__ = (
        "_body",
        "_error",
        "_items",
        "_reading",
        "_salvaged",
        "has_items",
        "name",
        "result",
    )

    def __init__(
        self,
        action: str,
        result: int,
        *,
        items: tuple[dict[str, str], ...] | None,
        reading: _Reading | None = None,
        body: bytes = b"",
    ) -> None:
        self.name = action
        self.result = result
        #: True when the answer holds at least one Item (known from its head already).
        self.has_items = bool(items) or reading is not None
        self._items = items
        self._reading = reading
        # Only the start is kept, for an error's snippet (one byte more than it shows, so
        # the snippet still says the body went on).
        self._body = body[:81]
        self._error: ProtocolError | None = None
        self._salvaged: tuple[dict[str, str], ...] = ()

    def __repr__(self) -> str:
        state = "read" if self._items is not None else "unread"
        return f"<LazyAnswer {self.name} result={self.result} items {state}>"

    def read_items(self) -> tuple[dict[str, str], ...]:
        """Each Item's attributes, reading the rest of the answer the first time."""
        if self._items is not None:
            return self._items
        if self._error is not None:
            raise self._error
        assert self._reading is not None
        reading, self._reading = self._reading, None
        try:
            with _refused_as_protocol_errors(self._body, self.name):
                try:
                    _, _, items, strays = reading.to_end()
                except (ExpatError, ParseError):
                    # Not well-formed past some point (a body cut short): the Items read
                    # whole before it are kept (see salvaged). Not after a stray child,
                    # which says the Items around it are not what they seem.
                    if not reading.has_strays:
                        self._salvaged = tuple(reading.items_so_far)
                    raise
            _check_strays(self._body, self.name, len(items), strays)
            self._items = tuple(items)
        except ProtocolError as exc:
            self._error = exc
            raise
        return self._items

    @property
    def salvaged(self) -> tuple[dict[str, str], ...]:
        """The Items read whole before the answer turned out not to be well-formed (after
        :meth:`read_items` raised): a truncated batch of reports, which the gateway hands
        out once, keeps the records it did bring. Empty for any other refusal."""
        return self._salvaged


def parse_head(body: bytes, action: str) -> LazyAnswer:
    """Parse ``body`` as the answer to ``action`` far enough to know its result.

    Only an accepted answer (result 1) whose first Item is read before its end, with no
    child other than an Item read so far, leaves the rest for
    :meth:`LazyAnswer.read_items`. Any other
    answer is read whole now and checked in :func:`parse_answer`'s order, so a garbled
    refusal, an empty answer with a bad tail, an HTML page or an answer with children it
    cannot read are the same ProtocolErrors at once. A namespaced answer (read through
    the tree) is read whole too.
    """
    body = _unwrapped(body, action)
    with _refused_as_protocol_errors(body, action):
        reading = _Reading.of(body)
        if reading is not None and reading.to_head():
            tag, attributes = reading.head()
            result = _checked_root(body, action, tag, attributes)
            if result == 1 and not reading.has_strays:
                return LazyAnswer(action, result, items=None, reading=reading, body=body)
        found = _read_tree(body) if reading is None else reading.to_end()
    tag, attributes, items, strays = found
    result = _checked_root(body, action, tag, attributes)
    if result == 1:
        _check_strays(body, action, len(items), strays)
    return LazyAnswer(action, result, items=tuple(items))


def parse_answer_keeping(body: bytes, action: str) -> Answer:
    """:func:`parse_answer`, except that an accepted answer cut short past its first Items
    keeps the Items read whole before the fault (``cut_short`` says what was wrong).

    For answers whose records exist nowhere else: a queue's batch (the gateway hands each
    report out once) and updateKey's new key (the old one stops working). The same keeping
    as a stream's (:attr:`LazyAnswer.salvaged`): read whole, the answer is refused.
    """
    answer = parse_head(body, action)
    try:
        items = answer.read_items()
    except ProtocolError as exc:
        if not answer.salvaged:
            raise
        return Answer(name=action, result=1, items=answer.salvaged, cut_short=exc.message)
    return Answer(name=action, result=answer.result, items=items)
