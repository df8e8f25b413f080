"""Boards on several machines: two separate ``mpbluetooth run`` invocations share one
engine (a ``sim-hub`` joined with ``--hub``, a RootCanal joined with ``--rootcanal``) and
their boards connect across them. Both invocations run on this machine, over TCP, as two
machines would; the engine is started by the test and outlives both runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mpbluetooth.sim.rootcanal import RootCanal, RootCanalError
from mpbluetooth.testing import HubProcess

from .conftest import ENV

REPO = Path(__file__).resolve().parent.parent
#: Seconds each run may take (its own --timeout), and the test's bound on each process.
RUN_TIMEOUT = 90
PROCESS_TIMEOUT = RUN_TIMEOUT + 30
VALUE = b"across two runs"

PERIPHERAL = """\
import bluetooth, time
from micropython import const
_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_FLAG_READ = const(0x0002)
SERVICE = bluetooth.UUID("9f1f0001-5c7a-4d3e-9a0b-26c000000001")
CHAR = bluetooth.UUID("9f1f0002-5c7a-4d3e-9a0b-26c000000001")
state = {"done": False}
def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        print("central connected")
    elif event == _IRQ_CENTRAL_DISCONNECT:
        state["done"] = True
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
((handle,),) = ble.gatts_register_services(((SERVICE, ((CHAR, _FLAG_READ),)),))
ble.gatts_write(handle, VALUE)
ble.gap_advertise(20000, b"\\x02\\x01\\x06" + bytes((len(NAME) + 1, 0x09)) + NAME)
print("advertising")
start = time.ticks_ms()
while not state["done"]:
    if time.ticks_diff(time.ticks_ms(), start) > 60000:
        raise SystemExit("no central came within 60 s")
    time.sleep_ms(10)
ble.active(False)  # else the board stays on, and a run of one script waits for --timeout
print("served")
"""

CENTRAL = """\
import bluetooth, time
from micropython import const
_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
CHAR = bluetooth.UUID("9f1f0002-5c7a-4d3e-9a0b-26c000000001")
state = {"found": False, "handle": None, "done": False}
def irq(event, data):
    if event == _IRQ_SCAN_RESULT and not state["found"] and NAME in bytes(data[4]):
        state["found"] = True
        ble.gap_scan(None)
        ble.gap_connect(data[0], bytes(data[1]))
    elif event == _IRQ_SCAN_DONE and not state["found"]:
        print("not found")
        state["done"] = True
    elif event == _IRQ_PERIPHERAL_CONNECT:
        ble.gattc_discover_characteristics(data[0], 1, 0xFFFF, CHAR)
    elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
        state["handle"] = data[2]
    elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
        ble.gattc_read(data[0], state["handle"])
    elif event == _IRQ_GATTC_READ_RESULT:
        print("read", bytes(data[2]))
    elif event == _IRQ_GATTC_READ_DONE:
        ble.gap_disconnect(data[0])
    elif event == _IRQ_PERIPHERAL_DISCONNECT:
        state["done"] = True
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
ble.gap_scan(60000, 30000, 30000)
while not state["done"]:
    time.sleep_ms(10)
ble.active(False)
"""


@dataclass
class Engine:
    """A running engine as the runs see it: its name, the option that joins it (which
    implies the engine), what ``run`` says it runs on, and the engine's process (which must
    outlive the runs)."""

    name: str
    options: tuple[str, ...]
    says: str
    process: subprocess.Popen[Any]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["sim", "rootcanal"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """One engine for the test, started here as a team would start it, and stopped at the
    test's end whatever happens."""
    if request.param == "sim":
        hub = HubProcess(spec=f"tcp-client:127.0.0.1:{_free_port()}")
        try:
            yield Engine("sim", ("--hub", hub.spec), f"on the hub at {hub.spec}", hub.process)
        finally:
            hub.stop()
        return
    rootcanal = RootCanal()
    try:
        try:
            rootcanal.start()
        except RootCanalError as exc:
            pytest.skip(f"RootCanal cannot start here: {exc}")
        assert rootcanal.process is not None
        where = f"127.0.0.1:{rootcanal.hci_port}"
        says = f"on RootCanal at tcp-client:{where} (joined)"
        yield Engine("rootcanal", ("--rootcanal", where), says, rootcanal.process)
    finally:
        rootcanal.stop()


def start_run(
    cwd: Path, options: tuple[str, ...], script: str, name: bytes
) -> subprocess.Popen[str]:
    """One ``mpbluetooth run`` invocation of one script, as one machine would start it."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "mpbluetooth", "run", *options,
            "--timeout", str(RUN_TIMEOUT), f"NAME={name.decode()}", script,
        ],
        cwd=cwd, env={**ENV, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Its exit status and output, within a bound; killed if it is still running after."""
    try:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"run did not end within {PROCESS_TIMEOUT} s:\n{out}{err}")
    return proc.returncode, out, err


def test_two_runs_share_one_engine_and_connect_across(engine: Engine, tmp_path: Path) -> None:
    name = b"shared-" + engine.name.encode()
    header = f"NAME = {name!r}\nVALUE = {VALUE!r}\n"
    (tmp_path / "peripheral.py").write_text(header + PERIPHERAL)
    (tmp_path / "central.py").write_text(header + CENTRAL)
    runs: list[subprocess.Popen[str]] = []
    try:
        # One names the engine, the other lets its option imply it.
        named = ("--engine", engine.name, *engine.options)
        runs.append(start_run(tmp_path, named, "peripheral.py", name))
        runs.append(start_run(tmp_path, engine.options, "central.py", name))
        central_status, central_out, central_err = finish(runs[1])
        peripheral_status, peripheral_out, peripheral_err = finish(runs[0])
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert central_status == 0, central_out + central_err
    assert f"[central] read {VALUE!r}" in central_out.splitlines(), central_out
    assert peripheral_status == 0, peripheral_out + peripheral_err
    lines = peripheral_out.splitlines()
    assert "[peripheral] central connected" in lines and "[peripheral] served" in lines
    assert engine.says in central_err and engine.says in peripheral_err
    # Joined, not started: the engine outlives both runs.
    assert engine.process.poll() is None


def test_a_port_that_is_not_a_controller_is_one_line(tmp_path: Path, web_server: str) -> None:
    (tmp_path / "a.py").write_text("print('never')\n")
    where = web_server
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth", "run", "--rootcanal", where, "a.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")},
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"no RootCanal answers at {where} (what answered is not an HCI" in result.stderr
    assert "never" not in result.stdout
