"""Android's RootCanal virtual controller as a second engine for the simulated radio.

Our own simulated controller and link (``sim.controller``, ``sim.link``) were written here,
so a host test against them checks our host against our own reading of the specification.
RootCanal is the controller behind the Android emulator and netsim, written and tested by
others against the Bluetooth conformance suites: running the same scenarios against it is
how we find where our host, or our simulator, is wrong.

This module starts the ``rootcanal`` binary (from the ``rootcanal`` package, the
``mpbluetooth[rootcanal]`` extra, or ``$MPBLUETOOTH_ROOTCANAL``) on free ports, waits until
it listens, and stops it. Facts it relies on:

- Every TCP connection to the HCI port is a new controller on one shared medium, so any
  number of hosts join with ``MPBLUETOOTH_TRANSPORT=tcp-client:HOST:PORT``. Controllers
  keep state, so tests start a fresh RootCanal each.
- ``python -m rootcanal`` only wraps the binary in a child process that outlives a kill of
  the wrapper: we run the binary itself, in its own session, and stop the whole group.
- A binary cannot watch its parent as our Python children do (``cli._lifeline``): it is
  started through ``_lifeline.binary_command``, whose watcher stops it, and removes its
  folder, when the process that started it is gone, even after ``kill -9`` (POSIX).
- It listens on every interface (it has no option to bind one): anyone who can reach the
  ports joins the medium. There is no authentication.
- A RootCanal started elsewhere (``mpbluetooth rootcanal``, maybe on another machine) is
  joined, not started: :func:`probe` checks first that a controller answers at its port.
- The 1.10 line runs on glibc 2.34 and later; 1.11.1 and later need glibc 2.38/2.39 and
  GLIBCXX 3.4.32. A binary that cannot start is reported in one line naming both versions.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

from ..cli._lifeline import Lifeline, binary_command

logger = logging.getLogger(__name__)

#: A RootCanal binary to run instead of the one in the ``rootcanal`` package.
ENV_BINARY = "MPBLUETOOTH_ROOTCANAL"
#: Seconds allowed between starting the binary and its HCI port listening.
START_TIMEOUT = 15.0
#: Seconds a stopped RootCanal gets to exit before it is killed.
STOP_TIMEOUT = 5.0
#: Seconds a running RootCanal gets to answer :func:`probe`.
PROBE_TIMEOUT = 5.0
#: What ``pip`` should install when the package or a working binary is missing.
INSTALL_HINT = "pip install 'mpbluetooth[rootcanal]'"

#: HCI Reset as an H4 command packet (type 0x01, opcode 0x0C03, no parameters).
_HCI_RESET = bytes((0x01, 0x03, 0x0C, 0x00))
#: An H4 event packet (type 0x04) that is a Command Complete (event code 0x0E).
_COMMAND_COMPLETE = bytes((0x04, 0x0E))

_LISTENING = re.compile(r"Listening on: (\d+)")
_BIND_ERROR = re.compile(r"Error binding .* port: (\d+), (.*)")
#: Its ``listen()`` failed after the bind succeeded (another SO_REUSEADDR socket bound the
#: port too and listened first); the line names no port.
_LISTEN_ERROR = re.compile(r"Error listening for .*: (.*)")
_MISSING_VERSION = re.compile(r"version `(GLIBC(?:XX)?_[0-9.]+)' not found")

#: How many times :meth:`RootCanal.start` tries ports of its own choosing.
_START_ATTEMPTS = 3


class RootCanalError(RuntimeError):
    """RootCanal is not installed, cannot start, or stopped listening: one line for the
    user, never a traceback (the CLI prints it as is, tests skip with it)."""


def find_binary() -> str:
    """The RootCanal binary to run: ``$MPBLUETOOTH_ROOTCANAL``, else the package's own."""
    given = os.environ.get(ENV_BINARY, "").strip()
    if given:
        path = shutil.which(given) or given
        if not os.path.isfile(path):
            raise RootCanalError(f"{ENV_BINARY}={given}: no such file")
        return path
    try:
        from rootcanal import binaries
    except ImportError:
        raise RootCanalError(
            f"RootCanal is not installed for {sys.executable}: {INSTALL_HINT}"
        ) from None
    path = str(binaries.get_package_binary_resource_path("rootcanal"))
    if not os.path.isfile(path):
        raise RootCanalError(
            f"the rootcanal package ships no binary for {sys.platform}-{platform.machine()} "
            f"(it has linux-x86_64 and macOS ones); set {ENV_BINARY} to a RootCanal you built"
        )
    return path


