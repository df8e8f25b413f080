"""Nothing outlives its parent: ``mpbluetooth run`` killed outright, interrupted with
Ctrl-C, and a pytest run that pytest-timeout ends with ``os._exit``, as a user does them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.cli import _warm
from mpbluetooth.sim.rootcanal import RootCanal, RootCanalError
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


def _warm_servers() -> set[int]:
    """The session's warm-start servers (``cli/_warm.py``): the first program started warm
    starts one with its environment, tag included, but it serves every later caller and
    ends when idle or with the session, not with that caller (its forks, the programs, do)."""
    folder = os.environ.get(_warm.ENV_WARM_DIR)
    servers = set()
    for path in Path(folder).glob("warm-*.pid") if folder else ():
        try:
            servers.add(int(path.read_text()))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return servers


def _tagged(tag: str) -> list[int]:
    """The processes whose environment holds ``tag`` (this one's children and theirs),
    but not a warm-start server."""
    found = []
    ignored = {os.getpid(), *_warm_servers()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ignored:
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.fixture
def tag() -> Iterator[str]:
    """A tag for the environment of the processes a test starts; whatever still carries it
    when the test ends, passed or failed, is killed."""
    tag = uuid.uuid4().hex
    yield tag
    for pid in _tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone meanwhile


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


def test_run_killed_outright_takes_its_scripts_and_folder_with_it(tmp_path: Path, tag: str) -> None:
    before = _run_dirs()
    run = _start_run(tmp_path, tag)
    assert len(_tagged(tag)) >= 3  # run and its two boards (started warm: and their forks)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(10)
    wait_until(lambda: not _tagged(tag), 15, "the boards to end with their parent")
    wait_until(lambda: _run_dirs() <= before, 5, "the run's folder to be removed")


def test_ctrl_c_stops_run_with_one_quiet_line_and_status_130(tmp_path: Path, tag: str) -> None:
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


def test_nothing_outlives_a_pytest_run_that_timeout_ends(tmp_path: Path, tag: str) -> None:
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


@pytest.fixture(scope="module")
def rootcanal_binary() -> str:
    """The RootCanal binary's real path, once it has been seen to start here."""
    try:
        with RootCanal() as rootcanal:
            assert rootcanal.binary is not None
            return os.path.realpath(rootcanal.binary)
    except RootCanalError as exc:
        pytest.skip(f"RootCanal cannot start here: {exc}")


def _executable(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


LINK_ON_ROOTCANAL = """\
import threading
from mpbluetooth import sim
link = sim.Link(engine="rootcanal")
print("up", flush=True)
threading.Event().wait()
"""

#: Everything that starts a RootCanal, and the line it prints once RootCanal listens.
ROOTCANAL_STARTERS = {
    "run": (["-m", "mpbluetooth", "run", "--engine", "rootcanal", "loop.py", "loop.py"], "up"),
    "rootcanal": (["-m", "mpbluetooth", "rootcanal"], "MPBLUETOOTH_TRANSPORT="),
    "board": (["-m", "mpbluetooth", "board", "--engine", "rootcanal"], "engine --transport"),
    "sim.Link": (["-c", LINK_ON_ROOTCANAL], "up"),
}


@pytest.mark.parametrize("starter", list(ROOTCANAL_STARTERS))
def test_rootcanal_ends_with_what_started_it_when_that_is_killed_outright(
    starter: str, tag: str, rootcanal_binary: str, tmp_path: Path
) -> None:
    args, ready = ROOTCANAL_STARTERS[starter]
    (tmp_path / "loop.py").write_text(LOOPING)
    parent = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={**ENV, "MPBT_TEST_TAG": tag}, start_new_session=True,
    )  # fmt: skip
    workdir: Path | None = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert ready in line, line
        binaries = [pid for pid in _tagged(tag) if _executable(pid) == rootcanal_binary]
        assert len(binaries) == 1, "no RootCanal among the started processes"
        workdir = Path(os.readlink(f"/proc/{binaries[0]}/cwd"))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not _tagged(tag), 20, f"RootCanal to end with {starter}")
        gone = workdir
        wait_until(lambda: not gone.exists(), 5, "RootCanal's folder to be removed")
    finally:
        parent.kill()
        parent.communicate(timeout=10)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_rootcanal_ends_with_a_process_that_exits_without_stopping_it(
    tag: str, rootcanal_binary: str
) -> None:
    code = (
        "import os; from mpbluetooth import sim; "
        "pid = sim.Link(engine='rootcanal').rootcanal.process.pid; "
        "print(os.readlink(f'/proc/{pid}/cwd'))"
    )  # its folder, and it exits without closing the link
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**ENV, "MPBT_TEST_TAG": tag},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    workdir = Path(result.stdout.strip())
    try:
        wait_until(lambda: not _tagged(tag), 20, "RootCanal to end with the process")
        wait_until(lambda: not workdir.exists(), 5, "RootCanal's folder to be removed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


HOLDS_A_BOARD = """\
import sys, threading
from mpbluetooth.board.process import BoardProcess
board = BoardProcess(sys.argv[1])
print(board.device, flush=True)
threading.Event().wait()
"""


def test_a_board_process_ends_with_its_parent_killed_outright(tag: str, tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", HOLDS_A_BOARD, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**ENV, "MPBT_TEST_TAG": tag}, start_new_session=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().startswith("/dev/")
        assert len(_tagged(tag)) == 2  # the parent and its `mpbluetooth board`
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not _tagged(tag), 20, "the board to end with its parent")
    finally:
        parent.kill()
        parent.communicate(timeout=10)
