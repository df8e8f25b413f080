"""Misbehaving peers: a raw Bumble device on the same simulated link does what no polite
stack would (oversized and malformed PDUs, unknown handles, floods, odd MTUs, indications
never confirmed, links dropped in the middle of procedures, broken advertising data).

Our instance must answer as NimBLE does, report every outcome through the documented
statuses, log nothing at ERROR (nothing escapes on the loop thread), never hang, and keep
its memory bounded.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_ENCRYPTION_UPDATE,
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_DESCRIPTOR_DONE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTS_INDICATE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
    IRQ_MTU_EXCHANGED,
    IRQ_PASSKEY_ACTION,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder, wait_until
from mpbluetooth.testing.lowlevel import on_loop
from mpbluetooth.uuid import UUID

from .gatt_setup import SERVICES, Server

#: Statuses of SPEC section 3 / docs/design.md.
LINK_LOST = 7
BAD_DATA = 10
TIMEOUT = 13
ATT_INVALID_HANDLE = 0x01
ATT_INVALID_PDU = 0x04
HOSTILE_ADDRESS = "F1:00:00:00:00:01"


def run(coro: Coroutine[Any, Any, Any], what: str = "hostile peer") -> Any:
    """Run a coroutine on the stack's loop (where the raw Bumble device lives)."""
    return on_loop(lambda: coro, what, timeout=10)


class Hostile:
    """A raw Bumble ``Device`` with a simulated controller on the test's link."""

    def __init__(self, link: sim.Link) -> None:
        self.link = link
        self.device: Any = run(self._make())
        self.connection: Any = None

    async def _make(self) -> Any:
        from bumble.device import Device, DeviceConfiguration
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        from mpbluetooth.sim.controller import SimController

        self.controller = SimController(
            "hostile",
            link=self.link.bumble_link(),
            public_address=Address(HOSTILE_ADDRESS, Address.PUBLIC_DEVICE_ADDRESS),
        )
        host = Host(self.controller, AsyncPipeSink(self.controller))
        config = DeviceConfiguration(name="hostile", address=Address.generate_static_address())
        device = Device(config=config, host=host)
        await asyncio.wait_for(device.power_on(), 5)
        return device

    def connect_to(self, ours: BLE, rec: Recorder) -> int:
        """Connect to ``ours`` (advertising); return our side's connection handle."""
        from bumble.hci import Address

        before = len(rec.of(IRQ_CENTRAL_CONNECT))
        ours.gap_advertise(20000, b"\x02\x01\x06")
        addr = ours.config("mac")[1]

        async def go() -> Any:
            peer = Address(addr[::-1], Address.PUBLIC_DEVICE_ADDRESS)
            return await self.device.connect(peer, timeout=5)

        self.connection = run(go())
        return int(rec.wait(IRQ_CENTRAL_CONNECT, count=before + 1)[0])

    def accept_from(self, ours: BLE, rec: Recorder) -> int:
        """Advertise and let ``ours`` connect as central; return our connection handle."""
        before = len(rec.of(IRQ_PERIPHERAL_CONNECT))
        self.advertise(b"\x02\x01\x06")
        address = run(_address_of(self.device))
        ours.gap_connect(*address)
        handle = int(rec.wait(IRQ_PERIPHERAL_CONNECT, count=before + 1)[0])
        wait_until(lambda: bool(self.device.connections), what="the peer's connection")
        self.connection = next(iter(self.device.connections.values()))
        return handle

    def advertise(self, adv: bytes, resp: bytes = b"") -> None:
        run(
            self.device.start_advertising(
                advertising_data=adv,
                scan_response_data=resp,
                auto_restart=False,
                advertising_interval_min=20,
                advertising_interval_max=20,
            )
        )

    def request(self, pdu: Any) -> Any:
        """One ATT request to our server; the response PDU."""
        return run(self.connection.gatt_client.send_request(pdu))

    def send_raw(self, pdu: bytes) -> None:
        async def send() -> None:
            self.connection.gatt_client.send_gatt_pdu(pdu)

        run(send())

    def disconnect(self) -> None:
        run(self.connection.disconnect())

    def close(self) -> None:
        async def stop() -> None:
            for connection in list(self.device.connections.values()):
                await connection.disconnect()
            await self.device.power_off()
            self.controller.go_silent()
            if self.controller in self.link.bumble_link().controllers:
                self.link.bumble_link().remove_controller(self.controller)

        try:
            run(stop())
        except Exception:  # the test may have broken the link already
            pass


