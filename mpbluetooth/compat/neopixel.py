"""MicroPython's ``neopixel`` driver for CPython (the esp32 and rp2 ports freeze it).

``NeoPixel(pin, n, bpp=3, timing=1)`` keeps its pixels in ``buf`` in the strip's wire
order (GRB, or GRBW with ``bpp=4``), as the driver does; ``write()`` sends nothing (there
is no strip) and logs the bytes at debug level.
"""

from __future__ import annotations

import logging as _logging
from typing import Any as _Any

__all__ = ["NeoPixel"]

_logger = _logging.getLogger("mpbluetooth.compat.neopixel")


class NeoPixel:
    """A strip of ``n`` pixels on ``pin``; ``strip[i] = (r, g, b)``, then ``write()``."""

    ORDER = (1, 0, 2, 3)

    def __init__(self, pin: _Any, n: int, bpp: int = 3, timing: int = 1) -> None:
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = bytearray(n * bpp)
        self.timing = timing

    def __len__(self) -> int:
        return self.n

    def __setitem__(self, index: int, value: tuple[int, ...]) -> None:
        offset = index * self.bpp
        for i in range(self.bpp):
            self.buf[offset + self.ORDER[i]] = value[i]

    def __getitem__(self, index: int) -> tuple[int, ...]:
        offset = index * self.bpp
        return tuple(self.buf[offset + self.ORDER[i]] for i in range(self.bpp))

    def fill(self, value: tuple[int, ...]) -> None:
        for index in range(self.n):
            self[index] = value

    def write(self) -> None:
        _logger.debug("neopixel on %r: %s", self.pin, self.buf.hex())
