"""MicroPython's ``micropython`` module for CPython (installed as ``micropython``).

Desktop-only decisions:

* ``schedule`` runs functions on the main thread, between bytecodes or while it
  waits, serially and in submission order, as MicroPython does (a scheduler thread
  where the main thread cannot take them; see ``compat._sched``). They never run
  inside the caller and never two at once.
* Memory and compiler controls (``mem_info``, ``heap_lock``, ``opt_level``...) keep
  their signatures and return types so programs run, but CPython's allocator and
  compiler are not affected.
"""

from __future__ import annotations

import gc as _gc
import sys as _sys
import threading as _threading
from collections.abc import Callable as _Callable
from typing import Any as _Any
from typing import TypeVar as _TypeVar

from . import _sched

__all__ = [
    "alloc_emergency_exception_buf",
    "asm_thumb",
    "const",
    "heap_lock",
    "heap_locked",
    "heap_unlock",
    "kbd_intr",
    "mem_info",
    "native",
    "opt_level",
    "qstr_info",
    "schedule",
    "stack_use",
    "viper",
]

_T = _TypeVar("_T")


def const(value: _T) -> _T:
    """Return ``value``: MicroPython's compile-time constant marker."""
    return value


def schedule(function: _Callable[[_Any], object], arg: _Any) -> None:
    """Run ``function(arg)`` soon, on the main thread, after earlier scheduled calls.

    Raises ``RuntimeError("schedule queue full")`` when 32 calls are pending
    (MicroPython's default depth is 4). An exception in ``function`` is printed to
    stderr, as MicroPython prints it, and the scheduler carries on.
    """
    if not _sched.submit(function, arg):
        raise RuntimeError("schedule queue full")


def _decorator(function: _T) -> _T:
    return function


native = _decorator
"""No-op: the native code emitter does not exist on CPython."""
viper = _decorator
"""No-op: the viper code emitter does not exist on CPython."""
asm_thumb = _decorator
"""No-op: a function body of Thumb assembler will not run here, but the decorator loads."""


def alloc_emergency_exception_buf(size: int) -> None:
    """No-op: CPython can always allocate an exception in a callback."""


_opt_level = _sys.flags.optimize


def opt_level(level: int | None = None) -> int | None:
    """Get or set the optimisation level.

    MicroPython: affects how later code is compiled; here the value is only stored.
    """
    global _opt_level
    if level is None:
        return _opt_level
    _opt_level = int(level)
    return None


def stack_use() -> int:
    """Depth of the calling thread's Python stack, in frames (MicroPython: bytes)."""
    frame = _sys._getframe(1)
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


def mem_info(verbose: object = None) -> None:
    """Print what CPython can tell about memory; the layout differs from MicroPython's."""
    print(f"stack: {stack_use()} frames")
    print(
        f"GC: tracked objects: {len(_gc.get_objects())}, pending per generation: {_gc.get_count()}"
    )
    if verbose:
        for generation, stats in enumerate(_gc.get_stats()):
            print(f"GC generation {generation}: {stats}")


def qstr_info(verbose: object = None) -> None:
    """Print an empty interned-string summary: CPython has no qstr pool."""
    print("qstr pool: n_pool=0, n_qstr=0, n_str_data_bytes=0, n_total_bytes=0")


_heap_lock_depth = 0
_heap_guard = _threading.Lock()


def heap_lock() -> None:
    """Count a heap lock. MicroPython: allocation then raises MemoryError; here it still works."""
    global _heap_lock_depth
    with _heap_guard:
        _heap_lock_depth += 1


def heap_unlock() -> int:
    """Undo one ``heap_lock``; returns the remaining lock depth."""
    global _heap_lock_depth
    with _heap_guard:
        _heap_lock_depth = max(0, _heap_lock_depth - 1)
        return _heap_lock_depth


def heap_locked() -> int:
    """The current heap lock depth, 0 when unlocked."""
    return _heap_lock_depth


_kbd_intr_char = 3


def kbd_intr(char: int) -> None:
    """Record the interrupt character (-1 disables). Ctrl-C on a desktop terminal is SIGINT,
    which this does not change."""
    global _kbd_intr_char
    _kbd_intr_char = int(char)
