"""GATT service definitions as ``gatts_register_services`` takes them, parsed with
MicroPython's errors and messages, what they take in the attribute database, and the
stored value each user characteristic value or descriptor becomes."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .constants import (
    FLAG_AUX_WRITE,
    FLAG_INDICATE,
    FLAG_NOTIFY,
    FLAG_READ,
    FLAG_READ_AUTHENTICATED,
    FLAG_READ_ENCRYPTED,
    FLAG_WRITE,
    FLAG_WRITE_AUTHENTICATED,
    FLAG_WRITE_ENCRYPTED,
    FLAG_WRITE_NO_RESPONSE,
)
from .uuid import UUID

if TYPE_CHECKING:
    from bumble.device import Device

    from .boards import Board

#: NimBLE's limit on services per ``gatts_register_services`` call (OSError(E2BIG) above).
MAX_SERVICES = 8
#: Initial capacity of every value, in bytes (MicroPython's default buffer).
DEFAULT_CAPACITY = 20


@dataclass(frozen=True)
class DescriptorDef:
    uuid: UUID
    flags: int


@dataclass(frozen=True)
class CharacteristicDef:
    uuid: UUID
    flags: int
    descriptors: tuple[DescriptorDef, ...]


@dataclass(frozen=True)
class ServiceDef:
    uuid: UUID
    characteristics: tuple[CharacteristicDef, ...]


def sized(obj: Any) -> list[Any]:
    """MicroPython's ``mp_obj_len`` then ``mp_getiter``: a generator is a TypeError."""
    len(obj)
    return list(obj)


def _fixed(obj: Any, n: int) -> Sequence[Any]:
    """MicroPython's ``mp_obj_get_array_fixed_n``: a tuple or list of exactly ``n`` items."""
    if not isinstance(obj, (tuple, list)):
        raise TypeError(f"object '{type(obj).__name__}' isn't a tuple or list")
    if len(obj) != n:
        raise ValueError(f"requested length {n} but object has length {len(obj)}")
    return obj


def _flags(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError(f"can't convert {type(value).__name__} to int")
    return int(value) & 0xFFFF


def parse_service(obj: Any) -> ServiceDef:
    """One ``(UUID, characteristics)`` entry, with MicroPython's errors and messages."""
    uuid, characteristics = _fixed(obj, 2)
    if not isinstance(uuid, UUID):
        raise ValueError("invalid service UUID")
    chars = []
    for item in sized(characteristics):
        if not isinstance(item, (tuple, list)):
            raise TypeError(f"object '{type(item).__name__}' isn't a tuple or list")
        if len(item) not in (2, 3):
            raise ValueError("invalid characteristic tuple")
        if not isinstance(item[0], UUID):
            raise ValueError("invalid characteristic UUID")
        descriptors = []
        if len(item) == 3:
            for entry in sized(item[2]):
                d_uuid, d_flags = _fixed(entry, 2)
                if not isinstance(d_uuid, UUID):
                    raise ValueError("invalid descriptor UUID")
                descriptors.append(DescriptorDef(d_uuid, _flags(d_flags)))
        chars.append(CharacteristicDef(item[0], _flags(item[1]), tuple(descriptors)))
    return ServiceDef(uuid, tuple(chars))


def attribute_count(services: Sequence[ServiceDef]) -> int:
    """How many attribute handles the services take: a declaration per service, and per
    characteristic a declaration, its value, its CCCD (NOTIFY/INDICATE) and descriptors."""
    return sum(
        1
        + sum(
            2 + bool(char.flags & (FLAG_NOTIFY | FLAG_INDICATE)) + len(char.descriptors)
            for char in service.characteristics
        )
        for service in services
    )


def properties_byte(flags: int) -> int:
    """The declaration's property byte: flag bits 0x01-0x40, plus 0x80 (extended
    properties) for AUX_WRITE or reliable write, as NimBLE builds it."""
    return (flags & 0x7F) | (0x80 if flags & (FLAG_AUX_WRITE | 0x80) else 0)


def bumble_uuid(uuid: UUID) -> Any:
    from bumble.core import UUID as BumbleUUID

    return BumbleUUID.from_bytes(bytes(uuid))


def builtin_services(board: Board) -> list[Any]:
    """The board's own GAP and GATT services as Bumble services (the Device Name value
    is served by ``Stack.set_gap_name``)."""
    from bumble.att import Attribute
    from bumble.core import UUID as BumbleUUID
    from bumble.gatt import Characteristic, Service

    services = []
    for builtin in board.builtin_services:
        characteristics = []
        for uuid, properties, value in builtin.characteristics:
            permissions = Attribute.Permissions.READABLE
            if properties & Characteristic.Properties.WRITE:
                permissions |= Attribute.Permissions.WRITEABLE
            characteristics.append(
                Characteristic(
                    BumbleUUID.from_16_bits(uuid),
                    Characteristic.Properties(properties),
                    permissions,
                    value,
                )
            )
        services.append(Service(BumbleUUID.from_16_bits(builtin.uuid), characteristics))
    return services


def last_handle(device: Device) -> int:
    """The highest attribute handle in use (0 for an empty database)."""
    attributes = device.gatt_server.attributes
    return int(attributes[-1].handle) if attributes else 0


__all__ = [
    "CharacteristicDef",
    "DescriptorDef",
    "MAX_SERVICES",
    "ServiceDef",
    "attribute_count",
    "builtin_services",
    "bumble_uuid",
    "last_handle",
    "parse_service",
    "properties_byte",
    "sized",
]


# --- stored values --------------------------------------------------------------------
class StoredValue:
    """A user characteristic value or user descriptor: bytes, capacity, access rules."""

    __slots__ = (
        "handle",
        "data",
        "capacity",
        "append",
        "readable",
        "writable",
        "read_security",
        "write_security",
        "updates",
        "unseen",
    )

    def __init__(self, flags: int, descriptor: bool) -> None:
        self.handle = 0
        self.data = b""
        #: Remote writes whose ``_IRQ_GATTS_WRITE`` the program has not reached yet.
        self.unseen: deque[bytes] = deque()
        self.capacity = DEFAULT_CAPACITY
        self.append = False
        self.readable = bool(flags & FLAG_READ)
        self.writable = bool(flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE))
        if descriptor:
            # MicroPython keeps only the read/write bits of a descriptor's flags.
            self.read_security = self.write_security = (False, False)
            self.updates = False
        else:
            self.read_security = (
                bool(flags & FLAG_READ_ENCRYPTED),
                bool(flags & FLAG_READ_AUTHENTICATED),
            )
            self.write_security = (
                bool(flags & FLAG_WRITE_ENCRYPTED),
                bool(flags & FLAG_WRITE_AUTHENTICATED),
            )
            self.updates = bool(flags & (FLAG_NOTIFY | FLAG_INDICATE))
