"""The authkey never shows: not in reprs, logs (the HTTP stack's too), errors, tracebacks, URLs."""

from __future__ import annotations

import contextlib
import logging
import socket
import traceback
from pathlib import Path
from typing import Any

import pytest
from helpers import ACCOUNT, KEY, NO_BACKOFF, OPEN, client_for, eventually
from stack_support import STACK, hx

from aisix_async import (
    AisixClient,
    AisixError,
    EndpointError,
    KeyRotation,
    TransportError,
    ValidationError,
)

NEW_KEY = "FEDCBA9876543210FEDCBA9876543210"


def _leaks(text: str) -> bool:
    return KEY in text or NEW_KEY in text or KEY.lower() in text


@pytest.mark.anyio
async def test_key_stays_out_of_logs_errors_and_urls(
    caplog: pytest.LogCaptureFixture, gateway_mock: Any
) -> None:
    caplog.set_level(logging.DEBUG)  # root, the stack's loggers (httpx/httpx2...) all at DEBUG
    for name in (STACK, STACK.replace("httpx", "httpcore"), "aisix_async"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    answers = {
        "getBalance": [
            hx.Response(200, text='<xml name="getBalance" result="-1"/>'),
            hx.Response(200, text='<xml name="getBalance" result="1"><Item remain="1"/></xml>'),
        ],
        "sendOnce": [
            hx.Response(200, text='<xml name="sendOnce" result="-2"/>'),
            hx.ReadTimeout("timed out"),
            hx.Response(502, text="<html>proxy error</html>"),
        ],
        "updateKey": [
            hx.Response(
                200,
                text=f'<xml name="updateKey" result="1"><Item authkey="{NEW_KEY}"/></xml>',
            )
        ],
    }
    routes = {
        action: gateway_mock.post(OPEN, params={"action": action}).mock(side_effect=side)
        for action, side in answers.items()
    }
    messages: list[str] = []
    async with AisixClient(ACCOUNT, KEY, retry=NO_BACKOFF) as client:
        assert not _leaks(repr(client))
        await client.get_balance()
        for _ in range(3):
            try:
                await client.send_once(["18100002707"], "hi")
            except AisixError as exc:
                messages.append(str(exc))
                messages.append("".join(traceback.format_exception(exc)))
                messages.append(repr(exc))
        update = await client.rotate_key()
        assert not _leaks(repr(update)) and not _leaks(str(update))
    assert len(messages) == 9
    assert not any(_leaks(m) for m in messages)
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r} {getattr(r, 'exc_text', '')}" for r in caplog.records
    )
    assert "HTTP Request" in logged  # the stack did log, and the key is not in it
    assert not _leaks(logged)
    for route in routes.values():
        for call in route.calls:
            assert not _leaks(str(call.request.url))
            assert KEY.encode() in call.request.content or NEW_KEY.encode() in call.request.content


def _any_part_shown(text: str) -> bool:
    return any(KEY[i : i + 8] in text for i in range(len(KEY) - 7))


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 200])
@pytest.mark.parametrize("pad", [0, 20, 150, 4050])
async def test_an_error_page_echoing_the_request_does_not_show_the_key(
    caplog: pytest.LogCaptureFixture, status: int, pad: int
) -> None:
    # A proxy or a servlet error page quoting the form it was given. The pads put the
    # key across the 80 characters quoted of a page that is not XML, the 200 of an HTTP
    # error, and the end of what is read of one: a key cut there must not show in part.
    caplog.set_level(logging.DEBUG, logger="aisix_async")

    def echo(request: Any) -> Any:
        return hx.Response(status, content=b"<p>" + b"." * pad + b" Bad: " + request.content)

    async with hx.AsyncClient(transport=hx.MockTransport(echo)) as http:
        client = AisixClient(ACCOUNT, KEY, http_client=http, retry=NO_BACKOFF)
        with pytest.raises(AisixError) as caught:
            await client.get_balance()
    shown = [str(caught.value), repr(caught.value), *(r.getMessage() for r in caplog.records)]
    assert "Bad: " in str(caught.value) or pad > 100  # the page is quoted, not dropped
    assert not any(_any_part_shown(text) for text in shown)


def test_key_update_repr_is_redacted() -> None:
    update = KeyRotation(cid="1", sid="2", authkey=NEW_KEY)
    assert "redacted" in repr(update)
    assert not _leaks(repr(update))


