"""MicroPython's ``rp2`` module for CPython (Raspberry Pi Pico W), as stubs.

Enough for a Pico W program's BLE code to import and run: ``bootsel_button()`` (never
pressed), ``country()``, and PIO programs that assemble to nothing (``asm_pio``) on state
machines that accept every call. Nothing touches hardware.
"""

from __future__ import annotations

from collections.abc import Callable as _Callable
from typing import Any as _Any

__all__ = ["PIO", "StateMachine", "asm_pio", "bootsel_button", "country"]

_country = "XX"


def bootsel_button() -> int:
    """The BOOTSEL button: 0, never pressed."""
    return 0


def country(code: str | None = None) -> str | None:
    """The wireless country code (``"XX"``, worldwide, until set)."""
    global _country
    if code is None:
        return _country
    _country = code
    return None


def asm_pio(*args: _Any, **kwargs: _Any) -> _Callable[[_Any], _Any]:
    """Decorator of a PIO program: the function itself (there is no PIO to assemble for)."""
    return lambda program: program


class PIO:
    """PIO block constants and ``PIO(n)``."""

    IN_LOW, IN_HIGH, OUT_LOW, OUT_HIGH = 0, 1, 2, 3
    SHIFT_LEFT, SHIFT_RIGHT = 0, 1
    JOIN_NONE, JOIN_TX, JOIN_RX = 0, 1, 2
    IRQ_SM0, IRQ_SM1, IRQ_SM2, IRQ_SM3 = 0x100, 0x200, 0x400, 0x800

    def __init__(self, block: int) -> None:
        self.block = block

    def state_machine(self, index: int, *args: _Any, **kwargs: _Any) -> StateMachine:
        return StateMachine(self.block * 4 + index, *args, **kwargs)


class StateMachine:
    """A state machine that accepts every call; ``get()`` returns 0."""

    def __init__(self, index: int, *args: _Any, **kwargs: _Any) -> None:
        self.index = index
        self._active = False

    def init(self, *args: _Any, **kwargs: _Any) -> None:
        """Nothing to configure."""

    def active(self, value: _Any = None) -> bool:
        if value is not None:
            self._active = bool(value)
        return self._active

    def put(self, value: _Any, shift: int = 0) -> None:
        """Dropped: there is no FIFO."""

    def get(self, buf: _Any = None, shift: int = 0) -> int:
        return 0

    def exec(self, instruction: _Any) -> None:
        """Nothing runs."""
