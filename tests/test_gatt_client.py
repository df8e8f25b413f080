"""GATT client between two simulated instances: discovery, reads, writes, MTU."""

from __future__ import annotations

from typing import Any

import pytest

from mpbluetooth.constants import (
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_DESCRIPTOR_DONE,
    IRQ_GATTC_DESCRIPTOR_RESULT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_WRITE,
    IRQ_MTU_EXCHANGED,
)
from mpbluetooth.uuid import UUID

from .gatt_setup import (
    BATTERY,
    BATTERY_LEVEL,
    HEART_RATE,
    HR_CONTROL,
    HR_MEASUREMENT,
    SECURE,
    UART,
    UART_RX,
    UART_TX,
    USER_DESCRIPTION,
    Gatt,
    errno_of,
)

# The same scenarios on our simulator and on RootCanal (tests/conftest.py, `link`).
pytestmark = pytest.mark.engines("sim", "rootcanal")


def services(gatt: Gatt, uuid: UUID | None = None) -> list[tuple[Any, ...]]:
    gatt.rc.events.clear()
    gatt.client.gattc_discover_services(gatt.c_conn, uuid)
    assert gatt.rc.wait(IRQ_GATTC_SERVICE_DONE) == (gatt.c_conn, 0)
    return gatt.rc.of(IRQ_GATTC_SERVICE_RESULT)


def characteristics(
    gatt: Gatt, start: int, end: int, uuid: UUID | None = None
) -> list[tuple[Any, ...]]:
    gatt.rc.events.clear()
    gatt.client.gattc_discover_characteristics(gatt.c_conn, start, end, uuid)
    assert gatt.rc.wait(IRQ_GATTC_CHARACTERISTIC_DONE) == (gatt.c_conn, 0)
    return gatt.rc.of(IRQ_GATTC_CHARACTERISTIC_RESULT)


def descriptors(gatt: Gatt, start: int, end: int) -> list[tuple[int, UUID]]:
    gatt.rc.events.clear()
    gatt.client.gattc_discover_descriptors(gatt.c_conn, start, end)
    assert gatt.rc.wait(IRQ_GATTC_DESCRIPTOR_DONE) == (gatt.c_conn, 0)
    return [(h, u) for _, h, u in gatt.rc.of(IRQ_GATTC_DESCRIPTOR_RESULT)]


# --- discovery --------------------------------------------------------------------------
def test_discover_all_services(gatt: Gatt) -> None:
    found = services(gatt)
    uuids = [d[3] for d in found]
    assert uuids == [UUID(0x1800), UUID(0x1801), HEART_RATE, UART, BATTERY, SECURE]
    assert all(d[0] == gatt.c_conn for d in found)
    starts = [d[1] for d in found]
    ends = [d[2] for d in found]
    # NimBLE's GAP and GATT services took 1..9 at activation, 10..18 at registration.
    assert starts[0] == 10 and starts == sorted(starts)
    assert all(end + 1 == start for end, start in zip(ends, starts[1:], strict=False))
    assert starts[2] < gatt.hr < ends[2] and starts[3] < gatt.tx <= ends[3]
    # UUIDs keep their on-air size: 16-bit is not the 128-bit form.
    assert found[2][3] != UUID("0000180d-0000-1000-8000-00805f9b34fb")


@pytest.mark.parametrize("uuid", [HEART_RATE, UART, BATTERY], ids=str)
def test_discover_service_by_uuid(gatt: Gatt, uuid: UUID) -> None:
    everything = {d[3]: d for d in services(gatt)}
    assert services(gatt, uuid) == [everything[uuid]]


def test_discover_missing_service(gatt: Gatt) -> None:
    assert services(gatt, UUID(0xFEED)) == []


def test_discover_characteristics_of_a_service(gatt: Gatt) -> None:
    _, start, end, _ = next(d for d in services(gatt) if d[3] == HEART_RATE)
    found = characteristics(gatt, start, end)
    assert found == [
        (gatt.c_conn, gatt.control - 2, gatt.hr, 0x32, HR_MEASUREMENT),
        (gatt.c_conn, end, gatt.control, 0x8A, HR_CONTROL),  # the last ends at the query's end
    ]