def glibc_found() -> str | None:
    """This system's glibc version (``"2.36"``), or None on a libc that is not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return None
    parts = text.split()
    return parts[1] if len(parts) == 2 and parts[0] == "glibc" else None


def versions_needed(binary: str) -> dict[str, str]:
    """The newest ``GLIBC_`` and ``GLIBCXX_`` symbol versions the binary names.

    The loader refuses a binary whose version needs the system's libraries do not define;
    the names of those needs are plain strings in the binary's dynamic section, so a scan
    for the newest of each kind tells what the binary requires without an ELF parser.
    """
    newest: dict[str, tuple[int, ...]] = {}
    pattern = re.compile(rb"(GLIBC|GLIBCXX)_(\d+(?:\.\d+)+)\x00")
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    for kind, version in pattern.findall(data):
        key = kind.decode()
        number = tuple(int(x) for x in version.decode().split("."))
        if number > newest.get(key, ()):
            newest[key] = number
    return {key: ".".join(map(str, number)) for key, number in newest.items()}


def startup_error(binary: str, status: int | None, output: list[str]) -> RootCanalError:
    """One line saying why the binary did not start; for a loader refusal, the glibc (and
    libstdc++) it needs and the glibc found."""
    text = "\n".join(output)
    missing = _MISSING_VERSION.findall(text)
    if missing:
        needed = versions_needed(binary)
        wants = [f"glibc {needed['GLIBC']}" if "GLIBC" in needed else ""]
        if any(m.startswith("GLIBCXX") for m in missing) and "GLIBCXX" in needed:
            wants.append(f"GLIBCXX {needed['GLIBCXX']} (libstdc++)")
        found = glibc_found()
        return RootCanalError(
            f"RootCanal at {binary} cannot start: it needs {' and '.join(w for w in wants if w)}"
            f", this system has {'glibc ' + found if found else 'no glibc'} (missing: "
            f"{', '.join(sorted(set(missing)))}); the rootcanal 1.10 line runs on glibc 2.34+: "
            f"{INSTALL_HINT}"
        )
    for line in output:
        bind = _BIND_ERROR.search(line)
        if bind:
            return RootCanalError(
                f"RootCanal cannot listen on port {bind.group(1)}: {bind.group(2)}"
            )
        listen = _LISTEN_ERROR.search(line)
        if listen:
            return RootCanalError(f"RootCanal cannot listen on one of its ports: {listen.group(1)}")
    last = next((line for line in reversed(output) if line.strip()), "no output")
    how = f"exited with status {status}" if status is not None else "did not start listening"
    return RootCanalError(f"RootCanal at {binary} {how}: {last.strip()}")


def free_port() -> int:
    """A TCP port free on every interface (RootCanal binds them all)."""
    return free_ports(1)[0]


def free_ports(count: int, *, besides: int | None = None) -> list[int]:
    """``count`` distinct TCP ports free on every interface, none equal to ``besides``.

    The probes are held open together: a port freed by one probe may be the next probe's
    (Linux picks a random free port each time), and a RootCanal given one port for two of
    its servers binds the first and only logs that the second failed; when the second is
    the HCI server, the first server's "Listening on" line names the HCI port and a host
    joins the test channel instead of a controller."""
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probes.append(probe)  # held bound until every port is chosen
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
            if port != besides:
                ports.append(port)
        return ports
    finally:
        for probe in probes:
            probe.close()


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> None:
    """Check that an HCI controller answers at ``host:port`` before scripts join it.

    A RootCanal that is not there would otherwise fail every script with its own error.
    Each connection to the HCI port is a controller of its own, so the probe is one: it
    sends HCI Reset and waits for a Command Complete, which tells a listening controller
    from a closed port or a server speaking something else; the connection is closed at
    once. Raises ``OSError`` (refused, unreachable, timed out) or
    ``ValueError`` (what answered is not an HCI controller)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(_HCI_RESET)
        answer = b""
        while len(answer) < len(_COMMAND_COMPLETE):
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(len(_COMMAND_COMPLETE) - len(answer))
            if not chunk:
                raise ValueError("the connection closed without an answer to HCI Reset")
            answer += chunk
    if answer != _COMMAND_COMPLETE:
        raise ValueError(f"what answered is not an HCI controller (0x{answer.hex()})")


