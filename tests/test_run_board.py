"""``mpbluetooth run``: a board that stays on, and per-script settings (env, stdin, -m, address)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BEACON = """
import bluetooth
ble = bluetooth.BLE()
ble.active(True)
name = b"stay-on"
ble.gap_advertise(100000, bytes((2, 0x01, 0x06, len(name) + 1, 0x09)) + name)
print("beacon returns")
"""

SCANNER = """
import time, bluetooth
from micropython import const
_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
names, state = set(), {"done": False}
def irq(event, data):
    if event == _IRQ_SCAN_RESULT:
        adv = bytes(data[4])
        i = 0
        while i + 1 < len(adv):
            if adv[i + 1] == 0x09:
                names.add(adv[i + 2 : i + 1 + adv[i]].decode())
            i += 1 + adv[i]
    elif event == _IRQ_SCAN_DONE:
        state["done"] = True
time.sleep_ms(5000)  # the beacon's script has long returned
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
ble.gap_scan(1500, 30000, 30000)
while not state["done"]:
    time.sleep_ms(10)
print("seen", sorted(names))
ble.active(False)
"""


def mpbluetooth(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
    )  # fmt: skip


def test_a_beacon_that_returned_is_seen_5_s_later(tmp_path: Path) -> None:
    (tmp_path / "beacon.py").write_text(BEACON)
    (tmp_path / "scanner.py").write_text(SCANNER)
    result = mpbluetooth("run", "beacon.py", "scanner.py", "--timeout", "60", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[beacon ] beacon returns" in result.stdout.splitlines()
    assert "[scanner] seen ['stay-on']" in result.stdout.splitlines()
    assert "stays on" in result.stderr and "every program has returned" in result.stderr


def test_a_lone_board_that_stays_on_runs_until_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "beacon.py").write_text(BEACON)
    result = mpbluetooth("run", "beacon.py", "--timeout", "3", cwd=tmp_path)
    assert result.returncode == 124, result.stderr
    assert "stays on" in result.stderr and "stopped after --timeout 3 s" in result.stderr


def test_a_script_without_radio_still_ends(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("print('bye')\n")
    result = mpbluetooth("run", "plain.py", "--timeout", "30", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "[plain] bye\n"


def test_per_script_env_stdin_module_and_address(tmp_path: Path) -> None:
    (tmp_path / "answers.txt").write_text("from a file\n")
    (tmp_path / "menu.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            print(os.environ.get("ROLE"), sys.stdin.readline().strip())
            """
        )
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "board.py").write_text(
        "import bluetooth\nble = bluetooth.BLE()\nble.active(True)\n"
        "t, mac = ble.config('mac')\nprint(__name__, ':'.join('%02x' % b for b in mac))\n"
        "ble.active(False)\n"
    )
    result = mpbluetooth(
        "run",
        "ROLE=left", "stdin=answers.txt", "menu.py",
        "ROLE=right", "input=typed\n", "menu.py",
        "address=f2:00:00:00:00:2a", "-m", "pkg.board",
        "--timeout", "60",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = set(result.stdout.splitlines())
    assert {"[menu  ] left from a file", "[menu#2] right typed"} <= lines
    assert "[board ] __main__ f2:00:00:00:00:2a" in lines


def test_settings_after_the_last_script_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    result = mpbluetooth("run", "a.py", "ROLE=x", cwd=tmp_path)
    assert result.returncode == 2 and "settings after the last script" in result.stderr
