"""Below the MicroPython API, for tests that must act where no MicroPython call reaches.

A test of a host stack sometimes needs a peer that misbehaves (a hostile GATT client, a
controller that refuses), or needs to see a Bumble object the MicroPython surface hides
(the ACL backlog, a connection's encryption). Those tests build plain Bumble devices on
the same simulated link, or look at the Bumble device behind an instance; both live on
mpbluetooth's loop thread and must be touched there. These two functions are the whole of
that door, so the rest of a test suite stays on the public API. They follow Bumble's API,
which changes between releases: keep what uses them few.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    from bumble.device import Device

    from ..ble import BLE

__all__ = ["bumble_device", "call_soon", "on_loop"]

T = TypeVar("T")

#: Seconds a call on the loop may take before it fails with ``OSError(ETIMEDOUT)``.
CALL_TIMEOUT = 30.0


@overload
def on_loop(
    fn: Callable[[], Awaitable[T]], what: str = ..., timeout: float = ...
) -> T: ...  # pragma: no cover


@overload
def on_loop(
    fn: Callable[[], T], what: str = ..., timeout: float = ...
) -> T: ...  # pragma: no cover


def on_loop(
    fn: Callable[[], T | Awaitable[T]], what: str = "a test's call", timeout: float = CALL_TIMEOUT
) -> T:
    """Run ``fn()`` on mpbluetooth's loop thread and return its result here (awaited first
    if it is a coroutine). Its exception is re-raised with its own type; after ``timeout``
    s the call is cancelled and ``OSError(ETIMEDOUT)`` names ``what``."""
    from .._runtime import runtime

    async def run() -> T:
        result = fn()
        if inspect.isawaitable(result):
            return await result
        return result

    return runtime().call(run, what=what, timeout=timeout)


def call_soon(fn: Callable[..., object], *args: object) -> None:
    """Schedule ``fn(*args)`` on the loop thread without waiting, after everything this
    thread scheduled before: to hold the loop while calls queue behind it, or to feed the
    host an HCI event at a chosen point among them."""
    from .._runtime import runtime

    runtime().call_soon(fn, *args)


def bumble_device(ble: BLE) -> Device:
    """The Bumble ``Device`` behind an active instance. Use it on the loop (``on_loop``),
    and only to do what the MicroPython API cannot: what it changes is not reported as
    IRQ events unless Bumble's own events make it so."""
    return ble._stack.require()
