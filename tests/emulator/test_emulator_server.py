"""Starting the emulator: serve_emulator, EmulatorServer, create_app, the command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import attrs
import pytest
from emulator_helpers import parse_answer
from stack_support import hx

from aisix_async.emulator import (
    DEFAULT_ACCOUNT,
    DEFAULT_AUTHKEY,
    DeliberateDrop,
    EmulatorConfig,
    EmulatorOverrides,
    EmulatorServer,
    GatewayState,
    create_app,
    serve_emulator,
)
from aisix_async.emulator.__main__ import build_parser, config_from_args, main

ROOT = Path(__file__).resolve().parents[2]
CREDS = {"ac": DEFAULT_ACCOUNT, "authkey": DEFAULT_AUTHKEY}


@pytest.mark.anyio
async def test_serve_emulator_runs_and_stops(anyio_backend: str) -> None:
    async with serve_emulator() as emu:
        assert emu.base_url == f"http://127.0.0.1:{emu.port}/OpenPlatform"
        assert emu.open_url == emu.base_url + "/OpenApi"
        assert emu.data_url == emu.base_url + "/DataApi"
        assert emu.control_url == f"http://127.0.0.1:{emu.port}/_emulator"
        assert (emu.account, emu.authkey) == (DEFAULT_ACCOUNT, DEFAULT_AUTHKEY)
        async with hx.AsyncClient() as client:
            response = await client.post(emu.open_url, data={"action": "getBalance", **CREDS})
            assert parse_answer(response).items[0]["remain"] == "1000.000"
        port = emu.port
    with pytest.raises(hx.ConnectError):
        hx.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=2)


@pytest.mark.anyio
async def test_serve_emulator_takes_config_overrides(anyio_backend: str) -> None:
    async with serve_emulator(EmulatorConfig(seed=5), rate=1.0, burst=1.0) as emu:
        assert emu.state.config.seed == 5
        async with hx.AsyncClient() as client:
            form = {"action": "getBalance", **CREDS}
            results = [
                parse_answer(await client.post(emu.open_url, data=form)).result for _ in range(2)
            ]
    assert results == [1, -1]


def test_emulator_server_shares_a_state_and_runs_beside_another() -> None:
    state = GatewayState()
    with EmulatorServer(state=state) as first, EmulatorServer() as second:
        assert first.port != second.port
        assert repr(first) == f"<EmulatorServer {first.base_url}>"
        assert first.state is state
        form = {"action": "sendOnce", "m": "13800000001", "c": "hi", **CREDS}
        assert parse_answer(hx.post(first.open_url, data=form)).result == 1
        assert state.message_count == 1
        assert second.state.message_count == 0


def test_the_overrides_type_names_every_setting_and_only_those() -> None:
    # serve_emulator(**overrides: Unpack[EmulatorOverrides]): a name missing here would
    # fail mypy in correct code, one too many would pass mypy and fail at run time.
    settings = [field.name for field in attrs.fields(EmulatorConfig) if field.init]
    assert list(typing.get_type_hints(EmulatorOverrides)) == settings
    assert EmulatorOverrides.__required_keys__ == frozenset()


@pytest.mark.anyio
async def test_a_keyword_that_is_no_setting_is_refused_naming_the_settings(
    anyio_backend: str,
) -> None:
    # attrs said only "unexpected keyword argument 'latency_ms'", a fault setting.
    with pytest.raises(TypeError) as raised:
        async with serve_emulator(latency_ms=150):  # type: ignore[call-arg]
            pass
    message = str(raised.value)
    assert "'latency_ms' is not an emulator setting" in message
    assert "faults=FaultConfig(latency_ms=...)" in message
    assert "state.set_faults(latency_ms=...)" in message
    assert "the settings are: accounts, rate, burst," in message
    state = GatewayState()
    with pytest.raises(TypeError, match="'ratee' is not an emulator setting; the settings"):
        EmulatorServer(state=state, ratee=2.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'ratee' is not an emulator setting"):
        state.configure(ratee=2.0)  # type: ignore[call-arg]


def test_emulator_server_rejects_config_with_state() -> None:
    with pytest.raises(ValueError, match="either"):
        EmulatorServer(EmulatorConfig(), state=GatewayState())
    with pytest.raises(ValueError, match="either"):
        create_app(EmulatorConfig(), state=GatewayState())


def test_emulator_server_before_start_has_no_port() -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = EmulatorServer().base_url


@pytest.mark.anyio
async def test_create_app_works_in_process(anyio_backend: str) -> None:
    app = create_app()
    transport = hx.ASGITransport(app=app)
    async with hx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        form = {"action": "sendOnce", "m": "13800000001", "c": "hi", **CREDS}
        answer = parse_answer(await client.post("/OpenPlatform/OpenApi", data=form))
        assert answer.result == 1
        assert app.state.messages()[0].text == "【Aisix】hi"
        app.state.set_faults(latency_ms=1.0, drop_after_process=1.0)
        # In process there is no connection to cut: the app's own exception surfaces.
        with pytest.raises(DeliberateDrop):
            await client.post("/OpenPlatform/OpenApi", data=form)
        assert app.state.message_count == 2


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aisix_async.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    for line in proc.stdout:
        if "=" not in line:
            break
        key, _, value = line.strip().partition("=")
        lines[key] = value
    return proc, lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_command_line_prints_urls_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    proc, lines = _start_cli("--balance", "5", "--rate", "100", "--seed", "3")
    try:
        assert lines["base_url"].startswith("http://127.0.0.1:")
        assert lines["base_url"].endswith("/OpenPlatform")
        assert (lines["account"], lines["authkey"]) == (DEFAULT_ACCOUNT, DEFAULT_AUTHKEY)
        form = {"action": "getBalance", "ac": lines["account"], "authkey": lines["authkey"]}
        answer = parse_answer(hx.post(lines["base_url"] + "/OpenApi", data=form))
        assert answer.items[0]["remain"] == "5.000"
        config = hx.get(lines["control_url"] + "/config").json()
        assert (config["rate"], config["seed"]) == (100.0, 3)
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "emulator stopped" in out
    assert "Traceback" not in err


def test_a_reader_that_closed_the_banner_early_does_not_stop_the_server() -> None:
    # `aisix emulator | head -2`: the rest of the banner is dropped, the server serves.
    proc, lines = _start_cli()
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes; "emulator stopped" will meet a closed pipe
    try:
        form = {"action": "getBalance", "ac": lines["account"], "authkey": lines["authkey"]}
        assert parse_answer(hx.post(lines["base_url"] + "/OpenApi", data=form)).result == 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_stop_with_an_answer_waiting_out_its_latency_logs_no_traceback() -> None:
    proc, lines = _start_cli("--latency-ms", "5000")
    form = {"action": "getBalance", "ac": lines["account"], "authkey": lines["authkey"]}
    with socket.create_connection((lines["base_url"].split("//")[1].split(":")[0],
                                   int(lines["port"]))) as conn:  # fmt: skip
        body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
        conn.sendall(
            b"POST /OpenPlatform/OpenApi HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.5)  # in the emulator, waiting out its latency
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "CancelledError" not in err


def test_main_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fault", "bogus=0.1"]) == 2
    # float() takes these; an emulator served with them answered what no client reads.
    assert main(["--rate", "nan"]) == 2
    assert main(["--latency-ms", "inf"]) == 2
    assert main(["--balance", "NaN"]) == 2
    # A typo in an action's name silently fired no fault.
    assert main(["--fault", "http_502=1", "--fault-actions", "getbalance"]) == 2
    assert main(["--fault", "http_502=0.7", "--fault", "slow_body=0.7"]) == 2
    assert "more than 1" in capsys.readouterr().err
    assert main(["--help"]) == 0
    for port in ("99999", "-1", "http"):
        assert main(["--port", port]) == 2
        err = capsys.readouterr().err
        assert "--port" in err and "Traceback" not in err


def test_main_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["--port", str(taken.getsockname()[1])]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_options_map_to_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--rate", "50", "--burst", "5", "--latency-ms", "3", "--jitter-ms", "2",
            "--fault", "http_502=0.1", "--fault", "truncated_xml=0.2",
            "--fault-actions", "sendOnce,sendBatch", "--seed", "4", "--report-delay", "0.5",
            "--reports-per-call", "7", "--balance", "12.5", "--ip-bound", "--no-reports",
            "--no-record", "--blacklist", "1380,1390", "--lock-after", "3",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.rate, config.burst, config.seed, config.lock_after) == (50.0, 5.0, 4, 3)
    assert (config.report_delay, config.reports_per_call) == (0.5, 7)
    assert (config.ip_bound, config.reports, config.record_messages) == (True, False, False)
    assert config.blacklist == {"1380", "1390"}
    assert str(config.accounts[0].balance) == "12.5"
    faults = config.faults
    assert (faults.http_502, faults.truncated_xml, faults.latency_ms, faults.jitter_ms) == (
        0.1,
        0.2,
        3.0,
        2.0,
    )
    assert faults.fault_actions == frozenset({"sendOnce", "sendBatch"})


def test_python_m_emulator_without_its_extra_names_the_extra() -> None:
    # `python -m aisix_async.emulator` printed a ModuleNotFoundError traceback where
    # `aisix emulator` names the extra to install.
    script = (
        "import runpy, sys; sys.modules['uvicorn'] = None; "
        "sys.argv = ['aisix_async.emulator', '--port', '0']; "
        "runpy.run_module('aisix_async.emulator', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install 'aisix-async[emulator]'" in done.stderr