def _with_locals(exc: BaseException) -> str:
    """The traceback as error trackers report it: every frame with its local variables."""
    shown = traceback.TracebackException.from_exception(exc, capture_locals=True)
    return "".join(shown.format())


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["error_after_charge", "read_timeout", "refused"])
async def test_key_stays_out_of_traceback_locals(emulator: Any, fault: str) -> None:
    base_url = emulator.base_url
    if fault == "error_after_charge":
        emulator.state.set_faults(error_after_charge=1.0, fault_actions=["sendOnce"])
    elif fault == "read_timeout":
        emulator.state.set_faults(latency_ms=500, fault_actions=["sendOnce"])
    else:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            base_url = f"http://127.0.0.1:{unused.getsockname()[1]}/OpenPlatform"

    async def send(client: AisixClient) -> AisixError:
        # The traceback starts in this frame, whose locals hold no key (unlike the test's).
        try:
            await client.send_once(["18100002707"], "hi")
        except AisixError as exc:
            return exc
        raise AssertionError("the fault did not fire")

    key = emulator.authkey
    async with AisixClient(
        emulator.account, key, base_url=base_url, timeout=0.2, retry=NO_BACKOFF
    ) as client:
        shown = _with_locals(await send(client))
    if fault == "read_timeout":
        # The emulator still sends it once its delay is over: wait, or the message would
        # land in the ledger of whichever test runs next.
        await eventually(lambda: emulator.state.message_count >= 1, timeout=5)
    assert "body = <form body:" in shown  # the frames' locals were captured
    assert key not in shown and key.lower() not in shown


def _failed_construction(bad: dict[str, Any]) -> str:
    # The traceback starts in this frame, whose locals hold no key (KEY is a global).
    try:
        AisixClient(ACCOUNT, KEY, **bad)
    except AisixError as exc:
        return _with_locals(exc)
    raise AssertionError("the constructor did not fail")


@pytest.mark.parametrize(
    "bad",
    [
        {"numbers": "cn_mobile"},
        {"base_url": "ftp://example.test/OpenPlatform"},
        {"max_rate": 0},
        {"retry": "no"},
    ],
)
def test_key_stays_out_of_a_failed_constructors_locals(bad: dict[str, Any]) -> None:
    # The constructor's own frames (and the gateway's) held the key as a plain str when
    # another argument was refused; formatting the half-made client raised AttributeError.
    shown = _failed_construction(bad)
    assert "authkey = '<authkey, not shown>'" in shown  # the locals were captured
    assert not _leaks(shown)


