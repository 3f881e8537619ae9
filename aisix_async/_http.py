"""The one module that touches httpx.

Everything else in the SDK sees :class:`HttpTransport`, which posts a form and returns
the answer's bytes, and the SDK's own errors. Keeping httpx behind this one file is what
makes a move to its successor (httpx2, same API) a one-file change.

Lower-layer exceptions are translated here and nowhere else, into a
:class:`TransportError` that says whether the request may have reached the gateway:
only a failure *before* the request was written (refused connection, DNS, connect
timeout) proves the gateway never saw it. A read timeout or a connection dropped after
writing leaves a send's outcome unknown.
"""

from __future__ import annotations

import functools
import ssl

import httpx

from ._errors import ProtocolError, TransportError

__all__ = ["HttpClient", "HttpTransport"]

#: The HTTP client type a caller may hand to AisixClient(http_client=...).
HttpClient = httpx.AsyncClient

_FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}

# Failures that happen before a single byte of the request left this machine.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    httpx.LocalProtocolError,
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of the process, built on first use.

    Building one loads the whole CA bundle (about 50 ms of CPU here), and httpx builds a
    new one per client unless given one: without this, every AisixClient created inside
    a running event loop would stall it that long. Contexts are safe to share; this one
    ignores SSL_CERT_FILE and the like, as our clients ignore the environment.
    """
    return httpx.create_ssl_context(trust_env=False)


class HttpTransport:
    """Posts forms and reads answers with a size cap; owns its httpx client unless given one."""

    def __init__(
        self,
        *,
        timeout: float,
        max_body: int,
        max_connections: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns_client = http_client is None
        self._max_body = max_body
        # pool=None: a request only reaches httpx once our scheduler has given it a turn,
        # so time spent waiting for a connection is queueing, not the request's own time,
        # and must never surface as PoolTimeout (httpx #1171).
        self._timeout = httpx.Timeout(timeout, pool=None)
        self._client = http_client or httpx.AsyncClient(
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                # Shorter than common server keep-alive timeouts (uvicorn: 5 s), so we do
                # not reuse a connection the server is closing: that race looks like a
                # dropped answer and would make a send's outcome unknown for nothing.
                keepalive_expiry=2.0,
            ),
            trust_env=False,
            verify=_tls_context(),
        )

    async def post_form(self, url: str, body: bytes) -> bytes:
        """POST ``body`` to ``url``; return the answer's bytes (HTTP 200 only)."""
        action = url.rpartition("action=")[2] or url
        try:
            async with self._client.stream(
                "POST", url, content=body, headers=_FORM, timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    head = await self._read_capped(response, 200, action, truncate=True)
                    raise ProtocolError(
                        f"{action}: HTTP {response.status_code} instead of an answer: "
                        f"{head.decode('utf-8', 'replace')!r}",
                        action=action,
                    )
                return await self._read_capped(response, self._max_body, action)
        except _NOT_SENT as exc:
            raise TransportError(
                f"{action}: could not reach the gateway ({type(exc).__name__}: {exc})",
                request_sent=False,
            ) from None
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{action}: no answer in time ({type(exc).__name__}); the gateway may have "
                "acted on the request",
                request_sent=True,
            ) from None
        except httpx.HTTPError as exc:
            raise TransportError(
                f"{action}: the connection failed after the request was written "
                f"({type(exc).__name__}: {exc}); the gateway may have acted on it",
                request_sent=True,
            ) from None

    async def _read_capped(
        self, response: httpx.Response, cap: int, action: str, *, truncate: bool = False
    ) -> bytes:
        # Decoded bytes are counted, so a compressed bomb is caught as well.
        buffer = bytearray()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) > cap:
                if truncate:
                    return bytes(buffer[:cap])
                raise ProtocolError(
                    f"{action}: the answer exceeds {cap} bytes; refusing to read more",
                    action=action,
                )
        return bytes(buffer)

    async def aclose(self) -> None:
        """Close the httpx client if we created it; a caller's client stays theirs."""
        if self._owns_client:
            await self._client.aclose()
