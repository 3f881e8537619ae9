"""Records built from answer items: strict where it matters, keeping what they do not name."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisix_async import (
    Balance,
    ChannelGroup,
    DeliveryReport,
    MalformedRecord,
    ProtocolError,
    Reply,
    ReportResult,
    SendReceipt,
    Signature,
)
from aisix_async._core.models import parse_records


def test_msgid_stays_a_string_and_money_a_decimal() -> None:
    receipt = SendReceipt.from_item(
        {"msgid": "652694368707503300", "total": "3", "price": "0.1", "remain": "0.300"}
    )
    assert receipt.msgid == "652694368707503300"
    assert receipt.price == Decimal("0.1") and isinstance(receipt.remain, Decimal)
    assert receipt.cid == ""


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ({"total": "1", "price": "0.1", "remain": "1"}, "lacks the 'msgid'"),
        ({"msgid": "1", "total": "one", "price": "0.1", "remain": "1"}, "non-integer 'total'"),
        ({"msgid": "1", "total": "1", "price": "ten", "remain": "1"}, "non-numeric 'price'"),
        ({"msgid": "1", "total": "1", "price": "NaN", "remain": "1"}, "non-finite 'price'"),
    ],
)
def test_bad_receipts_raise_protocol_error(item: dict[str, str], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        SendReceipt.from_item(item)


def test_reports_keep_unknown_codes_and_extra_attributes() -> None:
    report = DeliveryReport.from_item(
        {"id": "9", "msgid": "1", "mobile": "181", "result": "1", "return": "NEWCODE", "x": "y"}
    )
    assert (report.code, report.result, report.extra) == (
        "NEWCODE",
        ReportResult.FAILED,
        {"x": "y"},
    )
    # A code we do not know, on a report whose result says failed (or delivered), settles
    # its recipient: the gateway hands each report out once, so "pending" would be for good.
    assert report.is_final
    for code in ("DELIVRD", "DTFAILD", "DTFALD", "UNDELIV"):
        assert DeliveryReport.from_item(
            {"msgid": "1", "mobile": "1", "result": "1", "return": code}
        ).is_final
    for result, code in [("2", "MK:0001"), ("1", "ID:0076"), ("2", "")]:
        assert DeliveryReport.from_item(
            {"msgid": "1", "mobile": "1", "result": result, "return": code}
        ).is_final
    # "Not known yet": by its code whatever the result, or by its result for a code we
    # do not know.
    for result in ("0", "1", "2"):
        for code in ("ACCEPTD", "UNKNOWN", "ERRBUSY"):
            assert not DeliveryReport.from_item(
                {"msgid": "1", "mobile": "1", "result": result, "return": code}
            ).is_final
    assert not DeliveryReport.from_item(
        {"msgid": "1", "mobile": "1", "result": "0", "return": "MK:0001"}
    ).is_final


def test_report_with_unknown_result_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown result 7"):
        DeliveryReport.from_item({"msgid": "1", "mobile": "1", "result": "7", "return": "DELIVRD"})


def test_reply_time_is_milliseconds_utc() -> None:
    reply = Reply.from_item({"id": "1", "time": "1373883378000", "mobile": "137", "content": "xx"})
    assert reply.time.isoformat() == "2013-07-15T10:16:18+00:00"
    with pytest.raises(ProtocolError, match="impossible time"):
        Reply.from_item({"time": str(10**30), "mobile": "1"})


def test_extra_is_not_part_of_equality() -> None:
    a = Balance.from_item({"cid": "1", "sid": "2", "remain": "5"})
    b = Balance.from_item({"cid": "1", "sid": "2", "remain": "5", "new": "x"})
    assert a == b and b.extra == {"new": "x"}


def test_channel_group_and_signature() -> None:
    group = ChannelGroup.from_item(
        {"cid": "1", "sid": "2", "cgid": "80", "word": "70", "longword": "64", "price": "0.08"}
    )
    assert (group.cgid, group.word, group.longword, group.price) == (80, 70, 64, Decimal("0.08"))
    sign = Signature.from_item({"csid": "0", "sign": "【Aisix】"})
    assert (sign.csid, sign.sign) == (0, "【Aisix】")


_USUAL = st.fixed_dictionaries(
    {
        "id": st.text(max_size=5),
        "msgid": st.text(max_size=5),
        "mobile": st.text(max_size=5),
        "result": st.sampled_from(["0", "1", "2"]),
        "return": st.sampled_from(["DELIVRD", "UNDELIV", "ACCEPTD", "x"]),
    }
)
_ODD = st.one_of(
    _USUAL.map(lambda item: {**item, "result": "7"}),
    _USUAL.map(lambda item: {**item, "note": "extra"}),
    _USUAL.map(lambda item: {k: v for k, v in item.items() if k != "id"}),
    _USUAL.map(lambda item: {k: v for k, v in item.items() if k != "mobile"}),
)


@given(st.lists(_USUAL, max_size=20))
def test_a_batch_of_usual_reports_is_read_whole_as_item_by_item(
    items: list[dict[str, str]],
) -> None:
    whole = DeliveryReport.from_items(items)
    assert whole == [DeliveryReport.from_item(item) for item in items]
    assert whole is not None
    for report, item in zip(whole, items, strict=True):
        assert type(report) is DeliveryReport
        assert type(report.result) is ReportResult
        assert report.extra == {} and type(report.extra) is dict
        assert hash(report) == hash(DeliveryReport.from_item(item))
        assert attrs.evolve(report, code="X").code == "X"
    # Each report has an extra of its own, as from_item gives.
    assert len({id(report.extra) for report in whole}) == len(whole)


@given(st.lists(_USUAL, max_size=10), _ODD, st.lists(_USUAL, max_size=10))
def test_a_batch_with_one_unusual_item_is_left_to_item_by_item(
    before: list[dict[str, str]], odd: dict[str, str], after: list[dict[str, str]]
) -> None:
    items = [*before, odd, *after]
    assert DeliveryReport.from_items(items) is None
    parsed = parse_records(
        "getSendState", items, DeliveryReport.from_item, DeliveryReport.from_items
    )
    by_item = parse_records("getSendState", items, DeliveryReport.from_item)
    assert parsed == by_item
    if odd.get("result") == "7" or "mobile" not in odd:
        assert isinstance(parsed[len(before)], MalformedRecord)
