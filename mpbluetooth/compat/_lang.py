"""Runtime helpers for the compiler-level MicroPython rows (see ``features`` and ``strbuf``).

The source transform rewrites a few constructs of the user's code into calls to
these helpers. Each helper first does exactly what CPython does, and only when
CPython raises where MicroPython would not does it do what MicroPython does, so
code that already runs on CPython sees no difference except the cost of a call.
"""

from __future__ import annotations

import logging
import operator
import sys
import types
from typing import Any, Final, SupportsIndex

__all__ = [
    "bytes_call",
    "contains",
    "inplace",
    "ptr8",
    "ptr16",
    "ptr32",
    "setitem",
    "uint",
    "unmangle",
    "wrap_int",
]

logger = logging.getLogger("mpbluetooth.compat.lang")

_SIGNED: Final = frozenset("bhilq")
_UNSIGNED: Final = frozenset("BHILQ")
_INPLACE: Final = {
    "+": operator.iadd, "-": operator.isub, "*": operator.imul, "/": operator.itruediv,
    "//": operator.ifloordiv, "%": operator.imod, "**": operator.ipow, "<<": operator.ilshift,
    ">>": operator.irshift, "&": operator.iand, "|": operator.ior, "^": operator.ixor,
    "@": operator.imatmul,
}  # fmt: skip
_CO_NEWLOCALS: Final = 0x0002


def wrap_int(value: int, code: str, size: int) -> int | None:
    """``value`` truncated to a ``size``-byte integer field of struct/array ``code``.

    None when ``code`` is not an integer field (floats, chars...): nothing to truncate.
    """
    bits = 8 * size
    mask = (1 << bits) - 1
    if code in _UNSIGNED:
        return value & mask
    if code in _SIGNED:
        half = 1 << (bits - 1)
        return ((value + half) & mask) - half
    return None


def _truncated(obj: object, value: int) -> int | None:
    if isinstance(obj, bytearray):
        return value & 0xFF
    if isinstance(obj, memoryview):
        return wrap_int(value, obj.format.lstrip("@=<>!"), obj.itemsize)
    typecode = getattr(obj, "typecode", None)
    itemsize = getattr(obj, "itemsize", None)
    if isinstance(typecode, str) and isinstance(itemsize, int):  # array.array
        return wrap_int(value, typecode, itemsize)
    return None


def setitem(obj: Any, key: Any, value: Any) -> None:
    """``obj[key] = value``; an int too wide for a bytearray, memoryview or array is truncated.

    MicroPython stores the low bits (``buf[0] = 256`` stores 0); CPython raises.
    """
    try:
        obj[key] = value
        return
    except (ValueError, OverflowError):
        if not isinstance(value, int) or isinstance(value, bool):
            raise
        truncated = _truncated(obj, value)
        if truncated is None:
            raise
    obj[key] = truncated


def inplace(op: str, current: Any, value: Any) -> Any:
    """``current op= value`` as an expression (the in-place operator, as ``x[i] op= v`` uses)."""
    return _INPLACE[op](current, value)


def contains(item: Any, container: Any) -> bool:
    """``item in container``; a str item in bytes/bytearray is looked up as its UTF-8."""
    try:
        return item in container
    except TypeError:
        if not (isinstance(item, str) and isinstance(container, bytes | bytearray)):
            raise
    return item.encode() in container


def bytes_call(func: Any, *args: Any) -> Any:
    """``bytes(x, encoding...)``/``bytearray(...)``; the encoding is ignored unless x is a str.

    MicroPython's ``bytearray((n, 0x09), "utf-8")`` builds from the iterable.
    """
    try:
        return func(*args)
    except TypeError:
        if not (
            (func is bytes or func is bytearray) and len(args) >= 2 and not isinstance(args[0], str)
        ):
            raise
    return func(args[0])


# --- viper ------------------------------------------------------------------------------


def uint(value: SupportsIndex) -> int:
    """Viper's ``uint(x)`` cast: the value as an unsigned machine word (32 bits)."""
    return operator.index(value) & 0xFFFF_FFFF


class _Pointer:
    """Viper's ``ptrN(buf)``: indexes ``buf`` in N-bit native-endian units.

    Reads and writes go to the object's buffer, as on a board; a store truncates.
    An integer address cannot be followed on a desktop, so it raises ``TypeError``.
    """

    _size: int = 1

    def __init__(self, buf: Any) -> None:
        if isinstance(buf, int):
            raise TypeError(
                f"{type(self).__name__}(address): mpbluetooth cannot read memory by address; "
                "pass the buffer object itself"
            )
        self._view = memoryview(buf).cast("B")

    def __getitem__(self, index: int) -> int:
        start = index * self._size
        if index < 0 or start + self._size > len(self._view):
            raise IndexError(f"{type(self).__name__} index out of range")
        return int.from_bytes(self._view[start : start + self._size], sys.byteorder)

    def __setitem__(self, index: int, value: int) -> None:
        start = index * self._size
        if index < 0 or start + self._size > len(self._view):
            raise IndexError(f"{type(self).__name__} index out of range")
        mask = (1 << (8 * self._size)) - 1
        self._view[start : start + self._size] = (value & mask).to_bytes(self._size, sys.byteorder)


class ptr8(_Pointer):  # viper's name
    """Viper's ``ptr8(buf)``: bytes of ``buf``."""

    _size = 1


class ptr16(_Pointer):  # viper's name
    """Viper's ``ptr16(buf)``: 16-bit units of ``buf``."""

    _size = 2


class ptr32(_Pointer):  # viper's name
    """Viper's ``ptr32(buf)``: 32-bit units of ``buf``."""

    _size = 4


# --- private names ----------------------------------------------------------------------


def _unmangle_name(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix) and not name.endswith("__"):
        return name[len(prefix) - 2 :]
    return name


def unmangle(code: types.CodeType, private: str = "") -> types.CodeType:
    """``code`` with CPython's private-name mangling undone, as MicroPython never mangles.

    CPython's compiler turns ``self.__uuid`` inside ``class _Profile`` into
    ``self._Profile__uuid``. A class body's code object is the one without
    ``CO_NEWLOCALS``; its name (leading underscores stripped) is the prefix that
    code nested in it was mangled with, so ``_Profile__uuid`` goes back to ``__uuid``.
    """
    prefix = f"_{private}__" if private else ""
    consts: list[Any] = []
    changed = False
    for const in code.co_consts:
        new = const
        if isinstance(const, types.CodeType):
            is_class_body = not const.co_flags & _CO_NEWLOCALS
            new = unmangle(const, const.co_name.lstrip("_") if is_class_body else private)
        elif prefix and isinstance(const, tuple) and all(isinstance(c, str) for c in const):
            new = tuple(_unmangle_name(c, prefix) for c in const)  # keyword argument names
            new = const if new == const else new
        changed |= new is not const
        consts.append(new)
    names = {
        field: tuple(_unmangle_name(n, prefix) for n in getattr(code, field))
        for field in ("co_names", "co_varnames", "co_cellvars", "co_freevars")
    }
    names = {field: value for field, value in names.items() if value != getattr(code, field)}
    if not changed and not names:
        return code
    return code.replace(co_consts=tuple(consts), **names)  # type: ignore[arg-type]
