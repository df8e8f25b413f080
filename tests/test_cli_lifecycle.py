"""Nothing outlives its parent: ``mpbluetooth run`` killed outright, interrupted with
Ctrl-C, and a pytest run that pytest-timeout ends with ``os._exit``, as a user does them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from mpbluetooth.testing import HubProcess, wait_until

from .conftest import ENV, default_sigint

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to find the children"
)

LOOPING = """\
import bluetooth, time
ble = bluetooth.BLE()
ble.active(True)
print("up", flush=True)
while True:
    time.sleep_ms(20)
"""


def _tagged(tag: str) -> list[int]:
    """The processes whose environment holds ``tag`` (this one's children and theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


def _run_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("mpbluetooth-run-*")}


def _start_run(tmp_path: Path, tag: str) -> subprocess.Popen[str]:
    script = tmp_path / "loop.py"
    script.write_text(LOOPING)
    process = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", "run", str(script), str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "MPBT_TEST_TAG": tag},
        start_new_session=True,  # its own terminal process group, as a shell gives it
    )
    assert process.stdout is not None
    for _ in range(2):
        assert "up" in process.stdout.readline()
    return process


def test_run_killed_outright_takes_its_scripts_and_folder_with_it(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    before = _run_dirs()
    run = _start_run(tmp_path, tag)
    assert len(_tagged(tag)) == 3  # run and its two boards
    os.kill(run.pid, signal.SIGKILL)
    run.wait(10)
    wait_until(lambda: not _tagged(tag), 15, "the boards to end with their parent")
    wait_until(lambda: _run_dirs() <= before, 5, "the run's folder to be removed")


def test_ctrl_c_stops_run_with_one_quiet_line_and_status_130(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    run = _start_run(tmp_path, tag)
    os.killpg(run.pid, signal.SIGINT)  # what the terminal sends its foreground group
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130
    assert stderr.splitlines()[-1] == "mpbluetooth run: interrupted"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not _tagged(tag)


def test_ctrl_c_stops_a_server_command_with_status_130() -> None:
    hub = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", "sim-hub", "--unix", "hub.sock"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=tempfile.mkdtemp(prefix="mpbt-"),
        start_new_session=True,
    )
    assert hub.stderr is not None
    assert "listening" in hub.stderr.readline()
    os.killpg(hub.pid, signal.SIGINT)
    _, stderr = hub.communicate(timeout=30)
    assert hub.returncode == 130
    assert stderr.splitlines()[-1] == "mpbluetooth sim-hub: interrupted"


HANGING_TEST = """
from pathlib import Path

def test_hangs(board, sim_hub):
    board(Path(__file__).with_name("loop.py")).wait_for_line("up")
    sim_hub.instance("central")
    import time
    time.sleep(60)  # pytest-timeout ends the whole run
"""


def test_nothing_outlives_a_pytest_run_that_timeout_ends(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    (tmp_path / "loop.py").write_text(LOOPING)
    (tmp_path / "test_hang.py").write_text(HANGING_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "5",
         "--timeout-method", "thread", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**ENV, "MPBT_TEST_TAG": tag},
    )  # fmt: skip
    assert "Timeout" in result.stdout + result.stderr, result.stdout + result.stderr
    wait_until(lambda: not _tagged(tag), 15, "the hub and the board to end with pytest")


def test_ctrl_c_ends_a_scan_with_what_it_saw_and_status_130() -> None:
    hub = HubProcess("instant")
    try:
        advertiser, _ = hub.instance("beacon")
        advertiser.gap_advertise(20000, b"\x02\x01\x06\x07\x09beacon")
        scan = subprocess.Popen(
            [sys.executable, "-m", "mpbluetooth", "scan", hub.spec, "--plain"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
            start_new_session=True, preexec_fn=default_sigint,
        )  # fmt: skip
        wait_until(lambda: len(hub.members()) == 2, 30, "the scanner on the hub")
        os.killpg(scan.pid, signal.SIGINT)
        out, err = scan.communicate(timeout=30)
    finally:
        hub.stop()
    assert scan.returncode == 130, err
    # What it saw so far is still shown (the table, or that it saw nothing yet).
    assert out.startswith("ADDRESS") or "no devices seen" in err, out + err
    assert err.splitlines()[-1] == "mpbluetooth scan: interrupted"
    assert "Traceback" not in err
