"""Where ``micropython.schedule``, ``machine.Timer`` callbacks and the sleeps go.

MicroPython runs scheduled functions (and soft-timer callbacks, which are
scheduled functions) on the main thread between bytecodes: never inside the
caller, never two at once. Under MicroPython's runtime that is what happens here
too, through :mod:`mpbluetooth._scheduler`, together with the BLE IRQ handlers;
``time.sleep`` and ``machine.idle`` on the main thread are its idle points.

Where the main thread cannot take them (main-thread delivery switched off with
``MPBLUETOOTH_DELIVERY=thread``, the platform cannot interrupt the main thread, or
the main thread has ended) one daemon thread drains a bounded queue instead,
which keeps both guarantees. ``IRQ_LOCK`` is held around each call there, so
``machine.disable_irq()`` holds them back as it would on a board.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

from .._scheduler import scheduler
from . import _importhook, strbuf

logger = logging.getLogger(__name__)

#: Pending calls before ``micropython.schedule`` raises. MicroPython's default is 4;
#: a thread that must win the GIL to drain its queue falls behind bursts more easily.
DEPTH: Final = 32

#: Held while a scheduled function runs; ``machine.disable_irq`` takes it.
IRQ_LOCK: Final = threading.RLock()


def print_exception(exc: BaseException) -> None:
    """Print an exception nobody caught the way MicroPython does: its traceback, to stderr."""
    strbuf.strip_helper_frames(exc)
    strbuf.add_hint(exc, transform_on=_importhook.is_installed())
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


class _Scheduler:
    """A bounded queue drained by one daemon thread, started on first use."""

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[tuple[Callable[[Any], object], Any]] = queue.Queue(depth)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, function: Callable[[Any], object], arg: Any) -> bool:
        """Queue ``function(arg)``; False if the queue is full."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="micropython.schedule", daemon=True
                )
                self._thread.start()
        try:
            self._queue.put_nowait((function, arg))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while True:
            function, arg = self._queue.get()
            with IRQ_LOCK:
                try:
                    function(arg)
                except BaseException as exc:  # MicroPython prints even SystemExit here
                    print_exception(exc)
            del function, arg


_scheduler = _Scheduler(DEPTH)


def _reported(function: Callable[[Any], object]) -> Callable[[Any], None]:
    def call(arg: Any) -> None:
        try:
            function(arg)
        except BaseException as exc:  # MicroPython prints even SystemExit here
            print_exception(exc)

    return call


def submit(function: Callable[[Any], object], arg: Any) -> bool:
    """Queue ``function(arg)`` for the main thread (else the scheduler thread); False if
    ``DEPTH`` calls are pending."""
    main = scheduler()
    if main.available():
        return main.submit(_reported(function), arg, limit=DEPTH)
    return _scheduler.submit(function, arg)


#: ``MPBLUETOOTH_DELIVERY=thread`` keeps IRQ handlers and scheduled calls off the main
#: thread under MicroPython's runtime (the behaviour of mpbluetooth 0.1).
DELIVERY_ENV: Final = "MPBLUETOOTH_DELIVERY"


def enable_main_thread() -> bool:
    """Run IRQ handlers and scheduled calls on the main thread, unless switched off."""
    if os.environ.get(DELIVERY_ENV, "main").strip().lower() == "thread":
        logger.debug("%s=thread: IRQ handlers stay on the dispatcher thread", DELIVERY_ENV)
        return False
    return scheduler().enable()


_original_sleep: Final = time.sleep


def sleep(seconds: float) -> None:
    """``time.sleep``: on the main thread an idle point, where handlers run meanwhile."""
    main = scheduler()
    if main.on_main_thread() and seconds >= 0:
        main.sleep(seconds)
    else:
        _original_sleep(seconds)


def idle(seconds: float) -> None:
    """``machine.idle``: wait for the next event (at most ``seconds``), having run it."""
    main = scheduler()
    if main.on_main_thread():
        main.wait(seconds)
    else:
        _original_sleep(seconds)


def disable() -> None:
    """``machine.disable_irq``: hold back scheduled work, on either path."""
    IRQ_LOCK.acquire()
    scheduler().lock()


def enable() -> None:
    """``machine.enable_irq``: undo one ``disable`` (RuntimeError if none is held)."""
    IRQ_LOCK.release()
    scheduler().unlock()
