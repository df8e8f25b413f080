"""A MicroPython script running as its own simulated board, in its own process.

This is how ``mpbluetooth run`` runs each script (``mpbluetooth-python`` semantics, one
process per board, all on one hub), with the test in the middle: it can wait for a line
the script printed, wait for an IRQ event the script's handler received, see how it
ended, and inject faults on the hub between. A script is tested exactly as it will run on
a board, unmodified, while the test's own instances (``HubProcess.instance``) play the
other side.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from ..cli._lifeline import STOP_GRACE_S, wait_or_kill
from .recorder import DEFAULT_TIMEOUT, Recorder, WaitTimeout, wait_until

__all__ = ["Board", "BoardExited"]

#: Set by ``mpbluetooth run``: a program that returns with its radio on stays on
#: (``mpbluetooth.cli._board``; spelled here so the test process need not import the CLI).
_STAY_ON_ENV: Final = "MPBLUETOOTH_STAY_ON"
_STAY_ON_MARKER: Final = "\x00mpbluetooth:stay-on"
#: How many of its last lines a board shows in a failure's message or report.
_TAIL_LINES: Final = 40
_numbers = itertools.count(1)


class BoardExited(AssertionError):
    """The board's program ended while the test was waiting for something from it."""


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "b" in value:
            return bytes.fromhex(value["b"])
        if "u" in value:
            from ..uuid import UUID

            return UUID(bytes.fromhex(value["u"]))
        return value.get("r")
    return value


def board_address(number: int) -> bytes:
    """A public address for the ``number``-th board of this process, unlike any other
    process's (the pid is in it) and any instance the hub numbers itself (0xF3 prefix)."""
    pid = os.getpid() & 0xFFFF
    return bytes([0xF3, pid >> 8, pid & 0xFF, 0, (number >> 8) & 0xFF, number & 0xFF])


