"""Every result code becomes its own error class, and only lost sends are 'unknown'."""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import attrs
import pytest
from helpers import ACCOUNT, KEY, NO_BACKOFF, OPEN, collect, numbers
from stack_support import hx

import aisix_async
from aisix_async import (
    AccountFormatError,
    AisixClient,
    AisixError,
    AuthenticationError,
    ChannelGroupNotAllowedError,
    ChargeFailedError,
    EndpointError,
    EnterpriseUnavailableError,
    GatewayError,
    GatewayInternalError,
    InsufficientBalanceError,
    InterfaceNotEnabledError,
    InvalidParameterError,
    KeyLockedError,
    NotSentError,
    OutcomeStatus,
    ProtocolError,
    RateLimitedError,
    StaffUnavailableError,
    TransportError,
    UnknownResultError,
    ValidationError,
)
from aisix_async._core import errors as policy

# No backoff, and three attempts: the tests here see a retried code answered twice.
FAST = attrs.evolve(NO_BACKOFF, attempts=3)

CODES = {
    0: AccountFormatError,
    -1: RateLimitedError,
    -2: AuthenticationError,
    -3: KeyLockedError,
    -4: InvalidParameterError,
    -5: EnterpriseUnavailableError,
    -6: StaffUnavailableError,
    -7: InterfaceNotEnabledError,
    -8: ChannelGroupNotAllowedError,
    -9: InsufficientBalanceError,
    -10: GatewayInternalError,
    -11: ChargeFailedError,
    -99: UnknownResultError,
    7: UnknownResultError,
}


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "cls"), sorted(CODES.items()))
async def test_every_result_code_maps_to_its_class(
    code: int, cls: type[GatewayError], gateway_mock: Any
) -> None:
    route = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=hx.Response(200, text=f'<xml name="sendOnce" result="{code}"/>')
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(cls) as caught:
            await client.send_once(["18100002707"], "hi")
    error = caught.value
    assert type(error) is cls
    assert (error.code, error.action) == (code, "sendOnce")
    assert isinstance(error, GatewayError)
    assert str(code) in str(error) and KEY not in str(error)
    # A lost answer (-10, -11, or a code nobody documented) leaves the send unknown.
    assert error.outcome_unknown is (code in (-10, -11) or cls is UnknownResultError)
    # ... and its text says so, for whoever logs str(error) only.
    assert ("may have taken effect" in str(error)) is error.outcome_unknown
    assert error.message in str(error)
    # -1 is retried (the gateway did nothing); everything else is tried once.
    assert route.call_count == (FAST.attempts if code == -1 else 1)


def test_an_error_marked_unknown_after_it_was_made_says_so_once() -> None:
    # Receipts that do not parse are marked unknown where they are caught; a transport
    # error's own words already say what it may have done: no second note.
    error = ProtocolError("sendOnce: a receipt without a msgid", action="sendOnce")
    assert "may have" not in str(error)
    error.outcome_unknown = True
    assert str(error).endswith(
        "(outcome unknown: it may have taken effect; do not repeat it blindly)"
    )
    lost = TransportError(
        "sendOnce: the gateway may have acted on it", request_sent=True, outcome_unknown=True
    )
    assert str(lost) == lost.message


@pytest.mark.anyio
async def test_rate_limit_that_never_clears_mentions_ip_binding(gateway_mock: Any) -> None:
    gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=hx.Response(200, text='<xml name="getBalance" result="-1"/>')
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(RateLimitedError, match="IP address"):
            await client.get_balance()


@pytest.mark.anyio
async def test_read_errors_are_retried_but_lost_sends_are_not(gateway_mock: Any) -> None:
    balance = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        side_effect=[
            hx.ReadTimeout("slow"),
            hx.Response(200, text='<xml name="getBalance" result="-10"/>'),
            hx.Response(200, text='<xml name="getBalance" result="1"><Item remain="3"/></xml>'),
        ]
    )
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        side_effect=hx.ReadTimeout("slow")
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        assert (await client.get_balance()).remain == 3
        with pytest.raises(TransportError) as caught:
            await client.send_once(["18100002707"], "hi")
    assert balance.call_count == 3
    assert send.call_count == 1
    assert caught.value.outcome_unknown and caught.value.request_sent


@pytest.mark.anyio
async def test_connection_refused_is_retried_even_for_sends(gateway_mock: Any) -> None:
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        side_effect=[
            hx.ConnectError("refused"),
            hx.Response(
                200,
                text='<xml name="sendOnce" result="1"><Item msgid="1" total="1" price="0.1" '
                'remain="1"/></xml>',
            ),
        ]
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        receipt = await client.send_once(["18100002707"], "hi")
    assert receipt.msgid == "1" and send.call_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "response",
    [
        hx.Response(502, text="<html><body>Bad gateway</body></html>"),
        hx.Response(200, text='<xml name="sendOnce" result="1"><Item msgid="1" tot'),
        hx.Response(200, text=""),
    ],
    ids=["502", "truncated", "empty"],
)
async def test_garbled_answers_to_a_send_are_unknown_and_not_resent(
    response: hx.Response, gateway_mock: Any
) -> None:
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(return_value=response)
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.send_once(["18100002707"], "hi")
    assert caught.value.outcome_unknown
    assert send.call_count == 1


