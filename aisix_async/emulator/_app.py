"""The emulator as a raw ASGI 3 application: routing, bodies, faults, answers.

No web framework: the protocol is two endpoints and a form, and a framework's routing,
request objects and middleware would cost more per request than the gateway logic itself
(benchmarks drive this at thousands of requests per second).

Routes:
    /OpenPlatform/OpenApi                         sendOnce sendBatch sendParam getBalance
                                                  updateKey getChannelGroup getSign
    /OpenPlatform/DataApi, /DataPlatform/DataApi  getSendState getReply
    /_emulator/...                                JSON control (see `_control`)
    anything else                                 HTTP 404, a small HTML page

A protocol request may be GET (query string) or POST (form body, UTF-8; a query string
on a POST is merged as a servlet merges it: for each name, the query string's first
value, else the body's first). A POST body with a content type other than the
form type is ignored, as a servlet would ignore it. Bodies over `max_body_bytes` get
HTTP 413, nothing done (the rest of such a body is read and dropped first, up to
`_SWALLOW` bytes, so the client gets to read the answer); undecodable UTF-8 gets result
-4. Every result code is HTTP 200.

Under uvicorn the app runs on one event loop; everything between reading the request
and rendering the answer happens under the state lock with no await, so requests never
interleave inside a charge.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio

from ._actions import ALL_ACTIONS, DATA_API_ACTIONS, OPEN_API_ACTIONS, UNKNOWN_ACTION, handle
from ._config import EmulatorConfig
from ._control import CONTROL_PREFIX, control_request
from ._faults import BAD_GATEWAY_PAGE, DeliberateDrop, draw_fault, slow_pieces, truncate
from ._sends import Items
from ._state import GatewayState
from ._xmlout import XML_CONTENT_TYPE, html_page, render_response

__all__ = ["ENDPOINTS", "EmulatorApp", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Path -> the actions served there.
ENDPOINTS: dict[str, frozenset[str]] = {
    "/OpenPlatform/OpenApi": OPEN_API_ACTIONS,
    "/OpenPlatform/DataApi": DATA_API_ACTIONS,
    "/DataPlatform/DataApi": DATA_API_ACTIONS,
}

_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_FORM = b"application/x-www-form-urlencoded"
_NOT_FOUND = html_page(404, "Not Found")
_NOT_ALLOWED = html_page(405, "Method Not Allowed")
_TOO_LARGE = html_page(413, "Request Entity Too Large")
# How much of a refused body is read and dropped before the 413. A server that answers and
# closes with the body unread resets the connection (unread data at close is a TCP RST),
# and the client loses the answer: a send then looks unknown where it was refused. Real
# servers read on: Tomcat swallows up to 2 MiB (maxSwallowSize), nginx for up to 30 s
# (lingering_close). Past this, the emulator closes, as they do.
_SWALLOW = 4 * 1024 * 1024


#: Faults answered without acting at all, and their result codes.
_REFUSED_BEFORE_ACTING = {"error_before_charge": -10, "charge_failed": -11}


class _TooLarge(Exception):
    """The body is over the limit (answered with HTTP 413)."""

    def __init__(self, *, ended: bool) -> None:
        super().__init__()
        #: Whether the whole body was received: if not, the rest is read and dropped.
        self.ended = ended


class _Disconnected(Exception):
    """The client went away before its body arrived."""


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge(ended=not message.get("more_body", False))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _swallow(receive: Receive, cap: int) -> bool:
    """Read and drop the rest of a refused body, up to ``cap`` bytes (see _SWALLOW).

    False when the client went away meanwhile: there is nobody to answer.
    """
    size = 0
    while size <= cap:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return True


def _parse_form(*raws: bytes, errors: str = "strict") -> dict[str, str]:
    """Forms and query strings, in order, as one dict: the first value of a name wins.

    That is what a Java servlet's `getParameter` answers (PROTOCOL-NOTES: the gateway
    reads parameters as one does): the container puts query-string values before body
    values and returns a name's first value (Servlet spec, "HTTP Protocol Parameters").
    What `urllib.parse.parse_qsl` does, minus its per-field cost: most fields hold no
    `+` and no `%`, so they skip unquoting. Raw bytes must be UTF-8 and so must every
    %-escape: both raise UnicodeDecodeError with the default errors="strict".
    """
    fields: dict[str, str] = {}
    for raw in raws:
        for pair in raw.decode("utf-8", errors).split("&"):
            if not pair:
                continue
            name, _, value = pair.partition("=")
            if "+" in name:
                name = name.replace("+", " ")
            if "%" in name:
                name = unquote(name, errors=errors)
            if "+" in value:
                value = value.replace("+", " ")
            if "%" in value:
                # Decoded even when the name was seen: an undecodable value is -4
                # wherever it stands, as it was when the last value won.
                value = unquote(value, errors=errors)
            fields.setdefault(name, value)
    return fields


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EmulatorApp:
    """The ASGI application of one emulated gateway; `state` is its live `GatewayState`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        served = ENDPOINTS.get(path)
        try:
            if served is not None:
                await self._protocol(scope, receive, send, served)
            elif path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
                await self._control(scope, receive, send)
            else:
                self._count_http_error(404)
                await _answer(send, 404, _NOT_FOUND, _HTML)
        except _TooLarge as refused:
            self._count_http_error(413)
            if not refused.ended and not await _swallow(receive, _SWALLOW):
                return
            await _answer(send, 413, _TOO_LARGE, _HTML, [(b"connection", b"close")])
        except _Disconnected:
            return

    def _count_http_error(self, status: int) -> None:
        with self.state.lock:
            self.state.counters.http_errors[status] += 1

    async def _body(self, scope: Scope, receive: Receive, *, form_only: bool) -> bytes:
        limit = self.state.config.max_body_bytes
        content_type = None
        too_large = waits = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                # Refuse before reading: a client sending 1 GiB should not make us buffer it.
                too_large = value.isdigit() and int(value) > limit
            elif name == b"content-type":
                content_type = value
            elif name == b"expect":
                waits = value.strip().lower() == b"100-continue"
        if too_large:
            # A client waiting for "100 Continue" sends no body unless asked: reading
            # would ask for it (uvicorn answers 100 at the first receive) only to drop it.
            raise _TooLarge(ended=waits)
        body = await _read_body(receive, limit)
        form = content_type is None or content_type.split(b";", 1)[0].strip().lower() == _FORM
        if form_only and not form:
            return b""
        return body

    async def _protocol(
        self, scope: Scope, receive: Receive, send: Send, served: frozenset[str]
    ) -> None:
        method = scope["method"]
        if method not in ("GET", "POST"):
            self._count_http_error(405)
            await _answer(send, 405, _NOT_ALLOWED, _HTML, [(b"allow", b"GET, POST")])
            return
        body = await self._body(scope, receive, form_only=True) if method == "POST" else b""
        query: bytes = scope["query_string"]
        state = self.state
        try:
            params = _parse_form(query, body)
        except UnicodeDecodeError:
            await self._undecodable(send, query, body)
            return
        action = params.get("action", "")

        faults = state.config.faults
        fault: str | None = None
        if faults.active:
            with state.lock:
                fault, delay = draw_fault(faults, state.fault_rng, action)
            if delay > 0:
                with state.lock:
                    state.held += 1
                try:
                    await anyio.sleep(delay)
                finally:
                    with state.lock:
                        state.held -= 1

        code: int = -10
        items: Items = []
        with state.lock:
            counters = state.counters
            if fault is not None and fault != "error_after_charge":
                # That one fires only on a request that was charged (see handle).
                counters.faults[fault] += 1
            if fault == "http_502":
                # The proxy answered: the gateway never saw the request.
                counters.requests[action if action in ALL_ACTIONS else UNKNOWN_ACTION] += 1
                counters.http_errors[502] += 1
                request_id = 0
            elif fault in _REFUSED_BEFORE_ACTING:
                code = _REFUSED_BEFORE_ACTING[fault]
                counters.requests[action if action in ALL_ACTIONS else UNKNOWN_ACTION] += 1
                counters.results[code] += 1
                request_id = state.next_request_id()
            else:
                request_id = state.next_request_id()
                code, items = handle(state, action, params, served, request_id, fault)

        if fault == "http_502":
            await _answer(send, 502, BAD_GATEWAY_PAGE, _HTML)
            return
        answer = render_response(action, code, items)
        extra = [(b"x-emulator-request-id", b"%d" % request_id)]
        if fault == "drop_after_process":
            await self._drop(send, answer, extra)
        elif fault == "truncated_xml":
            await _answer(send, 200, truncate(answer), XML_CONTENT_TYPE, extra)
        elif fault == "slow_body":
            await self._trickle(send, answer, extra, faults.slow_body_ms / 1000.0)
        else:
            await _answer(send, 200, answer, XML_CONTENT_TYPE, extra)

    async def _undecodable(self, send: Send, query: bytes, body: bytes) -> None:
        # Best effort at the action's name for the answer, then -4 like any bad parameter.
        action = _parse_form(query, body, errors="replace").get("action", "")
        with self.state.lock:
            counters = self.state.counters
            counters.requests[action if action in ALL_ACTIONS else UNKNOWN_ACTION] += 1
            counters.results[-4] += 1
        await _answer(send, 200, render_response(action, -4), XML_CONTENT_TYPE)

    @staticmethod
    async def _drop(send: Send, answer: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        # Headers promise the whole answer, half of it goes out, then the app raises:
        # uvicorn closes the connection and the client reads a body cut short.
        headers = [
            (b"content-type", XML_CONTENT_TYPE),
            (b"content-length", b"%d" % len(answer)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": answer[: len(answer) // 2], "more_body": True}
        )
        raise DeliberateDrop("fault drop_after_process: connection cut mid-answer")

    @staticmethod
    async def _trickle(
        send: Send, answer: bytes, extra: list[tuple[bytes, bytes]], total_delay: float
    ) -> None:
        headers = [
            (b"content-type", XML_CONTENT_TYPE),
            (b"content-length", b"%d" % len(answer)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        pieces = slow_pieces(answer)
        pause = total_delay / len(pieces)
        for index, piece in enumerate(pieces):
            await anyio.sleep(pause)
            last = index == len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": not last})

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        body = await self._body(scope, receive, form_only=False) if method == "POST" else b""
        status, data = control_request(
            self.state, method, scope["path"], scope["query_string"], body
        )
        payload = json.dumps(data, ensure_ascii=False).encode()
        await _answer(send, status, payload, _JSON)


def create_app(
    config: EmulatorConfig | None = None, *, state: GatewayState | None = None
) -> EmulatorApp:
    """An ASGI app emulating the gateway (use with uvicorn, or httpx.ASGITransport).

    Pass `state` to share a `GatewayState` you steer; otherwise one is made from
    `config`. The app's state is `app.state`.
    """
    if state is None:
        state = GatewayState(config)
    elif config is not None and config is not state.config:
        raise ValueError("pass either config or state, not both")
    return EmulatorApp(state)
