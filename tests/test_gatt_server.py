"""GATT server between two simulated instances: what a connected client observes."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from mpbluetooth import irq_stats, sim
from mpbluetooth.constants import (
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_DESCRIPTOR_DONE,
    IRQ_GATTC_DESCRIPTOR_RESULT,
    IRQ_GATTC_INDICATE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_INDICATE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
    IRQ_MTU_EXCHANGED,
)
from mpbluetooth.testing.lowlevel import bumble_device
from mpbluetooth.uuid import UUID

from .conftest import connect
from .gatt_setup import (
    FLAG_INDICATE,
    FLAG_NOTIFY,
    FLAG_READ,
    FLAG_WRITE,
    FLAG_WRITE_NO_RESPONSE,
    HEART_RATE,
    HR_MEASUREMENT,
    UART,
    UART_RX,
    UART_TX,
    USER_DESCRIPTION,
    Gatt,
    errno_of,
    make_gatt,
)

# The same scenarios on our simulator and on RootCanal (tests/conftest.py, `link`).
pytestmark = pytest.mark.engines("sim", "rootcanal")


# --- registration -----------------------------------------------------------------------
def test_register_shapes_and_returned_handles(pair: Any) -> None:
    a, ra, b, rb = pair
    handles = a.gatts_register_services(
        [
            (HEART_RATE, [(HR_MEASUREMENT, FLAG_READ | FLAG_NOTIFY, [(USER_DESCRIPTION, 2)])]),
            (UART, ((UART_RX, FLAG_WRITE), [UART_TX, FLAG_NOTIFY, ()])),
            (UUID(b"\x01\x02\x03\x04"), ()),  # a 32-bit service with no characteristics
        ]
    )
    assert type(handles) is tuple and all(type(h) is tuple for h in handles)
    (value, desc), (rx, tx), empty = handles
    # Declaration, value, CCCD (skipped in the result), then the user descriptor.
    assert desc == value + 2
    assert (rx, tx) == (desc + 3, desc + 5)
    assert empty == ()
    assert a.gatts_register_services([]) == ()
    assert a.gatts_register_services(()) == ()


def test_register_errors(pair: Any) -> None:
    a, ra, b, rb = pair
    char = (HR_MEASUREMENT, FLAG_READ)
    with pytest.raises(TypeError):
        a.gatts_register_services(s for s in [(HEART_RATE, [char])])
    with pytest.raises(TypeError):
        a.gatts_register_services([5])
    with pytest.raises(ValueError):
        a.gatts_register_services([(HEART_RATE, [char], 1)])
    with pytest.raises(ValueError, match="invalid service UUID"):
        a.gatts_register_services([(0x180D, [char])])
    with pytest.raises(ValueError, match="invalid characteristic tuple"):
        a.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT,)])])
    with pytest.raises(ValueError, match="invalid characteristic UUID"):
        a.gatts_register_services([(HEART_RATE, [("2a37", FLAG_READ)])])
    with pytest.raises(ValueError, match="invalid descriptor UUID"):
        a.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT, 2, [(0x2901, 2)])])])
    with pytest.raises(TypeError):
        a.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT, "read")])])
    assert errno_of(a.gatts_register_services, [(HEART_RATE, [])] * 9) == 7  # E2BIG
    a.gap_advertise(100000, b"\x02\x01\x06")
    assert errno_of(a.gatts_register_services, [(HEART_RATE, [char])]) == 16  # EBUSY
    a.gap_advertise(None)
    a.active(False)
    assert errno_of(a.gatts_register_services, [(HEART_RATE, [char])]) == 19  # ENODEV


def test_reregistering_replaces_services_and_values(pair: Any) -> None:
    a, ra, b, rb = pair
    ((first,),) = a.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT, FLAG_READ)])])
    a.gatts_write(first, b"old")
    ((again,),) = a.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT, FLAG_READ)])])
    # NimBLE numbers on from the last handle (unix board profile): the same layout, 12
    # handles on (9 for GAP and GATT again, 3 for this service).
    assert again == first + 12
    assert a.gatts_read(again) == b""


def test_layout_seen_by_the_peer(gatt: Gatt) -> None:
    gatt.client.gattc_discover_descriptors(gatt.c_conn, gatt.hr, gatt.control)
    gatt.rc.wait(IRQ_GATTC_DESCRIPTOR_DONE)
    found = [(h, u) for _, h, u in gatt.rc.of(IRQ_GATTC_DESCRIPTOR_RESULT)]
    assert found == [
        (gatt.hr + 1, UUID(0x2902)),  # the CCCD right after the value, as NimBLE
        (gatt.hr_desc, USER_DESCRIPTION),
        (gatt.control - 1, UUID(0x2803)),
        (gatt.control, UUID(0x2A39)),
    ]
    gatt.client.gattc_discover_characteristics(gatt.c_conn, gatt.hr - 1, gatt.control)
    gatt.rc.wait(IRQ_GATTC_CHARACTERISTIC_DONE)
    properties = [d[3] for d in gatt.rc.of(IRQ_GATTC_CHARACTERISTIC_RESULT)]
    assert properties == [0x32, 0x8A]  # AUX_WRITE sets the extended-properties bit


# --- local values -----------------------------------------------------------------------
def test_local_read_and_write(gatt: Gatt) -> None:
    s = gatt.server
    assert s.gatts_read(gatt.hr) == b""
    assert s.gatts_write(gatt.hr, b"x" * 30) == 30  # the capacity grows to fit
    assert s.gatts_read(gatt.hr) == b"x" * 30
    assert s.gatts_write(gatt.hr, "text") == 4  # a str is a buffer
    assert type(s.gatts_read(gatt.hr)) is bytes
    assert s.gatts_read(999) == b""  # never raises
    assert errno_of(s.gatts_write, 999, b"x") == 22  # EINVAL
    assert errno_of(s.gatts_set_buffer, 999, 10) == 22


def test_inactive_local_calls(gatt: Gatt) -> None:
    s = gatt.server
    s.gatts_write(gatt.hr, b"kept?")
    s.active(False)
    assert s.gatts_read(gatt.hr) == b""
    assert errno_of(s.gatts_write, gatt.hr, b"x") == 19
    assert errno_of(s.gatts_notify, 0, gatt.hr) == 19


def test_remote_writes_truncate_and_raise_gatts_write(gatt: Gatt) -> None:
    seen: list[bytes] = []
    gatt.rs.on_write = lambda conn, handle: seen.append(gatt.server.gatts_read(handle))
    assert gatt.write(gatt.control, b"y" * 40)[2] == 0
    assert gatt.rs.wait(IRQ_GATTS_WRITE) == (gatt.s_conn, gatt.control)
    assert seen == [b"y" * 20]  # default capacity; visible inside the handler
    gatt.client.gattc_write(gatt.c_conn, gatt.rx, b"cmd", 0)  # without response
    assert gatt.rs.wait(IRQ_GATTS_WRITE, count=2) == (gatt.s_conn, gatt.rx)
    assert gatt.server.gatts_read(gatt.rx) == b"cmd"


def test_append_buffer_accumulates_and_read_drains(gatt: Gatt) -> None:
    s = gatt.server
    s.gatts_write(gatt.rx, b"stale")
    s.gatts_set_buffer(gatt.rx, 8, True)
    assert s.gatts_read(gatt.rx) == b""  # set_buffer clears
    for chunk in (b"abc", b"def", b"ghijk"):
        gatt.client.gattc_write(gatt.c_conn, gatt.rx, chunk, 1)
    gatt.rc.wait(IRQ_GATTC_WRITE_DONE, count=3)
    assert s.gatts_read(gatt.rx) == b"abcdefgh"  # capped at 8, the rest dropped
    assert s.gatts_read(gatt.rx) == b""  # drained
    s.gatts_write(gatt.rx, b"local")  # a local write replaces even in append mode
    assert s.gatts_read(gatt.rx) == b"local"
    s.gatts_set_buffer(gatt.control, 4)
    gatt.write(gatt.control, b"123456")
    assert s.gatts_read(gatt.control) == b"1234"


# --- read requests and permissions ------------------------------------------------------
@pytest.mark.parametrize("code", [0x02, 0x05, 0x08, 0x0F])
def test_read_request_answer_is_the_clients_status(gatt: Gatt, code: int) -> None:
    gatt.server.gatts_write(gatt.battery, b"\x64")
    gatt.rs.answers[gatt.battery] = code
    assert gatt.read(gatt.battery) == (gatt.c_conn, gatt.battery, 0x100 + code)
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == []
    assert gatt.rs.of(IRQ_GATTS_READ_REQUEST) == [(gatt.s_conn, gatt.battery)]
    gatt.rs.answers[gatt.battery] = None  # allowed again
    assert gatt.read(gatt.battery)[2] == 0
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == [(gatt.c_conn, gatt.battery, b"\x64")]


def test_read_request_handler_can_refresh_the_value(gatt: Gatt) -> None:
    gatt.rs.on_read = lambda conn, handle: gatt.server.gatts_write(handle, b"fresh")
    gatt.read(gatt.hr_desc)  # descriptors raise read requests too
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == [(gatt.c_conn, gatt.hr_desc, b"fresh")]


def test_permission_flags_refuse_access(gatt: Gatt) -> None:
    assert gatt.read(gatt.secure(0))[2] == 0x102  # write-only: read not permitted
    assert gatt.write(gatt.battery, b"x")[2] == 0x103  # read-only: write not permitted
    # Security flags before pairing: NimBLE answers "insufficient authentication" to a
    # peer without a stored key.
    assert gatt.read(gatt.secure(1))[2] == 0x105
    assert gatt.read(gatt.secure(2))[2] == 0x105
    assert gatt.write(gatt.secure(4), b"x")[2] == 0x105
    assert gatt.write(gatt.secure(5), b"x")[2] == 0x105
    # Refused accesses reach neither the handler nor the value.
    assert gatt.rs.of(IRQ_GATTS_READ_REQUEST) == []
    assert gatt.rs.of(IRQ_GATTS_WRITE) == []
    # A refused write command is dropped silently.
    gatt.client.gattc_write(gatt.c_conn, gatt.battery, b"cmd", 0)
    gatt.server.gatts_write(gatt.battery, b"\x10")
    assert gatt.read(gatt.battery)[2] == 0
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT)[-1][2] == b"\x10"
    assert gatt.rs.of(IRQ_GATTS_WRITE) == []


def test_authorized_read_is_decided_by_the_read_request(gatt: Gatt) -> None:
    handle = gatt.secure(3)
    gatt.rs.answers[handle] = 0x08
    assert gatt.read(handle)[2] == 0x108
    gatt.rs.answers[handle] = 0
    assert gatt.read(handle)[2] == 0


# --- notify and indicate ----------------------------------------------------------------
def test_notify_and_indicate_with_and_without_data(gatt: Gatt) -> None:
    s, conn = gatt.server, gatt.s_conn
    s.gatts_write(gatt.hr, b"stored")
    s.gatts_notify(conn, gatt.hr)  # not subscribed: sent anyway
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY) == (gatt.c_conn, gatt.hr, b"stored")
    s.gatts_notify(conn, gatt.hr, b"explicit")
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY, count=2)[2] == b"explicit"
    assert s.gatts_read(gatt.hr) == b"stored"  # explicit data leaves the value alone
    s.gatts_indicate(conn, gatt.hr)
    assert gatt.rc.wait(IRQ_GATTC_INDICATE) == (gatt.c_conn, gatt.hr, b"stored")
    assert gatt.rs.wait(IRQ_GATTS_INDICATE_DONE) == (conn, gatt.hr, 0)
    s.gatts_indicate(conn, gatt.hr, "ind")
    assert gatt.rc.wait(IRQ_GATTC_INDICATE, count=2)[2] == b"ind"
    assert gatt.rs.wait(IRQ_GATTS_INDICATE_DONE, count=2) == (conn, gatt.hr, 0)
    s.gatts_notify(conn, gatt.hr, b"z" * 40)  # MTU 23: cut to 20 bytes
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY, count=3)[2] == b"z" * 20


def test_indicate_done_reports_a_lost_link(gatt: Gatt) -> None:
    # A client that never confirms (its stack's confirmation is switched off), then leaves.
    client = bumble_device(gatt.client).lookup_connection(gatt.c_conn).gatt_client
    client.on_att_handle_value_indication = lambda pdu: None
    gatt.server.gatts_indicate(gatt.s_conn, gatt.hr, b"lost")
    gatt.client.gap_disconnect(gatt.c_conn)
    assert gatt.rs.wait(IRQ_GATTS_INDICATE_DONE) == (gatt.s_conn, gatt.hr, 7)


def test_notify_errors(gatt: Gatt) -> None:
    s = gatt.server
    assert errno_of(s.gatts_notify, gatt.s_conn + 1, gatt.hr, b"x") == 107  # ENOTCONN
    assert errno_of(s.gatts_indicate, gatt.s_conn + 1, gatt.hr, b"x") == 107


@pytest.mark.mpbluetooth_timing("air")
def test_full_buffers_refuse_notifications_and_writes_with_enomem(sim_link: sim.Link) -> None:
    """On the air, packets leave only at connection events: a program that sends faster
    fills the controller's buffers and is told ENOMEM, as on a board, and retries."""
    gatt = make_gatt(sim_link)

    def refused(send: Any) -> int:
        for _ in range(100_000):
            try:
                send()
            except OSError as exc:
                return int(exc.errno)
        return 0

    assert refused(lambda: gatt.server.gatts_notify(gatt.s_conn, gatt.hr, b"x")) == 12
    assert refused(lambda: gatt.client.gattc_write(gatt.c_conn, gatt.rx, b"x", 0)) == 12


