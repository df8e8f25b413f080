"""``mpbluetooth demo``: two simulated boards meet, in one process, with progress shown.

The peripheral and the central are ordinary ``BLE`` instances driven exactly as MicroPython
code drives them (IRQ handler, advertising payload, scan, connect); only their creation
uses the desktop simulation API.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import click

from ..constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from ._app import command
from ._options import POSITIVE, format_address

NAME = b"mpy-demo"


def _payload(name: bytes) -> bytes:
    # Flags (LE general discoverable, no BR/EDR) then the complete local name.
    return struct.pack("BBB", 2, 0x01, 0x06) + struct.pack("BB", len(name) + 1, 0x09) + name


def _name_of(adv: bytes) -> bytes | None:
    i = 0
    while i + 1 < len(adv):
        length, kind = adv[i], adv[i + 1]
        if kind == 0x09:
            return bytes(adv[i + 2 : i + 1 + length])
        i += 1 + length
    return None


def _say(who: str, text: str) -> None:
    print(f"[{who:10}] {text}", flush=True)


@command(
    "demo",
    epilog="\b\nExamples:\n  mpbluetooth demo\n"
    "  MPBLUETOOTH_SNOOP=demo.btsnoop mpbluetooth demo   # and an HCI trace per instance",
)
@click.option(
    "--timeout",
    type=POSITIVE,
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up after this many seconds.",
)
def _demo(timeout: float) -> int:
    """A peripheral and a central meet on the simulated radio.

    Both run in this process. The peripheral advertises, the central scans, connects and
    disconnects, each step printed as it happens. Nothing to install or plug in; exit status
    0 when the central found, connected to and left the peripheral.
    """
    return run(timeout)


def run(timeout: float = 10.0) -> int:
    """Run the demo; 0 when the central found, connected to and left the peripheral."""
    from .. import sim

    finished = threading.Event()
    found: list[bytes] = []
    with sim.Link() as link:
        peripheral = link.instance("peripheral")
        central = link.instance("central")

        def on_peripheral(event: int, data: tuple[Any, ...]) -> None:
            if event == IRQ_CENTRAL_CONNECT:
                _say(
                    "peripheral",
                    f"central connected (conn {data[0]}, addr {format_address(data[2])})",
                )
            elif event == IRQ_CENTRAL_DISCONNECT:
                _say("peripheral", "central disconnected")
                finished.set()

        def on_central(event: int, data: tuple[Any, ...]) -> None:
            if event == IRQ_SCAN_RESULT:
                addr_type, addr, adv_type, rssi, adv = data
                if not found and _name_of(bytes(adv)) == NAME:
                    found.append(bytes(addr))
                    _say("central", f"found {NAME.decode()} at {format_address(addr)} rssi {rssi}")
                    central.gap_connect(addr_type, bytes(addr))
            elif event == IRQ_SCAN_DONE:
                _say("central", "scan stopped")
            elif event == IRQ_PERIPHERAL_CONNECT:
                _say("central", f"connected (conn {data[0]}); disconnecting")
                central.gap_disconnect(data[0])
            elif event == IRQ_PERIPHERAL_DISCONNECT:
                _say("central", "disconnected")

        peripheral.irq(on_peripheral)
        central.irq(on_central)
        started = time.monotonic()
        peripheral.active(True)
        central.active(True)
        _say("link", f"two simulated radios up in {1000 * (time.monotonic() - started):.0f} ms")
        peripheral.gap_advertise(100_000, _payload(NAME))
        _say("peripheral", f"advertising as {NAME.decode()}")
        central.gap_scan(int(timeout * 1000), 30000, 30000)
        _say("central", "scanning")
        ok = finished.wait(timeout)
    _say("link", "done" if ok else f"gave up after {timeout:g} s")
    return 0 if ok else 1
