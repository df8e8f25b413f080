"""Conversions between MicroPython's argument conventions and Bumble's, in one place.

MicroPython: ints narrowed to uint16/uint8 silently, any buffer (``str`` included) where
bytes are wanted, addresses big-endian (display order), intervals in µs, durations in ms.
Bumble: ``hci.Address`` with little-endian bytes, intervals in ms (floats).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .uuid import buffer_bytes

__all__ = [
    "UNSET",
    "adv_type",
    "advertise_args",
    "address_to_mp",
    "buffer_bytes",
    "check_args",
    "int32",
    "mp_args",
    "mp_to_address",
    "to_int",
    "uint16",
    "uint8",
]


#: An argument that was not given (MicroPython's ``MP_OBJ_NULL``).
UNSET: Any = object()

#: MicroPython's machine word (``mp_int_t`` on a 64-bit port): ``mp_obj_get_int`` takes a
#: long int only while its magnitude fits in 63 bits, so -2**63 overflows too.
_MACHINE_WORD_MAX = 2**63 - 1
OVERFLOW = "overflow converting long int to machine word"


def to_int(value: Any) -> int:
    """MicroPython's ``mp_obj_get_int``: ints and bools pass, anything else is a TypeError,
    and an int beyond a machine word is ``OverflowError`` (as on a board, where a program
    passing ``2**64`` must not be told something else)."""
    if isinstance(value, int):
        number = int(value)
        if -_MACHINE_WORD_MAX <= number <= _MACHINE_WORD_MAX:
            return number
        raise OverflowError(OVERFLOW)
    raise TypeError(f"can't convert {type(value).__name__} to int")


def check_args(n_args: int, n_kw: int, least: int, most: int) -> None:
    """MicroPython's ``mp_arg_check_num`` for a positional-only builtin, in its words.

    Counts include ``self`` for methods, as MicroPython's do: ``ble.irq()`` is "function
    takes 2 positional arguments but 1 were given".
    """
    if n_kw:
        raise TypeError("function doesn't take keyword arguments")
    if least == most:
        if n_args != least:
            raise TypeError(f"function takes {least} positional arguments but {n_args} were given")
    elif n_args < least:
        raise TypeError(f"function missing {least - n_args} required positional arguments")
    elif n_args > most:
        raise TypeError(f"function expected at most {most} arguments, got {n_args}")


def int32(value: Any) -> int:
    """An int as NimBLE receives it in an ``int32_t`` (durations): wrapped, not checked."""
    number = to_int(value) & 0xFFFFFFFF
    return number - (1 << 32) if number & 0x80000000 else number


def uint16(value: Any) -> int:
    """Handles and MTUs are narrowed to 16 bits silently, as MicroPython does."""
    return to_int(value) & 0xFFFF


def uint8(value: Any) -> int:
    return to_int(value) & 0xFF


def address_to_mp(address: Any) -> tuple[int, bytes]:
    """A Bumble ``Address`` as MicroPython's ``(addr_type, addr)``: type 0 public / 1 random
    (identity types fold onto those), address bytes big-endian."""
    return int(address.address_type) & 1, bytes(address)[::-1]


def mp_to_address(addr_type: int, addr: bytes) -> Any:
    """MicroPython's ``(addr_type, big-endian addr)`` as a Bumble ``Address``."""
    from bumble.hci import Address

    return Address(
        bytes(addr)[::-1],
        Address.RANDOM_DEVICE_ADDRESS if addr_type & 1 else Address.PUBLIC_DEVICE_ADDRESS,
    )


# Extended report event-type bits (Core Vol 4, Part E, 7.7.65.13).
_EXT_CONNECTABLE = 0x01
_EXT_SCANNABLE = 0x02
_EXT_DIRECTED = 0x04
_EXT_SCAN_RESPONSE = 0x08
_EXT_LEGACY = 0x10
_LEGACY_PDU_TO_ADV_TYPE = {0b0011: 0, 0b0101: 1, 0b0010: 2, 0b0000: 3, 0b1011: 4, 0b1010: 4}


def adv_type(event_type: int, extended: bool) -> int:
    """MicroPython's ``adv_type`` (0 ADV_IND .. 4 SCAN_RSP) from an HCI report's event type."""
    if not extended:
        return int(event_type)
    if event_type & _EXT_LEGACY:
        return _LEGACY_PDU_TO_ADV_TYPE.get(event_type & 0x0F, 0)
    if event_type & _EXT_SCAN_RESPONSE:
        return 4
    if event_type & _EXT_DIRECTED:
        return 1
    if event_type & _EXT_CONNECTABLE:
        return 0
    return 2 if event_type & _EXT_SCANNABLE else 3


_F = TypeVar("_F", bound=Callable[..., Any])


def mp_args(least: int, most: int) -> Callable[[_F], _F]:
    """Give a method MicroPython's arity check: positional only, ``least..most``
    arguments counting ``self`` (``MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN``'s bounds), and
    MicroPython's ``TypeError`` words, so a program catching or printing them sees what a
    board says."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs or not least <= len(args) + 1 <= most:
                check_args(len(args) + 1, len(kwargs), least, most)
            return fn(self, *args)

        return method  # type: ignore[return-value]

    return wrap


_ADVERTISE_ARGS = ("interval_us", "adv_data", "resp_data", "connectable")
_ADVERTISE_DEFAULTS = (500000, None, None, True)


def advertise_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """``gap_advertise``'s arguments as MicroPython's ``mp_arg_parse_all`` takes them:
    two positionals at most (``resp_data`` and ``connectable`` are keyword-only), each
    keyword used once, and its words for anything else."""
    if len(args) > 2:
        raise TypeError("extra positional arguments given")
    values = list(args) + [UNSET] * (4 - len(args))
    used = 0
    for index in range(len(args), 4):
        if _ADVERTISE_ARGS[index] in kwargs:
            values[index] = kwargs[_ADVERTISE_ARGS[index]]
            used += 1
        else:
            values[index] = _ADVERTISE_DEFAULTS[index]
    if used < len(kwargs):
        raise TypeError("extra keyword arguments given")
    return values
