"""The HTTP stack under test, and one way to mock the gateway on either stack.

``nox -s tests`` runs the suite once per stack: once where only httpx is installed, once
where only httpx2 is (httpx and httpcore uninstalled). ``hx`` is the module of the stack
the SDK's own clients use here, so a test written against ``hx`` runs on both.

Exact request shapes are pinned through the ``gateway_mock`` fixture (conftest.py, built
by :func:`mocked_gateway`): on httpx it is respx itself; on httpx2, which respx does not
support yet (its pull request #317 is open), it is :class:`Router`, a small stand-in
answering through httpx2's own ``MockTransport``. (httpx2-pytest, a fork of pytest-httpx
with two releases so far, has another interface and requires pytest 9.) Both offer the
part of respx's interface the tests use: ``post(url, params=...)``, ``.mock(return_value=
..., side_effect=...)``, and a route's ``calls``, ``call_count`` and ``called``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from aisix_async._mechanics.http import default_stack

#: The stack in use: "httpx" or "httpx2".
STACK = default_stack()
#: Its module (httpx or httpx2): build answers, errors and clients with it.
hx: Any = importlib.import_module(STACK)


class Call:
    """One request a route answered."""

    def __init__(self, request: Any, response: Any) -> None:
        self.request = request
        self.response = response


class Calls(list[Call]):
    @property
    def last(self) -> Call:
        return self[-1]


class Route:
    """Requests to one URL whose query holds ``params``, answered as told."""

    def __init__(self, url: str, params: dict[str, str]) -> None:
        self.url = url
        self.params = params
        self.calls = Calls()
        self._return_value: Any = None
        self._side_effect: Any = None

    def mock(self, *, return_value: Any = None, side_effect: Any = None) -> Route:
        self._return_value = return_value
        # A list is played in order, one item per request, as respx does.
        self._side_effect = iter(side_effect) if isinstance(side_effect, list) else side_effect
        return self

    @property
    def call_count(self) -> int:
        return len(self.calls)

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def matches(self, request: Any) -> bool:
        url = request.url
        base = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        query = dict(parse_qsl(url.query.decode("ascii")))
        return (
            request.method == "POST"
            and base == self.url
            and all(query.get(k) == v for k, v in self.params.items())
        )

    def answer(self, request: Any) -> Any:
        effect = self._side_effect
        if isinstance(effect, Iterator):
            effect = next(effect)
        if effect is None:
            effect = self._return_value
        if isinstance(effect, type) and issubclass(effect, BaseException):
            effect = effect("mocked error", request=request)
        if isinstance(effect, BaseException):
            self.calls.append(Call(request, None))
            raise effect
        if effect is None:
            raise AssertionError(f"route {self.url} {self.params} was given no answer")
        # A fresh response per request, so one return_value can answer many times.
        response = hx.Response(effect.status_code, headers=effect.headers, content=effect.content)
        self.calls.append(Call(request, response))
        return response


class Router:
    """A respx-like router for httpx2, answering through ``httpx2.MockTransport``."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def post(self, url: str, *, params: dict[str, str] | None = None) -> Route:
        route = Route(url, dict(params or {}))
        self.routes.append(route)
        return route

    def handle(self, request: Any) -> Any:
        for route in self.routes:
            if route.matches(request):
                return route.answer(request)
        raise AssertionError(f"no route for {request.method} {request.url}")


@contextlib.contextmanager
def mocked_gateway(monkeypatch: Any) -> Iterator[Any]:
    """Send every request of every client of the stack to the routes set on the router."""
    if STACK == "httpx":
        import respx

        with respx.mock(assert_all_called=False) as router:
            yield router
        return
    router = Router()
    transport = hx.MockTransport(router.handle)

    async def handle_async_request(self: Any, request: Any) -> Any:
        # The SDK's own client keeps its pool and TLS settings; only the network is replaced.
        return await transport.handle_async_request(request)

    monkeypatch.setattr(hx.AsyncHTTPTransport, "handle_async_request", handle_async_request)
    yield router
