"""A real MicroPython as L2CAP listener on RootCanal, a central connecting at once: does it
accept, depending on the latency of MicroPython's bridge to RootCanal, on who the central
and the listener are, and on the machine's load?

    python tools/mp_bridge_latency.py ../shared/conformance/bin/micropython [--runs 3]
    python tools/mp_bridge_latency.py MICROPYTHON --listener ours --central ours --load 2

``ble_l2cap`` and ``perf_l2cap`` have no synchronisation between instance 0's
``l2cap_listen`` (right after ``_IRQ_CENTRAL_CONNECT``) and instance 1's ``l2cap_connect``
(right after ``_IRQ_PERIPHERAL_CONNECT``). On RootCanal, which has no connection events,
the request can reach the listener first and be refused (LE_PSM not supported). This tool
asks whose property that is: ours, or the test's on a controller this fast.

The listener is MicroPython's unix port (NimBLE), behind a bridge to RootCanal's TCP port
(``delayed``: a pseudo-terminal relayed to the port, as the conformance runner's;
``quick``: the same with TCP_QUICKACK set before each read, as our own transport does), or
an ``mpbluetooth-python`` on the port itself. The central is an ``mpbluetooth-python``, or
a second MicroPython behind a quick-ACK bridge. Without ``--listener``/``--central`` it runs
the three pairs of docs/rootcanal.md ("MicroPython as instance 0").

``--load N`` runs N processes that only compute while the pair runs, and stops them after.
They inherit the tool's priority: under ``nice`` they compete with the pair as equals (for
a load that outranks the pair, start busy loops outside the ``nice``).

``--timeline`` prints, per run, in milliseconds after the listener's LE Connection Complete:
when each side got its Connection Complete and its IRQ, when ``l2cap_listen`` returned, when
``l2cap_connect`` was called, and when the request left the central and reached the
listener. Times are the wall clock (``time.time()``), the one clock the processes share; for
our instances packet times come from their HCI traces (when the host's loop handled the
packet), for MicroPython from the bridge (when it relayed the bytes). A MicroPython's times
include its bridge (a thread of this tool); ours have none.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tty

from mpbluetooth.sim.rootcanal import RootCanal

#: The listener, the same program for both engines. Times are ``time.time()`` (the wall
#: clock, the one clock both processes and the HCI traces share).
PERIPHERAL = r"""
import bluetooth, machine, time
seen = {}
def irq(event, data):
    if event not in seen:
        seen[event] = time.time()
ble = bluetooth.BLE()
ble.active(1)
ble.irq(irq)
addr_type, addr = ble.config("mac")
print(addr_type, addr.hex())
ble.gap_advertise(20000, b"\x02\x01\x06\x04\xffMPY")
while 1 not in seen:
    machine.idle()
ble.l2cap_listen(22, 450)
listened = time.time()
while 2 not in seen:
    machine.idle()
print("accepted" if 22 in seen else "refused")
print("times", seen[1], listened)
ble.active(0)
"""

#: The central, the same program for both engines: ``ADDR`` (type, hex) is prepended.
CENTRAL = r"""
import bluetooth, machine, time
seen = {}
def irq(event, data):
    if event not in seen:
        seen[event] = (data[0], time.time())
ble = bluetooth.BLE()
ble.active(1)
ble.irq(irq)
ble.gap_connect(ADDR[0], bytes.fromhex(ADDR[1]))
while 7 not in seen:
    machine.idle()
asked = time.time()
ble.l2cap_connect(seen[7][0], 22, 450)
start = time.ticks_ms()
while 23 not in seen and 24 not in seen and time.ticks_diff(time.ticks_ms(), start) < 10000:
    machine.idle()
ble.gap_disconnect(seen[7][0])
time.sleep_ms(200)
print("times", seen[7][1], asked)
ble.active(0)
"""

#: Bytes that mark the packets of the timeline, inside an H4 stream or an HCI trace record:
#: LE Connection Complete (legacy or enhanced, status 0), and an LE Credit Based Connection
#: Request for PSM 22 (signalling CID 5, code 0x14, length 10).
CONNECTED = (b"\x3e\x13\x01\x00", b"\x3e\x1f\x0a\x00")
REQUEST = b"\x05\x00\x14"
REQUEST_TAIL = b"\x0a\x00\x16\x00"

#: btsnoop's microseconds at 2000-01-01 (Bumble's anchor), and that date in Unix time.
BTSNOOP_2000 = 0x00E03AB44A676000
UNIX_2000 = 946684800


class Stream:
    """What went one way through a bridge: the bytes, and when each read ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.marks: list[tuple[int, float]] = []

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self.marks.append((len(self.data), time.time()))


