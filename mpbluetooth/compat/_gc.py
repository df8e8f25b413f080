"""MicroPython's ``gc`` additions, added to CPython's real ``gc`` module by ``install()``.

Programs print ``gc.mem_free()`` or collect when it runs low; CPython's ``gc`` has
no heap figures. The values here are documented approximations, not a heap:
``mem_alloc()`` is this process's resident memory and ``mem_free()`` the memory the
OS reports available, each capped to MicroPython's small-int range.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Final

__all__ = ["mem_alloc", "mem_free", "patch", "threshold"]

logger = logging.getLogger("mpbluetooth.compat.gc")

_CAP: Final = (1 << 30) - 1
_FALLBACK: Final = 1 << 20
_threshold = -1


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4096


def mem_alloc() -> int:
    """Bytes in use: the process's resident set (``/proc/self/statm``), else 1 MiB."""
    try:
        with open("/proc/self/statm") as file:
            resident_pages = int(file.read().split()[1])
    except (OSError, ValueError, IndexError):
        return _FALLBACK
    return min(_CAP, resident_pages * _page_size())


def mem_free() -> int:
    """Bytes free: the OS's ``MemAvailable`` (``/proc/meminfo``), else 1 MiB."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return min(_CAP, int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return _FALLBACK


def threshold(amount: int | None = None) -> int | None:
    """Get the stored threshold (-1: none, as MicroPython starts), or store one.

    CPython's collector is not changed by it.
    """
    global _threshold
    if amount is None:
        return _threshold
    _threshold = int(amount)
    logger.debug("gc.threshold(%d): recorded; CPython's collector is unchanged", amount)
    return None


def patch() -> None:
    """Add ``mem_free``, ``mem_alloc`` and ``threshold`` to the real ``gc`` module."""
    for function in (mem_alloc, mem_free, threshold):
        if not hasattr(gc, function.__name__):
            setattr(gc, function.__name__, function)
