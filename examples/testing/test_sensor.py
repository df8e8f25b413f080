"""sensor.py runs as its own board; the test is the central that reads it and is notified."""

import struct
from pathlib import Path

from mpbluetooth import UUID
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_RESULT,
    IRQ_PERIPHERAL_CONNECT,
)


def celsius(value: bytes) -> float:
    return struct.unpack("<h", value)[0] / 100


def test_the_sensor_serves_a_warming_temperature(board, sim_hub):
    sensor = board(Path(__file__).with_name("sensor.py"))
    sensor.wait_for_line("advertising")
    central, events = sim_hub.instance("central")
    central.gap_connect(*sensor.config("mac"))
    conn, _, _ = events.wait(IRQ_PERIPHERAL_CONNECT)
    sensor.events.wait(IRQ_CENTRAL_CONNECT)  # the board's own handler saw it too
    central.gattc_discover_characteristics(conn, 1, 0xFFFF, UUID(0x2A6E))
    value_handle = events.wait(IRQ_GATTC_CHARACTERISTIC_RESULT)[2]
    central.gattc_read(conn, value_handle)
    assert 20 <= celsius(events.wait(IRQ_GATTC_READ_RESULT)[2]) < 40
    first, second = (celsius(events.wait(IRQ_GATTC_NOTIFY, count=n)[2]) for n in (1, 2))
    assert second > first  # each notification is a new reading
