"""The rows of issue #17 whose answer is an event or a sequence, and the controller's own
refusals: what a board (MicroPython, NimBLE) answered, each followed by a GATT read that
proves both instances still work.

``test_bad_input.py`` holds the rows answered by the call itself (a return value or an
exception). Here each row is a small scenario on a fresh connected pair. The last tests
send HCI commands with out-of-range parameters straight to a controller (our simulated
one, and RootCanal where it can run) and check the refusal a real controller gives.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

import pytest
from bumble import hci

from mpbluetooth import sim
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTC_INDICATE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_GATTS_READ_REQUEST,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.uuid import UUID

from .conftest import Recorder, connect
from .gatt_setup import Gatt, errno_of, make_gatt

PSM = 0x80
NO_CONN = 0xFFFF  # NimBLE reads a stored value "from no connection"


# --- rows answered by events ------------------------------------------------------------------
def two_discoveries_at_once(g: Gatt) -> tuple[Any, ...]:
    """NimBLE runs one discovery per link: a second call while the first runs gets one
    result set and a DONE with status 10."""
    g.client.gattc_discover_services(g.c_conn)
    g.client.gattc_discover_services(g.c_conn)
    g.rc.wait(IRQ_GATTC_SERVICE_DONE, count=2)
    statuses = tuple(sorted(done[1] for done in g.rc.of(IRQ_GATTC_SERVICE_DONE)))
    found = g.rc.of(IRQ_GATTC_SERVICE_RESULT)
    return statuses, len(found) == len(set(found))


def test_two_discoveries_at_once_on_the_air() -> None:
    """The two calls must overlap, as they do on a board, where the first discovery's
    request and response each wait for a connection event. So this row runs on an air-timed
    link: with instant timing a busy machine may finish the first discovery before the
    program's next statement, and the second is then a plain discovery of its own."""
    with sim.Link(timing="air") as air:
        g = make_gatt(air)
        assert two_discoveries_at_once(g) == ((0, 10), True)
        assert g.read(g.battery)[2] == 0  # both instances still work


def open_channel(g: Gatt, mtu: int) -> tuple[int, ...]:
    g.server.l2cap_listen(PSM, 128)
    g.client.l2cap_connect(g.c_conn, PSM, mtu)
    return g.rc.wait(IRQ_L2CAP_CONNECT)


def connect_while_a_channel_is_open(g: Gatt) -> int:
    open_channel(g, 64)
    return errno_of(g.client.l2cap_connect, g.c_conn, PSM, 64)


def listen_after_a_failed_connect(g: Gatt) -> int:
    """A connect on a link that is not there fails (ENOTCONN) and keeps the one slot."""
    assert errno_of(g.client.l2cap_connect, g.c_conn + 7, PSM, 64) == errno.ENOTCONN
    return errno_of(g.client.l2cap_listen, PSM + 2, 64)


def tiny_mtu_is_clamped(g: Gatt) -> tuple[int, int]:
    conn, cid, psm, our_mtu, peer_mtu = open_channel(g, 1)
    return our_mtu, psm


def send_while_stalled(g: Gatt) -> tuple[Any, ...]:
    """The peer's MTU (128) fits in one PDU, so it grants one credit at a time: the second
    SDU stalls; while stalled NimBLE answers ENOMEM once, then EBUSY."""
    _, cid, *_ = open_channel(g, 64)
    first = g.client.l2cap_send(g.c_conn, cid, b"first")
    second = g.client.l2cap_send(g.c_conn, cid, b"second")
    errors = [errno_of(g.client.l2cap_send, g.c_conn, cid, b"third") for _ in range(3)]
    g.client.l2cap_disconnect(g.c_conn, cid)
    g.rc.wait(IRQ_L2CAP_DISCONNECT)
    return first, second, *errors


def name_set_while_off_is_lost(g: Gatt) -> bytes:
    """NimBLE's GAP service starts with its default name at activation."""
    g.client.active(False)
    g.client.config(gap_name=b"before")
    g.client.active(True)
    name = g.client.config("gap_name")
    # Put the link back for the follow-up read.
    g.c_conn, g.s_conn = connect(g.client, g.rc, g.server, g.rs)
    return bytes(name)


def notify_stored_value_asks_first(g: Gatt) -> tuple[Any, ...]:
    g.server.gatts_write(g.tx, b"stored")
    g.server.gatts_notify(g.s_conn, g.tx)
    asked = g.rs.of(IRQ_GATTS_READ_REQUEST)[-1]  # nested: there before the call returned
    return asked, g.rc.wait(IRQ_GATTC_NOTIFY)[2]


