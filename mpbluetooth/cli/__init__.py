"""The ``mpbluetooth`` command: a front door to the simulated radio and real controllers.

One module per subcommand; each registers itself when imported (``_app.command``), and
imports Bumble and the hub only when it runs. ``main`` imports them: importing this
package alone stays cheap, as ``mpbluetooth-python`` (``cli/python.py``, started once per
script by ``run``) imports it first. ``mpbluetooth-python`` is not a subcommand: it is
``python``'s own command line, parsed as ``python`` does.
"""

from __future__ import annotations

import importlib

__all__ = ["COMMANDS", "main"]

#: The modules of the subcommands (``sim_hub`` is ``mpbluetooth sim-hub``).
COMMANDS = ("board", "demo", "info", "rootcanal", "run", "scan", "sim_ctl", "sim_hub")


def main(argv: list[str] | None = None) -> int:
    """``mpbluetooth``: run the command line ``argv`` (default ``sys.argv[1:]``); the exit
    status."""
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}")
    from ._app import main as run

    return run(argv)
