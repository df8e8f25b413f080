"""Every command the README shows is run, by a test here or one named here, except those
that need hardware or install packages. A command added to the README without a test
fails ``test_every_readme_command_is_accounted_for`` until it gets one."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.testing import wait_until

from .conftest import ENV
from .test_cli import CENTRAL, PERIPHERAL

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

RUN_HERE = "run here"
HARDWARE = "needs a controller on usb:0"
INSTALLS = "installs packages (CI and tox run it in a fresh venv)"
NAME = "names a command or an API, not a command line"

_TWO_BOARDS = "tests/test_board_repl_conformance.py (two boards on a hub, run-multitests)"
_PACKAGE = (
    "tests/test_board_repl.py::test_a_package_copied_into_lib_is_imported_by_a_script_that_"
    "advertises"
)

#: Each command line (or command-like span) of the README, and where it is held.
COMMANDS: dict[str, str] = {
    # Quick start and "Several processes on one simulated link": run here.
    "python3 -m pip install . && python3 -m mpbluetooth run examples/sensor_peripheral.py "
    "examples/sensor_central.py": RUN_HERE,
    "mpbluetooth sim-hub": RUN_HERE,
    "MPBLUETOOTH_TRANSPORT=tcp-client:127.0.0.1:10723 mpbluetooth-python peripheral.py &": (
        RUN_HERE
    ),
    "MPBLUETOOTH_TRANSPORT=tcp-client:127.0.0.1:10723 mpbluetooth-python central.py": RUN_HERE,
    "mpbluetooth sim-ctl list": RUN_HERE,
    "mpbluetooth --help": RUN_HERE,
    "mpbluetooth --version": RUN_HERE,
    "mpbluetooth-python -h": RUN_HERE,
    "pytest": RUN_HERE,
    "pytest --mpbluetooth-timing instant": RUN_HERE,
    "mpbluetooth rootcanal": "tests/test_rootcanal.py (serves one, skipped where it cannot run)",
    "mpbluetooth run --rootcanal HOST:PORT A.py": (
        "tests/test_run_shared_engine.py (two runs on one RootCanal; skips where it cannot)"
    ),
    "pytest -p no:mpbluetooth": (
        "tests/test_testing_plugin.py::test_the_plugin_loads_by_itself_and_switches_off"
    ),
    "pytest --timeout N --timeout-method thread": (
        "tests/test_cli_lifecycle.py::test_nothing_outlives_a_pytest_run_that_timeout_ends"
    ),
    "bumble-scan tcp-client:127.0.0.1:10723": (
        "tests/test_bumble_apps.py::test_bumble_scan_and_controller_info_see_the_hub"
    ),
    'python3 -m pip install -c constraints.txt ".[test]" && python3 -m pytest': (
        "the suite itself: CI runs it in a fresh venv"
    ),
    "mpbluetooth scan usb:0": HARDWARE,
    "MPBLUETOOTH_TRANSPORT=usb:0 mpbluetooth-python app.py": HARDWARE,
    'pip install "mpbluetooth[rich]"': INSTALLS,
    'pip install "mpbluetooth[rootcanal]"': INSTALLS,
    "pip install --group dev": INSTALLS,
    "pip install mpbluetooth": INSTALLS,
    "pip install pytest": INSTALLS,
    "tox": INSTALLS,
    "tox -e test": INSTALLS,
    'python3 -m pip install ".[bench]" && python3 -m benchmarks': INSTALLS,
    "mpbluetooth-python -m mip install": "tests/test_mip.py (a local index, and offline)",
    "mpbluetooth info --board esp32": (
        "tests/test_boards_runtime.py::test_info_board_prints_the_profile"
    ),
    "mpbluetooth run --board esp32": (
        "tests/test_boards_runtime.py::test_run_board_esp32_notifies_handle_0_to_a_central"
    ),
    "mpbluetooth-python --strict": (
        "tests/test_boards_runtime.py::test_strict_mode_releases_the_view_at_return"
    ),
    "mpbluetooth sim-hub &": RUN_HERE,
    # "Use it like a board" (issue 27): its own tests hold these.
    "mpbluetooth board": "tests/test_board_repl.py (BoardProcess starts it)",
    "mpbluetooth board --engine rootcanal": (
        "tests/test_board_repl_keys.py::test_a_board_can_start_a_rootcanal_that_others_join"
    ),
    "mpbluetooth board --root ./board --hub tcp-client:127.0.0.1:10723": _TWO_BOARDS,
    "mpbluetooth board --root ./other --hub tcp-client:127.0.0.1:10723": _TWO_BOARDS,
    "./run-multitests.py -t /dev/pts/7 -t /dev/pts/8 multi_bluetooth/ble_characteristic.py": (
        _TWO_BOARDS
    ),
    'mpremote connect /dev/pts/7 exec "print(1)"': (
        "tests/test_board_repl.py::test_mpremote_exec_prints_1"
    ),
    "mpremote connect /dev/pts/7 fs mkdir :lib + fs cp -r mypkg :lib/": _PACKAGE,
    "mpremote connect /dev/pts/7 run app.py": _PACKAGE,
    "mpremote connect /dev/pts/7 soft-reset": (
        "tests/test_board_repl.py::test_soft_reset_ends_a_program_and_runs_main_py_again"
    ),
    "mpremote connect /dev/pts/7 repl": "tests/test_board_repl_keys.py (the REPL key by key)",
}
for _name in (
    "mpbluetooth", "mpbluetooth COMMAND --help", "mpbluetooth demo [--timeout S]",
    "mpbluetooth info [--transport SPEC]", "mpbluetooth rootcanal [--port P] [--host H]",
    "mpbluetooth run", "mpbluetooth run --engine rootcanal A.py B.py",
    "mpbluetooth run A.py [B.py ...]", "mpbluetooth run: interrupted", "mpbluetooth scan",
    "mpbluetooth sim-ctl", "mpbluetooth-python", "mpbluetooth-python --no-ROW",
    "mpbluetooth-python app.py",
    "mpbluetooth-python [-u] [--strict] [-c CODE \\| -m MOD \\| FILE \\| -] [args]",
    "mpbluetooth-irq",  # a thread's name
    "mpbluetooth board [--root DIR] [--hub SPEC \\| --transport SPEC \\| --engine rootcanal] "
    "[--board NAME] [--tcp H:P] [--link PATH]",
    "mpbluetooth scan [TRANSPORT] [--duration S] [--plain] [--passive] [--min-rssi DBM] "
    "[--json] [--transport SPEC]",
    "mpbluetooth sim-ctl [--hub SPEC] list\\|loss\\|latency\\|move\\|out-of-range\\|disconnect"
    "\\|kill ...",
    "mpbluetooth sim-hub [--tcp H:P] [--unix PATH] [--pty PATH] [--timing air\\|instant] "
    "[--loss R] [--latency MS] [--pdus-per-event N] [--seed N]",
):  # fmt: skip
    COMMANDS[_name] = NAME

_COMMAND = re.compile(r"(MPBLUETOOTH_\w+=\S+ )*(mpbluetooth|bumble-|pytest|python3? -m|pip|tox)\b")


def readme_commands() -> set[str]:
    """Each line of the README's ``sh`` blocks, and each inline span that starts as a
    command does (API names such as ``mpbluetooth.open`` are not commands)."""
    text = README.read_text(encoding="utf-8")
    found = {
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.splitlines()
    }
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if _COMMAND.match(span) and not span.startswith("mpbluetooth."):
            found.add(span)
    return found - {""}


def test_every_readme_command_is_accounted_for() -> None:
    shown = readme_commands()
    assert sorted(shown - COMMANDS.keys()) == [], "README commands with no test: add them here"
    assert sorted(COMMANDS.keys() - shown) == [], "no longer in the README: drop them here"


def run(*args: str, cwd: Path = REPO, timeout: float = 120, **env: str) -> str:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**ENV, **env}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quick_start_runs_the_sensor_pair() -> None:
    # The package is installed in this venv: the second half of the line.
    out = run(
        sys.executable, "-m", "mpbluetooth", "run",
        "examples/sensor_peripheral.py", "examples/sensor_central.py",
    )  # fmt: skip
    assert "[sensor_central" in out


def test_help_version_and_the_launchers_help() -> None:
    assert "Commands:" in run(sys.executable, "-m", "mpbluetooth", "--help")
    assert run(sys.executable, "-m", "mpbluetooth", "--version").startswith("mpbluetooth ")
    assert "usage: mpbluetooth-python" in run(sys.executable, "-m", "mpbluetooth.cli.python", "-h")


@pytest.fixture
def default_hub_elsewhere() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``mpbluetooth sim-hub`` as the README starts it, on a free port instead of 10723
    (other test runs on this machine may hold the default)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", "sim-hub", "--tcp", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert hub.stderr is not None and "listening on tcp" in hub.stderr.readline()
        yield f"tcp-client:127.0.0.1:{port}", hub
    finally:
        if hub.poll() is None:
            hub.terminate()
        hub.wait(30)


def test_several_processes_on_one_simulated_link(
    default_hub_elsewhere: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    spec, _ = default_hub_elsewhere
    (tmp_path / "peripheral.py").write_text(PERIPHERAL)
    (tmp_path / "central.py").write_text(CENTRAL)
    python = [sys.executable, "-m", "mpbluetooth.cli.python"]
    peripheral = subprocess.Popen(  # the README's `... peripheral.py &`
        [*python, "peripheral.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**ENV, "MPBLUETOOTH_TRANSPORT": spec},
    )  # fmt: skip
    try:
        assert peripheral.stdout is not None and peripheral.stdout.readline() == "advertising\n"
        listing = run(sys.executable, "-m", "mpbluetooth", "sim-ctl", "--hub", spec, "list")
        assert "tcp-1" in listing
        out = run(*python, "central.py", cwd=tmp_path, MPBLUETOOTH_TRANSPORT=spec)
        assert "connected" in out and "disconnected" in out
        assert peripheral.wait(30) == 0
    finally:
        if peripheral.poll() is None:
            peripheral.kill()
            peripheral.wait()


@pytest.mark.parametrize("extra", [(), ("--mpbluetooth-timing", "instant")])
def test_the_example_user_test_runs_with_pytest(tmp_path: Path, extra: tuple[str, ...]) -> None:
    for name in ("sensor.py", "test_sensor.py"):
        shutil.copy(REPO / "examples" / "testing" / name, tmp_path)
    out = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, cwd=tmp_path)
    assert "1 passed" in out


def test_a_hub_started_by_the_readme_stops_on_ctrl_c(
    default_hub_elsewhere: tuple[str, subprocess.Popen[str]],
) -> None:
    _, hub = default_hub_elsewhere
    hub.send_signal(signal.SIGINT)
    wait_until(lambda: hub.poll() is not None, 30, "the hub to stop")
    assert hub.returncode == 130


def test_the_readme_port_is_the_default_hubs() -> None:
    # The commands above replace it by a free port; the hub's own default is checked
    # against sim.hub in test_cli_help.py.
    from mpbluetooth.cli._options import DEFAULT_HUB_SPEC

    assert DEFAULT_HUB_SPEC == "tcp-client:127.0.0.1:10723"
