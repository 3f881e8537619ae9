"""The public annotations serve correct user code: mypy --strict on tests/typed_usage.py.

Where mypy is not installed (`nox -s tests` installs only the tests extra) this skips;
`nox -s typecheck` checks the same file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import aisix_async

ROOT = Path(aisix_async.__file__).resolve().parent.parent
USAGE = Path(__file__).with_name("typed_usage.py")


def test_user_code_type_checks_under_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed: nox -s typecheck checks this")
    # Run from the root of the package under test, so that mypy reads that package (and
    # the project's mypy settings), not another install of it.
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(USAGE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
