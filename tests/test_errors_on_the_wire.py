"""Refusals no retry clears, met over real HTTP on 127.0.0.1 (the emulator under uvicorn).

Each ends a send as failed, certainly not sent, at once: never as unknown, and never
after waiting out the retry timeout. The exact shapes are in test_errors.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import anyio
import pytest
import trustme
from helpers import client_for, collect, numbers
from redis_support import tls_front
from stack_support import hx

from aisix_async import EndpointError, NotSentError, OutcomeStatus
from aisix_async._core import errors as policy

pytestmark = pytest.mark.anyio

# Small enough that a request of a few hundred numbers is over it.
LIMIT = 1024


async def test_a_send_over_the_servers_body_limit_is_failed_at_once(emulator: Any) -> None:
    emulator.state.configure(max_body_bytes=LIMIT)
    async with client_for(emulator) as client:
        with pytest.raises(EndpointError) as caught:
            await client.send_once(numbers(200), "hello")
        assert client.stats().outcome_unknown == 0
    error = caught.value
    assert error.status == 413 and not error.outcome_unknown
    assert "chunk_size" in error.message
    assert emulator.authkey not in str(error)
    counters = emulator.state.get_counters()
    # Asked once: the same request meets the same refusal.
    assert counters.http_errors[413] == 1
    assert emulator.state.message_count == 0


async def test_a_bulk_send_over_the_body_limit_ends_failed_not_unknown(emulator: Any) -> None:
    emulator.state.configure(max_body_bytes=LIMIT)
    mobiles = numbers(300)
    async with client_for(emulator, max_concurrency=1) as client:
        outcomes = await collect(
            client.send_many(mobiles, "hello", chunk_size=100, check_balance=False)
        )
    assert sorted(m for o in outcomes for m in o.mobiles) == sorted(mobiles)
    assert {o.status for o in outcomes} == {OutcomeStatus.FAILED}
    # The first chunk met the 413; the rest were not sent, and a later run may send them.
    refused = [o.error for o in outcomes if isinstance(o.error, EndpointError)]
    assert len(refused) == 1
    assert all(isinstance(o.error, NotSentError) or o.error in refused for o in outcomes)
    assert all(policy.worth_sending_again(o.error) for o in outcomes)
    assert emulator.state.message_count == 0


async def test_a_large_send_over_the_body_limit_is_failed_too(emulator: Any) -> None:
    # About 900 kB (100 messages of 1000 Chinese characters, 9 bytes each once encoded):
    # the answer reaches the client only from a server that reads the refused body before
    # closing (the emulator did not, and the send looked unknown: a connection reset).
    emulator.state.configure(max_body_bytes=LIMIT)
    pairs = [(mobile, "短信" * 500) for mobile in numbers(100)]
    async with client_for(emulator) as client:
        # Five times: the reset lost the answer about half the time on asyncio.
        for _ in range(5):
            with pytest.raises(EndpointError) as caught:
                await client.send_batch(pairs)
            assert caught.value.status == 413 and not caught.value.outcome_unknown
    assert emulator.state.message_count == 0


# -- TLS: an https:// URL whose handshake can never succeed ---------------------------


def assert_tried_once_and_failed(stats: Any) -> None:
    """One attempt of one sendOnce (no retry), failed: certainly not sent."""
    attempts = sum(n for (action, _), n in stats.results.items() if action == "sendOnce")
    assert attempts == 1, stats.results
    assert stats.calls == {("sendOnce", "failed"): 1} and stats.outcome_unknown == 0


def plain_as_https(emulator: Any) -> str:
    """The emulator's base URL with https://: its port speaks plain HTTP only."""
    return emulator.base_url.replace("http://", "https://", 1)