def indicate_stored_value_asks_first(g: Gatt) -> tuple[Any, ...]:
    g.server.gatts_write(g.hr, b"stored")
    g.server.gatts_indicate(g.s_conn, g.hr)
    asked = g.rs.of(IRQ_GATTS_READ_REQUEST)[-1]
    return asked, g.rc.wait(IRQ_GATTC_INDICATE)[2]


def first_value_handle(g: Gatt) -> int:
    """21 as on NimBLE's unix build (the default board profile): its GAP and GATT services
    take handles 1..9 at active(True) and 10..18 again at registration (docs/boards.md)."""
    g.client.active(False)
    g.client.active(True)
    ((handle,),) = g.client.gatts_register_services([(UUID(0xFEED), [(UUID(0xFEE1), 2)])])
    g.c_conn, g.s_conn = connect(g.client, g.rc, g.server, g.rs)
    return int(handle)


def long_payload_stops_advertising(g: Gatt) -> tuple[int, bool, bool]:
    """MicroPython stops advertising before it sets the new payload, which NimBLE refuses
    (-18): the device is no longer advertising afterwards."""
    addr = g.client.config("mac")[1]

    def heard() -> bool:
        before, results = len(g.rs.of(IRQ_SCAN_DONE)), len(g.rs.of(IRQ_SCAN_RESULT))
        g.server.gap_scan(300, 20_000, 20_000)
        g.rs.wait(IRQ_SCAN_DONE, count=before + 1)
        return any(result[1] == addr for result in g.rs.of(IRQ_SCAN_RESULT)[results:])

    g.client.gap_advertise(20_000, b"\x02\x01\x06", connectable=False)
    advertising = heard()
    code = errno_of(g.client.gap_advertise, 20_000, bytes(32))
    return code, advertising, heard()


ROWS: list[tuple[str, Callable[[Gatt], Any], Any]] = [
    ("adv_data of 32 bytes stops advertising", long_payload_stops_advertising, (-18, True, False)),
    ("l2cap_connect while a channel is open", connect_while_a_channel_is_open, errno.EALREADY),
    ("l2cap_listen after a failed connect", listen_after_a_failed_connect, errno.EALREADY),
    ("l2cap_connect with MTU 1 is clamped to 32", tiny_mtu_is_clamped, (32, PSM)),
    (
        "l2cap_send while stalled",
        send_while_stalled,
        (True, False, errno.ENOMEM, errno.EBUSY, errno.EBUSY),
    ),
    ("config(gap_name=...) before active(True) is lost", name_set_while_off_is_lost, b"MPY NIMBLE"),
    (
        "gatts_notify of the stored value",
        notify_stored_value_asks_first,
        ((NO_CONN, "tx"), b"stored"),
    ),
    (
        "gatts_indicate of the stored value",
        indicate_stored_value_asks_first,
        ((NO_CONN, "hr"), b"stored"),
    ),
    ("first value handle (21, as on a board)", first_value_handle, 21),
]


def resolve(expected: Any, g: Gatt) -> Any:
    """Handle names in an expectation ("tx", "hr") become the fixture's handles."""
    if isinstance(expected, tuple):
        return tuple(resolve(item, g) for item in expected)
    if isinstance(expected, str):
        return getattr(g, expected)
    return expected


@pytest.mark.engines("sim", "rootcanal")
@pytest.mark.parametrize(("name", "scenario", "expected"), ROWS, ids=[row[0] for row in ROWS])
def test_board_row(gatt: Gatt, name: str, scenario: Callable[[Gatt], Any], expected: Any) -> None:
    assert scenario(gatt) == resolve(expected, gatt)
    assert gatt.read(gatt.battery)[2] == 0  # both instances still work


