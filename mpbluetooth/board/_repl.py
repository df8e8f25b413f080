"""MicroPython's REPL on the serial line, as a board's firmware runs it.

The facts come from MicroPython's ``shared/runtime/pyexec.c`` and a port's main loop
(``ports/rp2/main.c``), which ``tools/pyboard.py`` and mpremote are written against:

* at reset: ``boot.py``, then ``main.py`` (only in the friendly REPL), then the REPL;
  ``sys.exit()`` or Ctrl-D at an empty prompt is a soft reset: ``MPY: soft reboot``, the
  radio off, modules of the board forgotten, a fresh ``__main__``, and again;
* friendly REPL: the banner, ``>>>``/``...`` (the line editor is ``_readline``), Ctrl-A
  to the raw REPL, Ctrl-B for the banner again, Ctrl-C to drop the line, Ctrl-E for paste
  mode;
* raw REPL: ``raw REPL; CTRL-B to exit`` and ``>``; input without echo until Ctrl-D, then
  ``OK``, the output, ``\\x04``, the error, ``\\x04``; Ctrl-D alone soft-resets, Ctrl-B
  leaves, Ctrl-C clears the input;
* raw-paste (``\\x05A\\x01`` in the raw REPL): ``R\\x01``, a window of ``_PASTE_WINDOW``
  bytes (little-endian) and ``\\x01``, a ``\\x01`` each time a window has been read, and
  ``\\x04`` once the host's ``\\x04`` ends the code; ``\\x05`` + another letter: ``R\\x00``.

Code runs on the main thread with the scheduler of ``mpbluetooth-python``, so IRQ handlers
run at its check points, and while the REPL waits for a key.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import platform
import struct
import sys
import time
import traceback
import types
from typing import Any, Final

from .. import __version__, boards
from ..compat import strbuf
from ._console import Interrupter, kbd_intr_char, reset_kbd_intr, serial_stdin
from ._fs import BoardFs
from ._readline import LineEditor, continues
from ._serial import SerialLine

logger = logging.getLogger(__name__)

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
#: The MicroPython release whose REPL, tools and test suites this board is checked against.
MICROPYTHON_VERSION: Final = "1.29.0"
#: Half of MicroPython's default stdin buffer (MICROPY_REPL_STDIN_BUFFER_MAX, 256 bytes).
_PASTE_WINDOW: Final = 128
_RAW_BANNER: Final = b"raw REPL; CTRL-B to exit\r\n"
_HELP: Final = """Welcome to MicroPython on mpbluetooth, a simulated board.

Control commands:
  CTRL-A        -- on a blank line, enter raw REPL mode
  CTRL-B        -- on a blank line, enter normal REPL mode
  CTRL-C        -- interrupt a running program
  CTRL-D        -- on a blank line, do a soft reset of the board
  CTRL-E        -- on a blank line, enter paste mode
