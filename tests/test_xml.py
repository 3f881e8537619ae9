"""The answer parser accepts what real gateways send and refuses everything else, typed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisix_async import ProtocolError
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
    ],
    ids=["public-sample", "declaration", "bom", "whitespace", "tight-self-close"],
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
    from xml.sax.saxutils import quoteattr

    item = "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items())
    body = f'<xml name="getReply" result="1"><Item{item}/></xml>'.encode()
    assert parse_answer(body, "getReply").items == (attributes,)
