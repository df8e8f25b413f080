"""GAP roles between two simulated instances, as a peer on air would observe them."""

from __future__ import annotations

from typing import Any

import pytest

from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_CONNECTION_UPDATE,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing.lowlevel import bumble_device, on_loop

from .conftest import connect

# Every GAP scenario runs on an in-process link, with each instance joined to a hub process
# over TCP (the cross-process path), and on RootCanal (a controller written by others).
pytestmark = pytest.mark.engines("sim", "hub", "rootcanal")


ADV = b"\x02\x01\x06\x05\x09adv!!"
RESP = b"\x05\x09resp"


def results_from(recorder: Any, addr: bytes) -> list[tuple[Any, ...]]:
    return [d for d in recorder.of(IRQ_SCAN_RESULT) if d[1] == addr]


@pytest.mark.parametrize(("connectable", "adv_type"), [(True, 0), (False, 2)])
def test_scan_sees_exact_payload_and_type(
    pair: Any, link: Any, connectable: bool, adv_type: int
) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV, resp_data=RESP, connectable=connectable)
    addr_type, addr = a.config("mac")
    b.gap_scan(0, 30000, 30000)  # passive
    result = rb.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr, count=3)
    b.gap_scan(None)
    # RSSI is the engine's radio model: our simulator reports -50 dBm in instant timing;
    # RootCanal has no path loss model of ours and reports -20 dBm, now and then -15.
    rssi = result[3]
    assert rssi == -50 if getattr(link, "engine", "sim") == "sim" else -127 <= rssi <= 20
    assert result[:3] + result[4:] == (addr_type, addr, adv_type, ADV)
    # A passive scan never gets scan responses.
    assert all(r[2] == adv_type for r in results_from(rb, addr))


def test_active_scan_gets_the_scan_response_data(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV, resp_data=RESP)
    addr = a.config("mac")[1]
    b.gap_scan(0, 30000, 30000, True)
    response = rb.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[2] == 4)
    b.gap_scan(None)
    assert response[4] == RESP
    assert all(r[4] == ADV for r in results_from(rb, addr) if r[2] == 0)


def test_payloads_none_keeps_and_empty_clears(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV)
    a.gap_advertise(30000)  # None: keep the previous payload
    addr = a.config("mac")[1]
    b.gap_scan(0, 30000, 30000)
    rb.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[4] == ADV)
    a.gap_advertise(20000, b"")
    rb.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[4] == b"")
    b.gap_scan(None)


def test_advertise_argument_errors(pair: Any) -> None:
    a, ra, b, rb = pair
    with pytest.raises(OSError) as info:
        a.gap_advertise(100000, b"x" * 32)
    assert info.value.errno == -18  # NimBLE's own answer, as a board gives (issue #17)
    with pytest.raises(OSError):
        a.gap_advertise(100000, resp_data=b"x" * 32)
    with pytest.raises(TypeError):
        a.gap_advertise(100000, 5)
    with pytest.raises(TypeError):
        a.gap_advertise("fast")
    with pytest.raises(TypeError):
        a.gap_advertise(100000, ADV, RESP)  # resp_data is keyword-only
    a.gap_advertise(100000, "\x02\x01\x06")  # a str is a buffer
    assert a.gap_advertise(None) is None


def test_scan_duration_ends_with_scan_done(pair: Any) -> None:
    a, ra, b, rb = pair
    b.gap_scan(100, 30000, 30000)
    assert rb.wait(IRQ_SCAN_DONE) == ()


def test_scan_errors(pair: Any) -> None:
    a, ra, b, rb = pair
    b.gap_scan(0)
    with pytest.raises(OSError) as info:
        b.gap_scan(0)
    assert info.value.errno == 114  # EALREADY
    b.gap_scan(None)
    with pytest.raises(OSError) as info:
        b.gap_scan(0, 10000, 20000)  # window longer than interval
    assert info.value.errno == 22


