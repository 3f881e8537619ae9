"""What a user on httpx2 alone runs, checked where httpx is not installed (`nox -s httpx2_only`).

Usage: ``python tests/httpx2_only_check.py`` in a venv holding ``aisix-async[cli,httpx2]``
after ``pip uninstall httpx httpcore``. It runs ``aisix demo`` (the README's first
command) and the README's first library example against ``aisix emulator --port 8765``
(as the README says to), exactly as a user would: separate processes, the ``aisix``
script of this venv. Exits non-zero, saying why, when anything fails.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
AISIX = str(Path(sys.executable).with_name("aisix"))


def fail(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text[text.index("## The library") :], re.S)
    if found is None:
        fail("no python example under '## The library' in the README")
        raise AssertionError  # unreachable: fail() exits
    return found.group(1)


def main() -> None:
    for name in ("httpx", "httpcore"):
        if importlib.util.find_spec(name) is not None:
            fail(f"{name} is installed: uninstall it first")
    for name in ("httpx2", "httpcore2"):
        if importlib.util.find_spec(name) is None:
            fail(f"{name} is not installed")

    started = time.perf_counter()
    demo = subprocess.run([AISIX, "demo"], capture_output=True, text=True, check=False)
    print(demo.stdout)
    if demo.returncode != 0 or "CHECK PASSED" not in demo.stdout:
        fail(f"aisix demo exited {demo.returncode}:\n{demo.stderr[-2000:]}")
    print(f"aisix demo: passed in {time.perf_counter() - started:.1f} s")

    emulator = subprocess.Popen(
        [AISIX, "emulator", "--port", "8765"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert emulator.stdout is not None
        banner = emulator.stdout.readline()
        if "base_url=http://127.0.0.1:8765/OpenPlatform" not in banner:
            fail(f"aisix emulator said {banner!r}")
        example = subprocess.run(
            [sys.executable, "-c", readme_example()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(example.stdout)
    if example.returncode != 0 or "SendReceipt(" not in example.stdout:
        fail(f"the README example exited {example.returncode}:\n{example.stderr[-2000:]}")
    print("README example: passed")
    import aisix_async._mechanics.http as http

    httpx = importlib.util.find_spec("httpx") is not None
    print(f"stack: {http.default_stack()}; httpx importable: {httpx}")


if __name__ == "__main__":
    main()
