"""Simulation: BLE instances on a simulated link, with no hardware (desktop only).

``BLE()`` with no transport configured already runs on the process's default link. This
module adds instances beyond the process singleton, each with the full ``BLE`` interface,
so a test or a notebook can have a peripheral and a central talk in one process::

    from mpbluetooth import sim

    link = sim.Link()
    peripheral = link.instance("peripheral")
    central = link.instance("central")
    peripheral.active(True); central.active(True)
    ...
    link.close()          # deactivates every instance made by this link
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bumble.link import LocalLink

    from ..ble import BLE

__all__ = ["Link", "default_link"]

_counter = itertools.count(1)
_used_addresses: set[bytes] = set()
_address_lock = threading.Lock()


def new_public_address() -> bytes:
    """A public address (big-endian, display order) unique in this process.

    The top byte 0xF2 and the pid make collisions between processes on one hub unlikely;
    the link routes by address, so uniqueness matters.
    """
    with _address_lock:
        while True:
            pid = os.getpid() & 0xFFFF
            addr = bytes(
                [
                    0xF2,
                    pid >> 8,
                    pid & 0xFF,
                    random.getrandbits(8),
                    next(_counter) & 0xFF,
                    random.getrandbits(8),
                ]
            )
            if addr not in _used_addresses:
                _used_addresses.add(addr)
                return addr


class Link:
    """One simulated radio medium; every instance made from it can see the others."""

    def __init__(self) -> None:
        self._bumble_link: LocalLink | None = None
        self._instances: list[BLE] = []

    def bumble_link(self) -> LocalLink:
        """The Bumble ``LocalLink`` (created lazily, on the stack's loop thread)."""
        if self._bumble_link is None:
            from .link import SimLink

            self._bumble_link = SimLink()
        return self._bumble_link

    def instance(self, name: str | None = None) -> BLE:
        """A new, inactive ``BLE`` instance on this link (not the process singleton)."""
        from ..ble import BLE

        ble = BLE._new_instance(name=name or f"sim{len(self._instances) + 1}", link=self)
        self._instances.append(ble)
        return ble

    def close(self) -> None:
        """Deactivate every instance made by this link and stop their dispatchers."""
        for ble in self._instances:
            ble._close()
        self._instances.clear()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default_link: Link | None = None


def default_link() -> Link:
    """The process's default link, used by ``BLE()`` when no transport is configured."""
    global _default_link
    if _default_link is None:
        _default_link = Link()
    return _default_link
