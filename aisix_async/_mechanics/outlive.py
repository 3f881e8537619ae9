"""An exchange on the wire that outlives asyncio's own cancellation of its caller.

anyio's shield holds off anyio's and trio's cancellations, not asyncio's own
(``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``): one of those cut the
exchange off with its answer unread. The scheduler then never heard the gateway: a web
service whose handlers gave up under ``asyncio.wait_for`` while their sends were on the
wire freed each slot at once and learned nothing from the -1 answers it caused (a
user's trial; repeated, 180 requests in 16 s against 3 a second, 129 answered -1). So,
on asyncio, a single call's exchange runs in a task of its own. A cancellation of a
caller with a deadline waits for the answer (bounded as the shield is, by the client's
``timeout``); the scheduler learns from it, then the cancellation goes on. A caller with
none is not held up (the SDK promises as much): it goes on at once, and the scheduler
keeps the request's slot until the answer comes, and learns from it then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sniffio

__all__ = ["AnsweredAfterCancel", "CancelledOnWire", "outlive_native_cancel"]

_T = TypeVar("_T")


class CancelledOnWire(BaseException):
    """asyncio cancelled the caller of an exchange no deadline bounds while its request
    was on the wire: the caller is not held for the answer (see
    :func:`outlive_native_cancel`), and goes on with ``cancel`` at once, while
    ``answer``, the exchange still running in its task, ends in its own time; the
    scheduler keeps its slot until then, and learns from its answer.
    """

    def __init__(self, cancel: BaseException, answer: asyncio.Future[Any]) -> None:
        super().__init__("cancelled while on the wire; the answer is still to come")
        self.cancel = cancel
        self.answer = answer


class AnsweredAfterCancel(BaseException):
    """An attempt whose caller asyncio cancelled while its request was on the wire,
    raised once its answer came: ``error`` (None for an accepted answer) is what the
    exchange ended with, for the scheduler to learn from before it raises ``cancel``.

    A BaseException, as the cancellation it carries: no ``except Exception`` takes it.
    """

    def __init__(self, cancel: BaseException, error: BaseException | None) -> None:
        super().__init__("cancelled while on the wire, after its answer")
        self.cancel = cancel
        self.error = error


async def outlive_native_cancel(
    run: Callable[[], Awaitable[_T]], unwritten: Callable[[], bool] | None, *, wait: bool = True
) -> _T:
    """``await run()``, in a task of its own on asyncio; see the module docstring.

    ``unwritten()``, when given, says that the request has not begun to be written (it
    waits for a connection): a cancellation then cancels the exchange too, as nothing
    was sent. Raises :class:`AnsweredAfterCancel` when a cancellation came meanwhile;
    without ``wait`` (a call no deadline bounds, whose cancellation the SDK promises not
    to hold up), :class:`CancelledOnWire` at once instead.
    """
    if sniffio.current_async_library() != "asyncio":
        return await run()
    task: asyncio.Future[_T] = asyncio.ensure_future(run())
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:
            # The task's count of cancellations asked for stays as it is (no uncancel):
            # the same exception is raised in the end, and asyncio.timeout reads it then.
            if cancel is None and unwritten is not None and unwritten():
                task.cancel()
                await _settle(task)
                raise
            if not wait:
                raise CancelledOnWire(exc, task) from None
            cancel = cancel or exc
    if cancel is None:
        return task.result()
    if task.cancelled():
        raise cancel
    raise AnsweredAfterCancel(cancel, task.exception())


async def _settle(task: asyncio.Future[Any]) -> None:
    # Wait for a task just cancelled to end (it only closes a connection being made),
    # whatever further cancellations come meanwhile.
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            continue
    if not task.cancelled():
        task.exception()  # retrieved: asyncio logs nothing for it
