"""Children that die with their parent: a pipe each child watches.

``mpbluetooth run`` and the pytest plugin start boards and hubs as child processes. If the
parent is killed outright (``kill -9``, pytest-timeout's ``os._exit``) it cannot stop them,
and they would run on with PPID 1. So the parent keeps the write end of a pipe that only
it holds, and each child gets the read end (``MPBLUETOOTH_LIFELINE=FD``): when the parent
is gone, however it went, the kernel closes the write end and the child's read returns
end-of-file. The child then stops itself with SIGTERM (so a board that stayed on, or a
hub, still closes cleanly) and is killed outright if that does not end it. A pipe, unlike
Linux's ``PR_SET_PDEATHSIG``, also works on macOS and does not fire when merely the
thread that started the child ends.

The parent may name directories of its own (``MPBLUETOOTH_LIFELINE=FD:DIR:...``) that it
cannot remove once killed: the children remove them when it is gone.

A child that is not Python (the RootCanal binary) cannot watch the pipe itself: its command
line goes through :func:`binary_command`, which runs this module as a program that forks a
watcher and then becomes the binary (see :func:`_exec_watched`).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final, NoReturn

logger = logging.getLogger(__name__)

ENV_LIFELINE: Final = "MPBLUETOOTH_LIFELINE"
#: Passing a descriptor to a child (``pass_fds``) is POSIX only: elsewhere children are
#: stopped by their parent as before, and not when it is killed.
_POSIX: Final = os.name == "posix"
#: How long a child may take to end after SIGTERM before it ends itself outright.
_GRACE_S: Final = 10.0


class Lifeline:
    """The parent's side: one pipe for every child it starts. Keep the object for as long
    as the children may live; ``close()`` (or the parent's death) lets them go."""

    def __init__(self) -> None:
        # Both ends are non-inheritable (PEP 446): only children given ``read_fd`` in
        # ``pass_fds`` hold it, and no child holds the write end.
        self.read_fd, self._write_fd = os.pipe()

    def environment(self, *leftovers: str) -> dict[str, str]:
        """The variable a child needs (``leftovers``: directories it removes once the
        parent is gone); give it :attr:`pass_fds` too."""
        if not _POSIX:
            return {}
        return {ENV_LIFELINE: ":".join([str(self.read_fd), *leftovers])}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """``Popen``'s ``pass_fds`` for a child (none where only POSIX can pass them)."""
        return (self.read_fd,) if _POSIX else ()

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self._write_fd = -1


def own_process_group() -> int | None:
    """``Popen``'s ``process_group`` that keeps a child out of the terminal's process
    group, so that Ctrl-C reaches only the parent, which stops its children quietly
    (POSIX; None elsewhere)."""
    return 0 if _POSIX else None


def watch_parent() -> None:
    """In a child: end this process when the parent that set ``MPBLUETOOTH_LIFELINE`` is
    gone. Does nothing without it; the variable is removed so grandchildren do not
    watch a pipe they were never given."""
    value = os.environ.pop(ENV_LIFELINE, "")
    if not value:
        return
    fd_text, *leftovers = value.split(":")
    try:
        fd = int(fd_text)
        os.fstat(fd)
    except (ValueError, OSError):
        logger.debug("%s=%r names no open pipe: not watching the parent", ENV_LIFELINE, value)
        return
    thread = threading.Thread(
        target=_watch, args=(fd, leftovers), name="mpbluetooth-lifeline", daemon=True
    )
    thread.start()


def _watch(fd: int, leftovers: list[str]) -> None:
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    logger.info("the parent process is gone: stopping")
    for path in filter(None, leftovers):
        shutil.rmtree(path, ignore_errors=True)
    os.kill(os.getpid(), signal.SIGTERM)
    # Still here after the grace period (SIGTERM caught and ignored): end outright.
    threading.Event().wait(_GRACE_S)
    os._exit(1)


_shared: Lifeline | None = None
_shared_lock = threading.Lock()


def shared() -> Lifeline:
    """The lifeline of this process's children for as long as it runs (the testing
    package's boards and hubs): never closed, so they live until stopped or it dies."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Lifeline()
        return _shared


#: Seconds a child told to stop (SIGTERM) gets before it is killed, and then again to die.
STOP_GRACE_S: Final = 10.0


def wait_or_kill(process: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> int:
    """Wait for a child already told to stop; kill it if it lingers. Its exit status."""
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(grace)


def binary_command(command: Sequence[str], lifeline: Lifeline, *leftovers: str) -> list[str]:
    """The command line that runs ``command``, a program that cannot call
    :func:`watch_parent` (the RootCanal binary), so that it also ends when this process is
    gone, however it went, and ``leftovers`` (directories) are then removed. Start it with
    ``pass_fds=lifeline.pass_fds``. The binary keeps the pid, exit status and output that
    ``Popen`` would give it run directly, and is made a process group of its own (which
    ``start_new_session`` already makes it). Where descriptors cannot be passed (not POSIX)
    ``command`` is returned as is: the binary is stopped by its parent, and not when that
    is killed. The same where there is no interpreter file to run this module with.

    Why not Linux's ``PR_SET_PDEATHSIG`` in ``preexec_fn``: it fires when the *thread*
    that forked the child ends (``run`` starts RootCanal from ``asyncio.to_thread``'s
    worker), ``preexec_fn`` is unsafe in a process with threads, it leaves the binary's
    folder behind, and macOS has no such call."""
    program = os.path.abspath(__file__)
    if not _POSIX or not sys.executable or not os.path.isfile(program):
        return list(command)  # (no interpreter to run, or this module is in an archive)
    value = ":".join([str(lifeline.read_fd), *leftovers])
    # -I -S: this module imports only the standard library; nothing else is looked up.
    return [sys.executable, "-I", "-S", program, value, *command]


def _exec_watched(args: list[str]) -> NoReturn:
    """This module run as a program (:func:`binary_command`): fork a watcher, then become
    the binary (``exec``), so that the binary keeps the pid its parent's ``Popen`` knows.

    The watcher is the binary's child and a member of its process group, which gives two
    guarantees a watcher beside it would not have: ``getppid()`` names the binary exactly
    as long as the binary runs, and the group's id cannot be reused while the watcher is
    in it, so its signals never reach an unrelated process that got a recycled pid. It
    also holds the read end of a second pipe whose write end only the binary holds: its
    end-of-file says the binary has ended, and the watcher then ends too."""
    value, *command = args
    fd_text, *leftovers = value.split(":")
    lifeline = int(fd_text)
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    alive_read, alive_write = os.pipe()
    if os.fork() == 0:
        os.close(alive_write)
        _watch_binary(lifeline, alive_read, os.getppid(), leftovers)
    os.close(lifeline)
    os.close(alive_read)
    os.set_inheritable(alive_write, True)
    try:
        os.execv(command[0], command)
    except OSError as exc:
        os.write(2, f"cannot run {command[0]}: {exc.strerror}\n".encode())
        os._exit(127)


def _watch_binary(lifeline: int, alive: int, binary: int, leftovers: list[str]) -> NoReturn:
    """The watcher forked by :func:`_exec_watched`: wait for the binary's parent or the
    binary to end; in the first case stop the binary's group (SIGTERM, SIGKILL after the
    grace), remove ``leftovers`` and end."""
    # The binary's output must end when the binary does: this process holds none of it.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # Nothing is ever written to either pipe: readable means end-of-file.
    select.select([lifeline, alive], [], [])
    if not select.select([lifeline], [], [], 0)[0]:
        os._exit(0)  # the binary ended and its parent is still there: nothing to do
    group = os.getpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is not for us
    os.killpg(group, signal.SIGTERM)
    if not select.select([alive], [], [], _GRACE_S)[0] and os.getppid() == binary:
        os.kill(binary, signal.SIGKILL)
        select.select([alive], [], [], _GRACE_S)
    for path in filter(None, leftovers):
        shutil.rmtree(path, ignore_errors=True)
    os.killpg(group, signal.SIGKILL)  # anything the binary started, and this watcher
    os._exit(0)


if __name__ == "__main__":
    _exec_watched(sys.argv[1:])