async def _address_of(device: Any) -> tuple[int, bytes]:
    address = device.random_address
    return int(address.address_type) & 1, bytes(address)[::-1]


@pytest.fixture
def ours(link: sim.Link, no_errors: None) -> Iterator[tuple[BLE, Server, Any]]:
    """Our instance with the test services registered: (ble, recorder, handles)."""
    ble = link.instance("ours")
    rec = Server()
    ble.irq(rec)
    ble.active(True)
    handles = ble.gatts_register_services(SERVICES)
    yield ble, rec, handles


@pytest.fixture
def hostile(link: sim.Link) -> Iterator[Hostile]:
    peer = Hostile(link)
    yield peer
    peer.close()


def still_works(ble: BLE, rec: Server, handle: int, peer: Hostile) -> None:
    """Our server still serves a read after whatever the peer did (when still connected)."""
    from bumble import att

    ble.gatts_write(handle, b"alive")
    response = peer.request(att.ATT_Read_Request(attribute_handle=handle))
    assert response.attribute_value == b"alive"


# --- server side: what a hostile client sends ------------------------------------------
def test_writes_longer_than_the_buffer_are_truncated(ours: Any, hostile: Hostile) -> None:
    from bumble import att

    ble, rec, handles = ours
    control, rx = handles[0][2], handles[1][0]
    hostile.connect_to(ble, rec)
    response = hostile.request(att.ATT_Exchange_MTU_Request(client_rx_mtu=517))
    assert response.server_rx_mtu == 256  # our config('mtu')
    rec.wait(IRQ_MTU_EXCHANGED)
    # A Write Request far longer than the 20-byte buffer: accepted, cut to the capacity.
    response = hostile.request(
        att.ATT_Write_Request(attribute_handle=control, attribute_value=b"w" * 250)
    )
    assert response.op_code == att.Opcode.ATT_WRITE_RESPONSE
    rec.wait(IRQ_GATTS_WRITE, lambda d: d[1] == control)
    assert ble.gatts_read(control) == b"w" * 20
    # Write Commands too, and an append buffer never grows past its capacity.
    ble.gatts_set_buffer(rx, 30, True)
    for _ in range(3):
        hostile.send_raw(
            bytes(att.ATT_Write_Command(attribute_handle=rx, attribute_value=b"c" * 250))
        )
    rec.wait(IRQ_GATTS_WRITE, lambda d: d[1] == rx, count=3)
    assert ble.gatts_read(rx) == b"c" * 30
    still_works(ble, rec, handles[2][0], hostile)


def test_unknown_handles_get_att_errors_and_raise_nothing(ours: Any, hostile: Hostile) -> None:
    from bumble import att

    ble, rec, handles = ours
    hostile.connect_to(ble, rec)
    before = list(rec.events)
    for pdu in (
        att.ATT_Read_Request(attribute_handle=0x0999),
        att.ATT_Read_Request(attribute_handle=0x0000),
        att.ATT_Read_Blob_Request(attribute_handle=0xFFFF, value_offset=0),
        att.ATT_Write_Request(attribute_handle=0x0999, attribute_value=b"x"),
        att.ATT_Write_Request(attribute_handle=0x0000, attribute_value=b"x"),
    ):
        response = hostile.request(pdu)
        assert response.op_code == att.Opcode.ATT_ERROR_RESPONSE, pdu
        assert response.error_code == ATT_INVALID_HANDLE, pdu
    hostile.send_raw(bytes(att.ATT_Write_Command(attribute_handle=0x0999, attribute_value=b"x")))
    ble.gatts_write(handles[2][0], b"barrier")  # a read round trip orders what came before
    hostile.request(att.ATT_Read_Request(attribute_handle=handles[2][0]))
    rec.wait(IRQ_GATTS_READ_REQUEST, lambda d: d[1] == handles[2][0])
    assert rec.events[len(before) :] == [
        (IRQ_GATTS_READ_REQUEST, (rec.of(IRQ_GATTS_READ_REQUEST)[-1][0], handles[2][0]))
    ]


