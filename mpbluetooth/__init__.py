"""MicroPython's ``bluetooth`` module on CPython, running on the Bumble host stack.

The MicroPython surface is ``BLE``, ``UUID`` and the five ``FLAG_*`` constants. The rest
of this namespace is desktop only:

* ``open(transport=None, name=None, board=None)``: a new ``BLE`` instance of its own (a context
  manager; ``close()`` when done), beside the process singleton ``BLE()``;
* ``set_transport(spec)``: choose the HCI controller (else ``MPBLUETOOTH_TRANSPORT``,
  else the in-process simulated controller);
* ``irq_stats(ble)``: delivered / dropped counters of an instance's event ring;
  ``set_rxbuf(size, ble)`` its capacity (``config('rxbuf')`` only exists on ring-buffer
  ports, which no board profile is);
* ``mpbluetooth.boards``: the board profiles (``open(board="esp32")``,
  ``MPBLUETOOTH_BOARD``);
* ``deliver_on_main_thread()``: run IRQ handlers on the main thread, between bytecodes
  and while it waits, as MicroPython's scheduler does (the default under
  ``mpbluetooth-python``; a plain ``import mpbluetooth`` keeps one fallback thread);
* ``mpbluetooth.sim``: several instances on a simulated link in one process;
* ``mpbluetooth.compat.install()``: MicroPython's ``micropython``/``machine``/``time``
  additions for ordinary Python programs (``mpbluetooth-python`` does it for you).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._logging import configure_from_env as configure_logging_from_env

if TYPE_CHECKING:
    from ._errors import TransportError
    from ._events import IrqStats
    from .ble import BLE, irq_stats, open, set_rxbuf, set_transport
    from .constants import (
        FLAG_INDICATE,
        FLAG_NOTIFY,
        FLAG_READ,
        FLAG_WRITE,
        FLAG_WRITE_NO_RESPONSE,
    )
    from .uuid import UUID

logging.getLogger(__name__).addHandler(logging.NullHandler())
# Bumble logs a refused HCI command as a warning: never on the user's terminal (a board
# prints nothing) unless logging is configured, or MPBLUETOOTH_LOG=...,bumble.
logging.getLogger("bumble").addHandler(logging.NullHandler())
configure_logging_from_env()

__version__ = "0.1.0"

#: Where each public name lives. They are imported on first use, so that importing a
#: submodule alone stays cheap: ``mpbluetooth-python``'s launcher imports no Bumble when
#: it hands the program to a warm process (``cli/_warm.py``).
_PUBLIC = {
    "TransportError": "._errors",
    "IrqStats": "._events",
    "BLE": ".ble",
    "irq_stats": ".ble",
    "open": ".ble",
    "set_rxbuf": ".ble",
    "set_transport": ".ble",
    "FLAG_READ": ".constants",
    "FLAG_WRITE": ".constants",
    "FLAG_NOTIFY": ".constants",
    "FLAG_INDICATE": ".constants",
    "FLAG_WRITE_NO_RESPONSE": ".constants",
    "UUID": ".uuid",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


def deliver_on_main_thread() -> bool:
    """Desktop only: from now on, run IRQ handlers on the main thread, as MicroPython's
    scheduler does (SPEC D2; ``docs/design.md``, "Who runs the handler").

    Call it from the main thread, before the first ``BLE`` call that matters. Handlers
    then run at MicroPython's check points: after a branch of the program (which is paused
    meanwhile), or while it waits in ``time.sleep``, ``machine.idle``, a ``BLE`` call or an
    asyncio loop, so a program that blocks elsewhere (``threading.Event.wait``, a socket
    read, ``input()``) holds them back until it returns (``mpbluetooth-python`` also reads
    a piped stdin through the scheduler, as a board's stdin loop does). Returns False, and
    keeps the fallback thread, where the platform cannot interrupt the main thread (no
    ``signal.SIGURG``) or when not called from it.
    """
    from ._scheduler import scheduler

    return scheduler().enable()


__all__ = [
    "BLE",
    "UUID",
    "FLAG_READ",
    "FLAG_WRITE",
    "FLAG_NOTIFY",
    "FLAG_INDICATE",
    "FLAG_WRITE_NO_RESPONSE",
    "IrqStats",
    "TransportError",
    "deliver_on_main_thread",
    "irq_stats",
    "open",
    "set_rxbuf",
    "set_transport",
]
