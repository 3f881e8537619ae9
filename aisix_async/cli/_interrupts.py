"""Ctrl-C during a send: stop at once, with every request sent accounted for.

The first interrupt (SIGINT, or SIGTERM from a service manager) stops dispatch at once
(the stream's ``stop()``: no new request and no retry leaves; chunks queued behind the
scheduler are not sent), stops reading the input, and lets the requests already written
settle, so every recipient sent has its outcome and nothing is left in doubt; a second
one abandons those requests (their recipients are then unknown). Stopping parks the input
rather than ending it: a campaign journal records where the input ends, and a truncated
input would look like a changed one on resume.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from ._app import Context
from ._signals import hold_stop_signals, poll_on_the_wire, stop_signals
from .send.inputs import Source

__all__ = ["INTERRUPTED", "STDOUT_CLOSED", "Feed", "FollowInterrupt", "watch_interrupts"]


# No signal receiver on Windows: there a send stops only when stdout closes.
_RECEIVES_SIGNALS: bool = sys.platform != "win32"


# What a recipient not sent reads: "not sent: dispatch stopped because ...".
INTERRUPTED = "the operator interrupted the send (Ctrl-C, SIGTERM or SIGHUP)"
STDOUT_CLOSED = "stdout was closed: nobody read the outcomes any more"
WRITE_FAILED = "a file this run writes could not be written (see the error above)"


class FollowInterrupt:
    """Ends a follow (reports, replies) at the first SIGINT, SIGTERM or SIGHUP; remembers it.

    ``records`` names what a poll carries ("reports"), for the line a third signal
    writes as it exits with a poll on the wire (see poll_on_the_wire); ``journalled``:
    the follower journals them, and says the journal will not have those.
    """

    def __init__(self, records: str, *, journalled: bool = False) -> None:
        self.seen = False
        self._first: int | None = None
        self._lost = (
            f"the {records} of the poll on the wire are lost (the gateway hands each out once"
            + ("; the journal will not have them)" if journalled else ")")
        )
        # Open from the first signal until the follower calls answered().
        self._waiting = contextlib.ExitStack()

    def answered(self) -> None:
        """The follower no longer waits for a poll (it was answered, its records kept)."""
        self._waiting.close()

    def _hold(self) -> None:
        if self.seen:
            # Stopped by a signal of its own: it counts as the first of the repeats, and
            # the follow has not ended yet (a poll on the wire may still be answered).
            hold_stop_signals(
                "the follow's first interrupt (a poll on the wire is waited for all the same)",
                first=self._first,
            )
        else:
            hold_stop_signals("the follow had ended")

    async def cancel_on_signal(self, scope: anyio.CancelScope) -> None:
        # Our own receiver, not asyncio's default Ctrl-C handling: that cancels the main
        # task once, and a cancellation landing as a poll's timeout fires can be lost,
        # leaving --follow running after Ctrl-C.
        if not _RECEIVES_SIGNALS:  # pragma: no cover - Windows
            await anyio.sleep_forever()
        with contextlib.ExitStack() as stack:
            # Once the receiver closes, the follower is winding down: it still waits for
            # the poll on the wire, whose records the gateway hands out once. A second
            # Ctrl-C there (the handler back) raised KeyboardInterrupt in that wait and
            # lost them; held instead (see hold_stop_signals), from the moment the
            # receiver closes (callbacks run last-in, first-out).
            stack.callback(self._hold)
            signals = stack.enter_context(anyio.open_signal_receiver(*stop_signals()))
            async for signum in signals:
                self.seen = True
                self._first = int(signum)
                self._waiting.enter_context(poll_on_the_wire(self._lost))
                scope.cancel()
                return


class Feed:
    """The input, read lazily into a send, that can be told to stop at a chunk boundary.

    Stopping does not end the input (a campaign journal records where the input ends,
    and a truncated one would look like a changed input on resume): the reader parks
    instead, and once the requests on the wire have settled the send is cancelled.
    """

    def __init__(self, source: Source, limit: int | None = None) -> None:
        self._source = source
        # The items checked (and estimated) before the send: a file still being written
        # when it was read again to send was sent past them, unchecked and over the
        # estimate and the balance check (a user's trial: 2,500 sent of 2,000 checked).
        self._limit = limit
        self.read = 0
        self.stopping = False
        self.parked = False
        self.exhausted = False
        #: Whether the input held more than ``limit`` items when read to send.
        self.grew = False

    async def items(self) -> AsyncIterator[Any]:
        for count, (_, value) in enumerate(self._source.open(), start=1):
            if self._limit is not None and count > self._limit:
                self.grew = True
                break
            if self.stopping:
                self.parked = True
                await anyio.sleep_forever()
            self.read = count
            yield value
            # Reading a file line by line never blocks for long, but a big file must not
            # keep other tasks (progress, signals) from running.
            if count % 1000 == 0:
                await anyio.lowlevel.checkpoint()
        self.exhausted = True


async def watch_interrupts(
    ctx: Context,
    feed: Feed,
    ready_to_stop: Any,
    hard: anyio.CancelScope,
    state: dict[str, int],
    stop_dispatch: Any,
    stdout_closed: anyio.Event,
    write_failed: anyio.Event,
) -> None:
    """First Ctrl-C: stop reading and let requests on the wire settle; second: abandon them.

    stdout closing (nobody reads the outcomes any more) stops the send as a first
    Ctrl-C does: the outcomes it cannot print are kept in a file, not lost. So does
    ``write_failed`` (a file of the run's could not be written; its caller said why).
    """
    async with contextlib.AsyncExitStack() as stack:
        signals: AsyncIterator[int] | None = None
        if _RECEIVES_SIGNALS:
            # Once this watch ends, so has the send: closing the receiver puts back the
            # signals' default actions (asyncio's doing), under which a signal during the
            # summary cut it off or killed the process. Held from the moment it closes,
            # with no await between (callbacks run last-in, first-out).
            stack.callback(hold_stop_signals, "the send had ended")
            signals = stack.enter_context(anyio.open_signal_receiver(*stop_signals()))
        async with anyio.create_task_group() as first:

            async def interrupted() -> None:
                if signals is None:  # pragma: no cover - Windows
                    return
                async for _ in signals:
                    state["interrupted"] = True
                    ctx.out.warn(
                        "interrupted: no more requests; waiting for those on the wire to "
                        "settle (Ctrl-C again to abandon them: their recipients would be "
                        "unknown)"
                    )
                    first.cancel_scope.cancel()
                    return

            async def closed() -> None:
                await stdout_closed.wait()
                state["stdout_closed"] = True
                ctx.out.warn(
                    "stdout was closed: no more requests; waiting for those on the wire to "
                    "settle (Ctrl-C to abandon them: their recipients would be unknown)"
                )
                first.cancel_scope.cancel()

            async def failed() -> None:
                await write_failed.wait()
                state["write_failed"] = True
                first.cancel_scope.cancel()

            first.start_soon(interrupted)
            first.start_soon(closed)
            first.start_soon(failed)
        feed.stopping = True
        # The outcomes still to come are few (those on the wire, and the chunks found
        # queued): a reader that stopped reading must not hold them, and the send's end,
        # back. What it never takes is kept when the command ends (Output.close).
        ctx.out.stop_waiting_for_reader()
        if state.get("interrupted"):
            stop_dispatch(INTERRUPTED)
        elif state.get("write_failed"):
            stop_dispatch(WRITE_FAILED)
        else:
            stop_dispatch(STDOUT_CLOSED)
        async with anyio.create_task_group() as group:

            async def settle() -> None:
                # Polled: the stream's counters change without an event to wait on.
                while not ready_to_stop():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                if feed.parked:
                    hard.cancel()
                group.cancel_scope.cancel()

            async def again() -> None:
                if signals is None:  # pragma: no cover - Windows
                    return
                async for _ in signals:
                    state["interrupted"] = state["abandoned"] = True
                    ctx.out.warn("second interrupt: abandoning any requests still on the wire")
                    hard.cancel()
                    group.cancel_scope.cancel()
                    return

            group.start_soon(settle)
            group.start_soon(again)
