"""Where mpbluetooth's threads run: on one CPU, which the threads that wait for them visit.

A BLE round trip hands work between threads several times (the program, the loop thread,
the IRQ context). Under the GIL these threads never run Python at the same time, so a
second CPU buys them nothing, but a hand-over to a thread that sleeps on another CPU costs a
wake-up of that CPU. On a virtual machine whose idle vCPU has halted, that is 40-50 µs per
wake-up, against about 9 µs on the same CPU (``benchmarks/hop.py``: a bare hand-over and
back, 105 µs across two vCPUs, 17 µs on one).

So the loop thread lives on one CPU (the one the program was on when the loop started), and
a thread that blocks waiting for it (a blocking ``BLE`` call, the fallback IRQ thread waiting
for events, an idle point of the main thread, the test recorder's waits) narrows its own
affinity to that CPU for the length of the wait and gets its own mask back before it runs
anything else. The wait's wake-up then stays on one CPU, and the program's threads keep the
affinity they had everywhere else: a process or thread they start inherits their own mask,
never ours. After the first wait the kernel leaves the waiting thread on that CPU (its mask
allows it, and nothing moves it), so a visit costs two ``sched_setaffinity`` calls, ~1 µs
each.

Off where it cannot help or cannot be done: on a build without the GIL (threads do run in
parallel there), where ``os.sched_setaffinity`` does not exist (macOS, Windows), when the
process may use only one CPU, and with ``MPBLUETOOTH_CPU=any``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Final

logger = logging.getLogger(__name__)

#: ``MPBLUETOOTH_CPU=any`` leaves every thread where the kernel puts it.
ENV = "MPBLUETOOTH_CPU"

_cpu: int | None = None
#: The loop thread's affinity before it settled: what a thread it starts should have.
_allowed: set[int] | None = None


class _Visits(threading.local):
    #: How deep this thread is in visits (the loop thread: always at least 1, it is there).
    depth: int = 0
    #: The thread's own affinity while a visit has narrowed it, to be put back.
    mask: set[int] | None = None


_local = _Visits()


def _wanted() -> bool:
    if os.environ.get(ENV, "").strip().lower() == "any":
        return False
    if not hasattr(os, "sched_setaffinity"):
        return False
    gil = getattr(sys, "_is_gil_enabled", None)
    return gil is None or bool(gil())


def _current_cpu(allowed: set[int]) -> int:
    """The CPU this thread runs on now (field 39 of its ``stat``), else one picked by pid,
    so that many processes started together spread over the CPUs."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        cpu = int(fields[36])
        if cpu in allowed:
            return cpu
    except (OSError, ValueError, IndexError):
        pass
    return sorted(allowed)[os.getpid() % len(allowed)]


def settle_loop_thread() -> None:
    """On the loop thread, as it starts: choose the CPU and move there for good."""
    global _cpu, _allowed
    if not _wanted():
        return
    try:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            return
        cpu = _current_cpu(allowed)
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:  # a container's cpuset may refuse it: the threads stay unpinned
        logger.debug("threads left unpinned: %s", exc)
        return
    _cpu, _allowed = cpu, allowed
    _local.depth = 1  # the loop thread never visits: it is there
    logger.debug("loop thread on CPU %d", cpu)


def release_thread() -> None:
    """On a thread of ours that the loop thread may have started (it inherits the loop's
    one CPU): take back the affinity the loop thread had before it settled, so that the
    handlers it runs, and what they start, have the program's."""
    if _allowed is None or _local.depth:
        return
    with contextlib.suppress(OSError):
        if os.sched_getaffinity(0) != _allowed:
            os.sched_setaffinity(0, _allowed)


def loop_cpu() -> int | None:
    """The CPU of the loop thread, or None when threads are not placed."""
    return _cpu


class _Visit:
    """The context manager ``visiting()`` returns. One object serves every thread (its state
    is in ``_local``), and it is a class rather than a generator: three visits are made per
    round trip, and a generator-based one cost seven Python calls each."""

    __slots__ = ()

    def __enter__(self) -> None:
        local = _local
        depth = local.depth
        local.depth = depth + 1
        cpu = _cpu
        if depth or cpu is None:
            return  # nested, the loop thread itself, or threads not placed
        try:
            mask = os.sched_getaffinity(0)
            if cpu in mask:  # else the program narrowed its own affinity away: keep it
                os.sched_setaffinity(0, {cpu})
                local.mask = mask
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        local = _local
        local.depth -= 1
        mask = local.mask
        if local.depth or mask is None:
            return
        local.mask = None
        try:
            os.sched_setaffinity(0, mask)
        except OSError:
            pass


_VISIT: Final = _Visit()


def visiting() -> _Visit:
    """Wait on the loop thread's CPU: the calling thread's affinity is that CPU inside the
    block and its own again after it (nested blocks change nothing)."""
    return _VISIT
