"""L2CAP connection-oriented channels between two simulated instances."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mpbluetooth import _l2cap_early
from mpbluetooth._runtime import runtime
from mpbluetooth.ble import BLE, set_l2cap_multichannel
from mpbluetooth.constants import (
    EALREADY,
    EBUSY,
    EINVAL,
    ENODEV,
    ENOMEM,
    ENOTCONN,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_L2CAP_ACCEPT,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
    IRQ_PERIPHERAL_DISCONNECT,
)
from mpbluetooth.testing import DEFAULT_TIMEOUT as WAIT
from mpbluetooth.testing import Recorder, wait_until

from .conftest import connect

# The same scenarios on our simulator and on RootCanal (tests/conftest.py, `link`).
pytestmark = pytest.mark.engines("sim", "rootcanal")

PSM = 0x80
#: Bytes echoed both ways: 100 kB on our simulator; on RootCanal, which moves a few
#: PDUs per connection event, 25 kB already stalls the sender many times (and takes 5 s,
#: where 100 kB took 21).
ECHO_BYTES = {"sim": 100_000, "rootcanal": 25_000}


@pytest.fixture
def linked(
    pair: tuple[BLE, Recorder, BLE, Recorder],
) -> tuple[BLE, Recorder, int, BLE, Recorder, int]:
    """a (central) connected to b (peripheral), b listening on PSM 0x80."""
    a, ra, b, rb = pair
    ca, cb = connect(a, ra, b, rb)
    b.l2cap_listen(PSM, 128)
    return a, ra, ca, b, rb, cb


def open_channel(
    a: BLE, ra: Recorder, ca: int, rb: Recorder, mtu: int = 64
) -> tuple[int, int, tuple[Any, ...], tuple[Any, ...]]:
    """Connect a channel from a; return (a's cid, b's cid, a's CONNECT, b's CONNECT)."""
    count_a, count_b = len(ra.of(IRQ_L2CAP_CONNECT)), len(rb.of(IRQ_L2CAP_CONNECT))
    a.l2cap_connect(ca, PSM, mtu)
    on_a = ra.wait(IRQ_L2CAP_CONNECT, count=count_a + 1)
    on_b = rb.wait(IRQ_L2CAP_CONNECT, count=count_b + 1)
    return on_a[1], on_b[1], on_a, on_b


def test_connect_reports_both_mtus_on_both_sides_after_accept(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int],
) -> None:
    a, ra, ca, b, rb, cb = linked
    cid_a, cid_b, on_a, on_b = open_channel(a, ra, ca, rb, mtu=64)
    assert on_a == (ca, cid_a, PSM, 64, 128)
    assert on_b == (cb, cid_b, PSM, 128, 64)
    assert rb.of(IRQ_L2CAP_ACCEPT) == [(cb, cid_b, PSM, 128, 64)]
    assert all(type(v) is int for v in on_a + on_b)


def test_mtu_is_clamped_to_32(linked: tuple[BLE, Recorder, int, BLE, Recorder, int]) -> None:
    a, ra, ca, b, rb, cb = linked
    _, _, on_a, on_b = open_channel(a, ra, ca, rb, mtu=10)
    assert on_a[3] == 32 and on_b[4] == 32


def test_rejected_accept_gives_the_connecting_side_a_failed_disconnect(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int],
) -> None:
    a, ra, ca, b, rb, cb = linked

    def refuse(event: int, data: tuple[Any, ...]) -> Any:
        rb(event, data)
        return 1 if event == IRQ_L2CAP_ACCEPT else None

    b.irq(refuse)
    a.l2cap_connect(ca, PSM, 64)
    conn, cid, psm, status = ra.wait(IRQ_L2CAP_DISCONNECT)
    assert (conn, psm) == (ca, PSM) and status != 0
    assert status == 6  # NimBLE's answer for "no resources", the default refusal
    assert len(rb.of(IRQ_L2CAP_ACCEPT)) == 1
    assert rb.of(IRQ_L2CAP_CONNECT) == [] and ra.of(IRQ_L2CAP_CONNECT) == []
    # The refusal left nothing behind: the next request on the same link is accepted.
    b.irq(rb)
    open_channel(a, ra, ca, rb)


def test_listen_registers_in_the_call_without_the_stacks_thread(
    pair: tuple[BLE, Recorder, BLE, Recorder],
) -> None:
    """NimBLE's ble_l2cap_create_server registers the PSM inside the call, so a request
    the stack handles right after ``l2cap_listen`` returns finds it, however busy the
    stack's thread was: here it is held busy for the whole call, which still returns at
    once, and the channel then opens."""
    a, ra, b, rb = pair
    ca, cb = connect(a, ra, b, rb)
    gate = threading.Event()
    runtime().loop.call_soon_threadsafe(gate.wait, WAIT)  # the loop thread is held
    try:
        started = time.monotonic()
        b.l2cap_listen(PSM, 128)
        took = time.monotonic() - started
    finally:
        gate.set()
    assert took < WAIT / 2  # it did not wait for the held thread
    _, cid_b, _, on_b = open_channel(a, ra, ca, rb)
    assert on_b == (cb, cid_b, PSM, 128, 64)


def test_a_request_that_overtakes_the_listen_waits_for_it(
    pair: tuple[BLE, Recorder, BLE, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that listens as soon as it has seen its connect event is in time on a
    board (the peer's request needs a connection event). Here the peer's request reaches
    the peripheral before its program listens, and is accepted once it does, not refused
    for an unknown PSM. (The wait is stretched so that no timing decides the test.)"""
    monkeypatch.setattr(_l2cap_early, "GRACE_S", WAIT)
    a, ra, b, rb = pair
    ca, cb = connect(a, ra, b, rb)
    a.l2cap_connect(ca, PSM, 64)
    wait_until(lambda: b._l2cap.early.parked, what="the request held at b")
    b.l2cap_listen(PSM, 128)
    on_a = ra.wait(IRQ_L2CAP_CONNECT)
    assert on_a[0] == ca and on_a[2:] == (PSM, 64, 128)
    assert rb.wait(IRQ_L2CAP_CONNECT)[0] == cb and len(rb.of(IRQ_L2CAP_ACCEPT)) == 1
    assert ra.of(IRQ_L2CAP_DISCONNECT) == []


