"""``mpbluetooth scan``: nearby devices in a live, refreshing table (or plain lines for pipes).

Runs on any transport through the ordinary ``BLE`` facade: an active scan whose
``_IRQ_SCAN_RESULT`` events feed the table.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..ble import BLE
from ..constants import IRQ_SCAN_DONE, IRQ_SCAN_RESULT

_NAME_TYPES = (0x09, 0x08)  # complete, then shortened local name
_REFRESH = 0.5


@dataclass
class Seen:
    addr_type: int
    addr: bytes
    rssi: int
    last: float
    name: str = ""
    count: int = 0
    kinds: set[int] = field(default_factory=set)


def local_name(adv: bytes) -> str:
    found: dict[int, bytes] = {}
    i = 0
    while i + 1 < len(adv):
        length = adv[i]
        if length == 0:
            break
        found.setdefault(adv[i + 1], adv[i + 2 : i + 1 + length])
        i += 1 + length
    for kind in _NAME_TYPES:
        if kind in found:
            return found[kind].decode("utf-8", "replace")
    return ""


def address_kind(addr_type: int, addr: bytes) -> str:
    if addr_type == 0:
        return "public"
    return {0b11: "random static", 0b01: "random RPA", 0b00: "random NRPA"}.get(
        addr[0] >> 6, "random"
    )


class Table:
    """Devices seen so far, updated from the IRQ thread, drawn from the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.devices: dict[bytes, Seen] = {}
        self.done = threading.Event()

    def irq(self, event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_SCAN_DONE:
            self.done.set()
            return
        if event != IRQ_SCAN_RESULT:
            return
        addr_type, addr, adv_type, rssi, adv = data
        key = bytes(addr)
        with self._lock:
            seen = self.devices.get(key)
            if seen is None:
                seen = self.devices[key] = Seen(addr_type, key, rssi, time.monotonic())
            seen.rssi, seen.last = rssi, time.monotonic()
            seen.count += 1
            seen.kinds.add(adv_type)
            seen.name = local_name(bytes(adv)) or seen.name

    def rows(self) -> list[tuple[str, ...]]:
        now = time.monotonic()
        with self._lock:
            ordered = sorted(self.devices.values(), key=lambda s: (-s.rssi, s.addr))
            return [
                (
                    s.addr.hex(":"),
                    address_kind(s.addr_type, s.addr),
                    s.name or "-",
                    str(s.rssi),
                    f"{now - s.last:.1f}s ago",
                    str(s.count),
                )
                for s in ordered
            ]


HEADER = ("ADDRESS", "TYPE", "NAME", "RSSI", "LAST SEEN", "REPORTS")


def render(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [HEADER, *rows]
    )


def scan(transport: str | None, duration: float, plain: bool, out: TextIO = sys.stdout) -> int:
    """Scan for ``duration`` seconds (0: until Ctrl-C) and show what answered."""
    ble = BLE._new_instance("scan", transport=transport)
    table = Table()
    ble.irq(table.irq)
    try:
        ble.active(True)
        ble.gap_scan(int(duration * 1000), 100000, 100000, True)
        live = not plain and out.isatty()
        started = time.monotonic()
        try:
            while not table.done.wait(_REFRESH):
                if live:
                    elapsed = time.monotonic() - started
                    out.write("\x1b[H\x1b[J" + render(table.rows()))
                    out.write(f"\n\nscanning... {elapsed:.0f}s, {len(table.devices)} device(s)\n")
                    out.flush()
        except KeyboardInterrupt:
            pass
        if live:
            out.write("\x1b[H\x1b[J")
        out.write(render(table.rows()) + "\n")
        out.flush()
        return 0
    finally:
        ble._close()
