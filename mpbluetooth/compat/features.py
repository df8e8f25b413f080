"""The table of MicroPython behaviours emulated for the user's code, and their switches.

Public (desktop only) because its row names are what a user passes to switch rows off:
``FEATURES`` lists them, with each row's environment variable and the hint an error
carries when its row is off.

Each row can be switched off on its own (``mpbluetooth-python --no-NAME``,
``MPBLUETOOTH_NAME=0`` with ``-`` written ``_``, or ``install(off=[...])``), for
example to check that a program also runs on plain CPython. With a row off, an
uncaught error of the kind that row prevents carries a note naming the MicroPython
idiom and the switch, so the user learns why the program works on a board.

The set of rows on is process-wide: the import hook and the launcher's compiler
read it when they compile a module.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["FEATURES", "Feature", "add_hints", "configure", "enabled", "env_off", "unknown"]


@dataclass(frozen=True)
class Feature:
    """One row of the table: what MicroPython does, and the errors CPython gives instead."""

    name: str
    idiom: str
    #: The messages of errors this row prevents (matched against ``str(exc)``).
    errors: tuple[type[BaseException], ...]
    message: re.Pattern[str]
    #: Compiler-level rows need the import hook; the others are runtime shims.
    compiler: bool

    @property
    def env(self) -> str:
        return "MPBLUETOOTH_" + self.name.upper().replace("-", "_")

    def hint(self) -> str:
        return (
            f"hint: {self.idiom}; mpbluetooth emulates this, but it is switched off here "
            f"(--no-{self.name} or {self.env}=0)"
        )


def _f(
    name: str,
    idiom: str,
    errors: tuple[type[BaseException], ...],
    message: str,
    *,
    compiler: bool,
) -> Feature:
    return Feature(name, idiom, errors, re.compile(message), compiler)


FEATURES: Final[dict[str, Feature]] = {
    f.name: f
    for f in (
        # str-buffer keeps its own hints in strbuf.py (there are two: on and off).
        _f("str-buffer", "MicroPython treats str as a buffer (bytes + str)", (), r"(?!)",
           compiler=True),
        _f("const", "MicroPython's compiler knows const() without an import",
           (NameError,), r"name 'const' is not defined", compiler=True),
        _f("viper", "MicroPython's compiler knows @micropython.viper/@micropython.native and "
           "the viper casts ptr8, ptr16, ptr32, uint without an import",
           (NameError,), r"name '(micropython|ptr8|ptr16|ptr32|uint)' is not defined",
           compiler=True),
        _f("annotations", "MicroPython never evaluates annotations, so they may name anything",
           (NameError,), r"name '\w+' is not defined", compiler=True),
        _f("private-names", "MicroPython does not mangle __names, so obj.__x set in a class "
           "is readable anywhere", (AttributeError,), r"has no attribute '(_\w+)?__\w*[^_\W]'",
           compiler=True),
        _f("item-store", "MicroPython truncates an int stored into a bytearray (buf[0] = 256 "
           "stores 0)", (ValueError, OverflowError),
           r"byte must be in range\(0, 256\)|memoryview: invalid value for format"
           r"|unsigned byte integer is (greater than maximum|less than minimum)",
           compiler=True),
        _f("bytes-in", "MicroPython accepts a str on the left of `in` a bytes object",
           (TypeError,), r"a bytes-like object is required, not 'str'", compiler=True),
        _f("bytes-encoding", "MicroPython ignores the encoding given to bytes()/bytearray() "
           "with an iterable", (TypeError,), r"encoding without a string argument",
           compiler=True),
        _f("json", "MicroPython's json writes bytes as a JSON string",
           (TypeError,), r"Object of type bytes is not JSON serializable", compiler=True),
        _f("random", "MicroPython's random is the Yasmarang generator", (), r"(?!)",
           compiler=True),
        _f("struct", "MicroPython's struct takes a str or any buffer for 's' and truncates "
           "integers to the field", (Exception,),
           r"argument for 's' must be a bytes object|format requires .*<=.*number"
           r"|ubyte format requires|byte format requires|required argument is not",
           compiler=True),
        _f("machine", "a board's machine module has Pin, ADC, PWM, SPI, I2C, Signal, WDT, RTC...",
           (ImportError, AttributeError),
           r"cannot import name '\w+' from '(mpbluetooth\.compat\.)?machine'"
           r"|module '(mpbluetooth\.compat\.)?machine' has no attribute",
           compiler=False),
        _f("esp32", "an ESP32 board has the esp32 module (NVS...)", (ImportError,),
           r"No module named 'esp32'", compiler=False),
        _f("gc", "MicroPython's gc has mem_free(), mem_alloc() and threshold()",
           (AttributeError,), r"module 'gc' has no attribute '(mem_free|mem_alloc|threshold)'",
           compiler=False),
    )
}  # fmt: skip

_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
_lock = threading.Lock()
_on: set[str] = set(FEATURES)


def unknown(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not rows of the table."""
    return [n for n in names if n not in FEATURES]


def env_off(environ: Mapping[str, str] | None = None) -> set[str]:
    """Rows switched off by ``MPBLUETOOTH_<NAME>=0`` (or false/no/off) in ``environ``."""
    environ = os.environ if environ is None else environ
    return {
        name
        for name, feature in FEATURES.items()
        if environ.get(feature.env, "").strip().lower() in _FALSE_WORDS
    }


def configure(off: Iterable[str]) -> None:
    """Switch every row on except those in ``off``."""
    off = set(off)
    bad = unknown(off)
    if bad:
        raise ValueError(f"unknown MicroPython compatibility rows: {', '.join(sorted(bad))}")
    with _lock:
        _on.clear()
        _on.update(set(FEATURES) - off)


def enabled(name: str) -> bool:
    """Whether row ``name`` is on."""
    return name in _on


def on() -> frozenset[str]:
    """The rows that are on now."""
    return frozenset(_on)


def add_hints(exc: BaseException) -> None:
    """Note on ``exc`` (and its chain) the idiom of every switched-off row that explains it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for feature in FEATURES.values():
            if (
                feature.name not in _on
                and isinstance(current, feature.errors)
                and feature.message.search(str(current))
            ):
                hint = feature.hint()
                if hint not in getattr(current, "__notes__", ()):
                    current.add_note(hint)
        current = current.__cause__ or current.__context__