DATA = "http://api.aisix.com/OpenPlatform/DataApi"


@pytest.mark.anyio
async def test_a_transport_error_says_which_url_and_setting_failed(gateway_mock: Any) -> None:
    # An unreachable DataApi (data_url) was reported as the base URL to check.
    gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        side_effect=hx.ConnectError("refused")
    )
    gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        side_effect=hx.ReadTimeout("slow")
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(TransportError) as polled:
            await client.get_delivery_reports()
        with pytest.raises(TransportError) as asked:
            await client.get_balance()
    assert (polled.value.url, polled.value.setting) == (DATA, "data_url")
    assert (asked.value.url, asked.value.setting) == (OPEN, "base_url")


# A server's error page that echoes the request, key and all (see test_secrets).
ECHO = f"<html><body>Not here: account={ACCOUNT}&authkey={KEY}</body></html>"


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 407, 410, 414])
async def test_an_http_status_no_retry_clears_fails_at_once(status: int, gateway_mock: Any) -> None:
    # A mistyped base URL (404) was retried, silently, for the whole retry timeout: two
    # minutes on the command line (a user's trial).
    route = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=hx.Response(status, text=ECHO)
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(EndpointError) as caught:
            await client.get_balance()
    error = caught.value
    assert route.call_count == 1
    # Still a ProtocolError (an answer that is not the gateway's), for existing handlers.
    assert isinstance(error, ProtocolError)
    assert (error.status, error.url, error.setting, error.action) == (
        status, OPEN, "base_url", "getBalance",
    )  # fmt: skip
    assert f"HTTP {status} " in error.message and "check the base URL" in error.message
    assert KEY not in str(error) and KEY not in repr(error.args)
    assert not error.outcome_unknown


@pytest.mark.anyio
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_an_http_status_that_may_pass_is_still_retried(
    status: int, gateway_mock: Any
) -> None:
    route = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=hx.Response(status, text=ECHO)
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.get_balance()
    assert not isinstance(caught.value, EndpointError)
    assert route.call_count == FAST.attempts
    assert KEY not in str(caught.value)


@pytest.mark.anyio
async def test_a_send_a_wrong_url_refused_is_failed_not_unknown(gateway_mock: Any) -> None:
    # No gateway saw it (see EndpointError): certainly not sent, so neither "unknown"
    # (a resumed campaign would never send it) nor resent by the client.
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=hx.Response(404, text=ECHO)
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(EndpointError) as caught:
            await client.send_once(["18100002707"], "hi")
        assert client.stats().outcome_unknown == 0
    assert send.call_count == 1
    assert not caught.value.outcome_unknown and "may have" not in str(caught.value)
    assert policy.worth_sending_again(caught.value)


@pytest.mark.anyio
async def test_a_bulk_send_stops_at_a_wrong_url_with_every_recipient_failed(
    gateway_mock: Any,
) -> None:
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=hx.Response(404, text=ECHO)
    )
    mobiles = numbers(2_000)
    async with AisixClient(ACCOUNT, KEY, retry=FAST, max_concurrency=1) as client:
        outcomes = await collect(
            client.send_many(mobiles, "hi", chunk_size=100, check_balance=False)
        )
    # One request: every later one would have met the same 404; the rest is not sent.
    assert send.call_count == 1
    assert sorted(m for o in outcomes for m in o.mobiles) == sorted(mobiles)
    assert {o.status for o in outcomes} == {OutcomeStatus.FAILED}
    refused = [o for o in outcomes if isinstance(o.error, EndpointError)]
    assert len(refused) == 1
    rest = [o.error for o in outcomes if o not in refused]
    assert all(isinstance(e, NotSentError) and isinstance(e.cause, EndpointError) for e in rest)