"""


class BoardStop(BaseException):
    """The board process is told to stop (Ctrl-C or SIGTERM on its console)."""


def banner() -> str:
    """The first line of the friendly REPL, in the form run-multitests.py waits for after
    a reset (``MicroPython vX.Y.Z... on DATE; BOARD with MCU``): the board profile's
    ``BOARD with MCU`` (``os.uname().machine`` on a board), or ours for the unix one."""
    date = time.strftime("%Y-%m-%d")
    uname = boards.current().uname
    machine = (
        uname[4]
        if uname is not None
        else f"mpbluetooth simulated board with {platform.python_implementation()} "
        f"{platform.python_version()}"
    )
    return f"MicroPython v{MICROPYTHON_VERSION}-mpbluetooth{__version__} on {date}; {machine}"


class Repl:
    """The REPL of one board (see the module docstring); ``serve()`` runs it for ever."""

    def __init__(self, line: SerialLine, fs: BoardFs) -> None:
        self._line = line
        self._fs = fs
        self._raw = False
        self._namespace: dict[str, Any] = {}
        self._editor = LineEditor(line.read_byte, line.write)
        self._interrupt = Interrupter()
        line.interrupt_char = lambda: kbd_intr_char() if self._interrupt.armed else -1
        line.on_interrupt = self._interrupt.request
        line.retry_interrupt = self._interrupt.retry

    def serve(self) -> None:
        """Reset, run boot.py and main.py, serve the REPL; again at each soft reset."""
        self._interrupt.install()
        while True:
            self._fresh()
            forced = self._run_file("boot.py")
            if not forced and not self._raw:
                forced = self._run_file("main.py")
            while not forced:
                forced = self._raw_repl() if self._raw else self._friendly_repl()
            self._write(b"MPY: soft reboot\r\n")
            deinit_bluetooth()

    # --- reset ---------------------------------------------------------------------------
    def _fresh(self) -> None:
        for name in self._fs.user_modules():
            del sys.modules[name]
        main = types.ModuleType("__main__")
        main.__dict__.update(__builtins__=builtins, help=_board_help)
        sys.modules["__main__"] = main
        self._namespace = main.__dict__
        self._fs.reset_path()
        sys.argv = []
        sys.stdin = serial_stdin(self._line)

    def _run_file(self, name: str) -> bool:
        path = os.path.join(self._fs.root, name)
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as file:
            source = file.read()
        self._namespace["__file__"] = name
        return self._execute(source, name, "exec", eof=False)

    # --- running code ----------------------------------------------------------------------
    def _execute(self, source: str | bytes, filename: str, mode: str, *, eof: bool) -> bool:
        """Compile and run ``source`` in ``__main__``; True for a forced exit (SystemExit).
        ``eof``: the raw REPL's ``\\x04`` after the output and after the error."""
        forced = False
        error: BaseException | None = None
        try:
            code = strbuf.compile_source(source, filename, mode)
            reset_kbd_intr()
            self._interrupt.arm()
            try:
                exec(code, self._namespace)
            finally:
                self._interrupt.disarm()
        except BoardStop:
            raise
        except SystemExit:
            forced = True
        except BaseException as exc:  # the program's: reported on the line, as a board does
            error = exc
        if eof:
            self._write(b"\x04")
        if error is not None:
            self._write(self._format(error).encode("utf-8", "replace"))
        if eof:
            self._write(b"\x04")
        return forced

    def _format(self, exc: BaseException) -> str:
        """MicroPython's traceback: the board's own frames, no source lines."""
        lines = ["Traceback (most recent call last):"]
        for frame in traceback.extract_tb(exc.__traceback__):
            if self._fs.is_board_code(frame.filename):
                shown = self._shown(frame.filename)
                lines.append(f'  File "{shown}", line {frame.lineno}, in {frame.name}')
        if isinstance(exc, SyntaxError):
            lines.append(f'  File "{self._shown(exc.filename or "<stdin>")}", line {exc.lineno}')
            lines.append(f"SyntaxError: {exc.msg}")
        else:
            lines.append(exception_line(exc))
        return "\r\n".join(lines) + "\r\n"

    def _shown(self, filename: str) -> str:
        if filename.startswith("<") or not os.path.isabs(filename):
            return filename
        return self._fs.board(filename)

    def _write(self, data: bytes) -> None:
        self._line.write(data)

    # --- the raw REPL -------------------------------------------------------------------------
    def _raw_repl(self) -> bool:
        """Returns True for a soft reset, False when leaving for the friendly REPL."""
        self._write(_RAW_BANNER)
        while True:
            command = bytearray()
            self._write(b">")
            while True:
                char = self._line.read_byte()
                if char == CTRL_A:
                    if len(command) == 2 and command[0] == CTRL_E:
                        if self._raw_paste(command[1]):
                            return True
                        command.clear()
                        self._write(b">")
                        continue
                    command.clear()
                    self._write(_RAW_BANNER + b">")
                elif char == CTRL_B:
                    self._write(b"\r\n")
                    self._raw = False
                    return False
                elif char == CTRL_C:
                    command.clear()
                elif char == CTRL_D:
                    break
                else:
                    command.append(char)
            self._write(b"OK")
            if not command:
                self._write(b"\r\n")
                return True
            if self._execute(bytes(command), "<stdin>", "exec", eof=True):
                return True

    def _raw_paste(self, kind: int) -> bool:
        if kind != ord("A"):
            self._write(b"R\x00")
            return False
        self._write(b"R\x01" + struct.pack("<H", _PASTE_WINDOW) + b"\x01")
        source = bytearray()
        remain = _PASTE_WINDOW
        while True:
            char = self._line.read_byte()
            if char in (CTRL_C, CTRL_D):
                self._write(b"\x04")
                if char == CTRL_C:
                    self._write(b"\x04" + self._format(KeyboardInterrupt()).encode() + b"\x04")
                    return False
                break
            source.append(char)
            remain -= 1
            if remain == 0:
                self._write(b"\x01")
                remain = _PASTE_WINDOW
        return self._execute(bytes(source), "<stdin>", "exec", eof=True)

    # --- the friendly REPL -----------------------------------------------------------------
    def _friendly_repl(self) -> bool:
        welcome = f'{banner()}\r\nType "help()" for more information.\r\n'.encode()
        self._write(welcome)
        while True:
            key, text = self._editor.readline(b">>> ")
            if key == CTRL_A:
                self._write(b"\r\n")
                self._raw = True
                return False
            if key == CTRL_B:
                self._write(b"\r\n" + welcome)
                continue
            if key in (CTRL_C, CTRL_D):
                self._write(b"\r\n")
                if key == CTRL_D:
                    return True
                continue
            if key == CTRL_E:
                pasted = self._paste_mode()
                if pasted is not None and self._execute(pasted, "<stdin>", "exec", eof=False):
                    return True
                continue
            if not text:
                continue
            source: str | None = text
            while source is not None and continues(source):
                key, more = self._editor.readline(b"... ", source + "\n")
                if key == CTRL_C:
                    self._write(b"\r\n")
                    source = None
                elif key == CTRL_D:
                    break
                else:
                    source += "\n" + more
            if source is not None and self._execute(source, "<stdin>", "single", eof=False):
                return True

    def _paste_mode(self) -> str | None:
        self._write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        pasted = bytearray()
        while True:
            char = self._line.read_byte()
            if char == CTRL_C:
                self._write(b"\r\n")
                return None
            if char == CTRL_D:
                self._write(b"\r\n")
                return pasted.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
            pasted.append(char)
            self._write(b"\r\n=== " if char == 13 else bytes([char]))


