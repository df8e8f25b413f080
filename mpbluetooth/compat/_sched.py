"""Where ``micropython.schedule``, ``machine.Timer`` callbacks and the sleeps go.

MicroPython runs scheduled functions (and soft-timer callbacks, which are scheduled
functions) in its scheduler: never inside the caller, never two at once, never overlapping
an IRQ handler. Here they join the BLE events in the one queue of
:mod:`mpbluetooth._scheduler`, in arrival order, in the process's IRQ context (the main
thread at MicroPython's check points under MicroPython's runtime, else one fallback
thread); ``time.sleep`` and ``machine.idle`` on the main thread are its idle points, and
``machine.disable_irq()`` holds all of it back in either mode.
"""

from __future__ import annotations

import logging
import os
import sys
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


def print_exception(exc: BaseException) -> None:
    """Print an exception nobody caught the way MicroPython does: its traceback, to stderr."""
    strbuf.strip_helper_frames(exc)
    strbuf.add_hint(exc, transform_on=_importhook.is_installed())
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


def _reported(function: Callable[[Any], object]) -> Callable[[Any], None]:
    def call(arg: Any) -> None:
        try:
            function(arg)
        except BaseException as exc:  # MicroPython prints even SystemExit here
            print_exception(exc)

    return call


def submit(function: Callable[[Any], object], arg: Any) -> bool:
    """Queue ``function(arg)`` for the IRQ context; False if ``DEPTH`` calls are pending."""
    return scheduler().submit(_reported(function), arg, limit=DEPTH)


#: ``MPBLUETOOTH_DELIVERY=thread`` keeps IRQ handlers and scheduled calls on the fallback
#: thread under MicroPython's runtime (the behaviour of mpbluetooth 0.1).
DELIVERY_ENV: Final = "MPBLUETOOTH_DELIVERY"


def enable_main_thread() -> bool:
    """Run IRQ handlers and scheduled calls on the main thread, unless switched off."""
    if os.environ.get(DELIVERY_ENV, "main").strip().lower() == "thread":
        logger.debug("%s=thread: IRQ handlers run on the fallback thread", DELIVERY_ENV)
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
    """``machine.disable_irq``: hold back handlers and scheduled work, in either mode."""
    scheduler().lock()


def enable() -> None:
    """``machine.enable_irq``: undo one ``disable`` (RuntimeError if none is held)."""
    scheduler().unlock()
