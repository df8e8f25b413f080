"""MicroPython's ``asyncio`` additions, injected into CPython's real ``asyncio`` module.

aioble does ``import asyncio`` and then uses ``asyncio.ThreadSafeFlag`` and
``asyncio.sleep_ms``, so the additions must live on the module object itself.
It also calls ``asyncio.create_task`` at import time, before any loop runs;
MicroPython allows that because its one loop exists from the start. Here such a
task is created on a loop that the next ``asyncio.run()`` then runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, Final, TypeVar

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


async def sleep_ms(ms: float, result: _T | None = None) -> _T | None:
    """``asyncio.sleep`` in milliseconds; negative values do not sleep."""
    return await asyncio.sleep(max(ms, 0) / 1_000, result)


async def wait_for_ms(aw: Awaitable[_T], ms: float) -> _T:
    """``asyncio.wait_for`` with the timeout in milliseconds."""
    return await asyncio.wait_for(aw, ms / 1_000)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ThreadSafeFlag:
    """A flag that any thread may ``set()``, awaited by a task with ``await flag.wait()``.

    ``wait()`` returns at once if the flag is set and clears it on return. Meant for
    one waiter, as on MicroPython; a second waiter is allowed and the two race for
    each ``set()``. The flag binds to whichever loop awaits it, at ``wait()`` time,
    so it can be created before any loop exists (aioble creates them at import).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flag = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set(self) -> None:
        """Set the flag and wake the waiter; safe from any thread, including IRQ handlers."""
        with self._lock:
            self._flag = True
            waiters = list(self._waiters)
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the waiter's loop is closed; nothing left to wake
                pass

    def clear(self) -> None:
        """Clear the flag; a waiter woken but not yet resumed goes back to waiting."""
        with self._lock:
            self._flag = False

    async def wait(self) -> None:
        """Return once the flag is set, clearing it."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._flag:
                    self._flag = False
                    return
                entry = (loop, loop.create_future())
                self._waiters.append(entry)
            try:
                await entry[1]
            finally:
                with self._lock:
                    self._waiters.remove(entry)


# --- create_task before a loop runs ----------------------------------------------------

_original_create_task: Final = asyncio.create_task
_original_run: Final = asyncio.run
_deferred_lock = threading.Lock()
_deferred_loop: asyncio.AbstractEventLoop | None = None
_runs_in_progress = 0


def create_task(
    coro: Coroutine[Any, Any, _T],
    *,
    name: str | None = None,
    context: contextvars.Context | None = None,
) -> asyncio.Task[_T]:
    """``asyncio.create_task``, which outside any loop defers the task to the next ``run()``.

    If some ``asyncio.run()`` is already in progress (on another thread), CPython's
    ``RuntimeError`` stands: a task deferred then might never run.
    """
    global _deferred_loop
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _deferred_lock:
            if _runs_in_progress == 0:
                if _deferred_loop is None:
                    _deferred_loop = asyncio.new_event_loop()
                logger.debug("create_task outside a loop: deferred to the next asyncio.run()")
                return _deferred_loop.create_task(coro, name=name, context=context)
    return _original_create_task(coro, name=name, context=context)


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """``asyncio.run``, on the loop holding tasks created before it, if there is one."""
    global _deferred_loop, _runs_in_progress
    with _deferred_lock:
        loop, _deferred_loop = _deferred_loop, None
        _runs_in_progress += 1
    try:
        if loop is None:
            return _original_run(main, debug=debug)
        with asyncio.Runner(debug=debug, loop_factory=lambda: loop) as runner:
            return runner.run(main)
    finally:
        with _deferred_lock:
            _runs_in_progress -= 1


_ADDITIONS: Final[dict[str, object]] = {
    "sleep_ms": sleep_ms,
    "wait_for_ms": wait_for_ms,
    "ThreadSafeFlag": ThreadSafeFlag,
}


def patch() -> None:
    """Attach the additions and the early ``create_task`` to ``asyncio`` (idempotent)."""
    for name, value in _ADDITIONS.items():
        if not hasattr(asyncio, name):
            setattr(asyncio, name, value)
    if asyncio.create_task is _original_create_task:
        asyncio.create_task = create_task  # type: ignore[assignment]
    if asyncio.run is _original_run:
        asyncio.run = run
