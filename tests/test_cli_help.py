"""The ``mpbluetooth`` command explains itself: help, version, bad arguments, environment.

Every case runs the command as a user does, in its own process, with no
``MPBLUETOOTH_*`` variable inherited from the test run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.cli.scan import render

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("board", "demo", "info", "rootcanal", "run", "scan", "sim-ctl", "sim-hub")
BEACON = str(REPO / "examples" / "beacon.py")
ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **env},
    )


def test_help_lists_every_command_and_every_environment_variable() -> None:
    from mpbluetooth import cli

    assert {c.replace("-", "_") for c in COMMANDS} == set(cli.COMMANDS)
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert re.search(rf"^  {command} +\w", result.stdout, re.M), command
    for name in variables_read():
        assert name in result.stdout
    assert "Examples:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_a_description_and_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    usage, _, rest = result.stdout.partition("\n\n")
    assert usage.startswith(f"Usage: mpbluetooth {command} ")
    description = rest.split("\n\n")[0].strip()
    assert len(description) > 20, result.stdout
    assert f"\n    mpbluetooth {command}" in result.stdout.split("Examples:")[1]


def test_run_help_says_a_failing_script_stops_the_others() -> None:
    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "A script that fails (a non-zero exit status, an uncaught exception) stops all" in text


def test_version_names_the_package_bumble_and_python() -> None:
    import mpbluetooth

    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(
        rf"mpbluetooth {re.escape(mpbluetooth.__version__)} \(Bumble [\w.]+, Python [\d.]+\)\n",
        result.stdout,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["scan", "--duration", "-1"], "'--duration': -1.0 is not in the range x>=0"),
        (["demo", "--timeout", "-3"], "'--timeout': -3.0 is not in the range x>0"),
        (["run", "--timeout", "0", "a.py"], "'--timeout': 0.0 is not in the range x>0"),
        (["run"], "Missing argument"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["scan", "--bogus"], "--bogus"),
        (["sim-hub", "--tcp", "nowhere"], "expected HOST:PORT, got 'nowhere'"),
        (["sim-hub", "--tcp", "127.0.0.1:70000"], "port 70000 is not in 0..65535"),
        (["sim-hub", "--loss", "150%"], "a loss rate is in [0, 1)"),
        (["sim-hub", "--latency", "-5"], "'--latency': -5.0 is not in the range x>=0"),
        (["sim-hub", "--pdus-per-event", "0"], "'--pdus-per-event': 0 is not in the range x>=1"),
        (["sim-ctl", "loss", "1.5"], "a loss rate is in [0, 1)"),
        (["run", "-m"], "-m needs a module name"),
        (["run", "stdin=nofile.txt", BEACON], "no such stdin file: nofile.txt"),
        (["run", "address=f2:00", BEACON], "address=f2:00: expected six bytes"),
        (["run", "--transport", "usb:0", "--hub", "unix:/x", BEACON], "give one"),
        (["run", "--loss", "10%", "--transport", "usb:0", BEACON], "--loss set the link"),
        (["run", "--timing", "instant", "--hub", "unix:/x", BEACON], "not with --hub"),
        (["run", "--rootcanal", "nowhere", BEACON], "expected HOST:PORT, got 'nowhere'"),
        (["run", "--rootcanal", ":0", BEACON], "port 0: give the port RootCanal's HCI"),
        (["run", "--rootcanal", ":6402", "--hub", "unix:/x", BEACON], "--hub and --rootcanal"),
        (["run", "--engine", "sim", "--rootcanal", ":6402", BEACON], "not with --engine sim"),
        (["run", "--engine", "rootcanal", "--hub", "unix:/x", BEACON], "not with --hub"),
        (["run", "--seed", "1", "--rootcanal", ":6402", BEACON], "not with --rootcanal"),
        (["run", "--timing", "air", "--engine", "rootcanal", BEACON], "not with --engine rootc"),
        (["sim-ctl", "loss", "0.1", "tcp-1"], "give two members or none, not 1"),
        (["sim-ctl", "disconnect", "a", "b", "soon"], "'soon' is not a number"),
        (["rootcanal", "--port", "0"], "0 is not in the range 1<=x<=65535"),
        (["--log-level", "loud", "demo"], "'loud': expected one of debug, info"),
    ],
)
def test_a_bad_argument_is_one_clear_line(args: list[str], says: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mpbluetooth") and says in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "--hub", "tcp-client:127.0.0.1:1", BEACON], "run: no hub answers at tcp-"),
        (["run", "--rootcanal", "127.0.0.1:1", BEACON], "run: no RootCanal answers at 127.0.0.1:1"),
        (["sim-hub", "--unix", "/nonexistent/dir/x.sock"], "unix /nonexistent/dir/x.sock"),
    ],
)
def test_a_failure_to_start_is_one_clear_line(args: list[str], says: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


def test_sim_ctl_against_something_that_is_not_a_hub_says_so(web_server: str) -> None:
    spec = f"tcp-client:{web_server}"
    result = run_cli("sim-ctl", "--hub", spec, "list")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"no answer from a hub at {spec} (what answered is not a hub" in result.stderr


def test_sim_ctl_takes_a_loss_rate_as_run_does(empty_hub: str) -> None:
    result = run_cli("sim-ctl", "--hub", empty_hub, "loss", "10%")
    # Parsed and sent: this (instant) hub answers that loss needs air timing.
    assert "loss needs air timing" in result.stderr, result.stderr


def test_run_on_a_controller_that_will_not_open_says_one_line_per_script() -> None:
    result = run_cli("run", "--transport", "serial:/dev/mpbluetooth-no-such-port", BEACON)
    assert result.returncode == 1
    said = [line for line in result.stdout.splitlines() if line.startswith("[beacon]")]
    assert len(said) == 1, result.stdout
    assert "beacon.py, line" in said[0] and "cannot open transport 'serial:" in said[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unknown_log_level_in_the_environment_is_said_in_any_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", "-c", "import bluetooth"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "MPBLUETOOTH_LOG": "bogus"},
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1 and "MPBLUETOOTH_LOG=bogus: expected one of" in (
        result.stderr
    )
    command = run_cli("demo", MPBLUETOOTH_LOG="bogus")
    assert command.returncode == 0 and "MPBLUETOOTH_LOG=bogus" in command.stderr


def test_a_bad_environment_variable_names_the_variable() -> None:
    result = run_cli("sim-hub", MPBLUETOOTH_SIM_TIMING="fast")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "MPBLUETOOTH_SIM_TIMING" in result.stderr and "'fast'" in result.stderr


def test_a_serial_error_says_its_errno_once() -> None:
    result = run_cli("info", "--transport", "serial:/dev/mpbluetooth-no-such-port")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mpbluetooth info: [Errno 2] cannot open transport")
    assert result.stderr.count("Errno") == 1, result.stderr


def test_every_command_imports_without_termios() -> None:
    """What Windows lacks (``termios``) is imported only by the commands that use it, when
    they run: every command module imports and every help renders without it."""
    prelude = "import sys; sys.modules['termios'] = None; sys.modules['tty'] = None\n"
    code = prelude + (
        "import importlib, mpbluetooth.cli\n"
        "for name in mpbluetooth.cli.COMMANDS:\n"
        "    importlib.import_module('mpbluetooth.cli.' + name)\n"
        f"for name in {list(COMMANDS)!r}:\n"
        "    assert mpbluetooth.cli.main([name, '--help']) == 0\n"
        "assert 'mpbluetooth.sim.hub' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_help_defaults_are_the_simulators() -> None:
    """The help's defaults are copies (the hub is not imported for a help text)."""
    from mpbluetooth.sim import hub, link

    text = " ".join(run_cli("sim-hub", "--help").stdout.split())
    host, port = hub.DEFAULT_TCP
    assert f"[default: {host}:{port} " in text
    assert f"--timing [{'|'.join(link.TIMINGS)}]" in text
    assert f"[default: {link.DEFAULT_PDUS_PER_EVENT}; x>=1]" in text


