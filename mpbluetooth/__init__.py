"""MicroPython's ``bluetooth`` module on CPython, running on the Bumble host stack.

The MicroPython surface is ``BLE``, ``UUID`` and the five ``FLAG_*`` constants. The rest
of this namespace is desktop only:

* ``set_transport(spec)``: choose the HCI controller (else ``MPBLUETOOTH_TRANSPORT``,
  else the in-process simulated controller);
* ``irq_stats(ble)``: delivered / dropped counters of an instance's event ring;
* ``mpbluetooth.sim``: several instances on a simulated link in one process;
* ``mpbluetooth.compat.install()``: MicroPython's ``micropython``/``machine``/``time``
  additions for ordinary Python programs (``mpbluetooth-python`` does it for you).
"""

from __future__ import annotations

import logging

from ._errors import TransportError
from ._events import IrqStats
from ._logging import configure_from_env as configure_logging_from_env
from .ble import BLE, irq_stats, set_transport
from .constants import FLAG_INDICATE, FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE
from .uuid import UUID

logging.getLogger(__name__).addHandler(logging.NullHandler())
configure_logging_from_env()

__version__ = "0.1.0"

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
    "irq_stats",
    "set_transport",
]