def test_a_notify_loop_retrying_at_once_loses_nothing(gatt: Gatt) -> None:
    """The MicroPython idiom: notify in a tight loop and retry at once on ENOMEM. Neither
    the stack nor the client's handler may be starved of the GIL by it: at the default
    rxbuf every notification reaches the handler (without the yields, hundreds of 244-byte
    notifications a second were dropped by the client's ring)."""
    s, c, total = gatt.server, gatt.client, 1500
    s.config(mtu=247)
    c.config(mtu=247)
    c.gattc_exchange_mtu(gatt.c_conn)
    gatt.rc.wait(IRQ_MTU_EXCHANGED)
    arrived = [0]
    all_in = threading.Event()

    def count(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_GATTC_NOTIFY:
            arrived[0] += 1
            if arrived[0] == total:
                all_in.set()

    c.irq(count)
    sent = refused = 0
    while sent < total:
        try:
            s.gatts_notify(gatt.s_conn, gatt.tx, bytes(244))
            sent += 1
        except OSError as exc:
            assert exc.errno == 12  # ENOMEM: the ACL buffers are full, try again
            refused += 1
    assert all_in.wait(15), f"{arrived[0]} of {total} arrived, {irq_stats(c)}"
    assert irq_stats(c).dropped == 0
    assert refused > 0  # the loop did outrun the link, so the retry path was exercised


def test_subscription_through_the_cccd(gatt: Gatt) -> None:
    s, rc, cccd = gatt.server, gatt.rc, gatt.hr + 1
    s.gatts_write(gatt.hr, b"quiet", True)  # nobody subscribed: nothing sent
    assert gatt.write(cccd, b"\x01\x00")[2] == 0
    s.gatts_write(gatt.hr, b"n1", True)
    assert rc.wait(IRQ_GATTC_NOTIFY) == (gatt.c_conn, gatt.hr, b"n1")
    gatt.write(cccd, b"\x02\x00")
    s.gatts_write(gatt.hr, b"i1", True)
    assert rc.wait(IRQ_GATTC_INDICATE) == (gatt.c_conn, gatt.hr, b"i1")
    assert gatt.rs.wait(IRQ_GATTS_INDICATE_DONE) == (gatt.s_conn, gatt.hr, 0)
    gatt.write(cccd, b"\x03\x00")
    s.gatts_write(gatt.hr, b"n2", True)  # both bits: notify wins
    assert rc.wait(IRQ_GATTC_NOTIFY, count=2)[2] == b"n2"
    gatt.write(cccd, b"\x00\x00")
    s.gatts_write(gatt.hr, b"off", True)
    gatt.read(gatt.battery)  # a round trip after the update would have arrived
    assert [d[2] for d in rc.of(IRQ_GATTC_NOTIFY)] == [b"n1", b"n2"]
    assert len(rc.of(IRQ_GATTC_INDICATE)) == 1
    assert gatt.rs.of(IRQ_GATTS_WRITE) == []  # CCCD writes raise no GATTS_WRITE


def test_no_indicate_done_where_we_are_central(pair: Any) -> None:
    # NimBLE raises INDICATE_DONE only on links where it is the peripheral.
    a, ra, b, rb = pair
    ((value,),) = b.gatts_register_services([(HEART_RATE, [(HR_MEASUREMENT, FLAG_INDICATE)])])
    b_conn, a_conn = connect(b, rb, a, ra)
    b.gatts_indicate(b_conn, value, b"up")
    assert ra.wait(IRQ_GATTC_INDICATE) == (a_conn, value, b"up")
    b.gatts_notify(b_conn, value, b"after")
    ra.wait(IRQ_GATTC_NOTIFY)
    assert rb.of(IRQ_GATTS_INDICATE_DONE) == []


# --- a Nordic-UART-style service --------------------------------------------------------
def test_uart_carries_10_kb_each_way(gatt: Gatt) -> None:
    s, c = gatt.server, gatt.client
    s.config(mtu=247)
    c.config(mtu=247)
    c.gattc_exchange_mtu(gatt.c_conn)
    assert gatt.rc.wait(IRQ_MTU_EXCHANGED) == (gatt.c_conn, 247)
    gatt.rs.wait(IRQ_MTU_EXCHANGED)
    chunk, batch = 244, 10  # a full ATT payload; batches of 10 writes / notifications
    s.gatts_set_buffer(gatt.rx, chunk * batch, True)
    received = bytearray()
    gatt.rs.on_write = lambda conn, handle: received.extend(s.gatts_read(handle))
    data = random.Random(4).randbytes(10 * 1024)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    # Client → server: write-without-response, then wait for the server to drain the batch.
    for first in range(0, len(chunks), batch):
        for piece in chunks[first : first + batch]:
            c.gattc_write(gatt.c_conn, gatt.rx, piece, 0)
        sent = min(first + batch, len(chunks))
        gatt.rs.wait(IRQ_GATTS_WRITE, count=sent)
    assert bytes(received) == data

    # Server → client: notifications, then wait for the client to have them all.
    for first in range(0, len(chunks), batch):
        for piece in chunks[first : first + batch]:
            s.gatts_notify(gatt.s_conn, gatt.tx, piece)
        gatt.rc.wait(IRQ_GATTC_NOTIFY, count=min(first + batch, len(chunks)))
    notified = gatt.rc.of(IRQ_GATTC_NOTIFY)
    assert {d[1] for d in notified} == {gatt.tx}
    assert b"".join(d[2] for d in notified) == data


def test_descriptor_flags_only_read_and_write_count(link: Any) -> None:
    services = [
        (
            UART,
            [
                (
                    UART_TX,
                    FLAG_READ | FLAG_NOTIFY,
                    [
                        (USER_DESCRIPTION, FLAG_READ | 0x0200),
                        (UUID(0x2904), FLAG_WRITE_NO_RESPONSE),
                    ],
                )
            ],
        )
    ]
    gatt = make_gatt(link, services)
    ((value, readable, writable),) = gatt.handles
    assert gatt.read(readable)[2] == 0  # READ_ENCRYPTED is ignored on a descriptor
    assert gatt.read(writable)[2] == 0x102
    assert gatt.write(writable, b"ok")[2] == 0  # WRITE_NO_RESPONSE permits writes
    assert gatt.rs.wait(IRQ_GATTS_WRITE) == (gatt.s_conn, writable)


def test_a_handler_reading_each_write_gets_that_write_in_a_burst(gatt: Gatt) -> None:
    """NimBLE runs the GATTS_WRITE handler inside the write, so a handler reading the value
    (as UART peripherals do) sees every write's own data, even in a burst of writes
    without response: later writes wait until the handler has returned."""
    got: list[bytes] = []
    gatt.rs.on_write = lambda conn, handle: got.append(gatt.server.gatts_read(handle))
    sent = [b"chunk%03d" % i for i in range(60)]
    for chunk in sent:
        while True:
            try:
                gatt.client.gattc_write(gatt.c_conn, gatt.rx, chunk, 0)
                break
            except OSError:
                time.sleep(0.001)  # ENOMEM: buffers full, as on a board
    gatt.rs.wait(IRQ_GATTS_WRITE, count=len(sent))
    assert got == sent


def _queued_at_client(gatt: Gatt) -> int:
    """From inside a server handler: the events the client has queued after a bounded look
    (0.3 s) for a response that must not come while the handler runs."""
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline and not irq_stats(gatt.client).queued:
        time.sleep(0.005)
    return irq_stats(gatt.client).queued


def test_a_write_request_is_answered_after_its_handler_returns(gatt: Gatt) -> None:
    """SPEC 1.16: on NimBLE the GATTS_WRITE handler runs inside the ATT server, before the
    Write Response leaves, so a central's next write can never overtake the program's look
    at this one (aioble's ``written()`` relies on it). Here: while the server's handler
    runs, the client has no WRITE_DONE queued, however long the handler takes; a Write
    Command (no response) still never waits."""
    queued_during: list[int] = []
    gatt.rs.on_write = lambda conn, handle: queued_during.append(_queued_at_client(gatt))
    assert gatt.write(gatt.rx, b"one")[2] == 0
    assert gatt.write(gatt.control, b"two")[2] == 0
    assert queued_during == [0, 0]
    assert gatt.server.gatts_read(gatt.control) == b"two"


def test_a_read_request_is_answered_after_its_handler_returns(gatt: Gatt) -> None:
    """As a write (SPEC 1.16): NimBLE raises READ_REQUEST from the access callback and
    sends the Read Response as the handler returns. While the handler runs, the client
    has nothing queued, however long it takes, and the response carries what the handler
    left in the value; a value longer than MTU - 1 is cut there, as Bumble's server cut
    it."""
    queued_during: list[int] = []

    def on_read(conn: int, handle: int) -> None:
        queued_during.append(_queued_at_client(gatt))
        gatt.server.gatts_write(handle, b"set by the handler")

    gatt.rs.on_read = on_read
    assert gatt.read(gatt.hr) == (gatt.c_conn, gatt.hr, 0)
    assert queued_during == [0]
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT) == [(gatt.c_conn, gatt.hr, b"set by the handler")]
    gatt.rs.on_read = None
    gatt.server.gatts_set_buffer(gatt.battery, 100)
    gatt.server.gatts_write(gatt.battery, bytes(range(100)))
    assert gatt.read(gatt.battery)[2] == 0  # the default ATT MTU: 23
    assert gatt.rc.of(IRQ_GATTC_READ_RESULT)[-1] == (gatt.c_conn, gatt.battery, bytes(range(22)))


