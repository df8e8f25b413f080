"""The ``mpbluetooth`` command: run, scan, info, demo and HCI traces, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpbluetooth

from .conftest import ENV

ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")

PERIPHERAL = """\
import bluetooth, time
from micropython import const
_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
done = False
def irq(event, data):
    global done
    if event == _IRQ_CENTRAL_CONNECT:
        print("central connected")
    elif event == _IRQ_CENTRAL_DISCONNECT:
        print("central gone")
        done = True
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
name = "sensor"
ble.gap_advertise(50000, b"\\x02\\x01\\x06" + bytes((len(name) + 1, 0x09)) + name)
print("advertising")
while not done:
    time.sleep_ms(10)
"""

CENTRAL = """\
import bluetooth, time
from micropython import const
_IRQ_SCAN_RESULT = const(5)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
state = {"found": False, "done": False}
def irq(event, data):
    if event == _IRQ_SCAN_RESULT and not state["found"] and b"sensor" in bytes(data[4]):
        state["found"] = True
        ble.gap_scan(None)
        ble.gap_connect(data[0], bytes(data[1]))
    elif event == _IRQ_PERIPHERAL_CONNECT:
        print("connected")
        ble.gap_disconnect(data[0])
    elif event == _IRQ_PERIPHERAL_DISCONNECT:
        print("disconnected")
        state["done"] = True
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
ble.gap_scan(5000, 30000, 30000)
while not state["done"]:
    time.sleep_ms(10)
