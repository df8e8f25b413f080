"""MicroPython's check points on CPython: where a computing main thread may run handlers.

MicroPython's VM looks for pending scheduled work only after its branch opcodes
(``py/vm.c`` reaches ``pending_exception_check`` from the jump opcodes), so handler code
runs between two statements only if a branch comes between them. These classes fire a
callback at the main thread's next branch in the program's own code, and cost nothing while
disarmed: ``sys.monitoring`` JUMP and BRANCH events on Python 3.12+ (PEP 669), an opcode
trace of the main thread on 3.11. :mod:`._scheduler` arms them when work is waiting.
"""

from __future__ import annotations

import dis
import functools
import os
import signal
import sys
import sysconfig
import threading
import types
from collections.abc import Callable
from typing import Any, Final

#: The signal number tripped by ``interrupt_main``: never sent by the OS here, and its
#: default action (ignore) is harmless should another process send it.
SIGNUM: Final = getattr(signal, "SIGURG", None)


def interrupt_main() -> None:
    """Have the main thread run the ``SIGNUM`` handler at its next bytecode boundary,
    without an OS signal (no system call of the main thread is interrupted)."""
    import _thread

    if SIGNUM is None:  # pragma: no cover - the scheduler refuses such a platform
        return
    try:
        _thread.interrupt_main(SIGNUM)
    except (ValueError, RuntimeError, TypeError):  # pragma: no cover - platform-specific
        pass


#: Branch opcodes that are not MicroPython check points: ``for`` takes its next item
#: without one (the loop's backward jump is the check point), and CPython's own
#: await/yield-from loops are not the program's branches.
_NOT_CHECK_POINTS: Final = frozenset(
    dis.opmap[name]
    for name in ("FOR_ITER", "SEND", "JUMP_BACKWARD_NO_INTERRUPT")
    if name in dis.opmap
)
_JUMPS: Final = frozenset(dis.hasjrel + dis.hasjabs) - _NOT_CHECK_POINTS


@functools.cache
def roots() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """mpbluetooth's folder, the standard library's, and the folders inside it whose code
    has check points.

    No check points: mpbluetooth itself (its locks, and the compat modules that stand in
    for MicroPython's C code) and CPython's standard library, whose Python code is C
    inside MicroPython (``json``, ``weakref`` callbacks, ``threading``, the import
    system), with one exception: ``asyncio``, Python code on MicroPython too. Third-party
    packages (site-packages) are the program's, as a board's ``/lib`` is."""
    paths = sysconfig.get_paths()
    ours = os.path.dirname(os.path.abspath(__file__))
    stdlib = (paths["stdlib"], paths["platstdlib"])
    programs = (paths["purelib"], paths["platlib"], os.path.join(paths["stdlib"], "asyncio"))
    return _real((ours,)), _real(stdlib), _real(programs)