async def test_an_https_url_for_a_plain_port_fails_at_once(emulator: Any) -> None:
    # The handshake met a plain HTTP server's "400 Bad Request" (OpenSSL: wrong version
    # number). It was retried as a connect failure for the whole retry timeout.
    url = plain_as_https(emulator)
    started = time.monotonic()
    # The library's own retry policy: a retry would wait for a backoff first.
    async with client_for(emulator, base_url=url, retry=None) as client:
        with pytest.raises(EndpointError) as caught, anyio.fail_after(10):
            await client.send_once(["18100002707"], "hi")
        assert_tried_once_and_failed(client.stats())
    assert time.monotonic() - started < 5
    error = caught.value
    assert error.status is None and error.setting == "base_url"
    assert error.url == f"{url}/OpenApi"
    assert "does not answer in TLS" in error.message and "check the base URL" in error.message
    assert not error.outcome_unknown and policy.never_reached_the_gateway(error)
    assert emulator.authkey not in str(error)
    assert emulator.state.message_count == 0


async def test_a_bulk_send_to_a_plain_port_over_https_ends_failed(emulator: Any) -> None:
    mobiles = numbers(250)
    url = plain_as_https(emulator)
    async with client_for(emulator, base_url=url, max_concurrency=1) as client:
        outcomes = await collect(
            client.send_many(mobiles, "hello", chunk_size=100, check_balance=False)
        )
    assert sorted(m for o in outcomes for m in o.mobiles) == sorted(mobiles)
    assert {o.status for o in outcomes} == {OutcomeStatus.FAILED}
    # Stopped by the refusal at once, not by a connect failure retried until it timed out.
    assert sum(isinstance(o.error, EndpointError) for o in outcomes) == 1
    assert all(policy.worth_sending_again(o.error) for o in outcomes)


async def test_a_report_stream_at_a_plain_port_over_https_ends(emulator: Any) -> None:
    url = plain_as_https(emulator)
    async with client_for(emulator, base_url=url) as client:
        with pytest.raises(EndpointError) as caught, anyio.fail_after(10):
            async with client.watch_delivery_reports(interval=0.01) as reports:
                async for _ in reports:
                    pass
    assert caught.value.setting == "data_url"
    assert "check the data URL" in caught.value.message


def tls_context_for(ca: trustme.CA, name: str) -> ssl.SSLContext:
    """A server's TLS context with a certificate for ``name`` signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


async def test_a_certificate_that_does_not_verify_fails_at_once(emulator: Any) -> None:
    # A TLS endpoint in front of the emulator: the client's side of the handshake is real.
    ca = trustme.CA()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    for name, http_client, said in [
        # Signed by an authority nobody trusts (self-signed, a private CA).
        ("127.0.0.1", None, "local issuer"),
        # Trusted, but for another host than the URL names.
        ("gateway.example", hx.AsyncClient(verify=trusting), "mismatch"),
    ]:
        emulator.state.reset()
        async with tls_front(emulator.port, tls_context_for(ca, name)) as front:
            url = f"https://127.0.0.1:{front.port}/OpenPlatform"
            options: dict[str, Any] = {"base_url": url, "retry": None}
            if http_client is not None:
                options["http_client"] = http_client
            async with client_for(emulator, **options) as client:
                with pytest.raises(EndpointError) as caught, anyio.fail_after(10):
                    await client.send_once(["18100002707"], "hi")
                assert_tried_once_and_failed(client.stats())
            if http_client is not None:
                await http_client.aclose()
            assert front.handshakes == 0
        error = caught.value
        assert error.status is None and not error.outcome_unknown
        assert f"the TLS certificate of {url}/OpenApi did not verify" in error.message
        assert said in error.message and "check the base URL" in error.message
        assert emulator.authkey not in str(error)
        assert emulator.state.message_count == 0


async def test_a_certificate_that_verifies_sends_as_over_http(emulator: Any) -> None:
    ca = trustme.CA()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with (
        tls_front(emulator.port, tls_context_for(ca, "127.0.0.1")) as front,
        hx.AsyncClient(verify=trusting) as http_client,
    ):
        url = f"https://127.0.0.1:{front.port}/OpenPlatform"
        async with client_for(emulator, base_url=url, http_client=http_client) as client:
            receipt = await client.send_once(["18100002707"], "hi")
    assert receipt.total == 1
    assert emulator.state.message_count == 1
