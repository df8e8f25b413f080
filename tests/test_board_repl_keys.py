"""The board's REPL key by key, as a terminal (mpremote repl, picocom, Thonny) types it:
the line editor, paste mode, raw-paste's refusal, Ctrl-C's rules, soft resets, tracebacks,
``sys.path``, and a serial line that does not queue output for nobody."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.board.process import BoardProcess
from mpbluetooth.testing import wait_until

from .test_board_repl import WAIT_S, Terminal, mpremote

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a board needs a pty")

BAD = """\
def divide():
    return 1 / 0
"""

MAIN = """\
print("early bird")
open("main-ran", "w").close()
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    (folder / "lib").mkdir()
    (folder / "lib" / "bad.py").write_text(BAD)
    (folder / "main.py").write_text(MAIN)
    return folder


@pytest.fixture(scope="module")
def keys_board(root: Path, hub_spec: str) -> Iterator[BoardProcess]:
    board = BoardProcess(root, hub_spec, link=root.parent / "keys-board-link")
    wait_until(lambda: (root / "main-ran").exists(), WAIT_S, "main.py at power-up")
    yield board
    board.stop()


@pytest.fixture
def term(keys_board: BoardProcess) -> Iterator[Terminal]:
    terminal = Terminal(keys_board.device)
    yield terminal
    terminal.close()


def raw(term: Terminal) -> None:
    term.send(b"\r\x03\x01")
    term.read_until(b"raw REPL; CTRL-B to exit\r\n>")


def test_output_written_before_a_host_opened_the_line_is_not_queued(term: Terminal) -> None:
    shown = term.friendly()
    assert b"early bird" not in shown + term.seen


def test_the_line_editor_echoes_erases_recalls_and_indents(term: Terminal) -> None:
    term.friendly()
    term.send(b"1+2\x7f3\r")
    assert term.read_until(b">>> ") == b"1+2\b\x1b[K3\r\n4\r\n>>> "
    term.send(b"\x1b[A")  # up: the last line again
    term.read_until(b"\x1b[K")
    term.send(b"\r")
    assert term.read_until(b">>> ").endswith(b"\r\n4\r\n>>> ")
    term.send(b"for i in (5, 6):\r\tprint(i)\r\r")
    assert term.read_until(b">>> ").endswith(b"...     print(i)\r\n... \r\n5\r\n6\r\n>>> ")


def test_auto_indent_as_micropythons_docs_show_it(term: Terminal) -> None:
    term.friendly()
    # A level after the colon, kept on the next line; Return twice ends the statement (two
    # blank lines get no indent), a third runs it.
    term.send(b"for i in range(2):\rprint(i)\r\r\r\r")
    shown = term.read_until(b">>> ")
    assert shown.startswith(b"for i in range(2):\r\n...     print(i)\r\n...     \r\n...     ")
    assert shown.endswith(b"\r\n... \r\n0\r\n1\r\n>>> "), shown
    # Backspace takes back a whole level; then Return on the empty line runs it.
    term.send(b"if 1:\rprint(7)\r\x7f\r")
    shown = term.read_until(b">>> ")
    assert b"...     \b\b\b\b\x1b[K\r\n7\r\n>>> " in shown, shown


