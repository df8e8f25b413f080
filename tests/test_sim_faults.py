"""Faults on demand on an air-timed link: loss, range, forced disconnects, kills, RSSI;
in one process through ``sim.Link`` and across processes through a hub and ``sim-ctl``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_DISCONNECT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_WRITE,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import HubProcess, Recorder

from .conftest import ENV
from .test_hub import Peer
from .test_sim_timing import connect_at

PSM = 0x80


@pytest.fixture
def air() -> Iterator[sim.Link]:
    with sim.Link(timing="air", seed=7) as link:
        yield link


def _lost(link: sim.Link, a: BLE, b: BLE) -> int:
    ca, cb = link.controller_of(a), link.controller_of(b)
    for c in link.bumble_link().connections.values():
        if c.involves(ca) and c.involves(cb):
            return c.lost
    raise AssertionError("not connected")


def test_loss_delays_acknowledged_writes_but_loses_none(air: sim.Link) -> None:
    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, 7500)
    air.set_loss(0.10)
    for i in range(60):
        c.gattc_write(c_handle, value_handle, b"w%02d" % i, 1)
        done = rc.wait(IRQ_GATTC_WRITE_DONE, count=i + 1, timeout=5)
        assert done[2] == 0  # status: acknowledged
    writes = rp.of(IRQ_GATTS_WRITE)
    assert len(writes) == 60
    assert [p.gatts_read(value_handle)] == [b"w59"]
    # Some transmissions were lost and sent again.
    assert _lost(air, c, p) > 0


class _Sink:
    """The peripheral's side of an L2CAP channel: accepts, reads everything."""

    def __init__(self, ble: BLE) -> None:
        self.ble = ble
        self.received = bytearray()
        self.buf = bytearray(1024)
        self.cond = threading.Condition()

    def __call__(self, event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_L2CAP_RECV:
            conn, cid = data
            while n := self.ble.l2cap_recvinto(conn, cid, self.buf):
                with self.cond:
                    self.received += self.buf[:n]
                    self.cond.notify_all()

    def wait_for(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"got {len(self.received)} of {size} bytes")
                self.cond.wait(remaining)


def test_loss_never_loses_an_l2cap_byte(air: sim.Link) -> None:
    p, rp, c, rc, c_handle, p_handle, _ = connect_at(air, 7500)
    sink = _Sink(p)

    def on_p(event: int, data: tuple[Any, ...]) -> None:
        rp(event, data)
        sink(event, data)

    p.irq(on_p)
    p.l2cap_listen(PSM, 256)
    air.set_loss(0.10, c, p)
    c.l2cap_connect(c_handle, PSM, 256)
    cid = rc.wait(IRQ_L2CAP_CONNECT)[1]
    payload = bytes(range(256)) * 12  # 3072 bytes, 12 SDUs of 256
    for i in range(0, len(payload), 256):
        before = len(rc.of(IRQ_L2CAP_SEND_READY))
        if not c.l2cap_send(c_handle, cid, payload[i : i + 256]):
            rc.wait(IRQ_L2CAP_SEND_READY, count=before + 1, timeout=10)
    sink.wait_for(len(payload), timeout=20)
    assert bytes(sink.received) == payload
    assert _lost(air, c, p) > 0


def test_rssi_jitters_and_falls_with_distance(air: sim.Link) -> None:
    p, c = air.instance("beacon"), air.instance("scanner")
    rc = Recorder()
    c.irq(rc)
    p.active(True)
    c.active(True)
    p.gap_advertise(20_000, b"\x02\x01\x06")

    def rssis(n: int) -> list[int]:
        before = len(rc.of(IRQ_SCAN_RESULT))
        c.gap_scan(0, 30_000, 30_000, False)
        rc.wait(IRQ_SCAN_RESULT, count=before + n, timeout=5)
        c.gap_scan(None)
        return [d[3] for d in rc.of(IRQ_SCAN_RESULT)[before : before + n]]

    air.move(p, 0.0)
    air.move(c, 2.0)
    near = rssis(20)
    air.move(c, 50.0)
    far = rssis(20)
    assert len(set(near)) > 1 and len(set(far)) > 1  # per-packet jitter
    mean_near, mean_far = sum(near) / 20, sum(far) / 20
    # Free-space model: 40 dB at 1 m, 20 dB per decade: -46 dBm at 2 m, -74 dBm at 50 m.
    assert mean_near == pytest.approx(-46, abs=2.5)
    assert mean_far == pytest.approx(-74, abs=2.5)


def test_out_of_range_ends_the_link_at_the_supervision_timeout_unless_back(air: sim.Link) -> None:
    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, 30_000)
    parameters = air.connection_parameters(c, p)
    assert parameters is not None
    interval, _, timeout = parameters
    # Away for less than the timeout: the link survives and carries data again.
    air.out_of_range(p)
    time.sleep(timeout / 3)  # the fault's duration, not a synchronisation
    air.move(p, 0.0, 0.5)
    c.gattc_write(c_handle, value_handle, b"back", 1)
    assert rc.wait(IRQ_GATTC_WRITE_DONE, timeout=2)[2] == 0
    assert rc.of(IRQ_PERIPHERAL_DISCONNECT) == []
    # Away for good: both ends time out, reason 0x08.
    gone = time.monotonic()
    air.out_of_range(p)
    rc.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=timeout + 2)
    took = time.monotonic() - gone
    rp.wait(IRQ_CENTRAL_DISCONNECT, timeout=1)
    assert timeout - interval <= took <= timeout + 0.1, (took, timeout)
    assert air.disconnect_reasons(c) == [(c_handle, 0x08)]
    assert air.disconnect_reasons(p) == [(p_handle, 0x08)]


