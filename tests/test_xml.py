"""The answer parser accepts what real gateways send and refuses everything else, typed."""

from __future__ import annotations

import contextlib
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisix_async import ProtocolError
from aisix_async._core import xml as xml_module
from aisix_async._core.xml import parse_answer

SAMPLE = (
    b'<xml name="sendOnce" result="1"><Item cid="501328330001" sid="1001" '
    b'msgid="652694368707503300" total="1" price="0.1" remain="0.300" /></xml>'
)


@pytest.mark.parametrize(
    "body",
    [
        SAMPLE,
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + SAMPLE,
        b"\xef\xbb\xbf" + SAMPLE,
        b"\r\n  " + SAMPLE + b"\n\n",
        SAMPLE.replace(b" />", b"/>"),
        b'\r\n<?xml version="1.0" encoding="UTF-8"?>' + SAMPLE,
        b'\xef\xbb\xbf\n  <?xml version="1.0"?>\n' + SAMPLE,
    ],
    ids=[
        "public-sample",
        "declaration",
        "bom",
        "whitespace",
        "tight-self-close",
        "line-break-before-declaration",
        "bom-then-whitespace-then-declaration",
    ],
)
def test_real_world_shapes_parse(body: bytes) -> None:
    answer = parse_answer(body, "sendOnce")
    assert (answer.name, answer.result) == ("sendOnce", 1)
    assert answer.items == (
        {
            "cid": "501328330001",
            "sid": "1001",
            "msgid": "652694368707503300",
            "total": "1",
            "price": "0.1",
            "remain": "0.300",
        },
    )