class Board:
    """A running MicroPython script on the hub at ``spec``.

    ``script``: a path; ``args`` go to its ``sys.argv[1:]``; ``env`` adds environment
    variables; ``input`` is written to its stdin. Its radio gets the public address
    ``address`` (``config('mac')`` says so), which a test connects to and names it by in
    hub faults. ``lines`` is what it printed so far (stdout and stderr, in order);
    ``events`` is a ``Recorder`` of every IRQ event its handler received. A script that
    returns with its radio on stays on, as a board at its REPL does, until ``stop()``.
    """

    def __init__(
        self,
        spec: str,
        script: str | os.PathLike[str],
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,  # subprocess's name for it
        name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        from ..cli._lifeline import own_process_group, shared
        from .hub import child_environment

        self.script = Path(script)
        self.name = name or self.script.stem
        if not self.script.is_file():
            raise FileNotFoundError(
                f"board({str(script)!r}): no such script (relative to {os.getcwd()})"
            )
        self.address = board_address(next(_numbers))
        self.events = Recorder()
        self.lines: list[str] = []
        self.stayed_on = False
        self._cond = threading.Condition()
        #: Where ``expect`` looks next: the index of the line after its last match.
        self._expect_from = 0
        lifeline = shared()
        read_fd, write_fd = os.pipe()
        child_env = child_environment(
            **{
                "MPBLUETOOTH_TRANSPORT": spec,
                "MPBLUETOOTH_SIM_ADDRESS": self.address.hex(":"),
                "PYTHONUNBUFFERED": "1",
                _STAY_ON_ENV: "1",
                **lifeline.environment(),
                **(env or {}),  # the test's settings win
            }
        )
        command = [sys.executable, "-m", "mpbluetooth.testing._board_main", str(write_fd)]
        try:
            self.process = subprocess.Popen(
                [*command, "-u", str(self.script), *args],
                env=child_env,
                cwd=cwd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd, *lifeline.pass_fds),
                process_group=own_process_group(),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        if input is not None and self.process.stdin is not None:
            self.process.stdin.write(input.encode())
            self.process.stdin.close()
        self._readers = [
            threading.Thread(target=self._read_output, name=f"board-{self.name}-out", daemon=True),
            threading.Thread(
                target=self._read_events,
                args=(read_fd,),
                name=f"board-{self.name}-irq",
                daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()

    # --- the child's streams ------------------------------------------------------------
    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                if line == _STAY_ON_MARKER:
                    self.stayed_on = True
                else:
                    self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_events(self, fd: int) -> None:
        with open(fd, "rb") as pipe:
            for raw in pipe:
                event, data = json.loads(raw)
                self.events(int(event), tuple(_decode(v) for v in data))

    # --- what the test waits for ----------------------------------------------------------
    @property
    def output(self) -> str:
        """Everything printed so far, one line per line."""
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(
        self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_TIMEOUT, *, count: int = 1
    ) -> str:
        """Wait until the script printed ``count`` lines containing ``pattern`` (a string)
        or matching it (``re.search`` with a compiled pattern), counting from its first
        line; return the ``count``-th. Raises ``BoardExited`` if the program ends first,
        ``WaitTimeout`` after ``timeout`` s. (``expect`` looks only after its last match.)"""
        return self._wait_line(pattern, timeout, 0, count)[1]

    def expect(self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait for a line matching ``pattern`` printed after the line the previous
        ``expect`` matched (from the first line, the first time), as pexpect's ``expect``
        does; return it. So ``expect("advertising")`` twice waits for two such lines, and
        a line printed before a step of the test cannot satisfy a wait after it."""
        index, line = self._wait_line(pattern, timeout, self._expect_from, 1)
        self._expect_from = index + 1
        return line

    def _wait_line(
        self, pattern: str | re.Pattern[str], timeout: float, start: int, count: int
    ) -> tuple[int, str]:
        if count < 1:
            raise ValueError(f"count is 1 or more, not {count}")

        def matches(line: str) -> bool:
            if isinstance(pattern, str):
                return pattern in line
            return pattern.search(line) is not None

        what = f"{pattern!r}" + (f" {count} times" if count > 1 else "")
        if start:
            what += f" after line {start}"
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = 0
                for index in range(start, len(self.lines)):
                    if matches(self.lines[index]):
                        seen += 1
                        if seen == count:
                            return index, self.lines[index]
                if self.process.poll() is not None and not self._readers[0].is_alive():
                    raise BoardExited(
                        f"{self.name} exited with {self.process.returncode} before printing "
                        f"{what}; it printed:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"{self.name} printed no {what} within {timeout:g} s; "
                        f"it printed:\n{self.tail()}"
                    )
                # Woken by each line; the cap notices an exit that printed nothing.
                self._cond.wait(min(remaining, 0.2))

    def tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines it printed (all of them if fewer), for a report."""
        with self._cond:
            kept = self.lines[-lines:]
            skipped = len(self.lines) - len(kept)
        head = [f"... ({skipped} earlier lines)"] if skipped else []
        return "\n".join(head + kept) if kept else "(nothing)"

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait until the program ends (or stays on, radio active); return its exit status
        (0 for a board that stayed on)."""
        wait_until(
            lambda: self.process.poll() is not None or self.stayed_on,
            timeout,
            f"{self.name} to finish; it printed:\n{self.tail()}",
        )
        return 0 if self.process.returncode is None else self.process.returncode

    @property
    def returncode(self) -> int | None:
        """The exit status once ended, else None."""
        return self.process.poll()

    def config(self, name: str) -> Any:
        """``config('mac')``, as a ``BLE`` instance answers it: (0, the public address)."""
        if name != "mac":
            raise ValueError("a board answers only config('mac') from the test's side")
        return (0, self.address)

    # --- end -------------------------------------------------------------------------------
    def stop(self) -> int:
        """Stop the program as ``mpbluetooth run`` does (SIGTERM), kill it if it lingers;
        return its exit status. Its radio leaves the hub, so peers see the link drop."""
        if self.process.poll() is None:
            self.process.terminate()
            wait_or_kill(self.process)
        for reader in self._readers:
            reader.join(STOP_GRACE_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def terminate(self) -> None:
        """Ask the program to stop (SIGTERM, as ``stop``) and return at once; a thread
        waits for it (killing it if it lingers), so a test's teardown need not wait for
        a board that stayed on to close its radio and exit (a few tenths of a second)."""
        if self.process.poll() is None:
            self.process.terminate()
        threading.Thread(target=self.stop, name=f"board-{self.name}-stop", daemon=True).start()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        process = getattr(self, "process", None)  # None: it never started
        if process is None:
            return f"<Board {self.name} not started>"
        state = "running" if process.poll() is None else f"exit {process.returncode}"
        return f"<Board {self.name} {self.address.hex(':').upper()} {state}>"
