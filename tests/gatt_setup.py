"""A GATT server on instance ``a`` (peripheral) and a connected client ``b`` (central)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    FLAG_AUX_WRITE,
    FLAG_INDICATE,
    FLAG_NOTIFY,
    FLAG_READ,
    FLAG_READ_AUTHENTICATED,
    FLAG_READ_AUTHORIZED,
    FLAG_READ_ENCRYPTED,
    FLAG_WRITE,
    FLAG_WRITE_AUTHENTICATED,
    FLAG_WRITE_ENCRYPTED,
    FLAG_WRITE_NO_RESPONSE,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
)
from mpbluetooth.testing import Recorder
from mpbluetooth.uuid import UUID

from .conftest import connect

HEART_RATE = UUID(0x180D)
HR_MEASUREMENT = UUID(0x2A37)
HR_CONTROL = UUID(0x2A39)
USER_DESCRIPTION = UUID(0x2901)
BATTERY = UUID(0x180F)
BATTERY_LEVEL = UUID(0x2A19)
UART = UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
UART_RX = UUID("6E400002-B5A3-F393-E0A9-E50E24DCCA9E")
UART_TX = UUID("6E400003-B5A3-F393-E0A9-E50E24DCCA9E")
SECURE = UUID("12345678-0000-1000-8000-00805f9b0000")

SERVICES: Any = (
    (
        HEART_RATE,
        (
            (
                HR_MEASUREMENT,
                FLAG_READ | FLAG_NOTIFY | FLAG_INDICATE,
                ((USER_DESCRIPTION, FLAG_READ),),
            ),
            (HR_CONTROL, FLAG_READ | FLAG_WRITE | FLAG_AUX_WRITE),
        ),
    ),
    [UART, [(UART_RX, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE), (UART_TX, FLAG_READ | FLAG_NOTIFY)]],
    (BATTERY, ((BATTERY_LEVEL, FLAG_READ),)),
    (
        SECURE,
        (
            (UUID(0x2B01), FLAG_WRITE),  # write-only: reads are refused
            (UUID(0x2B02), FLAG_READ | FLAG_READ_ENCRYPTED),
            (UUID(0x2B03), FLAG_READ | FLAG_READ_AUTHENTICATED),
            (UUID(0x2B04), FLAG_READ | FLAG_READ_AUTHORIZED),
            (UUID(0x2B05), FLAG_WRITE | FLAG_WRITE_ENCRYPTED),
            (UUID(0x2B06), FLAG_WRITE | FLAG_WRITE_AUTHENTICATED),
        ),
    ),
)


class Server(Recorder):
    """Records like ``Recorder`` and answers read requests from ``answers`` (handle → code).

    ``on_write``/``on_read`` run inside the handler for each GATTS_WRITE / READ_REQUEST
    (with the event's arguments), before it is recorded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[int, Any] = {}
        self.on_write: Any = None
        self.on_read: Any = None
        self.on[IRQ_GATTS_WRITE] = self._written
        self.on[IRQ_GATTS_READ_REQUEST] = self._read

    def _written(self, data: tuple[Any, ...]) -> None:
        if self.on_write is not None:
            self.on_write(*data)

    def _read(self, data: tuple[Any, ...]) -> Any:
        if self.on_read is not None:
            self.on_read(*data)
        return self.answers.get(data[1])


@dataclass
class Gatt:
    server: BLE
    rs: Server
    client: BLE
    rc: Recorder
    handles: tuple[tuple[int, ...], ...]
    s_conn: int = 0  # the server's handle for the link
    c_conn: int = 0  # the client's handle for the link
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hr(self) -> int:
        return self.handles[0][0]

    @property
    def hr_desc(self) -> int:
        return self.handles[0][1]

    @property
    def control(self) -> int:
        return self.handles[0][2]

    @property
    def rx(self) -> int:
        return self.handles[1][0]

    @property
    def tx(self) -> int:
        return self.handles[1][1]

    @property
    def battery(self) -> int:
        return self.handles[2][0]

    def secure(self, i: int) -> int:
        return self.handles[3][i]

    def read(self, handle: int) -> tuple[Any, ...]:
        """Read from the client; return READ_DONE (and the result, if any, in rc)."""
        before = len(self.rc.of(IRQ_GATTC_READ_DONE))
        self.client.gattc_read(self.c_conn, handle)
        return self.rc.wait(IRQ_GATTC_READ_DONE, count=before + 1)

    def write(self, handle: int, data: bytes) -> tuple[Any, ...]:
        before = len(self.rc.of(IRQ_GATTC_WRITE_DONE))
        self.client.gattc_write(self.c_conn, handle, data, 1)
        return self.rc.wait(IRQ_GATTC_WRITE_DONE, count=before + 1)


def make_gatt(link: Any, services: Any = SERVICES) -> Gatt:
    a, b = link.instance("server"), link.instance("client")
    rs, rc = Server(), Recorder()
    a.irq(rs)
    b.irq(rc)
    a.active(True)
    b.active(True)
    handles = a.gatts_register_services(services)
    gatt = Gatt(a, rs, b, rc, handles)
    gatt.c_conn, gatt.s_conn = connect(b, rc, a, rs)
    return gatt


def errno_of(call: Any, *args: Any) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return int(info.value.errno)
