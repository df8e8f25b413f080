"""The parts of MicroPython's ``machine`` module a BLE program uses (installed as ``machine``).

A desktop process is the "board": a reset ends the program, sleeps are plain
sleeps, and timers are threads that hand their callbacks to the same scheduler
thread as ``micropython.schedule``, as soft timers do on esp32. ``Pin``, ``ADC``,
``PWM``, ``SPI``, ``I2C``, ``UART``, ``WDT``, ``RTC``... are stubs that hold state
(``_peripherals``), unless the ``machine`` row is switched off.
"""

from __future__ import annotations

import hashlib as _hashlib
import logging as _logging
import os as _os
import platform as _platform
import sys as _sys
import threading as _threading
import time as _time
import uuid as _uuid
from collections.abc import Callable as _Callable
from typing import Any as _Any
from typing import Final as _Final
from typing import NoReturn as _NoReturn

from . import _sched

__all__ = [
    "DEEPSLEEP_RESET",
    "HARD_RESET",
    "PWRON_RESET",
    "SOFT_RESET",
    "WDT_RESET",
    "Timer",
    "deepsleep",
    "disable_irq",
    "enable_irq",
    "freq",
    "idle",
    "lightsleep",
    "reset",
    "reset_cause",
    "soft_reset",
    "unique_id",
]

_logger = _logging.getLogger(__name__)

# esp32's numbering.
PWRON_RESET: _Final = 1
HARD_RESET: _Final = 2
WDT_RESET: _Final = 3
DEEPSLEEP_RESET: _Final = 4
SOFT_RESET: _Final = 5

#: Exit status of a process ended by ``reset``, ``soft_reset`` or ``deepsleep``.
RESET_EXIT_STATUS: _Final = 0

_IDLE_S: _Final = 0.001


def idle() -> None:
    """Wait for the next event, at most about a millisecond; IRQ handlers and timers that
    are due run meanwhile (on the main thread, as MicroPython runs them)."""
    _sched.idle(_IDLE_S)


def _machine_secret() -> bytes:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as file:
                value = file.read().strip()
        except OSError:
            continue
        if value:
            return value
    node = _uuid.getnode()
    if not node & (1 << 40):  # a real MAC, not uuid's random fallback
        return node.to_bytes(6, "big")
    return _platform.node().encode()


_unique_id: bytes | None = None


def unique_id() -> bytes:
    """8 bytes that identify this machine, the same in every process.

    Derived from a hash of the OS machine id (or MAC address, or host name), so it
    does not expose the id itself.
    """
    global _unique_id
    if _unique_id is None:
        _unique_id = _hashlib.sha256(
            b"mpbluetooth.machine.unique_id:" + _machine_secret()
        ).digest()[:8]
    return _unique_id


def _end_program(what: str) -> _NoReturn:
    """End the program as a reset would: ``SystemExit`` on the main thread, else process exit.

    On the main thread ``finally`` blocks and ``atexit`` handlers run. From another
    thread (an IRQ handler, a timer or scheduled callback) only a process exit can
    stop the program, so stdio is flushed and the process ends at once.
    """
    _logger.info("%s: ending the program (exit status %d)", what, RESET_EXIT_STATUS)
    for stream in (_sys.stdout, _sys.stderr):
        if stream is not None:
            stream.flush()
    if _threading.current_thread() is _threading.main_thread():
        raise SystemExit(RESET_EXIT_STATUS)
    _os._exit(RESET_EXIT_STATUS)


def reset() -> _NoReturn:
    """Hard reset: ends the program with exit status 0 (see ``_end_program``)."""
    _end_program("machine.reset()")


def soft_reset() -> _NoReturn:
    """Soft reset: ends the program like ``reset``; there is no REPL to return to."""
    _end_program("machine.soft_reset()")


def reset_cause() -> int:
    """Always ``PWRON_RESET``: every run is a fresh process."""
    return PWRON_RESET


def _detect_freq() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as file:
            return int(file.read().strip()) * 1_000
    except (OSError, ValueError):
        return 1_000_000_000


_freq: int | None = None


def freq(hz: int | None = None) -> int | None:
    """Get the CPU frequency in Hz, or record a new one (the CPU is not changed)."""
    global _freq
    if hz is not None:
        if hz <= 0:
            raise ValueError("frequency must be positive")
        _freq = int(hz)
        return None
    if _freq is None:
        _freq = _detect_freq()
    return _freq