def exception_line(exc: BaseException) -> str:
    """The last line of a board's traceback: ``OSError: [Errno 2] ENOENT`` for any OSError
    with an errno (CPython's subclasses are one class on MicroPython), ``Name: text``."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int):
        code = exc.errno
        text = f"[Errno {code}] {errno.errorcode.get(code, code)}" if code > 0 else str(code)
        return f"OSError: {text}"
    return f"{type(exc).__name__}: {exc}"


def _board_help(*args: Any) -> None:
    """``help()``: MicroPython's control keys; ``help(obj)`` is CPython's."""
    if args:
        builtins.help(*args)
    else:
        print(_HELP, end="")


def deinit_bluetooth() -> None:
    """What a board's soft reset does to its radio (``mp_bluetooth_deinit``): off, and the
    next ``bluetooth.BLE()`` is a new object, with no handler and default settings."""
    module = sys.modules.get("mpbluetooth.ble")
    ble_class = getattr(module, "BLE", None)
    ble = getattr(ble_class, "_singleton", None)
    if ble is None:
        return
    try:
        ble.irq(None)
        ble.close()
    except Exception:  # the reset goes on: the next program gets a new radio either way
        logger.warning("soft reset: the radio did not close cleanly", exc_info=True)
    ble_class._singleton = None  # type: ignore[union-attr]
