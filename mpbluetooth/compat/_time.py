"""MicroPython's ``time`` additions, injected into CPython's real ``time`` module.

MicroPython programs ``import time`` before anything else and then call
``time.ticks_ms()``, so a separate module would be too late: the functions are
attached to the module object every program already holds.

Ticks wrap with a period of 2**30 as on MicroPython, so code that compares
ticks with ``<`` instead of ``ticks_diff`` fails here as it would on a board.
"""

from __future__ import annotations

import time
from typing import Final

TICKS_PERIOD: Final = 1 << 30
TICKS_MAX: Final = TICKS_PERIOD - 1
_TICKS_HALF: Final = TICKS_PERIOD // 2


def ticks_ms() -> int:
    """Milliseconds from an arbitrary origin, wrapping at 2**30 (about 12.4 days)."""
    return (time.monotonic_ns() // 1_000_000) & TICKS_MAX


def ticks_us() -> int:
    """Microseconds from an arbitrary origin, wrapping at 2**30 (about 17.9 minutes)."""
    return (time.monotonic_ns() // 1_000) & TICKS_MAX


def ticks_cpu() -> int:
    """The finest counter available (nanoseconds here), wrapping at 2**30.

    MicroPython: CPU cycles or microseconds depending on the port; only ever
    meaningful through ``ticks_diff`` over short intervals, as here.
    """
    return time.perf_counter_ns() & TICKS_MAX


def ticks_add(ticks: int, delta: int) -> int:
    """``ticks`` moved by ``delta`` (which may be negative), wrapped to the tick period.

    Raises ``OverflowError`` when ``delta`` is too large for ``ticks_diff`` to
    recover, as MicroPython does.
    """
    if not -_TICKS_HALF < delta < _TICKS_HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & TICKS_MAX


def ticks_diff(ticks1: int, ticks2: int) -> int:
    """Signed ``ticks1 - ticks2`` across a wrap, in -2**29 .. 2**29 - 1."""
    return ((ticks1 - ticks2 + _TICKS_HALF) & TICKS_MAX) - _TICKS_HALF


def sleep_ms(ms: int) -> None:
    """Sleep ``ms`` milliseconds, releasing the GIL so BLE events keep flowing.

    Negative values return at once, as on MicroPython (CPython's ``sleep`` would raise).
    """
    if ms > 0:
        time.sleep(ms / 1_000)


def sleep_us(us: int) -> None:
    """Sleep ``us`` microseconds; negative values return at once."""
    if us > 0:
        time.sleep(us / 1_000_000)


_ADDITIONS: Final = {
    "ticks_ms": ticks_ms,
    "ticks_us": ticks_us,
    "ticks_cpu": ticks_cpu,
    "ticks_add": ticks_add,
    "ticks_diff": ticks_diff,
    "sleep_ms": sleep_ms,
    "sleep_us": sleep_us,
}


def patch() -> None:
    """Attach the additions to ``time``; names CPython already defines are left alone.

    ``time.sleep`` itself becomes an idle point of the main thread (IRQ handlers run
    while the program sleeps, as on MicroPython); on other threads it is CPython's.
    """
    from . import _sched

    for name, function in _ADDITIONS.items():
        if not hasattr(time, name):
            setattr(time, name, function)
    setattr(time, "sleep", _sched.sleep)  # noqa: B010 - replacing CPython's own
