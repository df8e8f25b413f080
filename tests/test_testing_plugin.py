"""mpbluetooth.testing: the Recorder's waits, boards on a hub with faults, and the plugin
as pytest loads it (or not) in a user's project."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
)
from mpbluetooth.testing import Board, BoardExited, HubProcess, Recorder, WaitTimeout

from .conftest import ENV

ADVERTISER = """
import bluetooth, sys, time
ble = bluetooth.BLE()
ble.irq(lambda event, data: print("irq", event))
ble.active(True)
ble.gap_advertise(20000, b"\\x02\\x01\\x06")
print("advertising as", sys.argv[1])
"""


# --- Recorder ---------------------------------------------------------------------------
def test_recorder_waits_counts_takes_and_checks_order() -> None:
    recorder = Recorder(timeout=2)
    threading.Timer(0.05, recorder, (7, (1, memoryview(b"ab")))).start()
    assert recorder.wait(7) == (1, b"ab")  # memoryviews are copied
    recorder(1, (2,))
    recorder(7, (3, b""))
    assert recorder.wait(7, where=lambda d: d[0] == 3) == (3, b"")
    assert recorder.count(7) == 2 and recorder.of(1) == [(2,)]
    recorder.assert_order(7, 1, 7)
    with pytest.raises(AssertionError, match="not recorded in this order"):
        recorder.assert_order(1, 1)
    assert recorder.take(1) == (1, (2,))  # the oldest of that code; the others stay
    assert [code for code, _ in recorder.events] == [7, 7]
    with pytest.raises(WaitTimeout, match="no _IRQ_GATTC_SERVICE_RESULT"):
        recorder.wait(9, timeout=0.05)


def test_recorder_answers_from_inside_the_handler_and_keeps_only_what_it_is_told() -> None:
    recorder = Recorder(keep={1})
    recorder.on[4] = lambda data: 0x05 if data[1] == 20 else None
    assert recorder(4, (0, 20)) == 0x05 and recorder(4, (0, 21)) is None
    recorder(1, (0,))
    assert recorder.events == [(1, (0,))] and recorder.count(4) == 2
    recorder.wait_count(4, 2, timeout=0.05)


# --- boards on a hub ----------------------------------------------------------------------
def test_a_board_prints_stays_on_and_is_seen_by_the_test(
    board: Callable[..., Board], sim_hub: HubProcess, tmp_path: Path
) -> None:
    script = tmp_path / "advertiser.py"
    script.write_text(ADVERTISER)
    adv = board(script, "left")
    assert adv.wait_for_line("advertising") == "advertising as left"
    assert adv.wait_exit() == 0 and adv.returncode is None  # returned, radio on: stays on
    central, events = sim_hub.instance("central")
    central.gap_connect(*adv.config("mac"))
    events.wait(IRQ_PERIPHERAL_CONNECT)
    assert adv.events.wait(IRQ_CENTRAL_CONNECT)[0] >= 0
    adv.wait_for_line(f"irq {IRQ_CENTRAL_CONNECT}")
    assert len(sim_hub.members()) == 2
    sim_hub.kill(adv)  # its controller dies: the link ends on our side
    events.wait(IRQ_PERIPHERAL_DISCONNECT)


@pytest.mark.mpbluetooth_timing("instant")
def test_a_board_that_ends_says_so_while_the_test_waits(
    board: Callable[..., Board], tmp_path: Path
) -> None:
    script = tmp_path / "short.py"
    script.write_text("print('only this')\nraise SystemExit(3)\n")
    short = board(script)
    with pytest.raises(BoardExited, match="only this"):
        short.wait_for_line("never printed")
    assert short.wait_exit() == 3


def test_two_boards_and_a_fault_between_them(
    board: Callable[..., Board], sim_hub: HubProcess, tmp_path: Path
) -> None:
    script = tmp_path / "advertiser.py"
    script.write_text(ADVERTISER)
    first, second = board(script, "one"), board(script, "two")
    for each in (first, second):
        each.wait_for_line("advertising")
    central, events = sim_hub.instance("central")
    central.gap_connect(*second.config("mac"))
    events.wait(IRQ_PERIPHERAL_CONNECT)
    sim_hub.disconnect(central, second, 0x13)
    events.wait(IRQ_PERIPHERAL_DISCONNECT)
    second.events.wait(IRQ_CENTRAL_DISCONNECT)
    assert first.events.of(IRQ_CENTRAL_CONNECT) == []


# --- the plugin in a user's project -------------------------------------------------------
USER_TEST = """
def test_uses_the_plugin(sim_instances):
    (a, ea), (b, eb) = sim_instances(2)
    a.gap_advertise(20000, b"\\x02\\x01\\x06")
    b.gap_connect(*a.config("mac"))
    eb.wait(7)
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ENV,
    )  # fmt: skip


def test_the_plugin_loads_by_itself_and_switches_off(tmp_path: Path) -> None:
    on = _pytest(tmp_path)
    assert on.returncode == 0, on.stdout + on.stderr
    off = _pytest(tmp_path, "-p", "no:mpbluetooth")
    assert off.returncode == 1 and "fixture 'sim_instances' not found" in off.stdout
