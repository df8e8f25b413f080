"""``mpbluetooth scan``: nearby devices in a live, refreshing table (or plain lines for pipes).

Runs on any transport through the ordinary ``BLE`` API: an active scan whose
``_IRQ_SCAN_RESULT`` events feed the table. On a terminal the table is redrawn twice a
second and cut to the terminal's width; with ``rich`` installed it is drawn by rich.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from ..constants import IRQ_SCAN_DONE, IRQ_SCAN_RESULT
from ._app import Failure, command
from ._options import (
    NON_NEGATIVE,
    format_address,
    received,
    resolve_transport,
    transport_options,
    use_snoop,
)

_NAME_TYPES = (0x09, 0x08)  # complete, then shortened local name
_REFRESH = 0.5
HEADER = ("ADDRESS", "TYPE", "NAME", "RSSI", "LAST SEEN", "REPORTS")
_NAME_COLUMN = HEADER.index("NAME")
_GAP = "  "


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
    """Devices seen so far, updated from the IRQ thread, drawn from the main thread.
    ``min_rssi``: reports weaker than this (dBm) are ignored."""

    def __init__(self, min_rssi: int | None = None) -> None:
        self.min_rssi = min_rssi
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
        if self.min_rssi is not None and rssi < self.min_rssi:
            return
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
                    format_address(s.addr),
                    address_kind(s.addr_type, s.addr),
                    s.name or "-",
                    str(s.rssi),
                    f"{now - s.last:.1f}s ago",
                    str(s.count),
                )
                for s in ordered
            ]

    def as_json(self) -> str:
        """Every device as a JSON array, for programs (``--json``): the table's columns
        as numbers where they are numbers."""
        now = time.monotonic()
        with self._lock:
            ordered = sorted(self.devices.values(), key=lambda s: (-s.rssi, s.addr))
            devices = [
                {
                    "address": format_address(s.addr),
                    "address_type": s.addr_type,
                    "kind": address_kind(s.addr_type, s.addr),
                    "name": s.name,
                    "rssi": s.rssi,
                    "last_seen_s": round(now - s.last, 3),
                    "reports": s.count,
                    "adv_types": sorted(s.kinds),
                }
                for s in ordered
            ]
        return json.dumps(devices, indent=2)


def _widths(table: list[tuple[str, ...]], width: int | None) -> list[int]:
    """Each column's width; with the terminal's ``width``, NAME gives way first."""
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    if width is not None:
        excess = sum(widths) + len(_GAP) * (len(widths) - 1) - width
        if excess > 0:
            widths[_NAME_COLUMN] = max(len(HEADER[_NAME_COLUMN]), widths[_NAME_COLUMN] - excess)
    return widths


def render(rows: list[tuple[str, ...]], width: int | None = None) -> str:
    """The table as text; ``width``: the terminal's, which no line exceeds (names are
    shortened first, with an ellipsis, then lines are cut)."""
    table = [HEADER, *rows]
    widths = _widths(table, width)
    lines = []
    for row in table:
        cells = [_fit(cell, w) for cell, w in zip(row, widths, strict=True)]
        line = _GAP.join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        lines.append(line if width is None else _fit(line, width))
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_rich(rows: list[tuple[str, ...]], status: str, width: int) -> Any:
    """The table for rich, in the same columns and widths as :func:`render`."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(box=None, header_style="bold", pad_edge=False, padding=(0, len(_GAP) // 2))
    for name, column_width in zip(HEADER, _widths([HEADER, *rows], width), strict=True):
        table.add_column(
            name,
            justify="right" if name in ("RSSI", "REPORTS") else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=column_width,
        )
    for row in rows:
        table.add_row(*row)
    return Group(table, Text(_fit(status, width), style="dim"))


def _rich_available(out: TextIO) -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return out is sys.stdout


def _hint(transport: str | None) -> str:
    if transport is None:
        return (
            "the in-process simulated link has no one else on it: start `mpbluetooth "
            "sim-hub` and programs that advertise on it, or give --transport for a real "
            "controller"
        )
    return f"is anything advertising within reach of {transport}? try a longer --duration"


