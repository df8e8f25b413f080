"""The scheduler thread behind ``micropython.schedule`` and ``machine.Timer``.

MicroPython runs scheduled functions (and soft-timer callbacks, which are
scheduled functions) on the main thread between bytecodes: never inside the
caller, never two at once. A CPython program's main thread cannot be
interrupted that way, so one daemon thread drains a bounded queue instead,
which keeps both guarantees. ``IRQ_LOCK`` is held around each call, so
``machine.disable_irq()`` holds them back as it would on a board.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, Final

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


def submit(function: Callable[[Any], object], arg: Any) -> bool:
    """Queue ``function(arg)`` on the scheduler thread; False if ``DEPTH`` calls are pending."""
    return _scheduler.submit(function, arg)