@pytest.mark.engines("sim", "rootcanal")
def test_send_update_asks_for_the_value_once_per_subscribed_link_after_the_call(
    gatt: Gatt,
) -> None:
    """``gatts_write(h, v, True)``: NimBLE marks the subscribed links and sends afterwards,
    reading the value through the access callback for each: READ_REQUEST(65535, h) per
    link, not nested in the call; the handler may refresh the value, and a non-zero answer
    skips that link's update."""
    s, cccd = gatt.server, gatt.hr + 1
    s.gatts_write(gatt.hr, b"nobody", True)  # no subscriber: no read, nothing sent
    assert gatt.write(cccd, b"\x01\x00")[2] == 0
    # From a handler (a write to the control point), so a nested read would be seen.
    asked_during_call: list[int] = []

    def update(conn: int, handle: int) -> None:
        before = len(gatt.rs.of(IRQ_GATTS_READ_REQUEST))
        s.gatts_write(gatt.hr, b"stale", True)
        asked_during_call.append(len(gatt.rs.of(IRQ_GATTS_READ_REQUEST)) - before)

    gatt.rs.on_write = update
    gatt.rs.on_read = lambda conn, handle: s.gatts_write(handle, b"fresh")
    assert gatt.write(gatt.control, b"go")[2] == 0
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY) == (gatt.c_conn, gatt.hr, b"fresh")
    assert gatt.rs.of(IRQ_GATTS_READ_REQUEST) == [(NO_CONN, gatt.hr)]
    assert asked_during_call == [0]
    gatt.rs.on_write = gatt.rs.on_read = None
    # Refused: no update goes out.
    gatt.rs.answers[gatt.hr] = 1
    s.gatts_write(gatt.hr, b"refused", True)
    gatt.rs.wait(IRQ_GATTS_READ_REQUEST, count=2)
    gatt.rs.answers.clear()
    # Indications ask the same way.
    assert gatt.write(cccd, b"\x02\x00")[2] == 0
    s.gatts_write(gatt.hr, b"indicated", True)
    assert gatt.rc.wait(IRQ_GATTC_INDICATE)[2] == b"indicated"
    assert len(gatt.rs.of(IRQ_GATTS_READ_REQUEST)) == 3
    assert [n[2] for n in gatt.rc.of(IRQ_GATTC_NOTIFY)] == [b"fresh"]
    assert gatt.read(gatt.battery)[2] == 0


@pytest.mark.engines("sim", "rootcanal")
def test_refused_parameters_raise_the_controllers_status_and_print_nothing(
    link: sim.Link, capfd: pytest.CaptureFixture[str]
) -> None:
    """An interval HCI cannot carry used to reach Bumble's encoder, which printed a red
    traceback; a board prints nothing. The controller refuses now: OSError(-530) from ours
    (Invalid HCI Command Parameters); RootCanal answers a value out of range with 0x11
    (-529) and takes a 1.28 s interval that does not fit twice in the 2.56 s supervision
    timeout (docs/compat.md)."""
    rootcanal = getattr(link, "engine", "sim") == "rootcanal"
    a, b = link.instance("a"), link.instance("b")
    a.active(True)
    b.active(True)
    rb = Recorder()
    b.irq(rb)
    addr = a.config("mac")
    out_of_range = -529 if rootcanal else -530
    for interval in (10**9, 2**31 - 1):
        assert errno_of(b.gap_connect, *addr, 2000, interval, interval) == out_of_range
    if rootcanal:
        b.gap_connect(*addr, 2000, 1_280_000, 1_280_000)  # accepted: a is not advertising
        b.gap_connect(None)
        assert rb.wait(IRQ_PERIPHERAL_DISCONNECT) == (NO_CONN, 255, bytes(6))
    else:
        assert errno_of(b.gap_connect, *addr, 2000, 1_280_000, 1_280_000) == -530
    assert errno_of(b.gap_advertise, 19_999) == out_of_range
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    b.gap_advertise(100_000)  # both still work: a connects to b
    b.gap_advertise(None)
    b.gap_advertise(20_000)
    a.gap_connect(*b.config("mac"))
    assert rb.wait(IRQ_CENTRAL_CONNECT)[1:] == a.config("mac")


# --- the controller's own checks ----------------------------------------------------------------
def _builder(command: Any, **defaults: Any) -> Callable[..., hci.HCI_Command]:
    """A maker of ``command`` with valid ``defaults``, each call changing some fields."""

    def build(**changes: Any) -> hci.HCI_Command:
        built: hci.HCI_Command = command(**{**defaults, **changes})
        return built

    return build