@pytest.mark.parametrize(
    "pdu",
    [
        b"\x0a",  # Read Request without its handle
        b"\x12\x01",  # Write Request with half a handle
        b"\x08\x01\x00",  # Read By Type Request cut short
        b"\x04\x01",  # Find Information Request cut short
        b"\x02",  # Exchange MTU Request without the MTU
    ],
)
def test_malformed_requests_are_answered_invalid_pdu(
    ours: Any, hostile: Hostile, pdu: bytes
) -> None:
    ble, rec, handles = ours
    hostile.connect_to(ble, rec)
    got: list[bytes] = []
    client = hostile.connection.gatt_client
    original = client.on_gatt_pdu
    client.on_gatt_pdu = lambda response: got.append(bytes(response))
    hostile.send_raw(pdu)
    wait_until(lambda: bool(got), what="an answer to a malformed request")
    client.on_gatt_pdu = original
    # Error Response: request opcode, handle 0, Invalid PDU (as NimBLE answers).
    assert got == [bytes([0x01, pdu[0], 0, 0, ATT_INVALID_PDU])]
    still_works(ble, rec, handles[2][0], hostile)


def test_malformed_commands_and_unknown_opcodes_are_dropped(ours: Any, hostile: Hostile) -> None:
    ble, rec, handles = ours
    hostile.connect_to(ble, rec)
    for pdu in (b"", b"\x52", b"\x52\x01", b"\x1b", b"\xff\xff\xff", b"\x1d\x01", b"\xd2"):
        hostile.send_raw(pdu)
    still_works(ble, rec, handles[2][0], hostile)


def test_garbage_on_the_other_l2cap_channels_is_dropped(ours: Any, hostile: Hostile) -> None:
    """SMP and L2CAP signalling PDUs Bumble cannot parse are dropped with a warning."""
    ble, rec, handles = ours
    hostile.connect_to(ble, rec)
    from bumble.l2cap import L2CAP_LE_SIGNALING_CID
    from bumble.smp import SMP_CID

    async def send() -> None:
        manager = hostile.device.l2cap_channel_manager
        for cid, pdu in (
            (SMP_CID, b""),
            (SMP_CID, b"\x01"),  # Pairing Request cut short
            (SMP_CID, b"\x0b"),  # Security Request without its AuthReq
            (L2CAP_LE_SIGNALING_CID, b"\x14"),  # a credit-based request cut short
            (L2CAP_LE_SIGNALING_CID, b"\x16\x01\x04\x00\x40"),
            (0x0077, b"nobody listens"),
        ):
            manager.send_pdu(hostile.connection, cid, pdu)

    run(send())
    still_works(ble, rec, handles[2][0], hostile)


# --- client side: what a hostile server answers --------------------------------------------
def answer_with(hostile: Hostile, opcode_name: str, answer: Callable[[Any, Any], None]) -> None:
    """Make the hostile server handle one kind of request with ``answer(bearer, request)``."""
    setattr(hostile.device.gatt_server, f"on_{opcode_name}", answer)


def raw_answer(hostile: Hostile, pdu: bytes) -> Callable[[Any, Any], None]:
    def answer(bearer: Any, request: Any) -> None:
        hostile.device.gatt_server.send_gatt_pdu(bearer, pdu)

    return answer