class RootCanal:
    """One RootCanal process: a shared medium whose HCI port makes a controller per
    connection. ``port``: the HCI port (a free one when not given); the test and link ports
    are always free ones. ``host``: the address put in :attr:`spec` (RootCanal itself
    listens on every interface). Use as a context manager, or :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self, port: int | None = None, *, host: str = "127.0.0.1", binary: str | None = None
    ) -> None:
        self.host = host
        self.hci_port = port
        self.binary = binary
        self.process: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=40)
        self._ready = threading.Event()
        self._listening = False
        #: RootCanal said it could not bind one of its ports.
        self._port_taken = False
        self._reader: threading.Thread | None = None
        self._workdir: str | None = None
        #: Held while RootCanal runs: its watcher stops it once this process is gone.
        self._lifeline: Lifeline | None = None

    @property
    def spec(self) -> str:
        """The ``MPBLUETOOTH_TRANSPORT`` spec for a host to join this RootCanal."""
        if self.hci_port is None:
            raise RootCanalError("RootCanal is not started")
        return f"tcp-client:{self.host}:{self.hci_port}"

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the binary and wait (bounded) until its HCI port listens; return the spec.

        Ports it chose itself are free when chosen but bound only by RootCanal, a moment
        later: another process may take one meanwhile (many RootCanals starting side by
        side, as in CI). Then it starts again on fresh ports, up to three times; a port the
        caller named is tried once."""
        attempts = _START_ATTEMPTS if self.hci_port is None else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except RootCanalError:
                if attempt == attempts or not self._port_taken:
                    raise
                logger.info("RootCanal: a port was taken before it bound it; starting again")
                self.hci_port = None
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> str:
        if self.process is not None:
            return self.spec
        self._ready.clear()
        self._listening = False
        self._port_taken = False
        self._output.clear()
        binary = self.binary or find_binary()
        self.binary = binary
        if not os.access(binary, os.X_OK):
            # Said here: the binary is started through a wrapper (``binary_command``).
            raise RootCanalError(f"RootCanal at {binary} cannot start: Permission denied")
        # Four distinct ports: RootCanal opens test, link and LE link before HCI, and one
        # port given twice makes the earlier server's "Listening on" name the HCI port.
        if self.hci_port is None:
            hci, *others = free_ports(4)
        else:
            hci, others = self.hci_port, free_ports(3, besides=self.hci_port)
        self.hci_port = hci
        others_by_flag = zip(("--test_port", "--link_port", "--link_ble_port"), others, strict=True)
        ports = {"--hci_port": hci, **dict(others_by_flag)}
        # RootCanal may write captures into its working directory: give it its own.
        self._workdir = tempfile.mkdtemp(prefix="mpbluetooth-rootcanal-")
        self._lifeline = Lifeline()
        command = [binary, *(f"{flag}={port}" for flag, port in ports.items())]
        try:
            self.process = subprocess.Popen(
                binary_command(command, self._lifeline, self._workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                cwd=self._workdir,
                start_new_session=True,  # its own process group: stop() ends every child
                pass_fds=self._lifeline.pass_fds,
            )
        except OSError as exc:
            self._release()
            raise RootCanalError(f"RootCanal at {binary} cannot start: {exc.strerror}") from None
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout, hci), name="rootcanal-log", daemon=True
        )
        self._reader.start()
        if not self._ready.wait(timeout) or not self._listening:
            self._reader.join(1.0)
            try:
                # Its output has ended: it is exiting (a port taken leaves it running).
                status: int | None = self.process.wait(0 if self._reader.is_alive() else 1.0)
            except subprocess.TimeoutExpired:
                status = None
            output = list(self._output)
            self.stop()
            raise startup_error(binary, status, output)
        logger.info("RootCanal %s listening: %s (pid %d)", binary, self.spec, self.process.pid)
        return self.spec

    def _read(self, stream: IO[str], hci_port: int) -> None:
        """Drain RootCanal's log (a full pipe would stall it), keep its tail for errors, and
        announce when the HCI port listens or the process ended."""
        for line in stream:
            line = line.rstrip("\n")
            self._output.append(line)
            logger.debug("rootcanal: %s", line)
            match = _LISTENING.search(line)
            if match and int(match.group(1)) == hci_port:
                self._listening = True
                self._ready.set()
            elif _BIND_ERROR.search(line) or _LISTEN_ERROR.search(line):
                # It does not exit when a port is taken: it only logs it.
                self._port_taken = True
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        """Stop RootCanal and anything it started; bounded, then killed."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    logger.warning("RootCanal (pid %d) ignored SIGTERM: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            else:
                # The leader is gone; its group may not be.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
            self._reader = None
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._release()

    def _release(self) -> None:
        """Once RootCanal has ended (or never started): close its lifeline, which its
        watcher no longer reads, and remove its folder."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> RootCanal:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["RootCanal", "RootCanalError", "find_binary", "glibc_found", "probe", "ENV_BINARY"]
