"""MicroPython's runtime for ordinary CPython programs: one call, ``install()``.

Desktop only. ``mpbluetooth-python`` calls ``install(str_buffer=True)`` before it
runs a program; a plain ``python`` process gets nothing until it calls
``install()`` itself. Importing ``mpbluetooth`` never installs anything.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["install"]

logger = logging.getLogger(__name__)

#: MicroPython's own ``bluetooth`` module contents, nothing more.
BLUETOOTH_NAMES: Final = (
    "BLE",
    "UUID",
    "FLAG_READ",
    "FLAG_WRITE",
    "FLAG_NOTIFY",
    "FLAG_INDICATE",
    "FLAG_WRITE_NO_RESPONSE",
)

#: MicroPython still accepts ``import utime`` etc. for these modules.
_U_ALIASES: Final = frozenset(
    {
        "array", "asyncio", "binascii", "collections", "errno", "hashlib", "heapq", "io",
        "json", "machine", "os", "platform", "random", "re", "select", "socket", "ssl",
        "struct", "sys", "time", "zlib",
    }
)  # fmt: skip

_lock = threading.Lock()
_installed = False


def _bluetooth_getattr(name: str) -> object:
    """Resolve the ``bluetooth`` module's names on first use, so startup skips Bumble."""
    if name not in BLUETOOTH_NAMES:
        raise AttributeError(f"module 'bluetooth' has no attribute '{name}'")
    import mpbluetooth
    from mpbluetooth import constants

    module = sys.modules[__name__ + "._bluetooth"]
    for attr in BLUETOOTH_NAMES:
        source = mpbluetooth if attr in ("BLE", "UUID") else constants
        setattr(module, attr, getattr(source, attr))
    return getattr(module, name)


def _make_bluetooth() -> types.ModuleType:
    module = types.ModuleType("bluetooth", "MicroPython's bluetooth module, served by mpbluetooth.")
    module.__dict__["__all__"] = list(BLUETOOTH_NAMES)
    module.__dict__["__getattr__"] = _bluetooth_getattr
    module.__dict__["__dir__"] = lambda: sorted({*BLUETOOTH_NAMES, "__name__", "__doc__"})
    return module


class _UAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import utime`` -> ``time``; consulted last, so a real ``utime`` module wins."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None and fullname.startswith("u") and fullname[1:] in _U_ALIASES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system returns whatever sys.modules holds afterwards.
        sys.modules[module.__name__] = importlib.import_module(module.__name__[1:])


def install(str_buffer: bool = False, *, off: Iterable[str] = ()) -> None:
    """Make MicroPython's runtime available to this process. Idempotent.

    Installs the modules ``bluetooth``/``ubluetooth`` (``BLE``, ``UUID``, ``FLAG_*``),
    ``micropython`` and ``machine``; adds ``ticks_ms``, ``sleep_ms``... to ``time`` and
    ``sleep_ms``, ``wait_for_ms``, ``ThreadSafeFlag`` (and an early-callable
    ``create_task``) to ``asyncio``; lets ``import utime``/``uasyncio``/... find the
    standard modules. With ``str_buffer=True`` modules imported from now on from
    outside the standard library and site-packages get the str-as-buffer transform
    (``bytes + str`` as on MicroPython); see ``docs/compat.md``.

    The other rows of MicroPython's behaviour (``const`` without an import, ``json``
    of bytes, Yasmarang ``random``, ``machine.Pin``, ``esp32``, ``gc.mem_free``...; the
    table is ``features.FEATURES``) are on unless named in ``off``; the compiler-level
    ones apply through the same import hook, to modules imported after the call.
    """
    global _installed
    from . import features

    rows_off = set(off) | (set() if str_buffer else {"str-buffer"})
    features.configure(rows_off)
    with _lock:
        if not _installed:
            from . import _asyncio, _sched, _time, machine, micropython

            _sched.enable_main_thread()
            _time.patch()
            _asyncio.patch()
            bluetooth = _make_bluetooth()
            sys.modules[__name__ + "._bluetooth"] = bluetooth
            sys.modules["bluetooth"] = sys.modules["ubluetooth"] = bluetooth
            sys.modules["micropython"] = micropython
            sys.modules["machine"] = machine
            sys.meta_path.append(_UAliasFinder())
            _installed = True
            logger.debug("MicroPython runtime shims installed")
        if features.enabled("gc"):
            from . import _gc

            _gc.patch()
        if features.enabled("esp32"):
            from . import esp32

            sys.modules.setdefault("esp32", esp32)
    if any(features.enabled(n) for n, f in features.FEATURES.items() if f.compiler):
        from . import _importhook

        _importhook.install()
