# Advertising payloads: build and decode the AD structures of a legacy advert.
# Runs unmodified on MicroPython and under mpbluetooth-python.
#
# An advert is a sequence of AD structures: [length][type][data...], where length
# counts the type byte and the data. A legacy payload is at most 31 bytes.

import struct

import bluetooth
from micropython import const

_AD_FLAGS = const(0x01)
_AD_UUID16_SOME = const(0x02)
_AD_UUID16_ALL = const(0x03)
_AD_UUID32_ALL = const(0x05)
_AD_UUID128_ALL = const(0x07)
_AD_NAME_SHORT = const(0x08)
_AD_NAME = const(0x09)
_AD_APPEARANCE = const(0x19)
_AD_MANUFACTURER = const(0xFF)

_FLAG_LE_GENERAL = const(0x02)
_FLAG_LE_LIMITED = const(0x01)
_FLAG_NO_BR_EDR = const(0x04)

MAX_PAYLOAD = const(31)


def _field(kind, value):
    # value may be bytes or str: MicroPython treats str as a buffer.
    return struct.pack("BB", len(value) + 1, kind) + value


def payload(name=None, services=None, appearance=0, manufacturer=None, limited=False):
    """Flags, then the optional fields; raises ValueError past 31 bytes."""
    flags = (_FLAG_LE_LIMITED if limited else _FLAG_LE_GENERAL) | _FLAG_NO_BR_EDR
    adv = _field(_AD_FLAGS, struct.pack("B", flags))
    if name:
        adv += _field(_AD_NAME, name)
    for uuid in services or ():
        raw = bytes(uuid)
        kind = {2: _AD_UUID16_ALL, 4: _AD_UUID32_ALL, 16: _AD_UUID128_ALL}[len(raw)]
        adv += _field(kind, raw)
    if appearance:
        adv += _field(_AD_APPEARANCE, struct.pack("<H", appearance))
    if manufacturer:
        adv += _field(_AD_MANUFACTURER, manufacturer)
    if len(adv) > MAX_PAYLOAD:
        raise ValueError("advertising payload too large")
    return adv


def fields(adv, kind):
    """Every value of one AD type, as bytes."""
    found = []
    i = 0
    while i + 1 < len(adv):
        length = adv[i]
        if length == 0:
            break
        if adv[i + 1] == kind:
            found.append(bytes(adv[i + 2 : i + 1 + length]))
        i += 1 + length
    return found


def name(adv):
    values = fields(adv, _AD_NAME) or fields(adv, _AD_NAME_SHORT)
    return str(values[0], "utf-8") if values else ""


def services(adv):
    uuids = []
    for kind, size in (
        (_AD_UUID16_SOME, 2),
        (_AD_UUID16_ALL, 2),
        (_AD_UUID32_ALL, 4),
        (_AD_UUID128_ALL, 16),
    ):
        for value in fields(adv, kind):
            for i in range(0, len(value), size):
                uuids.append(bluetooth.UUID(value[i : i + size]))
    return uuids


def manufacturer(adv):
    values = fields(adv, _AD_MANUFACTURER)
    return values[0] if values else None
