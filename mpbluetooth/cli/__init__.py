"""The ``mpbluetooth`` command: a front door to the simulated radio and real controllers.

One module per subcommand; each registers itself when imported (``_app.command``), and
imports Bumble and the hub only when it runs. ``mpbluetooth-python`` (``cli/python.py``)
is not a subcommand: it is ``python``'s own command line, parsed as ``python`` does.
"""

from __future__ import annotations

from . import demo, info, rootcanal, run, scan, sim_ctl, sim_hub  # noqa: F401 (registration)
from ._app import main

__all__ = ["main"]
