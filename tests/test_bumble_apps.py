"""Bumble's own apps, written by others, against our hub and a board on it: what a user
who already knows Bumble reaches for first (README, "Bumble's apps")."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpbluetooth.constants import IRQ_CENTRAL_CONNECT
from mpbluetooth.testing import Board, HubProcess

from .conftest import ENV

SENSOR = Path(__file__).resolve().parents[1] / "examples" / "testing" / "sensor.py"
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def test_bumble_gatt_dump_reads_a_boards_services_and_values(
    board: Callable[..., Board], sim_hub: HubProcess
) -> None:
    sensor = board(SENSOR)
    sensor.wait_for_line("advertising")
    address = sensor.address.hex(":").upper()
    result = subprocess.run(
        [sys.executable, "-m", "bumble.apps.gatt_dump", sim_hub.spec, f"{address}/P"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    out = _COLOUR.sub("", result.stdout)
    assert result.returncode == 0, out + result.stderr
    sensor.events.wait(IRQ_CENTRAL_CONNECT)  # the board's own handler saw the client
    # The board's Environmental Sensing service (0x181A) and its temperature (0x2A6E),
    # whose value is the sint16 hundredths of a degree the script wrote.
    lines = out.splitlines()
    assert any("UUID-16:2800 (Primary Service)" in line for line in lines)
    assert "1a18" in lines
    at = next(i for i, line in enumerate(lines) if "type=UUID-16:2A6E" in line)
    celsius = struct.unpack("<h", bytes.fromhex(lines[at + 1].strip()))[0] / 100
    assert 20 <= celsius < 40


def test_bumble_scan_and_controller_info_see_the_hub(
    board: Callable[..., Board], sim_hub: HubProcess
) -> None:
    sensor = board(SENSOR)
    sensor.wait_for_line("advertising")
    address = sensor.address.hex(":").upper()
    info = subprocess.run(
        [sys.executable, "-m", "bumble.apps.controller_info", sim_hub.spec],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert info.returncode == 0, info.stdout + info.stderr
    assert "HCI Version:" in _COLOUR.sub("", info.stdout), info.stdout
    scan = subprocess.Popen(
        [sys.executable, "-m", "bumble.apps.scan", sim_hub.spec],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert scan.stdout is not None
        heard = [_COLOUR.sub("", line) for line in _lines_until(scan.stdout, address, 200)]
        assert any(address in line for line in heard), heard
    finally:
        scan.terminate()
        scan.wait(10)


def _lines_until(stream: Any, text: str, limit: int) -> list[str]:
    """Lines read until one contains ``text`` (or ``limit`` lines, or the end)."""
    lines: list[str] = []
    for line in stream:
        lines.append(line)
        if text in _COLOUR.sub("", line) or len(lines) >= limit:
            break
    return lines