def request_at(data: bytes | bytearray) -> int:
    """Where the L2CAP request for PSM 22 ends in ``data`` (-1: not there)."""
    at = data.find(REQUEST)
    while at >= 0:
        if data[at + 4 : at + 8] == REQUEST_TAIL:
            return at + 8
        at = data.find(REQUEST, at + 1)
    return -1


def bridge(port: int, quickack: bool) -> tuple[str, list[int], Stream, Stream]:
    """A pseudo-terminal relayed to RootCanal's HCI port; its path, its descriptors, and
    what went to the controller and to the host."""
    master, slave = os.openpty()
    tty.setraw(slave)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    outgoing, incoming = Stream(), Stream()

    def relay() -> None:
        try:
            while True:
                ready, _, _ = select.select([master, sock.fileno()], [], [], 0.2)
                if master in ready:
                    data = os.read(master, 4096)
                    sock.sendall(data)
                    outgoing.add(data)
                if sock.fileno() in ready:
                    if quickack:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    data = sock.recv(4096)
                    if not data:
                        return
                    os.write(master, data)
                    incoming.add(data)
        except OSError:
            return

    threading.Thread(target=relay, daemon=True).start()
    return os.ttyname(slave), [master, slave], outgoing, incoming


def trace_times(path: str) -> dict[str, float]:
    """From a btsnoop file (Bumble's, ``MPBLUETOOTH_SNOOP``): when Connection Complete came
    in, and when the L2CAP request went out or came in."""
    times: dict[str, float] = {}
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return times
    at = 16
    while at + 24 <= len(data):
        length, _, flags, _, stamp = struct.unpack(">IIIIQ", data[at : at + 24])
        packet = data[at + 24 : at + 24 + length]
        at += 24 + length
        when = (stamp - BTSNOOP_2000) / 1e6 + UNIX_2000
        received = bool(flags & 1)
        if received and any(p in packet for p in CONNECTED):
            times.setdefault("connected", when)
        if packet[:1] == b"\x02" and request_at(packet) >= 0:
            times.setdefault("request in" if received else "request out", when)
    return times


def stream_time(stream: Stream, end: int) -> float | None:
    """When the byte before ``end`` had arrived through a bridge (None: ``end`` < 0)."""
    if end < 0:
        return None
    return next(t for offset, t in stream.marks if offset >= end)


def connected_at(data: bytes | bytearray) -> int:
    """Where the first successful LE Connection Complete ends in ``data`` (-1: none)."""
    found = [data.find(p) + len(p) for p in CONNECTED if data.find(p) >= 0]
    return min(found) if found else -1


def ours(program: str, spec: str, trace: str) -> tuple[list[str], dict[str, str]]:
    """An ``mpbluetooth-python`` for ``program`` on RootCanal (as the runner connects it),
    writing its HCI trace to ``trace``."""
    command = [sys.executable, "-m", "mpbluetooth.cli.python", "-c", program]
    return command, dict(os.environ, MPBLUETOOTH_TRANSPORT=spec, MPBLUETOOTH_SNOOP=trace)


