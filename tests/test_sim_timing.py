"""Air timing of the simulated link, measured as a user sees it (``docs/simulation.md``).

Every test here runs on ``sim.Link(timing="air")``: connection events at the negotiated
interval, a bounded number of PDUs per event, advertising at interval + advDelay, scanners
hearing only in their window, supervision timeouts. Tolerances are stated per test; the
loop's own jitter on a loaded 2-core machine is a few milliseconds, so each upper bound
carries a fixed slack on top of the model's number.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mpbluetooth import sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_WRITE,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder
from mpbluetooth.uuid import UUID

FLAG_READ = 0x0002
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
SERVICE = UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
CHAR = UUID("6E400002-B5A3-F393-E0A9-E50E24DCCA9E")

#: Seconds of scheduling slack allowed on top of the model's numbers (loop and GIL jitter).
SLACK = 0.030


def _all_but_one_stall(samples: list[float], upper: float) -> bool:
    """Every sample within ``upper``, save at most one: on two loaded cores one sample in a
    dozen can meet a stall of the whole process (36 ms seen in CI) that no model would make.
    A model that is too slow exceeds the bound in most samples, not one."""
    return sum(took > upper for took in samples) <= 1


@pytest.fixture
def air() -> Iterator[sim.Link]:
    with sim.Link(timing="air", seed=1) as link:
        yield link


def _pair(link: sim.Link) -> tuple[BLE, Recorder, BLE, Recorder]:
    p, c = link.instance("p"), link.instance("c")
    rp, rc = Recorder(), Recorder()
    p.irq(rp)
    c.irq(rc)
    p.active(True)
    c.active(True)
    return p, rp, c, rc


def connect_at(
    link: sim.Link, interval_us: int
) -> tuple[BLE, Recorder, BLE, Recorder, int, int, int]:
    """A peripheral with one read/write/notify characteristic, and a central connected at
    ``interval_us``; returns the instances, their recorders, the handles and the value handle."""
    p, rp, c, rc = _pair(link)
    ((value_handle,),) = p.gatts_register_services(
        ((SERVICE, ((CHAR, FLAG_READ | FLAG_WRITE | FLAG_NOTIFY),)),)
    )
    p.gap_advertise(20000, b"\x02\x01\x06")
    c.gap_connect(*p.config("mac"), 2000, interval_us, interval_us)
    c_handle = rc.wait(IRQ_PERIPHERAL_CONNECT)[0]
    p_handle = rp.wait(IRQ_CENTRAL_CONNECT)[0]
    return p, rp, c, rc, c_handle, p_handle, value_handle


def _round_trips(c: BLE, rc: Recorder, c_handle: int, value_handle: int, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.monotonic()
        c.gattc_write(c_handle, value_handle, bytes([i]), 1)
        rc.wait(IRQ_GATTC_WRITE_DONE, count=i + 1)
        times.append(time.monotonic() - start)
    return times


@pytest.mark.parametrize("interval_ms", [7.5, 50])
def test_write_with_response_takes_one_to_two_intervals(air: sim.Link, interval_ms: float) -> None:
    """Request at the next event (0-1 interval away), response at a later one (+1)."""
    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, int(interval_ms * 1000))
    interval = interval_ms / 1000
    times = _round_trips(c, rc, c_handle, value_handle, 12)
    assert len(rp.of(IRQ_GATTS_WRITE)) == 12
    assert min(times) >= interval * 0.9, times
    assert _all_but_one_stall(times, 2 * interval + SLACK), times
    # The phase of a request within the interval is spread out: on average ~1.5 intervals.
    mean = sum(times) / len(times)
    assert interval * 1.0 <= mean <= interval * 2.0 + SLACK, times


def test_notifications_go_at_the_per_event_bound(air: sim.Link) -> None:
    """100 one-PDU notifications at 7.5 ms: ceil(100 / pdus_per_event) events."""
    from mpbluetooth.sim.link import DEFAULT_PDUS_PER_EVENT

    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, 7500)
    start = time.monotonic()
    sent = 0
    while sent < 100:
        try:
            p.gatts_notify(p_handle, value_handle, b"n%03d" % sent)
        except OSError:
            time.sleep(0.001)  # ENOMEM: the controller's buffers are full, as on a board
            continue
        sent += 1
    rc.wait(IRQ_GATTC_NOTIFY, count=100, timeout=10)
    took = time.monotonic() - start
    events = -(-100 // DEFAULT_PDUS_PER_EVENT)
    expected = events * 0.0075
    assert expected * 0.85 <= took <= expected * 1.25 + SLACK, (took, expected)
    values = [bytes(d[2]) for d in rc.of(IRQ_GATTC_NOTIFY)]
    assert values == [b"n%03d" % i for i in range(100)]


def test_passive_scan_hears_only_in_its_window(air: sim.Link) -> None:
    """MicroPython's default scan (1.28 s interval, 11.25 ms window) and a 100 ms
    advertiser: an advertising event (every 100-110 ms) falls in a window with probability
    ~11.25 / 105 = 0.107, so one scanner needs ~12 s on average, as on air. Eight scanners
    at once, 6 s each: every result lies inside its scanner's window, and about half of
    them (1 - 0.893 ** 4.7 = 0.41 each) find the advertiser."""
    p = air.instance("beacon")
    p.active(True)
    p.gap_advertise(100_000, b"\x02\x01\x06\x05\x09beac")
    scanners = []
    for n in range(8):
        ble = air.instance(f"s{n}")
        rec = Recorder()
        ble.irq(rec)
        ble.active(True)
        scanners.append((ble, rec))
    starts: list[float] = []
    times: list[list[float]] = [[] for _ in scanners]

    def stamp(n: int, rec: Recorder) -> None:
        inner = rec.__call__

        def call(event: int, data: tuple[object, ...]) -> None:
            if event == IRQ_SCAN_RESULT:
                times[n].append(time.monotonic() - starts[n])
            inner(event, data)

        scanners[n][0].irq(call)

    for n, (_, rec) in enumerate(scanners):
        stamp(n, rec)
    for ble, _ in scanners:
        # Windows staggered by 1/8 of the interval (a pause, not a synchronisation), so the
        # scanners listen at different times, as independent devices would.
        starts.append(time.monotonic())
        ble.gap_scan(6000, 1_280_000, 11_250, False)
        time.sleep(0.16)
    for _, rec in scanners:
        rec.wait(IRQ_SCAN_DONE, timeout=10)
    found = [t for t in times if t]
    assert 1 <= len(found) <= 8, times
    for t in (x for ts in times for x in ts):
        phase = t % 1.28
        assert phase <= 0.01125 + SLACK or phase >= 1.28 - 0.005, times


def test_scan_with_window_equal_to_interval_finds_within_an_advertising_interval(
    air: sim.Link,
) -> None:
    p = air.instance("beacon")
    c = air.instance("scanner")
    rc = Recorder()
    c.irq(rc)
    p.active(True)
    c.active(True)
    p.gap_advertise(100_000, b"\x02\x01\x06")
    took = []
    for _ in range(5):
        before = len(rc.of(IRQ_SCAN_RESULT))
        start = time.monotonic()
        c.gap_scan(2000, 100_000, 100_000, False)
        rc.wait(IRQ_SCAN_RESULT, count=before + 1, timeout=3)
        took.append(time.monotonic() - start)
        c.gap_scan(None)
    assert _all_but_one_stall(took, 0.110 + SLACK), took


def test_killed_peer_ends_the_link_at_the_supervision_timeout(air: sim.Link) -> None:
    """Reason 0x08 after the supervision timeout, counted from the last connection event
    the peers shared: not before timeout - 1 interval, not later than timeout + slack."""
    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, 50_000)
    parameters = air.connection_parameters(c, p)
    assert parameters is not None
    interval, _, timeout = parameters
    assert interval == pytest.approx(0.050)
    killed = time.monotonic()
    air.kill(p)
    data = rc.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=5)
    took = time.monotonic() - killed
    assert data[0] == c_handle
    assert timeout - interval <= took <= timeout + SLACK, (took, timeout)
    assert rp.wait(IRQ_CENTRAL_DISCONNECT, timeout=1)[0] == p_handle


def test_active_false_disconnects_the_peer_as_on_air(air: sim.Link) -> None:
    p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(air, 50_000)
    start = time.monotonic()
    p.active(False)
    data = rc.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=2)
    took = time.monotonic() - start
    assert data[0] == c_handle
    assert data[0] == c_handle and took <= 0.100 + SLACK + 0.05, took


def test_gap_disconnect_takes_an_event() -> None:
    """The peer hears LL_TERMINATE_IND at the next connection event: within one 50 ms
    interval. Three links, so that one stall of the whole process cannot fail it."""
    took_peer = []
    for seed in (1, 2, 3):
        with sim.Link(timing="air", seed=seed) as link:
            p, rp, c, rc, c_handle, p_handle, value_handle = connect_at(link, 50_000)
            start = time.monotonic()
            assert c.gap_disconnect(c_handle)
            rp.wait(IRQ_CENTRAL_DISCONNECT, timeout=2)
            took_peer.append(time.monotonic() - start)
            rc.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=2)
    assert min(took_peer) >= 0, took_peer
    assert _all_but_one_stall(took_peer, 0.050 + SLACK), took_peer
