"""Faults: the transport dies, a handler blocks, many threads call at once, Ctrl-C.

Each test checks the three things a program relies on when something goes wrong: every
operation in flight ends with its documented event, later calls fail fast with a clear
``OSError``, and the instance (or the rest of the stack) keeps working afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import TransportError, sim
from mpbluetooth.constants import (
    IRQ_CENTRAL_DISCONNECT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_WRITE,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
)
from mpbluetooth.testing import HubProcess, wait_until
from mpbluetooth.testing.lowlevel import bumble_device, call_soon

from .conftest import ENV, connect, default_sigint
from .gatt_setup import SERVICES, Server

ENODEV = 19
SCAN_MS = 1500
#: How long the blocking handler blocks, in seconds.
BLOCK_S = 2.0
#: The GAP Device Name value in Bumble's default database.
GAP_NAME_HANDLE = 3
#: NimBLE's status for an operation ended by the loss of its link.
LINK_LOST = 7
#: GATT client procedures at once on MicroPython's NimBLE builds (BLE_GATT_MAX_PROCS).
MAX_PROCEDURES = 4


class Member:
    """One instance joined to a hub, with its recorder (a ``Server``: it answers reads)."""

    def __init__(self, spec: str, name: str) -> None:
        self.ble = mpbluetooth.open(spec, name)
        self.rec = Server()
        self.ble.irq(self.rec)
        self.ble.active(True)


# --- the transport dies ---------------------------------------------------------------------
def test_hub_killed_ends_every_link_and_operation_then_enodev_then_recovers(
    no_errors: None,
) -> None:
    hub = HubProcess()
    members = [Member(hub.spec, name) for name in ("p1", "c1", "p2", "c2")]
    p1, c1, p2, c2 = members
    try:
        handles = p1.ble.gatts_register_services(SERVICES)
        value = handles[0][0]
        c1_conn, p1_conn = connect(c1.ble, c1.rec, p1.ble, p1.rec)
        connect(c2.ble, c2.rec, p2.ble, p2.rec)
        # In flight when the hub dies: a read the server has not answered yet, an
        # indication the client will never confirm, a connect to nobody, a timed scan.
        asked, answer = threading.Event(), threading.Event()
        p1.rec.on_read = lambda *args: (asked.set(), answer.wait(5))
        c1.ble.gattc_read(c1_conn, value)
        assert asked.wait(5)  # the read request reached the server's handler
        c2.ble.gap_scan(SCAN_MS, 30000, 30000)
        scan_started = time.monotonic()
        p2.ble.gap_connect(0, bytes.fromhex("a0a1a2a3a4a5"), 0)
        hub.crash()
        answer.set()  # the server's handler returns; its answer goes nowhere

        # Every link reports its disconnection, every operation its outcome.
        p1.rec.wait(IRQ_CENTRAL_DISCONNECT, timeout=3)
        p2.rec.wait(IRQ_CENTRAL_DISCONNECT, timeout=3)
        c2.rec.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=3)
        c1.rec.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=3)
        assert c1.rec.wait(IRQ_GATTC_READ_DONE, timeout=3) == (c1_conn, value, LINK_LOST)
        assert p2.rec.wait(IRQ_PERIPHERAL_DISCONNECT, lambda d: d[0] == 65535, timeout=3) == (
            65535,
            255,
            bytes(6),
        )
        c2.rec.wait(IRQ_SCAN_DONE, timeout=3)
        for member in members:
            wait_until(lambda m=member: not m.ble.active(), what="inactive after the loss")

        # Later calls fail at once with ENODEV, saying why.
        started = time.monotonic()
        for call in (
            lambda: p1.ble.gap_advertise(100000),
            lambda: c1.ble.gattc_read(c1_conn, value),
            lambda: p1.ble.gatts_notify(p1_conn, value),
            lambda: p1.ble.gatts_write(value, b"x"),
            lambda: c1.ble.config("mac"),
            lambda: c1.ble.gap_connect(0, bytes(6)),
        ):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == ENODEV
            # The explanation is in the notes (a board prints only "[Errno 19] ENODEV").
            notes = " ".join(getattr(info.value, "__notes__", []))
            assert "lost" in notes and hub.spec in notes
        assert time.monotonic() - started < 1.0
        assert p1.ble.gatts_read(value) == b""  # never raises

        # While the hub is down, active(True) fails fast, naming the transport.
        with pytest.raises(TransportError) as down:
            p1.ble.active(True)
        assert hub.spec in str(down.value)

        # The hub comes back: every instance starts again and links work.
        revived = HubProcess(spec=hub.spec)
        try:
            for member in members:
                assert member.ble.active(True) is True
            handles = p1.ble.gatts_register_services(SERVICES)
            c1_conn, _ = connect(c1.ble, c1.rec, p1.ble, p1.rec)
            p1.rec.on_read = None
            p1.ble.gatts_write(handles[0][0], b"back")
            before = len(c1.rec.of(IRQ_GATTC_READ_DONE))
            c1.ble.gattc_read(c1_conn, handles[0][0])
            assert c1.rec.wait(IRQ_GATTC_READ_DONE, count=before + 1)[2] == 0
            assert c1.rec.of(IRQ_GATTC_READ_RESULT)[-1][2] == b"back"
            # The scan that ended with the transport left no timer behind: a new scan
            # runs past the old one's end.
            scans_done = len(c2.rec.of(IRQ_SCAN_DONE))
            c2.ble.gap_scan(0, 30000, 30000)
            time.sleep(max(0.0, scan_started + SCAN_MS / 1000 + 0.2 - time.monotonic()))
            assert len(c2.rec.of(IRQ_SCAN_DONE)) == scans_done
            c2.ble.gap_scan(None)
            assert len(c2.rec.of(IRQ_SCAN_DONE)) == scans_done + 1
        finally:
            for member in members:
                member.ble.close()
            revived.stop()
    finally:
        for member in members:
            member.ble.close()
        hub.stop()


class Proxy:
    """A TCP forwarder between one instance and the hub, whose connection we can cut."""

    def __init__(self, target_port: int) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.target_port = target_port
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        # Every connection is forwarded, so an instance whose stream was cut can start again.
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for pump, a, b in ((self._pump, client, upstream), (self._answer, upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def _answer(self, source: socket.socket, sink: socket.socket) -> None:
        """What the hub sends back to the instance."""
        self._pump(source, sink)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.cut()
        self.server.close()
        for sock in self.sockets:
            sock.close()


def test_tcp_transport_closed_disconnects_both_ends_and_instance_restarts(
    hub_spec: str, no_errors: None
) -> None:
    port = int(hub_spec.rsplit(":", 1)[1])
    proxy = Proxy(port)
    local = Member(f"tcp-client:127.0.0.1:{proxy.port}", "via-proxy")
    peer = Member(hub_spec, "peer")
    try:
        handles = peer.ble.gatts_register_services(SERVICES)
        conn, _ = connect(local.ble, local.rec, peer.ble, peer.rec)
        proxy.cut()
        local.rec.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=3)
        peer.rec.wait(IRQ_CENTRAL_DISCONNECT, timeout=3)  # the hub told the survivor
        wait_until(lambda: not local.ble.active(), what="inactive after the loss")
        with pytest.raises(OSError) as info:
            local.ble.gattc_read(conn, handles[0][0])
        notes = " ".join(getattr(info.value, "__notes__", []))
        assert info.value.errno == ENODEV and "lost" in notes
        # The instance starts again (through a fresh stream).
        assert local.ble.active(True) is True
        connect(local.ble, local.rec, peer.ble, peer.rec)
    finally:
        local.ble.close()
        peer.ble.close()
        proxy.close()


class SlowProxy(Proxy):
    """A ``Proxy`` whose answers from the hub each arrive ``delay`` seconds late: a
    controller that answers every command, slowly (as a hub starved of CPU does)."""

    delay = 0.6

    def _answer(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass


def test_power_on_waits_for_a_slow_controller(hub_spec: str, no_errors: None) -> None:
    """A controller that answers each of the power-on's commands late is waited for, even
    when the whole takes longer than 5 s (a silent one still fails after 5 s:
    test_lifecycle.py, "silent controller...")."""
    port = int(hub_spec.rsplit(":", 1)[1])
    slow = SlowProxy(port)
    slow_ble = mpbluetooth.open(f"tcp-client:127.0.0.1:{slow.port}", "slow")
    peer = Member(hub_spec, "peer")
    try:
        started = time.monotonic()
        assert slow_ble.active(True) is True
        assert time.monotonic() - started > 5.0  # longer than a limit for the whole
        rec = Server()
        slow_ble.irq(rec)
        connect(slow_ble, rec, peer.ble, peer.rec)  # it works, as any other instance
    finally:
        slow_ble.close()
        peer.ble.close()
        slow.close()


# --- a handler that blocks ------------------------------------------------------------------
def test_a_blocked_handler_drops_counted_events_while_stack_and_other_links_work(
    link: sim.Link, no_errors: None
) -> None:
    """The central's handler blocks for two seconds on the first notification of a
    flooding peripheral. Its ring fills and drops are counted, memory stays flat, and
    meanwhile its stack serves its other link both ways; then delivery resumes."""
    from .gatt_setup import make_gatt

    flood = make_gatt(link)  # flood.client is the instance whose handler will block
    blocked, rec = flood.client, flood.rc
    other, other_rec = link.instance("other"), Server()
    other.irq(other_rec)
    other.active(True)
    other_handles = other.gatts_register_services(SERVICES)
    my_conn, other_conn = connect(blocked, rec, other, other_rec)
    mpbluetooth.set_rxbuf(512, blocked)
    stuck, release = threading.Event(), threading.Event()

    def handler(event: int, data: tuple[Any, ...]) -> Any:
        if event == IRQ_GATTC_NOTIFY and not stuck.is_set():
            stuck.set()
            release.wait(BLOCK_S + 5)
        return rec(event, data)

    blocked.irq(handler)
    stop = threading.Event()

    def notify_forever() -> None:
        while not stop.is_set():
            try:
                flood.server.gatts_notify(flood.s_conn, flood.tx, b"f" * 20)
            except OSError as exc:
                assert exc.errno == 12  # ENOMEM: ACL buffers full, as on a board
                time.sleep(0.001)

    flooder = threading.Thread(target=notify_forever, daemon=True)
    flooder.start()
    try:
        assert stuck.wait(5)
        stuck_at = time.monotonic()
        tracemalloc.start()
        wait_until(lambda: mpbluetooth.irq_stats(blocked).dropped > 500, what="drops")
        baseline = tracemalloc.get_traced_memory()[0]
        # The stack and its other link work while the handler is stuck: the other side
        # reads our GAP name (no IRQ needed to answer), and our write reaches it. The
        # other instance's handler shares the process's one IRQ context, held by the
        # stuck handler (as on a board), so what arrives shows in its ring: the read's
        # RESULT and DONE, and the write's GATTS_WRITE.
        reads = len(other_rec.of(IRQ_GATTC_READ_DONE))
        queued = mpbluetooth.irq_stats(other).queued
        other.gattc_read(other_conn, GAP_NAME_HANDLE)
        blocked.gattc_write(my_conn, other_handles[0][2], b"still here", 1)
        wait_until(
            lambda: mpbluetooth.irq_stats(other).queued >= queued + 3,
            what=f"the other link's read result and write ({mpbluetooth.irq_stats(other)})",
            timeout=1,
        )
        time.sleep(max(0.0, stuck_at + BLOCK_S - time.monotonic()))  # the handler blocks on
        grown = tracemalloc.get_traced_memory()[0] - baseline
        stats = mpbluetooth.irq_stats(blocked)
        assert stats.queued_bytes <= 512 and stats.dropped > 1000
        assert grown < 512 * 1024, f"memory grew by {grown} bytes while the handler was stuck"
    finally:
        tracemalloc.stop()
        stop.set()
        flooder.join(5)
        release.set()
    # Delivery resumes: the write's outcome arrives and the ring drains.
    assert rec.wait(IRQ_GATTC_WRITE_DONE, timeout=5) == (my_conn, other_handles[0][2], 0)
    assert other_rec.wait(IRQ_GATTC_READ_DONE, count=reads + 1, timeout=5)[2] == 0
    assert other_rec.of(IRQ_GATTC_READ_RESULT)[-1][2] == b"MPY NIMBLE"
    other_rec.wait(IRQ_GATTS_WRITE, lambda d: d[1] == other_handles[0][2], timeout=5)
    assert other.gatts_read(other_handles[0][2]) == b"still here"
    wait_until(lambda: mpbluetooth.irq_stats(blocked).queued == 0, what="the ring drained")
    assert flood.read(flood.battery)[2] == 0


# --- many threads -----------------------------------------------------------------------
def test_eight_threads_calling_at_once_all_complete(link: sim.Link, no_errors: None) -> None:
    from .gatt_setup import make_gatt

    gatt = make_gatt(link)
    ops = 200
    done = [0] * 8
    procedures = [0] * 8  # reads and acknowledged writes started: each ends with its DONE
    failures: list[str] = []
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        try:
            start.wait(5)
            for n in range(ops):
                step = (index + n) % 8
                try:
                    if step == 0:
                        gatt.server.gatts_write(gatt.hr, b"%d.%d" % (index, n))
                    elif step == 1:
                        gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"n")
                    elif step == 2:
                        gatt.client.gattc_read(gatt.c_conn, gatt.battery)
                        procedures[index] += 1
                    elif step == 3:
                        gatt.client.gattc_write(gatt.c_conn, gatt.rx, b"w", n & 1)
                        procedures[index] += n & 1
                    elif step == 4:
                        assert gatt.server.config("mac") and gatt.client.config("mtu") == 256
                    elif step == 5:
                        gatt.server.gatts_read(gatt.hr)
                    elif step == 6:
                        gatt.client.gap_scan(None)  # waits on the dispatcher when scanning
                    else:
                        assert gatt.server.gap_disconnect(999) is False
                except OSError as exc:
                    if exc.errno != 12:  # ENOMEM: GATT procedures or ACL buffers busy
                        raise
                done[index] += 1
        except BaseException as exc:
            failures.append(f"thread {index}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "deadlock: threads still running"
    assert failures == []
    assert done == [ops] * 8
    # Everything the threads started has finished and the link is fine.
    # Every procedure the threads started ends; then no slot is left taken: as many reads
    # at once as a board allows all start.
    wait_until(
        lambda: (
            gatt.rc.count(IRQ_GATTC_READ_DONE) + gatt.rc.count(IRQ_GATTC_WRITE_DONE)
            >= sum(procedures)
        ),
        what="every procedure's outcome",
    )
    before = len(gatt.rc.of(IRQ_GATTC_READ_DONE))
    for _ in range(MAX_PROCEDURES):
        gatt.client.gattc_read(gatt.c_conn, gatt.battery)
    gatt.rc.wait(IRQ_GATTC_READ_DONE, count=before + MAX_PROCEDURES)
    assert gatt.read(gatt.battery)[2] == 0


# --- Ctrl-C -------------------------------------------------------------------------------
CTRL_C_SCRIPT = """
import threading, time
from mpbluetooth import sim
from tests.gatt_setup import make_gatt