def test_forced_disconnect_carries_its_reason(air: sim.Link) -> None:
    p, rp, c, rc, c_handle, p_handle, _ = connect_at(air, 50_000)
    assert air.disconnect(c, p, 0x3D) is True
    rc.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=1)
    rp.wait(IRQ_CENTRAL_DISCONNECT, timeout=1)
    assert air.disconnect_reasons(c) == [(c_handle, 0x3D)]
    assert air.disconnect_reasons(p) == [(p_handle, 0x3D)]
    assert air.disconnect(c, p, 0x3D) is False


def test_faults_need_air_timing() -> None:
    with sim.Link(timing="instant") as link:
        a = link.instance()
        a.active(True)
        with pytest.raises(ValueError, match="air"):
            link.set_loss(0.1)
        with pytest.raises(ValueError, match="air"):
            link.move(a, 1.0)


# --- across processes --------------------------------------------------------------------


@pytest.fixture
def air_hub() -> Iterator[HubProcess]:
    hub = HubProcess("air")
    yield hub
    hub.stop()


def _ctl(hub: HubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth", "sim-ctl", "--hub", hub.spec, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextlib.contextmanager
def _connected_to_a_peer(hub: HubProcess) -> Iterator[tuple[BLE, Recorder, Peer]]:
    """An instance of this process on ``hub`` connecting (30 ms) to a peer process there;
    both closed afterwards."""
    ble = mpbluetooth.open(hub.spec, "local")
    recorder = Recorder()
    ble.irq(recorder)
    ble.active(True)
    peer = Peer(hub.spec)
    try:
        ble.gap_connect(peer.addr_type, peer.addr, 2000, 30_000, 30_000)
        yield ble, recorder, peer
    finally:
        peer.close()
        ble.close()


def test_killed_process_times_out_at_its_peer_through_an_air_hub(air_hub: HubProcess) -> None:
    """kill -9 of a peer: the survivor's DISCONNECT comes at the supervision timeout,
    reason 0x08, not at once."""
    with _connected_to_a_peer(air_hub) as (ble, recorder, peer):
        conn = recorder.wait(IRQ_PERIPHERAL_CONNECT)[0]
        listing = air_hub.control("list")
        assert listing["timing"] == "air"
        links = [c for m in listing["members"] for c in m["connections"]]
        timeout = links[0]["timeout_ms"] / 1000
        assert links[0]["interval_ms"] == pytest.approx(30.0)
        killed = time.monotonic()
        peer.proc.kill()
        assert recorder.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=timeout + 2)[0] == conn
        took = time.monotonic() - killed
        assert timeout - 0.030 <= took <= timeout + 0.2, (took, timeout)


def test_sim_ctl_sets_faults_and_kills_on_a_running_hub(air_hub: HubProcess) -> None:
    with _connected_to_a_peer(air_hub) as (ble, recorder, _):
        recorder.wait(IRQ_PERIPHERAL_CONNECT)
        listing = _ctl(air_hub, "list")
        assert listing.returncode == 0, listing.stderr
        names = [line.split()[0] for line in listing.stdout.splitlines()[1:] if line[:1] != " "]
        assert len(names) == 2 and "central of" in listing.stdout
        assert _ctl(air_hub, "loss", "0.2").returncode == 0
        assert _ctl(air_hub, "latency", "10", *names).returncode == 0
        assert _ctl(air_hub, "move", names[1], "5", "5").returncode == 0
        bad = _ctl(air_hub, "kill", "nobody")
        assert bad.returncode == 1 and "nobody" in bad.stderr
        # The peer's controller dies: our link ends at the supervision timeout.
        address = ble.config("mac")[1].hex(":")
        lines = listing.stdout.splitlines()
        ours = next(line.split()[0] for line in lines if address in line.lower())
        peer_name = next(n for n in names if n != ours)
        assert _ctl(air_hub, "kill", peer_name).returncode == 0
        recorder.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=5)
        after = air_hub.members()
        assert [m["name"] for m in after] == [ours]