@pytest.mark.parametrize(
    ("request_name", "start", "response", "done_event"),
    [
        # An Error Response cut short: the procedure ends with "malformed", at once.
        ("att_read_request", lambda b, c: b.gattc_read(c, 3), b"\x01\x0a", IRQ_GATTC_READ_DONE),
        # A Read By Group Type Response whose entries do not fit its length byte.
        (
            "att_read_by_group_type_request",
            lambda b, c: b.gattc_discover_services(c),
            b"\x11\x06\x01\x00\x05\x00\x00",
            IRQ_GATTC_SERVICE_DONE,
        ),
        # A characteristic declaration of an impossible length.
        (
            "att_read_by_type_request",
            lambda b, c: b.gattc_discover_characteristics(c, 1, 0xFFFF),
            b"\x09\x05\x02\x00\x02\x03",
            IRQ_GATTC_CHARACTERISTIC_DONE,
        ),
        # Descriptors in an unknown format.
        (
            "att_find_information_request",
            lambda b, c: b.gattc_discover_descriptors(c, 1, 20),
            b"\x05\x03\x02\x00\x02\x29",
            IRQ_GATTC_DESCRIPTOR_DONE,
        ),
        # A service found by UUID with half a handle range.
        (
            "att_find_by_type_value_request",
            lambda b, c: b.gattc_discover_services(c, UUID(0x180D)),
            b"\x07\x01\x00\x05",
            IRQ_GATTC_SERVICE_DONE,
        ),
        # Services going backwards.
        (
            "att_read_by_group_type_request",
            lambda b, c: b.gattc_discover_services(c),
            b"\x11\x06\x05\x00\x01\x00\x0d\x18",
            IRQ_GATTC_SERVICE_DONE,
        ),
    ],
)
def test_malformed_responses_end_the_procedure_with_bad_data(
    ours: Any,
    hostile: Hostile,
    request_name: str,
    start: Callable[[BLE, int], None],
    response: bytes,
    done_event: int,
) -> None:
    ble, rec, handles = ours
    conn = hostile.accept_from(ble, rec)
    answer_with(hostile, request_name, raw_answer(hostile, response))
    started = time.monotonic()
    start(ble, conn)
    done = rec.wait(done_event, timeout=3)
    assert done[0] == conn and done[-1] == BAD_DATA
    assert time.monotonic() - started < 2  # not Bumble's 30 s request timeout
    # A well-behaved procedure works afterwards on the same link.
    delattr(hostile.device.gatt_server, f"on_{request_name}")
    ble.gattc_read(conn, 3)
    assert rec.wait(IRQ_GATTC_READ_DONE, lambda d: d[2] == 0)[0] == conn


def test_notification_flood_is_bounded_and_counted(ours: Any, hostile: Hostile) -> None:
    """A server that notifies as fast as it can while our handler is stuck: the ring stays
    within rxbuf, drops are counted, memory does not grow with the flood, and everything
    works once the handler is back."""
    from bumble import att

    ble, rec, handles = ours
    mpbluetooth.set_rxbuf(1024, ble)
    conn = hostile.accept_from(ble, rec)
    stuck, release = threading.Event(), threading.Event()
    notified = []

    def handler(event: int, data: tuple[Any, ...]) -> Any:
        if event == IRQ_GATTC_NOTIFY:
            notified.append(bytes(data[2]))
            if not stuck.is_set():
                stuck.set()
                release.wait(10)
            return None
        return rec(event, data)

    ble.irq(handler)
    pdu = bytes(
        att.ATT_Handle_Value_Notification(attribute_handle=0x0025, attribute_value=b"n" * 20)
    )

    async def flood(count: int) -> None:
        queue = hostile.device.host.le_acl_packet_queue
        server = hostile.device.gatt_server
        for _ in range(count):
            while queue.pending >= 64:
                await asyncio.sleep(0.001)
            server.send_gatt_pdu(hostile.connection, pdu)
        while queue.pending:
            await asyncio.sleep(0.001)

    run(flood(50))
    assert stuck.wait(5)
    tracemalloc.start()
    try:
        run(flood(200))  # warm up: the ring is now full
        baseline = tracemalloc.get_traced_memory()[0]
        run(flood(2000), "a notification flood")
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    stats = mpbluetooth.irq_stats(ble)
    assert stats.queued_bytes <= 1024
    assert stats.dropped >= 2000
    assert grown < 256 * 1024, f"memory grew by {grown} bytes during the flood"
    release.set()
    wait_until(lambda: mpbluetooth.irq_stats(ble).queued == 0, what="the ring drained")
    assert set(notified) == {b"n" * 20}
    ble.irq(rec)
    ble.gattc_read(conn, 3)
    assert rec.wait(IRQ_GATTC_READ_DONE)[2] == 0