def test_a_held_request_is_refused_when_the_program_never_listens(
    pair: tuple[BLE, Recorder, BLE, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait ends: the request is refused as an unknown PSM (8), no sooner than the
    program's grace after its connect event, and the link keeps working."""
    monkeypatch.setattr(_l2cap_early, "GRACE_S", 0.5)
    a, ra, b, rb = pair
    ca, cb = connect(a, ra, b, rb)
    told = time.monotonic()
    a.l2cap_connect(ca, PSM, 64)
    assert ra.wait(IRQ_L2CAP_DISCONNECT)[2:] == (PSM, 8)  # BLE_HS_ENOTSUP
    assert time.monotonic() - told >= 0.5
    assert b._l2cap.early.parked == []
    b.l2cap_listen(PSM, 128)
    open_channel(a, ra, ca, rb)


def test_unknown_psm_is_refused(linked: tuple[BLE, Recorder, int, BLE, Recorder, int]) -> None:
    a, ra, ca, b, rb, cb = linked
    a.l2cap_connect(ca, PSM + 2, 64)
    assert ra.wait(IRQ_L2CAP_DISCONNECT)[2:] == (PSM + 2, 8)  # BLE_HS_ENOTSUP
    assert rb.of(IRQ_L2CAP_ACCEPT) == []


@pytest.mark.parametrize("closer", ["connector", "acceptor"])
def test_disconnect_from_either_side_then_reopen_on_the_same_link(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int], closer: str
) -> None:
    a, ra, ca, b, rb, cb = linked
    for round_ in range(1, 4):
        cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb)
        if closer == "connector":
            a.l2cap_disconnect(ca, cid_a)
        else:
            b.l2cap_disconnect(cb, cid_b)
        assert ra.wait(IRQ_L2CAP_DISCONNECT, count=round_) == (ca, cid_a, PSM, 0)
        assert rb.wait(IRQ_L2CAP_DISCONNECT, count=round_) == (cb, cid_b, PSM, 0)
        with pytest.raises(OSError) as info:
            a.l2cap_send(ca, cid_a, b"late")
        assert info.value.errno == EINVAL


