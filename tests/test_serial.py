"""The serial path of a real dongle: H4 over a tty (``serial:/dev/pts/N``), as a USB-serial
HCI board is opened, here a pseudo-terminal the hub puts a simulated controller behind.
A program drives it through ``mpbluetooth run --transport``; a port that will not open and
a line that is lost end in the documented one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.constants import IRQ_CENTRAL_CONNECT, IRQ_CENTRAL_DISCONNECT
from mpbluetooth.testing import HubProcess, wait_until

from .conftest import ENV

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")

CENTRAL = """\
import bluetooth, time
ble = bluetooth.BLE()
state = {}
def irq(event, data):
    if event == 5 and bytes(data[1]) == bytes.fromhex(PEER) and "found" not in state:
        state["found"] = True
        ble.gap_scan(None)
        ble.gap_connect(data[0], bytes(data[1]))
    elif event == 7:
        print("connected over the serial line")
        ble.gap_disconnect(data[0])
    elif event == 8:
        state["done"] = True
ble.irq(irq)
ble.active(True)
ble.gap_scan(5000, 30000, 30000)
while "done" not in state:
    time.sleep_ms(10)
ble.active(False)
"""

WATCHER = """\
import bluetooth, time
ble = bluetooth.BLE()
ble.active(True)
print("up", flush=True)
while ble.active():
    time.sleep_ms(10)
print("the line is lost", flush=True)
ble.active(True)
"""


@pytest.fixture
def tty(tmp_path: Path) -> Iterator[tuple[HubProcess, str]]:
    """A hub with a simulated controller behind a pty; the tty's own name (/dev/pts/N)."""
    link = str(tmp_path / "hci-uart")
    hub = HubProcess(extra=("--pty", link))
    try:
        wait_until(lambda: os.path.islink(link), 10, "the hub's pseudo-terminal")
        yield hub, os.path.realpath(link)
    finally:
        hub.stop()


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth", *args],
        capture_output=True, text=True, timeout=timeout, env=ENV,
    )  # fmt: skip


def test_a_program_drives_a_serial_controller(tty: tuple[HubProcess, str], tmp_path: Path) -> None:
    hub, device = tty
    assert device.startswith("/dev/")
    peripheral, events = hub.instance("peripheral")
    peripheral.gap_advertise(20000, b"\x02\x01\x06")
    script = tmp_path / "central.py"
    script.write_text(f"PEER = {peripheral.config('mac')[1].hex()!r}\n" + CENTRAL)
    result = run("run", "--transport", f"serial:{device},1000000", str(script))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[central] connected over the serial line" in result.stdout
    events.wait(IRQ_CENTRAL_CONNECT)
    events.wait(IRQ_CENTRAL_DISCONNECT)


def test_a_serial_port_that_will_not_open_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "watcher.py"
    script.write_text(WATCHER)
    result = run("run", "--transport", "serial:/dev/mpbluetooth-no-such-tty", str(script))
    assert result.returncode == 1
    said = [line for line in result.stdout.splitlines() if line.startswith("[watcher]")]
    assert len(said) == 1 and "[Errno 2] cannot open transport 'serial:" in said[0], said
    assert "watcher.py, line 3:" in said[0]


def test_a_lost_serial_line_ends_the_radio_and_is_one_line(
    tty: tuple[HubProcess, str], tmp_path: Path
) -> None:
    hub, device = tty
    script = tmp_path / "watcher.py"
    script.write_text(WATCHER)
    program = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth.cli.python", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**ENV, "MPBLUETOOTH_TRANSPORT": f"serial:{device}"},
    )  # fmt: skip
    try:
        assert program.stdout is not None and program.stdout.readline() == "up\n"
        hub.crash()  # the other end of the line is gone, as when a board is unplugged
        out, err = program.communicate(timeout=30)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
    assert out == "the line is lost\n"
    assert program.returncode == 1
    assert err.count("\n") == 1 and "cannot open transport 'serial:" in err, err
    assert "watcher.py, line 8:" in err