PEER = hci.Address("00:11:22:33:44:66", hci.Address.PUBLIC_DEVICE_ADDRESS)
_adv = _builder(
    hci.HCI_LE_Set_Advertising_Parameters_Command,
    advertising_interval_min=0x100,
    advertising_interval_max=0x100,
    advertising_type=0,
    own_address_type=0,
    peer_address_type=0,
    peer_address=hci.Address.ANY,
    advertising_channel_map=7,
    advertising_filter_policy=0,
)
_scan = _builder(
    hci.HCI_LE_Set_Scan_Parameters_Command,
    le_scan_type=0,
    le_scan_interval=0x10,
    le_scan_window=0x10,
    own_address_type=0,
    scanning_filter_policy=0,
)
_connect = _builder(
    hci.HCI_LE_Create_Connection_Command,
    le_scan_interval=0x10,
    le_scan_window=0x10,
    initiator_filter_policy=0,
    peer_address_type=0,
    peer_address=PEER,
    own_address_type=0,
    connection_interval_min=24,
    connection_interval_max=40,
    max_latency=0,
    supervision_timeout=256,
    min_ce_length=0,
    max_ce_length=0,
)
_ext_connect = _builder(
    hci.HCI_LE_Extended_Create_Connection_Command,
    initiator_filter_policy=0,
    own_address_type=0,
    peer_address_type=0,
    peer_address=PEER,
    initiating_phys=1,
    scan_intervals=[0x10],
    scan_windows=[0x10],
    connection_interval_mins=[24],
    connection_interval_maxs=[40],
    max_latencies=[0],
    supervision_timeouts=[256],
    min_ce_lengths=[0],
    max_ce_lengths=[0],
)
_ext_adv = _builder(
    hci.HCI_LE_Set_Extended_Advertising_Parameters_Command,
    advertising_handle=0,
    advertising_event_properties=0x13,
    primary_advertising_interval_min=0x100,
    primary_advertising_interval_max=0x100,
    primary_advertising_channel_map=7,
    own_address_type=0,
    peer_address_type=0,
    peer_address=hci.Address.ANY,
    advertising_filter_policy=0,
    advertising_tx_power=0x7F,
    primary_advertising_phy=1,
    secondary_advertising_max_skip=0,
    secondary_advertising_phy=1,
    advertising_sid=0,
    scan_request_notification_enable=0,
)


def _ext_scan(interval: int = 0x10, window: int = 0x10, phys: int = 1) -> hci.HCI_Command:
    count = bin(phys).count("1")
    return hci.HCI_LE_Set_Extended_Scan_Parameters_Command(
        own_address_type=0,
        scanning_filter_policy=0,
        scanning_phys=phys,
        scan_types=[0] * count,
        scan_intervals=[interval] * count,
        scan_windows=[window] * count,
    )


def _data_length(octets: int, time: int) -> hci.HCI_Command:
    return hci.HCI_LE_Write_Suggested_Default_Data_Length_Command(
        suggested_max_tx_octets=octets, suggested_max_tx_time=time
    )