gatt = make_gatt(sim.Link())
gatt.client.irq(lambda event, data: time.sleep(0.001))  # a handler that is always busy
print("flowing", flush=True)
while True:
    try:
        gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"x" * 20)
    except OSError:
        pass
"""


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_ctrl_c_while_events_flow_exits_promptly(delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env=ENV,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flowing"
        time.sleep(delay)  # let events flow for a while
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - interrupted
    assert took < 3.0, f"exit took {took:.2f} s"
    # CPython's ordinary exit on an uncaught KeyboardInterrupt (SIGINT re-raised: -2),
    # with one traceback from the main thread and nothing from the stack's threads.
    assert proc.returncode == -signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt")
    assert err.count("Traceback") == 1, err


# --- a handler slower than the peer ----------------------------------------------------------
def test_l2cap_data_that_arrived_before_the_close_is_still_readable(
    link: sim.Link, no_errors: None
) -> None:
    """The peer sends and closes at once while our handler is busy: the RECV events reach
    the handler after the channel has closed, and the data must still be readable (it
    was lost: recvinto raised EINVAL and a handler that drains in RECV died)."""
    a, b = link.instance("sender"), link.instance("receiver")
    ra, rb = Server(), Server()
    a.irq(ra)
    busy = threading.Event()
    got = bytearray()
    failures: list[BaseException] = []

    busy_started = threading.Event()

    def receiver(event: int, data: tuple[Any, ...]) -> Any:
        if event == IRQ_L2CAP_RECV:
            busy_started.set()
            busy.wait(5)
            buffer = bytearray(64)
            try:
                while n := b.l2cap_recvinto(data[0], data[1], buffer):
                    got.extend(buffer[:n])
            except OSError as exc:
                failures.append(exc)
        return rb(event, data)

    b.irq(receiver)
    a.active(True)
    b.active(True)
    conn, _ = connect(a, ra, b, rb)
    b.l2cap_listen(0x80, 256)
    a.l2cap_connect(conn, 0x80, 256)
    cid = ra.wait(IRQ_L2CAP_CONNECT)[1]
    # Two SDUs: both go on the credits we hold (one PDU each) while the handler is busy.
    sent = b"".join(bytes([n]) * 100 for n in range(2))
    assert a.l2cap_send(conn, cid, sent[:100]) is True
    assert a.l2cap_send(conn, cid, sent[100:]) is True
    wait_until(lambda: len(rb.of(IRQ_L2CAP_RECV)) == 0 and busy_started.is_set(), what="busy")
    queued = mpbluetooth.irq_stats(a).queued
    a.l2cap_disconnect(conn, cid)
    # The close has gone through both stacks once the sender's DISCONNECT is queued (its
    # handler shares the process's one IRQ context with the busy receiver's).
    wait_until(lambda: mpbluetooth.irq_stats(a).queued > queued, what="the channel closed")
    busy.set()
    ra.wait(IRQ_L2CAP_DISCONNECT)
    rb.wait(IRQ_L2CAP_DISCONNECT)
    assert failures == []
    assert bytes(got) == sent
    # Once the handler has seen the DISCONNECT, the channel is unknown.
    b_conn, b_cid = rb.of(IRQ_L2CAP_DISCONNECT)[0][:2]

    def forgotten() -> bool:
        try:
            b.l2cap_recvinto(b_conn, b_cid, None)  # what was left is still readable
        except OSError as exc:
            assert exc.errno == 22
            return True
        return False

    wait_until(forgotten, what="the closed channel forgotten")


# --- a link that drops between a call and its start ------------------------------------------
def test_read_or_write_started_as_the_link_drops_ends_at_once_with_link_lost(
    link: sim.Link, no_errors: None
) -> None:
    """``gattc_read``/``gattc_write`` check the link on the caller's thread and start on the
    loop. If the host learns of the disconnection in between, the procedure must end with
    status 7 at once (it waited for Bumble's 30 s request timeout: status 13)."""
    from bumble import hci

    from .gatt_setup import make_gatt

    gatt = make_gatt(link)
    device = bumble_device(gatt.client)
    gate, parked = threading.Event(), threading.Event()

    def park() -> None:  # holds the loop while the calls are checked and queued
        parked.set()
        gate.wait(5)

    call_soon(park)
    assert parked.wait(5)
    # Queued first: the host hears that the link is gone (as from the controller).
    event = hci.HCI_Disconnection_Complete_Event(
        status=0, connection_handle=gatt.c_conn, reason=hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
    )
    call_soon(device.host.on_hci_packet, event)
    # Checked now (the link still looks up), started after the disconnection.
    gatt.client.gattc_read(gatt.c_conn, gatt.battery)
    gatt.client.gattc_write(gatt.c_conn, gatt.control, b"x", 1)
    started = time.monotonic()
    gate.set()
    assert gatt.rc.wait(IRQ_GATTC_READ_DONE, timeout=3) == (gatt.c_conn, gatt.battery, LINK_LOST)
    assert gatt.rc.wait(IRQ_GATTC_WRITE_DONE, timeout=3) == (gatt.c_conn, gatt.control, LINK_LOST)
    assert time.monotonic() - started < 1.0
    # No procedure slot is left taken: four at once still work on a new link.
    gatt.server.active(False)
    gatt.server.active(True)
    gatt.client.active(False)
    gatt.client.active(True)
    handles = gatt.server.gatts_register_services(SERVICES)
    conn, _ = connect(gatt.client, gatt.rc, gatt.server, gatt.rs)
    for _ in range(4):
        gatt.client.gattc_read(conn, handles[2][0])
    wait_until(lambda: len(gatt.rc.of(IRQ_GATTC_READ_DONE)) == 5, what="four reads")
