"""``mpbluetooth board`` in a child process, for tests and tools (desktop only, POSIX).

A test that drives a board as MicroPython's tools do (mpremote, pyboard.py,
run-multitests.py) needs the board running in a process of its own and the serial device
it prints; ``BoardProcess`` starts one, waits for the device, and stops it (killed if it
lingers), with what it logged kept for the failure message. The board is given this
process's lifeline (``cli._lifeline``): if this process is killed outright, the board ends
too, and so does the RootCanal that ``--engine rootcanal`` started (POSIX). The board is in
a process group of its own, so a Ctrl-C at the terminal reaches only the caller.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Final

from ..cli._lifeline import own_process_group, shared, wait_or_kill

__all__ = ["BoardProcess"]

#: How long a board may take to open its serial line (a cold import on a loaded machine).
START_TIMEOUT: Final = 30.0


class BoardProcess:
    """A board serving the folder ``root``, its controller ``transport`` (a Bumble spec:
    a hub's ``unix:PATH``/``tcp-client:HOST:PORT``, a RootCanal's, a real controller;
    None: the board's default). ``device`` is its pseudo-terminal, ``url`` its
    ``socket://`` address when ``tcp`` (``"HOST:PORT"``, ``":0"``) asks for one; ``link``
    is a symlink to the pseudo-terminal; ``extra``: more options of ``mpbluetooth board``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        transport: str | None = None,
        *,
        tcp: str | None = None,
        link: str | os.PathLike[str] | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        args = [sys.executable, "-m", "mpbluetooth", "board", "--root", os.fspath(root)]
        if transport is not None:
            args += ["--transport", transport]
        if tcp is not None:
            args += ["--tcp", tcp]
        if link is not None:
            args += ["--link", os.fspath(link)]
        args += extra
        lifeline = shared()
        child_env = {k: v for k, v in os.environ.items() if k not in ("MPBLUETOOTH_TRANSPORT",)}
        child_env.update(lifeline.environment())
        child_env.update(env or {})
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env,
            pass_fds=lifeline.pass_fds,
            # Out of the terminal's process group: Ctrl-C stops the caller, which stops the
            # board (as `mpbluetooth run` does its boards), not both at once.
            process_group=own_process_group(),
        )
        self.device = ""
        self.url: str | None = None
        #: The spec of the engine the board started itself (``--engine rootcanal``).
        self.engine: str | None = None
        self._text: str | None = None
        try:
            self._wait_ready(tcp is not None)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, tcp: bool) -> None:
        """Read the board's stdout lines (``serial DEVICE``, ``tcp URL``, ``engine
        --transport SPEC``) until those asked for have come."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        fd = self.process.stdout.fileno()
        pending = b""
        while not self.device or (tcp and self.url is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the board printed no serial device within {START_TIMEOUT:g} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the board exited: {self.log()}")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, value = line.decode().strip().partition(" ")
                if kind == "serial":
                    self.device = value
                elif kind == "tcp":
                    self.url = value
                elif kind == "engine":
                    self.engine = value.removeprefix("--transport ")

    def log(self) -> str:
        """What the board wrote on its console (stderr) so far."""
        if self._text is not None:
            return self._text
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> str:
        """Stop the board (SIGTERM, then SIGKILL if it lingers); what it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        wait_or_kill(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._text is None:
            self._text = self.log()
            self._log.close()
        return self._text

    def __enter__(self) -> BoardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
