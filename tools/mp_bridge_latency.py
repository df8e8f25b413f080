"""A real MicroPython as L2CAP listener on RootCanal, our central connecting at once: does
it accept, depending on the latency of MicroPython's bridge to RootCanal?

    python tools/mp_bridge_latency.py ../shared/conformance/bin/micropython [--runs 3]

It runs MicroPython's unix port (NimBLE) as a peripheral that calls ``l2cap_listen`` as
soon as it sees ``_IRQ_CENTRAL_CONNECT``, behind a bridge to RootCanal's TCP port
(``delayed-ACK``: a pseudo-terminal relayed to the port, as the conformance runner's;
``quick-ACK``: the same with TCP_QUICKACK set before each read, as our own transport
does). The central calls ``l2cap_connect`` as soon as it sees ``_IRQ_PERIPHERAL_CONNECT``
(``ble_l2cap``'s order): an ``mpbluetooth-python`` one, or a second MicroPython behind a
quick-ACK bridge. It prints whether the channel opened. See docs/rootcanal.md,
"MicroPython as instance 0".
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import threading
import tty

from mpbluetooth.sim.rootcanal import RootCanal

PERIPHERAL = r"""
import bluetooth, machine
seen = set()
def irq(event, data):
    seen.add(event)
ble = bluetooth.BLE()
ble.active(1)
ble.irq(irq)
print(ble.config("mac")[1].hex())
ble.gap_advertise(20000, b"\x02\x01\x06\x04\xffMPY")
while 1 not in seen:
    machine.idle()
ble.l2cap_listen(22, 450)
while 2 not in seen:
    machine.idle()
print("accepted" if 22 in seen else "refused")
ble.active(0)
"""

#: The central, the same program for both: ``MAC`` is prepended.
CENTRAL = r"""
import bluetooth, machine, time
seen = {}
def irq(event, data):
    seen[event] = data[0]
ble = bluetooth.BLE()
ble.active(1)
ble.irq(irq)
ble.gap_connect(0, bytes.fromhex(MAC))
while 7 not in seen:
    machine.idle()
ble.l2cap_connect(seen[7], 22, 450)
start = time.ticks_ms()
while 23 not in seen and 24 not in seen and time.ticks_diff(time.ticks_ms(), start) < 3000:
    machine.idle()
ble.gap_disconnect(seen[7])
time.sleep_ms(200)
ble.active(0)
"""


def bridge(port: int, quickack: bool) -> tuple[str, list[int]]:
    """A pseudo-terminal relayed to RootCanal's HCI port; its path and descriptors."""
    master, slave = os.openpty()
    tty.setraw(slave)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def relay() -> None:
        try:
            while True:
                ready, _, _ = select.select([master, sock], [], [], 0.2)
                if master in ready:
                    sock.sendall(os.read(master, 4096))
                if sock in ready:
                    if quickack:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    data = sock.recv(4096)
                    if not data:
                        return
                    os.write(master, data)
        except OSError:
            return

    threading.Thread(target=relay, daemon=True).start()
    return os.ttyname(slave), [master, slave]


def one_run(micropython: str, quickack: bool, central: str) -> str:
    """One try: MicroPython listens behind a bridge (``quickack`` or not); the central is
    ``ours`` (``mpbluetooth-python`` on RootCanal's port, as the runner connects it) or
    ``micropython`` (a second MicroPython, behind a quick-ACK bridge: as fast a link as
    ours)."""
    engine = RootCanal()
    spec = engine.start()
    fds: list[int] = []
    try:
        port = int(spec.rsplit(":", 1)[1])
        path, opened = bridge(port, quickack)
        fds += opened
        peripheral = subprocess.Popen(
            [micropython, "-c", PERIPHERAL],
            env={"MICROPYBTUART": path},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert peripheral.stdout is not None
        mac = peripheral.stdout.readline().strip()
        if central == "ours":
            env = dict(os.environ, MPBLUETOOTH_TRANSPORT=spec)
            command = [
                sys.executable,
                "-m",
                "mpbluetooth.cli.python",
                "-c",
                f"MAC = {mac!r}\n" + CENTRAL,
            ]
        else:
            central_path, opened = bridge(port, True)
            fds += opened
            env = {"MICROPYBTUART": central_path}
            command = [micropython, "-c", f"MAC = {mac!r}\n" + CENTRAL]
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, timeout=30, check=False)
        return peripheral.communicate(timeout=30)[0].strip() or "no answer"
    finally:
        for fd in fds:
            os.close(fd)
        engine.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("micropython", help="MicroPython's unix port built with NimBLE")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for central, quickack in (("ours", False), ("ours", True), ("micropython", False)):
        verdicts = [one_run(args.micropython, quickack, central) for _ in range(args.runs)]
        bridge_name = "quick-ACK" if quickack else "delayed-ACK"
        print(f"listener behind a {bridge_name} bridge, {central} central: {', '.join(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
