"""``mpbluetooth-python``'s console entry: the program in a warm server's fork when it can
(``_warm``), else in this process (``python.main``).

Apart from ``python.py`` so that the launcher imports neither asyncio nor the compat
layer before it hands the program over: a hundred simulated boards are a hundred
launchers waiting beside their programs, and each costs what it imported.
``python -m mpbluetooth.cli.python`` (which ``python.py`` runs as its own ``__main__``)
does the same with that module's imports.
"""

from __future__ import annotations

import sys

from . import _warm

__all__ = ["entry"]


def entry() -> int:
    """Run ``mpbluetooth-python`` with ``sys.argv``; the exit status."""
    argv = sys.argv[1:]
    status = _warm.launch(argv)
    if status is not None:
        return status
    from .python import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(entry())
