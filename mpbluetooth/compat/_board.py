"""The board profile's side of the runtime: ``sys.platform``, ``os.uname()`` and the
port's own modules (``mpbluetooth.boards``; facts and sources in ``docs/boards.md``).

Applied by ``install()`` for ``MPBLUETOOTH_BOARD`` (``mpbluetooth run --board``). The
``unix`` profile changes nothing: MicroPython's unix port reports the host's platform.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import types
from collections.abc import Sequence
from typing import Final

from ..boards import Board

logger = logging.getLogger(__name__)

#: The port modules we serve, by name: a stub module of this package.
_STUBS: Final = {"esp32": "esp32", "neopixel": "neopixel", "rp2": "rp2"}


class _PortModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import neopixel`` on a board that has it; consulted last, so the program's own
    module of that name (its folder, its ``lib/``) wins, as on a board."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(n for n in names if n in _STUBS)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None and fullname in self.names:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(f"{__package__}.{_STUBS[spec.name]}")

    def exec_module(self, module: types.ModuleType) -> None:
        """The stub ran when it was imported."""


_applied: Board | None = None


def apply(board: Board) -> None:
    """Make this process look like ``board`` to the program (once; later calls with
    another board are refused with a log line: the platform cannot change twice)."""
    global _applied
    if _applied is not None:
        if _applied is not board:
            logger.warning("board %s already applied; %s ignored", _applied.name, board.name)
        return
    _applied = board
    if board.platform is not None:
        sys.platform = board.platform
    if board.uname is not None:
        result = os.uname_result(board.uname)
        os.uname = lambda: result
    if board.modules:
        sys.meta_path.append(_PortModuleFinder(board.modules))
    logger.debug("board profile %s applied", board.name)
