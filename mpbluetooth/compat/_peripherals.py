"""``machine``'s peripheral classes as stubs that hold state and never touch hardware.

BLE programs written for a board set up an LED, a button or a sensor next to the
radio. Here those calls succeed and remember what they were given, so the BLE
part runs: a ``Pin``'s value round-trips, ``ADC`` reads a fixed mid-scale value,
``PWM`` keeps its duty, an ``I2C``/``SPI`` bus has nothing attached. Each call is
logged at debug level on ``mpbluetooth.compat.machine``.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "ADC", "I2C", "PWM", "RTC", "SPI", "UART", "WDT", "Pin", "Signal", "SoftI2C", "SoftSPI",
]  # fmt: skip

logger = logging.getLogger("mpbluetooth.compat.machine")

#: What ``ADC.read_u16()`` returns: mid-scale, as a floating input often reads.
ADC_READ_U16: Final = 32768


class Pin:
    """A GPIO pin: ``value()`` returns what was last set (0 at first, 1 with ``PULL_UP``).

    ``irq()`` records the handler; no edge ever happens, so it is never called.
    """

    IN: Final = 1
    OUT: Final = 3
    OPEN_DRAIN: Final = 7
    ALT: Final = 2
    PULL_UP: Final = 1
    PULL_DOWN: Final = 2
    IRQ_FALLING: Final = 2
    IRQ_RISING: Final = 1
    IRQ_LOW_LEVEL: Final = 4
    IRQ_HIGH_LEVEL: Final = 5
    WAKE_LOW: Final = 4
    WAKE_HIGH: Final = 5

    def __init__(self, id: Any, mode: int = -1, pull: int = -1, *, value: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self._id = id
        self._mode = mode
        self._pull = pull
        self._value = 1 if pull == Pin.PULL_UP else 0
        self._handler: Callable[[Pin], object] | None = None
        if value is not None:
            self._value = 1 if value else 0
        logger.debug("Pin(%r, mode=%r, pull=%r, value=%r)", id, mode, pull, value)

    def init(self, mode: int = -1, pull: int = -1, *, value: int | None = None,
             **kwargs: Any) -> None:  # fmt: skip
        """Change the mode, pull or value."""
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._value = 1 if value else 0

    def value(self, x: Any = None) -> int | None:
        """Get the level, or set it from ``x``'s truth."""
        if x is None:
            return self._value
        self._value = 1 if x else 0
        logger.debug("Pin(%r).value(%d)", self._id, self._value)
        return None

    __call__ = value

    def on(self) -> None:
        """Set the level to 1."""
        self.value(1)

    def off(self) -> None:
        """Set the level to 0."""
        self.value(0)

    def toggle(self) -> None:
        """Invert the level."""
        self.value(not self._value)

    def irq(self, handler: Callable[[Pin], object] | None = None, trigger: int = 3,
            **kwargs: Any) -> None:  # fmt: skip
        """Record the handler; it is never called, as no edge ever happens."""
        self._handler = handler
        logger.debug("Pin(%r).irq(%r, trigger=%r): never fires here", self._id, handler, trigger)

    def __repr__(self) -> str:
        return f"Pin({self._id!r})"


class Signal:
    """A pin with optional inversion: ``on()`` drives an active-low LED's pin to 0."""

    def __init__(self, pin: Any, *args: Any, invert: bool = False, **kwargs: Any) -> None:
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kwargs)
        self._invert = invert

    def value(self, x: Any = None) -> int | None:
        """Get or set the logical value (inverted from the pin's with ``invert=True``)."""
        if x is None:
            return int(bool(self._pin.value()) != self._invert)
        self._pin.value(bool(x) != self._invert)
        return None

    __call__ = value

    def on(self) -> None:
        """Logical 1."""
        self.value(1)

    def off(self) -> None:
        """Logical 0."""
        self.value(0)


