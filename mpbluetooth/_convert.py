"""Conversions between MicroPython's argument conventions and Bumble's, in one place.

MicroPython: ints narrowed to uint16/uint8 silently, any buffer (``str`` included) where
bytes are wanted, addresses big-endian (display order), intervals in µs, durations in ms.
Bumble: ``hci.Address`` with little-endian bytes, intervals in ms (floats).
"""

from __future__ import annotations

from typing import Any

from .uuid import buffer_bytes

__all__ = ["buffer_bytes", "to_int", "uint16", "uint8", "address_to_mp", "mp_to_address"]


def to_int(value: Any) -> int:
    """MicroPython's ``mp_obj_get_int``: ints and bools pass, anything else is a TypeError."""
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"can't convert {type(value).__name__} to int")


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


def interval_us_to_ms(interval_us: int) -> float:
    """An advertising/scan interval in µs as Bumble's ms, rounded down to 625 µs slots."""
    return (interval_us // 625) * 0.625


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


def conn_interval_us_to_ms(interval_us: int) -> float:
    """A connection interval in µs as Bumble's ms, rounded down to 1.25 ms units."""
    return (interval_us // 1250) * 1.25
