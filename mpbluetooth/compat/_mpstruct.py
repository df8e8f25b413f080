"""MicroPython's ``struct`` for the user's code: ``import struct`` there gives this module.

MicroPython's ``struct`` differs from CPython's where BLE code builds payloads:

* an ``s`` field takes any buffer or a ``str`` (its UTF-8), not only ``bytes``:
  ``struct.pack_into("31s", buf, 0, memoryview(adv))`` works;
* an integer too wide for its field is truncated to the field's low bits
  (``pack("B", 256)`` gives ``b"\\x00"``), where CPython raises ``struct.error``.

Everything else (``unpack``, ``calcsize``, ``error``...) is CPython's own.
"""

from __future__ import annotations

import re as _re
import struct as _struct
from functools import lru_cache as _lru_cache
from struct import Struct, calcsize, error, iter_unpack, unpack, unpack_from
from typing import Any as _Any

from . import _lang

__all__ = [
    "Struct", "calcsize", "error", "iter_unpack", "pack", "pack_into", "unpack", "unpack_from",
]  # fmt: skip

_FIELD = _re.compile(r"\s*(\d*)\s*([a-zA-Z?])")


@_lru_cache(maxsize=256)
def _fields(fmt: str) -> tuple[tuple[str, int], ...]:
    """Per value argument of ``fmt``: (field code, field size in bytes)."""
    order = fmt[:1] if fmt[:1] in "@=<>!" else ""
    out: list[tuple[str, int]] = []
    for count, code in _FIELD.findall(fmt[len(order) :]):
        if code == "x":
            continue
        size = _struct.calcsize(order + code)
        if code in "sp":
            out.append((code, size))
        else:
            out.extend([(code, size)] * (int(count) if count else 1))
    return tuple(out)


def _convert(fmt: str | bytes, values: tuple[_Any, ...]) -> list[_Any]:
    text = fmt.decode() if isinstance(fmt, bytes) else fmt
    try:
        fields = _fields(text)
    except _struct.error:
        return list(values)  # CPython reports the bad format itself
    out = list(values)
    for i, (value, (code, size)) in enumerate(zip(values, fields, strict=False)):
        if code in "sp":
            if isinstance(value, str):
                out[i] = value.encode()
            elif isinstance(value, bytearray | memoryview):
                out[i] = bytes(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            wrapped = _lang.wrap_int(value, code, size)
            if wrapped is not None:
                out[i] = wrapped
    return out


def pack(fmt: str | bytes, /, *values: _Any) -> bytes:
    """``struct.pack`` with MicroPython's field conversions (see the module docstring)."""
    return _struct.pack(fmt, *_convert(fmt, values))


def pack_into(fmt: str | bytes, buffer: _Any, offset: int, /, *values: _Any) -> None:
    """``struct.pack_into`` with MicroPython's field conversions."""
    _struct.pack_into(fmt, buffer, offset, *_convert(fmt, values))