def _real(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple({os.path.join(os.path.realpath(path), "") for path in paths})


@functools.lru_cache(maxsize=1024)
def may_interrupt(filename: str) -> bool:
    """True if a branch in code from ``filename`` is a check point."""
    if filename.startswith("<frozen"):
        return False  # the import system: module locks
    if not filename or filename.startswith("<"):
        return True  # -c code, exec'd strings, the REPL: the program's own
    ours, stdlib, programs = roots()
    path = os.path.realpath(filename)
    if path.startswith(ours):
        return False
    if path.startswith(programs):
        return True
    return not path.startswith(stdlib)


class TraceCheckPoints:
    """Check points through an opcode trace of the main thread (Python 3.11): armed, every
    interruptible frame on the stack, and every one entered, is traced opcode by opcode
    until one executes the instruction after a branch."""

    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        self._armed: list[types.FrameType] | None = None
        #: The frame whose last instruction was a branch: its next one is a check point.
        self._after_branch: types.FrameType | None = None

    def arm(self, frame: types.FrameType | None) -> None:
        if self._armed is not None:
            return
        if sys.gettrace() is not None:
            # A debugger traces: its tracing cannot be shared. Run at the interrupt when
            # the frame is the program's own, else at the next interrupt.
            if frame is None or may_interrupt(frame.f_code.co_filename):
                self._fire()
            else:
                interrupt_main()
            return
        armed = []
        current = frame
        while current is not None:
            if may_interrupt(current.f_code.co_filename):
                current.f_trace = self._trace_local
                current.f_trace_lines = False
                current.f_trace_opcodes = True
                armed.append(current)
            current = current.f_back
        self._armed = armed
        self._after_branch = None
        sys.settrace(self._trace_call)

    def disarm(self) -> None:
        if self._armed is None:
            return
        sys.settrace(None)
        for frame in self._armed:
            frame.f_trace = None
            frame.f_trace_opcodes = False
        self._armed = None
        self._after_branch = None

    def _trace_call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if self._armed is None or not may_interrupt(frame.f_code.co_filename):
            return None
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        self._armed.append(frame)
        return self._trace_local

    def _trace_local(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if self._armed is None:
            return None
        if event != "opcode":
            return self._trace_local
        if self._after_branch is frame:
            self._fire()
            return None
        code = frame.f_code
        lasti = frame.f_lasti
        if code.co_code[lasti] in _JUMPS:
            self._after_branch = frame
        return self._trace_local


class MonitoringCheckPoints:
    """Check points through ``sys.monitoring`` (PEP 669, Python 3.12+): JUMP and BRANCH
    events, which fire exactly where MicroPython's VM checks for pending work, enabled only
    while work waits for the main thread."""

    def __init__(self, fire: Callable[[], None], tool: int) -> None:
        self._fire = fire
        self._tool = tool
        self._main = threading.main_thread().ident
        self._armed = False
        monitoring = sys.monitoring  # type: ignore[attr-defined]
        self._events = monitoring.events.JUMP | monitoring.events.BRANCH
        for event in (monitoring.events.JUMP, monitoring.events.BRANCH):
            monitoring.register_callback(tool, event, self._on_branch)

    @classmethod
    def claim(cls, fire: Callable[[], None]) -> MonitoringCheckPoints | None:
        """A free tool id (debuggers, coverage and profilers keep theirs), or None."""
        monitoring = sys.monitoring  # type: ignore[attr-defined]
        for tool in (4, 3):
            try:
                monitoring.use_tool_id(tool, "mpbluetooth scheduler")
            except ValueError:
                continue
            return cls(fire, tool)
        return None

    def arm(self, frame: types.FrameType | None) -> None:
        if not self._armed:
            self._armed = True
            sys.monitoring.set_events(self._tool, self._events)  # type: ignore[attr-defined]

    def disarm(self) -> None:
        if self._armed:
            self._armed = False
            sys.monitoring.set_events(self._tool, 0)  # type: ignore[attr-defined]

    def _on_branch(self, code: types.CodeType, offset: int, destination: int) -> None:
        if threading.get_ident() != self._main or not self._armed:
            return
        if offset in _not_check_points(code):
            return
        self._fire()


@functools.lru_cache(maxsize=4096)
def _not_check_points(code: types.CodeType) -> frozenset[int] | range:
    """Offsets of ``code`` whose branch events are not check points: all of them in code
    that may hold a lock a handler needs, else the ``for`` loops' item fetches."""
    if not may_interrupt(code.co_filename):
        return range(sys.maxsize)
    raw = code.co_code
    return frozenset(i for i in range(0, len(raw), 2) if raw[i] in _NOT_CHECK_POINTS)


CheckPoints = TraceCheckPoints | MonitoringCheckPoints


def check_points(fire: Callable[[], None]) -> CheckPoints:
    """The best check points this interpreter offers, calling ``fire`` on the main thread."""
    if sys.version_info >= (3, 12):
        monitoring = MonitoringCheckPoints.claim(fire)
        if monitoring is not None:
            return monitoring
    return TraceCheckPoints(fire)
