"""MicroPython's ``random`` for the user's code: the Yasmarang generator.

A program on a board and its peer here must agree on "random" payloads after the
same ``seed()``: MicroPython's ``ble_l2cap`` test seeds 22 and both sides compare.
So this module reproduces MicroPython's generator (``extmod/modrandom.c``): its
32-bit state update, ``getrandbits`` keeping the low bits, ``randrange``/``randint``/
``choice`` drawing below a bound by masking and rejecting, and ``random``/``uniform``
filling a double's 52 fraction bits from two draws, as the unix port does (boards
with single-precision floats take 23 bits of one draw: those floats differ).

Names MicroPython lacks (``shuffle``, ``sample``...) fall through to CPython's
``random``, with its own generator.
"""

from __future__ import annotations

import logging as _logging
import os as _os
import random as _cpython_random
import struct as _struct
import threading as _threading
from collections.abc import Sequence as _Sequence
from typing import Any as _Any
from typing import TypeVar as _TypeVar

__all__ = ["choice", "getrandbits", "randint", "random", "randrange", "seed", "uniform"]

_logger = _logging.getLogger("mpbluetooth.compat.random")
_T = _TypeVar("_T")
_M32 = 0xFFFF_FFFF
_lock = _threading.Lock()


class _Yasmarang:
    """The generator's four state words, updated exactly as MicroPython's C does."""

    def __init__(self, seed: int) -> None:
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.pad = seed & _M32
        self.n = 69
        self.d = 233
        self.dat = 0

    def next(self) -> int:
        pad = (self.pad + self.dat + self.d * self.n) & _M32
        pad = ((pad << 3) + (pad >> 29)) & _M32
        self.pad = pad
        self.n = pad | 2
        self.d = (self.d ^ (((pad << 31) + (pad >> 1)) & _M32)) & _M32
        self.dat = (self.dat ^ (pad & 0xFF) ^ (self.d >> 8) ^ 1) & 0xFF
        return (pad ^ (self.d << 5) ^ (pad >> 18) ^ (self.dat << 1)) & _M32

    def below(self, n: int) -> int:
        """A number in [0, n), n a nonzero 32-bit value: mask to n's bit length, reject."""
        mask = 1
        while (n & mask) < n:
            mask = (mask << 1) | 1
        while True:
            r = self.next() & mask
            if r < n:
                return r

    def fraction(self) -> float:
        """[0, 1) from 52 fraction bits: the high draw first, as the unix port's build does."""
        high = self.next()
        low = self.next()
        frac = ((high << 32) | low) & ((1 << 52) - 1)
        value: float = _struct.unpack("<d", _struct.pack("<Q", (1023 << 52) | frac))[0]
        return value - 1


# Seeded at import from the OS, as the unix port and most boards do, and again in a
# forked child (a warm start forks many programs from one import): two boards never
# share a sequence they did not seed alike.
_state = _Yasmarang(int.from_bytes(_os.urandom(4), "little"))
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(
        after_in_child=lambda: _state.seed(int.from_bytes(_os.urandom(4), "little"))
    )


def seed(n: int | None = None) -> None:
    """Restart the sequence from ``n`` (truncated to 32 bits); ``None``: from the OS."""
    value = int.from_bytes(_os.urandom(4), "little") if n is None else int(n)
    with _lock:
        _state.seed(value)
    _logger.debug("random.seed(%r)", n)


def getrandbits(n: int) -> int:
    """``n`` (0..32) random bits: the low bits of one draw."""
    if n > 32 or n < 0:
        raise ValueError("bits must be 32 or less")
    if n == 0:
        return 0
    with _lock:
        return _state.next() & (_M32 >> (32 - n))


def _below(n: int) -> int:
    bound = n & _M32
    if bound == 0:
        raise ValueError("range too large for MicroPython's 32-bit generator")
    with _lock:
        return _state.below(bound)


def randrange(start: int, stop: int | None = None, step: int = 1) -> int:
    """A random member of ``range(start, stop, step)``; ``ValueError`` for an empty range."""
    if stop is None:
        if start > 0:
            return _below(start)
        raise ValueError
    if step == 1:
        if start < stop:
            return start + _below(stop - start)
        raise ValueError
    if step == 0:
        raise ValueError
    span = stop - start + (step - 1 if step > 0 else step + 1)
    n = abs(span) // abs(step) * (1 if (span >= 0) == (step > 0) else -1)  # C division
    if n > 0:
        return start + step * _below(n)
    raise ValueError


def randint(a: int, b: int) -> int:
    """A random integer in [a, b]."""
    if a <= b:
        return a + _below(b - a + 1)
    raise ValueError


def choice(seq: _Sequence[_T]) -> _T:
    """A random element of the non-empty sequence ``seq``."""
    if len(seq) > 0:
        return seq[_below(len(seq))]
    raise IndexError


def random() -> float:
    """A float in [0, 1)."""
    with _lock:
        return _state.fraction()


def uniform(a: float, b: float) -> float:
    """A float between ``a`` and ``b``."""
    with _lock:
        return a + (b - a) * _state.fraction()


def __getattr__(name: str) -> _Any:
    """Names MicroPython's random does not have come from CPython's (its own generator)."""
    value = getattr(_cpython_random, name)
    _logger.debug("random.%s: not in MicroPython's random; CPython's is used", name)
    return value
