"""Recording IRQ events and waiting for them with deadlines (desktop only).

A MicroPython program learns everything through its IRQ handler, so a test of BLE code is a
sequence of "do something, then wait until the handler saw this event". ``Recorder`` is
that handler: it keeps a copy of each event (``memoryview`` arguments are only valid during
the call), lets any thread wait for one with a deadline, and asserts the order events came
in. Every wait here has a deadline and its error says what was awaited and what arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .. import _cpu

if TYPE_CHECKING:
    from ..ble import BLE

__all__ = ["DEFAULT_TIMEOUT", "Instance", "Recorder", "WaitTimeout", "wait_until"]

#: Seconds a wait lasts unless told otherwise: generous, because it only matters when the
#: awaited thing never comes, and a loaded CI machine runs a simulated link slowly.
DEFAULT_TIMEOUT: Final = 10.0
#: The IRQ codes a recorder can count (MicroPython's are 1..31; room for more).
_CODES: Final = 64
#: How often ``wait_until`` looks again at a condition no event announces.
_POLL_S: Final = 0.005
#: Longest single idle wait of a recorder wait on the main thread (it is woken as soon as
#: work arrives; this only bounds a wake-up that went elsewhere).
_IDLE_SLICE_S: Final = 0.05
#: How many of the last recorded events a ``WaitTimeout`` lists, and how wide each is.
_SHOWN: Final = 12
_SHOWN_WIDTH: Final = 96

Data = tuple[Any, ...]


class WaitTimeout(AssertionError):
    """A wait reached its deadline. An ``AssertionError``, so pytest reports it as the
    test's failure with the message (what was awaited, what came instead)."""


def wait_until(
    condition: Callable[[], object], timeout: float = DEFAULT_TIMEOUT, what: str = ""
) -> None:
    """Poll ``condition`` until it is true, for a state no event announces (a counter, a
    file, a process ending). Raises ``WaitTimeout`` naming ``what`` after ``timeout`` s."""
    from .._scheduler import scheduler

    sched = scheduler()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or condition}")
        if sched.on_main_thread():
            sched.wait(_POLL_S)  # handlers run here under main-thread delivery
        else:
            time.sleep(_POLL_S)


def event_name(event: int) -> str:
    """``_IRQ_GATTC_READ_RESULT`` for 15: the name a MicroPython program gives the code."""
    from .. import constants

    for name, value in vars(constants).items():
        if name.startswith("IRQ_") and value == event:
            return f"_{name}"
    return f"event {event}"


def _value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex(":").upper() if len(value) == 6 else repr(value)
    return repr(value)


def describe(event: int, data: Data) -> str:
    """One recorded event, short and readable: ``_IRQ_GATTC_READ_RESULT(0, 3, b'\\x01')``
    (a 6-byte value is shown as an address)."""
    text = f"{event_name(event)}({', '.join(_value(v) for v in data)})"
    return text if len(text) <= _SHOWN_WIDTH else text[: _SHOWN_WIDTH - 3] + "..."


def _copy(data: Data) -> Data:
    for item in data:  # most events carry no buffer: no new tuple for them
        if isinstance(item, memoryview):
            return tuple(bytes(x) if isinstance(x, memoryview) else x for x in data)
    return data


