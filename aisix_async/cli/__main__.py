"""``python -m aisix_async.cli``: the same as the ``aisix`` console script."""

from __future__ import annotations

from . import main

raise SystemExit(main())