def test_a_send_then_an_immediate_disconnect_keep_their_order(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int],
) -> None:
    # l2cap_send returns before the SDU is handed to the stack; the disconnect that
    # follows on the same thread must still close the channel after the SDU went out.
    a, ra, ca, b, rb, cb = linked
    cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb)
    seen: list[tuple[str, Any]] = []

    def on_b(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_RECV:
            buf = bytearray(64)
            seen.append(("recv", bytes(buf[: b.l2cap_recvinto(data[0], data[1], buf)])))
        elif event == IRQ_L2CAP_DISCONNECT:
            seen.append(("disconnect", data[3]))
        rb(event, data)

    b.irq(on_b)
    for round_ in range(1, 21):
        assert a.l2cap_send(ca, cid_a, b"last words") is True
        a.l2cap_disconnect(ca, cid_a)
        rb.wait(IRQ_L2CAP_DISCONNECT, count=round_)
        assert seen == [("recv", b"last words"), ("disconnect", 0)], f"round {round_}"
        seen.clear()
        ra.wait(IRQ_L2CAP_DISCONNECT, count=round_)
        cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb)


def test_two_threads_sending_on_one_channel_corrupt_nothing(
    pair: tuple[BLE, Recorder, BLE, Recorder],
) -> None:
    """l2cap_send answers on the caller's thread and hands the SDU over later; with two
    threads sending on one channel (a program streaming from its main thread while its
    handler replies), every SDU must still arrive whole and in each thread's order. The
    switch interval is shortened so that the threads interleave at almost every step."""
    a, ra, b, rb = pair
    ca, cb = connect(a, ra, b, rb)
    b.l2cap_listen(PSM + 1, 512)  # MPS 247: a 300-byte SDU takes 2 PDUs, 3 credits
    a.l2cap_connect(ca, PSM + 1, 512)
    cid_a = ra.wait(IRQ_L2CAP_CONNECT)[1]
    cid_b = rb.wait(IRQ_L2CAP_CONNECT)[1]
    stream = bytearray()
    ready = threading.Event()
    buf = bytearray(2048)

    def on_b(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_RECV:
            while n := b.l2cap_recvinto(cb, cid_b, buf):
                stream.extend(buf[:n])
        rb(event, data)

    def on_a(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_SEND_READY:
            ready.set()
        ra(event, data)

    b.irq(on_b)
    a.irq(on_a)
    per_thread, failures = 400, []

    def sdu(tid: int, seq: int) -> bytes:
        size = 40 + (seq * 37 + tid * 101) % 260
        return (
            bytes([tid])
            + seq.to_bytes(2, "little")
            + bytes((tid + seq + i) % 251 for i in range(size))
        )

    def sender(tid: int) -> None:
        try:
            for seq in range(per_thread):
                while True:
                    try:
                        sent_now = a.l2cap_send(ca, cid_a, sdu(tid, seq))
                    except OSError as exc:
                        assert exc.errno in (ENOMEM, EBUSY)  # ENOMEM first, as NimBLE
                        time.sleep(0.0002)
                        continue
                    if not sent_now:
                        assert ready.wait(WAIT), "no SEND_READY after a False"
                        ready.clear()
                    break
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=sender, args=(tid,)) for tid in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    expected = {tid: [sdu(tid, seq) for seq in range(per_thread)] for tid in (1, 2)}
    total = sum(len(x) for sdus in expected.values() for x in sdus)
    wait_until(lambda: len(stream) >= total, what=f"{total} bytes")
    assert rb.of(IRQ_L2CAP_DISCONNECT) == []
    # Each thread's SDUs, in its order, each whole: the stream is their interleaving.
    got: dict[int, list[bytes]] = {1: [], 2: []}
    at = 0
    while at < len(stream):
        tid, seq = stream[at], int.from_bytes(stream[at + 1 : at + 3], "little")
        assert tid in got and seq == len(got[tid]), f"SDU out of place at byte {at}"
        whole = expected[tid][seq]
        assert bytes(stream[at : at + len(whole)]) == whole, f"SDU {tid}/{seq} corrupted"
        got[tid].append(whole)
        at += len(whole)
    assert got == expected


def test_link_loss_closes_the_channel_on_both_sides(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int],
) -> None:
    a, ra, ca, b, rb, cb = linked
    cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb)
    a.gap_disconnect(ca)
    assert ra.wait(IRQ_L2CAP_DISCONNECT) == (ca, cid_a, PSM, 0)
    assert rb.wait(IRQ_L2CAP_DISCONNECT) == (cb, cid_b, PSM, 0)
    ra.wait(IRQ_PERIPHERAL_DISCONNECT)
    rb.wait(IRQ_CENTRAL_DISCONNECT)


