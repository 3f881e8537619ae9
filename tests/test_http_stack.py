"""Which HTTP stack a client runs on (httpx or httpx2), and that each works through it.

The rest of the suite runs once per stack (``nox -s tests``). The tests here are about the
choice itself; those needing both stacks installed (as ``pip install 'aisix-async[httpx2]'``
leaves them) skip elsewhere, and ``nox -s tests`` runs them before it uninstalls httpx.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import ACCOUNT, KEY, NO_BACKOFF

from aisix_async import AisixClient, TransportError, ValidationError
from aisix_async._mechanics.http import STACKS, default_stack

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = [name for name in STACKS if importlib.util.find_spec(name) is not None]
MISSING = [name for name in STACKS if name not in INSTALLED]

both = pytest.mark.skipif(len(INSTALLED) < 2, reason="needs httpx and httpx2 installed")


@pytest.fixture(autouse=True)
def _no_stack_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AISIX_HTTP_STACK", raising=False)


def test_the_default_is_httpx2_when_installed_else_httpx() -> None:
    assert default_stack() == ("httpx2" if "httpx2" in INSTALLED else "httpx")


@pytest.mark.anyio
async def test_stats_and_the_log_name_the_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aisix_async")
    async with AisixClient(ACCOUNT, KEY) as client:
        assert client.stats().http_stack == default_stack()
    version = importlib.import_module(default_stack()).__version__
    assert f"HTTP stack: {default_stack()} {version} (own client)" in caplog.text


@both
@pytest.mark.anyio
async def test_http_stack_or_the_environment_pins_a_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STACKS:
        async with AisixClient(ACCOUNT, KEY, http_stack=name) as client:
            assert client.stats().http_stack == name
    monkeypatch.setenv("AISIX_HTTP_STACK", "httpx")
    async with AisixClient(ACCOUNT, KEY) as client:
        assert client.stats().http_stack == "httpx"
    # The argument wins over the environment.
    async with AisixClient(ACCOUNT, KEY, http_stack="httpx2") as client:
        assert client.stats().http_stack == "httpx2"


@pytest.mark.anyio
@pytest.mark.parametrize("name", INSTALLED)
async def test_a_passed_in_client_brings_its_stack_and_its_errors(name: str) -> None:
    """Exceptions of the client's own stack map to request_sent as they should."""
    module: Any = importlib.import_module(name)
    answers: list[Any] = [
        module.ConnectError("refused"),  # before the request: retried, even for a send
        module.Response(
            200,
            text='<xml name="sendOnce" result="1"><Item msgid="7" total="1" '
            'price="0.1" remain="1"/></xml>',
        ),
        module.ReadTimeout("lost"),  # after it: unknown, not resent
        module.RemoteProtocolError("dropped"),  # the same
    ]

    def handler(request: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    http = module.AsyncClient(transport=module.MockTransport(handler))
    async with http, AisixClient(ACCOUNT, KEY, http_client=http, retry=NO_BACKOFF) as client:
        assert client.stats().http_stack == name
        assert (await client.send_once(["18100002707"], "hi")).msgid == "7"
        for kind in ("ReadTimeout", "RemoteProtocolError"):
            with pytest.raises(TransportError, match=kind) as caught:
                await client.send_once(["18100002707"], "hi")
            assert caught.value.request_sent and caught.value.outcome_unknown
    assert answers == []


@pytest.mark.anyio
async def test_bad_stack_choices_are_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="http_stack must be one of 'httpx2', 'httpx'"):
        AisixClient(ACCOUNT, KEY, http_stack="requests")
    with pytest.raises(ValidationError, match=r"must be an httpx\.AsyncClient or an httpx2"):
        AisixClient(ACCOUNT, KEY, http_client=object())  # type: ignore[arg-type]
    for name in MISSING:
        with pytest.raises(ValidationError, match=f"http_stack='{name}', but {name} is not"):
            AisixClient(ACCOUNT, KEY, http_stack=name)
    monkeypatch.setenv("AISIX_HTTP_STACK", "aiohttp")
    with pytest.raises(ValidationError, match="AISIX_HTTP_STACK must be one of"):
        AisixClient(ACCOUNT, KEY)
    monkeypatch.delenv("AISIX_HTTP_STACK")
    module: Any = importlib.import_module(INSTALLED[0])
    other = next(n for n in STACKS if n != INSTALLED[0])
    async with module.AsyncClient() as http:
        with pytest.raises(ValidationError, match=f"but http_client is an {INSTALLED[0]} client"):
            AisixClient(ACCOUNT, KEY, http_client=http, http_stack=other)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AISIX_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
        check=False,
    )