def test_failure_answer_has_no_items() -> None:
    answer = parse_answer(b'<xml name="getReply" result="-3"/>', "getReply")
    assert (answer.result, answer.items) == (-3, ())


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<xml name="sendOnce" result="&lol2;"/>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<xml name="sendOnce" result="1"><Item msgid="&ext;"/></xml>"""


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (BOMB, "forbidden XML"),
        (EXTERNAL, "forbidden XML"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "expected an <xml> answer"),
        (b"", "empty answer"),
        (b"   \n", "empty answer"),
        (SAMPLE[:40], "not well-formed"),
        (b'<xml name="getBalance" result="1"/>', "named 'getBalance'"),
        (b'<xml result="1"/>', "named None"),
        (b'<xml name="sendOnce" result="ok"/>', "not an integer"),
        (b'<xml name="sendOnce"/>', "not an integer"),
    ],
    ids=[
        "entity-bomb",
        "external-entity",
        "html",
        "empty",
        "blank",
        "truncated",
        "wrong-name",
        "no-name",
        "bad-result",
        "no-result",
    ],
)
def test_bad_answers_raise_protocol_error(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as caught:
        parse_answer(body, "sendOnce")
    assert caught.value.action == "sendOnce"


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0" encoding="GBK"?><xml name="sendOnce" result="1"/>'.encode("gbk"),
        b'<?xml version="1.0" encoding="no-such-codec"?><xml name="sendOnce" result="1"/>',
    ],
    ids=["multi-byte", "unknown"],
)
def test_an_answer_in_an_encoding_expat_cannot_read_is_a_protocol_error(body: bytes) -> None:
    # expat raises ValueError or LookupError for these, not a parse error: for a send that
    # escaped as a crash, with no unknown outcome.
    with pytest.raises(ProtocolError, match="could not be decoded"):
        parse_answer(body, "sendOnce")
    with pytest.raises(ProtocolError, match="could not be decoded"):
        xml_module.parse_head(body, "sendOnce").read_items()


# -- an accepted answer whose children are not all <Item> -------------------------------

NINE_ACTIONS = [
    "sendOnce",
    "sendBatch",
    "sendParam",
    "getSendState",
    "getReply",
    "getBalance",
    "updateKey",
    "getChannelGroup",
    "getSign",
]


@pytest.mark.parametrize("action", NINE_ACTIONS)
@pytest.mark.parametrize(
    ("children", "found"),
    [
        (b'<item id="1" msgid="9" mobile="13800000001" result="2" return="DELIVRD"/>', "<item>"),
        (b'<Report id="1" msgid="9" mobile="13800000001" result="2"/>', "<Report>"),
        (b'<ITEM cid="1" sid="2" cgid="1" word="70" longword="67" price="0.1"/>', "<ITEM>"),
        (b'<Items><Item id="1"/><Item id="2"/></Items>', "<Items>"),
        (b'<Item id="1"/>\n<Item id="2"/><item id="3"/><Other/>', "2 child elements"),
        # Namespaced, so read through the tree: the Item of another namespace is not ours.
        (b'<g:Item xmlns:g="urn:g" id="1"/>', "<{urn:g}Item>"),
    ],
    ids=["lower-case", "other-name", "upper-case", "wrapper", "beside-items", "namespaced"],
)
def test_an_accepted_answer_with_children_other_than_item_is_a_protocol_error(
    action: str, children: bytes, found: str
) -> None:
    # Read as no records, such an answer was an empty list: for getSendState and
    # getReply the records in it were gone for good (handed out once), and an account
    # seemed to have no channel group.
    body = f'<xml name="{action}" result="1">'.encode() + children + b"</xml>"
    for parse in (parse_answer, lambda b, a: xml_module.parse_head(b, a).read_items()):
        with pytest.raises(ProtocolError, match="other than <Item>") as caught:
            parse(body, action)
        assert found in caught.value.message
        assert caught.value.action == action
        # What was found is quoted, as the other refusals quote the answer.
        assert f'<xml name="{action}" result="1">' in caught.value.message


def test_an_answer_with_children_other_than_item_is_quoted_without_its_key() -> None:
    key = "0123456789ABCDEF0123456789ABCDEF"
    body = f'<xml name="updateKey" result="1"><item cid="c" sid="s" authkey="{key}"/></xml>'
    with pytest.raises(ProtocolError, match="<item>") as caught:
        parse_answer(body.encode(), "updateKey")
    assert key not in str(caught.value) and key[:8] not in str(caught.value)


def test_text_comments_and_white_space_between_items_are_not_children() -> None:
    body = (
        b'<xml name="getReply" result="1">\n  <!-- two replies -->\n'
        b'  <Item id="1"/>\r\n some text <?pi x?>\t<Item id="2"/>\n</xml>'
    )
    assert parse_answer(body, "getReply").items == ({"id": "1"}, {"id": "2"})
    assert xml_module.parse_head(body, "getReply").read_items() == ({"id": "1"}, {"id": "2"})


def test_a_refusal_with_children_other_than_item_is_read_as_its_code() -> None:
    # Its result code says what happened; nothing was handed out.
    body = b'<xml name="getSendState" result="-2"><error text="wrong key"/></xml>'
    assert parse_answer(body, "getSendState").result == -2
    assert xml_module.parse_head(body, "getSendState").result == -2


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_another_exception(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_answer(body, "sendOnce")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30),
        max_size=5,
    )
)
def test_attribute_values_round_trip_through_escaping(attributes: dict[str, str]) -> None:
    item = "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items())
    body = f'<xml name="getReply" result="1"><Item{item}/></xml>'.encode()
    assert parse_answer(body, "getReply").items == (attributes,)


# -- the fast reading against defusedxml's tree ------------------------------------------


def _by_tree(body: bytes) -> tuple[str, dict[str, str], list[dict[str, str]], list[str]] | str:
    """What defusedxml's tree says of ``body``: the root, its Items and the tags of its
    other children, or the error kind."""
    from defusedxml import DefusedXmlException

    try:
        return xml_module._read_tree(body)
    except DefusedXmlException:
        return "forbidden"
    except ParseError:
        return "malformed"


def _by_fast(
    body: bytes,
) -> tuple[str, dict[str, str], list[dict[str, str]], list[str]] | str | None:
    from defusedxml import DefusedXmlException

    try:
        return xml_module._read_fast(body)
    except DefusedXmlException:
        return "forbidden"
    except ExpatError:
        return "malformed"


_NAME = st.sampled_from(["xml", "Item", "Other", "a"])
_VALUE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    """Small documents shaped like answers, some of them wrong (nesting, text, tags)."""

    def element(depth: int) -> str:
        name = draw(_NAME)
        attributes = draw(st.dictionaries(st.sampled_from(["id", "msgid", "x"]), _VALUE))
        head = name + "".join(f" {k}={quoteattr(v)}" for k, v in attributes.items())
        children = draw(st.integers(0, 3 if depth < 2 else 0))
        if not children:
            return f"<{head}/>"
        inner = "".join(
            element(depth + 1) + draw(st.sampled_from(["", "\n", " text "]))
            for _ in range(children)
        )
        return f"<{head}>{inner}</{name}>"

    prologue = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>\n']))
    body = (prologue + element(0)).encode()
    # Now and then a body cut short: expat must say so on both paths alike.
    cut = draw(st.integers(0, len(body)))
    return body[:cut] if draw(st.booleans()) and cut else body


@given(_documents())
def test_the_fast_reading_finds_what_the_tree_finds(body: bytes) -> None:
    assert _by_fast(body) == _by_tree(body)


@pytest.mark.parametrize("body", [BOMB, EXTERNAL, b"<!DOCTYPE xml><xml/>"])
def test_the_fast_reading_refuses_what_defusedxml_refuses(body: bytes) -> None:
    assert _by_fast(body) == "forbidden"


def test_namespaced_answers_are_read_through_the_tree() -> None:
    body = (
        b'<xml name="getReply" result="1" xmlns:g="urn:g">'
        b'<Item id="1" g:extra="kept" mobile="13800000001"/></xml>'
    )
    assert xml_module._read_fast(body) is None
    answer = parse_answer(body, "getReply")
    assert answer.items == ({"id": "1", "{urn:g}extra": "kept", "mobile": "13800000001"},)
    # Namespace syntax in a refused document is refused all the same.
    assert _by_tree(BOMB.replace(b'name="sendOnce"', b'xmlns="urn:g"')) == "forbidden"


def test_answers_are_read_through_the_tree_when_defusedxml_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A defusedxml whose parser is not armed as checked for is never read around.
    monkeypatch.setattr(xml_module, "_armed_parser", lambda: None)
    assert xml_module._read_fast(SAMPLE) is None
    assert parse_answer(SAMPLE, "sendOnce").items[0]["msgid"] == "652694368707503300"
    with pytest.raises(ProtocolError, match="forbidden XML"):
        parse_answer(BOMB, "sendOnce")


def test_the_armed_parser_has_every_refusal() -> None:
    expat = xml_module._armed_parser()
    assert expat is not None
    for name in xml_module._REFUSALS:
        assert getattr(expat, name) is not None


# -- a poll's answer read in two steps: its head now, its items later ---------------------


def _items(count: int) -> bytes:
    return b"".join(
        f'<Item id="{n}" msgid="65269436870750{n:04d}" mobile="138{n:08d}" result="2" '
        f'return="DELIVRD"/>\n'.encode()
        for n in range(count)
    )


def _poll_answer(count: int, *, tail: bytes = b"</xml>", prologue: bytes = b"") -> bytes:
    return prologue + b'<xml name="getSendState" result="1">\n' + _items(count) + tail


def test_a_long_answer_leaves_its_items_for_later_and_reads_them_alike() -> None:
    body = _poll_answer(2000)
    answer = xml_module.parse_head(body, "getSendState")
    assert (answer.name, answer.result, answer.has_items) == ("getSendState", 1, True)
    assert "unread" in repr(answer)
    items = answer.read_items()
    assert items == parse_answer(body, "getSendState").items
    assert len(items) == 2000 and items[-1]["id"] == "1999"
    # Read once; asked again, the same items.
    assert answer.read_items() is items


@pytest.mark.parametrize(
    "body",
    [
        b'<xml name="getSendState" result="1"/>',
        b'<xml name="getSendState" result="1"><Item id="1"/></xml>',
        _poll_answer(3),
        # Namespaced: read through the tree, whole.
        _poll_answer(50).replace(b'result="1"', b'result="1" xmlns:g="urn:g"'),
    ],
    ids=["empty", "one-item", "short", "namespaced"],
)
def test_short_empty_and_namespaced_answers_are_read_whole_at_once(body: bytes) -> None:
    answer = xml_module.parse_head(body, "getSendState")
    assert "unread" not in repr(answer)
    assert answer.read_items() == parse_answer(body, "getSendState").items
    assert answer.has_items == bool(answer.read_items())


@pytest.mark.parametrize(
    ("garbage", "match"),
    [
        (b"<Item id=", "not well-formed"),
        (b"<Item id='x' id='y'/>", "not well-formed"),
        (b"</Item>", "not well-formed"),
        # Forbidden XML where the items are: a DTD or an entity is not even XML there,
        # and an entity never declared (none can be: the DTD is refused) is undefined.
        (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "not well-formed"),
        (b'<!ENTITY lol "lol">', "not well-formed"),
        (b'<Item msgid="&ext;"/>', "not well-formed"),
        # Well-formed, but no Item: the answer is not read as the Items around it.
        (b'<item id="x" msgid="9" mobile="13800000000"/>', "other than <Item>.*first <item>"),
    ],
    ids=[
        "truncated-item",
        "duplicate-attribute",
        "stray-end",
        "dtd",
        "entity",
        "undefined",
        "not-an-item",
    ],
)
def test_garbage_after_a_good_head_is_a_protocol_error_when_the_items_are_read(
    garbage: bytes, match: str
) -> None:
    body = _poll_answer(500, tail=garbage + _items(500) + b"</xml>")
    answer = xml_module.parse_head(body, "getSendState")
    assert (answer.result, answer.has_items) == (1, True)
    for _ in range(2):
        # Every time it is asked: a garbled answer never turns into an empty one.
        with pytest.raises(ProtocolError, match=match) as caught:
            answer.read_items()
        assert caught.value.action == "getSendState"
    # Read whole, the same answer is refused alike.
    with pytest.raises(ProtocolError, match=match):
        parse_answer(body, "getSendState")


def test_a_dtd_before_the_root_is_refused_with_the_head() -> None:
    # Its entity is used only far into the items, but the DTD itself comes first.
    dtd = b'<!DOCTYPE xml [<!ENTITY lol "lol">]>\n'
    body = _poll_answer(500, prologue=dtd, tail=b'<Item id="&lol;"/></xml>')
    with pytest.raises(ProtocolError, match="forbidden XML"):
        xml_module.parse_head(body, "getSendState")


def test_a_child_other_than_item_among_the_first_items_is_refused_with_the_head() -> None:
    # The answer is known to be refused before its rest is read: not left for later.
    body = _poll_answer(500).replace(b'<Item id="2" ', b'<Report id="2" ', 1)
    with pytest.raises(ProtocolError, match="first <Report>, beside 499 <Item>"):
        xml_module.parse_head(body, "getSendState")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # A refusal (result not 1) is read whole: a garbled one fails now, as ever.
        (_poll_answer(500).replace(b'result="1"', b'result="-3"')[:-3], "not well-formed"),
        (_poll_answer(500)[:60], "not well-formed"),
        (_poll_answer(500).replace(b"getSendState", b"getReply", 1), "named 'getReply'"),
        (b"<html>" + b"<p>bad gateway</p>" * 200 + b"</html>", "expected an <xml> answer"),
        (b"", "empty answer"),
    ],
    ids=["garbled-refusal", "cut-in-first-item", "wrong-name", "html", "empty"],
)
def test_what_is_refused_before_the_items_is_refused_by_the_head(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        xml_module.parse_head(body, "getSendState")


def test_a_refusal_with_items_is_read_whole() -> None:
    body = _poll_answer(500).replace(b'result="1"', b'result="-3"')
    answer = xml_module.parse_head(body, "getSendState")
    assert answer.result == -3 and "unread" not in repr(answer)


@st.composite
def _long_answers(draw: st.DrawFn) -> bytes:
    """Answers long enough to be read in two steps, some garbled somewhere, some cut."""
    body = _poll_answer(draw(st.integers(1, 60)))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"<", b"&x;", b"<!DOCTYPE x>", b'"'])) + body[at:]
    if draw(st.booleans()):
        body = body[: draw(st.integers(1, len(body)))]
    return body


@given(_long_answers())
def test_two_steps_find_what_one_finds(body: bytes) -> None:
    try:
        whole: object = parse_answer(body, "getSendState").items
    except ProtocolError:
        whole = "refused"
    try:
        answer = xml_module.parse_head(body, "getSendState")
        steps: object = answer.read_items()
    except ProtocolError:
        steps = "refused"
    assert steps == whole
