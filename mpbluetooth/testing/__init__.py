"""Testing MicroPython BLE code on a desktop: fixtures, an event recorder, boards.

Desktop only. The pytest plugin (``mpbluetooth.testing.plugin``, loaded by pytest through
the ``pytest11`` entry point of the installed package) gives a test simulated links,
linked instances, a simulation hub in its own process and MicroPython scripts running as
boards on it; this package is what those fixtures are made of, for use without pytest too:

* ``Recorder``: an IRQ handler that records events, waits for them with deadlines and
  asserts their order; ``wait_until`` for states no event announces;
* ``HubProcess``: ``mpbluetooth sim-hub`` as a child process, its members and faults;
* ``Board``: a script as its own simulated board (``mpbluetooth run``'s way), its output
  lines and its IRQ events;
* ``lowlevel``: the Bumble device behind an instance and its loop, for tests of the stack
  itself.

Nothing here imports Bumble or starts anything until asked.
"""

from __future__ import annotations

from .board import Board, BoardExited
from .hub import HubError, HubProcess
from .recorder import DEFAULT_TIMEOUT, Instance, Recorder, WaitTimeout, wait_until

__all__ = [
    "DEFAULT_TIMEOUT",
    "Board",
    "BoardExited",
    "HubError",
    "HubProcess",
    "Instance",
    "Recorder",
    "WaitTimeout",
    "wait_until",
]