class Recorder:
    """An IRQ handler (``ble.irq(recorder)``) that records events and lets a test wait.

    ``keep``: the IRQ codes whose data is kept (default: all). Every event is counted
    (``count``) and time-stamped (``last``, ``time.perf_counter``), kept or not, so a
    benchmark can record only what it reads back. ``on[code]`` is a function of the event's
    data run inside the handler before it is recorded; what it returns is the handler's
    answer (a read request's status, a passkey...), as a MicroPython handler returns it.

    Thread-safe: the handler runs on mpbluetooth's IRQ thread while the test waits on its
    own. ``timeout`` is the default deadline of this recorder's waits, in seconds.
    """

    def __init__(self, keep: Iterable[int] | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        self.keep: frozenset[int] | None = None if keep is None else frozenset(keep)
        self.timeout = timeout
        self.on: dict[int, Callable[[Data], Any]] = {}
        #: Kept events, oldest first: (IRQ code, data with memoryviews copied to bytes).
        self.events: list[tuple[int, Data]] = []
        self.counts = [0] * _CODES
        self.last = 0.0
        self._lock = threading.RLock()
        #: One held lock per waiting thread, released when an event is recorded (what a
        #: Condition does, without its four Python calls around each wait and notify).
        self._sleepers: list[threading.Lock] = []

    def __call__(self, event: int, data: Data) -> Any:
        copy = _copy(data)
        hook = self.on.get(event)
        answer = hook(copy) if hook is not None else None
        with self._lock:
            self.counts[event] += 1
            self.last = time.perf_counter()
            if self.keep is None or event in self.keep:
                self.events.append((event, copy))
            sleepers = self._sleepers
            if sleepers:
                self._sleepers = []
                for sleeper in sleepers:
                    sleeper.release()
        return answer

    # --- looking ----------------------------------------------------------------------
    def of(self, event: int) -> list[Data]:
        """The data of every kept event of this code, oldest first."""
        with self._lock:
            return [data for code, data in self.events if code == event]

    def count(self, event: int) -> int:
        """How many events of this code arrived (kept or not)."""
        return self.counts[event]

    def clear(self) -> None:
        """Forget the kept events and counts (a long run that must not grow)."""
        with self._lock:
            self.events.clear()
            self.counts = [0] * _CODES

    # --- waiting ----------------------------------------------------------------------
    def _wait_for(
        self, found: Callable[[], Any], timeout: float | None, what: Callable[[], str]
    ) -> Any:
        """Wait until ``found()`` returns something. ``what`` names the wait, only for the
        timeout's message: building it costs more than a round trip's bookkeeping."""
        from .._scheduler import scheduler

        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        # Under main-thread delivery the handler that records runs on this very thread:
        # the wait is then one of the scheduler's idle points, as ``time.sleep`` is.
        sched = scheduler()
        on_main = sched.on_main_thread()
        while True:
            with self._lock:
                result = found()
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"no {what()} within {limit:g} s; {self._recorded()}")
                if not on_main:
                    sleeper = threading.Lock()
                    sleeper.acquire()
                    self._sleepers.append(sleeper)
            if on_main:
                sched.wait(min(remaining, _IDLE_SLICE_S))
                continue
            woken = False
            try:
                with _cpu.visiting():
                    woken = sleeper.acquire(timeout=remaining)
            finally:
                if not woken:  # timed out or interrupted: no longer a sleeper
                    with self._lock:
                        if sleeper in self._sleepers:
                            self._sleepers.remove(sleeper)

    def _recorded(self) -> str:
        if not self.events:
            return "nothing was recorded"
        shown = self.events[-_SHOWN:]
        head = f"recorded (the last {len(shown)} of {len(self.events)})"
        return head + ":\n" + "\n".join(f"  {describe(code, data)}" for code, data in shown)

    def wait(
        self,
        event: int,
        where: Callable[[Data], bool] | None = None,
        timeout: float | None = None,
        count: int = 1,
    ) -> Data:
        """Wait until ``count`` kept events of this code matching ``where`` arrived, counting
        from the start of the recording; returns the data of the ``count``-th."""

        def found() -> Data | None:
            matching = [d for c, d in self.events if c == event and (where is None or where(d))]
            return matching[count - 1] if len(matching) >= count else None

        result: Data = self._wait_for(
            found, timeout, lambda: event_name(event) + (f" (#{count})" if count > 1 else "")
        )
        return result

    def wait_next(
        self,
        event: int,
        where: Callable[[Data], bool] | None = None,
        timeout: float | None = None,
    ) -> Data:
        """Wait for the next event of this code matching ``where``, one that arrives after
        this call (not one recorded before it); returns its data."""
        with self._lock:
            before = len([d for c, d in self.events if c == event and (where is None or where(d))])
        return self.wait(event, where, timeout, count=before + 1)

    def wait_count(self, event: int, count: int, timeout: float | None = None) -> None:
        """Wait until ``count`` events of this code arrived, kept or not."""
        self._wait_for(
            lambda: True if self.counts[event] >= count else None,
            timeout,
            lambda: f"{count} x {event_name(event)} (have {self.counts[event]})",
        )

    def take(self, *events: int, timeout: float | None = None) -> tuple[int, Data]:
        """Remove and return the oldest kept event of one of these codes, waiting for one
        if needed.

        Events of other codes stay in ``events`` in order, so a sequential driver can take
        each step's answer in turn and see afterwards what came that nobody expected;
        taking keeps a long run's recording from growing."""

        def found() -> tuple[int, Data] | None:
            for index, (code, data) in enumerate(self.events):
                if code in events:
                    del self.events[index]
                    return code, data
            return None

        result: tuple[int, Data] = self._wait_for(
            found, timeout, lambda: " or ".join(event_name(e) for e in events)
        )
        return result

    # --- asserting --------------------------------------------------------------------
    def assert_order(self, *events: int) -> None:
        """Assert that events of these codes were recorded in this order: the first of
        ``events[0]``, then a later ``events[1]``, and so on (others may come between)."""
        with self._lock:
            codes = [code for code, _ in self.events]
        position = -1
        for event in events:
            try:
                position = codes.index(event, position + 1)
            except ValueError:
                wanted = ", ".join(event_name(e) for e in events)
                came = ", ".join(event_name(c) for c in codes) or "nothing"
                raise AssertionError(
                    f"events {wanted} not recorded in this order; recorded {came}"
                ) from None


class Instance(NamedTuple):
    """An active ``BLE`` instance and the ``Recorder`` installed as its IRQ handler."""

    ble: BLE
    events: Recorder