class ADC:
    """An analog input: ``read_u16()`` returns ``ADC_READ_U16`` (32768), ``read()`` 2048
    (12 bits), ``read_uv()`` 1650000 (half of 3.3 V)."""

    ATTN_0DB: Final = 0
    ATTN_2_5DB: Final = 1
    ATTN_6DB: Final = 2
    ATTN_11DB: Final = 3
    WIDTH_9BIT: Final = 9
    WIDTH_10BIT: Final = 10
    WIDTH_11BIT: Final = 11
    WIDTH_12BIT: Final = 12
    CORE_TEMP: Final = 4

    def __init__(self, pin: Any, *args: Any, **kwargs: Any) -> None:
        self._pin = pin
        logger.debug("ADC(%r)", pin)

    def init(self, *args: Any, **kwargs: Any) -> None:
        """Accepted; the reading does not change."""

    def read_u16(self) -> int:
        """The fixed reading, 0..65535 scale."""
        return ADC_READ_U16

    def read(self) -> int:
        """The fixed reading, 12-bit scale."""
        return ADC_READ_U16 >> 4

    def read_uv(self) -> int:
        """The fixed reading in microvolts."""
        return 1_650_000

    def atten(self, value: int) -> None:
        """Accepted; the reading does not change."""

    def width(self, value: int) -> None:
        """Accepted; the reading does not change."""