@pytest.mark.parametrize(
    ("offered", "ours_mtu", "agreed"), [(23, 256, 23), (517, 517, 517), (517, 256, 256)]
)
def test_mtu_extremes(
    ours: Any, hostile: Hostile, offered: int, ours_mtu: int, agreed: int
) -> None:
    from bumble import att

    ble, rec, handles = ours
    tx = handles[1][1]
    conn = hostile.connect_to(ble, rec)
    ble.config(mtu=ours_mtu)
    response = hostile.request(att.ATT_Exchange_MTU_Request(client_rx_mtu=offered))
    assert response.server_rx_mtu == ours_mtu
    assert rec.wait(IRQ_MTU_EXCHANGED) == (conn, agreed)
    got: list[bytes] = []
    hostile.connection.gatt_client.on_att_handle_value_notification = lambda n: got.append(
        bytes(n.attribute_value)
    )
    ble.gatts_notify(conn, tx, b"m" * 600)  # cut to MTU - 3
    wait_until(lambda: bool(got), what="the notification")
    assert got == [b"m" * (agreed - 3)]
    ble.gatts_write(tx, b"r" * 600)  # a read is cut to MTU - 1, with no long read
    value = hostile.request(att.ATT_Read_Request(attribute_handle=tx)).attribute_value
    assert value == b"r" * (agreed - 1)


def test_mtu_below_the_minimum_is_treated_as_23(ours: Any, hostile: Hostile) -> None:
    from bumble import att

    ble, rec, handles = ours
    conn = hostile.connect_to(ble, rec)
    hostile.request(att.ATT_Exchange_MTU_Request(client_rx_mtu=5))
    still_works(ble, rec, handles[2][0], hostile)
    got: list[bytes] = []
    hostile.connection.gatt_client.on_att_handle_value_notification = lambda n: got.append(
        bytes(n.attribute_value)
    )
    ble.gatts_notify(conn, handles[1][1], b"m" * 100)
    wait_until(lambda: bool(got), what="the notification")
    assert got == [b"m" * 20]


def test_unconfirmed_indication_ends_with_link_lost_when_the_peer_leaves(
    ours: Any, hostile: Hostile
) -> None:
    ble, rec, handles = ours
    conn = hostile.connect_to(ble, rec)
    hostile.connection.gatt_client.on_att_handle_value_indication = lambda pdu: None  # no ack
    ble.gatts_indicate(conn, handles[0][0], b"ack me")
    with pytest.raises(AssertionError):
        rec.wait(IRQ_GATTS_INDICATE_DONE, timeout=0.3)
    started = time.monotonic()
    hostile.disconnect()
    rec.wait(IRQ_CENTRAL_DISCONNECT)
    assert rec.wait(IRQ_GATTS_INDICATE_DONE, timeout=2) == (conn, handles[0][0], LINK_LOST)
    assert time.monotonic() - started < 1.0