def test_credits_come_back_only_when_the_receiver_has_drained(
    linked: tuple[BLE, Recorder, int, BLE, Recorder, int],
) -> None:
    a, ra, ca, b, rb, cb = linked
    cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb)
    # b's MTU 128 fits in one PDU, so b grants one credit at a time.
    assert a.l2cap_send(ca, cid_a, b"first") is True
    assert a.l2cap_send(ca, cid_a, b"second") is False  # stalled, but queued
    # While stalled NimBLE answers ENOMEM once (its SDU pool is empty), then EBUSY.
    for expected in (ENOMEM, EBUSY, EBUSY):
        with pytest.raises(OSError) as info:
            a.l2cap_send(ca, cid_a, b"third")
        assert type(info.value) is OSError and info.value.errno == expected
    rb.wait(IRQ_L2CAP_RECV)
    assert b.l2cap_recvinto(cb, cid_b, None) == 5
    small = bytearray(3)
    assert b.l2cap_recvinto(cb, cid_b, small) == 3 and small == b"fir"
    assert ra.of(IRQ_L2CAP_SEND_READY) == []  # not drained yet: no credits for a
    rest = bytearray(10)
    assert b.l2cap_recvinto(cb, cid_b, rest) == 2 and rest[:2] == b"st"
    assert ra.wait(IRQ_L2CAP_SEND_READY) == (ca, cid_a, 0)
    rb.wait(IRQ_L2CAP_RECV, count=2)
    buf = bytearray(20)
    assert b.l2cap_recvinto(cb, cid_b, buf) == 6 and buf[:6] == b"second"
    assert b.l2cap_recvinto(cb, cid_b, buf) == 0
    assert b.l2cap_recvinto(cb, cid_b, None) == 0


def test_argument_errors(linked: tuple[BLE, Recorder, int, BLE, Recorder, int]) -> None:
    a, ra, ca, b, rb, cb = linked
    cid_a, cid_b, _, _ = open_channel(a, ra, ca, rb, mtu=40)

    def errno_of(call: Any, *args: Any) -> int | None:
        try:
            call(*args)
        except OSError as exc:
            return exc.errno
        return None

    assert errno_of(a.l2cap_send, ca, cid_a, bytes(129)) == EINVAL  # > peer MTU (128)
    assert errno_of(a.l2cap_send, ca, cid_a, bytes(81)) == EINVAL  # > 2 x our MTU (40)
    assert errno_of(a.l2cap_send, ca, cid_a + 1, b"x") == EINVAL
    assert errno_of(a.l2cap_recvinto, ca + 1, cid_a, None) == EINVAL
    assert errno_of(a.l2cap_disconnect, ca, cid_a + 1) == EINVAL
    assert errno_of(b.l2cap_listen, PSM, 64) == EALREADY
    # a's channel holds its one slot (a board's limit); with the desktop-only switch on,
    # the link is looked up.
    assert errno_of(a.l2cap_connect, ca + 7, PSM, 64) == EALREADY
    set_l2cap_multichannel(True, a)
    assert errno_of(a.l2cap_connect, ca + 7, PSM, 64) == ENOTCONN
    with pytest.raises(TypeError):
        b.l2cap_recvinto(cb, cid_b, b"read-only")
    assert a.l2cap_send(ca, cid_a, "text") is True  # str is a buffer
    assert rb.wait(IRQ_L2CAP_RECV)[:2] == (cb, cid_b)
    b.active(False)
    assert errno_of(b.l2cap_listen, PSM, 64) == ENODEV