"""


def cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, **env},
    )


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[Path, Path]:
    peripheral, central = tmp_path / "peripheral.py", tmp_path / "central.py"
    peripheral.write_text(PERIPHERAL)
    central.write_text(CENTRAL)
    return peripheral, central


def test_run_a_pair_on_the_simulated_link(scripts: tuple[Path, Path]) -> None:
    result = cli("run", *map(str, scripts), "--timeout", "30")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in (
        "[peripheral] advertising",
        "[peripheral] central connected",
        "[central   ] connected",
        "[peripheral] central gone",
        "[central   ] disconnected",
    ):
        assert expected in lines
    assert lines.index("[peripheral] central connected") < lines.index("[peripheral] central gone")


def test_run_fails_when_a_script_fails_and_stops_the_rest(
    scripts: tuple[Path, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import bluetooth\nraise SystemExit(3)\n")
    result = cli("run", str(bad), str(scripts[0]), "--timeout", "30")
    assert result.returncode == 1
    assert "bad exited with status 3" in result.stderr


def test_run_timeout_stops_everything(scripts: tuple[Path, Path]) -> None:
    # 3 s: a busy CI machine may take over a second to start the script's interpreter.
    result = cli("run", str(scripts[0]), "--timeout", "3")
    assert result.returncode == 124
    assert "[peripheral] advertising" in result.stdout
    assert "--timeout" in result.stderr


def test_run_missing_script(tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "nope.py"))
    assert result.returncode == 2 and "no such script" in result.stderr


@pytest.fixture
def two_advertisers(hub_spec: str) -> Iterator[str]:
    instances = []
    for name in (b"alpha", b"beta"):
        ble = mpbluetooth.open(hub_spec, name.decode())
        ble.active(True)
        ble.gap_advertise(20000, b"\x02\x01\x06" + bytes((len(name) + 1, 0x09)) + name)
        instances.append(ble)
    yield hub_spec
    for ble in instances:
        ble.close()


def test_scan_lists_the_advertisers_on_a_hub(two_advertisers: str) -> None:
    result = cli("scan", "--duration", "1.5", "--transport", two_advertisers)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ADDRESS", "TYPE", "NAME"]
    names = {row.split()[2] for row in rows}
    assert {"alpha", "beta"} <= names


def test_scan_takes_the_transport_as_bumbles_apps_do_and_prints_json(
    two_advertisers: str, hub_spec: str
) -> None:
    shy = mpbluetooth.open(hub_spec, "shy")  # its name only in its scan response
    shy.active(True)
    shy.gap_advertise(20000, b"\x02\x01\x06", resp_data=b"\x04\x09shy")
    try:
        active = cli("scan", two_advertisers, "--duration", "1.5", "--json", "--min-rssi", "-127")
        passive = cli("scan", two_advertisers, "--duration", "1.5", "--json", "--passive")
    finally:
        shy.close()
    assert active.returncode == 0 and passive.returncode == 0, active.stderr + passive.stderr
    devices = json.loads(active.stdout)
    assert {"alpha", "beta", "shy"} <= {d["name"] for d in devices}
    assert all(ADDRESS.match(d["address"]) and d["reports"] >= 1 for d in devices)
    heard = {d["name"] for d in json.loads(passive.stdout)}
    assert {"alpha", "beta"} <= heard and "shy" not in heard  # no scan requests sent
    none = cli("scan", two_advertisers, "--duration", "1", "--json", "--min-rssi", "20")
    assert json.loads(none.stdout) == [] and "no devices seen" in none.stderr
    both = cli("scan", "usb:0", "--transport", "usb:1")
    assert both.returncode == 2 and "give the transport once" in both.stderr


def test_info_describes_the_controller(hub_spec: str) -> None:
    result = cli("info", "--transport", hub_spec)
    assert result.returncode == 0, result.stderr
    for field in (
        "public address",
        "HCI version",
        "LMP version",
        "manufacturer",
        "LE features",
        "LE ACL buffers",
    ):
        assert field in result.stdout
    assert "F2:00:00:00" in result.stdout


def test_info_bad_transport_is_one_clear_line() -> None:
    result = cli("info", "--transport", "nonsense:1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "'nonsense:1'" in result.stderr


def test_demo() -> None:
    result = cli("demo")
    assert result.returncode == 0, result.stderr
    assert "[central   ] connected" in result.stdout


def test_snoop_trace_is_a_btsnoop_file_wireshark_reads(tmp_path: Path) -> None:
    trace = tmp_path / "demo.btsnoop"
    result = cli("demo", MPBLUETOOTH_SNOOP=str(trace))
    assert result.returncode == 0, result.stderr
    traces = sorted(tmp_path.glob("demo*.btsnoop"))
    assert len(traces) == 2  # one per instance: the second gets its own file
    for path in traces:
        data = path.read_bytes()
        assert data[:8] == b"btsnoop\0"
        assert int.from_bytes(data[12:16], "big") == 1002  # H4 datalink
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip(
            "tshark is not installed (Debian package 'tshark'): the file format was "
            "checked, Wireshark's reading of it was not"
        )
    read = subprocess.run(
        [tshark, "-r", str(trace)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert read.returncode == 0, read.stderr
    assert "HCI_CMD" in read.stdout and "Reset" in read.stdout


def test_run_snoop_writes_one_trace_per_script(scripts: tuple[Path, Path], tmp_path: Path) -> None:
    trace = tmp_path / "run.btsnoop"
    result = cli("run", *map(str, scripts), "--timeout", "30", "--snoop", str(trace))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run-peripheral.btsnoop").read_bytes()[:8] == b"btsnoop\0"
    assert (tmp_path / "run-central.btsnoop").read_bytes()[:8] == b"btsnoop\0"


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("s-{instance}.btsnoop", ["s-alpha.btsnoop", "s-beta.btsnoop"]),
        ("trace.btsnoop", ["trace-beta.btsnoop", "trace.btsnoop"]),  # the first keeps the path
    ],
)
def test_snoop_files_of_named_instances_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, written: list[str]
) -> None:
    monkeypatch.setenv("MPBLUETOOTH_SNOOP", str(tmp_path / given))
    with mpbluetooth.sim.Link() as link:
        for name in ("alpha", "beta"):
            link.instance(name).active(True)
    assert sorted(p.name for p in tmp_path.iterdir()) == written


def test_the_hub_logs_the_address_a_script_runs_with(tmp_path: Path) -> None:
    script = tmp_path / "on.py"
    script.write_text("import bluetooth\nbluetooth.BLE().active(True)\n")
    result = cli("-v", "run", "--timeout", "5", "address=f2:2c:3f:00:00:01", str(script))
    assert result.returncode == 124, result.stderr  # it stays on until --timeout
    assert "unix-1 is F2:2C:3F:00:00:01" in result.stderr
    assert "active on unix:" in result.stdout and "address F2:2C:3F:00:00:01" in result.stdout
