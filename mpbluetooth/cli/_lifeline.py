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
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from typing import Any, Final

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