@pytest.mark.anyio
async def test_a_report_stream_ends_at_a_wrong_data_url_until_a_poll_was_answered(
    gateway_mock: Any,
) -> None:
    route = gateway_mock.post(DATA, params={"action": "getSendState"}).mock(
        return_value=hx.Response(404, text=ECHO)
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        # Bounded: a stream that retries it polls for ever.
        with pytest.raises(EndpointError) as caught, anyio.fail_after(10):
            async with client.watch_delivery_reports(interval=0.01) as reports:
                async for _ in reports:
                    pass
    assert route.call_count == 1
    assert caught.value.setting == "data_url"
    assert "check the data URL" in caught.value.message
    # A URL that served the queue and answers 404 now is a gateway being redeployed: a
    # follower backs off and goes on.
    empty = '<xml name="getSendState" result="1"/>'
    one = (
        '<xml name="getSendState" result="1"><Item id="1" msgid="1" mobile="18100002707" '
        'result="2" return="DELIVRD"/></xml>'
    )
    route.mock(
        side_effect=[
            hx.Response(200, text=empty),
            hx.Response(404, text=ECHO),
            hx.Response(200, text=one),
            # Enough empty answers for the stream to be idle for 0.2 s.
            *[hx.Response(200, text=empty)] * 1000,
        ]
    )
    client = AisixClient(ACCOUNT, KEY, retry=FAST)
    options: dict[str, Any] = {"interval": 0.01, "max_backoff": 0.01, "stop_when_idle": 0.2}
    async with client, client.watch_delivery_reports(**options) as reports:
        got = [report.mobile async for report in reports]
    assert got == ["18100002707"]


def test_the_endpoint_error_names_a_base_url_given_with_its_endpoint() -> None:
    error = policy.error_for_status("getBalance", 404, f"{OPEN}/OpenApi", "''")
    assert isinstance(error, EndpointError)
    assert "ends in /OpenApi twice" in error.message


@pytest.mark.anyio
async def test_receipt_count_mismatch_is_unknown(gateway_mock: Any) -> None:
    gateway_mock.post(OPEN, params={"action": "sendBatch"}).mock(
        return_value=hx.Response(
            200,
            text='<xml name="sendBatch" result="1"><Item msgid="1" total="1" price="0.1" '
            'remain="1"/></xml>',
        )
    )
    async with AisixClient(ACCOUNT, KEY) as client:
        with pytest.raises(ProtocolError, match="1 receipts for 2 messages") as caught:
            await client.send_batch([("18100002707", "a"), ("18600007370", "b")])
    assert caught.value.outcome_unknown


@pytest.mark.anyio
async def test_lost_update_key_answer_is_unknown_and_keeps_the_old_key(gateway_mock: Any) -> None:
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(side_effect=hx.ReadTimeout("lost"))
    balance = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=hx.Response(
            200, text='<xml name="getBalance" result="1"><Item remain="1"/></xml>'
        )
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(TransportError) as caught:
            await client.rotate_key()
        await client.get_balance()
    assert caught.value.outcome_unknown
    assert KEY.encode() in balance.calls.last.request.content


@pytest.mark.anyio
async def test_update_key_minus_10_is_a_certain_failure_that_keeps_the_old_key(
    gateway_mock: Any,
) -> None:
    # The document: "-10 Internal error, update failed". Not "may have changed".
    gateway_mock.post(OPEN, params={"action": "updateKey"}).mock(
        return_value=hx.Response(200, text='<xml name="updateKey" result="-10"></xml>')
    )
    balance = gateway_mock.post(OPEN, params={"action": "getBalance"}).mock(
        return_value=hx.Response(
            200, text='<xml name="getBalance" result="1"><Item remain="1"/></xml>'
        )
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(GatewayInternalError, match="update failed") as caught:
            await client.rotate_key()
        await client.get_balance()
    assert not caught.value.outcome_unknown
    assert KEY.encode() in balance.calls.last.request.content
    # A send's -10 stays unknown: it may have gone out.
    assert policy.error_for_code("sendOnce", -10, is_send=True).outcome_unknown


def test_hierarchy_roots_and_builtins() -> None:
    assert issubclass(ValidationError, ValueError)
    for cls in {*CODES.values(), TransportError, ProtocolError, ValidationError}:
        assert issubclass(cls, AisixError)
    # The tree drawn in the module docstring names every public error class.
    doc = aisix_async._core.errors.__doc__ or ""
    for name in aisix_async.__all__:
        obj = getattr(aisix_async, name)
        if isinstance(obj, type) and issubclass(obj, AisixError):
            assert name in doc, name


def test_the_error_policy_answers_each_question_once() -> None:
    unsent = aisix_async.TransportError("refused", request_sent=False)
    written = aisix_async.TransportError("reset", request_sent=True)
    locked = aisix_async.KeyLockedError("sendOnce", -3)
    broke = aisix_async.InsufficientBalanceError("sendOnce", -9)
    bad = aisix_async.InvalidParameterError("sendOnce", -4)
    stopped = aisix_async.NotSentError(aisix_async.SendStoppedError("stopped"))
    # A bulk send stops at what every later request would meet too.
    assert [policy.concerns_the_account(e) for e in (unsent, written, locked, broke, bad)] == [
        True, False, True, True, False,
    ]  # fmt: skip
    # A campaign resends what certainly did not go out and may pass, never -4 or the unknown.
    assert [policy.worth_sending_again(e) for e in (unsent, written, locked, bad, stopped)] == [
        True, False, True, False, True,
    ]  # fmt: skip
    assert not policy.worth_sending_again(None)
    # A wrong URL: nothing went out, and every later request meets it too.
    wrong = policy.error_for_status("sendOnce", 404, OPEN, "''")
    assert policy.concerns_the_account(wrong) and policy.worth_sending_again(wrong)
    assert not policy.is_retryable(wrong, unsafe=False)
    # A report stream ends only when the account is refused.
    assert policy.ends_polling(locked) and not policy.ends_polling(broke)
    assert not policy.ends_polling(aisix_async.RateLimitedError("getSendState", -1))


@pytest.mark.anyio
async def test_a_send_refused_as_too_large_is_failed_not_unknown(gateway_mock: Any) -> None:
    # A proxy's body size limit (HTTP 413) refuses the request before the gateway sees it:
    # it was called unknown, so a resumed campaign never sent those recipients again.
    send = gateway_mock.post(OPEN, params={"action": "sendOnce"}).mock(
        return_value=hx.Response(413, text=ECHO)
    )
    async with AisixClient(ACCOUNT, KEY, retry=FAST) as client:
        with pytest.raises(EndpointError) as caught:
            await client.send_once(["18100002707"], "hi")
        assert client.stats().outcome_unknown == 0
    error = caught.value
    assert send.call_count == 1
    assert (error.status, error.url, error.setting) == (413, OPEN, "base_url")
    assert not error.outcome_unknown and "may have" not in str(error)
    assert policy.never_reached_the_gateway(error) and policy.worth_sending_again(error)
    # It says what to change, and how big the refused body was.
    body = len(send.calls[0].request.content)
    assert "chunk_size" in error.message and f"this one: {body:,} bytes" in error.message
    assert "check the base URL" not in error.message
    assert KEY not in str(error) and KEY not in repr(error.args)


def _connect_error(*chain: BaseException) -> BaseException:
    """The stack's ConnectError caused by ``chain`` (each caused by the next), as the stacks
    raise a failed handshake: on trio with an empty message and one level more."""
    error = hx.ConnectError("")
    link = error
    for cause in chain:
        link.__cause__ = link = cause
    return error


class _Failing:
    """A caller's HTTP client whose every request fails with ``error``, raised as it is
    (the mock router replaces an exception's cause with its own)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def client(self) -> Any:
        def fail(request: Any) -> Any:
            self.calls += 1
            raise self.error

        return hx.AsyncClient(transport=hx.MockTransport(fail))


def _expired() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired"
    )
    error.verify_message = "certificate has expired"
    return error


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("chain", "said"),
    [
        # OpenSSL 3.0, as measured against the emulator (test_errors_on_the_wire).
        ((ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),),
         "does not answer in TLS ([SSL: WRONG_VERSION_NUMBER] wrong version number)"),
        # OpenSSL 3.2 and later, for the same plain-text answer; and trio's extra level.
        ((anyio.BrokenResourceError(), ssl.SSLError(1, "[SSL] record layer failure")),
         "does not answer in TLS"),
        ((ssl.SSLError(1, "[SSL: PACKET_LENGTH_TOO_LONG] packet length too long"),),
         "does not answer in TLS"),
        ((_expired(),), "did not verify (certificate has expired)"),
    ],
)  # fmt: skip
async def test_a_tls_handshake_no_retry_mends_fails_at_once(
    chain: tuple[BaseException, ...], said: str
) -> None:
    tried = _Failing(_connect_error(*chain))
    async with tried.client() as http_client:
        client = AisixClient(ACCOUNT, KEY, retry=FAST, http_client=http_client)
        async with client:
            with pytest.raises(EndpointError) as caught:
                await client.send_once(["18100002707"], "hi")
    assert tried.calls == 1
    error = caught.value
    assert (error.status, error.url, error.setting) == (None, OPEN, "base_url")
    assert said in error.message and "check the base URL" in error.message
    assert "_ssl.c" not in error.message
    assert not error.outcome_unknown and policy.worth_sending_again(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cause",
    [
        # A handshake cut short (a server restarting, a load balancer's limit) may pass.
        ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
async def test_a_tls_handshake_that_may_pass_is_still_retried(
    cause: BaseException,
) -> None:
    tried = _Failing(_connect_error(cause))
    async with tried.client() as http_client:
        client = AisixClient(ACCOUNT, KEY, retry=FAST, http_client=http_client)
        async with client:
            with pytest.raises(TransportError) as caught:
                await client.send_once(["18100002707"], "hi")
    assert tried.calls == FAST.attempts
    assert not caught.value.request_sent and not caught.value.outcome_unknown
