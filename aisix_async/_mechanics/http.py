"""The one module that knows the HTTP stack: httpx, or its maintained fork httpx2.

Everything else in the SDK sees :class:`HttpTransport`, which posts a form and returns
the answer's bytes, and the SDK's own errors.

Which stack a client uses: the one of the ``http_client`` it is handed; otherwise the one
named by ``http_stack=`` (or ``AISIX_HTTP_STACK``); otherwise httpx2 when it is installed
(the ``httpx2`` extra), else httpx. The two share one API under different module names
(``httpx``/``httpcore`` against ``httpx2``/``httpcore2``), so one code path serves both;
what must come from the right module (exception classes, the TLS context, ``Limits``) is
looked up in the :class:`_Stack` of the client in use. Neither is imported until a client
needs it, so ``import aisix_async`` works with either one alone.

Lower-layer exceptions are translated here and nowhere else, into a
:class:`TransportError` that says whether the request may have reached the gateway:
only a failure *before* the request was written (refused connection, DNS, connect
timeout) proves the gateway never saw it. A read timeout or a connection dropped after
writing leaves a send's outcome unknown. A TLS handshake that no retry can mend (the
server does not speak TLS; its certificate does not verify) becomes an EndpointError, a
wrong URL, raised at once.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._core.errors import (
    ProtocolError,
    TransportError,
    ValidationError,
    error_for_status,
    error_for_tls,
    quote_answer,
    ssl_error_in,
)
from .._core.wire import AnswerBody, url_setting

if TYPE_CHECKING:
    from typing import TypeAlias

    import httpx
    import httpx2

    #: The HTTP client types a caller may hand to AisixClient(http_client=...).
    HttpClient: TypeAlias = "httpx.AsyncClient | httpx2.AsyncClient"
    _Response: TypeAlias = "httpx.Response | httpx2.Response"

__all__ = ["STACKS", "HttpTransport", "default_stack"]

logger = logging.getLogger("aisix_async")

#: The stacks the SDK runs on, in the order the default prefers them.
STACKS = ("httpx2", "httpx")

_FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
# How much of an error page is read to quote 200 characters of it (see quote_answer).
_ERROR_READ = 4096

# The names (the same in both stacks) of failures that happen before a single byte of the
# request left this machine.
_NOT_SENT_NAMES = (
    "ConnectError",
    "ConnectTimeout",
    "PoolTimeout",
    "UnsupportedProtocol",
    "InvalidURL",
    "LocalProtocolError",
)


class _Stack:
    """One HTTP stack's module and the classes this module needs from it."""

    def __init__(self, module: Any) -> None:
        self.module = module
        # `module.__name__`, not the name asked for: after httpx2.alias_httpx(),
        # `import httpx` yields httpx2 itself.
        self.name: str = module.__name__
        self.version: str = module.__version__
        self.client_type: type[Any] = module.AsyncClient
        self.not_sent: tuple[type[BaseException], ...] = tuple(
            getattr(module, name) for name in _NOT_SENT_NAMES
        )
        self.timeout_error: type[BaseException] = module.TimeoutException
        self.http_error: type[BaseException] = module.HTTPError

    def new_client(self, *, timeout: tuple[float, float, float, None], connections: int) -> Any:
        """The SDK's own client on this stack: its pool, keep-alive and TLS settings."""
        return self.module.AsyncClient(
            timeout=timeout,
            limits=self.module.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                # Shorter than common server keep-alive timeouts (uvicorn: 5 s), so we do
                # not reuse a connection the server is closing: that race looks like a
                # dropped answer and would make a send's outcome unknown for nothing.
                keepalive_expiry=2.0,
            ),
            trust_env=False,
            verify=_tls_context(self.name),
        )


@functools.cache
def _load(name: str) -> _Stack | None:
    # Cached, misses included: a failed import searches all of sys.path each time.
    try:
        return _Stack(importlib.import_module(name))
    except ImportError:
        return None


def default_stack(requested: str | None = None) -> str:
    """The stack a client without an ``http_client`` uses (see the module docstring)."""
    return _chosen(requested).name


def _chosen(requested: str | None) -> _Stack:
    setting, wanted = "http_stack", requested
    if wanted is None:
        setting, wanted = "AISIX_HTTP_STACK", os.environ.get("AISIX_HTTP_STACK") or None
    if wanted is not None:
        if wanted not in STACKS:
            raise ValidationError(
                f"{setting} must be one of {', '.join(map(repr, STACKS))}, not {wanted!r}"
            )
        stack = _load(wanted)
        if stack is None:
            extra = (
                " (pip install 'aisix-async[httpx2]'; in a clone of the repository: "
                "pip install '.[httpx2]')"
                if wanted == "httpx2"
                else ""
            )
            raise ValidationError(f"{setting}={wanted!r}, but {wanted} is not installed{extra}")
        return stack
    for name in STACKS:
        stack = _load(name)
        if stack is not None:
            return stack
    raise ModuleNotFoundError(
        "aisix_async needs httpx or httpx2 and finds neither: pip install aisix-async",
        name="httpx",
    )


