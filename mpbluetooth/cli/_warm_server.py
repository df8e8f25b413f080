"""The warm-start server (see ``_warm``, the launcher's side): it imports what a BLE program
imports once, then forks one child per launcher's request and reports each child's end.

It runs as ``python -m mpbluetooth.cli.python --warm-server SOCKET LOCK_FD IDLE_S``
(``python.py`` dispatches it). In each child, :func:`become` takes on the launcher's
descriptors, environment, directory and streams, so the program cannot tell it was not
started fresh; ``python.py`` then runs it (:func:`entry_point`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any, Final

from ._lifeline import STOP_GRACE_S
from ._warm import _CONNECT_S, _FORWARDED, ENTRIES, _nice, _Reader, _send, sibling

logger = logging.getLogger(__name__)

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


class _Server:
    """Accepts requests on ``path``, forks one child per request, reports each child's
    end to its launcher, and ends when idle."""

    def __init__(self, path: str, lock_fd: int, idle: float) -> None:
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
        self.pid_path = sibling(path, ".pid")
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
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)

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
        self.selector.register(conn, selectors.EVENT_READ, pid)
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