def test_a_write_request_is_answered_without_a_handler_or_after_a_failing_one(
    gatt: Gatt, capsys: pytest.CaptureFixture[str]
) -> None:
    """The response waits for the handler only while there is one: without a handler the
    write is stored and answered at once, and a handler that raises is reported, removed
    (SPEC D4) and the write answered all the same."""
    gatt.server.irq(None)
    assert gatt.write(gatt.control, b"a")[2] == 0
    assert gatt.server.gatts_read(gatt.control) == b"a"

    def bad(event: int, data: Any) -> None:
        raise RuntimeError("boom")

    gatt.server.irq(bad)
    assert gatt.write(gatt.control, b"b")[2] == 0
    assert gatt.server.gatts_read(gatt.control) == b"b"
    assert "Unhandled exception in IRQ callback handler" in capsys.readouterr().err


def test_notify_of_the_stored_value_asks_the_handler_first(gatt: Gatt) -> None:
    """NimBLE reads the stored value through the access callback with conn 65535: the
    handler gets READ_REQUEST(65535, h) before the call returns and may refresh the value;
    a non-zero answer aborts the send with OSError(-9) (SPEC 1.14)."""
    gatt.server.gatts_write(gatt.tx, b"stale")
    gatt.rs.on_read = lambda conn, handle: gatt.server.gatts_write(handle, b"fresh")
    gatt.server.gatts_notify(gatt.s_conn, gatt.tx)
    assert gatt.rs.of(IRQ_GATTS_READ_REQUEST)[-1] == (0xFFFF, gatt.tx)
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY) == (gatt.c_conn, gatt.tx, b"fresh")
    gatt.rs.on_read = None
    gatt.rs.answers[gatt.tx] = 1
    with pytest.raises(OSError) as refused:
        gatt.server.gatts_notify(gatt.s_conn, gatt.tx)
    assert refused.value.errno == -9 and str(refused.value) == "-9"
    gatt.rs.answers.clear()
    gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"explicit")  # no read request for data
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY, count=2)[2] == b"explicit"
    assert len(gatt.rs.of(IRQ_GATTS_READ_REQUEST)) == 2
