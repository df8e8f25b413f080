"""MicroPython's run-multitests.py drives two boards through their serial devices
(``-t /dev/pts/N``), the pyboard path its CI takes for boards on real hardware: one test
of MicroPython's suite and one of aioble's, through ``tools/board_conformance.py`` (which
runs the whole suites). Skipped where the suites are not beside the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO.parent / "shared" / "conformance"

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="a board needs a pty"),
    pytest.mark.skipif(
        not (CONFORMANCE / "micropython" / "tests" / "run-multitests.py").is_file(),
        reason=f"no conformance suites at {CONFORMANCE}",
    ),
]


def board_conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "board_conformance.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("suite", "test"), [("micropython", "ble_gattc_discover_services"), ("aioble", "ble_notify")]
)
def test_run_multitests_drives_two_boards_on_the_hub(suite: str, test: str) -> None:
    result = board_conformance("--suite", suite, "-k", test)
    assert result.stdout.endswith("board conformance: 1 passed, 0 failed\n"), (
        result.stdout + result.stderr
    )


def test_run_multitests_drives_two_boards_on_rootcanal() -> None:
    from mpbluetooth.sim.rootcanal import RootCanalError, find_binary

    try:
        find_binary()
    except RootCanalError as exc:
        pytest.skip(str(exc))
    # No connection in it: issue 22's disconnect race on RootCanal cannot make it flaky.
    result = board_conformance(
        "--engine", "rootcanal", "--suite", "micropython", "-k", "ble_gap_advertise"
    )
    if "cannot start" in result.stderr:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.stdout.endswith("board conformance: 1 passed, 0 failed\n"), (
        result.stdout + result.stderr
    )
