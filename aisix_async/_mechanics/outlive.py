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

On trio a task cannot outlive its nursery, and the caller's is the one cancelled: so a
call with no deadline runs its exchange in a system task (trio's own nursery, which
lives as long as the run), the one place on trio an exchange can go on once its caller
has gone. Cut off with its caller instead, its answer went unread: handlers cancelled
that way left the pace at 0.54 requests/s against 3 for about 20 s (a user's trial).
A call with a deadline needs none of this there: anyio's shield holds trio's
cancellation off until the answer.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import sniffio

__all__ = ["AnsweredAfterCancel", "CancelledOnWire", "PendingAnswer", "outlive_native_cancel"]

_T = TypeVar("_T")


class PendingAnswer(Protocol):
    """The end of an exchange still running after its caller left: an asyncio task, or
    on trio a system task's (see :class:`_SystemTaskAnswer`)."""

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...

    def result(self) -> Any: ...


class CancelledOnWire(BaseException):
    """The caller of an exchange no deadline bounds was cancelled (by asyncio, or on
    trio) while its request was on the wire: the caller is not held for the answer (see
    :func:`outlive_native_cancel`), and goes on with ``cancel`` at once, while
    ``answer``, the exchange still running in its task, ends in its own time; the
    scheduler keeps its slot until then, and learns from its answer.
    """

    def __init__(self, cancel: BaseException, answer: PendingAnswer) -> None:
        super().__init__("cancelled while on the wire; the answer is still to come")
        self.cancel = cancel
        self.answer = answer


class AnsweredAfterCancel(BaseException):
    """An attempt whose caller asyncio cancelled while its request was on the wire,
    raised once its answer came: ``error`` (None for an accepted answer) is what the
    exchange ended with, for the scheduler to learn from before it raises ``cancel``.

    A BaseException, as the cancellation it carries: no ``except Exception`` takes it.
    """

    def __init__(
        self, cancel: BaseException, error: BaseException | None, result: object = None
    ) -> None:
        super().__init__("cancelled while on the wire, after its answer")
        self.cancel = cancel
        self.error = error
        self.result = result


async def outlive_native_cancel(
    run: Callable[[], Awaitable[_T]], unwritten: Callable[[], bool] | None, *, wait: bool = True
) -> _T:
    """``await run()``, in a task of its own on asyncio, and on trio without ``wait`` in
    a system task; see the module docstring.

    ``unwritten()``, when given, says that the request has not begun to be written (it
    waits for a connection): a cancellation then cancels the exchange too, as nothing
    was sent. Raises :class:`AnsweredAfterCancel` when a cancellation came meanwhile;
    without ``wait`` (a call no deadline bounds, whose cancellation the SDK promises not
    to hold up), :class:`CancelledOnWire` at once instead.
    """
    library = sniffio.current_async_library()
    if library == "trio" and not wait:
        return await _outlive_on_trio(run, unwritten)
    if library != "asyncio":
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
    error = task.exception()
    raise AnsweredAfterCancel(cancel, error, None if error is not None else task.result())


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


class _SystemTaskAnswer:
    """How a trio system task's exchange ended, as much of an asyncio task's interface
    as the scheduler reads (see :class:`PendingAnswer`)."""

    def __init__(self) -> None:
        import trio

        self.ended = trio.Event()
        self.scope = trio.CancelScope()
        self._value: Any = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._callbacks: list[Callable[[Any], object]] = []

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None:
        if self.ended.is_set():
            fn(self)
        else:
            self._callbacks.append(fn)

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    async def run(self, run: Callable[[], Awaitable[Any]]) -> None:
        # A system task must not raise (trio would end the run with TrioInternalError):
        # how the exchange ended is kept for whoever hears it, the caller or the
        # scheduler in its place. That includes the Cancelled of the run's end.
        done = False
        try:
            with self.scope:
                self._value = await run()
                done = True
        except BaseException as exc:
            self._error = exc
        else:
            self._cancelled = not done
        self.ended.set()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)


async def _outlive_on_trio(
    run: Callable[[], Awaitable[_T]], unwritten: Callable[[], bool] | None
) -> _T:
    import trio

    answer = _SystemTaskAnswer()
    # In the caller's context, as asyncio's task is: its log records and spans are the
    # call's.
    trio.lowlevel.spawn_system_task(
        answer.run, run, name="aisix_async exchange", context=contextvars.copy_context()
    )
    try:
        await answer.ended.wait()
    except trio.Cancelled as exc:
        if unwritten is not None and unwritten():
            # Nothing was sent (it waits for a connection): the exchange ends with its
            # caller, once it has closed what it opened.
            answer.scope.cancel()
            with trio.CancelScope(shield=True):
                await answer.ended.wait()
            raise
        raise CancelledOnWire(exc, answer) from None
    result: _T = answer.result()
    return result
