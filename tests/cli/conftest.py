"""Fixtures for the command-line tests: ``cli`` runs ``aisix`` against the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from cli_support import Cli


@pytest.fixture
def cli(emulator: Any) -> Cli:
    return Cli(emulator)
