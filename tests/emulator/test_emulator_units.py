"""The pure parts, exhaustively: billing, escaping, form parsing, templates, configs."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections import Counter
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aisix_async.emulator as emulator
from aisix_async.emulator import (
    AccountConfig,
    ChannelGroupConfig,
    EmulatorConfig,
    ManualClock,
    SignConfig,
    message_units,
    units_for_length,
)
from aisix_async.emulator._app import _parse_form
from aisix_async.emulator._queues import ReportMix, ReportQueue
from aisix_async.emulator._validate import ShapeError, render_template
from aisix_async.emulator._xmlout import escape_attr, render_response


@pytest.mark.parametrize(
    ("length", "word", "longword", "units"),
    [(1, 70, 67, 1), (70, 70, 67, 1), (71, 70, 67, 2), (134, 70, 67, 2), (135, 70, 67, 3),
     (71, 70, 64, 2), (128, 70, 64, 2), (129, 70, 64, 3), (1007, 70, 67, 16)],
)  # fmt: skip
def test_units_for_length(length: int, word: int, longword: int, units: int) -> None:
    assert units_for_length(length, word, longword) == units


@given(st.integers(1, 5000), st.integers(1, 200), st.integers(1, 200))
def test_units_cover_the_text_and_never_shrink(length: int, word: int, longword: int) -> None:
    units = units_for_length(length, word, longword)
    assert units >= 1
    assert units_for_length(length + 1, word, longword) >= units
    if length > word:
        assert (units - 1) * longword < length <= units * longword


def test_message_units_counts_code_points() -> None:
    group = ChannelGroupConfig(cgid=1)
    assert message_units("【Aisix】" + "😀" * 63, group) == 1
    assert message_units("【Aisix】" + "😀" * 64, group) == 2


_XML_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs"],
        blacklist_characters=[chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)]
        + ["\ufffe", "\uffff"],
    )
)


@given(_XML_TEXT)
def test_escaped_attributes_read_back_exactly(value: str) -> None:
    body = render_response("getReply", 1, [{"content": value}])
    root = ET.fromstring(body)
    assert root[0].attrib["content"] == value


def test_escape_attr_escapes_markup() -> None:
    assert escape_attr('a&b<c>"d\n') == "a&amp;b&lt;c&gt;&quot;d&#10;"


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=8))
def test_parse_form_agrees_with_parse_qsl(fields: dict[str, str]) -> None:
    encoded = urlencode(fields).encode()
    assert _parse_form(encoded) == dict(parse_qsl(encoded.decode(), keep_blank_values=True))


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.text()), max_size=8),
    st.lists(st.tuples(st.sampled_from("abc"), st.text()), max_size=8),
)
def test_parse_form_keeps_the_first_value_query_before_body(
    query: list[tuple[str, str]], body: list[tuple[str, str]]
) -> None:
    # A servlet's getParameter: query-string values come first, and the first one wins.
    first: dict[str, str] = {}
    for name, value in query + body:
        first.setdefault(name, value)
    assert _parse_form(urlencode(query).encode(), urlencode(body).encode()) == first


def test_parse_form_handles_hand_built_forms() -> None:
    raw = b"ac=1001@100001&c=a+b%2Bc&flag&&empty=&m=1,2&c2=%E6%B5%8B"
    assert _parse_form(raw) == {
        "ac": "1001@100001",
        "c": "a b+c",
        "flag": "",
        "empty": "",
        "m": "1,2",
        "c2": "测",
    }
    with pytest.raises(UnicodeDecodeError):
        _parse_form(b"c=%FF")
    with pytest.raises(UnicodeDecodeError):  # a repeated name is still decoded
        _parse_form(b"c=ok", b"c=%FF")


def test_render_template_substitutes_once_per_row() -> None:
    rows = render_template("{p1}-{p2}-{p1}", {"1": "a{|}{p2}", "2": "x{|}y"}, 2)
    assert rows == ["a-x-a", "{p2}-y-{p2}"]
    with pytest.raises(ShapeError):
        render_template("{p1}", {"1": "a{|}b"}, 3)
    with pytest.raises(ShapeError, match="p2 has 1 values"):
        render_template("{p1}", {"1": "a{|}b", "2": "unused"}, 2)


def test_report_queue_orders_by_due_time_and_hands_out_once() -> None:
    queue = ReportQueue()
    queue.push(5.0, "m1", "a", "DELIVRD")
    queue.push(1.0, "m2", "b", "UNDELIV")
    queue.push(1.0, "m3", "c", "DELIVRD")
    assert queue.pop_due(0.5, 10) == []
    assert queue.pop_due(1.0, 10) == [("1", "m2", "b", "UNDELIV"), ("2", "m3", "c", "DELIVRD")]
    assert queue.due_count(10.0) == 1
    assert queue.pop_due(10.0, 10) == [("3", "m1", "a", "DELIVRD")]
    assert len(queue) == 0


def test_report_mix_follows_its_weights() -> None:
    mix = ReportMix((("A", 3.0), ("B", 1.0), ("C", 0.0)))
    rng = random.Random(1)
    counts = Counter(mix.pick(rng) for _ in range(4000))
    assert counts["C"] == 0
    assert 2800 <= counts["A"] <= 3200


def test_configs_refuse_what_the_gateway_cannot_be() -> None:
    with pytest.raises(ValueError, match="cgid 0"):
        ChannelGroupConfig(cgid=0)
    with pytest.raises(ValueError, match="csid 0"):
        AccountConfig(signs=[SignConfig(csid=5, sign="x")])
    with pytest.raises(ValueError, match="digits"):
        AccountConfig(staff="abc")
    with pytest.raises(ValueError, match="duplicate cgid"):
        AccountConfig(channel_groups=[ChannelGroupConfig(cgid=1), ChannelGroupConfig(cgid=1)])
    with pytest.raises(ValueError, match="duplicate account"):
        EmulatorConfig(accounts=[AccountConfig(), AccountConfig()])
    with pytest.raises(ValueError, match="report_mix"):
        EmulatorConfig(report_mix={"DELIVRD": 0})
    with pytest.raises(ValueError, match="rate"):
        EmulatorConfig(rate=0)


def test_config_defaults_are_the_documents_account() -> None:
    config = EmulatorConfig()
    [account] = config.accounts
    assert (account.ac, account.authkey, account.balance) == (
        "1001@100001",
        "87B01469201D6557C2685137EB3B5DEC",
        Decimal("1000.000"),
    )
    assert [(g.cgid, g.word, g.longword, g.price) for g in account.channel_groups] == [
        (1, 70, 67, Decimal("0.10")),
        (80, 70, 64, Decimal("0.08")),
    ]
    assert config.rate is None
    assert config.effective_burst == 1.0
    assert EmulatorConfig(rate=50).effective_burst == 50.0
    assert EmulatorConfig(rate=0.2).effective_burst == 1.0


def test_money_converters_keep_decimal_exact() -> None:
    assert AccountConfig(balance=0.1).balance == Decimal("0.1")
    assert ChannelGroupConfig(cgid=2, price="0.045").price == Decimal("0.045")


def test_manual_clock() -> None:
    clock = ManualClock(100.0)
    clock.advance(2.5)
    assert clock() == 102.5
    clock.set(50.0)
    assert clock() == 50.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_public_names() -> None:
    assert len(set(emulator.__all__)) == len(emulator.__all__)
    for name in emulator.__all__:
        value = getattr(emulator, name)
        if isinstance(value, type):
            assert value.__module__ == "aisix_async.emulator", name
    assert {"create_app", "serve_emulator", "EmulatorServer", "GatewayState"} <= set(
        emulator.__all__
    )


def test_the_emulator_imports_nothing_from_the_sdk() -> None:
    # An independent reading of the protocol: it may use only its own package.
    import ast
    from pathlib import Path

    package = Path(emulator.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert node.level <= 1, f"{path.name} reaches outside the emulator"
                assert not module.startswith("aisix_async"), f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("aisix_async") for a in node.names), path.name