def test_connect_and_disconnect_from_either_side(pair: Any) -> None:
    a, ra, b, rb = pair
    b_conn, a_conn = connect(b, rb, a, ra)
    assert rb.of(IRQ_PERIPHERAL_CONNECT)[0][1:] == a.config("mac")
    assert ra.of(IRQ_CENTRAL_CONNECT)[0][1:] == b.config("mac")
    assert b.gap_disconnect(b_conn) is True
    assert rb.wait(IRQ_PERIPHERAL_DISCONNECT)[0] == b_conn
    assert ra.wait(IRQ_CENTRAL_DISCONNECT)[0] == a_conn
    assert b.gap_disconnect(b_conn) is False  # stale handle
    b_conn, a_conn = connect(b, rb, a, ra)
    assert a.gap_disconnect(a_conn) is True  # now the peripheral ends it
    assert rb.wait(IRQ_PERIPHERAL_DISCONNECT, count=2)[0] == b_conn
    assert ra.wait(IRQ_CENTRAL_DISCONNECT, count=2)[0] == a_conn


def test_advertising_stops_on_connect(pair: Any, link: Any) -> None:
    a, ra, b, rb = pair
    connect(b, rb, a, ra)
    observer = link.instance("observer")
    from mpbluetooth.testing import Recorder

    ro = Recorder()
    observer.irq(ro)
    observer.active(True)
    observer.gap_scan(150, 30000, 30000)
    ro.wait(IRQ_SCAN_DONE)
    assert results_from(ro, a.config("mac")[1]) == []


def test_connect_timeout_and_cancel(pair: Any) -> None:
    a, ra, b, rb = pair
    b.gap_connect(0, b"\x01\x02\x03\x04\x05\x06", 200)
    assert rb.wait(IRQ_PERIPHERAL_DISCONNECT) == (65535, 255, bytes(6))
    b.gap_connect(0, b"\x01\x02\x03\x04\x05\x06", 5000)
    with pytest.raises(OSError) as info:
        b.gap_connect(0, b"\x01\x02\x03\x04\x05\x07")
    assert info.value.errno == 114  # one pending connect at a time
    b.gap_connect(None)
    assert rb.wait(IRQ_PERIPHERAL_DISCONNECT, count=2) == (65535, 255, bytes(6))
    with pytest.raises(OSError) as info:
        b.gap_connect(None)  # nothing pending
    assert info.value.errno == 114
    connect(b, rb, a, ra)  # the controller is not wedged


def test_non_connectable_advert_refuses_connections(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV, connectable=False)
    b.gap_connect(*a.config("mac"), 300)
    assert rb.wait(IRQ_PERIPHERAL_DISCONNECT) == (65535, 255, bytes(6))
    assert ra.of(IRQ_CENTRAL_CONNECT) == []


def test_connect_argument_errors(pair: Any) -> None:
    a, ra, b, rb = pair
    with pytest.raises(TypeError, match="invalid addr"):
        b.gap_connect(0)
    with pytest.raises(ValueError, match="invalid addr"):
        b.gap_connect(0, b"\x01\x02")
    with pytest.raises(TypeError):
        b.gap_connect(0, 5)