def test_discover_characteristics_across_the_database(gatt: Gatt) -> None:
    found = characteristics(gatt, 1, 0xFFFF)
    assert found[0][4] == UUID(0x2A00)  # the GAP device name comes first
    assert found[-1][0:3] == (gatt.c_conn, 0xFFFF, gatt.secure(5))
    by_uuid = {d[4]: d for d in found}
    assert by_uuid[UART_RX][1:4] == (gatt.tx - 2, gatt.rx, 0x0C)
    assert by_uuid[UART_TX][1:4] == (gatt.battery - 2, gatt.tx, 0x12)  # covers the next service


@pytest.mark.parametrize(
    ("uuid", "value"),
    [(BATTERY_LEVEL, "battery"), (UART_TX, "tx"), (UART_RX, "rx")],
    ids=["16-bit", "128-bit-tx", "128-bit-rx"],
)
def test_discover_characteristics_by_uuid(gatt: Gatt, uuid: UUID, value: str) -> None:
    """NimBLE discovers every characteristic and filters in the host after computing end
    handles: a match ends where the next characteristic (matching or not) begins, which
    keeps aioble's descriptor discovery within the characteristic."""
    by_uuid = {d[4]: d for d in characteristics(gatt, 1, 0xFFFF)}
    (only,) = characteristics(gatt, 1, 0xFFFF, uuid)
    assert only == by_uuid[uuid]
    assert only[1:3] == (by_uuid[uuid][1], getattr(gatt, value))
    assert only[1] < 0xFFFF
    assert characteristics(gatt, 1, 0xFFFF, UUID(0xFEED)) == []


def test_discover_descriptors(gatt: Gatt) -> None:
    # From the value handle to the characteristic's end: the CCCD, then the user descriptor.
    assert descriptors(gatt, gatt.hr, gatt.control - 2) == [
        (gatt.hr + 1, UUID(0x2902)),
        (gatt.hr_desc, USER_DESCRIPTION),
    ]
    # A service's whole range: every attribute after the start is reported.
    _, start, end, _ = next(d for d in services(gatt) if d[3] == BATTERY)
    assert descriptors(gatt, start, end) == [
        (start + 1, UUID(0x2803)),
        (gatt.battery, BATTERY_LEVEL),
    ]
    # A 128-bit attribute in the range is reported with its full size.
    assert descriptors(gatt, gatt.rx, gatt.tx) == [(gatt.tx - 1, UUID(0x2803)), (gatt.tx, UART_TX)]


def test_argument_errors(gatt: Gatt) -> None:
    c, conn, other = gatt.client, gatt.c_conn, gatt.c_conn + 7
    with pytest.raises(TypeError, match="UUID"):
        c.gattc_discover_services(conn, 0x180D)
    with pytest.raises(TypeError, match="UUID"):
        c.gattc_discover_characteristics(conn, 1, 0xFFFF, "2a37")
    assert errno_of(c.gattc_discover_services, other) == 107  # ENOTCONN
    assert errno_of(c.gattc_discover_characteristics, other, 1, 0xFFFF) == 107
    assert errno_of(c.gattc_discover_descriptors, other, 1, 0xFFFF) == 107
    assert errno_of(c.gattc_read, other, gatt.hr) == 107
    assert errno_of(c.gattc_write, other, gatt.hr, b"x", 1) == 107
    assert errno_of(c.gattc_exchange_mtu, other) == 107
    assert errno_of(c.gattc_write, conn, gatt.hr, b"x", 2) == 22  # EINVAL
    assert errno_of(c.gattc_discover_characteristics, conn, 10, 5) == 22
    with pytest.raises(TypeError):
        c.gattc_write(conn, gatt.control, 5, 1)
    c.gattc_write(conn, gatt.control, "str", True)  # str data, bool mode
    assert gatt.rc.wait(IRQ_GATTC_WRITE_DONE) == (conn, gatt.control, 0)
    c.active(False)
    assert errno_of(c.gattc_discover_services, conn) == 19  # ENODEV
    assert errno_of(c.gattc_read, conn, gatt.hr) == 19


