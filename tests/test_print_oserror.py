"""A program that prints an ``OSError`` prints what a board prints (issue #17).

Run under ``mpbluetooth-python`` in a subprocess, as a user runs it: the explanation of
the error is in ``e.__notes__`` (a traceback shows it), never in ``str(e)``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent(
    """
    import bluetooth
    ble = bluetooth.BLE()
    for call in (
        lambda: ble.gap_advertise(100000),          # inactive: ENODEV
        lambda: ble.gap_passkey(0, 2, 0),           # nothing to answer: ENOENT
    ):
        try:
            call()
        except OSError as e:
            print(e)
            print(type(e) is OSError, e.errno, e.args)
    ble.active(True)
    for call in (
        lambda: ble.gap_connect(None),              # nothing to cancel: EALREADY
        lambda: ble.gap_advertise(100000, b"x" * 32),  # NimBLE's own -18
        lambda: ble.gattc_read(0, 0),               # handle 0: EINVAL
    ):
        try:
            call()
        except OSError as e:
            print(e)
            print(type(e) is OSError, e.errno, e.args)
    ble.active(False)
    """
)

#: What MicroPython (unix port, NimBLE) prints for the same program.
BOARD = """\
[Errno 19] ENODEV
True 19 (19,)
[Errno 2] ENOENT
True 2 (2,)
[Errno 114] EALREADY
True 114 (114,)
-18
True -18 (-18,)
[Errno 22] EINVAL
True 22 (22,)
"""


def _launcher() -> list[str]:
    script = Path(sys.executable).with_name("mpbluetooth-python")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mpbluetooth.cli.python"]


def test_printing_an_oserror_prints_what_a_board_prints(tmp_path: Path) -> None:
    program = tmp_path / "print_errors.py"
    program.write_text(PROGRAM)
    done = subprocess.run([*_launcher(), str(program)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == BOARD


def test_the_explanation_is_in_the_notes_a_traceback_shows() -> None:
    from mpbluetooth import sim

    with sim.Link("instant") as link:
        ble = link.instance("notes")
        ble.active(True)
        with pytest.raises(OSError) as info:
            ble.gatts_write(0, b"x")  # no attribute has handle 0
    error = info.value
    assert str(error) == "[Errno 22] EINVAL" and type(error) is OSError
    assert error.args == (22,) and error.errno == 22
    assert error.__notes__ == ["no value with handle 0"]
