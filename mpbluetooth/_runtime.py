"""The process's one asyncio loop thread, and the synchronous path into it.

Bumble is asyncio-only and its objects must be created and used on one loop. MicroPython's
API is synchronous and may be called from any thread (the main program, the IRQ
IRQ context, user threads). So one daemon thread runs the loop for the whole process and
every ``BLE`` call is marshalled onto it with a deadline. A call made *from* the loop
thread would deadlock, so it is refused at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from . import _cpu
from ._errors import CallTimeoutError
from ._scheduler import scheduler
from .constants import ETIMEDOUT

logger = logging.getLogger(__name__)

#: Default deadline of a synchronous call, in seconds. Longer than Bumble's own 10 s HCI
#: command timeout so that a stack-side timeout surfaces with its own error first.
DEFAULT_CALL_TIMEOUT = 15.0

#: How long a refused sender sleeps so the loop thread can take the GIL (see yield_to_loop).
YIELD_SECONDS = 0.0001

#: How long interpreter exit may spend closing live instances before abandoning them.
EXIT_BUDGET = 1.5


class Runtime:
    """One background event loop; created lazily, stopped at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shutdown_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        # Work handed over by call_soon: one wake-up of the loop carries a whole batch.
        self._handover_lock = threading.Lock()
        self._handover: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._handover_scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._start()
        return loop

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_log_loop_exception)
            ready = threading.Event()

            def run() -> None:
                _cpu.settle_loop_thread()
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="mpbluetooth-loop", daemon=True)
            thread.start()
            ready.wait()
            self._thread = thread
            self._loop = loop
            atexit.register(self.shutdown)
            return loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        what: str | None = None,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        drain: bool = False,
    ) -> Any:
        """Run ``fn(*args)`` on the loop and return its result in the calling thread.

        ``fn`` is a coroutine function (real async work) or a plain function, which runs on
        the loop thread because Bumble state may only change there. The exception it
        raises is re-raised here with its own type. On timeout the work is cancelled on
        the loop and ``OSError(ETIMEDOUT)`` names ``what``.

        On the main thread under main-thread delivery the wait is an idle point of the
        scheduler: events that hold the stack waiting for a handler's answer are handled
        meanwhile, and with ``drain`` every event is (as NimBLE's calls that wait, such
        as ``active(True)``, run the scheduler while they wait).
        """
        if self.in_loop_thread():
            what = what or getattr(fn, "__qualname__", "a call")
            raise RuntimeError(f"{what}: blocking call made from the stack's own loop thread")
        pending = _Call(fn, args)
        self.loop.call_soon_threadsafe(pending.start)
        sched = scheduler()
        if sched.on_main_thread():
            sched.wait_call(pending, timeout, drain)  # until done or the deadline
            timeout_left: float | None = 0.0
        else:
            timeout_left = timeout
        if pending.wait(timeout_left):
            return pending.outcome()
        pending.cancel()
        what = what or getattr(fn, "__qualname__", "a call")
        raise CallTimeoutError(
            ETIMEDOUT, f"ETIMEDOUT (no answer from the stack within {timeout:g} s: {what})"
        )

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread, without waiting.

        Waking the loop costs a write to its self-pipe and, worse, a hand-over of the GIL
        to the loop thread and back before the caller may go on; paid per notification it
        halved a sending loop's rate. So calls queue here and only the first of a batch
        wakes the loop; the batch runs in order. The wake-up is scheduled under the lock,
        so anything this thread schedules on the loop afterwards (a ``call``) runs after
        the batch: one thread's operations keep their order.
        """
        loop = self.loop
        with self._handover_lock:
            self._handover.append((fn, args))
            if self._handover_scheduled:
                return
            try:
                loop.call_soon_threadsafe(self._run_handover)
            except RuntimeError:  # the loop is closed (interpreter exit)
                self._handover.clear()
                raise
            self._handover_scheduled = True

    def yield_to_loop(self) -> None:
        """Let the loop thread have the GIL for a moment (a caller's thread only).

        A program that retries a refused send at once (ENOMEM, as MicroPython programs
        do) would otherwise hold the GIL for a whole switch interval (5 ms) while the
        loop, which is what frees the buffers, waits for it.
        """
        if not self.in_loop_thread():
            time.sleep(YIELD_SECONDS)

    def _run_handover(self) -> None:
        with self._handover_lock:
            self._handover_scheduled = False
            batch = self._handover
            self._handover = deque()
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:  # one failed hand-over must not lose the rest
                logger.exception("error in %r handed to the loop", fn)

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        what: str,
        done: Callable[[asyncio.Task[Any]], object] | None = None,
    ) -> asyncio.Task[Any]:
        """Start a background task on the loop (call on the loop thread); log its failure,
        then call ``done(task)``. One done callback, not one per concern: asyncio runs each
        as a loop callback of its own, and a GATT procedure's task is one per round trip."""
        task = self.loop.create_task(coro, name=what)
        if done is None:
            task.add_done_callback(_log_task_failure)
        else:

            def finished(task: asyncio.Task[Any]) -> None:
                _log_task_failure(task)
                done(task)

            task.add_done_callback(finished)
        return task

    def add_shutdown_hook(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Register a coroutine function run on the loop at interpreter exit."""
        self._shutdown_hooks.append(hook)

    def remove_shutdown_hook(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if hook in self._shutdown_hooks:
            self._shutdown_hooks.remove(hook)

    def shutdown(self) -> None:
        """Close live instances, cancel leftover tasks and stop the loop, within a budget.

        Runs from ``atexit`` so that a script which never calls ``active(False)`` still
        releases its transport and exits promptly; anything that overruns is abandoned
        (the loop thread is a daemon).
        """
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            future.result(EXIT_BUDGET)
        except Exception as exc:  # exit must never raise
            logger.debug("shutdown did not complete cleanly: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(0.5)

    async def _shutdown(self) -> None:
        for hook in list(self._shutdown_hooks):
            try:
                await asyncio.wait_for(hook(), EXIT_BUDGET / 2)
            except Exception as exc:
                logger.debug("shutdown hook failed: %r", exc)
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.2)


class _Call:
    """One blocking call: started on the loop, its outcome read by the caller's thread.

    Lighter than ``run_coroutine_threadsafe``, which wraps even a plain function in a
    coroutine, a task and two chained futures: here a plain function is one callback and
    the caller waits on one lock, released when the outcome is in. Both kinds still start
    one loop iteration after the hand-over, where a task's first step would run, so a
    call keeps its place after work the same thread handed over before it (``call_soon``
    batches, the tasks they spawn).
    """

    __slots__ = (
        "_fn",
        "_args",
        "_lock",
        "_done",
        "_value",
        "_error",
        "_task",
        "_callbacks",
        "_cancelled",
    )

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self._lock = threading.Lock()
        self._lock.acquire()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._callbacks: list[Callable[[Any], object]] = []
        self._cancelled = False

    # --- the loop's side ----------------------------------------------------------------
    def start(self) -> None:
        if self._cancelled:
            return
        loop = asyncio.get_running_loop()
        if asyncio.iscoroutinefunction(self._fn):
            self._task = loop.create_task(self._fn(*self._args))
            self._task.add_done_callback(self._task_done)
        else:
            loop.call_soon(self._run_plain)

    def _run_plain(self) -> None:
        if self._cancelled:
            return
        try:
            value = self._fn(*self._args)
        except BaseException as exc:  # handed to the caller, raised there with its type
            self._settle(None, exc)
            return
        self._settle(value, None)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._settle(None, asyncio.CancelledError())
            return
        error = task.exception()
        self._settle(None if error is not None else task.result(), error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        self._value, self._error = value, error
        self._fn = self._args = None  # type: ignore[assignment]
        self._done = True
        self._lock.release()
        for callback in self._callbacks:
            callback(self)

    def _cancel_on_loop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # --- the caller's side --------------------------------------------------------------
    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """``callback(self)`` once done, on the loop thread, or at once if done already
        (possibly both, if it settles meanwhile: callbacks here only wake a waiter)."""
        self._callbacks.append(callback)
        if self._done:
            callback(self)

    def wait(self, timeout: float | None) -> bool:
        """Whether it is done, waiting at most ``timeout`` seconds (None: no limit)."""
        if self._done:
            return True
        with _cpu.visiting():
            acquired = self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        if acquired:
            self._lock.release()
            return True
        return self._done

    def outcome(self) -> Any:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value

    def cancel(self) -> None:
        """Give up on it (the caller timed out): not started, it never runs; running as a
        task, it is cancelled there."""
        self._cancelled = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            runtime().loop.call_soon_threadsafe(self._cancel_on_loop)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Bumble listener so an exception in it is logged, never lost or propagated.

    pyee would otherwise swallow it, or it would abort the remaining listeners of the same
    HCI packet inside Bumble.
    """

    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", repr(target))
    log = logging.getLogger(getattr(target, "__module__", None) or __name__)

    def listener(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("error in stack callback %s", name)
            return None

    return listener


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    logger.error("error on the stack's loop: %s", context.get("message"), exc_info=exc)


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=exc)


_runtime = Runtime()


def runtime() -> Runtime:
    """The process-wide runtime."""
    return _runtime