def test_unconfirmed_indication_times_out_with_status_13(
    ours: Any, hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bumble.gatt_server

    monkeypatch.setattr(bumble.gatt_server, "GATT_REQUEST_TIMEOUT", 0.3)  # ATT's 30 s, shortened
    ble, rec, handles = ours
    conn = hostile.connect_to(ble, rec)
    hostile.connection.gatt_client.on_att_handle_value_indication = lambda pdu: None
    ble.gatts_indicate(conn, handles[0][0], b"ack me")
    assert rec.wait(IRQ_GATTS_INDICATE_DONE, timeout=3) == (conn, handles[0][0], TIMEOUT)


# --- links dropped in the middle of things --------------------------------------------
def drop_instead_of_answering(hostile: Hostile, request_name: str) -> None:
    def answer(bearer: Any, request: Any) -> None:
        asyncio.get_running_loop().create_task(hostile.connection.disconnect())

    answer_with(hostile, request_name, answer)


@pytest.mark.parametrize(
    ("request_name", "start", "done_event"),
    [
        (
            "att_read_by_group_type_request",
            lambda b, c: b.gattc_discover_services(c),
            IRQ_GATTC_SERVICE_DONE,
        ),
        (
            "att_read_by_type_request",
            lambda b, c: b.gattc_discover_characteristics(c, 1, 0xFFFF),
            IRQ_GATTC_CHARACTERISTIC_DONE,
        ),
        (
            "att_find_information_request",
            lambda b, c: b.gattc_discover_descriptors(c, 1, 9),
            IRQ_GATTC_DESCRIPTOR_DONE,
        ),
        ("att_read_request", lambda b, c: b.gattc_read(c, 3), IRQ_GATTC_READ_DONE),
        ("att_write_request", lambda b, c: b.gattc_write(c, 3, b"x", 1), 17),
    ],
)
def test_disconnect_in_the_middle_of_a_procedure(
    ours: Any,
    hostile: Hostile,
    request_name: str,
    start: Callable[[BLE, int], None],
    done_event: int,
) -> None:
    ble, rec, handles = ours
    conn = hostile.accept_from(ble, rec)
    drop_instead_of_answering(hostile, request_name)
    start(ble, conn)
    rec.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=2)
    done = rec.wait(done_event, timeout=2)
    assert done[0] == conn and done[-1] == LINK_LOST
    # Nothing is left busy: the same procedure runs against the next peer.
    hostile.close()
    peer = Hostile(hostile.link)
    try:
        conn = peer.accept_from(ble, rec)
        start(ble, conn)
        assert rec.wait(done_event, count=2, timeout=2)[-1] == 0
    finally:
        peer.close()


def test_disconnect_in_the_middle_of_a_pairing(ours: Any, hostile: Hostile) -> None:
    """The peer pairs with passkey entry and leaves while we are asked for the passkey."""
    from bumble import pairing

    ble, rec, handles = ours
    ble.config(io=2, mitm=True)  # keyboard only: we type what the peer displays
    conn = hostile.connect_to(ble, rec)
    delegate = pairing.PairingDelegate(
        io_capability=pairing.PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY
    )
    hostile.device.pairing_config_factory = lambda c: pairing.PairingConfig(
        sc=True, mitm=True, bonding=False, delegate=delegate
    )

    async def pair_then_leave() -> str:
        task = asyncio.ensure_future(hostile.connection.pair())
        while not rec.of(IRQ_PASSKEY_ACTION):
            await asyncio.sleep(0.005)
        await hostile.connection.disconnect()
        try:
            await task
        except BaseException as exc:
            return type(exc).__name__
        return "paired?"

    assert run(pair_then_leave()) != "paired?"
    assert rec.of(IRQ_PASSKEY_ACTION) == [(conn, 2, 0)]
    rec.wait(IRQ_CENTRAL_DISCONNECT)
    with pytest.raises(OSError) as info:
        ble.gap_passkey(conn, 2, 123456)  # the question went with the link
    assert info.value.errno == 2
    # A new link pairs normally.
    ble.config(io=3, mitm=False)
    hostile.device.pairing_config_factory = lambda c: pairing.PairingConfig(
        sc=True, mitm=False, bonding=False
    )
    conn = hostile.connect_to(ble, rec)
    run(hostile.connection.pair())
    assert rec.wait(IRQ_ENCRYPTION_UPDATE)[:2] == (conn, 1)


