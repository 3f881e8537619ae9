"""The README's Python examples, run as a reader would run them.

A user learns the SDK from the README alone, so an example that no longer runs (a renamed
argument, a changed return type) is a defect even when every other test passes. The
whole program is run as written, in its own process, against the emulator; the fragments
run in one program that gives them what they assume (a ``client``, ``numbers``, ...),
with the few changes each says here, none of which touches a call of the SDK.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aisix_async

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def block(marker: str) -> str:
    """The one Python block of the README that contains ``marker``."""
    found = [text for text in BLOCKS if marker in text]
    assert len(found) == 1, f"{len(found)} README Python blocks contain {marker!r}"
    return found[0]


def run(program: str, cwd: Path, timeout: float = 120.0) -> str:
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_block_is_python() -> None:
    # A block that does not parse cannot be copied into a program; '...' placeholders
    # and top-level await (the fragments run inside the reader's own coroutine) parse.
    assert len(BLOCKS) >= 10
    for text in BLOCKS:
        compile(text, "<README>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_whole_program_runs_as_written(emulator: Any, tmp_path: Path) -> None:
    program = block("asyncio.run(main())")
    # The one change: the emulator of this test session listens on a port of its own.
    assert "http://127.0.0.1:8765/OpenPlatform" in program
    program = program.replace("http://127.0.0.1:8765/OpenPlatform", emulator.base_url)
    assert emulator.account in program and "87B01469201D6557C2685137EB3B5DEC" in program
    out = run(program, tmp_path)
    assert out.startswith("SendReceipt(") and "Balance(" in out, out
    # Sent as the README says: two numbers by sendOnce, two by sendBatch, two by sendParam.
    assert len(emulator.state.messages()) == 6


FRAGMENTS = [
    'async with client.send_many(numbers, "Your code is 1234")',
    "tracker = DeliveryTracker()",
    "count_units(",
    'async with client.campaign("spring-sale.db")',
    'async with open_campaign_journal("spring-sale.db")',
    "async with client.watch_delivery_reports(interval=5)",
    "rotation = await client.rotate_key()",
    "state = client.rate_state()",
]

# What a reader's own program around the fragments would hold.
PRELUDE = """
import anyio, json
from aisix_async import *
from aisix_async.emulator import serve_emulator

def save_somewhere_safe(key):
    assert key and "redacted" not in key
    print("KEY SAVED")

async def main():
    async with serve_emulator(report_delay=0) as emu:
        async with AisixClient(emu.account, emu.authkey, base_url=emu.base_url, cgid=1) as client:
            numbers = [f"1810000{i:04d}" for i in range(250)]
            text = content = "Your code is 1234"
            pairs = [("18100002707", "测试一"), ("18600007370", "测试二")]
            rows = [("18100002707", ["Peter"]), ("18600007370", ["Evan"])]
"""


def fragment(marker: str) -> str:
    text = block(marker)
    if marker.startswith("async with client.watch_"):
        # It reads until the reader breaks: here, for two seconds.
        text = "with anyio.move_on_after(2):\n" + textwrap.indent(text, "    ")
    if marker == "state = client.rate_state()":
        # '...' stands for the reader's own arguments.
        text = text.replace("...\n", "").replace(
            "AisixClient(...,", "AisixClient(emu.account, emu.authkey, base_url=emu.base_url,"
        )
        text += "async with client:\n    await client.get_balance()\n"
    if marker.startswith("async with client.campaign("):
        # Ten minutes of reports, as the README waits: here two seconds, which is plenty
        # for the emulator's reports, which it has at once.
        assert "anyio.move_on_after(600)" in text
        text = text.replace("anyio.move_on_after(600)", "anyio.move_on_after(2)")
        text += "print('DELIVERED', sum(summary.delivery.values()))\n"
    return text


def test_the_fragments_run_in_a_program_around_them(tmp_path: Path) -> None:
    body = "".join(f"print('FRAGMENT', {marker!r})\n{fragment(marker)}\n" for marker in FRAGMENTS)
    program = PRELUDE + textwrap.indent(body, " " * 12) + "\nanyio.run(main)\n"
    out = run(program, tmp_path)
    for marker in FRAGMENTS:
        assert f"FRAGMENT {marker}\n" in out
    assert "KEY SAVED" in out
    assert "DELIVERED 250" in out, out
    assert (tmp_path / "spring-sale.csv").read_text(encoding="utf-8").count("\n") == 251


def test_the_emulator_example_runs(tmp_path: Path) -> None:
    text = block("async with serve_emulator(rate=40")
    # What the first emulator received, before the block's next line names another.
    later = "with EmulatorServer() as emu"
    assert later in text
    text = text.replace(later, "print('RECEIVED', len(emu.state.messages()))\n" + later)
    program = "import anyio\nasync def main():\n" + textwrap.indent(text, "    ")
    assert "RECEIVED 1\n" in run(program + "\nanyio.run(main)\n", tmp_path)


def test_the_web_service_example_names_what_the_package_exports() -> None:
    # The FastAPI block is a shortened examples/fastapi_app.py, which its own test runs
    # under uvicorn; what the block names from the SDK must exist under those names.
    text = block("async def send_otp(")
    for name in ("AisixClient", "AisixError"):
        assert name in text and hasattr(aisix_async, name)
    for name in re.findall(r"\b[A-Z]+_REFUSALS\b", text):
        assert hasattr(aisix_async, name), name
    for name in re.findall(r"\b([a-z_]+)=", text.split("send_once(")[1].split(")")[0]):
        assert name in aisix_async.AisixClient.send_once.__code__.co_varnames, name


def _readme_commands() -> list[list[str]]:
    # Every `aisix ...` line of the README's shell blocks, continuation lines joined and
    # the comment cut off.
    commands = []
    for shell in re.findall(r"^```(?:sh|bash|console)\n(.*?)^```", README, re.S | re.M):
        for line in shell.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["aisix"] and len(words) > 1:
                commands.append(words[1:])
    return commands


def test_every_aisix_command_line_of_the_readme_parses() -> None:
    # An option renamed or dropped without its README line: the reader's copy fails at
    # once with "unrecognized arguments".
    from aisix_async.cli._args import build_parser
    from aisix_async.emulator.__main__ import build_parser as emulator_parser

    commands = _readme_commands()
    assert len(commands) >= 20
    assert {words[0] for words in commands} >= {"send", "reports", "campaign", "emulator"}
    parser, emulator = build_parser(), emulator_parser()
    for words in commands:
        if words[0] in ("--version", "--help", "-h") or "--help" in words:
            continue
        try:
            if words[0] == "emulator":  # handed its arguments untouched
                emulator.parse_args(words[1:])
            else:
                parser.parse_args(words)
        except SystemExit as error:  # argparse's way of refusing
            raise AssertionError(f"README: `aisix {shlex.join(words)}` does not parse") from error