def one_run(
    micropython: str, listener: str, quickack: bool, central: str, folder: str, run: int
) -> tuple[str, dict[str, float]]:
    """One try: the listener's verdict, and the timeline (Unix times, by name). Our
    instances write their HCI traces into ``folder``, named after the side and ``run``."""
    engine = RootCanal()
    spec = engine.start()
    fds: list[int] = []
    traces = {
        side: os.path.join(folder, f"{side}-{run}.btsnoop") for side in ("listener", "central")
    }
    streams: dict[str, Stream] = {}
    started: list[subprocess.Popen[str]] = []
    try:
        port = int(spec.rsplit(":", 1)[1])
        if listener == "micropython":
            path, opened, _, streams["listener"] = bridge(port, quickack)
            fds += opened
            command, env = [micropython, "-c", PERIPHERAL], {"MICROPYBTUART": path}
        else:
            command, env = ours(PERIPHERAL, spec, traces["listener"])
        peripheral = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        started.append(peripheral)
        assert peripheral.stdout is not None
        addr_type, addr = peripheral.stdout.readline().split()
        program = f"ADDR = ({addr_type}, {addr!r})\n" + CENTRAL
        if central == "micropython":
            path, opened, streams["central out"], streams["central"] = bridge(port, True)
            fds += opened
            command, env = [micropython, "-c", program], {"MICROPYBTUART": path}
        else:
            command, env = ours(program, spec, traces["central"])
        finished = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
        lines = peripheral.communicate(timeout=60)[0].splitlines()
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        for fd in fds:
            os.close(fd)
        engine.stop()
    times: dict[str, float] = {}
    for side, output in (("listener", lines), ("central", finished.stdout.splitlines())):
        for line in output:
            if line.startswith("times "):
                first, second = map(float, line.split()[1:])
                times[f"{side} IRQ"] = first
                times["listen returned" if side == "listener" else "l2cap_connect called"] = second
    for side in ("listener", "central"):
        found: dict[str, float | None]
        if side in streams:
            found = {
                "connected": stream_time(streams[side], connected_at(streams[side].data)),
                "request in": stream_time(streams[side], request_at(streams[side].data)),
            }
            if side == "central":
                out = streams["central out"]
                found["request out"] = stream_time(out, request_at(out.data))
        else:
            found = dict(trace_times(traces[side]))
        times[f"{side} connected"] = found.get("connected") or 0.0
        for name in ("request in",) if side == "listener" else ("request out",):
            when = found.get(name)
            if when:
                times[name] = when
    verdict = lines[0].strip() if lines else "no answer"
    return verdict, {name: when for name, when in times.items() if when}


#: The timeline's columns, in the order things happen on a board.
COLUMNS = (
    ("listener connected", "listener's Connection Complete"),
    ("listener IRQ", "_IRQ_CENTRAL_CONNECT"),
    ("listen returned", "l2cap_listen returned"),
    ("central connected", "central's Connection Complete"),
    ("central IRQ", "_IRQ_PERIPHERAL_CONNECT"),
    ("l2cap_connect called", "l2cap_connect called"),
    ("request out", "request sent"),
    ("request in", "request reached the listener"),
)


#: A process that only computes; it ends with its parent, however the parent ended.
BUSY = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1000000):
        pass
"""


def busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that only compute, at the caller's priority (the load)."""
    return [
        subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("micropython", help="MicroPython's unix port built with NimBLE")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--listener", choices=("micropython", "ours"))
    parser.add_argument("--central", choices=("ours", "micropython"))
    parser.add_argument(
        "--bridge",
        choices=("quick", "delayed"),
        default="quick",
        help="the MicroPython listener's bridge (with --listener/--central)",
    )
    parser.add_argument("--load", type=int, default=0, help="busy loops running meanwhile")
    parser.add_argument("--timeline", action="store_true", help="print each run's timeline")
    parser.add_argument("--traces", help="keep our instances' HCI traces in this folder")
    args = parser.parse_args()
    # A SIGTERM (``timeout``) unwinds as Ctrl-C does, so RootCanal, the instances and the
    # busy loops are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if args.listener or args.central:
        pairs = [(args.listener or "micropython", args.bridge == "quick", args.central or "ours")]
    else:
        pairs = [
            ("micropython", False, "ours"),
            ("micropython", True, "ours"),
            ("micropython", False, "micropython"),
        ]
    load = busy_loops(args.load)
    try:
        with tempfile.TemporaryDirectory(prefix="mp-bridge-") as scratch:
            folder = args.traces or scratch
            os.makedirs(folder, exist_ok=True)
            for number, (listener, quickack, central) in enumerate(pairs):
                verdicts = []
                for run in range(args.runs):
                    verdict, times = one_run(
                        args.micropython, listener, quickack, central, folder, number * 100 + run
                    )
                    verdicts.append(verdict)
                    if args.timeline:
                        zero = times.get("listener connected") or min(times.values(), default=0)
                        row = ", ".join(
                            f"{label} {1000 * (times[name] - zero):+.1f}"
                            for name, label in COLUMNS
                            if name in times
                        )
                        print(f"  {verdict}: {row} ms", flush=True)
                name = (
                    listener
                    if listener == "ours"
                    else f"micropython ({'quick' if quickack else 'delayed'}-ACK bridge)"
                )
                accepted = verdicts.count("accepted")
                print(
                    f"listener {name}, central {central}, load {args.load}: accepted "
                    f"{accepted} of {len(verdicts)} ({', '.join(verdicts)})",
                    flush=True,
                )
    finally:
        for process in load:
            process.kill()
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
