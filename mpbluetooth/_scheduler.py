"""MicroPython's scheduler: IRQ handlers and scheduled calls on the main thread.

On MicroPython an IRQ handler (and a ``micropython.schedule`` callback) runs on the main
thread between two bytecodes of the program, which is paused meanwhile, or while the
program waits (``machine.idle()``, ``time.sleep``). Programs depend on that: a loop that
waits for ``_IRQ_GATTC_READ_RESULT`` expects ``_IRQ_GATTC_READ_DONE`` to have been handled
too before its next statement, because both came from one stack callback (SPEC D2).

This module gives a CPython process the same: work submitted from any thread is queued
here and run on the main thread, in order, one call at a time, never nested:

* when the main thread waits in one of our idle points (``sleep``, ``wait``, a ``BLE``
  call waiting on the stack, an asyncio loop running on the main thread), it is woken and
  runs the work itself, with no thread hop;
* when it computes, ``_thread.interrupt_main(signum)`` trips a Python-level signal handler
  at its next bytecode boundary. No OS signal is sent, so no system call (a ``write`` in
  progress) is interrupted. The work runs at the next instruction, wherever the program is
  (its own code, the standard library, a library it uses), as on MicroPython, except
  inside code that may hold a lock a handler could need (mpbluetooth itself,
  ``threading``, ``queue``, the import system): there it waits for the first instruction
  outside it, so a handler never waits on a lock the interrupted code holds.

Where that is impossible (the main thread has ended, or the platform has no
``interrupt_main`` with a signal number), ``submit`` returns False and the caller falls
back to a thread of its own (the event ring's dispatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import signal
import sys
import sysconfig
import threading
import time
import types
from collections import deque
from collections.abc import Callable
from typing import Any, Final

logger = logging.getLogger(__name__)

#: The signal number tripped by ``interrupt_main``: never sent by the OS here, and its
#: default action (ignore) is harmless should another process send it.
_SIGNUM: Final = getattr(signal, "SIGURG", None)

#: How long a deferred interrupt waits before it is tried again, in seconds.
_RETRY_S: Final = 0.0005

#: Most scheduled calls run in one batch before the program gets a bytecode again, so a
#: callback that re-schedules itself cannot starve the program.
_BATCH_LIMIT: Final = 1000


@functools.cache
def _lock_holding_roots() -> tuple[str, ...]:
    """Code that may hold a lock a handler could need: mpbluetooth itself (the runtime's
    hand-over lock, the ring, the compat shims), the thread and queue machinery of the
    standard library, and the import system. Interrupted there, the handler waits."""
    stdlib = sysconfig.get_paths()["stdlib"]
    roots = [os.path.dirname(os.path.abspath(__file__))]
    roots += [os.path.join(stdlib, name) for name in _LOCKING_STDLIB]
    return tuple(os.path.realpath(root) for root in roots)


_LOCKING_STDLIB: Final = (
    "threading.py",
    "queue.py",
    "concurrent",
    "importlib",
    "multiprocessing",
    "subprocess.py",
)


@functools.lru_cache(maxsize=1024)
def _may_interrupt(filename: str) -> bool:
    """True if a handler may run between two bytecodes of code from ``filename``."""
    if filename.startswith("<frozen"):
        return False  # the import system: module locks
    if not filename or filename.startswith("<"):
        return True  # -c code, exec'd strings, the REPL: the program's own
    path = os.path.realpath(filename)
    return not path.startswith(_lock_holding_roots())


class Scheduler:
    """The process's main-thread scheduler (one per process, see :func:`scheduler`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[tuple[Callable[[Any], object], Any]] = deque()
        self._main = threading.main_thread()
        self._enabled = False
        #: True while the main thread runs scheduled work: nothing nests.
        self._running = False
        #: Depth of ``machine.disable_irq()``: scheduled work waits while it is > 0.
        self._locked = 0
        #: The main thread sleeps in ``wait`` on the condition and must be notified.
        self._waiting = False
        #: An interrupt (or a loop wake-up) is on its way: no second one is needed.
        self._poked = False
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._retry = threading.Event()
        #: Frames traced while work waits for the program to leave lock-holding code.
        self._armed: list[types.FrameType] | None = None
        #: Event rings delivering here; their answered events are run during BLE calls.
        self._rings: list[Any] = []
        #: A pipe that wakes the main thread from ``wait_readable`` (made on first use),
        #: and whether it waits there now.
        self._fd_wake: tuple[int, int] | None = None
        self._fd_waiting = False

    # --- set-up (main thread) --------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self) -> bool:
        """Deliver on the main thread from now on; False where this process cannot (not
        called from the main thread, or no way to interrupt it)."""
        if self._enabled:
            return True
        if threading.current_thread() is not self._main:
            logger.info("main-thread delivery must be enabled from the main thread")
            return False
        _lock_holding_roots()
        interruptible = False
        if _SIGNUM is not None and sys.version_info >= (3, 10):
            try:
                signal.signal(_SIGNUM, self._on_interrupt)
                interruptible = True
            except (ValueError, OSError) as exc:
                logger.info("cannot interrupt the main thread (%r): idle points only", exc)
        if not interruptible:
            logger.info(
                "this platform cannot interrupt a computing main thread: IRQ handlers "
                "stay on the dispatcher thread"
            )
            return False
        _patch_asyncio()
        threading.Thread(target=self._retry_loop, name="mpbluetooth-sched", daemon=True).start()
        self._enabled = True
        logger.debug("IRQ handlers and scheduled calls run on the main thread")
        return True

    def add_ring(self, ring: Any) -> None:
        with self._cond:
            self._rings.append(ring)

    def remove_ring(self, ring: Any) -> None:
        with self._cond:
            if ring in self._rings:
                self._rings.remove(ring)

    def available(self) -> bool:
        """True while work submitted now will run on the main thread."""
        return self._enabled and self._main.is_alive()

    def on_main_thread(self) -> bool:
        return self._enabled and threading.current_thread() is self._main

    # --- submitting (any thread) -------------------------------------------------------
    def submit(self, function: Callable[[Any], object], arg: Any, limit: int = 0) -> bool:
        """Queue ``function(arg)`` for the main thread; False if unavailable or if
        ``limit`` calls are already pending (``micropython.schedule``'s queue full)."""
        if not self.available():
            return False
        with self._cond:
            if limit and len(self._queue) >= limit:
                return False
            self._queue.append((function, arg))
            self._wake_locked()
        return True

    def wake(self) -> None:
        """Wake the main thread if it waits in an idle point (a call it waits for ended)."""
        with self._cond:
            if self._waiting:
                self._cond.notify_all()

    def _wake_locked(self) -> None:
        if self._fd_waiting and self._fd_wake is not None:
            self._fd_waiting = False
            os.write(self._fd_wake[1], b"\0")
            return
        if self._waiting:
            self._cond.notify_all()
            return
        if self._poked:
            return
        self._poked = True
        loop = self._main_loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.run_pending)
            except RuntimeError:  # closed meanwhile: the interrupt below will do
                pass
        _interrupt_main()

    # --- running (main thread) ----------------------------------------------------------
    def _on_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        """The tripped signal: CPython runs it at a bytecode boundary, or inside a C call
        that checks for signals (``print`` flushing a buffered stream does, between its
        writes, holding the stream's lock). So the work never runs here: it runs at the
        next instruction of an interruptible frame (see ``_defer``)."""
        if frame is None:
            self.run_pending()
        elif self._armed is not None:
            return  # already waiting for the next instruction of an interruptible frame
        elif sys.gettrace() is None:
            self._defer(frame)
        elif _may_interrupt(frame.f_code.co_filename):
            self.run_pending()  # a debugger traces: its tracing cannot be shared
        else:
            self._retry.set()

    # --- deferring past code that may hold a lock ------------------------------------
    def _defer(self, frame: types.FrameType) -> None:
        """Run the work at the next instruction of an interruptible frame (outside
        lock-holding code): trace the interruptible frames of the stack, and any such frame
        entered, until one of them executes an instruction. Tracing costs only until then.
        """
        if self._armed:
            return
        armed = []
        current: types.FrameType | None = frame
        while current is not None:
            if _may_interrupt(current.f_code.co_filename):
                current.f_trace = self._trace_local
                current.f_trace_lines = False
                current.f_trace_opcodes = True
                armed.append(current)
            current = current.f_back
        self._armed = armed
        sys.settrace(self._trace_call)

    def _disarm(self) -> None:
        sys.settrace(None)
        for frame in self._armed or ():
            frame.f_trace = None
            frame.f_trace_opcodes = False
        self._armed = None

    def _trace_call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if self._armed is None:
            return None
        if event == "call" and _may_interrupt(frame.f_code.co_filename):
            self._disarm()
            self.run_pending()
        return None

    def _trace_local(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if self._armed is None:
            return None
        if _may_interrupt(frame.f_code.co_filename):
            self._disarm()
            self.run_pending()
            return None
        return self._trace_local

    def pending_after_call(self) -> None:
        """Called on the main thread as a ``BLE`` call returns: events that arrived while
        it waited run at the program's next bytecode, before its next statement."""
        with self._cond:
            pending = bool(self._queue) and not self._running and not self._locked
        if pending and self._armed is None and sys.gettrace() is None:
            self._defer(sys._getframe(1))

    def _retry_loop(self) -> None:
        while True:
            self._retry.wait()
            self._retry.clear()
            time.sleep(_RETRY_S)
            with self._cond:
                pending = bool(self._queue) and not self._running and not self._waiting
            if pending:
                _interrupt_main()

    def run_pending(self) -> None:
        """Run what is queued, in order, unless a handler is already running (no nesting)
        or ``machine.disable_irq()`` holds the work back."""
        if self._running or self._locked or threading.current_thread() is not self._main:
            return
        if self._armed is not None:
            self._disarm()  # reached another way (an idle point, the asyncio loop)
        self._running = True
        try:
            for _ in range(_BATCH_LIMIT):
                with self._cond:
                    self._poked = False
                    if not self._queue:
                        return
                    function, arg = self._queue.popleft()
                try:
                    function(arg)
                except BaseException:  # callers report their own; this is a last resort
                    logger.exception("error in work scheduled on the main thread")
                del function, arg
            self._retry.set()  # a long batch: let the program have a bytecode first
        finally:
            self._running = False

    def run_answered(self) -> None:
        """During a ``BLE`` call: run only events that hold the stack open waiting for the
        handler's answer (read request, L2CAP accept, secrets), when they are next in
        line, so a call such as ``active(True)`` (which asks for the IRK) cannot wait on
        itself; every other event waits until the call has returned, as on NimBLE."""
        if self._running or self._locked or threading.current_thread() is not self._main:
            return
        self._running = True
        try:
            for ring in list(self._rings):
                ring.drain_answered()
        finally:
            self._running = False

    def wait(
        self,
        timeout: float,
        answered_only: bool = False,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """An idle point of the main thread: run pending work, else sleep until work
        arrives, ``wake()`` is called (``until`` is checked under the same lock, so a
        wake-up cannot slip in between), or ``timeout`` seconds pass; then run it."""
        run = self.run_answered if answered_only else self.run_pending
        run()
        with self._cond:
            runnable = bool(self._queue) and not answered_only and not self._locked
            if not (runnable or timeout <= 0 or (until is not None and until())):
                self._waiting = True
                try:
                    self._cond.wait(timeout)
                finally:
                    self._waiting = False
        run()

    def wait_readable(self, fd: int) -> None:
        """An idle point for a blocking read of ``fd`` (the program's stdin): a board's
        stdin loop runs the scheduler while it waits for a character, so a program blocked
        in ``sys.stdin.readline()`` still has its handlers run, and a stack that waits for
        a handler's answer (a read request) is not held up until the next line arrives.
        Returns once ``fd`` is readable; at once off the main thread or inside a handler."""
        if not self._enabled or self._running or threading.current_thread() is not self._main:
            return
        if self._fd_wake is None:
            self._fd_wake = os.pipe()
            os.set_blocking(self._fd_wake[0], False)
        wake = self._fd_wake[0]
        while True:
            self.run_pending()
            with self._cond:
                if self._queue and not self._locked:
                    continue  # more arrived meanwhile, or a long batch was cut
                self._fd_waiting = True
            try:
                ready, _, _ = select.select([fd, wake], [], [])
            except (OSError, ValueError):
                return  # the read itself will report what is wrong with the descriptor
            finally:
                with self._cond:
                    self._fd_waiting = False
            if wake in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 512)
            if fd in ready:
                return

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` for the main thread: handlers run while it sleeps."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.run_pending()
                return
            self.wait(remaining)

    # --- machine.disable_irq ------------------------------------------------------------
    def lock(self) -> None:
        self._locked += 1

    def unlock(self) -> None:
        self._locked = max(0, self._locked - 1)
        if not self._locked:
            self.run_pending()

    # --- asyncio on the main thread -----------------------------------------------------
    def _loop_started(self, loop: asyncio.AbstractEventLoop) -> None:
        self._main_loop = loop
        loop.call_soon(self.run_pending)

    def _loop_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._main_loop is loop:
            self._main_loop = None


def _interrupt_main() -> None:
    import _thread

    if _SIGNUM is None:  # pragma: no cover - enable() refuses such a platform
        return
    try:
        _thread.interrupt_main(_SIGNUM)
    except (ValueError, RuntimeError, TypeError):  # pragma: no cover - platform-specific
        pass


_patched = False


def _patch_asyncio() -> None:
    """An asyncio loop on the main thread sleeps in its selector, where neither a
    condition nor a bytecode boundary reaches it: make it known, so work is handed to it
    with ``call_soon_threadsafe``."""
    global _patched
    if _patched:
        return
    _patched = True
    original = asyncio.BaseEventLoop.run_forever

    @functools.wraps(original)
    def run_forever(self: asyncio.BaseEventLoop) -> None:
        sched = _scheduler
        if not sched.on_main_thread():
            return original(self)
        previous = sched._main_loop
        sched._loop_started(self)
        try:
            return original(self)
        finally:
            sched._loop_stopped(self)
            sched._main_loop = previous

    asyncio.BaseEventLoop.run_forever = run_forever  # type: ignore[method-assign]


_scheduler = Scheduler()


def scheduler() -> Scheduler:
    """The process-wide main-thread scheduler."""
    return _scheduler
