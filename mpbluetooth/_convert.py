"""Conversions between MicroPython's argument conventions and Bumble's, in one place.

MicroPython: ints narrowed to uint16/uint8 silently, any buffer (``str`` included) where
bytes are wanted, addresses big-endian (display order), intervals in µs, durations in ms.
Bumble: ``hci.Address`` with little-endian bytes, intervals in ms (floats).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .uuid import buffer_bytes

__all__ = ["buffer_bytes", "to_int", "int32", "uint16", "uint8", "address_to_mp", "mp_to_address"]


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


# NimBLE host statuses, as GATT events (READ_DONE, INDICATE_DONE...) report them.
ATT_ERROR_BASE = 0x100  # BLE_HS_ERR_ATT_BASE: an ATT error response, as 0x100 + code
STATUS_FAILED = 5  # BLE_HS_EDONE/EIO: anything else
STATUS_NOT_CONNECTED = 7  # BLE_HS_ENOTCONN: the link went
STATUS_BAD_DATA = 10  # BLE_HS_EBADDATA: a malformed response
STATUS_TIMEOUT = 13  # BLE_HS_ETIMEOUT


async def link_status(
    connection: Any,
    work: Coroutine[Any, Any, Any],
    what: str,
    classify: Callable[[Exception], int | None] = lambda exc: None,
) -> int:
    """Await ``work``, cut short if the link drops, and say how it ended as NimBLE's status:
    0, 7 link lost, 13 timeout, ``classify(exc)`` for errors the caller knows, else 5
    (logged). Our own task being cancelled means the stack is stopping: that re-raises,
    so no event follows, as on NimBLE."""
    from bumble.core import TimeoutError as BumbleTimeoutError

    # Bumble's cancel_on_disconnection runs the work in a task of its own: one more task
    # per GATT procedure, and a loop iteration at each end of it. The work runs in our
    # own task instead, which the disconnection cancels.
    task = asyncio.current_task()
    assert task is not None
    lost = False

    def on_disconnection(*_: Any) -> None:
        nonlocal lost
        if not task.done():
            lost = True
            task.cancel()

    connection.on("disconnection", on_disconnection)
    try:
        await work
    except asyncio.CancelledError:
        if not lost or task.uncancel() > 0:
            raise  # our task is being cancelled: the stack is stopping
        return STATUS_NOT_CONNECTED
    except (TimeoutError, BumbleTimeoutError):
        return STATUS_TIMEOUT
    except Exception as exc:  # noqa: BLE001 - reported through the status
        status = classify(exc)
        if status is None:
            logging.getLogger(__name__).exception("%s failed", what)
            return STATUS_FAILED
        return status
    finally:
        connection.remove_listener("disconnection", on_disconnection)
    return 0
