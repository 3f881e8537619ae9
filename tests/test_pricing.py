"""Estimates before sending: the unit rule, the cache, and agreement with what is charged.

The emulator's ledger and balance are the judge: an estimate must equal, to the unit and
the fen, what the gateway actually charged for the same send.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from helpers import client_for, numbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisix_async import (
    BalanceTooLowError,
    ChannelGroup,
    Signature,
    ValidationError,
    count_units,
)
from aisix_async._core.billing import PriceBook, tally
from aisix_async._features.estimate import check_affordable

pytestmark = pytest.mark.anyio


# -- the unit rule (pure) ---------------------------------------------------------------


@given(st.text(max_size=400), st.integers(1, 200), st.integers(1, 200))
def test_count_units_is_one_up_to_word_then_ceiling_of_longword(
    text: str, word: int, longword: int
) -> None:
    expected = 1 if len(text) <= word else math.ceil(len(text) / longword)
    assert count_units(text, word, longword) == expected


@pytest.mark.parametrize(
    ("length", "units"),
    [(0, 1), (1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (1007, 16)],
)
def test_count_units_at_the_boundaries_of_70_67(length: int, units: int) -> None:
    assert count_units("x" * length) == units
    # Code points, not bytes: a Chinese character is one character, as the operators count.
    assert count_units("短" * length) == units


def test_count_units_refuses_a_nonsense_group() -> None:
    with pytest.raises(ValidationError):
        count_units("hi", 0, 67)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((123,), "text must be a string, got int"),
        ((None,), "text must be a string, got NoneType"),
        ((b"hello",), "text must be a string, got bytes"),
        ((["hello"],), "text must be a string, got list"),
        (("hi", -1, 67), "word must be at least 1, got -1"),
        (("hi", 70, 0), "longword must be at least 1, got 0"),
        (("hi", math.nan, 67), "word must be an integer, got nan"),
        (("x" * 100, 70, math.nan), "longword must be an integer, got nan"),
        (("hi", 70.5, 67), "word must be an integer, got 70.5"),
        (("hi", math.inf, 67), "word must be an integer, got inf"),
        (("hi", "70", 67), "word must be an integer, got '70'"),
        (("hi", True, 67), "word must be an integer, got True"),
    ],
)
def test_count_units_refuses_what_it_cannot_count(args: tuple[Any, ...], says: str) -> None:
    # A TypeError naming len() or "<", or a count of 1 (or NaN) for any text, before.
    with pytest.raises(ValidationError) as caught:
        count_units(*args)
    assert caught.value.message == says


def test_tally_counts_recipients_and_extremes() -> None:
    counted = tally([("a" * 60, 3), ("b" * 140, 2), ("c", 0)], word=70, longword=67, signature="S")
    assert (counted.min_units, counted.max_units) == (1, 3)
    assert counted.total_units == 3 * 1 + 2 * 3
    assert counted.messages == 5


# -- the cache ----------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_price_book_fetches_once_per_ttl() -> None:
    calls = {"groups": 0, "signs": 0}

    async def groups() -> list[ChannelGroup]:
        calls["groups"] += 1
        return [ChannelGroup(cid="c", sid="s", cgid=7, word=70, longword=67, price=Decimal("0.05"))]

    async def signs() -> list[Signature]:
        calls["signs"] += 1
        return [
            Signature(cid="c", sid="s", csid=0, sign="【X】"),
            Signature(cid="c", sid="s", csid=3, sign="【Longer】"),
        ]

    clock = _Clock()
    book = PriceBook(groups, signs, ttl=60.0, clock=clock)
    assert (await book.group(None)).cgid == 7
    assert (await book.group(7)).cgid == 7
    assert (await book.signature(3)).sign == "【Longer】"
    # An unknown csid is signed with the default, as the gateway does.
    assert (await book.signature(999)).csid == 0
    assert calls == {"groups": 1, "signs": 1}
    clock.now += 59.9
    await book.groups()
    assert calls["groups"] == 1
    clock.now += 0.2
    await book.groups()
    await book.signs()
    assert calls == {"groups": 2, "signs": 2}
    book.invalidate()
    await book.groups()
    assert calls["groups"] == 3
    with pytest.raises(ValidationError, match="cgid 8 is not one"):
        await book.group(8)


# -- against the emulator -----------------------------------------------------------------


# Signature "【Aisix】" is 7 characters: these lengths put signed texts at 69-71 (the
# word boundary), 133-135 and 200-202 (longword boundaries), and around the 1000 cap.
_BOUNDARY_LENGTHS = [1, 62, 63, 64, 126, 127, 128, 193, 194, 195, 999, 1000]
_CHARS = {"ascii": "a", "chinese": "短", "mixed": "a短"}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    length=st.sampled_from(_BOUNDARY_LENGTHS),
    kind=st.sampled_from(sorted(_CHARS)),
    recipients=st.integers(1, 5),
    csid=st.sampled_from([None, 0, 101, 555]),
)
async def test_estimate_equals_what_sendonce_is_charged(
    emulator: Any, length: int, kind: str, recipients: int, csid: int | None
) -> None:
    emulator.state.reset()
    content = (_CHARS[kind] * length)[:length]
    async with client_for(emulator, retry=None) as client:
        before = (await client.get_balance()).remain
        guess = await client.estimate(content, recipients=recipients, csid=csid)
        receipt = await client.send_once(numbers(recipients), content, csid=csid)
        after = (await client.get_balance()).remain
    ledger = emulator.state.messages()
    assert len(ledger) == recipients
    assert guess.total_units == receipt.total == sum(r.units for r in ledger)
    assert guess.units_per_message == ledger[0].units
    assert guess.cost == before - after == sum(r.cost for r in ledger)
    assert guess.balance == before
    assert guess.enough
    assert guess.csid == ledger[0].csid
    assert ledger[0].text == guess.signature + content


@pytest.mark.parametrize("cgid", [None, 80])
async def test_estimate_of_batch_and_template_sends_equals_the_charge(
    emulator: Any, cgid: int | None
) -> None:
    contents = ["hi", "短" * 64, "x" * 130, "混合 mixed text " * 9]
    mobiles = numbers(len(contents))
    template = "您好 {p1}, your code is {p2}." + "." * 30
    values = [["A", "1"], ["张三" * 10, "2" * 9]]
    rows = list(zip(mobiles[:2], values, strict=True))
    pairs = list(zip(mobiles, contents, strict=True))
    async with client_for(emulator, retry=None) as client:
        start = (await client.get_balance()).remain
        batch_guess = await client.estimate(messages=pairs, cgid=cgid)
        await client.send_batch(pairs, cgid=cgid)
        middle = (await client.get_balance()).remain
        param_guess = await client.estimate(template, rows=rows, cgid=cgid)
        await client.send_param(template, rows, cgid=cgid, csid=101)
        end = (await client.get_balance()).remain
        signed_guess = await client.estimate(template, rows=rows, cgid=cgid, csid=101)
    ledger = emulator.state.messages()
    assert batch_guess.cost == start - middle
    assert batch_guess.total_units == sum(r.units for r in ledger[: len(contents)])
    assert batch_guess.units_per_message is None
    assert (batch_guess.min_units, batch_guess.max_units) == (1, 3)
    # The template estimate above used the default signature; sent with csid 101, the
    # estimate for csid 101 is what must agree.
    assert signed_guess.cost == middle - end
    assert signed_guess.total_units == sum(r.units for r in ledger[len(contents) :])
    assert param_guess.csid == 0
    assert param_guess.cgid == (cgid or 1)


async def test_estimate_uses_the_client_defaults_and_refuses_bad_input(emulator: Any) -> None:
    async with client_for(emulator, retry=None, cgid=80, csid=101) as client:
        guess = await client.estimate("hello", recipients=1000)
        assert (guess.cgid, guess.csid, guess.signature) == (80, 101, "【AisixShop】")
        assert guess.cost == Decimal("0.08") * 1000
        # A call's 0 is the account's default group (its first), over the client's 80,
        # priced and charged as such.
        emulator.state.reset()
        zero = await client.estimate("hello", recipients=2, cgid=0, csid=0)
        assert (zero.cgid, zero.csid) == (1, 0)
        before = (await client.get_balance()).remain
        await client.send_once(numbers(2), "hello", cgid=0, csid=0)
        assert zero.cost == before - (await client.get_balance()).remain
        with pytest.raises(ValidationError):
            await client.estimate("", recipients=3)
        with pytest.raises(ValidationError):
            await client.estimate("x" * 1001)
        with pytest.raises(ValidationError):
            await client.estimate("hello", recipients=-1)
        with pytest.raises(ValidationError, match="cgid 3"):
            await client.estimate("hello", cgid=3)
        with pytest.raises(ValidationError):
            await client.estimate("no placeholder", rows=[("13900000000", ["a"])])


@pytest.mark.parametrize(
    ("args", "options", "says"),
    [
        ((123,), {"recipients": 5}, "content must be a string, got int"),
        ((None,), {"recipients": 5}, "nothing to estimate"),
        (("hi",), {"recipients": -3}, "recipients must be a whole number >= 0, got -3"),
        (("hi",), {"recipients": math.nan}, "recipients must be a whole number >= 0, got nan"),
        (("hi",), {"recipients": "5"}, "recipients must be a whole number >= 0, got '5'"),
        ((), {"messages": "13900000001,hi"}, "messages must be a list, not one string"),
        ((), {"messages": 5}, "messages must be a list, got int"),
        ((), {"messages": [("13900000001",)]}, "message #0 must be a (mobile, content) pair"),
        ((), {"messages": ["hi", None]}, "message #1 must be a string, got NoneType"),
        ((), {"messages": [("13900000001", 7)]}, "message #0 must be a string, got int"),
        (("Hi {p1}",), {"rows": "13900000001,Ann"}, "rows must be a list, not one string"),
        (("Hi {p1}",), {"rows": [None]}, "message #0 must be a (mobile, content) pair"),
        (("Hi {p1}",), {"rows": 3}, "rows must be a list, got int"),
        (("hi",), {"cgid": math.nan}, "cgid must be an integer from 0 (the default) to 2147483647"),
        (("hi",), {"csid": -1}, "csid must be an integer from 0 (the default) to 2147483647"),
    ],
)
async def test_estimate_refuses_bad_input_with_validation_error(
    emulator: Any, args: tuple[Any, ...], options: dict[str, Any], says: str
) -> None:
    # A str for messages was priced one message per character; an int, a 1-tuple or NaN
    # failed with TypeError or IndexError, not the SDK's ValidationError.
    async with client_for(emulator, retry=None) as client:
        with pytest.raises(ValidationError) as caught:
            await client.estimate(*args, **options)
    assert says in caught.value.message


async def test_estimate_takes_pairs_as_lists_as_send_batch_does(emulator: Any) -> None:
    async with client_for(emulator, retry=None) as client:
        pairs = await client.estimate(messages=[["13900000001", "hi"], ("13900000002", "yo")])
        texts = await client.estimate(messages=["hi", "yo"])
    assert pairs == texts
    assert pairs.messages == 2


async def test_check_affordable_refuses_a_campaign_that_would_run_dry(emulator: Any) -> None:
    emulator.state.set_balance(None, "12.345")
    messages = [("hello " * 20, 100), ("short", 30)]  # 100 x 2 units + 30 x 1 unit
    async with client_for(emulator, retry=None) as client:
        with pytest.raises(BalanceTooLowError) as caught:
            await check_affordable(client._gateway, messages, cgid=None, csid=None)
        ok = await check_affordable(client._gateway, [("short", 123)], cgid=None, csid=None)
    error = caught.value
    assert error.cost == Decimal("23.00")
    assert error.balance == Decimal("12.345")
    assert "23.00 yuan" in str(error)
    assert "12.345 yuan" in str(error)
    assert ok.cost == Decimal("12.30")
    assert ok.enough
    # Nothing was sent: only reads reached the gateway.
    assert emulator.state.message_count == 0
    requests = emulator.state.get_counters().requests
    assert not any(requests[action] for action in ("sendOnce", "sendBatch", "sendParam"))


async def test_send_many_with_check_balance_refuses_before_sending(emulator: Any) -> None:
    emulator.state.set_balance(None, "99.95")
    async with client_for(emulator, retry=None) as client:

        async def campaign() -> None:
            async with client.send_many(numbers(1000), "hello") as outcomes:
                async for _ in outcomes:
                    raise AssertionError("refused before the first chunk")

        with pytest.raises(BalanceTooLowError) as caught:
            await campaign()
    assert caught.value.cost == Decimal("100.00")
    assert caught.value.balance == Decimal("99.95")
    assert emulator.state.message_count == 0
    assert emulator.state.get_counters().requests["sendOnce"] == 0