# --- reads and writes -------------------------------------------------------------------
def test_read_and_write_at_the_default_mtu(gatt: Gatt) -> None:
    s = gatt.server
    s.gatts_write(gatt.battery, bytes(range(100)))
    assert gatt.read(gatt.battery) == (gatt.c_conn, gatt.battery, 0)
    # One Read Request and no Read Blob: MTU 23 gives 22 bytes.
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == [(gatt.c_conn, gatt.battery, bytes(range(22)))]
    s.gatts_set_buffer(gatt.control, 512)
    assert gatt.write(gatt.control, bytes(100)) == (gatt.c_conn, gatt.control, 0)
    assert s.gatts_read(gatt.control) == bytes(20)  # no prepared writes: cut to MTU - 3
    # Mode 0 raises no event on the client.
    gatt.client.gattc_write(gatt.c_conn, gatt.control, b"nr", 0)
    gatt.rs.wait(IRQ_GATTS_WRITE, count=2)
    assert len(gatt.rc.of(IRQ_GATTC_WRITE_DONE)) == 1


def test_values_of_1_to_512_bytes_after_an_mtu_exchange(gatt: Gatt) -> None:
    s, c = gatt.server, gatt.client
    s.config(mtu=515)
    c.config(mtu=515)
    c.gattc_exchange_mtu(gatt.c_conn)
    assert gatt.rc.wait(IRQ_MTU_EXCHANGED) == (gatt.c_conn, 515)
    s.gatts_set_buffer(gatt.control, 512)
    for size in (1, 20, 21, 22, 100, 244, 245, 511, 512):
        value = bytes((size + i) & 0xFF for i in range(size))
        assert gatt.write(gatt.control, value)[2] == 0
        assert s.gatts_read(gatt.control) == value
        s.gatts_write(gatt.battery, value)
        assert gatt.read(gatt.battery)[2] == 0
        assert gatt.rc.of(IRQ_GATTC_READ_RESULT)[-1] == (gatt.c_conn, gatt.battery, value)


def test_read_of_unknown_handle_fails(gatt: Gatt) -> None:
    assert gatt.read(0x0FFF) == (gatt.c_conn, 0x0FFF, 0x101)  # invalid handle
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == []
    assert gatt.write(0x0FFF, b"x") == (gatt.c_conn, 0x0FFF, 0x101)
    assert gatt.read(gatt.battery)[2] == 0  # the link still works


# --- MTU --------------------------------------------------------------------------------
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_mtu_exchange_from_either_side(gatt: Gatt, initiator: str) -> None:
    gatt.server.config(mtu=300)
    gatt.client.config(mtu=185)
    first, first_conn, second, second_conn = (
        (gatt.client, gatt.c_conn, gatt.server, gatt.s_conn)
        if initiator == "client"
        else (gatt.server, gatt.s_conn, gatt.client, gatt.c_conn)
    )
    first.gattc_exchange_mtu(first_conn)
    assert gatt.rc.wait(IRQ_MTU_EXCHANGED) == (gatt.c_conn, 185)
    assert gatt.rs.wait(IRQ_MTU_EXCHANGED) == (gatt.s_conn, 185)
    assert errno_of(first.gattc_exchange_mtu, first_conn) == 114  # EALREADY
    assert errno_of(second.gattc_exchange_mtu, second_conn) == 114  # the link has exchanged
    gatt.server.gatts_notify(gatt.s_conn, gatt.tx, bytes(300))
    assert len(gatt.rc.wait(IRQ_GATTC_NOTIFY)[2]) == 182  # MTU - 3


def test_no_automatic_mtu_exchange(gatt: Gatt) -> None:
    gatt.server.gatts_write(gatt.battery, bytes(50))
    gatt.read(gatt.battery)
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT)[0][2] == bytes(22)
    assert gatt.rc.of(IRQ_MTU_EXCHANGED) == gatt.rs.of(IRQ_MTU_EXCHANGED) == []