class Echo:
    """b's side: echo everything back, honouring stalls (as a MicroPython app would)."""

    def __init__(self, ble: BLE) -> None:
        self.ble = ble
        self.out = bytearray()
        self.stalled = False
        self.channel: tuple[int, int] | None = None
        self.peer_mtu = 0
        self.buf = bytearray(4096)

    def __call__(self, event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_CONNECT:
            self.channel = (data[0], data[1])
            self.peer_mtu = data[4]
        elif event == IRQ_L2CAP_RECV:
            conn, cid = data
            while n := self.ble.l2cap_recvinto(conn, cid, self.buf):
                self.out += self.buf[:n]
            self.pump()
        elif event == IRQ_L2CAP_SEND_READY:
            self.stalled = False
            self.pump()

    def pump(self) -> None:
        assert self.channel is not None
        while self.out and not self.stalled:
            chunk = bytes(self.out[: self.peer_mtu])
            del self.out[: len(chunk)]
            self.stalled = not self.ble.l2cap_send(*self.channel, chunk)


class Client:
    """a's side: collect what comes back; count stalls and send-ready events."""

    def __init__(self, ble: BLE) -> None:
        self.ble = ble
        self.received = bytearray()
        self.ready = threading.Event()
        self.ready_events = 0
        self.connected = threading.Event()
        self.channel = (0, 0)
        self.peer_mtu = 0
        self.buf = bytearray(4096)

    def __call__(self, event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_CONNECT:
            self.channel = (data[0], data[1])
            self.peer_mtu = data[4]
            self.connected.set()
        elif event == IRQ_L2CAP_RECV:
            while n := self.ble.l2cap_recvinto(*data, self.buf):
                self.received += self.buf[:n]
        elif event == IRQ_L2CAP_SEND_READY:
            self.ready_events += 1
            self.ready.set()


@pytest.fixture
def echo_pair(link: Any) -> Iterator[tuple[BLE, Client, BLE, Echo]]:
    a, b = link.instance("a"), link.instance("b")
    client, echo = Client(a), Echo(b)
    ra, rb = Recorder(), Recorder()
    a.irq(lambda e, d: (ra(e, d), client(e, d))[1])
    b.irq(lambda e, d: (rb(e, d), echo(e, d))[1])
    a.active(True)
    b.active(True)
    ca, _ = connect(a, ra, b, rb)
    b.l2cap_listen(PSM, 48)
    a.l2cap_connect(ca, PSM, 48)
    assert client.connected.wait(5)
    yield a, client, b, echo
    a.irq(None)
    b.irq(None)


def test_an_echo_comes_back_intact_both_ways_with_stalls(
    echo_pair: tuple[BLE, Client, BLE, Echo], link: Any
) -> None:
    a, client, b, echo = echo_pair
    size = ECHO_BYTES[getattr(link, "engine", "sim")]
    payload = os.urandom(size)
    stalls = 0
    offset = 0
    while offset < len(payload):
        chunk = payload[offset : offset + client.peer_mtu]
        offset += len(chunk)
        if not a.l2cap_send(*client.channel, chunk):
            stalls += 1
            assert client.ready.wait(5), "no SEND_READY after a stalled send"
            client.ready.clear()
    wait_until(lambda: len(client.received) >= size, timeout=30, what="the echo")
    assert bytes(client.received) == payload
    assert stalls > 0 and client.ready_events == stalls
