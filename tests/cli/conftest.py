"""Fixtures for the command-line tests: ``cli`` runs ``aisix`` against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli


@pytest.fixture
def cli(emulator: Any, tmp_path: Path) -> Cli:
    made = Cli(emulator)
    # The rate cache goes to the user's cache folder: a test's own, never the real one.
    made.env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    return made
