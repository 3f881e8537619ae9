"""A readers-writer gate around the authkey, so rotating it never strands a request.

Every request holds the gate shared while it is on the wire; ``updateKey`` holds it
exclusively. A rotation therefore waits for the requests already sent (they finish with
the key they used), keeps new ones from starting, and only then asks for a new key. No
request can reach the gateway carrying a key that our own rotation has just retired.

The bookkeeping is plain counters: on one event loop nothing runs between two lines
without an ``await``, so no lock is needed, and the shared path costs two integer
updates per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["KeyGate"]


class KeyGate:
    """Many requests at once, or one key rotation alone."""

    def __init__(self) -> None:
        self._readers = 0
        self._rotation_done: anyio.Event | None = None
        self._drained: anyio.Event | None = None

    async def _no_rotation(self) -> None:
        while self._rotation_done is not None:
            await self._rotation_done.wait()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the key for one request."""
        await self._no_rotation()
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0 and self._drained is not None:
                self._drained.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the key alone, once every request already on the wire has finished."""
        await self._no_rotation()
        done = self._rotation_done = anyio.Event()
        try:
            if self._readers:
                self._drained = anyio.Event()
                await self._drained.wait()
            yield
        finally:
            self._drained = None
            self._rotation_done = None
            done.set()
