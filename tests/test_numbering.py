"""Numbering policies: which numbers a client takes, checked before anything is sent."""

from __future__ import annotations

import sys
import typing
from typing import Any

import pytest
from helpers import ACCOUNT, KEY

from aisix_async import AisixClient, ExtraNotInstalledError, Numbering, ValidationError
from aisix_async._core.chunking import OncePlanner, PlannedChunk, RejectedItem, plan
from aisix_async.validation import NUMBERING, check_mobile, check_numbering


@pytest.mark.parametrize(
    ("mobile", "lenient", "cn"),
    [
        ("13900000001", True, True),
        ("19912345678", True, True),
        ("1860000737", True, False),  # 10 digits: a digit dropped
        ("1390000000012345", True, False),  # 16 digits
        ("12900000001", True, False),  # no mainland mobile starts 12
        ("+8613900000001", True, False),
        ("139 0000 0001", False, False),
    ],
)
def test_lenient_and_cn_mobile(mobile: str, lenient: bool, cn: bool) -> None:
    for policy, ok in (("lenient", lenient), ("cn-mobile", cn)):
        if ok:
            assert check_mobile(mobile, policy) == mobile
        else:
            with pytest.raises(ValidationError, match="mobile number"):
                check_mobile(mobile, policy)


def test_the_cn_mobile_refusal_points_to_e164() -> None:
    with pytest.raises(ValidationError, match="e164"):
        check_mobile("1860000737", "cn-mobile")


@pytest.mark.parametrize(
    ("mobile", "sent"),
    [
        ("13900000001", "13900000001"),
        ("+86 139 0000 0001", "13900000001"),  # mainland mobiles go in national form
        ("+44 7911 123456", "+447911123456"),
        ("+1 (650) 253-0000", "+16502530000"),
    ],
)
def test_e164_checks_and_normalises(mobile: str, sent: str) -> None:
    assert check_mobile(mobile, "e164") == sent


@pytest.mark.parametrize("mobile", ["1860000737", "+44 7911", "+999 12345678", "hello", "1,2"])
def test_e164_refuses_what_is_not_a_valid_number(mobile: str) -> None:
    with pytest.raises(ValidationError, match="mobile number"):
        check_mobile(mobile, "e164")


def test_the_client_default_is_lenient_and_a_bad_policy_is_refused() -> None:
    assert AisixClient(ACCOUNT, KEY).numbers == "lenient"
    assert AisixClient(ACCOUNT, KEY, numbers="cn-mobile").numbers == "cn-mobile"
    with pytest.raises(ValidationError, match="numbers must be one of"):
        AisixClient(ACCOUNT, KEY, numbers="cn")


def test_the_policies_are_a_closed_type_and_an_unknown_one_is_a_validation_error() -> None:
    # AisixClient(numbers=...) is typed with the Literal, so a typo fails mypy.
    assert typing.get_args(Numbering) == NUMBERING == ("lenient", "cn-mobile", "e164")
    assert check_numbering("cn-mobile") == "cn-mobile"
    # Called without a type checker, check_mobile raised a KeyError for a policy it
    # did not know.
    with pytest.raises(ValidationError, match="numbers must be one of 'lenient'"):
        check_mobile("13900000001", "cn_mobile")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="numbers must be one of"):
        check_mobile("13900000001", ["lenient"])  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", NUMBERING)
@pytest.mark.parametrize(
    ("mobile", "shown"),
    [(18100002707, "18100002707 must be a string, got int"), (None, "None must be a string")],
)
def test_a_number_that_is_no_string_is_said_to_be_no_string(
    policy: Numbering, mobile: object, shown: str
) -> None:
    # "mobile number 18100002707 must be 3 to 20 digits" contradicted itself.
    with pytest.raises(ValidationError, match=f"^mobile number {shown}"):
        check_mobile(mobile, policy)


def test_e164_without_its_extra_is_a_typed_error_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "phonenumbers", None)  # import fails as if absent
    with pytest.raises(ExtraNotInstalledError, match=r"aisix-async\[phonenumbers\]") as raised:
        AisixClient(ACCOUNT, KEY, numbers="e164")
    assert isinstance(raised.value, ImportError)
    # The package is not on PyPI yet: the hint also gives the form the README uses.
    assert "pip install '.[phonenumbers]'" in str(raised.value)


def test_the_bulk_planner_applies_the_policy_on_its_fast_path() -> None:
    items: list[Any] = ["13900000001", "1860000737", "13900000002"]
    for feed_many in (False, True):
        planner = OncePlanner("hi", numbering="cn-mobile")
        planned = (
            planner.feed_many(items) + planner.finish() if feed_many else list(plan(planner, items))
        )
        rejected = [p for p in planned if isinstance(p, RejectedItem)]
        chunks = [p for p in planned if isinstance(p, PlannedChunk)]
        assert [r.mobile for r in rejected] == ["1860000737"]
        assert [m for c in chunks for m in c.mobiles] == ["13900000001", "13900000002"]


def test_the_bulk_planner_sends_e164_numbers_normalised() -> None:
    planner = OncePlanner("hi", numbering="e164")
    planned = list(plan(planner, ["+86 139 0000 0001", "+44 7911 123456"]))
    assert [m for c in planned if isinstance(c, PlannedChunk) for m in c.mobiles] == [
        "13900000001",
        "+447911123456",
    ]
