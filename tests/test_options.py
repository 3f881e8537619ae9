"""The options records and their keyword twins (issue #15: adding an option is one edit).

The facade takes ``**options: Unpack[SendKeywords]`` and builds ``SendOptions(**options)``.
Type checkers read the TypedDict and the run time reads the attrs record, so the two must
name the same fields with the same types, or a keyword mypy accepts would fail at run time
(or the other way round).
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers import client_for, numbers

import aisix_async._core.options as options_module
from aisix_async import (
    AisixClient,
    Campaign,
    PollKeywords,
    PollOptions,
    SendKeywords,
    SendOptions,
)

pytestmark = pytest.mark.anyio

TWINS = [(SendOptions, SendKeywords), (PollOptions, PollKeywords)]


@pytest.mark.parametrize(("record", "keywords"), TWINS)
def test_the_keywords_name_the_records_fields_with_their_types(
    record: type[Any], keywords: type[Any]
) -> None:
    # Both are declared in one private module; the package re-exports them under its own
    # name, so their annotations are resolved against the module that wrote them.
    where = vars(options_module)
    fields = typing.get_type_hints(record, globalns=where)
    assert list(fields) == [field.name for field in attrs.fields(record)]
    hints = typing.get_type_hints(keywords, globalns=where)
    assert hints == fields
    # The same order too, so that the two read alike side by side.
    assert list(hints) == list(fields)


@pytest.mark.parametrize(("record", "keywords"), TWINS)
def test_every_keyword_may_be_left_out_and_the_record_holds_the_default(
    record: type[Any], keywords: type[Any]
) -> None:
    assert keywords.__required_keys__ == frozenset()
    for field in attrs.fields(record):
        # A keyword left out must mean the record's default, and its name must be the
        # record's own (attrs would strip a leading underscore from an init keyword).
        assert field.default is not attrs.NOTHING, field.name
        assert field.kw_only, field.name
        assert field.alias == field.name, field.name


# Every public method that takes options, and how to call it with one unknown keyword.
# A mistyped option name is the likely mistake: "chunksize" for "chunk_size".
SEND_CALLS: dict[str, Callable[[Any, dict[str, Any]], object]] = {
    "send_many": lambda target, bad: target.send_many(numbers(3), "hi", **bad),
    "send_batch_many": lambda target, bad: target.send_batch_many(
        [(n, "hi") for n in numbers(3)], **bad
    ),
    "send_param_many": lambda target, bad: target.send_param_many(
        "hi {p1}", [(n, ["x"]) for n in numbers(3)], **bad
    ),
}
POLL_CALLS: dict[str, Callable[[Any, dict[str, Any]], object]] = {
    "watch_delivery_reports": lambda target, bad: target.watch_delivery_reports(**bad),
    "watch_replies": lambda target, bad: target.watch_replies(**bad),
}


async def _refused(call: Callable[[Any, dict[str, Any]], object], target: Any, bad: str) -> str:
    with pytest.raises(TypeError) as caught:
        result = call(target, {bad: 10})
        if isinstance(result, Awaitable):
            await result
    return str(caught.value)


def _assert_nothing_sent(emulator: Any, client: AisixClient) -> None:
    assert sum(emulator.state.get_counters().requests.values()) == 0
    assert not client.stats().results


@pytest.mark.parametrize("name", [*SEND_CALLS, *POLL_CALLS, "send_all"])
async def test_the_client_refuses_an_unknown_option_before_sending(
    emulator: Any, name: str
) -> None:
    calls = {
        **SEND_CALLS,
        **POLL_CALLS,
        "send_all": lambda target, bad: target.send_all(numbers(3), "hi", **bad),
    }
    record = "PollOptions" if name in POLL_CALLS else "SendOptions"
    bad = "poll_interval" if name in POLL_CALLS else "chunksize"
    async with client_for(emulator) as client:
        message = await _refused(calls[name], client, bad)
        _assert_nothing_sent(emulator, client)
    # The message names the keyword and the record whose fields the options are.
    assert repr(bad) in message
    assert record in message


@pytest.mark.parametrize("name", [*SEND_CALLS, *POLL_CALLS])
async def test_a_campaign_refuses_an_unknown_option_before_sending(
    emulator: Any, tmp_path: Path, name: str
) -> None:
    calls = {**SEND_CALLS, **POLL_CALLS}
    bad = "poll_interval" if name in POLL_CALLS else "chunksize"
    async with client_for(emulator) as client, client.campaign(tmp_path / "c.db") as campaign:
        assert isinstance(campaign, Campaign)
        message = await _refused(calls[name], campaign, bad)
        _assert_nothing_sent(emulator, client)
        # Nothing was recorded either: the journal holds no definition.
        assert not campaign.definition
    assert repr(bad) in message


async def test_the_keywords_still_reach_the_send(emulator: Any) -> None:
    # The keyword spelling users write today, end to end: chunk_size splits the send.
    async with client_for(emulator) as client:
        summary = await client.send_all(numbers(25), "hi", chunk_size=10, check_balance=False)
    assert summary.stats.accepted == 25
    assert summary.stats.requests == 3


async def test_a_retry_that_is_no_policy_is_refused_before_sending(emulator: Any) -> None:
    # retry="no" (truthy, not a RetryPolicy) was taken for the client's policy, and
    # failed with an AttributeError at the first request that needed it.
    from aisix_async import ValidationError

    with pytest.raises(ValidationError, match=r"retry must be a RetryPolicy, or None.*got str"):
        client_for(emulator, retry="no")
    async with client_for(emulator) as client:
        with pytest.raises(ValidationError, match=r"retry must be a RetryPolicy.*got dict"):
            await client.send_once(numbers(1), "hi", retry={"attempts": 1})  # type: ignore[arg-type]
        _assert_nothing_sent(emulator, client)


async def test_check_balance_must_be_a_bool(emulator: Any) -> None:
    # "no" is truthy: the balance was checked when the caller asked it not to be.
    from aisix_async import ValidationError

    async with client_for(emulator) as client:
        with pytest.raises(ValidationError, match="check_balance must be True or False"):
            client.send_many(numbers(3), "hi", check_balance="no")  # type: ignore[arg-type]
        _assert_nothing_sent(emulator, client)
