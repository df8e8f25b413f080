"""Bumble's own apps, written by others, against our hub and a board on it: what a user
who already knows Bumble reaches for first (README, "Bumble's apps")."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
