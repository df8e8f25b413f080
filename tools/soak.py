"""Soak test (not part of CI): two processes on a hub, connect / discover / notify / write /
read / L2CAP / disconnect in a loop for a long time, then a report.

    python tools/soak.py                 # 10 minutes
    python tools/soak.py --minutes 2     # shorter
    python tools/soak.py --json          # the report as JSON too

It starts ``mpbluetooth sim-hub`` and two processes joined to it over TCP: a peripheral
(a GATT server listening for L2CAP) and a central that drives every cycle. At the end it
prints, for every kind of operation, how many were sent and how many the other side
received (equal for every acknowledged operation), the events dropped by the rings, the
growth of threads, file descriptors and RSS after a warm-up, and the slowest operations.
The exit status is 0 only when nothing was lost, nothing failed and nothing leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_CONNECTION_UPDATE,
    IRQ_ENCRYPTION_UPDATE,
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_INDICATE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_INDICATE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
    IRQ_GET_SECRET,
    IRQ_L2CAP_ACCEPT,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
    IRQ_MTU_EXCHANGED,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SET_SECRET,
)

SOAK_SERVICE = "5e6d0001-50a4-4b1e-9a51-4f0a4b5e0000"
CONTROL = "5e6d0002-50a4-4b1e-9a51-4f0a4b5e0000"
DATA = "5e6d0003-50a4-4b1e-9a51-4f0a4b5e0000"
PSM = 0x80
L2CAP_MTU = 512
NOTIFICATIONS = 200  # per cycle
WRITES_ACKED = 20  # write requests per cycle
WRITES_UNACKED = 50  # write commands per cycle
SDUS = 20  # L2CAP SDUs per cycle
SDU_SIZE = 500
WAIT = 10.0  # seconds any single step may take before it counts as a failure
WARM_UP_CYCLES = 20  # leaks are measured from here on

ENOMEM = 12


# --- measurements ---------------------------------------------------------------------------
def usage() -> dict[str, int]:
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss,
    }


def events_recorder() -> Any:
    """The IRQ handler of a role: keeps what a step waits for (``take``), not the kinds
    nobody waits for (they would pile up over a long run)."""
    from mpbluetooth.testing import Recorder

    ignored = {IRQ_GET_SECRET, IRQ_SET_SECRET, IRQ_CONNECTION_UPDATE, IRQ_ENCRYPTION_UPDATE}
    return Recorder(keep=set(range(64)) - ignored, timeout=WAIT)


def retry_enomem(call: Any, *args: Any) -> Any:
    """Notify / write-without-response raise ENOMEM while the ACL buffers are full, as on a
    board; programs retry."""
    while True:
        try:
            return call(*args)
        except OSError as exc:
            if exc.errno != ENOMEM:
                raise
            time.sleep(0.0005)


# --- the peripheral ---------------------------------------------------------------------------
def peripheral(spec: str) -> None:
    import mpbluetooth
    from mpbluetooth import UUID

    ble = mpbluetooth.open(spec, "soak-peripheral")
    counts: dict[str, int] = defaultdict(int)
    work: queue.Queue[tuple[str, Any]] = queue.Queue()
    handles: dict[str, int] = {}
    channels: dict[tuple[int, int], None] = {}
    buffer = bytearray(L2CAP_MTU * 2)

    def status() -> bytes:
        # Short enough for a read at the default MTU (22 bytes).
        return b"%d,%d" % (counts["data writes"], counts["l2cap bytes"])

    def handler(event: int, data: tuple[Any, ...]) -> Any:
        if event == IRQ_CENTRAL_CONNECT:
            counts["connects"] += 1
        elif event == IRQ_CENTRAL_DISCONNECT:
            counts["disconnects"] += 1
            work.put(("advertise", None))
        elif event == IRQ_GATTS_WRITE:
            conn, handle = data
            value = ble.gatts_read(handle)
            if handle == handles["data"]:
                counts["data writes"] += 1
            elif value.startswith(b"notify "):
                work.put(("notify", (conn, int(value[7:]))))
            elif value == b"bye":
                work.put(("disconnect", conn))
        elif event == IRQ_GATTS_READ_REQUEST:
            ble.gatts_write(handles["control"], status())
            counts["reads"] += 1
        elif event == IRQ_GATTS_INDICATE_DONE:
            counts["indications acked" if data[2] == 0 else "indications failed"] += 1
        elif event == IRQ_L2CAP_ACCEPT:
            return 0
        elif event == IRQ_L2CAP_CONNECT:
            channels[(data[0], data[1])] = None
            counts["l2cap channels"] += 1
        elif event == IRQ_L2CAP_RECV:
            while got := ble.l2cap_recvinto(data[0], data[1], buffer):
                counts["l2cap bytes"] += got
            counts["l2cap sdus"] += 1
        elif event == IRQ_L2CAP_DISCONNECT:
            channels.pop((data[0], data[1]), None)
        return None

    ble.irq(handler)
    ble.active(True)
    ((control, data_handle),) = ble.gatts_register_services(
        [
            (
                UUID(SOAK_SERVICE),
                [
                    (UUID(CONTROL), mpbluetooth.FLAG_READ | mpbluetooth.FLAG_WRITE),
                    (
                        UUID(DATA),
                        mpbluetooth.FLAG_WRITE
                        | mpbluetooth.FLAG_WRITE_NO_RESPONSE
                        | mpbluetooth.FLAG_NOTIFY
                        | mpbluetooth.FLAG_INDICATE,
                    ),
                ],
            )
        ]
    )
    handles.update(control=control, data=data_handle)
    ble.gatts_set_buffer(control, 64)
    ble.gatts_set_buffer(data_handle, 64)
    ble.l2cap_listen(PSM, L2CAP_MTU)
    ble.gap_advertise(20000, b"\x02\x01\x06\x05\x09soak")
    print("ready", *ble.config("mac")[1].hex(":").split(), flush=True)

    def stdin_commands() -> None:
        for line in sys.stdin:
            if line.strip() == "report":
                work.put(("report", None))
                return
        work.put(("report", None))

    threading.Thread(target=stdin_commands, daemon=True).start()
    baseline: dict[str, int] | None = None
    while True:
        kind, argument = work.get()
        if kind == "advertise":
            ble.gap_advertise(20000, b"\x02\x01\x06\x05\x09soak")
            if baseline is None and counts["disconnects"] == WARM_UP_CYCLES:
                baseline = usage()
        elif kind == "notify":
            conn, count = argument
            try:
                for n in range(count):
                    retry_enomem(ble.gatts_notify, conn, data_handle, n.to_bytes(4, "little"))
                    counts["notifications sent"] += 1
                retry_enomem(ble.gatts_indicate, conn, data_handle, str(count).encode())
                counts["indications sent"] += 1
            except OSError as exc:  # the link went away meanwhile
                counts[f"notify failed errno {exc.errno}"] += 1
        elif kind == "disconnect":
            ble.gap_disconnect(argument)
        elif kind == "report":
            stats = mpbluetooth.irq_stats(ble)
            end = usage()
            print(
                json.dumps(
                    {
                        "role": "peripheral",
                        "counts": counts,
                        "dropped": stats.dropped,
                        "delivered": stats.delivered,
                        "baseline": baseline,
                        "end": end,
                    }
                ),
                flush=True,
            )
            ble.active(False)
            return


# --- the central ------------------------------------------------------------------------------
class Central:
    def __init__(self, spec: str, peer: bytes, minutes: float) -> None:
        import mpbluetooth

        self.mpbluetooth = mpbluetooth
        self.ble = mpbluetooth.open(spec, "soak-central")
        self.events = events_recorder()
        self.ble.irq(self.events)
        self.ble.active(True)
        self.peer = peer
        self.deadline = time.monotonic() + minutes * 60
        self.counts: dict[str, int] = defaultdict(int)
        self.slowest: dict[str, tuple[float, int]] = {}
        self.failures: list[str] = []
        self.cycle = 0
        self.baseline: dict[str, int] | None = None

    def timed(self, what: str, started: float) -> None:
        took = time.monotonic() - started
        if took > self.slowest.get(what, (0.0, 0))[0]:
            self.slowest[what] = (took, self.cycle)

    def run(self) -> dict[str, Any]:
        while time.monotonic() < self.deadline:
            self.cycle += 1
            if self.cycle == WARM_UP_CYCLES + 1:
                self.baseline = usage()
            conn = None
            try:
                conn = self.connect()
                self.one_cycle(conn)
            except Exception as exc:  # counted and reported; the soak goes on
                self.failures.append(f"cycle {self.cycle}: {exc!r}")
                if conn is not None:
                    self.recover(conn)
            if self.events.events:
                self.failures.append(f"cycle {self.cycle}: unexpected {self.events.events[:5]}")
                self.events.clear()
        stats = self.mpbluetooth.irq_stats(self.ble)
        report = {
            "role": "central",
            "cycles": self.cycle,
            "counts": self.counts,
            "failures": self.failures,
            "slowest": self.slowest,
            "dropped": stats.dropped,
            "delivered": stats.delivered,
            "baseline": self.baseline,
            "end": usage(),
        }
        self.ble.active(False)
        return report

    def recover(self, conn: int) -> None:
        try:
            if self.ble.gap_disconnect(conn):
                self.events.take(IRQ_PERIPHERAL_DISCONNECT)
        except Exception as exc:
            self.failures.append(f"cycle {self.cycle}: recovery: {exc!r}")

    def connect(self) -> int:
        started = time.monotonic()
        self.ble.gap_connect(0, self.peer, 5000)
        event, data = self.events.take(IRQ_PERIPHERAL_CONNECT, IRQ_PERIPHERAL_DISCONNECT)
        if event != IRQ_PERIPHERAL_CONNECT:
            raise RuntimeError("connect attempt timed out")
        self.timed("connect", started)
        self.counts["connects"] += 1
        return int(data[0])

    def one_cycle(self, conn: int) -> None:
        ble, events = self.ble, self.events
        from mpbluetooth import UUID

        if self.cycle % 4 == 0:
            ble.gattc_exchange_mtu(conn)
            events.take(IRQ_MTU_EXCHANGED)

        # Discovery.
        started = time.monotonic()
        ble.gattc_discover_services(conn, UUID(SOAK_SERVICE))
        _, (_, first, last, _) = events.take(IRQ_GATTC_SERVICE_RESULT)
        assert events.take(IRQ_GATTC_SERVICE_DONE)[1][1] == 0
        ble.gattc_discover_characteristics(conn, first, last)
        found: dict[UUID, int] = {}
        while True:
            event, data = events.take(
                IRQ_GATTC_CHARACTERISTIC_RESULT, IRQ_GATTC_CHARACTERISTIC_DONE
            )
            if event == IRQ_GATTC_CHARACTERISTIC_DONE:
                assert data[1] == 0, f"characteristic discovery status {data[1]}"
                break
            found[data[4]] = data[2]
        control, data_handle = found[UUID(CONTROL)], found[UUID(DATA)]
        self.timed("discovery", started)

        # Notifications: ask for a burst; an indication closes it with the count sent.
        started = time.monotonic()
        self.write(conn, control, b"notify %d" % NOTIFICATIONS)
        received = 0
        while True:
            event, data = events.take(IRQ_GATTC_NOTIFY, IRQ_GATTC_INDICATE)
            if event == IRQ_GATTC_NOTIFY:
                received += 1
                continue
            break
        sent = int(data[2])
        self.counts["notifications received"] += received
        self.counts["indications received"] += 1
        if received != sent:
            self.failures.append(f"cycle {self.cycle}: {sent} notified, {received} received")
        self.timed(f"{NOTIFICATIONS} notifications + indication", started)

        # Writes: acknowledged, then unacknowledged; a read says what the peer stored.
        for n in range(WRITES_ACKED):
            self.write(conn, data_handle, b"w%d" % n, "data ")
        for n in range(WRITES_UNACKED):
            retry_enomem(ble.gattc_write, conn, data_handle, b"c%d" % n, 0)
            self.counts["data writes unacked"] += 1
        started = time.monotonic()
        ble.gattc_read(conn, control)
        _, result = events.take(IRQ_GATTC_READ_RESULT)
        assert events.take(IRQ_GATTC_READ_DONE)[1][2] == 0
        self.timed("read", started)
        self.counts["reads"] += 1
        stored = int(result[2].split(b",")[0])
        expected = self.counts["data writes acked"] + self.counts["data writes unacked"]
        if stored != expected:
            self.failures.append(
                f"cycle {self.cycle}: peer stored {stored} writes, {expected} sent"
            )

        # L2CAP: open a channel, send SDUs with flow control, close it.
        started = time.monotonic()
        ble.l2cap_connect(conn, PSM, L2CAP_MTU)
        event, data = events.take(IRQ_L2CAP_CONNECT, IRQ_L2CAP_DISCONNECT)
        if event != IRQ_L2CAP_CONNECT:
            raise RuntimeError(f"L2CAP connect refused: status {data[3]}")
        cid = data[1]
        self.counts["l2cap channels"] += 1
        payload = bytes(range(256)) * (SDU_SIZE // 256) + bytes(SDU_SIZE % 256)
        for _ in range(SDUS):
            if not ble.l2cap_send(conn, cid, payload):
                events.take(IRQ_L2CAP_SEND_READY)
            self.counts["l2cap bytes sent"] += len(payload)
            self.counts["l2cap sdus sent"] += 1
        ble.l2cap_disconnect(conn, cid)
        assert events.take(IRQ_L2CAP_DISCONNECT)[1][3] == 0
        self.timed(f"L2CAP {SDUS * SDU_SIZE // 1000} kB", started)

        # Disconnect: alternately ours and the peer's.
        started = time.monotonic()
        if self.cycle % 2:
            assert ble.gap_disconnect(conn)
        else:
            self.write(conn, control, b"bye")
        events.take(IRQ_PERIPHERAL_DISCONNECT)
        self.counts["disconnects"] += 1
        self.timed("disconnect", started)

    def write(self, conn: int, handle: int, value: bytes, what: str = "") -> None:
        started = time.monotonic()
        self.ble.gattc_write(conn, handle, value, 1)
        status = self.events.take(IRQ_GATTC_WRITE_DONE)[1][2]
        if status != 0:
            raise RuntimeError(f"write acknowledged with status {status}")
        self.counts[f"{what}writes acked"] += 1
        self.timed("write with response", started)


# --- orchestration ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(*args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def growth(report: dict[str, Any]) -> dict[str, int]:
    base, end = report.get("baseline"), report["end"]
    if not base:
        return {key: 0 for key in end}
    return {key: end[key] - base[key] for key in end}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="also print the report as JSON")
    parser.add_argument("--role", choices=["peripheral", "central"], help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "peripheral":
        peripheral(args.transport)
        return 0
    if args.role == "central":
        central = Central(args.transport, bytes.fromhex(args.peer.replace(":", "")), args.minutes)
        print(json.dumps(central.run()), flush=True)
        return 0

    from mpbluetooth.testing import HubProcess

    hub = HubProcess(spec=f"tcp-client:127.0.0.1:{free_port()}")
    spec = hub.spec
    started = time.monotonic()
    try:
        me = os.path.abspath(__file__)
        peripheral_proc = spawn(
            me, "--role", "peripheral", "--transport", spec, stdin=subprocess.PIPE
        )
        assert peripheral_proc.stdout is not None and peripheral_proc.stdin is not None
        ready = peripheral_proc.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        peer = "".join(ready[1:])
        print(f"soak: {args.minutes:g} min through the hub on {spec}, peer {peer}", flush=True)
        central_proc = spawn(
            me,
            "--role",
            "central",
            "--transport",
            spec,
            "--peer",
            peer,
            "--minutes",
            str(args.minutes),
        )
        central_out, _ = central_proc.communicate()
        central = json.loads(central_out.strip().splitlines()[-1])
        peripheral_proc.stdin.write("report\n")
        peripheral_proc.stdin.flush()
        peripheral_out, _ = peripheral_proc.communicate(timeout=30)
        peripheral_report = json.loads(peripheral_out.strip().splitlines()[-1])
    finally:
        hub.stop()
    elapsed = time.monotonic() - started
    return report(central, peripheral_report, elapsed, args.json)


def report(
    central: dict[str, Any], peripheral: dict[str, Any], elapsed: float, as_json: bool
) -> int:
    c, p = central["counts"], peripheral["counts"]
    unacked_writes = c.get("data writes unacked", 0)
    rows = [
        # (operation, acknowledged?, sent, received)
        ("connections", True, c.get("connects", 0), p.get("connects", 0)),
        ("disconnections", True, c.get("disconnects", 0), p.get("disconnects", 0)),
        ("write requests (data)", True, c.get("data writes acked", 0), None),
        ("write commands (data)", False, unacked_writes, None),
        (
            "writes stored by the peer",
            True,
            c.get("data writes acked", 0) + unacked_writes,
            p.get("data writes", 0),
        ),
        ("reads", True, c.get("reads", 0), p.get("reads", 0)),
        (
            "notifications",
            False,
            p.get("notifications sent", 0),
            c.get("notifications received", 0),
        ),
        ("indications", True, p.get("indications sent", 0), c.get("indications received", 0)),
        (
            "indications confirmed",
            True,
            p.get("indications sent", 0),
            p.get("indications acked", 0),
        ),
        (
            "L2CAP channels",
            True,
            c.get("l2cap channels", 0),
            p.get("l2cap channels", 0),
        ),
        ("L2CAP SDUs", True, c.get("l2cap sdus sent", 0), p.get("l2cap sdus", 0)),
        ("L2CAP bytes", True, c.get("l2cap bytes sent", 0), p.get("l2cap bytes", 0)),
    ]
    lost = [name for name, _, sent, got in rows if got is not None and sent != got]
    lines = [
        f"cycles: {central['cycles']} in {elapsed / 60:.1f} min "
        f"({central['cycles'] / max(elapsed, 1e-9):.1f}/s), failures: {len(central['failures'])}",
        "",
        f"{'operation':28} {'acked':>5} {'sent':>10} {'received':>10}",
    ]
    for name, acked, sent, got in rows:
        lines.append(
            f"{name:28} {'yes' if acked else 'no':>5} {sent:>10} {'' if got is None else got:>10}"
        )
    lines += [
        "",
        f"ring drops: central {central['dropped']}, peripheral {peripheral['dropped']} "
        f"(delivered {central['delivered']} / {peripheral['delivered']})",
    ]
    leaks = {}
    for role, data in (("central", central), ("peripheral", peripheral)):
        grown = growth(data)
        leaks[role] = grown
        base = data.get("baseline") or data["end"]
        lines.append(
            f"{role:10} after warm-up: threads {base['threads']} -> {data['end']['threads']}, "
            f"fds {base['fds']} -> {data['end']['fds']}, "
            f"RSS {base['rss_kib'] / 1024:.1f} -> {data['end']['rss_kib'] / 1024:.1f} MiB"
        )
    lines += ["", "slowest operations (s, cycle):"]
    for what, (took, cycle) in sorted(central["slowest"].items(), key=lambda kv: -kv[1][0]):
        lines.append(f"  {what:32} {took:8.4f}  #{cycle}")
    for failure in central["failures"][:20]:
        lines.append(f"FAILURE {failure}")
    for name in lost:
        lines.append(f"LOST {name}")
    print("\n".join(lines), flush=True)
    if as_json:
        print(json.dumps({"central": central, "peripheral": peripheral, "elapsed": elapsed}))
    leaked = any(g["threads"] > 0 or g["fds"] > 0 for g in leaks.values())
    return 0 if not lost and not central["failures"] and not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