def _stack_of(http_client: object) -> _Stack:
    """The stack a caller's client belongs to (its module is imported: they made one)."""
    for name in STACKS:
        if name in sys.modules:
            stack = _load(name)
            if stack is not None and isinstance(http_client, stack.client_type):
                return stack
    raise ValidationError(
        "http_client must be an httpx.AsyncClient or an httpx2.AsyncClient, "
        f"not {type(http_client).__name__}"
    )


@functools.cache
def _tls_context(stack: str) -> ssl.SSLContext:
    """One verifying TLS context per stack for every client of the process, built on first use.

    Building one loads the whole CA store (about 50 ms of CPU here), and the stacks build a
    new one per client unless given one: without this, every AisixClient created inside
    a running event loop would stall it that long. Contexts are safe to share; this one
    ignores SSL_CERT_FILE and the like, as our clients ignore the environment.

    Each stack's own choice of trust is kept: httpx verifies against certifi's CA bundle,
    httpx2 against the operating system's trust store (through truststore on Windows and
    macOS, the system's CA files on Linux), so a CA installed there by an administrator is
    trusted on httpx2 only.
    """
    loaded = _load(stack)
    assert loaded is not None  # only asked for by a stack that exists
    context: ssl.SSLContext = loaded.module.create_ssl_context(trust_env=False)
    return context


class HttpTransport:
    """Posts forms and reads answers with a size cap; owns its HTTP client unless given one."""

    def __init__(
        self,
        *,
        timeout: float,
        max_body: int,
        max_connections: int,
        http_client: HttpClient | None = None,
        http_stack: str | None = None,
    ) -> None:
        if http_client is not None:
            self._stack = _stack_of(http_client)
            if http_stack is not None and http_stack != self._stack.name:
                raise ValidationError(
                    f"http_stack={http_stack!r}, but http_client is an {self._stack.name} client"
                )
        else:
            self._stack = _chosen(http_stack)
        self._owns_client = http_client is None
        self._max_body = max_body
        # (connect, read, write, pool), a form both stacks take. pool=None: a request only
        # reaches the HTTP client once our scheduler has given it a turn, so time spent
        # waiting for a connection is queueing, not the request's own time, and must never
        # surface as PoolTimeout (httpx #1171).
        self._timeout = (timeout, timeout, timeout, None)
        self._client: HttpClient = http_client or self._stack.new_client(
            timeout=self._timeout, connections=max_connections
        )
        logger.debug(
            "HTTP stack: %s %s (%s)",
            self._stack.name,
            self._stack.version,
            "own client" if self._owns_client else "the caller's client",
        )

    @property
    def stack(self) -> str:
        """The HTTP stack in use: ``"httpx"`` or ``"httpx2"``."""
        return self._stack.name

    @property
    def reports_writing(self) -> bool:
        """Whether ``on_writing`` is sure to be called before a request's first byte is
        written: on the SDK's own client (a caller's may have a transport that reports
        nothing, such as ``MockTransport``, so a silence proves nothing there)."""
        return self._owns_client

    async def post_form(
        self,
        url: str,
        body: bytes,
        *,
        on_written: Callable[[], None] | None = None,
        on_writing: Callable[[], None] | None = None,
    ) -> bytes:
        """POST ``body`` to ``url``; return the answer's bytes (HTTP 200 only).

        ``on_written`` is called once the request is written and its answer awaited, and
        ``on_writing`` right before its first byte is written (once it has a connection:
        one waited for in the pool, or still being made, is not written yet). Both on the
        stack's own connections; a transport of the caller's that does not report them,
        such as ``MockTransport``, never calls them.
        """
        action = url.rpartition("action=")[2] or url
        # What errors name: the URL without its query, and the option it comes from.
        bare, setting = url.partition("?")[0], url_setting(action)
        stack = self._stack
        extensions = (
            None
            if on_written is None and on_writing is None
            else {"trace": _trace(on_written, on_writing)}
        )
        try:
            async with self._client.stream(
                "POST",
                url,
                content=body,
                headers=_FORM,
                timeout=self._timeout,
                extensions=extensions,
            ) as response:
                if response.status_code != 200:
                    # More is read than is shown, so that a key straddling the 200th
                    # character is redacted whole before the quote is shortened.
                    head = await self._read_capped(response, _ERROR_READ, action, truncate=True)
                    quote = quote_answer(head, 200, cut=len(head) >= _ERROR_READ)
                    # A 404 from a mistyped URL (or a 413 from a proxy's size limit) is
                    # an EndpointError, raised at once; a 502 is a ProtocolError like a
                    # garbled answer (error_for_status).
                    raise error_for_status(
                        action, response.status_code, bare, quote, size=len(body)
                    )
                return await self._read_capped(response, self._max_body, action)
        except stack.not_sent as exc:
            refusal = _tls_refusal(exc)
            if refusal is not None:
                detail, certificate = refusal
                raise error_for_tls(action, bare, detail, certificate=certificate) from None
            raise TransportError(
                f"{action}: could not reach the gateway ({type(exc).__name__}: {exc})",
                request_sent=False,
                url=bare,
                setting=setting,
            ) from None
        except stack.timeout_error as exc:
            raise TransportError(
                f"{action}: no answer in time ({type(exc).__name__}) after the request was written",
                request_sent=True,
                url=bare,
                setting=setting,
            ) from None
        except stack.http_error as exc:
            raise TransportError(
                f"{action}: the connection failed after the request was written "
                f"({type(exc).__name__}: {exc})",
                request_sent=True,
                url=bare,
                setting=setting,
            ) from None

    async def _read_capped(
        self, response: _Response, cap: int, action: str, *, truncate: bool = False
    ) -> bytes:
        # Decoded bytes are counted, so a compressed bomb is caught as well.
        # AnswerBody: the frames that check and parse an answer hold it as a local, which
        # error trackers print, and it may quote the key (see AnswerBody).
        buffer = bytearray()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) > cap:
                if truncate:
                    return AnswerBody(buffer[:cap])
                # The error leaves this frame to error trackers too: what was read goes.
                del buffer, chunk
                raise ProtocolError(
                    f"{action}: the answer exceeds {cap} bytes; refusing to read more",
                    action=action,
                )
        return AnswerBody(buffer)

    async def aclose(self) -> None:
        """Close the HTTP client if we created it; a caller's client stays theirs."""
        if self._owns_client:
            await self._client.aclose()


