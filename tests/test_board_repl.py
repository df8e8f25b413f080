"""``mpbluetooth board``: a simulated board that MicroPython's own tools drive over its
serial line, as they drive a board on /dev/ttyACM0.

Each test starts a board in its own process (``BoardProcess``) and talks to it the way a
user's tools do: mpremote from PyPI in a process of its own, or bytes on the pseudo-terminal
(pyserial, as pyboard.py and Thonny open it), asserting what the tool or the terminal shows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]

from mpbluetooth.board.process import BoardProcess
from mpbluetooth.constants import IRQ_SCAN_RESULT
from mpbluetooth.testing import HubProcess, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a board needs a pty")

#: Generous for a loaded machine: every wait ends as soon as its text arrives.
WAIT_S = 30.0


def mpremote(device: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """mpremote as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", device, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Terminal:
    """The board's serial device opened as pyserial opens it (pyboard.py, Thonny)."""

    def __init__(self, device: str) -> None:
        self.port = serial.Serial(device, timeout=0.05)
        self.seen = b""

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def read_until(self, ending: bytes, timeout: float = WAIT_S) -> bytes:
        """Everything up to and including ``ending``; fails with what came instead."""
        deadline = time.monotonic() + timeout
        while ending not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g} s for {ending!r}; got {self.seen!r}")
            self.seen += self.port.read(4096)
        text, _, self.seen = self.seen.partition(ending)
        return text + ending

    def friendly(self) -> bytes:
        """Ctrl-C then Ctrl-B: the friendly REPL, its prompt read; returns all it read.

        Then a line whose answer is read too: the banner first read may not be the answer
        to these keys (the board's own at power-up, or one answering an earlier terminal's
        keys that the board was still working through when that terminal closed), and the
        test's first read must not get what comes after it (CI once read a stray prompt)."""
        self.send(b"\r\x03\x02")
        shown = self.read_until(b"more information.\r\n>>> ")
        self.send(b"print('in', 'sync')\r")
        return shown + self.read_until(b"in sync\r\n>>> ")

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def serial_board(tmp_path: Path, hub_spec: str) -> Iterator[BoardProcess]:
    """A board whose filesystem is ``tmp_path / "board"``, on the session's hub."""
    root = tmp_path / "board"
    root.mkdir()
    board = BoardProcess(root, hub_spec)
    yield board
    board.stop()


@pytest.fixture
def terminal(serial_board: BoardProcess) -> Iterator[Terminal]:
    term = Terminal(serial_board.device)
    yield term
    term.close()


