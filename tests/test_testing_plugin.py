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
    assert adv.address.hex(":").upper() in repr(adv)  # addresses are shown upper case
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


# --- what a user's failing test shows, and how long teardown takes ------------------------
BOARD_TESTS = """
from pathlib import Path

import pytest

from mpbluetooth.constants import IRQ_PERIPHERAL_CONNECT

ADVERTISER = Path(__file__).with_name("advertiser.py")


@pytest.mark.mpbluetooth_timing("air")  # a hub of its own: the module's is instant
def test_connected_then_done(board, sim_hub):
    adv = board(ADVERTISER, "x")
    adv.wait_for_line("advertising")
    central, events = sim_hub.instance("central")
    central.gap_connect(*adv.config("mac"))
    events.wait(IRQ_PERIPHERAL_CONNECT)
    sim_hub.move("central", 1.0)  # the test's name for its own instance
    sim_hub.move("advertiser", 2.0)  # and its board's


def test_fails_with_the_board_output(board):
    adv = board(ADVERTISER, "shown-in-the-report")
    adv.wait_for_line("advertising")
    assert False, "the test's own failure"


def test_hub_pid_one(sim_hub):
    Path("pids").open("a").write(f"{sim_hub.process.pid}\\n")


def test_hub_pid_two(sim_hub, sim_link):
    Path("pids").open("a").write(f"{sim_hub.process.pid}\\n")
    Path("timing").write_text(sim_link.timing)


def test_a_missing_script(board):
    board("nope.py")
"""


def test_a_users_board_tests_report_and_tear_down_quickly(tmp_path: Path) -> None:
    (tmp_path / "advertiser.py").write_text(ADVERTISER)
    (tmp_path / "test_boards.py").write_text(BOARD_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmpbluetooth_hub_scope = module\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-vv", "-p", "no:cacheprovider", "--durations=0",
         "--mpbluetooth-timing", "instant", str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    out = result.stdout
    assert "2 failed, 3 passed" in out, out + result.stderr
    # The failure shows what the board printed, and a missing script is one clear error.
    assert "board advertiser printed" in out and "advertising as shown-in-the-report" in out
    assert "board('nope.py'): no such script" in out and "raised in repr()" not in out
    # The hub was shared by the module's tests, and the command line set the timing.
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) == 2 and pids[0] == pids[1]
    assert (tmp_path / "timing").read_text() == "instant"
    # Teardown: the test's central closes before the board stops, so no 2 s power-off.
    teardown = [
        float(line.split("s ")[0])
        for line in out.splitlines()
        if "teardown" in line and "test_connected_then_done" in line
    ]
    assert teardown and teardown[0] < 0.5, out  # was 2.1 s; about 0.06 s on a quiet machine
    assert "did not stop cleanly" not in out + result.stderr


def test_expect_looks_after_its_last_match_and_wait_for_line_counts(
    board: Callable[..., Board], tmp_path: Path
) -> None:
    script = tmp_path / "lines.py"
    script.write_text("for word in ('a', 'b', 'a', 'c'):\n    print(word)\n")
    lines = board(script)
    assert lines.wait_exit() == 0
    assert lines.wait_for_line("a", count=2) == "a" and lines.wait_for_line("c") == "c"
    assert lines.expect("b") == "b"
    assert lines.expect("a") == "a"  # the third line: the first "a" is behind the cursor
    with pytest.raises(BoardExited, match="'b' after line 3"):
        lines.expect("b", timeout=1)


def test_wait_timeout_names_events_and_lists_what_came() -> None:
    recorder = Recorder(timeout=0.01)
    recorder(IRQ_CENTRAL_CONNECT, (0, 0, memoryview(bytes.fromhex("f200000000aa"))))
    with pytest.raises(WaitTimeout) as failure:
        recorder.wait(15)
    message = str(failure.value)
    assert message.startswith("no _IRQ_GATTC_READ_RESULT within 0.01 s")
    assert "_IRQ_CENTRAL_CONNECT(0, 0, F2:00:00:00:00:AA)" in message
    with pytest.raises(AssertionError, match="_IRQ_CENTRAL_DISCONNECT, _IRQ_CENTRAL_CONNECT"):
        recorder.assert_order(IRQ_CENTRAL_DISCONNECT, IRQ_CENTRAL_CONNECT)


def test_a_board_starts_warm_and_its_events_still_reach_the_test(
    board: Callable[..., Board], sim_hub: HubProcess, tmp_path: Path
) -> None:
    """A board is a fork of the warm server (``cli/_warm.py``, entry ``board``), with the
    event pipe passed along under its own number."""
    script = tmp_path / "warm.py"
    script.write_text(
        "import sys\n"
        "print('bumble before the first line:', 'bumble.hci' in sys.modules)\n"
        "import bluetooth\n"
        "ble = bluetooth.BLE()\n"
        "ble.irq(lambda event, data: None)\n"
        "ble.active(True)\n"
        "ble.gap_advertise(20000, b'\\x02\\x01\\x06')\n"
        "print('advertising')\n"
    )
    adv = board(script)
    adv.wait_for_line("advertising")
    assert "bumble before the first line: True" in adv.output
    central, events = sim_hub.instance("central")
    central.gap_connect(*adv.config("mac"))
    events.wait(IRQ_PERIPHERAL_CONNECT)
    assert adv.events.wait(IRQ_CENTRAL_CONNECT)[0] >= 0  # through the passed event pipe