#: A key pasted as the account; a global, so that no test frame holds it as a local.
PASTED = f"{KEY}@100001"


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_key_pasted_as_the_account_stays_out_of_the_locals(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused, and not quoted in the error; but the constructors' frames held it as a
    # plain str, which error trackers print (a user's trial).
    if where == "environment":
        monkeypatch.setenv("AISIX_ACCOUNT", PASTED)
    try:
        AisixClient(PASTED if where == "argument" else None, KEY)
    except AisixError as exc:
        shown = _with_locals(exc)
    else:
        raise AssertionError("the constructor did not fail")
    assert "account = '<32 hex characters, not shown>@100001'" in shown
    assert not _leaks(shown)


#: A key pasted into a URL; a global, as above.
IN_URL = f"http://gw.test/{KEY}/OpenPlatform"


@pytest.mark.parametrize("where", ["base_url", "data_url"])
def test_a_key_pasted_into_a_url_stays_out_of_the_locals_when_another_argument_fails(
    where: str,
) -> None:
    # The constructors' frames held the URL as given, and so did the frame refusing it,
    # all shown by an error tracker printing locals (a user's trial).
    try:
        if where == "base_url":
            AisixClient(ACCOUNT, KEY, base_url=IN_URL, max_rate=0)
        else:
            AisixClient(ACCOUNT, KEY, data_url=IN_URL, max_rate=0)
    except AisixError as exc:
        shown = _with_locals(exc)
    else:
        raise AssertionError("the constructor did not fail")
    assert f"{where} = 'http://gw.test/<32 hex characters, not shown>/OpenPlatform'" in shown
    assert not _leaks(shown)


@pytest.mark.parametrize(
    "misplaced",
    [
        {"account": KEY, "authkey": KEY},
        {"account": ACCOUNT, "authkey": KEY, "numbers": KEY},
        {"account": ACCOUNT, "authkey": KEY, "base_url": f"http://h:{KEY}/OpenPlatform"},
        {"account": ACCOUNT, "authkey": KEY, "http_stack": KEY},
    ],
)
def test_a_key_given_in_the_wrong_place_is_not_quoted(misplaced: dict[str, Any]) -> None:
    with pytest.raises(AisixError) as refused:
        AisixClient(**misplaced)
    assert "32 hex characters, not shown" in str(refused.value)
    assert not _leaks(str(refused.value)) and not _leaks(repr(refused.value))


@pytest.mark.anyio
async def test_the_new_key_stays_out_of_locals_when_the_rotation_hook_fails(
    emulator: Any,
) -> None:
    def hook(update: KeyRotation) -> None:
        raise OSError("disk full")

    async def rotate(client: AisixClient) -> AisixError:
        try:
            await client.rotate_key()
        except AisixError as exc:
            return exc
        raise AssertionError("the hook did not fail")

    async with AisixClient(
        emulator.account, emulator.authkey, base_url=emulator.base_url, on_key_rotation=hook
    ) as client:
        error = await rotate(client)
    new_key = error.rotation.authkey  # type: ignore[attr-defined]
    shown = _with_locals(error)
    assert "answer = " in shown  # the rotation's frame and its locals were captured
    assert new_key not in shown and new_key.lower() not in shown


@pytest.mark.anyio
async def test_a_key_in_the_url_is_hidden_in_reprs_errors_and_logs(
    emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "http://" + key is a valid host name (and a path may hold one): the URL was taken and
    # shown whole in every repr, though no 32-hex run is meant to show anywhere.
    # (The client's own key in its URL is refused: test_the_clients_own_key_in_a_url_...)
    pasted = AisixClient(ACCOUNT, NEW_KEY, base_url=f"http://{KEY}", data_url=f"http://{KEY}/D")
    assert repr(pasted) == (
        "<AisixClient account='1001@100001' url='http://<32 hex characters, not shown>/OpenApi'>"
    )
    assert not _leaks(repr(pasted)) and not _leaks(repr(pasted.endpoints))
    # Hidden where it is shown, not where requests go.
    assert pasted.endpoints.open_url == f"http://{KEY.lower()}/OpenApi"

    # Errors quoting the URL: a 404 from a path holding a key.
    caplog.set_level(logging.DEBUG, logger="aisix_async")
    path = tmp_path / "c.db"
    first = AisixClient(emulator.account, emulator.authkey, base_url=emulator.base_url)
    async with (
        first,
        first.campaign(path) as campaign,
        campaign.send_many(["13900000001"], "hi") as run,
    ):
        async for _ in run:
            pass
    wrong = f"{emulator.root_url}/{NEW_KEY}"  # a key, not the one the client holds
    async with AisixClient(
        emulator.account, emulator.authkey, base_url=wrong, retry=NO_BACKOFF
    ) as client:
        with pytest.raises(EndpointError) as raised:
            await client.get_balance()
        async with client.campaign(path) as campaign:
            stream = campaign.send_many(["13900000002"], "hi", check_balance=False)
            with contextlib.suppress(AisixError):
                async with stream as run:
                    async for _ in run:
                        pass
    error = raised.value
    assert "http://127.0.0.1" in str(error) and "<32 hex characters, not shown>" in str(error)
    for text in (str(error), repr(error), error.url, "".join(traceback.format_exception(error))):
        assert not _leaks(text)
    # The SDK's own log lines. The HTTP stack's ("HTTP Request: POST <url>") are its own,
    # and show the URL requests go to.
    ours = [record for record in caplog.records if record.name.startswith("aisix_async")]
    logged = "\n".join(record.getMessage() for record in ours)
    assert "its earlier runs sent to" in logged  # the campaign's warning names both URLs
    assert not _leaks(logged)


@pytest.mark.parametrize(
    "urls",
    [
        {"base_url": f"http://127.0.0.1:9/gw/{KEY}"},
        {"base_url": f"http://127.0.0.1:9/gw/{KEY.lower()}/x"},  # typed by hand, lowered
        {"data_url": f"http://127.0.0.1:9/{KEY}/DataApi"},
    ],
)
def test_the_clients_own_key_in_a_url_is_refused(
    urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hidden in our reprs, it still went out in the HTTP stack's INFO line ("HTTP Request:
    # POST <url>"), and into the journal and the rate cache, which keep the base URL.
    for name, url in urls.items():
        with pytest.raises(ValidationError, match=f"{name} holds the authkey") as refused:
            AisixClient(ACCOUNT, KEY, **{name: url})
        assert not _leaks(str(refused.value)) and not _leaks(repr(refused.value))
        monkeypatch.setenv(f"AISIX_{name.upper()}", url)  # from the environment too
        with pytest.raises(ValidationError, match=f"{name} holds the authkey"):
            AisixClient(ACCOUNT, KEY)


def test_a_transport_error_hides_a_key_the_http_library_quoted() -> None:
    # Its message quotes the HTTP library's error, which may name the URL.
    error = TransportError(f"getBalance: could not reach http://{KEY}/OpenApi", request_sent=False)
    assert not _leaks(str(error)) and not _leaks(repr(error))


#: Keys as AISIX_AUTHKEY may hold them by mistake; globals, so no test frame holds them.
MISTYPED_IN_ENV = [f"{KEY}\r", f" {KEY}", KEY.lower(), f"{KEY}0"]


@pytest.mark.parametrize("variant", range(len(MISTYPED_IN_ENV)))
def test_a_refused_key_from_the_environment_stays_out_of_the_locals(
    variant: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given as an argument the key was hidden from the first line; read from
    # AISIX_AUTHKEY it reached check_authkey as a plain str, whose frame's locals showed it
    # when it was refused (a "\r" from an env file saved on Windows, say).
    monkeypatch.setenv("AISIX_AUTHKEY", MISTYPED_IN_ENV[variant])
    try:
        AisixClient(ACCOUNT)
    except ValidationError as exc:
        shown = _with_locals(exc)
    else:
        raise AssertionError("the key was not refused")
    assert "authkey = '<authkey, not shown>'" in shown  # check_authkey's frame was captured
    assert not _leaks(shown)


async def _error_of(call: Any) -> AisixError:
    # The traceback starts in this frame, whose locals hold no key.
    try:
        await call()
    except AisixError as exc:
        return exc
    raise AssertionError("nothing was raised")


#: Answers that carry the new key and are refused (cut inside the key, misnamed, not
#: well-formed): globals, so that no test frame holds them.
BAD_ROTATIONS = [
    f'<?xml version="1.0"?>\n<xml name="updateKey" result="1"><Item authkey="{NEW_KEY[:20]}',
    f'<xml name="getBalance" result="1"><Item authkey="{NEW_KEY}"/></xml>',
    f'<xml name="updateKey" result="1"><Item cid="1" sid="2" authkey="{NEW_KEY}" x=/></xml>',
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case", ["echo 500", "echo 404", "echo 200", *(f"rotation {i}" for i in range(3))]
)
async def test_an_answer_holding_a_key_stays_out_of_the_locals(case: str) -> None:
    # The message quotes the answer redacted, but the frames that read, checked and parsed
    # it held its bytes (head, raw, body) as plain locals, which error trackers print: the
    # key an error page echoed, or the new key of an updateKey answer they refused.
    def answer(request: Any) -> Any:
        if case.startswith("echo"):
            status = int(case.split()[1])
            return hx.Response(status, content=b"<p>Bad: " + request.content)
        return hx.Response(200, text=BAD_ROTATIONS[int(case.split()[1])])

    async with hx.AsyncClient(transport=hx.MockTransport(answer)) as http:
        client = AisixClient(ACCOUNT, KEY, http_client=http, retry=NO_BACKOFF)
        call = client.get_balance if case.startswith("echo") else client.rotate_key
        shown = _with_locals(await _error_of(call))
    assert "<answer: " in shown  # the frames holding the answer were captured
    assert not _any_part_shown(shown)
    assert not any(NEW_KEY[i : i + 8] in shown for i in range(len(NEW_KEY) - 7))


@pytest.mark.anyio
async def test_a_send_whose_text_holds_the_key_is_refused_before_sending(emulator: Any) -> None:
    # A user's trial sent the key as an SMS (pasted as the content): the CLI refused it,
    # the library sent it. Every way of sending refuses it now, nothing sent, the key
    # named nowhere; a bulk send before its first chunk where the text is one for all.
    key = emulator.authkey
    async with client_for(emulator) as client:
        refusals: list[ValidationError] = []
        for content in (key, f"your code: {key.lower()}", f"x{key}y"):
            with pytest.raises(ValidationError) as raised:
                await client.send_once(["13900000001"], content)
            refusals.append(raised.value)
        with pytest.raises(ValidationError) as raised:
            await client.send_batch([("13900000001", "hi"), ("13900000002", key)])
        refusals.append(raised.value)
        with pytest.raises(ValidationError) as raised:
            await client.send_param("code {p1}", [("13900000001", ["a"]), ("13900000002", [key])])
        refusals.append(raised.value)
        with pytest.raises(ValidationError) as raised:
            client.send_many(["13900000001"], f"key {key}")
        refusals.append(raised.value)
        with pytest.raises(ValidationError) as raised:
            client.send_param_many(f"{key} {{p1}}", [("13900000001", ["a"])])
        refusals.append(raised.value)
        assert emulator.state.message_count == 0
        # A batch stream's items carry their own texts: the chunk holding the key fails,
        # not sent; the others go.
        pairs = [(f"139000000{i:02d}", "hello") for i in range(150)]
        pairs[120] = (pairs[120][0], f"k={key}")
        async with client.send_batch_many(pairs) as stream:
            outcomes = [o async for o in stream]
    statuses = sorted((o.status.value, len(o.mobiles)) for o in outcomes)
    assert statuses == [("accepted", 100), ("failed", 50)], statuses
    [failed] = [o for o in outcomes if o.status.value == "failed"]
    assert isinstance(failed.error, ValidationError)
    refusals.append(failed.error)
    assert emulator.state.message_count == 100
    for error in refusals:
        assert "authkey" in str(error) and not _leaks(str(error)), str(error)
        assert key not in repr(error) and key.lower() not in repr(error)
