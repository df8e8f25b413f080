"""The program's ``sys.stdin``/``sys.stdout`` on the serial line, and Ctrl-C.

Output is "cooked" as a board's is (every ``\\n`` leaves as ``\\r\\n``; ``sys.stdout.buffer``
writes bytes as they are). Input is read no further than the end of a line, so what the
program did not read is still there for the REPL when it ends, as with a board's ring
buffer. Ctrl-C raises ``KeyboardInterrupt`` in the main thread even while it waits
(``time.sleep``, a ``BLE`` call, ``sys.stdin.readline()``): the reader thread sends the main
thread a signal, which breaks any blocking wait, and the handler raises.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
import types
from typing import Any, Final

from .._scheduler import scheduler
from ._serial import SerialLine

#: The signal the reader thread sends the main thread for Ctrl-C; never sent by the OS here.
_SIGNAL: Final = signal.SIGUSR1
#: MicroPython's interrupt character (Ctrl-C) and its default.
CTRL_C: Final = 3


class SerialText(io.TextIOBase):
    """``sys.stdout`` and ``sys.stderr``: text to the serial line, cooked."""

    def __init__(self, line: SerialLine) -> None:
        super().__init__()
        self._line = line
        self.buffer = _SerialBytes(line)

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._line.write(text.replace("\n", "\r\n").encode("utf-8", "replace"))
        return len(text)


class _SerialBytes(io.RawIOBase):
    def __init__(self, line: SerialLine) -> None:
        super().__init__()
        self._line = line

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._line.write(chunk)
        return len(chunk)


class _SerialInput(io.RawIOBase):
    def __init__(self, line: SerialLine) -> None:
        super().__init__()
        self._line = line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._line.read(len(buffer), line=True)
        buffer[: len(data)] = data
        return len(data)


def serial_stdin(line: SerialLine) -> io.TextIOWrapper:
    """A fresh ``sys.stdin`` on the serial line (lines end at ``\\n``, kept as sent)."""
    return io.TextIOWrapper(
        io.BufferedReader(_SerialInput(line)), encoding="utf-8", errors="replace", newline="\n"
    )


class Interrupter:
    """Ctrl-C for the code the REPL runs: ``arm()`` while it runs, ``disarm()`` after.

    A ``KeyboardInterrupt`` raised while the scheduler runs an IRQ handler would end that
    handler only (the scheduler reports and goes on), so there it waits: the reader thread
    sends the signal again (``retry``) until it lands in the program itself."""

    def __init__(self) -> None:
        self._armed = False
        self._pending = False
        self._main = threading.main_thread().ident

    def install(self) -> None:
        signal.signal(_SIGNAL, self._on_signal)

    def arm(self) -> None:
        self._pending = False
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self._pending = False

    @property
    def armed(self) -> bool:
        return self._armed

    def request(self) -> None:
        """Ctrl-C arrived (reader thread)."""
        if self._armed:
            self._pending = True
            self._send()

    def retry(self) -> bool:
        """Send it again while one waits (reader thread); whether one waits."""
        if self._pending and self._armed:
            self._send()
            return True
        return False

    def _send(self) -> None:
        if self._main is not None:
            signal.pthread_kill(self._main, _SIGNAL)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        if not self._pending:
            return
        if not self._armed:
            self._pending = False
            return
        if scheduler().in_handler():
            return
        self._pending = False
        raise KeyboardInterrupt


def kbd_intr_char() -> int:
    """The interrupt character the program set with ``micropython.kbd_intr`` (-1: none)."""
    module = sys.modules.get("micropython")
    return int(getattr(module, "_kbd_intr_char", CTRL_C))


def reset_kbd_intr() -> None:
    """Ctrl-C interrupts again: MicroPython sets it back before each piece of code it runs."""
    module = sys.modules.get("micropython")
    kbd_intr = getattr(module, "kbd_intr", None)
    if kbd_intr is not None:
        kbd_intr(CTRL_C)
