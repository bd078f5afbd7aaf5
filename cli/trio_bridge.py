"""Run trio code inside textual's asyncio loop: trio's *guest mode*.

The network side of ``chinwag chat`` is the trio client library; textual runs
on asyncio. Rather than a second thread with locks around the shared chat
state, trio runs as a guest on the asyncio loop
(:func:`trio.lowlevel.start_guest_run`): both run on the **same thread**,
taking turns, so trio tasks and textual handlers can read and change the chat
model without locks (each runs to its next ``await`` undisturbed). Only the
wake-ups cross over: asyncio code asks trio to do something through the
:class:`~trio.lowlevel.TrioToken` (which also wakes trio's I/O wait), and trio
code talks to the screen by posting textual messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Calls from the screen into trio that may be running at once.
MAX_CALLS = 16


class BridgeBusy(Exception):
    """Too many calls in flight, or trio is not running."""


class TrioGuest:
    """One trio run hosted on the running asyncio loop."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._done: asyncio.Future[outcome.Outcome[None]] | None = None
        self._in_flight = 0

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def start(
        self,
        main: Callable[[], Awaitable[None]],
        on_done: Callable[[outcome.Outcome[None]], None] | None = None,
    ) -> None:
        """Start ``main`` under trio; ``on_done`` gets its outcome when it ends."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        self._done = done

        def finished(result: outcome.Outcome[None]) -> None:
            if not done.done():
                done.set_result(result)
            if on_done is not None:
                on_done(result)

        trio.lowlevel.start_guest_run(
            self._main,
            main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=finished,
        )
        # Documented as callable from the host once start_guest_run returns.
        self._token = trio.lowlevel.current_trio_token()

    async def _main(self, main: Callable[[], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._stopping:
                nursery.cancel_scope.cancel()
            nursery.start_soon(main)
        self._nursery = None

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run sync ``fn(*args)`` in trio's context (e.g. to set a trio Event)."""
        if self._token is None or not self.running:
            return False
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    def submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> asyncio.Future[T]:
        """Run ``await fn(*args)`` as a trio task; its result as an asyncio future."""
        if self._in_flight >= MAX_CALLS:
            raise BridgeBusy(f"{MAX_CALLS} requests are already in progress")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def task() -> None:
            try:
                result = await fn(*args)
            except Exception as exc:  # handed to the asyncio side, which reports it
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self._in_flight -= 1
                if not future.done():
                    future.cancel()

        def spawn() -> None:
            if self._nursery is None:
                self._in_flight -= 1
                future.cancel()
                return
            self._nursery.start_soon(task)

        self._in_flight += 1
        if not self.call_soon(spawn):
            self._in_flight -= 1
            raise BridgeBusy("not running")
        return future

    def _cancel(self) -> None:
        self._stopping = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the trio run and wait (bounded) until it has finished."""
        if self._done is None:
            return
        self.call_soon(self._cancel)
        try:
            result = await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            log.warning("the network side did not stop within %gs", timeout)
            return
        if isinstance(result, outcome.Error) and not isinstance(result.error, trio.Cancelled):
            log.warning("the network side ended with an error: %r", result.error)