def lightsleep(time_ms: int | None = None) -> None:
    """Sleep ``time_ms`` ms; with no argument, until the program is interrupted."""
    if time_ms is None:
        while True:
            _time.sleep(3_600)
    if time_ms > 0:
        _time.sleep(time_ms / 1_000)


def deepsleep(time_ms: int | None = None) -> _NoReturn:
    """Sleep, then wake as from a reset: the program ends like ``reset``."""
    lightsleep(time_ms)
    _end_program("machine.deepsleep()")


def disable_irq() -> int:
    """Hold back ``Timer`` and ``micropython.schedule`` callbacks until ``enable_irq``.

    Returns the state to pass to ``enable_irq``. Nests. BLE IRQ handlers are held back
    too, wherever they run (the main thread, or the fallback thread with
    ``MPBLUETOOTH_DELIVERY=thread``); one that is running finishes first.
    """
    _sched.disable()
    return 1


def enable_irq(state: int = 1) -> None:
    """Undo one ``disable_irq`` made by this thread."""
    if not state:
        return
    try:
        _sched.enable()
    except RuntimeError:
        _logger.warning("machine.enable_irq() without a matching disable_irq() on this thread")


class Timer:
    """A software timer whose callback runs on the scheduler thread.

    ``Timer(id, mode=Timer.PERIODIC, period=ms, callback=f)`` or ``freq=hz``. The
    callback receives the timer. A tick that finds the schedule queue full is
    dropped, as on esp32; an exception in the callback is printed and the timer
    carries on. ``hard=True`` is accepted and treated like a soft timer.
    """

    ONE_SHOT: _Final = 0
    PERIODIC: _Final = 1

    def __init__(self, id: int = -1, /, **kwargs: _Any) -> None:
        self._id = id
        self._stop: _threading.Event | None = None
        self._description = "deinit"
        if kwargs:
            self.init(**kwargs)

    def init(
        self,
        *,
        mode: int = PERIODIC,
        period: float = -1,
        freq: float = -1,
        callback: _Callable[[Timer], object] | None = None,
        tick_hz: float = 1_000,
        hard: bool = False,
    ) -> None:
        """(Re)start the timer; ``freq`` (Hz) wins over ``period`` (in 1/``tick_hz`` s)."""
        if mode not in (Timer.ONE_SHOT, Timer.PERIODIC):
            raise ValueError("invalid mode")
        if freq > 0:
            interval = 1 / freq
        elif period >= 0 and tick_hz > 0:
            interval = period / tick_hz
        else:
            raise ValueError("period or freq must be given")
        self.deinit()
        stop = _threading.Event()
        self._stop = stop
        self._description = (
            f"mode={'PERIODIC' if mode else 'ONE_SHOT'}, period={interval * 1000:g}ms"
        )
        thread = _threading.Thread(
            target=self._run,
            args=(stop, interval, mode == Timer.PERIODIC, callback),
            name=f"machine.Timer({self._id})",
            daemon=True,
        )
        thread.start()

    def _run(
        self,
        stop: _threading.Event,
        interval: float,
        periodic: bool,
        callback: _Callable[[Timer], object] | None,
    ) -> None:
        def fire(timer: Timer) -> None:
            if not stop.is_set() and callback is not None:
                callback(timer)

        deadline = _time.monotonic() + interval
        while not stop.wait(max(0.0, deadline - _time.monotonic())):
            if callback is not None and not _sched.submit(fire, self):
                _logger.debug("%r: schedule queue full, tick dropped", self)
            if not periodic:
                return
            # Drift-free, but after a long stall skip the missed ticks instead of bursting.
            deadline = max(deadline + interval, _time.monotonic())

    def deinit(self) -> None:
        """Stop the timer; a callback already queued is skipped."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self._description = "deinit"

    def __repr__(self) -> str:
        return f"Timer({self._id}, {self._description})"


_PERIPHERALS: _Final = frozenset(
    {"ADC", "I2C", "PWM", "RTC", "SPI", "UART", "WDT", "Pin", "Signal", "SoftI2C", "SoftSPI"}
)


def __getattr__(name: str) -> _Any:
    """The peripheral stubs (``Pin``, ``ADC``...), unless the ``machine`` row is switched off.

    Resolved on first use so a program that only uses ``Timer`` never loads them.
    """
    from . import features

    if name in _PERIPHERALS and features.enabled("machine"):
        from . import _peripherals

        value = getattr(_peripherals, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'machine' has no attribute '{name}'")