def test_paste_mode_runs_what_was_pasted(term: Terminal) -> None:
    term.friendly()
    term.send(b"\x05")
    term.read_until(b"paste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    term.send(b"x = 20\ry = x + 1\r\rprint(y * 2)\r\x04")
    assert term.read_until(b">>> ").endswith(b"\r\n42\r\n>>> ")


def test_help_names_the_control_keys(term: Terminal) -> None:
    term.friendly()
    term.send(b"help()\r")
    shown = term.read_until(b">>> ")
    assert b"CTRL-D        -- on a blank line, do a soft reset of the board" in shown


def test_raw_paste_refuses_an_unknown_command(term: Terminal) -> None:
    raw(term)
    term.send(b"\x05B\x01")
    assert term.read_until(b">") == b"R\x00>"


def test_kbd_intr_lets_ctrl_c_through_until_the_next_code(term: Terminal) -> None:
    raw(term)
    term.send(
        b"import micropython, sys\nmicropython.kbd_intr(-1)\nprint(repr(sys.stdin.read(1)))\x04"
    )
    term.read_until(b"OK")
    term.send(b"\x03")
    assert term.read_until(b"\x04\x04>") == b"'\\x03'\r\n\x04\x04>"
    term.send(b"while True: pass\x04")
    term.read_until(b"OK")
    term.send(b"\x03")
    assert b"KeyboardInterrupt: \r\n\x04>" in term.read_until(b"\x04>")


SLOW_HANDLER = b"""\
import micropython, time
done = []
def slow(_):
    start = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start) < 500:
        pass
    done.append("handler finished")
micropython.schedule(slow, 0)
while True:
    pass
"""


def test_ctrl_c_waits_for_a_running_handler_then_ends_the_program(term: Terminal) -> None:
    raw(term)
    term.send(SLOW_HANDLER + b"\x04")
    term.read_until(b"OK")
    term.send(b"\x03")  # while `slow` runs: it finishes, then the loop is interrupted
    assert b"KeyboardInterrupt: \r\n\x04>" in term.read_until(b"\x04>")
    term.send(b"print(done)\x04")
    assert term.read_until(b"\x04>") == b"OK['handler finished']\r\n\x04\x04>"


def test_sys_exit_and_machine_soft_reset_are_soft_resets(term: Terminal) -> None:
    raw(term)
    for code in (b"import sys; sys.exit()", b"import machine; machine.soft_reset()"):
        term.send(b"kept = 1\x04")
        term.read_until(b"\x04\x04>")
        term.send(code + b"\x04")
        assert term.read_until(b"\x04\x04") == b"OK\x04\x04"
        term.read_until(b"MPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>")
        term.send(b"print('kept' in globals())\x04")
        assert term.read_until(b"\x04>") == b"OKFalse\r\n\x04\x04>"


def test_a_traceback_shows_the_boards_own_frames(term: Terminal) -> None:
    raw(term)
    term.send(b"import bad\nbad.divide()\x04")
    assert term.read_until(b"\x04>") == (
        b"OK\x04Traceback (most recent call last):\r\n"
        b'  File "<stdin>", line 2, in <module>\r\n'
        b'  File "/lib/bad.py", line 2, in divide\r\n'
        b"ZeroDivisionError: division by zero\r\n\x04>"
    )


def test_sys_path_is_the_boards_and_nothing_is_cached_in_the_folder(
    keys_board: BoardProcess, root: Path
) -> None:
    result = mpremote(keys_board.device, "exec", "import sys, bad\nprint(sys.path[:3])")
    assert result.stdout == "['', '.frozen', '/lib']\n", result.stderr
    assert not list(root.rglob("__pycache__"))


def test_the_link_names_the_line(keys_board: BoardProcess, root: Path) -> None:
    result = mpremote(str(root.parent / "keys-board-link"), "exec", "print('by name')")
    assert result.stdout == "by name\n", result.stderr


def test_a_board_can_start_a_rootcanal_that_others_join(tmp_path: Path) -> None:
    from mpbluetooth.sim.rootcanal import RootCanalError, find_binary

    try:
        find_binary()
    except RootCanalError as exc:
        pytest.skip(str(exc))
    try:
        first = BoardProcess(tmp_path, extra=("--engine", "rootcanal"))
    except RuntimeError as exc:  # a binary that cannot start here: one line saying why
        pytest.skip(str(exc))
    try:
        assert first.engine is not None and first.engine.startswith("tcp-client:")
        with BoardProcess(tmp_path, first.engine) as second:
            code = "import bluetooth\nb = bluetooth.BLE()\nb.active(True)\nprint(b.active())"
            for board in (first, second):
                result = mpremote(board.device, "exec", code)
                assert result.stdout == "True\n", result.stderr + board.log()
    finally:
        first.stop()


def test_a_bad_tcp_address_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth", "board", "--tcp", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "expected HOST:PORT" in result.stderr


SCAN_AND_RETURN = b"""\
import bluetooth
def irq(event, data):
    if event == 6:  # _IRQ_SCAN_DONE
        print("scan done, at the prompt")
ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
ble.gap_scan(300, 30000, 30000)
"""


def test_irq_handlers_run_while_the_repl_waits_for_a_key(term: Terminal) -> None:
    raw(term)
    term.send(SCAN_AND_RETURN + b"\x04")
    assert term.read_until(b"\x04>") == b"OK\x04\x04>"  # the program has returned
    assert term.read_until(b"\r\n") == b"scan done, at the prompt\r\n"


def test_with_no_controller_given_a_board_has_one_all_the_same(tmp_path: Path) -> None:
    """The sim-hub on the default port when one runs, else a simulated link of its own."""
    with BoardProcess(tmp_path) as board:
        code = "import bluetooth\nb = bluetooth.BLE()\nb.active(True)\nprint(b.active())"
        result = mpremote(board.device, "exec", code)
        log = board.log()
    assert result.stdout == "True\n", result.stderr + log
    if "no sim-hub on 127.0.0.1:10723" in log:
        assert "controller: a simulated link of its own" in log, log
    else:
        assert "controller: tcp-client:127.0.0.1:10723" in log, log


def test_a_board_is_out_of_the_terminals_process_group(keys_board: BoardProcess) -> None:
    """A Ctrl-C at the terminal reaches the test run, which stops the board, and not
    the board beside it."""
    assert os.getpgid(keys_board.process.pid) == keys_board.process.pid
    assert os.getpgid(keys_board.process.pid) != os.getpgid(0)


def test_a_link_never_replaces_a_file(tmp_path: Path) -> None:
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth", "board", "--root", str(tmp_path),
         "--transport", "tcp-client:127.0.0.1:1", "--link", str(kept)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "exists, not a symlink" in result.stderr
    assert kept.read_text() == "mine"


def test_a_board_profile_is_the_boards_own(hub_spec: str, tmp_path: Path) -> None:
    code = (
        "import sys, os, bluetooth\n"
        "print(sys.platform, os.uname().machine, hasattr(bluetooth.BLE(), 'l2cap_listen'))"
    )
    with BoardProcess(tmp_path, hub_spec, extra=("--board", "esp32")) as board:
        result = mpremote(board.device, "exec", code)
        assert result.stdout == "esp32 Generic ESP32 module with ESP32 False\n", result.stderr
        term = Terminal(board.device)
        try:
            term.send(b"\r\x03\x02")
            shown = term.read_until(b"more information.\r\n>>> ")
        finally:
            term.close()
    banner = rb"MicroPython v1\.\d+\.\d+\S* on \S+; Generic ESP32 module with ESP32\r\n"
    assert re.search(banner, shown), shown