# What OpenSSL says when the server answers a ClientHello in plain text: the server does
# not speak TLS at all (an https:// URL for an http:// port, most often; the emulator's
# "400 Bad Request" read as a TLS record). Measured against the emulator: "wrong version
# number" on OpenSSL 3.0, on both stacks, asyncio and trio alike. Reported by others, not
# measured here: OpenSSL 3.2 and later say "record layer failure" for the same bytes (on
# top of "packet length too long" or "wrong version number"), OpenSSL 1.0 said "unknown
# protocol". ("http request" is the other side's word, a TLS server's for a plain client:
# a client never raises it.) Retried, these waited out the whole retry timeout to fail
# the same way.
_NOT_TLS = (
    "wrong version number",
    "record layer failure",
    "packet length too long",
    "unknown protocol",
)
# Where CPython's message says in which of its files it failed: nothing for a person.
_SSL_WHERE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def _tls_refusal(error: BaseException) -> tuple[str, bool] | None:
    """(OpenSSL's words, whether about the certificate) for a connect error caused by a
    TLS handshake that no retry can mend; None for any other.

    The ssl error is found down the chain of causes: the stacks wrap it in their own
    ConnectError, and under trio one more level down (trio's BrokenResourceError, with an
    empty message). A failed verification is final as well: a certificate does not become
    valid, nor start naming another host, by being asked again. Anything else, such as a
    handshake cut short (EOF, reset), may pass and is retried as before.
    """
    cause = ssl_error_in(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return str(cause.verify_message or _SSL_WHERE.sub("", str(cause))).rstrip("."), True
    if cause is not None:
        text = _SSL_WHERE.sub("", str(cause))
        return (text, False) if any(words in text.lower() for words in _NOT_TLS) else None
    return None


def _trace(
    on_written: Callable[[], None] | None, on_writing: Callable[[], None] | None
) -> Callable[[str, object], Awaitable[None]]:
    """A "trace" request extension (httpcore's and httpcore2's) that calls ``on_writing``
    when the connection starts writing the request's head, and ``on_written`` when it
    starts waiting for the answer's head: the request is written."""

    async def trace(event: str, info: object) -> None:
        # HTTP/1.1 and HTTP/2 name them alike ("http11.", "http2." before them).
        if on_writing is not None and event.endswith(".send_request_headers.started"):
            on_writing()
        elif on_written is not None and event.endswith(".receive_response_headers.started"):
            on_written()

    return trace