def test_connect_stops_a_scan_with_scan_done(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    b.gap_connect(*a.config("mac"))
    assert rb.of(IRQ_SCAN_DONE) == [()]  # delivered before gap_connect returned
    rb.wait(IRQ_PERIPHERAL_CONNECT)


def test_three_centrals_on_one_peripheral(link: Any) -> None:
    from mpbluetooth.testing import Recorder

    peripheral = link.instance("hub")
    rp = Recorder()
    peripheral.irq(rp)
    peripheral.active(True)
    handles = set()
    for i in range(3):
        central = link.instance(f"c{i}")
        rc = Recorder()
        central.irq(rc)
        central.active(True)
        peripheral.gap_advertise(20000, ADV)  # advertising stops at each connection
        central.gap_connect(*peripheral.config("mac"))
        rc.wait(IRQ_PERIPHERAL_CONNECT)
        handles.add(rp.wait(IRQ_CENTRAL_CONNECT, count=i + 1)[0])
    assert len(handles) == 3


def test_one_central_three_peripherals(link: Any) -> None:
    from mpbluetooth.testing import Recorder

    central = link.instance("central")
    rc = Recorder()
    central.irq(rc)
    central.active(True)
    for i in range(3):
        peripheral = link.instance(f"p{i}")
        peripheral.irq(Recorder())
        peripheral.active(True)
        peripheral.gap_advertise(20000, ADV)
        central.gap_connect(*peripheral.config("mac"))
        rc.wait(IRQ_PERIPHERAL_CONNECT, count=i + 1)
    handles = {d[0] for d in rc.of(IRQ_PERIPHERAL_CONNECT)}
    assert len(handles) == 3


@pytest.mark.parametrize(
    ("mode", "top_bits", "addr_type"), [(1, 0b11, 1), (2, 0b01, 1), (3, 0b00, 1)]
)
def test_address_modes_seen_by_the_peer(
    pair: Any, mode: int, top_bits: int, addr_type: int
) -> None:
    a, ra, b, rb = pair
    a.config(addr_mode=mode)
    kind, addr = a.config("mac")
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    seen = rb.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr)
    b.gap_scan(None)
    assert seen[0] == addr_type and addr[0] >> 6 == top_bits
    b.gap_connect(kind, addr)
    assert rb.wait(IRQ_PERIPHERAL_CONNECT)[1:] == (kind, addr)


@pytest.mark.parametrize("requester", ["central", "peripheral", "peripheral-l2cap"])
def test_connection_update_requested_by_either_side_is_reported_on_both(
    pair: Any, requester: str
) -> None:
    a, ra, b, rb = pair
    b_conn, a_conn = connect(b, rb, a, ra)
    initiator, handle = (b, b_conn) if requester == "central" else (a, a_conn)
    connection = bumble_device(initiator).lookup_connection(handle)

    # A MicroPython program cannot ask for an update itself; a peer stack (here Bumble's own
    # API, as NimBLE or a phone would) does.
    on_loop(
        lambda: connection.update_parameters(
            45, 45, 2, 4000, use_l2cap=requester.endswith("l2cap")
        ),
        "update",
    )
    expected = (36, 2, 400, 0)  # 45 ms / 1.25, latency 2, 4 s / 10 ms, status 0
    assert rb.wait(IRQ_CONNECTION_UPDATE)[1:] == expected
    assert ra.wait(IRQ_CONNECTION_UPDATE)[1:] == expected
    assert rb.of(IRQ_CONNECTION_UPDATE)[0][0] == b_conn


def test_no_connection_update_at_connection_setup(pair: Any) -> None:
    a, ra, b, rb = pair
    b_conn, a_conn = connect(b, rb, a, ra)
    b.gap_disconnect(b_conn)
    rb.wait(IRQ_PERIPHERAL_DISCONNECT)
    assert rb.of(IRQ_CONNECTION_UPDATE) == [] and ra.of(IRQ_CONNECTION_UPDATE) == []


def test_connection_interval_is_honoured(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV)
    b.gap_connect(*a.config("mac"), 2000, 15000, 15000)
    b_conn = rb.wait(IRQ_PERIPHERAL_CONNECT)[0]
    a_conn = ra.wait(IRQ_CENTRAL_CONNECT)[0]
    for ble, handle in ((b, b_conn), (a, a_conn)):
        connection = bumble_device(ble).lookup_connection(handle)
        assert connection.parameters.connection_interval == 15.0


def test_gap_name_read_by_the_peer(pair: Any) -> None:
    from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

    a, ra, b, rb = pair
    a.config(gap_name="renamed")
    b_conn, a_conn = connect(b, rb, a, ra)
    client = bumble_device(b).lookup_connection(b_conn).gatt_client

    async def read_name() -> bytes:
        characteristics = await client.read_characteristics_by_uuid(
            GATT_DEVICE_NAME_CHARACTERISTIC, None
        )
        return bytes(characteristics[0])

    assert on_loop(read_name, "read name") == b"renamed"
    a.config(gap_name=b"changed, connected")
    assert on_loop(read_name, "read name") == b"changed, connected"
