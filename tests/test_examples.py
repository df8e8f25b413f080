"""Every example pair, run as `mpbluetooth run` runs it for a user: on the simulated link
in its default air timing (connection events, advertising intervals), not the instant
timing the rest of the suite uses for speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ENV

#: As a user runs them: the link's default timing (conftest sets instant for the suite).
AIR_ENV = {**ENV, "MPBLUETOOTH_SIM_TIMING": "air"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(
    *scripts: str, timeout: float = 30, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mpbluetooth",
            "run",
            *(str(EXAMPLES / s) for s in scripts),
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=AIR_ENV,
        cwd=cwd,
    )


def test_beacon_and_scanner() -> None:
    result = run("beacon.py", "scanner.py")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    found = [line for line in lines if line.startswith("[scanner] found mpy-beacon")]
    assert found and "ADV_SCAN_IND" in found[0]
    assert "[scanner] scan done: 1 device(s)" in lines
    assert any(line.startswith("[beacon ] beacon done after") for line in lines)


def test_advertising_helper_round_trip() -> None:
    code = (
        "import bluetooth, ble_advertising as a\n"
        "p = a.payload(name='sensor', services=[bluetooth.UUID(0x181A)], appearance=0x0300,"
        " manufacturer=b'\\xff\\xff\\x01\\x02')\n"
        "print(len(p), a.name(p), a.services(p), a.manufacturer(p))\n"
        "try:\n    a.payload(name='x' * 30)\nexcept ValueError as e:\n    print('error', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "25 sensor [UUID(0x181a)] b'\\xff\\xff\\x01\\x02'",
        "error advertising payload too large",
    ]


def test_sensor_pair() -> None:
    result = run("sensor_peripheral.py", "sensor_central.py")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    central = [line.split("] ", 1)[1] for line in lines if line.startswith("[sensor_central")]
    assert central[:3] == ["found mpy-temp", "connected", "subscribed, status 0"]
    notified = [float(line.split()[1]) for line in central if line.startswith("notified:")]
    assert len(notified) == 5 and notified == sorted(notified)  # the sensor's value rising
    assert central[-2:] == ["disconnected", "notifications: 5"]
    assert any(line.startswith("read: ") for line in central)
    assert "[sensor_peripheral] central disconnected" in lines


def test_uart_pair() -> None:
    result = run("uart_peripheral.py", "uart_console.py")
    assert result.returncode == 0, result.stdout + result.stderr
    console = [
        line.split("] ", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("[uart_console")
    ]
    assert console == [
        "> hello",
        "< hello from the uart",
        "> add 2 40",
        "< 42",
        "> bye",
        "< bye",
        "console closed",
    ]


def test_asyncio_pair() -> None:
    result = run("asyncio_peripheral.py", "asyncio_central.py")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[asyncio_central   ] counts: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in lines
    assert "[asyncio_peripheral] disconnected after counting to 10" in lines


def test_l2cap_file_transfer_pair() -> None:
    result = run("l2cap_receiver.py", "l2cap_sender.py")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[l2cap_receiver] channel open, mtu 512 peer mtu 512" in lines
    assert "[l2cap_sender  ] checksum matches: True" in lines
    sent = next(line for line in lines if line.startswith("[l2cap_sender  ] sent 20000 bytes"))
    assert int(sent.split(",")[1].split()[0]) > 0  # the sender stalled and resumed


def test_the_examples_run_in_air_timing() -> None:
    result = run("beacon.py", "scanner.py")
    assert "(air timing;" in result.stderr


def test_bonding_pair_reencrypts_after_restart_without_pairing(tmp_path: Path) -> None:
    """The README's promise: the first run pairs and bonds (both sides report it, after
    the keys are stored), the second re-encrypts from the stored keys, bonded, on both
    sides, without pairing again."""
    first = run("bonding_peripheral.py", "bonding_central.py", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run("bonding_peripheral.py", "bonding_central.py", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    for result, loaded in ((first, "0"), (second, "2")):
        lines = result.stdout.splitlines()
        for side in ("[bonding_peripheral] ", "[bonding_central   ] "):
            updates = [line for line in lines if line.startswith(side + "encryption update")]
            assert updates == [side + "encryption update: 1 0 1 16"], result.stdout
            assert side + "secrets loaded: " + loaded in lines
    # The second run found its keys: nothing new was stored on either side.
    assert second.stdout.count("secrets stored this run: 0") == 2
    assert (tmp_path / "bonding_peripheral_secrets.json").exists()


def test_the_readme_shows_the_example_user_test_as_it_is() -> None:
    """README's "Testing your device code" is examples/testing/test_sensor.py, verbatim."""
    test = (EXAMPLES / "testing" / "test_sensor.py").read_text().rstrip()
    assert test in (EXAMPLES.parent / "README.md").read_text()


def test_the_swarm_runs_warm_and_reports_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "swarm" / "swarm.py"), "--engine", "sim", "--count", "4"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 processes (warm) on sim" in result.stdout and "4 ok" in result.stdout
    assert "MiB PSS each" in result.stdout and "warm server: CPU" in result.stdout