OK, INVALID, UNSUPPORTED_VALUE = 0x00, 0x12, 0x11
#: (name, command, our controller's status, RootCanal 1.10's status). RootCanal answers a
#: single value out of range with 0x11 and checks fewer fields (docs/compat.md).
HCI_ROWS: list[tuple[str, hci.HCI_Command, int, int]] = [
    ("advertising parameters accepted", _adv(), OK, OK),
    (
        "advertising interval 19.375 ms",
        _adv(advertising_interval_min=0x1F),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    (
        "advertising interval over 10.24 s",
        _adv(advertising_interval_max=0x4001),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    ("advertising interval min > max", _adv(advertising_interval_min=0x200), INVALID, INVALID),
    ("advertising channel map 0", _adv(advertising_channel_map=0), INVALID, INVALID),
    ("advertising type 5", _adv(advertising_type=5), INVALID, OK),
    ("advertising own address type 4", _adv(own_address_type=4), INVALID, OK),
    ("advertising filter policy 4", _adv(advertising_filter_policy=4), INVALID, OK),
    ("scan parameters accepted", _scan(), OK, OK),
    (
        "scan interval 2.5 ms - 625 us",
        _scan(le_scan_interval=3, le_scan_window=3),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    ("scan window above interval", _scan(le_scan_window=0x20), INVALID, INVALID),
    ("scan type 2", _scan(le_scan_type=2), INVALID, OK),
    ("connect: interval 6.25 ms", _connect(connection_interval_min=5), INVALID, UNSUPPORTED_VALUE),
    (
        "connect: interval over 4 s",
        _connect(connection_interval_max=0xC81),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    ("connect: interval min > max", _connect(connection_interval_min=50), INVALID, INVALID),
    (
        "connect: latency 500",
        _connect(max_latency=0x1F4, supervision_timeout=0xC80),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    ("connect: timeout 90 ms", _connect(supervision_timeout=9), INVALID, UNSUPPORTED_VALUE),
    (
        "connect: timeout within 2 intervals",
        _connect(connection_interval_min=0x400, connection_interval_max=0x400),
        INVALID,
        OK,
    ),
    ("connect: scan window above interval", _connect(le_scan_window=0x20), INVALID, INVALID),
    ("connect: CE length min > max", _connect(min_ce_length=2), INVALID, OK),
    (
        "extended connect: interval over 4 s",
        _ext_connect(connection_interval_maxs=[0xC81]),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    (
        "extended connect: scan window above interval",
        _ext_connect(scan_windows=[0x20]),
        INVALID,
        INVALID,
    ),
    ("extended advertising accepted", _ext_adv(), OK, OK),
    (
        "extended advertising interval 19.375 ms",
        _ext_adv(primary_advertising_interval_min=0x1F, primary_advertising_interval_max=0x1F),
        INVALID,
        UNSUPPORTED_VALUE,
    ),
    (
        "extended advertising, legacy PDUs, interval 0x4001 (valid)",
        _ext_adv(primary_advertising_interval_min=0x4001, primary_advertising_interval_max=0x4001),
        OK,
        OK,
    ),
    (
        "extended advertising min > max",
        _ext_adv(primary_advertising_interval_min=0x200),
        INVALID,
        INVALID,
    ),
    ("extended advertising primary PHY 2M", _ext_adv(primary_advertising_phy=2), INVALID, INVALID),
    (
        "extended advertising bad legacy properties",
        _ext_adv(advertising_event_properties=0x11),
        INVALID,
        INVALID,
    ),
    ("extended scan window above interval", _ext_scan(window=0x20), INVALID, INVALID),
    ("extended scan no PHY", _ext_scan(phys=0), INVALID, INVALID),
    ("suggested data length 252 octets", _data_length(0xFC, 0x4290), INVALID, INVALID),
    ("suggested data length 327 us", _data_length(0xFB, 0x147), INVALID, INVALID),
    (
        "default PHY: no TX PHY",
        hci.HCI_LE_Set_Default_PHY_Command(all_phys=0, tx_phys=0, rx_phys=1),
        INVALID,
        INVALID,
    ),
    (
        "random address all zeros",
        hci.HCI_LE_Set_Random_Address_Command(random_address=hci.Address("00:00:00:00:00:00")),
        INVALID,
        INVALID,
    ),
]


async def _statuses(engine: str, spec: str | None) -> list[int]:
    """Each command on a fresh controller (RootCanal refuses legacy commands after
    extended ones): the status of its Command Complete or Command Status."""
    from bumble.host import Host
    from bumble.link import LocalLink
    from bumble.transport.common import AsyncPipeSink

    from mpbluetooth._transport import open_spec
    from mpbluetooth.sim.controller import SimController

    async def status_of(host: Host, command: hci.HCI_Command) -> int:
        await host.reset()
        response = await asyncio.wait_for(host.send_command(command), 5)
        if isinstance(response, hci.HCI_Command_Status_Event):
            return int(response.status)
        return int(response.return_parameters.status)

    found = []
    for _, command, _, _ in HCI_ROWS:
        if spec is None:
            controller = SimController("checked", link=LocalLink())
            found.append(await status_of(Host(controller, AsyncPipeSink(controller)), command))
            continue
        # Opened as the library opens a TCP controller (quick ACKs: RootCanal's split H4
        # writes otherwise cost 44 ms a packet, and this test 25 s instead of 3).
        opened = await open_spec(spec)
        try:
            found.append(await status_of(Host(opened.source, opened.sink), command))
        finally:
            await opened.close()
    return found


@pytest.mark.engines("sim", "rootcanal")
def test_the_controller_refuses_out_of_range_hci_parameters(link: sim.Link) -> None:
    """Core Vol 4, Part E, 7.8: our simulated controller answers Invalid HCI Command
    Parameters (0x12) as NimBLE's controller does; RootCanal's answers are recorded next
    to ours, so a change in either shows here."""
    engine = getattr(link, "engine", "sim")
    spec = link.rootcanal.spec if engine == "rootcanal" and link.rootcanal else None
    found = asyncio.run(_statuses(engine, spec))
    column = 2 if engine == "sim" else 3
    expected = [row[column] for row in HCI_ROWS]
    differences = [
        (row[0], hex(got), hex(want))
        for row, got, want in zip(HCI_ROWS, found, expected, strict=True)
        if got != want
    ]
    assert differences == []
