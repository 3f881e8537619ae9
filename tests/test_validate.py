"""Input checks: every bad input is refused before a request exists; good input is sent intact."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import anyio
import pytest
from helpers import ACCOUNT, KEY
from hypothesis import given, settings
from hypothesis import strategies as st
from stack_support import hx

from aisix_async import AisixClient, RetryPolicy, ValidationError
from aisix_async._core.validate import check_at, render_template
from aisix_async.validation import check_base_url, check_content, check_mobile, check_template

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


# Any Unicode a person might type, surrogates aside (they cannot be UTF-8 encoded).
# Any text a message may hold: not blank or invisible, no NUL, and no template parameter
# (each refused, see below).
def _sendable(text: str) -> bool:
    invisible = all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)
    return bool(text) and not invisible and not re.search(r"\{p[0-9]+\}", text)


TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=1000
).filter(_sendable)


class Recorder:
    """A transport (httpx or httpx2) that records requests and answers like a happy gateway."""

    def __init__(self) -> None:
        self.requests: list[hx.Request] = []

    def __call__(self, request: hx.Request) -> hx.Response:
        self.requests.append(request)
        action = request.url.params["action"]
        count = len(dict(parse_qsl(request.content.decode()))["m"].split(","))
        items = 1 if action == "sendOnce" else count
        item = '<Item cid="1" sid="1" msgid="1" total="1" price="0.1" remain="1"/>'
        return hx.Response(200, text=f'<xml name="{action}" result="1">{item * items}</xml>')


def run_with_client(
    call: Callable[[AisixClient], Coroutine[Any, Any, object]],
) -> tuple[list[hx.Request], BaseException | None]:
    recorder = Recorder()

    async def main() -> BaseException | None:
        http = hx.AsyncClient(transport=hx.MockTransport(recorder))
        async with http, AisixClient(ACCOUNT, KEY, http_client=http) as client:
            client._gateway.now = lambda: NOW  # type: ignore[method-assign]
            try:
                await call(client)
            except ValidationError as exc:
                return exc
        return None

    return recorder.requests, anyio.run(main)


def sent_fields(request: hx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode("ascii"), keep_blank_values=True))


@pytest.mark.parametrize(
    ("content", "says"),
    [("   ", "only white space"), ("\n\t ", "only white space"), ("a\x00b", "NUL character")],
)
def test_a_blank_or_nul_content_is_refused_before_sending(content: str, says: str) -> None:
    # Each was sent and charged: a blank message (an unset template variable), a NUL.
    requests, error = run_with_client(lambda c: c.send_once(["18100002707"], content))
    assert isinstance(error, ValidationError) and says in str(error)
    assert requests == []
    with pytest.raises(ValidationError, match=says):
        check_content(content)


def test_an_empty_base_url_is_refused_not_taken_for_the_default() -> None:
    # An unset setting read as "" meant the real gateway, not the host meant.
    with pytest.raises(ValidationError, match="base_url is empty"):
        AisixClient(ACCOUNT, KEY, base_url="")
    with pytest.raises(ValidationError, match="base_url is empty"):
        AisixClient(ACCOUNT, KEY, base_url="  ")


@pytest.mark.parametrize("name", ["AISIX_BASE_URL", "AISIX_DATA_URL"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_url_variable_is_refused_not_taken_for_the_default(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # `export AISIX_BASE_URL=$STAGING` with $STAGING unset meant the real gateway, where
    # base_url="" is refused for that very reason.
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=f"{name} is set but empty"):
        AisixClient(ACCOUNT, KEY)
    # A URL given in the code is the one used: the variable is not read.
    given = {"base_url" if name == "AISIX_BASE_URL" else "data_url": "http://127.0.0.1:9/X"}
    AisixClient(ACCOUNT, KEY, **given)


@pytest.mark.parametrize("url", ["127.0.0.1:8766/OpenPlatform", "api.aisix.com/OpenPlatform"])
def test_a_base_url_without_its_scheme_is_told_so(url: str) -> None:
    # It said "got scheme 'none', host 'none'" (a user's trial).
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        AisixClient(ACCOUNT, KEY, base_url=url)
    with pytest.raises(ValidationError, match="with a host"):
        AisixClient(ACCOUNT, KEY, base_url="ftp://api.aisix.com/OpenPlatform")


@settings(max_examples=150, deadline=None)
@given(TEXT)
def test_any_content_round_trips_byte_exact(content: str) -> None:
    requests, error = run_with_client(lambda c: c.send_once(["18100002707"], content))
    assert error is None
    body = requests[0].content
    assert body.isascii()  # everything outside ASCII is %-encoded
    assert sent_fields(requests[0])["c"].encode("utf-8") == content.encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        TEXT.filter(lambda t: "{|}" not in t).map(lambda t: t[:300]).filter(_sendable),
        min_size=2,
        max_size=5,
    )
)
def test_batch_contents_round_trip_and_split_back_exactly(contents: list[str]) -> None:
    mobiles = [f"1810000{n:04d}" for n in range(len(contents))]
    requests, error = run_with_client(
        lambda c: c.send_batch(list(zip(mobiles, contents, strict=True)))
    )
    assert error is None
    fields = sent_fields(requests[0])
    assert fields["c"].split("{|}") == contents
    assert fields["m"].split(",") == mobiles


BAD_MOBILES = [
    "",
    "12",
    "181 0000 2707",
    "181-0000-2707",
    "18100002707,18600007370",
    "+",
    "++18100002707",
    "1810000270７",  # a full-width digit
    "1" * 21,
]


@pytest.mark.parametrize("mobile", BAD_MOBILES)
def test_bad_numbers_never_reach_the_network(mobile: str) -> None:
    requests, error = run_with_client(lambda c: c.send_once(["18100002707", mobile], "hi"))
    assert isinstance(error, ValidationError)
    assert requests == []


BAD_CALLS: dict[str, Callable[[AisixClient], Coroutine[Any, Any, object]]] = {
    "empty-content": lambda c: c.send_once(["18100002707"], ""),
    "long-content": lambda c: c.send_once(["18100002707"], "x" * 1001),
    "content-not-str": lambda c: c.send_once(["18100002707"], b"hi"),  # type: ignore[arg-type]
    "no-numbers": lambda c: c.send_once([], "hi"),
    "numbers-as-string": lambda c: c.send_once("18100002707", "hi"),
    "1001-numbers": lambda c: c.send_once([f"1{n:010d}" for n in range(1001)], "hi"),
    "batch-separator": lambda c: c.send_batch([("18100002707", "a{|}b"), ("18600007370", "c")]),
    "batch-one-pair": lambda c: c.send_batch([("18100002707", "a")]),
    "batch-101-pairs": lambda c: c.send_batch([(f"1{n:010d}", "a") for n in range(101)]),
    "batch-not-pair": lambda c: c.send_batch([("18100002707",), ("18600007370", "c")]),  # type: ignore[list-item]
    "param-separator": lambda c: c.send_param(
        "Hi {p1}", [("18100002707", ["A{|}B"]), ("18600007370", ["C"])]
    ),
    "param-missing-value": lambda c: c.send_param(
        "Hi {p1} {p2}", [("18100002707", ["A"]), ("18600007370", ["C"])]
    ),
    "param-extra-value": lambda c: c.send_param(
        "Hi {p1}", [("18100002707", ["A", "x"]), ("18600007370", ["C", "y"])]
    ),
    "param-eleven": lambda c: c.send_param(
        " ".join(f"{{p{n}}}" for n in range(1, 12)),
        [(m, ["v"] * 11) for m in ("18100002707", "18600007370")],
    ),
    "param-no-placeholder": lambda c: c.send_param(
        "Hi", [("18100002707", ["A"]), ("18600007370", ["C"])]
    ),
    "param-placeholder-in-value": lambda c: c.send_param(
        "Hi {p1}", [("18100002707", ["{p1}"]), ("18600007370", ["C"])]
    ),
    "param-value-not-str": lambda c: c.send_param(
        "Hi {p1}",
        [("18100002707", [1]), ("18600007370", ["C"])],  # type: ignore[list-item]
    ),
    "param-values-as-string": lambda c: c.send_param(
        "Hi {p1}", [("18100002707", "A"), ("18600007370", "C")]
    ),
    "param-rendered-too-long": lambda c: c.send_param(
        "{p1}", [("18100002707", ["x" * 1001]), ("18600007370", ["C"])]
    ),
    "param-one-row": lambda c: c.send_param("Hi {p1}", [("18100002707", ["A"])]),
    "naive-at": lambda c: c.send_once(["18100002707"], "hi", at=datetime(2030, 1, 1)),
    "at-too-soon": lambda c: c.send_once(["18100002707"], "hi", at=NOW + timedelta(seconds=59)),
    "at-not-datetime": lambda c: c.send_once(["18100002707"], "hi", at="2030-01-01"),  # type: ignore[arg-type]
    "cgid-negative": lambda c: c.send_once(["18100002707"], "hi", cgid=-1),
    "cgid-bool": lambda c: c.send_once(["18100002707"], "hi", cgid=True),
    "csid-negative": lambda c: c.send_once(["18100002707"], "hi", csid=-1),
    # Past the gateway's (Java) int: it went out, to come back -8 (a user's trial).
    "cgid-past-int32": lambda c: c.send_once(["18100002707"], "hi", cgid=2**31),
    "csid-past-int32": lambda c: c.send_once(["18100002707"], "hi", csid=2**70),
    "numbers-none": lambda c: c.send_once(None, "hi"),  # type: ignore[arg-type]
    "numbers-int": lambda c: c.send_once(18100002707, "hi"),  # type: ignore[arg-type]
    "batch-none": lambda c: c.send_batch(None),  # type: ignore[arg-type]
    "param-rows-none": lambda c: c.send_param("Hi {p1}", None),  # type: ignore[arg-type]
    # A lone surrogate (e.g. from errors="surrogateescape") cannot be UTF-8 encoded.
    "content-surrogate": lambda c: c.send_once(["18100002707"], "hi \ud800"),
    "batch-surrogate": lambda c: c.send_batch([("18100002707", "a"), ("18600007370", "\udcff")]),
    "template-surrogate": lambda c: c.send_param(
        "Hi {p1} \ud83d", [("18100002707", ["A"]), ("18600007370", ["C"])]
    ),
    "param-value-surrogate": lambda c: c.send_param(
        "Hi {p1}", [("18100002707", ["A\udfff"]), ("18600007370", ["C"])]
    ),
    "at-out-of-range": lambda c: c.send_once(
        ["18100002707"], "hi", at=datetime.max.replace(tzinfo=timezone.utc)
    ),
    # Sent as written: "Dear {p1}" reached every recipient with the braces in it.
    "content-placeholder": lambda c: c.send_once(["18100002707"], "Dear {p1}"),
    "batch-placeholder": lambda c: c.send_batch([("18100002707", "{p1}"), ("18600007370", "c")]),
    "many-placeholder": lambda c: c.send_all(["18100002707"], "Dear {p2}"),
    # As blank on a phone, and charged all the same.
    "content-zero-width": lambda c: c.send_once(["18100002707"], "\u200b\u200b"),
    "content-bom": lambda c: c.send_once(["18100002707"], "\ufeff "),
    # Endless inputs: read whole before their size was checked, they held the event loop
    # for good (no timeout could fire). Refused after one item too many.
    "numbers-endless": lambda c: c.send_once(itertools.repeat("18100002707"), "hi"),
    "batch-endless": lambda c: c.send_batch(itertools.repeat(("18100002707", "a"))),
    "param-rows-endless": lambda c: c.send_param(
        "Hi {p1}", itertools.repeat(("18100002707", ["A"]))
    ),
    # A dict iterates as its keys: the numbers of {number: name}, with no text.
    "numbers-dict": lambda c: c.send_once({"18100002707": "Ann"}, "hi"),  # type: ignore[arg-type]
    "batch-dict": lambda c: c.send_batch(
        {"18100002707": "a", "18600007370": "b"}  # type: ignore[arg-type]
    ),
    "many-dict": lambda c: c.send_all({"18100002707": "Ann"}, "hi"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_is_refused_before_any_request(
    call: Callable[[AisixClient], Coroutine[Any, Any, object]],
) -> None:
    requests, error = run_with_client(call)
    assert isinstance(error, ValidationError)
    assert isinstance(error, ValueError)
    assert requests == []


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda c: c.send_once(["18100002707"] * 1_000_000, "hi"), "^1000000 numbers"),
        (lambda c: c.send_once(iter(["18100002707"] * 2000), "hi"), "^more than 1000 numbers"),
        (lambda c: c.send_batch(("18100002707", "a") for _ in range(200)), "^more than 100"),
        (lambda c: c.send_batch([("18100002707", "a")] * 200), "^200 messages"),
    ],
)
def test_a_request_too_large_is_refused_by_its_count(
    call: Callable[[AisixClient], Coroutine[Any, Any, object]], says: str
) -> None:
    requests, error = run_with_client(call)
    assert isinstance(error, ValidationError) and re.search(says, str(error)), error
    assert requests == []


@pytest.mark.parametrize(
    ("account", "authkey"),
    [
        ("1001", KEY),
        ("1001@", KEY),
        ("a@b@c", KEY),
        # The document's ac is numbers at numbers; the gateway answers 0 to letters.
        ("admin@corp", KEY),
        ("1001@acme.cn", KEY),
        (f"{KEY}@acme", KEY),
        (ACCOUNT, KEY[:-1]),
        (ACCOUNT, KEY[:-1] + "G"),
        (ACCOUNT, 12345),
        (ACCOUNT, KEY.lower()),
        # A key pasted as the account was taken, and shown in every repr and log line.
        (f"{KEY}@100001", KEY),
        (f"1001@{KEY.lower()}", KEY),
    ],
)
def test_bad_credentials_are_refused_without_quoting_the_key(account: str, authkey: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AisixClient(account, authkey)
    assert KEY[:-1] not in str(caught.value)
    assert KEY[:-1].lower() not in str(caught.value)


def test_a_key_in_lower_case_is_refused_before_the_gateway_locks_it() -> None:
    # The gateway compares the key as written (-2), and a few -2 in a row lock it.
    with pytest.raises(ValidationError, match="upper case"):
        AisixClient(ACCOUNT, KEY.lower())


@pytest.mark.parametrize("placeholder", ["{p01}", "{p0}", "{p11}", "{p001}"])
def test_a_placeholder_the_gateway_does_not_know_is_refused(placeholder: str) -> None:
    # int() reads {p01} as {p1}; the gateway knows p1 to p10 as written, and refuses the
    # send: a one-row send rendered here would have gone out, a two-row one failed.
    with pytest.raises(ValidationError, match=re.escape(placeholder)):
        check_template(f"Hi {{p1}} {placeholder}")


def test_missing_credentials_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AISIX_ACCOUNT", raising=False)
    with pytest.raises(ValidationError, match="AISIX_ACCOUNT"):
        AisixClient(authkey=KEY)


def test_a_template_may_skip_a_parameter_whose_value_is_then_ignored() -> None:
    # The document: a parameter takes effect where the content uses it.
    rows = [("18100002707", ["unused", "Ann"]), ("18600007370", ["unused", "Bob"])]
    requests, error = run_with_client(lambda c: c.send_param("Hi {p2}", rows))
    assert error is None
    fields = sent_fields(requests[0])
    assert (fields["c"], fields["p1"], fields["p2"]) == ("Hi {p2}", "unused{|}unused", "Ann{|}Bob")


def test_csid_zero_is_the_default_signature_and_valid() -> None:
    requests, error = run_with_client(lambda c: c.send_once(["18100002707"], "hi", csid=0))
    assert error is None and len(requests) == 1


def test_cgid_zero_is_the_default_group_as_csid_zero_is_the_default_signature() -> None:
    # Refused before, while csid=0 was taken: the vendor's SDK sends neither when 0.
    requests, error = run_with_client(lambda c: c.send_once(["18100002707"], "hi", cgid=0))
    assert error is None and len(requests) == 1
    assert "cgid" not in sent_fields(requests[0])
    AisixClient(ACCOUNT, KEY, cgid=0)


def test_a_template_over_1000_characters_that_renders_shorter_is_sent() -> None:
    # The bound is on each message sent (PROTOCOL-NOTES' decision), not on the template.
    template = "{p1}{p2}" + "x" * 994
    rows = [("18100002707", ["", "a"]), ("18600007370", ["b", ""])]
    requests, error = run_with_client(lambda c: c.send_param(template, rows))
    assert error is None and len(requests) == 1
    assert sent_fields(requests[0])["c"] == template
    longer = [("18100002707", ["abcd", "efg"]), ("18600007370", ["b", ""])]
    requests, error = run_with_client(lambda c: c.send_param(template, longer))
    assert isinstance(error, ValidationError) and "1000" in str(error) and requests == []


def test_surrogate_error_says_where() -> None:
    with pytest.raises(ValidationError, match=r"U\+D800 at character 3"):
        check_content("hi \ud800 there")
    # Astral characters (a proper surrogate pair in UTF-16 terms) are fine.
    assert check_content("hi \U0001f600") == "hi \U0001f600"


@pytest.mark.parametrize(
    ("lead_ms", "accepted"), [(60_050, False), (60_499, False), (60_500, True)]
)
def test_schedule_lead_counts_the_whole_seconds_the_gateway_reads(
    lead_ms: int, accepted: bool
) -> None:
    # "now" half way through a second: the gateway reads `at` without its fraction, so a
    # lead under 60.5 s is under a minute there, and is refused here.
    now = NOW + timedelta(milliseconds=500)
    at = now + timedelta(milliseconds=lead_ms)
    if accepted:
        assert check_at(at, now=now, gateway_tz=timezone.utc) == at.strftime("%Y%m%d%H%M%S")
    else:
        with pytest.raises(ValidationError, match="at least one minute"):
            check_at(at, now=now, gateway_tz=timezone.utc)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": "5"}, "timeout must be a number"),
        ({"timeout": 0}, "timeout must be above 0"),
        ({"timeout": float("nan")}, "timeout must be above 0"),
        ({"max_concurrency": 2.5}, "max_concurrency must be an integer"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
        ({"initial_concurrency": "4"}, "initial_concurrency must be an integer"),
        ({"max_rate": -1}, "max_rate"),
        ({"max_answer_bytes": 0}, "max_answer_bytes must be at least 1"),
        ({"base_url": "not a url"}, "base_url must start with http:// or https://"),
        ({"base_url": "ftp://example.com"}, "scheme 'ftp'"),
        ({"base_url": "https://"}, "host 'none'"),
        ({"data_url": "example.com/DataApi"}, "data_url must start with"),
        ({"timeout": float("inf")}, "timeout must be finite"),
        # Refused here, not by the HTTP stack at the first request (an ExceptionGroup).
        ({"base_url": "http://127.0.0.1:99999/OpenPlatform"}, "port number from 1 to 65535"),
        ({"base_url": "http://127.0.0.1:0/OpenPlatform"}, "port number from 1 to 65535"),
        ({"base_url": "http://127.0.0.1/Open Platform"}, "must not contain white space"),
        # A zone's name failed only at the first send with `at=`, as a TypeError.
        ({"gateway_tz": "Asia/Shanghai"}, "gateway_tz must be a datetime.tzinfo"),
        ({"base_url": "http://127.0.0.1:port/OpenPlatform"}, "got 'port'"),
        # Reprs, logs and errors show the URL: a password in it would leak.
        ({"base_url": "http://user:s3cret@127.0.0.1/OpenPlatform"}, "user name or password"),
        # Each action's path and "?action=" are appended to it.
        ({"base_url": "http://127.0.0.1/OpenPlatform?x=1"}, "must not carry a query"),
        ({"base_url": "http://127.0.0.1/OpenPlatform#top"}, "or fragment"),
        # "?action=" is appended to the data URL as well: polls went to
        # ".../DataApi?region=cn?action=getSendState" and failed as "records ... lost".
        ({"data_url": "http://127.0.0.1/OpenPlatform/DataApi?region=cn"}, "data_url must not"),
        ({"data_url": "http://127.0.0.1/OpenPlatform/DataApi#frag"}, "or fragment"),
        # Taken, then failing as a TypeError in a log at the first unknown outcome.
        ({"on_unknown": 1}, "on_unknown must be a function (or None), got int"),
        ({"on_retry": "log"}, "on_retry must be a function (or None), got str"),
        ({"on_key_rotation": {}}, "on_key_rotation must be a function (or None), got dict"),
        # The document's endpoint as the base: every request went to .../OpenApi/OpenApi.
        ({"base_url": "http://127.0.0.1/OpenPlatform/OpenApi"}, "leave out the /OpenApi"),
        ({"base_url": "http://127.0.0.1/OpenPlatform/DataApi/"}, "leave out the /DataApi"),
        # A truthy string asked for OpenTelemetry and failed as a missing install.
        ({"otel": "no"}, "otel must be True, False or None, got 'no'"),
    ],
)
def test_bad_client_settings_are_refused_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)) as raised:
        AisixClient(ACCOUNT, KEY, **options)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("typed", "spelled"),
    [
        ("http://api.aisix.com/OpenPlatform", "http://api.aisix.com/OpenPlatform"),
        ("HTTP://API.Aisix.COM/OpenPlatform/", "http://api.aisix.com/OpenPlatform"),
        ("http://api.aisix.com:80/OpenPlatform", "http://api.aisix.com/OpenPlatform"),
        ("https://api.aisix.com:443/OpenPlatform//", "https://api.aisix.com/OpenPlatform"),
        # Another port is another server; a path keeps its case; an IPv6 host its brackets.
        ("https://api.aisix.com:80/OpenPlatform", "https://api.aisix.com:80/OpenPlatform"),
        ("http://api.aisix.com/openplatform", "http://api.aisix.com/openplatform"),
        ("http://[::1]:8080/OpenPlatform", "http://[::1]:8080/OpenPlatform"),
        # As read from a file or an environment variable.
        (" http://api.aisix.com/OpenPlatform \n", "http://api.aisix.com/OpenPlatform"),
    ],
)
def test_one_gateway_typed_two_ways_is_one_gateway(typed: str, spelled: str) -> None:
    # One spelling, so that one gateway has one rate cache entry and one shared schedule in
    # Redis (both keyed on it; before, an upper-case host or ":80" made a second schedule).
    assert check_base_url(typed) == spelled
    client = AisixClient(ACCOUNT, KEY, base_url=typed)
    assert client.endpoints.open_url == f"{spelled}/OpenApi"
    assert client.endpoints.data_url == f"{spelled}/DataApi"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # attempts=-1 turned off the retry of -1 answers without a word.
        ({"attempts": -1}, "attempts must be at least 1"),
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"attempts": 1.5}, "attempts must be an integer"),
        ({"timeout": -5}, "timeout (s) must be above 0"),
        ({"timeout": float("nan")}, "timeout (s) must be above 0"),
        ({"initial_backoff": -1}, "initial_backoff (s) must be above 0"),
        ({"max_backoff": float("inf")}, "max_backoff (s) must be finite"),
        ({"unreachable_timeout": 0}, "unreachable_timeout (s) must be above 0"),
        ({"attempts": True}, "attempts must be an integer"),
    ],
)
def test_bad_retry_policies_are_refused_when_made(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RetryPolicy(**options)


def test_a_retry_policy_may_have_no_backoff() -> None:
    policy = RetryPolicy(initial_backoff=0, max_backoff=0.0, unreachable_timeout=None)
    assert (policy.initial_backoff, policy.max_backoff) == (0, 0.0)


def test_schedule_converts_to_gateway_time() -> None:
    gateway = timezone(timedelta(hours=8))
    at = datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc)
    assert check_at(at, now=NOW, gateway_tz=gateway) == "20261125073000"
    assert check_at(None, now=NOW, gateway_tz=gateway) is None
    exactly_a_minute = NOW + timedelta(minutes=1)
    assert check_at(exactly_a_minute, now=NOW, gateway_tz=timezone.utc) == "20261124120100"


def test_templates_render_in_one_pass() -> None:
    text, count = check_template("Hello {p1}, you are {p2}! {p1}")
    assert count == 2
    # A value that itself looks like "{p2}" is not substituted again.
    assert render_template(text, ["{p2}", "x"]) == "Hello {p2}, you are x! {p2}"


@given(
    st.lists(
        st.text(min_size=0, max_size=20).filter(lambda v: "{" not in v), min_size=1, max_size=10
    )
)
def test_every_placeholder_is_filled(values: list[str]) -> None:
    template = " ".join(f"<{{p{n}}}>" for n in range(1, len(values) + 1))
    rendered = render_template(template, values)
    assert rendered == " ".join(f"<{v}>" for v in values)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=25).filter(lambda m: not re.fullmatch(r"\+?[0-9]{3,20}", m)))
def test_no_invalid_number_reaches_the_network(mobile: str) -> None:
    requests, error = run_with_client(lambda c: c.send_once(["18100002707", mobile], "hi"))
    assert isinstance(error, ValidationError)
    assert requests == []


WITH_SEPARATOR = st.builds(lambda a, b: f"{a}{{|}}{b}", st.text(max_size=10), st.text(max_size=10))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3).flatmap(
        lambda good: st.permutations([*good, "{|}"]).map(list)
    )
    | st.lists(WITH_SEPARATOR, min_size=2, max_size=3)
    | st.lists(st.just("x"), min_size=0, max_size=1)
    | st.lists(st.just("x"), min_size=101, max_size=101)
)
def test_no_invalid_batch_reaches_the_network(contents: list[str]) -> None:
    pairs = [(f"1{n:010d}", c) for n, c in enumerate(contents)]
    requests, error = run_with_client(lambda c: c.send_batch(pairs))
    assert isinstance(error, ValidationError)
    assert requests == []


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_form_quoting_is_exactly_urllibs(value: str) -> None:
    from urllib.parse import quote_plus

    from aisix_async._core.wire import _quote

    assert _quote(value) == quote_plus(value)


@pytest.mark.parametrize("numbers", ["lenient", "cn-mobile", "e164"])
@pytest.mark.parametrize("runaway", ["z" * 2_000_000, "+" * 300, "1" * 5000])
def test_a_runaway_number_is_cut_in_the_error_not_echoed(numbers: str, runaway: str) -> None:
    with pytest.raises(ValidationError) as raised:
        check_mobile(runaway, numbers)
    message = str(raised.value)
    assert len(message) < 400, message[:400]
    assert f"({len(runaway):,} characters)" in message
    assert repr(runaway[:40])[:-1] in message


def test_the_public_checks_are_the_clients_own() -> None:
    # aisix_async.validation lets a form or an import script check inputs one by one
    # with the client's rules and words (the command line uses nothing else).
    from datetime import datetime, timedelta, timezone

    from aisix_async import ValidationError, validation

    assert validation.check_mobile("13800138000", "cn-mobile") == "13800138000"
    with pytest.raises(ValidationError, match="not a mainland China mobile"):
        validation.check_mobile("1380013800", "cn-mobile")
    assert validation.check_template("Hi {p1}, code {p2}") == ("Hi {p1}, code {p2}", 2)
    assert validation.check_param_row("Hi {p1}", 1, ("13800138000", ["Li"]), 3) == (
        "13800138000",
        ["Li"],
    )
    with pytest.raises(ValidationError, match="authkey must be 32 hexadecimal"):
        validation.check_authkey("0123")
    # check_at defaults to now, and answers in the gateway's zone (UTC+8).
    at = datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)
    assert validation.check_at(at) == "20300101080000"
    assert validation.check_at(None) is None
    with pytest.raises(ValidationError, match="at least one minute after now"):
        validation.check_at(datetime.now(timezone.utc) + timedelta(seconds=30))
    assert validation.SEPARATOR == "{|}"
    assert set(validation.NUMBERING) == {"lenient", "cn-mobile", "e164"}


@pytest.mark.parametrize("numbering", ["lenient", "cn-mobile", "e164"])
@pytest.mark.parametrize("mobile", ["1.39E+10", "1,81E+10", "1.3912345678e10"])
def test_a_number_in_scientific_notation_is_named_as_such(mobile: str, numbering: str) -> None:
    # Excel's 1.39E+10 was told to "use the 'e164' numbering policy": its digits are lost.
    with pytest.raises(ValidationError, match="scientific notation: its digits are lost"):
        check_mobile(mobile, numbering)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["您好张伟，验证码｛p2｝", "您好 {p1}，验证码 {ｐ2}", "码 ｛p１｝"]
)
def test_a_parameter_typed_in_full_width_is_refused(text: str) -> None:
    # A Chinese input method's ｛p2｝ passed unchecked and reached phones as written.
    with pytest.raises(ValidationError, match="full-width"):
        check_template(text)
    with pytest.raises(ValidationError, match="full-width"):
        check_content(text, plain=True)


@pytest.mark.parametrize("hook", ["on_unknown", "on_retry"])
def test_an_async_hook_that_is_called_synchronously_is_refused(hook: str) -> None:
    # Taken, its coroutine was never awaited: every unknown outcome went unreported.
    async def noted(event: object) -> None:
        return None

    with pytest.raises(ValidationError, match="called synchronously"):
        AisixClient(ACCOUNT, KEY, **{hook: noted})
