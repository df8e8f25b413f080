"""Warm start of ``mpbluetooth-python``: a process that has already imported Bumble forks
each program.

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
import logging
import os
import signal
import socket
import sys
import time
import zlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import selectors

logger = logging.getLogger(__name__)

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
#: Signals the launcher passes on to the program (what a shell, a runner or a test harness
#: sends to the process it started).
_FORWARDED: Final = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
    if hasattr(signal, name)
)
#: What the server imports before it takes requests: what a BLE program run by
#: ``mpbluetooth-python`` imports, on the simulated radio or through a transport.
_WARM_MODULES: Final = (
    "mpbluetooth.ble",
    "mpbluetooth._stack",
    "mpbluetooth._gap",
    "mpbluetooth._gatts",
    "mpbluetooth._gattc",
    "mpbluetooth._l2cap",
    "mpbluetooth._security",
    "mpbluetooth.sim.air",
    "mpbluetooth.sim.controller",
    "mpbluetooth.compat.micropython",
    "mpbluetooth.compat.machine",
    "mpbluetooth.compat._asyncio",
    "bumble.device",
    "bumble.transport",
    "bumble.transport.tcp_client",
    "bumble.transport.common",
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
    path = os.path.join(folder, f"warm-{key()}.sock")
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
        lock_fd = os.open(path[: -len(".sock")] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
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
        log_path = path[: -len(".sock")] + ".log"
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


# --- the server's side ---------------------------------------------------------------
class _Server:
    """Accepts requests on ``path``, forks one child per request, reports each child's
    end to its launcher, and ends when idle."""

    def __init__(self, path: str, lock_fd: int, idle: float) -> None:
        import selectors

        self.path = path
        self.idle = idle
        self.lock_fd = lock_fd
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = f"{path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        self.listener.bind(temporary)
        self.listener.listen(128)
        os.replace(temporary, path)
        self.inode = os.stat(path).st_ino
        self.pid_path = path[: -len(".sock")] + ".pid"
        with open(self.pid_path, "w") as file:
            file.write(f"{os.getpid()}\n")
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        os.set_blocking(self.wake_read, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGTERM, lambda s, f: self._stop())
        self.stopping = False
        #: Running children: pid -> their launcher's connection.
        self.children: dict[int, socket.socket] = {}
        #: Children told to stop because their launcher went: pid -> when to kill them.
        self.orphans: dict[int, float] = {}
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self.selector_read = selectors.EVENT_READ
        self.selector.register(self.listener, self.selector_read)
        self.selector.register(self.wake_read, self.selector_read)

    def _stop(self) -> None:
        self.stopping = True

    def _ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def serve(self) -> dict[str, Any] | None:
        """Serve until idle. In a forked child, returns that child's request."""
        last_work = time.monotonic()
        while True:
            if self.children:
                last_work = time.monotonic()
                self._kill_lingering()
            elif self.stopping or not self._ours() or time.monotonic() - last_work > self.idle:
                self._close()
                return None
            for key_, _events in self.selector.select(timeout=min(1.0, self.idle + 0.01)):
                if key_.fileobj is self.listener:
                    request = self._accept()
                    if request is not None:
                        return request
                    last_work = time.monotonic()
                elif key_.fileobj == self.wake_read:
                    with contextlib.suppress(OSError):
                        while os.read(self.wake_read, 512):
                            pass
                    self._reap()
                else:
                    self._launcher_gone(key_)

    def _accept(self) -> dict[str, Any] | None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return None
        conn.settimeout(_CONNECT_S)
        reader = _Reader(conn)
        try:
            request = reader.read(with_fds=8)
        except (OSError, ValueError):
            request = None
        fds = reader.fds
        if request is None or len(fds) != len(request.get("fds", [])):
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        pid = os.fork()
        if pid == 0:
            request["_received"] = fds
            self._in_child(conn)
            return request
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        try:
            _send(conn, {"pid": pid})
        except OSError:
            pass
        self.children[pid] = conn
        self.selector.register(conn, self.selector_read, pid)
        return None

    def _in_child(self, conn: socket.socket) -> None:
        """Drop everything of the server's in a new child."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        for sock in (self.listener, conn, *self.children.values()):
            sock.close()
        for fd in (self.wake_read, self.wake_write, self.lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.children = {}

    def _launcher_gone(self, key_: Any) -> None:
        """The launcher's connection ended or spoke: the launcher is gone, so its
        program goes too (as a child of a killed parent does under ``run``'s lifeline)."""
        pid = key_.data
        conn = key_.fileobj
        try:
            data = conn.recv(1)
        except OSError:
            data = b""
        if data:
            return
        self.selector.unregister(conn)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        from ._lifeline import STOP_GRACE_S

        self.orphans[pid] = time.monotonic() + STOP_GRACE_S

    def _kill_lingering(self) -> None:
        """Programs whose launcher is gone and that outlived SIGTERM's grace: killed."""
        now = time.monotonic()
        for pid, deadline in list(self.orphans.items()):
            if pid not in self.children:
                del self.orphans[pid]
            elif now > deadline:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                del self.orphans[pid]

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                message = {"signal": os.WTERMSIG(status)}
            else:
                message = {"status": os.waitstatus_to_exitcode(status)}
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.selector.unregister(conn)
            with contextlib.suppress(OSError):
                _send(conn, message)
            conn.close()

    def _close(self) -> None:
        if self._ours():
            for path in (self.path, self.pid_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self.listener.close()
        self.selector.close()


def become(request: dict[str, Any]) -> None:
    """In the forked child: take the launcher's descriptors, environment, directory and
    streams, so the program cannot tell it was not started fresh."""
    received: list[int] = request["_received"]
    targets: list[int] = request["fds"]
    import fcntl

    # Above every target first, so that no dup2 below closes a descriptor still needed.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(targets) + 1) for fd in received]
    for fd in received:
        os.close(fd)
    for source, target in zip(high, targets, strict=True):
        os.dup2(source, target, inheritable=target <= 2)
        os.close(source)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    raise_by = int(request["nice"]) - _nice()
    if raise_by > 0:
        with contextlib.suppress(OSError):
            os.nice(raise_by)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    # As an exec'd program inherits them: ignored signals stay ignored, the rest default
    # (SIGINT: Python's KeyboardInterrupt).
    ignored = set(request["ignored"])
    for signum in _FORWARDED:
        if signum in ignored:
            signal.signal(signum, signal.SIG_IGN)
        elif signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        else:
            signal.signal(signum, signal.SIG_DFL)
    _fresh_standard_streams()
    from .._logging import configure_from_env

    # The launcher imported mpbluetooth too, and said a bad MPBLUETOOTH_LOG on this stderr.
    configure_from_env(said=True)


def entry_point(request: dict[str, Any]) -> Any:
    """The function a request's program runs (from :data:`ENTRIES`)."""
    import importlib

    module, function = ENTRIES[request.get("entry", "python")]
    return getattr(importlib.import_module(module), function)


def _fresh_standard_streams() -> None:
    """``sys.stdin``/``stdout``/``stderr`` over descriptors 0-2, made as CPython makes
    them at start-up (line buffered on a terminal, stderr always; ``PYTHONUNBUFFERED``
    writes through)."""
    import io

    # The server started as the program would have (same PYTHON* environment and flags),
    # so its own first streams tell whether ``-u`` or ``PYTHONUNBUFFERED`` is in force.
    unbuffered = bool(getattr(sys.__stdout__, "write_through", False))
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, f"__{name}__", None) or getattr(sys, name)
        encoding = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or "strict"
        try:
            tty = os.isatty(fd)
        except OSError:
            continue
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = f"<{name}>"
        buffered: Any
        if mode == "w" and unbuffered:
            buffered = raw
        elif mode == "w":
            buffered = io.BufferedWriter(raw)
        else:
            buffered = io.BufferedReader(raw)
        stream = io.TextIOWrapper(
            buffered,
            encoding=encoding,
            errors=errors,
            newline="\n",
            line_buffering=not unbuffered and (tty or fd == 2),
            write_through=unbuffered and mode == "w",
        )
        stream.mode = mode  # type: ignore[misc]
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _warm_up() -> None:
    import importlib

    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional module: each child imports it, or says why
            # No handler is configured here (the children must not inherit one): logging's
            # last resort writes the warning to this server's log file.
            logger.warning("not preloaded: %s (%r)", name, exc)
    import gc

    # What is imported stays for every child: the collector need not walk it again in
    # each (and walking it would copy every page the fork shares).
    gc.collect()
    gc.freeze()


def serve(path: str, lock_fd: int, idle: float) -> dict[str, Any] | None:
    """The server's life: bind, import, serve; in a child, that child's request."""
    server = _Server(path, lock_fd, idle)
    _warm_up()
    return server.serve()


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
