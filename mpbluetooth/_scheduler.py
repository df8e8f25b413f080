"""Where handler code runs: one IRQ context per process, one queue, MicroPython's check points.

MicroPython runs an IRQ handler (and a ``micropython.schedule`` callback) on the main
thread, one at a time, never nested, and only at its scheduler's check points: right after a
branch bytecode (``py/vm.c`` reaches ``pending_exception_check`` from the jump opcodes only)
and inside blocking waits (``time.sleep``, ``machine.idle()``, ``select``/``poll``, reading
stdin). So nothing runs between a call's return and the statement that uses it unless a
branch comes in between: ``print("gap_disconnect:", ble.gap_disconnect(c))`` prints before
the disconnection's handler runs, however fast the controller answered (SPEC D2).

This module is the one owner of where that code runs. Work submitted from any thread (the
event rings' drains, scheduled callbacks, ``machine.Timer`` ticks) joins one queue and runs
in arrival order in the process's IRQ context:

* **main** (``enable()``: under MicroPython's runtime, or ``deliver_on_main_thread()``):
  the main thread runs the work itself when it waits in one of our idle points, and when it
  computes, at its next branch in the program's own code. A computing main thread is told
  with ``_thread.interrupt_main(SIGURG)`` (a Python-level signal, no system call is
  interrupted); the signal handler only arms the check points (``sys.monitoring`` JUMP and
  BRANCH events on 3.12+, an opcode trace on 3.11), which cost nothing while disarmed.
* **thread** (library mode by default, ``MPBLUETOOTH_DELIVERY=thread``, a platform without
  ``SIGURG``, or once the main thread has ended): one daemon thread, ``mpbluetooth-irq``,
  for every instance of the process.

Either way ``machine.disable_irq()`` holds all of it back, and the work never runs on the
stack's loop thread.
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
import threading
import time
import types
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from . import _cpu
from ._checkpoints import SIGNUM, CheckPoints, check_points, interrupt_main, roots

logger = logging.getLogger(__name__)

#: Most queued calls run in one batch before the program gets to its next check point, so
#: a callback that re-schedules itself cannot starve the program.
_BATCH_LIMIT: Final = 1000


class _Bell:
    """Where one thread sleeps until another rings (both under the scheduler's lock): a
    plain lock, held while nobody has rung. A lock hands over in ~5 µs where a Condition
    takes ~8 µs (it makes and queues a lock per wait), and a round trip wakes the IRQ
    context twice and the program once."""

    __slots__ = ("_lock", "asleep")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        #: Set by the sleeper (under the scheduler's lock) before it sleeps.
        self.asleep = False

    def ring_locked(self) -> bool:
        """Wake the sleeper, if it sleeps (or is about to); True if it did."""
        if not self.asleep:
            return False
        self.asleep = False
        self._lock.release()
        return True

    def sleep(self, timeout: float = -1) -> bool:
        """Sleep until rung or ``timeout`` seconds passed (not under the scheduler's lock);
        True if rung."""
        return self._lock.acquire(timeout=timeout)

    def settle_locked(self) -> None:
        """After a sleep that was not rung (timed out, interrupted): neither a ring nor a
        stale one is left over."""
        if self.asleep:
            self.asleep = False
        else:
            self._lock.acquire(False)  # rung after the timeout: take that ring back


class Scheduler:
    """The process's IRQ context (one per process, see :func:`scheduler`)."""

    def __init__(self) -> None:
        #: Guards the queue and the flags below; taken several times per event.
        self._lock = threading.Lock()
        #: Pending work, in arrival order: (function, argument, counted against a limit).
        self._queue: deque[tuple[Callable[[Any], object], Any, bool]] = deque()
        self._counted = 0
        self._main = threading.main_thread()
        #: Compared with ``threading.get_ident()`` (C) on every event: ``current_thread()``
        #: is a Python call.
        self._main_ident = self._main.ident
        #: True: the main thread is the IRQ context; False: the fallback thread.
        self._main_mode = False
        #: The fallback thread, started when first needed.
        self._thread: threading.Thread | None = None
        #: Where the fallback thread sleeps while it has nothing to run.
        self._fallback_bell = _Bell()
        #: True while the IRQ context runs work: nothing nests.
        self._running = False
        #: Held while work runs; ``machine.disable_irq()`` takes it (from any thread), so
        #: work that is running finishes first and no other starts until it is released.
        self._irq_lock = threading.RLock()
        #: Depth of ``machine.disable_irq()``: work waits while it is > 0.
        self._locked = 0
        #: Where the main thread sleeps in an idle point (``wait``).
        self._main_bell = _Bell()
        #: An interrupt (or a loop wake-up) is on its way: no second one is needed.
        self._poked = False
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._check_points: CheckPoints | None = None
        #: Event rings delivering here; their answered events are run during BLE calls.
        self._rings: list[Any] = []
        #: A pipe that wakes the main thread from ``wait_readable`` (made on first use),
        #: and whether it waits there now.
        self._fd_wake: tuple[int, int] | None = None
        self._fd_waiting = False
        #: The main thread waits in a ``BLE`` call (``wait_call``).
        self._in_call = False

    # --- set-up (main thread) --------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether the main thread is the IRQ context."""
        return self._main_mode

    def enable(self) -> bool:
        """Make the main thread the IRQ context from now on; False where this process
        cannot (not called from the main thread, or no way to interrupt it)."""
        if self._main_mode:
            return True
        if threading.current_thread() is not self._main:
            logger.info("main-thread delivery must be enabled from the main thread")
            return False
        roots()
        if SIGNUM is None:
            logger.info(
                "this platform cannot interrupt a computing main thread: IRQ handlers "
                "stay on the mpbluetooth-irq thread"
            )
            return False
        try:
            signal.signal(SIGNUM, self._on_interrupt)
        except (ValueError, OSError) as exc:
            logger.info("cannot interrupt the main thread (%r): IRQ handlers stay on a thread", exc)
            return False
        self._check_points = check_points(self._at_check_point)
        _patch_asyncio()
        try:
            # Called once the main thread has finished, before non-daemon threads are
            # joined: from then on the fallback thread takes the work.
            threading._register_atexit(self._main_ended)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # pragma: no cover - interpreter exiting
            pass
        with self._lock:
            self._main_mode = True
            pending = bool(self._queue)
        if pending:
            self.run_pending()
        logger.debug("IRQ handlers and scheduled calls run on the main thread")
        return True

    def _main_ended(self) -> None:
        if self._check_points is not None:
            self._check_points.disarm()
        with self._lock:
            self._main_mode = False
            try:
                self._start_fallback_locked()
            except RuntimeError:
                # Python 3.12 refuses new threads once shutdown has begun ("can't create
                # new thread at interpreter shutdown"); 3.11 and 3.13 allow this one. The
                # work queued now runs here, once; later events of threads that outlive
                # the main thread are not delivered there.
                self._thread = None
                drain_here = True
            else:
                drain_here = False
            self._fallback_bell.ring_locked()
        if drain_here:
            logger.debug("no fallback thread at shutdown: queued work runs on the main thread")
            self.run_pending()

    def add_ring(self, ring: Any) -> None:
        with self._lock:
            self._rings.append(ring)

    def remove_ring(self, ring: Any) -> None:
        with self._lock:
            if ring in self._rings:
                self._rings.remove(ring)

    def on_main_thread(self) -> bool:
        """True on the main thread while it is the IRQ context."""
        return self._main_mode and threading.get_ident() == self._main_ident

    def in_irq_context(self) -> bool:
        """True on the thread that runs handlers (the main thread or the fallback)."""
        if self._main_mode:
            return threading.get_ident() == self._main_ident
        return threading.current_thread() is self._thread

    def in_handler(self) -> bool:
        """True inside a handler or scheduled callback (on the IRQ context's thread)."""
        return self._running and self.in_irq_context()

    # --- submitting (any thread) -------------------------------------------------------
    def submit(self, function: Callable[[Any], object], arg: Any, limit: int = 0) -> bool:
        """Queue ``function(arg)`` for the IRQ context, after everything queued before it;
        False only if ``limit`` calls submitted with a limit are already pending
        (``micropython.schedule``'s queue is full)."""
        with self._lock:
            if limit:
                if self._counted >= limit:
                    return False
                self._counted += 1
            self._queue.append((function, arg, bool(limit)))
            if self._main_mode:
                self._wake_main_locked()
            else:
                self._start_fallback_locked()
                self._fallback_bell.ring_locked()
        return True

    def wake(self) -> None:
        """Wake the main thread if it waits in an idle point (a call it waits for ended)."""
        with self._lock:
            self._main_bell.ring_locked()

    def _wake_main_locked(self) -> None:
        if self._fd_waiting and self._fd_wake is not None:
            self._fd_waiting = False
            os.write(self._fd_wake[1], b"\0")
            return
        if self._main_bell.ring_locked():
            return
        if threading.get_ident() == self._main_ident:
            # Submitted by the program itself (``micropython.schedule``): it runs at the
            # program's next check point.
            self._arm_if_pending(sys._getframe(2))
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
        interrupt_main()

    # --- the main thread's check points ---------------------------------------------------
    def _on_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        """The tripped signal, run by CPython at a bytecode boundary or inside a C call that
        checks for signals (``print`` flushing a stream, holding its lock): never a place
        where MicroPython would run work, so this only arms the check points."""
        self._arm_if_pending(frame)

    def _at_check_point(self) -> None:
        if self._in_call:
            # Python code run inside a BLE call's wait (a weakref callback): never a check
            # point; the call arms them again as it returns.
            if self._check_points is not None:
                self._check_points.disarm()
            return
        self.run_pending()

    def run_pending(self) -> None:
        """On the main thread: run what is queued, in order, unless a handler is already
        running (no nesting) or ``machine.disable_irq()`` holds the work back."""
        if self._running or not self.on_main_thread():
            return
        if self._check_points is not None:
            self._check_points.disarm()
        if self._run_batch() and self._check_points is not None:
            self._check_points.arm(sys._getframe(1))  # a long batch: the rest at the next

    def _run_batch(self) -> bool:
        """Run queued work in the IRQ context; True if the batch was cut at its limit."""
        self._running = True
        try:
            for _ in range(_BATCH_LIMIT):
                with self._lock:
                    self._poked = False
                    if not self._queue or self._locked:
                        return False
                    function, arg, counted = self._queue.popleft()
                    if counted:
                        self._counted -= 1
                with self._irq_lock:
                    try:
                        function(arg)
                    except BaseException:  # callers report their own; this is a last resort
                        logger.exception("error in work scheduled for the IRQ context")
                del function, arg
            return True
        finally:
            self._running = False

    def run_answered(self) -> None:
        """During a ``BLE`` call: run only events that hold the stack open waiting for the
        handler's answer (read request, L2CAP accept, secrets), when they are next in
        line, so a call such as ``active(True)`` (which asks for the IRK) cannot wait on
        itself; every other event waits until the call has returned, as on NimBLE."""
        if self._running or self._locked or not self.on_main_thread():
            return
        self._running = True
        try:
            with self._irq_lock:
                for ring in list(self._rings):
                    ring.drain_answered()
        finally:
            self._running = False

    # --- the main thread's idle points -------------------------------------------------
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
        with self._lock:
            runnable = bool(self._queue) and not answered_only and not self._locked
            sleep = not (runnable or timeout <= 0 or (until is not None and until()))
            if sleep:
                self._main_bell.asleep = True
        if sleep:
            rung = False
            try:
                with _cpu.visiting():
                    rung = self._main_bell.sleep(timeout)
            finally:
                if not rung:  # a ring leaves nothing to settle: no second trip to the lock
                    with self._lock:
                        self._main_bell.settle_locked()
        run()

    def wait_readable(self, fd: int) -> None:
        """An idle point for a blocking read of ``fd`` (the program's stdin): a board's
        stdin loop runs the scheduler while it waits for a character, so a program blocked
        in ``sys.stdin.readline()`` still has its handlers run, and a stack that waits for
        a handler's answer (a read request) is not held up until the next line arrives.
        Returns once ``fd`` is readable; at once off the main thread or inside a handler."""
        if self._running or not self.on_main_thread():
            return
        if self._fd_wake is None:
            self._fd_wake = os.pipe()
            os.set_blocking(self._fd_wake[0], False)
        wake = self._fd_wake[0]
        while True:
            self.run_pending()
            with self._lock:
                if self._queue and not self._locked:
                    continue  # more arrived meanwhile, or a long batch was cut
                self._fd_waiting = True
            try:
                with _cpu.visiting():
                    ready, _, _ = select.select([fd, wake], [], [])
            except (OSError, ValueError):
                return  # the read itself will report what is wrong with the descriptor
            finally:
                with self._lock:
                    self._fd_waiting = False
            if wake in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 512)
            if fd in ready:
                # Work that woke it together with the input runs now: nothing else will
                # wake the main thread for it.
                self.run_pending()
                return

    def wait_call(self, future: Any, timeout: float | None, drain: bool) -> None:
        """The main thread waits for a ``BLE`` call's ``future`` (anything with ``done()``
        and ``add_done_callback``, as ``Runtime.call``'s pending call): only answered events
        run meanwhile (all events with ``drain``, as NimBLE's ``active(True)`` runs the
        scheduler while it waits for the host); the rest run at the program's next check
        point after the call returns. Returns when the future is done or the deadline
        passed (the caller's ``result`` then raises)."""
        future.add_done_callback(lambda _: self.wake())
        deadline = None if timeout is None else time.monotonic() + timeout
        self._in_call = True
        try:
            while not future.done():
                remaining = 3600.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.wait(remaining, answered_only=not drain, until=future.done)
        finally:
            self._in_call = False
        self._arm_if_pending(sys._getframe(2))

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` for the main thread: handlers run while it sleeps."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.run_pending()
                return
            self.wait(remaining)

    # --- the fallback thread -----------------------------------------------------------
    def _start_fallback_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._fallback, name="mpbluetooth-irq", daemon=True
            )
            self._thread.start()

    def _fallback(self) -> None:
        """The IRQ context while the main thread is not (library mode, or after it ended).
        It sleeps while the main thread is the IRQ context, nothing is queued, or
        ``disable_irq`` holds the work back."""
        _cpu.release_thread()
        lock, bell = self._lock, self._fallback_bell
        while True:
            lock.acquire()
            if self._main_mode or not self._queue or self._locked > 0:
                bell.asleep = True
                lock.release()
                with _cpu.visiting():
                    bell.sleep()
                continue
            lock.release()
            self._run_batch()

    # --- machine.disable_irq ------------------------------------------------------------
    def lock(self) -> None:
        """``machine.disable_irq()``: wait for work that is running, hold back the rest."""
        self._irq_lock.acquire()
        with self._lock:
            self._locked += 1

    def unlock(self) -> None:
        """``machine.enable_irq()``: RuntimeError if this thread holds no ``lock()``."""
        with self._lock:
            self._irq_lock.release()
            self._locked = max(0, self._locked - 1)
            if self._locked or not self._queue:
                return
            if not self._main_mode:
                self._fallback_bell.ring_locked()
                return
        if self.on_main_thread():
            self.run_pending()
        else:
            with self._lock:
                self._poked = False
                self._wake_main_locked()

    # --- asyncio on the main thread -----------------------------------------------------
    def _loop_started(self, loop: asyncio.AbstractEventLoop) -> None:
        self._main_loop = loop
        loop.call_soon(self.run_pending)

    def _loop_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop may have stopped before running the wake-up handed to it: what is
        pending runs at the program's next check point."""
        if self._main_loop is loop:
            self._main_loop = None
        self._poked = False
        self._arm_if_pending(sys._getframe(1))

    def _arm_if_pending(self, frame: types.FrameType | None) -> None:
        """On the main thread: have pending work run at the program's next check point,
        unless a handler is running (its batch takes it), ``disable_irq()`` holds it, or
        a ``BLE`` call waits (it arms them as it returns). Unlocked reads: this also runs
        in ``submit``, under the lock, and in the signal handler."""
        if self._queue and not (self._running or self._locked or self._in_call):
            if self._check_points is not None:
                self._check_points.arm(frame)


_patched = False


def _patch_asyncio() -> None:
    """An asyncio loop on the main thread sleeps in its selector, where neither a
    condition nor a check point reaches it: make it known, so work is handed to it
    with ``call_soon_threadsafe`` (its selector wait is an idle point, as MicroPython's
    asyncio waits in ``poll``)."""
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
    """The process-wide IRQ context."""
    return _scheduler