#: Set by ``run`` for its scripts, not by users (the docs table lists it, the help not).
INTERNAL_VARIABLES = {"MPBLUETOOTH_STAY_ON", "MPBLUETOOTH_LIFELINE"}


def variables_read() -> set[str]:
    """Every ``MPBLUETOOTH_*`` variable the package's source names, except the compat rows'
    switches (one ``MPBLUETOOTH_<ROW>`` line covers them) and the internal ones."""
    from mpbluetooth.compat.features import FEATURES

    read = set()
    for path in (REPO / "mpbluetooth").rglob("*.py"):
        read |= set(re.findall(r"MPBLUETOOTH_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    rows = {feature.env for feature in FEATURES.values()}
    placeholders = {"MPBLUETOOTH_NAME", "MPBLUETOOTH_ROW"}  # MPBLUETOOTH_<ROW> in prose
    return read - rows - INTERNAL_VARIABLES - placeholders


def test_every_environment_variable_is_in_the_help_and_the_docs_table() -> None:
    helped = set(re.findall(r"MPBLUETOOTH_[A-Z0-9_]*[A-Z0-9]", run_cli("--help").stdout))
    assert variables_read() == helped
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Environment variables") :]
    for name in helped | INTERNAL_VARIABLES | {"MPBLUETOOTH_<ROW>"}:
        assert f"`{name}`" in table, name


@pytest.fixture
def empty_hub(tmp_path: Path) -> Iterator[str]:
    """A sim-hub of our own on a unix socket, with no one on it."""
    path = tmp_path / "hub.sock"
    hub = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", "sim-hub", "--unix", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert hub.poll() is None and time.monotonic() < deadline, "no sim-hub socket"
            time.sleep(0.05)  # polling for a file another process creates
        yield f"unix:{path}"
    finally:
        hub.terminate()
        hub.wait(10)


def test_scan_with_no_one_in_reach_says_so_with_a_hint(empty_hub: str) -> None:
    result = run_cli("scan", "--duration", "0.5", MPBLUETOOTH_TRANSPORT=empty_hub)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        f"no devices seen in 0.5 s (hint: is anything advertising within reach of {empty_hub}?"
        in result.stderr
    )


def test_info_shows_addresses_as_scan_does(hub_spec: str) -> None:
    result = run_cli("info", "--transport", hub_spec)
    assert result.returncode == 0, result.stderr
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert ADDRESS.match(fields["public address"]) and ADDRESS.match(fields["random address"])


def test_a_wide_scan_table_fits_the_terminal() -> None:
    rows = [("F2:00:00:00:00:01", "public", "a-very-long-device-name" * 3, "-40", "0.1s ago", "9")]
    table = render(rows, width=60)
    assert all(len(line) <= 60 for line in table.splitlines())
    assert ADDRESS.match(table.splitlines()[1].split()[0])
    assert "…" in table and "-40" in table
    assert render(rows) == render(rows, width=None)
    assert "a-very-long-device-name" * 3 in render(rows)


def test_scan_renders_with_rich_when_installed() -> None:
    pytest.importorskip("rich")
    from io import StringIO

    from rich.console import Console

    from mpbluetooth.cli.scan import render_rich

    out = StringIO()
    rows = [("F2:00:00:00:00:01", "public", "sensor" * 20, "-40", "0.1s ago", "9")]
    Console(file=out, width=70).print(render_rich(rows, "1 device(s)", 70))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 70 for line in lines)
    assert "F2:00:00:00:00:01" in out.getvalue() and "1 device(s)" in lines[-1]
    assert "…" in lines[1] and lines[1].rstrip().endswith("9")  # every column kept


def test_verbose_logs_on_stderr_and_wins_over_the_environment() -> None:
    quiet = run_cli("demo", MPBLUETOOTH_LOG="error")
    loud = run_cli("-v", "demo", MPBLUETOOTH_LOG="error")
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert " INFO: " not in quiet.stderr and " INFO: " in loud.stderr
