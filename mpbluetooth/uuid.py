"""``bluetooth.UUID``: MicroPython's UUID value, byte-for-byte.

A UUID is a size tag (2, 4 or 16) plus that many little-endian bytes. Unlike Bumble's
UUID there is no Bluetooth-base normalisation: ``UUID(0x180d)`` and its 128-bit form are
different values, exactly as on MicroPython, because programs compare discovered UUIDs
(which keep their on-air size) against their own constants.
"""

from __future__ import annotations

from typing import Any

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MACHINE_WORD_MAX = 2**63 - 1  # as mpbluetooth._convert (which imports this module)
_OP_NAMES = {"lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


def buffer_bytes(value: Any) -> bytes:
    """Bytes of a buffer-protocol object, treating ``str`` as its UTF-8 bytes (MicroPython).

    Raises MicroPython's ``TypeError("object with buffer protocol required")``.
    """
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    try:
        with memoryview(value) as view:
            return view.tobytes()
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


class UUID(bytes):
    """A 16-, 32- or 128-bit Bluetooth UUID (MicroPython's constructor forms and errors).

    The value is its little-endian bytes. It subclasses ``bytes`` only so that it exports
    a real read-only buffer on Python 3.11 (``memoryview(uuid)``, ``bytes(uuid)``, adv
    payload concatenation through ``bytes(uuid)``), as MicroPython's UUID does; the
    sequence behaviour MicroPython's UUID lacks (``len``, indexing, iteration, ``+``,
    comparison with plain bytes) is switched off.
    MicroPython: the ``bytes`` methods (``hex()``, ``decode()``...) exist here too.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> UUID:
        # MicroPython's arity check and words (mp_arg_check_num(n_args, n_kw, 1, 1)).
        if kwargs:
            raise TypeError("function doesn't take keyword arguments")
        if len(args) != 1:
            raise TypeError(f"function takes 1 positional arguments but {len(args)} were given")
        (value,) = args
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_MACHINE_WORD_MAX <= value <= _MACHINE_WORD_MAX:
                # mp_obj_get_int on a long int beyond a machine word.
                raise OverflowError("overflow converting long int to machine word")
            if value > 0xFFFF:
                raise ValueError("invalid UUID")
            # MicroPython does not check negative values: they wrap modulo 2**16.
            return super().__new__(cls, (value & 0xFFFF).to_bytes(2, "little"))
        raw = buffer_bytes(value)
        if len(raw) in (2, 4, 16):
            # MicroPython takes 2/4/16-byte buffers (str included) as raw little-endian bytes.
            return super().__new__(cls, raw)
        return super().__new__(cls, _parse_hex_128(raw))

    @classmethod
    def _from_le(cls, le: bytes) -> UUID:
        """Internal constructor from little-endian bytes of length 2, 4 or 16."""
        return super().__new__(cls, le)

    def __bytes__(self) -> bytes:
        return bytes.__getitem__(self, slice(None))

    def __repr__(self) -> str:
        be = bytes.__getitem__(self, slice(None, None, -1)).hex()
        if len(be) <= 8:
            return f"UUID(0x{be})"
        return f"UUID('{be[:8]}-{be[8:12]}-{be[12:16]}-{be[16:20]}-{be[20:]}')"

    __str__ = __repr__

    def __hash__(self) -> int:
        return bytes.__hash__(self)

    # No coercion: a UUID never equals an int, str or plain bytes (returning NotImplemented
    # would let bytes.__eq__ answer for the reflected comparison).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, UUID) and bytes.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __bool__(self) -> bool:
        """Always true, as any MicroPython object without a ``bool``/``len`` slot is, so
        ``if uuid:`` and ``uuid or default`` work (``len`` itself stays unsupported)."""
        return True

    def _key(self, other: object, op: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        # Ordering is by size first, then lexicographic on the little-endian bytes. Any
        # other operand is MicroPython's TypeError: returning NotImplemented would let
        # ``bytes`` compare itself with our bytes and answer.
        if not isinstance(other, UUID):
            raise TypeError(
                f"unsupported types for {_OP_NAMES[op]}: 'UUID', '{type(other).__name__}'"
            )
        return (bytes.__len__(self), bytes(self)), (bytes.__len__(other), bytes(other))

    def __lt__(self, other: object) -> bool:
        mine, theirs = self._key(other, "lt")
        return mine < theirs

    def __le__(self, other: object) -> bool:
        mine, theirs = self._key(other, "le")
        return mine <= theirs

    def __gt__(self, other: object) -> bool:
        mine, theirs = self._key(other, "gt")
        return mine > theirs

    def __ge__(self, other: object) -> bool:
        mine, theirs = self._key(other, "ge")
        return mine >= theirs

    def _unsupported(self, *args: Any) -> Any:
        raise TypeError("'UUID' object does not support this operation")

    __len__ = _unsupported
    __getitem__ = _unsupported
    __iter__ = _unsupported
    __contains__ = _unsupported
    __add__ = _unsupported
    __mul__ = _unsupported
    __rmul__ = _unsupported
    __mod__ = _unsupported


def _parse_hex_128(raw: bytes) -> bytes:
    """Parse the textual 128-bit form: dashes anywhere, 32 hex digits, either case."""
    digits: list[str] = []
    for byte in raw:
        ch = chr(byte)
        if ch == "-":
            continue
        if ch not in _HEX_DIGITS:
            raise ValueError("invalid char in UUID")
        if len(digits) == 32:
            raise ValueError("UUID too long")
        digits.append(ch)
    if len(digits) < 32:
        raise ValueError("UUID too short")
    return bytes.fromhex("".join(digits))[::-1]