def scan(
    transport: str | None,
    duration: float,
    plain: bool = False,
    out: TextIO = sys.stdout,
    *,
    active: bool = True,
    min_rssi: int | None = None,
    as_json: bool = False,
) -> int:
    """Scan for ``duration`` seconds (0: until Ctrl-C) and show what answered: ``active``
    asks for scan responses; ``as_json`` prints a JSON array once at the end."""
    from ..ble import open as open_ble

    table = Table(min_rssi)
    started = time.monotonic()
    live = not plain and not as_json and out.isatty()
    fancy = live and _rich_available(out)
    try:
        with open_ble(transport, name="scan") as ble:
            ble.irq(table.irq)
            ble.active(True)
            ble.gap_scan(int(duration * 1000), 100000, 100000, active)
            if fancy:
                _show_rich(table, started)
            else:
                _show_plain(table, started, live, out)
    except KeyboardInterrupt:  # before the table was up: still say what was seen
        received.append(signal.SIGINT)
    rows = table.rows()
    if as_json:
        out.write(table.as_json() + "\n")
        out.flush()
    if not rows:
        seconds = duration or time.monotonic() - started
        click.echo(f"no devices seen in {seconds:.3g} s (hint: {_hint(transport)})", err=True)
    elif not fancy and not as_json:  # rich left its last table on the screen
        width = shutil.get_terminal_size().columns if out.isatty() else None
        out.write(render(rows, width) + "\n")
        out.flush()
    return 0


def _status(table: Table, started: float) -> str:
    elapsed = time.monotonic() - started
    return f"scanning... {elapsed:.0f}s, {len(table.devices)} device(s); Ctrl-C stops"


def _show_plain(table: Table, started: float, live: bool, out: TextIO) -> None:
    try:
        while not table.done.wait(_REFRESH):
            if live:
                width = shutil.get_terminal_size().columns
                out.write("\x1b[H\x1b[J" + render(table.rows(), width))
                out.write("\n\n" + _fit(_status(table, started), width) + "\n")
                out.flush()
    except KeyboardInterrupt:
        received.append(signal.SIGINT)  # the table is still shown; then status 130
    if live:
        out.write("\x1b[H\x1b[J")


def _show_rich(table: Table, started: float) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()

    def view(status: str) -> Any:
        return render_rich(table.rows(), status, console.width)

    with Live(view(""), console=console, refresh_per_second=4) as live:
        try:
            while not table.done.wait(_REFRESH):
                live.update(view(_status(table, started)))
        except KeyboardInterrupt:
            received.append(signal.SIGINT)
        live.update(view(f"{len(table.devices)} device(s)"))


@command(
    "scan",
    epilog="\b\nExamples:\n"
    "  mpbluetooth scan usb:0                         # a USB dongle, until Ctrl-C\n"
    "  mpbluetooth scan --duration 5 --plain | sort   # 5 s, then the table once\n"
    "  mpbluetooth scan --duration 5 --passive --min-rssi -70 --json\n"
    "  MPBLUETOOTH_TRANSPORT=hci-socket:0 mpbluetooth scan",
)
@click.argument("spec", required=False, metavar="[TRANSPORT]")
@click.option(
    "--duration",
    type=NON_NEGATIVE,
    default=0.0,
    metavar="SECONDS",
    help="Seconds to scan. [default: 0, until Ctrl-C]",
)
@click.option("--plain", is_flag=True, help="No live refresh: print the table once at the end.")
@click.option(
    "--passive", is_flag=True, help="Listen only: no scan requests, so no scan responses."
)
@click.option(
    "--min-rssi",
    type=click.IntRange(-127, 20),
    metavar="DBM",
    help="Ignore reports weaker than this RSSI (e.g. -70).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the devices once at the end, as JSON.")
@transport_options("The HCI transport to scan with (or give it as TRANSPORT)")
def _scan(
    spec: str | None,
    duration: float,
    plain: bool,
    passive: bool,
    min_rssi: int | None,
    as_json: bool,
    transport: str | None,
    snoop: str | None,
) -> int:
    """A live table of nearby devices.

    Address, type, name, RSSI and when each was last seen, from an active scan on the
    controller of --transport (else $MPBLUETOOTH_TRANSPORT, else a sim-hub on
    127.0.0.1:10723 if one runs). On a terminal the table refreshes in place (drawn by
    rich when it is installed); piped, or with --plain, it is printed once at the end.
    Without a device in reach it says so on stderr. TRANSPORT may be given as Bumble's
    apps take it (`mpbluetooth scan usb:0`), instead of --transport.
    """
    if spec is not None:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("transport") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{spec} and --transport {transport}: give the transport once")
        transport = spec
    use_snoop(snoop)
    try:
        return scan(
            resolve_transport(transport),
            duration,
            plain,
            active=not passive,
            min_rssi=min_rssi,
            as_json=as_json,
        )
    except OSError as exc:
        raise Failure.of(exc) from None
