"""Long lifecycles: hundreds of start/stop and connect/disconnect cycles leak nothing, and
the interpreter exits promptly whatever is still running.

Leaks are measured three ways after a warm-up: threads, open file descriptors, and
Python heap (tracemalloc) plus live Bumble objects (a leaked ``Device`` keeps its whole
host stack alive). RSS is reported with a loose tolerance, since the allocator keeps
freed arenas.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

from mpbluetooth import sim
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder, wait_until
from mpbluetooth.testing.lowlevel import bumble_device

from .conftest import ENV

CYCLES = 200
WARM_UP = 20
#: Tolerated growth over all the cycles (the first cycles warm caches; a leak of one
#: Bumble Device per cycle is ~60 KiB of heap, so 200 cycles would be ~12 MiB).
HEAP_TOLERANCE = 512 * 1024
RSS_TOLERANCE = 8 * 1024 * 1024


def counting() -> Recorder:
    """A handler that only counts events (keeping them would itself grow memory)."""
    return Recorder(keep=())


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def live(kind: str) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ == kind)


class Usage:
    """Threads, fds, heap, live Bumble Devices and RSS, measured around a loop."""

    def __enter__(self) -> Usage:
        gc.collect()
        self.threads, self.fds, self.devices, self.rss = (
            threading.active_count(),
            fds(),
            live("Device"),
            rss(),
        )
        tracemalloc.start()
        self.heap = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        gc.collect()
        self.heap_growth = tracemalloc.get_traced_memory()[0] - self.heap
        tracemalloc.stop()
        self.thread_growth = threading.active_count() - self.threads
        self.fd_growth = fds() - self.fds
        self.device_growth = live("Device") - self.devices
        self.rss_growth = rss() - self.rss

    def assert_flat(self) -> None:
        assert self.thread_growth == 0
        assert self.fd_growth == 0
        assert self.device_growth == 0, "Bumble Devices of stopped instances are still alive"
        assert self.heap_growth < HEAP_TOLERANCE, f"heap grew by {self.heap_growth} bytes"
        assert self.rss_growth < RSS_TOLERANCE, f"RSS grew by {self.rss_growth} bytes"


def test_200_active_cycles_leak_nothing(link: sim.Link, no_errors: None) -> None:
    ble = link.instance("cycles")
    handler = counting()
    ble.irq(handler)  # the secret-store questions at each start go through the ring too

    def cycle() -> None:
        assert ble.active(True)
        ble.gap_advertise(20000, b"\x02\x01\x06")
        ble.gap_scan(0)
        assert not ble.active(False)

    for _ in range(WARM_UP):
        cycle()
    with Usage() as usage:
        for _ in range(CYCLES):
            cycle()
    usage.assert_flat()


def test_a_stopped_instance_stops_advertising(link: sim.Link, no_errors: None) -> None:
    """Bumble's simulated controller went on advertising (and kept the instance alive
    through its timer) after ``active(False)``: peers saw a ghost."""
    ghost, scanner = link.instance("ghost"), link.instance("scanner")
    seen = counting()
    results: list[bytes] = []

    def handler(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_SCAN_RESULT:
            results.append(bytes(data[1]))
        seen(event, data)

    scanner.irq(handler)
    ghost.active(True)
    scanner.active(True)
    ghost.gap_advertise(20000, b"\x02\x01\x06")
    addr = ghost.config("mac")[1]
    ghost.active(False)
    scanner.gap_scan(300, 20000, 20000)
    seen.wait_count(IRQ_SCAN_DONE, 1)
    assert addr not in results


def test_200_connect_disconnect_cycles_leak_nothing(link: sim.Link, no_errors: None) -> None:
    peripheral, central = link.instance("p"), link.instance("c")
    on_p, on_c = counting(), counting()
    peripheral.irq(on_p)
    central.irq(on_c)
    peripheral.active(True)
    central.active(True)
    addr = peripheral.config("mac")
    conn_handles: set[int] = set()

    def cycle(n: int) -> None:
        peripheral.gap_advertise(20000, b"\x02\x01\x06")
        central.gap_connect(*addr)
        on_c.wait_count(IRQ_PERIPHERAL_CONNECT, n)
        on_p.wait_count(IRQ_CENTRAL_CONNECT, n)
        handle = next(iter(bumble_device(central).connections))
        conn_handles.add(handle)
        # Alternate which side ends the link.
        if n % 2:
            assert central.gap_disconnect(handle) is True
        else:
            assert peripheral.gap_disconnect(handle) is True
        on_c.wait_count(IRQ_PERIPHERAL_DISCONNECT, n)
        on_p.wait_count(IRQ_CENTRAL_DISCONNECT, n)

    for n in range(1, WARM_UP + 1):
        cycle(n)
    with Usage() as usage:
        for n in range(WARM_UP + 1, WARM_UP + CYCLES + 1):
            cycle(n)
    usage.assert_flat()
    assert on_c.counts[IRQ_PERIPHERAL_CONNECT] == on_c.counts[IRQ_PERIPHERAL_DISCONNECT]
    assert on_c.counts[IRQ_PERIPHERAL_CONNECT] == WARM_UP + CYCLES
    assert len(conn_handles) <= 2  # handles are reused, not exhausted
    wait_until(lambda: not bumble_device(central).connections, what="no links left")


BUSY_EXIT = """
import sys, threading, time
import mpbluetooth
from mpbluetooth import sim
from tests.gatt_setup import make_gatt

link = sim.Link()
gatt = make_gatt(link)
# A busy handler, an open L2CAP channel, an indication nobody confirms (the client
# instance is stopped by the flood thread's neighbour: see below), a notification flood,
# and an instance on a hub transport, all alive at exit.
gatt.client.irq(lambda event, data: time.sleep(0.002))
gatt.server.l2cap_listen(0x80, 512)
gatt.client.l2cap_connect(gatt.c_conn, 0x80, 512)
remote = mpbluetooth.open(sys.argv[1], "remote")
remote.active(True)
remote.gap_advertise(20000, b"\\x02\\x01\\x06")
gatt.client.gap_connect(*remote.config("mac"))

def flood():
    while True:
        try:
            gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"x" * 20)
            gatt.server.gatts_indicate(gatt.s_conn, gatt.hr, b"i")
        except OSError:
            time.sleep(0.001)

threading.Thread(target=flood, daemon=True).start()
time.sleep(0.2)
print("busy", flush=True)
"""


def test_exit_with_live_links_of_every_kind_is_prompt(hub_spec: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_EXIT, hub_spec],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "busy"
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - started
    assert took < 2.0, f"exit took {took:.2f} s"
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Unhandled exception" not in err, err


def test_instances_made_and_discarded_leak_no_threads(link: sim.Link) -> None:
    """Each instance has a dispatcher thread; closing it ends the thread."""
    before = threading.active_count()
    for n in range(20):
        ble = link.instance(f"short{n}")
        ble.active(True)
        ble.close()
    wait_until(lambda: threading.active_count() == before, what="dispatchers to end")
