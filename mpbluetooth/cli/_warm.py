"""Warm start of ``mpbluetooth-python``, the launcher's side: a process that has already
imported Bumble forks each program (the server is ``_warm_server``).

Why: a fresh CPython spends 0.4-0.5 s of CPU importing Bumble (``bumble.hci`` alone builds
about 350 dataclasses) before a program's first line runs, where a board starts at once.
Two-instance tests give the second instance about a second to start, power on and
connect (MicroPython's ``perf_l2cap`` waits 1 s for the connection), and a hundred boards
starting on two cores wait for each other's imports. So ``mpbluetooth-python`` first asks
a warm server (one per interpreter, installation and ``PYTHON*``/locale environment) to
fork the program: the child gets the caller's arguments, environment, working directory,
``sys.path`` and standard streams, and this launcher waits for it, forwards signals to it
and exits with its status. The fork shares the imported modules' memory (copy on write).

When there is no server, the first launcher starts one (detached, in a session of its
own) and waits for it; it ends after :data:`IDLE_S` without work. Nothing of the calling
process is shared but what the request carries: other inherited descriptors are not
passed on, and an interactive terminal, ``MPBLUETOOTH_WARM=0``, or a platform without
``fork`` and descriptor passing runs the program in this process, as before
(``docs/design.md``, "Start-up").

What the server imports must not read the environment at import time (the server's is
none of its callers'): such settings are read when used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys
import time
import zlib
from typing import Any, Final

ENV_WARM: Final = "MPBLUETOOTH_WARM"
#: Directory of the servers' sockets (default: ``$XDG_RUNTIME_DIR/mpbluetooth``, else
#: ``/tmp/mpbluetooth-UID``); it must belong to the user and be closed to others.
ENV_WARM_DIR: Final = "MPBLUETOOTH_WARM_DIR"
#: Seconds a server with nothing running and no request waits before it ends (default).
IDLE_S: Final = 60.0
#: ... or as the launcher that starts it says.
ENV_WARM_IDLE: Final = "MPBLUETOOTH_WARM_IDLE"
#: Longest wait for a server that another launcher is starting to accept (its socket is
#: bound within milliseconds of its start; this only bounds a server that died then).
_CONNECT_S: Final = 5.0
_POLL_S: Final = 0.01
_MAX_MESSAGE: Final = 1 << 20
#: A server's socket is ``warm-KEY.sock``; its lock, log and pid files sit beside it.
_SOCKET: Final = ".sock"
#: Signals the launcher passes on to the program (what a shell, a runner or a test harness
#: sends to the process it started).
_FORWARDED: Final = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
    if hasattr(signal, name)
)
#: Environment variables that change how the interpreter starts or decodes its streams:
#: a server serves only callers that agree on them.
_INTERPRETER_ENV: Final = ("PYTHON", "LANG", "LC_")
#: What a fork can run, by name: (module, function of the program's argument list). The
#: server imports the module when a request names it; nothing else can be asked for.
ENTRIES: Final = {
    "python": ("mpbluetooth.cli.python", "main"),
    "board": ("mpbluetooth.testing._board_main", "run"),
}
#: Variables the server keeps besides those (locations, no caller's settings).
_KEPT_ENV: Final = ("PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR")
#: The first argument that makes ``python -m mpbluetooth.cli.python`` a server, followed by
#: the socket, the lock descriptor and the idle seconds (``mpbluetooth-python`` itself
#: would refuse it).
SERVER_ARG: Final = "--warm-server"
#: The module the server runs as (``mpbluetooth-python``'s own), by name: this module
#: does not import it.
_LAUNCHER: Final = "mpbluetooth.cli.python"


def supported() -> bool:
    """Whether this platform can hand a program to a forked process."""
    return hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")


def wanted() -> bool:
    """Whether this launch should try a warm start: not switched off, not interactive."""
    if os.environ.get(ENV_WARM, "") == "0" or not supported():
        return False
    try:
        return not os.isatty(0)
    except OSError:
        return True


def directory() -> str | None:
    """The servers' directory, created if need be; None when it is not safely ours."""
    path = os.environ.get(ENV_WARM_DIR)
    if not path:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and os.path.isdir(runtime):
            path = os.path.join(runtime, "mpbluetooth")
        else:
            path = os.path.join("/tmp", f"mpbluetooth-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def sibling(path: str, suffix: str) -> str:
    """The server's other file beside its socket ``path``: ``.lock``, ``.log`` or ``.pid``."""
    return path.removesuffix(_SOCKET) + suffix


def _newest_mtime(package_dir: str) -> int:
    newest = 0
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
    return newest


def key() -> str:
    """What a server must share with its callers: the interpreter, its flags and path,
    the environment that shapes start-up, and the installed code (mpbluetooth's newest
    source file, Bumble's package)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bumble = None
    for entry in sys.path[1:]:
        candidate = os.path.join(entry or ".", "bumble", "__init__.py")
        with contextlib.suppress(OSError):
            info = os.stat(candidate)
            bumble = [candidate, info.st_mtime_ns, info.st_ino]
            break
    parts = [
        sys.executable,
        sys.warnoptions,
        bool(getattr(sys.__stdout__, "write_through", False)),
        sys.version,
        list(sys.flags),
        sorted(sys._xoptions.items()),
        sys.path[1:],
        sorted((k, v) for k, v in os.environ.items() if k.startswith(_INTERPRETER_ENV)),
        package,
        _newest_mtime(package),
        bumble,
        _nice(),  # a fork keeps the server's priority: a niced caller gets its own server
    ]
    data = json.dumps(parts, default=str).encode()
    # Two 32-bit checksums (zlib; hashlib would cost the launcher OpenSSL's import).
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


# --- messages: one JSON object per line ---------------------------------------------
def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


class _Reader:
    """Reads the line-framed messages of one connection, with the descriptors that came
    with the first."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []

    def read(self, with_fds: int = 0) -> dict[str, Any] | None:
        """The next message; None at end of stream."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_MESSAGE:
                raise ValueError("warm start: message too long")
            if with_fds and not self.fds:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, with_fds)
                self.fds.extend(fds)
            else:
                data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


# --- the launcher's side -------------------------------------------------------------
def launch(argv: list[str], entry: str = "python", fds: tuple[int, ...] = ()) -> int | None:
    """Run ``mpbluetooth-python argv`` in a warm server's fork; its exit status, or None
    when no warm start was possible and the caller must run the program itself.

    ``entry`` names what the fork runs (:data:`ENTRIES`); ``fds``: more descriptors the
    program gets under the same numbers (the pytest plugin's event pipe)."""
    if not wanted():
        return None
    folder = directory()
    if folder is None:
        return None
    path = os.path.join(folder, f"warm-{key()}{_SOCKET}")
    sock = _connect(path)
    if sock is None:
        return None
    with sock:
        return _hand_over(sock, argv, entry, fds)


def _connect(path: str) -> socket.socket | None:
    """A connection to the server at ``path``, starting one if there is none."""
    deadline = time.monotonic() + _CONNECT_S
    started = False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                return None
        if not started:
            # False: another launcher is starting it (or it died starting: try again).
            outcome = _start_server(path)
            if outcome is None:
                return None
            started = outcome
        if time.monotonic() > deadline:
            return None
        time.sleep(_POLL_S)


def _start_server(path: str) -> bool | None:
    """Start a server for ``path`` unless one is starting (it holds the lock file for its
    life). True: started; False: another is starting; None: cannot."""
    import fcntl
    import subprocess

    try:
        lock_fd = os.open(sibling(path, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        # Only what shapes the interpreter (the key's part), and where things are: the
        # server serves every later caller, each of which brings its own environment.
        environment = {
            k: v for k, v in os.environ.items() if k.startswith(_INTERPRETER_ENV) or k in _KEPT_ENV
        }
        log_path = sibling(path, ".log")
        with open(log_path, "wb") as log:
            subprocess.Popen(
                [*_interpreter(), "-m", _LAUNCHER, SERVER_ARG, path, str(lock_fd), str(_idle())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(lock_fd,),
                start_new_session=True,
                env=environment,
                cwd="/",
            )
        return True
    finally:
        os.close(lock_fd)


def _interpreter() -> list[str]:
    """This interpreter with the options it was started with (``-X``, ``-W``, ``-O``,
    ``-u``...), so that the server's children run as this process would."""
    import subprocess

    arguments = [sys.executable, *subprocess._args_from_interpreter_flags()]  # type: ignore[attr-defined]
    if getattr(sys.__stdout__, "write_through", False) and "-u" not in arguments:
        arguments.append("-u")
    return arguments


def _idle() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_WARM_IDLE, IDLE_S)))
    except ValueError:
        return IDLE_S


def _hand_over(
    sock: socket.socket, argv: list[str], entry: str, extra_fds: tuple[int, ...]
) -> int | None:
    fds = [0, 1, 2]
    lifeline = os.environ.get("MPBLUETOOTH_LIFELINE", "").split(":")[0]
    for fd in (int(lifeline) if lifeline.isdigit() else -1, *extra_fds):
        if fd >= 0 and fd not in fds:
            fds.append(fd)
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            return None  # a closed standard stream: run here, where it stays closed
    request = {
        "argv": [sys.argv[0], *argv],
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "path": sys.path,
        "umask": _umask(),
        "nice": _nice(),
        "ignored": [int(n) for n in _FORWARDED if signal.getsignal(n) is signal.SIG_IGN],
        "fds": fds,
        "entry": entry,
    }
    try:
        _send(sock, request, fds)
    except OSError:
        return None
    reader = _Reader(sock)
    try:
        started = reader.read()
    except (OSError, ValueError):
        started = None
    if started is None or "pid" not in started:
        return None  # the server died before it forked: run here
    pid = int(started["pid"])
    previous = {}
    for signum in _FORWARDED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # ignored here, and so in the program (``become``)
        with contextlib.suppress(OSError, ValueError):
            previous[signum] = signal.signal(signum, lambda s, f: _forward(pid, s))
    try:
        ended = _wait_end(reader, pid)
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(signum, handler)
    if "signal" in ended:
        signum = int(ended["signal"])
        # Die of the same signal, as the program did, so the caller sees what it would
        # have seen (a negative return code from Popen, 128+N from a shell).
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)  # not for SIGKILL, which needs none
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), signum)
        return 128 + signum
    return int(ended.get("status", 1))


def _wait_end(reader: _Reader, pid: int) -> dict[str, Any]:
    """The program's end, as the server reports it. Should the server die first, wait for
    the program to go (its status is then unknown: 1)."""
    while True:
        try:
            message = reader.read()
        except InterruptedError:
            continue
        except (OSError, ValueError):
            message = None
        if message is not None:
            return message
        while _alive(pid):
            time.sleep(0.05)
        return {"status": 1}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):
        return 0


def stop_all(folder: str | None = None) -> int:
    """Tell every server in ``folder`` (default: :func:`directory`) to end once its
    programs have; how many were told."""
    folder = folder or directory()
    if folder is None:
        return 0
    told = 0
    for name in os.listdir(folder):
        if not (name.startswith("warm-") and name.endswith(".pid")):
            continue
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(folder, name)) as file:
                pid = int(file.read().strip())
            os.kill(pid, signal.SIGTERM)
            told += 1
    return told