def test_disconnect_in_the_middle_of_an_l2cap_transfer(ours: Any, hostile: Hostile) -> None:
    from bumble import att, l2cap

    ble, rec, handles = ours
    ble.l2cap_listen(0x80, 512)
    conn = hostile.connect_to(ble, rec)

    async def half_an_sdu_then_leave() -> None:
        channel = await hostile.connection.create_l2cap_channel(
            l2cap.LeCreditBasedChannelSpec(psm=0x80, mtu=512, mps=100)
        )
        channel.send_pdu(struct.pack("<H", 500) + b"a" * 98)  # 98 of 500 bytes
        # Our host handles one link's ACL data in order: its answer to a later ATT request
        # is the evidence that it took in the half SDU before the link went.
        await hostile.connection.gatt_client.send_request(
            att.ATT_Find_Information_Request(starting_handle=1, ending_handle=1)
        )
        await hostile.connection.disconnect()

    run(half_an_sdu_then_leave())
    cid = rec.wait(IRQ_L2CAP_CONNECT)[1]
    assert rec.wait(IRQ_L2CAP_DISCONNECT) == (conn, cid, 0x80, 0)
    rec.wait(IRQ_CENTRAL_DISCONNECT)
    assert rec.of(IRQ_L2CAP_RECV) == []  # an incomplete SDU is never delivered
    with pytest.raises(OSError) as info:
        ble.l2cap_recvinto(conn, cid, bytearray(16))
    assert info.value.errno == 22


def test_disconnect_while_our_send_waits_for_credits(ours: Any, hostile: Hostile) -> None:
    """We send an SDU larger than the credits the peer gave; the peer never gives more
    and leaves: the channel closes with status 0, no SEND_READY, no hang."""

    ble, rec, handles = ours
    conn = hostile.accept_from(ble, rec)

    def server_no_credits(channel: Any) -> None:
        channel.on_pdu = lambda pdu: None  # swallow data, never return credits

    run(_listen(hostile, server_no_credits))
    ble.l2cap_connect(conn, 0x81, 512)
    cid = rec.wait(IRQ_L2CAP_CONNECT)[1]
    assert ble.l2cap_send(conn, cid, b"s" * 500) is False  # stalled
    with pytest.raises(OSError) as busy:
        ble.l2cap_send(conn, cid, b"more")
    assert busy.value.errno == 12  # ENOMEM first while stalled, then EBUSY, as NimBLE
    hostile.disconnect()
    assert rec.wait(IRQ_L2CAP_DISCONNECT) == (conn, cid, 0x81, 0)
    rec.wait(IRQ_PERIPHERAL_DISCONNECT)
    assert rec.of(IRQ_L2CAP_SEND_READY) == []


async def _listen(hostile: Hostile, on_channel: Callable[[Any], None]) -> None:
    from bumble import l2cap

    hostile.device.create_l2cap_server(
        l2cap.LeCreditBasedChannelSpec(psm=0x81, mtu=512, mps=100, max_credits=2),
        handler=on_channel,
    )


# --- advertising ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "adv",
    [
        b"\x05\x09ab",  # a length byte past the end
        b"\xff",  # a length byte with nothing after it
        b"\x00\x00\x00",  # zero-length structures
        b"\x02\x01",  # an AD type without its data
        bytes(range(31)),  # 31 bytes of nonsense
        b"",  # nothing at all
    ],
)
def test_malformed_advertising_data_is_delivered_exactly(
    ours: Any, hostile: Hostile, adv: bytes
) -> None:
    ble, rec, handles = ours
    hostile.advertise(adv, adv[::-1])
    addr_type, addr = run(_address_of(hostile.device))
    ble.gap_scan(0, 30000, 30000, True)
    seen = rec.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[2] == 0)
    response = rec.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[2] == 4)
    ble.gap_scan(None)
    assert seen == (addr_type, addr, 0, -50, adv)
    assert response[4] == adv[::-1]
    # And the peer is still connectable: the report did not upset anything.
    ble.gap_connect(addr_type, addr)
    rec.wait(IRQ_PERIPHERAL_CONNECT)