def test_mpremote_exec_prints_1(serial_board: BoardProcess) -> None:
    result = mpremote(serial_board.device, "exec", "print(1)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"


def test_mpremote_reaches_the_board_over_tcp(hub_spec: str, tmp_path: Path) -> None:
    with BoardProcess(tmp_path, hub_spec, tcp="127.0.0.1:0") as board:
        assert board.url is not None and board.url.startswith("socket://127.0.0.1:")
        result = mpremote(board.url, "exec", "print(6 * 7)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"


PACKAGE = """\
NAME = "pkg-board-27"


def advert(name=NAME):
    data = name.encode()
    return bytes((2, 1, 6, len(data) + 1, 9)) + data
"""

SCRIPT = """\
import bluetooth
import beacon

ble = bluetooth.BLE()
ble.active(True)
ble.gap_advertise(20_000, beacon.advert())
print("advertising", beacon.NAME)
"""


@pytest.mark.mpbluetooth_timing("instant")
def test_a_package_copied_into_lib_is_imported_by_a_script_that_advertises(
    sim_hub: HubProcess, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "beacon").mkdir(parents=True)
    (source / "beacon" / "__init__.py").write_text(PACKAGE)
    (source / "app.py").write_text(SCRIPT)
    root = tmp_path / "board"
    root.mkdir()
    with BoardProcess(root, sim_hub.spec) as board:
        copied = mpremote(board.device, "fs", "mkdir", ":lib", "+", "fs", "cp", "-r",
                          str(source / "beacon"), ":lib/")  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        listed = mpremote(board.device, "fs", "ls", ":lib/beacon")
        assert "__init__.py" in listed.stdout, listed.stdout + listed.stderr
        assert (root / "lib" / "beacon" / "__init__.py").read_text() == PACKAGE

        ran = mpremote(board.device, "run", str(source / "app.py"))
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "advertising pkg-board-27\n"

        # The script returned; the board stays at its REPL, still advertising.
        scanner, events = sim_hub.instance("scanner")
        scanner.gap_scan(5000, 30000, 30000)
        events.wait(IRQ_SCAN_RESULT, where=lambda data: b"pkg-board-27" in bytes(data[4]))


def test_mpremote_fs_works_inside_the_folder_only(
    serial_board: BoardProcess, tmp_path: Path
) -> None:
    root = Path(os.path.realpath(_root(serial_board)))
    (root / "data.txt").write_text("hello board")
    device = serial_board.device

    def fs(*args: str) -> subprocess.CompletedProcess[str]:
        result = mpremote(device, "fs", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    assert fs("cat", ":data.txt").stdout == "hello board"
    assert "data.txt" in fs("ls", ":").stdout
    fs("cp", ":data.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "hello board"
    digest = hashlib.sha256(b"hello board").hexdigest()
    assert digest in fs("sha256sum", ":data.txt").stdout
    fs("touch", ":empty.txt")
    assert (root / "empty.txt").read_bytes() == b""
    fs("mkdir", ":sub")
    fs("rmdir", ":sub")
    fs("rm", ":data.txt")
    assert not (root / "data.txt").exists() and not (root / "sub").exists()
    df = mpremote(device, "df")
    row = df.stdout.splitlines()[1]
    assert df.returncode == 0 and row.startswith("<VfsPosix>") and row.endswith(" /"), df.stdout
    missing = mpremote(device, "fs", "cat", ":data.txt")
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr

    board_view = mpremote(device, "exec", """\
import os
os.mkdir("/d")
with open("/d/f.bin", "wb") as f:
    f.write(b"12345")
print(sorted(os.listdir("/")), list(os.ilistdir("/d")), os.stat("/d/f.bin")[:7])
os.rename("/d/f.bin", "/d/g.bin")
os.chdir("/d")
print(os.getcwd(), open("g.bin").read(), len(os.statvfs("/")))
os.chdir("..")
try:
    open("/../../../etc/hostname")
except OSError as e:
    print(e.errno, os.getcwd())
""")  # fmt: skip
    assert board_view.stdout.splitlines() == [
        "['d', 'empty.txt'] [('f.bin', 32768, 0, 5)] (32768, 0, 0, 0, 0, 0, 5)",
        "/d 12345 10",
        "2 /",
    ], board_view.stdout + board_view.stderr
    assert (root / "d" / "g.bin").read_bytes() == b"12345"
    failed = mpremote(device, "exec", "import os; os.remove('/nope')")
    assert failed.stdout.strip().splitlines()[-1] == "OSError: [Errno 2] ENOENT", failed


def _root(board: BoardProcess) -> str:
    args = board.process.args
    assert isinstance(args, list)
    return str(args[args.index("--root") + 1])


def test_the_raw_repl_answers_as_pyboard_expects(terminal: Terminal) -> None:
    terminal.send(b"\r\x03\x01")
    terminal.read_until(b"raw REPL; CTRL-B to exit\r\n>")
    terminal.send(b"print(2)\x04")
    assert terminal.read_until(b">") == b"OK2\r\n\x04\x04>"
    terminal.send(b"1/0\x04")
    assert terminal.read_until(b"\x04>") == (
        b"OK\x04Traceback (most recent call last):\r\n"
        b'  File "<stdin>", line 1, in <module>\r\n'
        b"ZeroDivisionError: division by zero\r\n\x04>"
    )
    terminal.send(b"\x05A\x01")  # raw-paste: the window, then a \x01 per window read
    assert terminal.read_until(b"\x01") == b"R\x01"
    assert terminal.read_until(b"\x01") == b"\x80\x00\x01"
    code = b"x = '" + b"y" * 200 + b"'\nprint(len(x))\n"
    terminal.send(code[:128])
    terminal.read_until(b"\x01")
    terminal.send(code[128:] + b"\x04")
    assert terminal.read_until(b">") == b"\x04200\r\n\x04\x04>"
    terminal.send(b"\x02")
    terminal.read_until(b">>> ")


def test_ctrl_c_interrupts_a_loop_a_sleep_a_read_and_an_event_wait(terminal: Terminal) -> None:
    terminal.friendly()
    for line in (
        b"while True: pass\r\r",
        b"import time; time.sleep(100)\r",
        b"import sys; sys.stdin.readline()\r",
        b"while True: __import__('machine').idle()\r\r",
        b"import asyncio; asyncio.run(asyncio.ThreadSafeFlag().wait())\r",
    ):
        terminal.send(line)
        terminal.read_until(line.rstrip(b"\r").replace(b"\r", b"\r\n... ") + b"\r\n")
        terminal.send(b"\x03")
        shown = terminal.read_until(b">>> ")
        assert b"KeyboardInterrupt: \r\n>>> " in shown, shown
    terminal.send(b"print('still here')\r")
    assert terminal.read_until(b">>> ").endswith(b"still here\r\n>>> ")


BOOT = """\
with open("runs.txt", "a") as runs:
    runs.write("boot ")
"""

MAIN = """\
with open("runs.txt", "a") as runs:
    runs.write("main ")
print("main.py ran")
"""


def test_soft_reset_ends_a_program_and_runs_main_py_again(hub_spec: str, tmp_path: Path) -> None:
    (tmp_path / "boot.py").write_text(BOOT)
    (tmp_path / "main.py").write_text(MAIN)
    runs = tmp_path / "runs.txt"
    with BoardProcess(tmp_path, hub_spec) as board:
        # At power-up, once the line is open, before anyone connected.
        wait_until(lambda: runs.exists() and runs.read_text() == "boot main ", WAIT_S, "main.py")
        started = mpremote(board.device, "exec", "--no-follow", "x = 5\nwhile True: pass")
        assert started.returncode == 0, started.stderr
        # Ctrl-C from mpremote's raw REPL entry stops it; `resume` keeps its globals.
        kept = mpremote(board.device, "resume", "exec", "print(x)")
        assert kept.stdout == "5\n", kept.stderr
        fresh = mpremote(board.device, "soft-reset", "exec", "print('x' in globals())")
        assert fresh.stdout == "False\n", fresh.stderr
        # Two soft resets in the raw REPL (mpremote's automatic one before its first exec,
        # and soft-reset): boot.py runs, main.py does not, as on a board (pyexec.c).
        assert runs.read_text() == "boot main boot boot "

        terminal = Terminal(board.device)
        try:
            terminal.friendly()
            terminal.send(b"import time\r")
            terminal.read_until(b">>> ")
            terminal.send(b"while True: time.sleep(0.01)\r\r")
            terminal.read_until(b"... \r\n")
            terminal.send(b"\x03")  # end the program, as a user does at mpremote's repl
            terminal.read_until(b"KeyboardInterrupt: \r\n>>> ")
            terminal.send(b"\x04")  # Ctrl-D: soft reset from the friendly REPL
            shown = terminal.read_until(b">>> ")
        finally:
            terminal.close()
    assert shown.startswith(b"\r\nMPY: soft reboot\r\nmain.py ran\r\nMicroPython v1.")
    assert runs.read_text() == "boot main boot boot boot main "


def test_a_soft_reset_turns_the_radio_off_and_forgets_the_boards_modules(
    serial_board: BoardProcess,
) -> None:
    root = Path(_root(serial_board))
    (root / "counter.py").write_text("count = 0\n")
    device = serial_board.device
    first = mpremote(device, "exec", """\
import bluetooth, counter
counter.count += 1
ble = bluetooth.BLE()
ble.active(True)
ble.config(gap_name="before")
print(counter.count, ble.active())
""")  # fmt: skip
    assert first.stdout == "1 True\n", first.stderr
    after = mpremote(device, "exec", """\
import bluetooth, counter
counter.count += 1
ble = bluetooth.BLE()
print(counter.count, ble.active(), ble.config("gap_name") != b"before")
""")  # fmt: skip
    assert after.stdout == "1 False True\n", after.stderr


def test_a_missing_root_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mpbluetooth", "board", "--root", "/no/such/folder/27"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "/no/such/folder/27" in result.stderr and "does not exist" in result.stderr