class PWM:
    """A PWM output that keeps its frequency and duty."""

    def __init__(self, dest: Any, *, freq: int = 5000, duty: int | None = None,
                 duty_u16: int | None = None, duty_ns: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self._dest = dest
        self._freq = freq
        self._duty_u16 = 0
        self.init(duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)
        logger.debug("PWM(%r, freq=%r)", dest, freq)

    def init(self, *, freq: int | None = None, duty: int | None = None,
             duty_u16: int | None = None, duty_ns: int | None = None,
             **kwargs: Any) -> None:  # fmt: skip
        """Change any of frequency and duty."""
        if freq is not None:
            self._freq = freq
        if duty is not None:
            self.duty(duty)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)

    def freq(self, value: int | None = None) -> int | None:
        """Get or set the frequency in Hz."""
        if value is None:
            return self._freq
        self._freq = value
        return None

    def duty_u16(self, value: int | None = None) -> int | None:
        """Get or set the duty, 0..65535."""
        if value is None:
            return self._duty_u16
        self._duty_u16 = max(0, min(65535, value))
        logger.debug("PWM(%r).duty_u16(%d)", self._dest, self._duty_u16)
        return None

    def duty(self, value: int | None = None) -> int | None:
        """Get or set the duty, 0..1023 (esp32's older API)."""
        if value is None:
            return self._duty_u16 >> 6
        return self.duty_u16(max(0, min(1023, value)) << 6)

    def duty_ns(self, value: int | None = None) -> int | None:
        """Get or set the high time in nanoseconds."""
        period_ns = 1_000_000_000 // max(1, self._freq)
        if value is None:
            return self._duty_u16 * period_ns // 65535
        return self.duty_u16(value * 65535 // period_ns)

    def deinit(self) -> None:
        """Stop the output (duty 0)."""
        self._duty_u16 = 0


class SPI:
    """An SPI bus with nothing attached: writes are logged, reads give ``write`` bytes."""

    MSB: Final = 0
    LSB: Final = 1

    def __init__(self, id: Any = -1, *args: Any, **kwargs: Any) -> None:
        self._id = id
        logger.debug("%s(%r, %r)", type(self).__name__, id, kwargs)

    def init(self, *args: Any, **kwargs: Any) -> None:
        """Accepted."""

    def deinit(self) -> None:
        """Accepted."""

    def write(self, buf: Any) -> None:
        """Send ``buf`` to nobody."""
        logger.debug("%s(%r).write(%d bytes)", type(self).__name__, self._id, len(buf))

    def read(self, nbytes: int, write: int = 0x00) -> bytes:
        """``nbytes`` bytes of ``write``: with no device, MISO reads what nothing drives."""
        return bytes([write & 0xFF]) * nbytes

    def readinto(self, buf: Any, write: int = 0x00) -> None:
        """Fill ``buf`` with ``write``."""
        view = memoryview(buf).cast("B")
        view[:] = bytes([write & 0xFF]) * len(view)

    def write_readinto(self, write_buf: Any, read_buf: Any) -> None:
        """Send ``write_buf``; ``read_buf`` is filled with zeros."""
        self.write(write_buf)
        self.readinto(read_buf)


class SoftSPI(SPI):
    """A bit-banged SPI bus; the same stub as ``SPI``."""


class I2C:
    """An I2C bus with no device on it, as a bare board has: ``scan()`` is empty and a
    transfer to any address raises ``OSError(ENODEV)``."""

    def __init__(self, id: Any = -1, *args: Any, **kwargs: Any) -> None:
        self._id = id
        logger.debug("%s(%r, %r)", type(self).__name__, id, kwargs)

    def init(self, *args: Any, **kwargs: Any) -> None:
        """Accepted."""

    def deinit(self) -> None:
        """Accepted."""

    def scan(self) -> list[int]:
        """No device answers."""
        return []

    def _absent(self, addr: int, *args: Any, **kwargs: Any) -> Any:
        logger.debug("%s(%r): no device at 0x%02x", type(self).__name__, self._id, addr)
        raise OSError(errno.ENODEV, "ENODEV")

    readfrom = readfrom_into = writeto = writevto = _absent
    readfrom_mem = readfrom_mem_into = writeto_mem = _absent


class SoftI2C(I2C):
    """A bit-banged I2C bus; the same stub as ``I2C``."""


class UART:
    """A serial port with nothing connected: writes are logged, reads find nothing."""

    def __init__(self, id: Any, *args: Any, **kwargs: Any) -> None:
        self._id = id
        logger.debug("UART(%r, %r)", id, kwargs)

    def init(self, *args: Any, **kwargs: Any) -> None:
        """Accepted."""

    def deinit(self) -> None:
        """Accepted."""

    def any(self) -> int:
        """Nothing is waiting."""
        return 0

    def read(self, nbytes: int = -1) -> bytes | None:
        """None: nothing arrived (the timeout passed)."""
        return None

    readline = read

    def readinto(self, buf: Any, nbytes: int = -1) -> int | None:
        """None: nothing arrived."""
        return None

    def write(self, buf: Any) -> int:
        """Send ``buf`` to nobody; returns its length."""
        logger.debug("UART(%r).write(%d bytes)", self._id, len(buf))
        return len(buf)


class WDT:
    """The watchdog: ``feed()`` is recorded. It never resets the process: a missed feed is
    logged as a warning when the next ``feed()`` comes late."""

    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self._timeout_ms = timeout
        self._last = time.monotonic()
        logger.debug("WDT(timeout=%d ms)", timeout)

    def feed(self) -> None:
        """Restart the countdown."""
        now = time.monotonic()
        late_ms = (now - self._last) * 1000 - self._timeout_ms
        if late_ms > 0:
            logger.warning("machine.WDT fed %.0f ms late: a board would have reset", late_ms)
        self._last = now


class RTC:
    """The real-time clock: the system clock, moved by what ``datetime()`` sets."""

    _offset_s: float = 0.0  # shared, as there is one clock

    def __init__(self, id: int = 0) -> None:
        self._memory = b""

    def datetime(self, value: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
        """(year, month, day, weekday, hours, minutes, seconds, subseconds); set with a tuple."""
        if value is None:
            t = time.localtime(time.time() + RTC._offset_s)
            return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_wday, t.tm_hour, t.tm_min, t.tm_sec, 0)
        year, month, day, _weekday, hours, minutes, seconds = (tuple(value) + (0,) * 8)[:7]
        wanted = time.mktime((year, month, day, hours, minutes, seconds, 0, 0, -1))
        RTC._offset_s = wanted - time.time()
        logger.debug("RTC.datetime(%r)", value)
        return None

    def init(self, value: tuple[int, ...]) -> None:
        """Set the date and time (as ``datetime``)."""
        self.datetime(value)

    def memory(self, data: Any = None) -> bytes | None:
        """Get or set the RTC's user memory (kept for this process)."""
        if data is None:
            return self._memory
        self._memory = bytes(data)
        return None
