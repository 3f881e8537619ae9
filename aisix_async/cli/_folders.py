"""The user's folders, by the XDG rules (``$XDG_CACHE_HOME``, ``$XDG_STATE_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_folder"]


def user_folder(variable: str, default: str) -> Path:
    """``$variable/aisix``, else ``~/<default>/aisix``.

    The XDG rule: a relative path in the variable is to be ignored (it would land
    wherever the command happened to run).
    """
    configured = os.environ.get(variable)
    base = Path(configured) if configured and os.path.isabs(configured) else None
    return (base or Path.home() / default) / "aisix"