@pytest.mark.skipif("httpx2" not in INSTALLED, reason="needs httpx2")
def test_on_httpx2_nothing_imports_httpx(emulator: Any) -> None:
    # With both installed, the httpx2 path must not touch httpx: that is what lets it run
    # where httpx is not installed at all (the nox httpx2 session runs everything there).
    code = f"""
import sys, anyio
import aisix_async, aisix_async.cli, aisix_async.cli._demo, aisix_async.emulator
from aisix_async import AisixClient

async def main():
    async with AisixClient({emulator.account!r}, {emulator.authkey!r},
                           base_url={emulator.base_url!r}) as client:
        print((await client.get_balance()).remain, client.stats().http_stack)

anyio.run(main)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("httpx", "httpcore")))
"""
    result = _python(code, AISIX_HTTP_STACK="httpx2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1000.000 httpx2", "[]"]


@pytest.mark.skipif("httpx2" not in INSTALLED, reason="needs httpx2")
def test_after_httpx2_alias_httpx_the_client_runs_on_httpx2() -> None:
    # An application may make `import httpx` mean httpx2, process-wide.
    code = """
import httpx2
httpx2.alias_httpx()
import httpx
from aisix_async import AisixClient
own = AisixClient("1001@100001", "0" * 32)
theirs = AisixClient("1001@100001", "0" * 32, http_client=httpx.AsyncClient())
print(own.stats().http_stack, theirs.stats().http_stack)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["httpx2", "httpx2"]


def test_the_readme_first_example_runs(emulator: Any) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    library = readme[readme.index("## The library") :]
    example = re.search(r"```python\n(.*?)```", library, re.S)
    assert example is not None
    code = example.group(1)
    assert "http://127.0.0.1:8765/OpenPlatform" in code
    code = code.replace("http://127.0.0.1:8765/OpenPlatform", emulator.base_url)
    result = _python(code)
    assert result.returncode == 0, result.stderr
    # It printed the receipt and the balance: 0.10 yuan per message of six sent.
    assert "SendReceipt(" in result.stdout
    assert emulator.state.message_count == 6
    assert f"remain=Decimal('{Decimal('1000.000') - Decimal('0.60'):.3f}')" in result.stdout


@pytest.mark.anyio
async def test_on_written_comes_once_the_request_is_written_before_its_answer() -> None:
    # A server of our own that holds the answer back: on_written must come while it
    # does (the request is written, the answer awaited), whichever stack is in use.
    import anyio
    import anyio.abc

    from aisix_async._mechanics.http import HttpTransport

    received, release, written = anyio.Event(), anyio.Event(), anyio.Event()
    calls: list[str] = []

    async def serve(stream: anyio.abc.ByteStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            assert length is not None
            while len(body) < int(length.group(1)):
                body += await stream.receive()
            received.set()
            await release.wait()
            answer = b'<xml name="getBalance" result="1"/>'
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(answer), answer)
            )

    def on_written() -> None:
        calls.append("written")
        written.set()

    transport = HttpTransport(timeout=5, max_body=1000, max_connections=1)
    answers: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def post() -> None:
        url = f"http://127.0.0.1:{port}/DataApi?action=getBalance"
        answers.append(await transport.post_form(url, b"ac=1", on_written=on_written))

    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            tasks.start_soon(post)
            await received.wait()
            await written.wait()
            assert answers == []
            release.set()
            while not answers:
                await anyio.sleep(0.001)
            tasks.cancel_scope.cancel()
    await transport.aclose()
    assert calls == ["written"]
    assert answers == [b'<xml name="getBalance" result="1"/>']
