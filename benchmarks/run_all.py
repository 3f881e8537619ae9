"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md``.

Each benchmark is its own process (it starts its own emulator subprocess on 127.0.0.1)
and prints markdown; this collects their output in order, with the command, the date and
the machine, so the figures can be read next to how they were made. ``nox -s bench``
runs this script. Extra arguments are passed to no one: each benchmark's defaults are
the recorded configuration.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT_S = 1500  # per benchmark (the sweep takes about 10 minutes); the whole run ~40 minutes


def main() -> int:
    sections: list[str] = []
    failed = []
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=ROOT,
            )  # fmt: skip
            output, code = done.stdout.strip(), done.returncode
            if code != 0:
                tail = done.stderr[-1500:]
                output += f"\n\n(exit status {code}; stderr tail:)\n\n```\n{tail}\n```"
        except subprocess.TimeoutExpired:
            output, code = f"(timed out after {TIMEOUT_S} s)", -1
        if code != 0:
            failed.append(script.name)
        took = time.monotonic() - began
        sections.append(f"### `{script.name}` ({took:.0f} s)\n\n{output}\n")
    header = [
        "# Benchmark results",
        "",
        f"Command: `python benchmarks/run_all.py` (what `nox -s bench` runs), "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; whole run {time.monotonic() - started:.0f} s. "
        "Every figure below comes from this one run; targets that were missed say so.",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(header + sections))
    print(f"wrote {HERE / 'RESULTS.md'}; failed: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
