"""The child side of a ``Board``: ``mpbluetooth-python`` with every IRQ event reported.

Run as ``python -m mpbluetooth.testing._board_main FD [launcher arguments]``; like
``mpbluetooth-python`` it hands the program to a warm server's fork when it can
(``cli/_warm.py``, entry ``board``). Before the
launcher runs the script, ``BLE.irq`` is wrapped so that each event the script's handler
receives is first written as one JSON line to the pipe ``FD``: the test process reads
them into a ``Recorder``. A separate pipe keeps them apart from the script's own output,
and one ``os.write`` per line (under ``PIPE_BUF`` for ordinary events) keeps lines whole
when handlers run on several threads.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..cli import _warm

_write_lock = threading.Lock()


def encode(value: Any) -> Any:
    """An event argument as JSON: bytes-like as ``{"b": hex}``, a UUID as ``{"u": hex}``."""
    from ..uuid import UUID

    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    if isinstance(value, UUID):
        return {"u": bytes(value).hex()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return {"r": repr(value)}


def _reporting(fd: int) -> None:
    from ..ble import BLE

    plain_irq = BLE.irq

    def irq(self: BLE, handler: Callable[[int, tuple[Any, ...]], Any] | None, /) -> None:
        if handler is None or not callable(handler):
            plain_irq(self, handler)
            return
        user_handler = handler

        def reported(event: int, data: tuple[Any, ...]) -> Any:
            line = json.dumps([event, [encode(v) for v in data]]).encode() + b"\n"
            with _write_lock:
                os.write(fd, line)
            return user_handler(event, data)

        plain_irq(self, reported)

    BLE.irq = irq  # type: ignore[method-assign]


def run(argv: list[str]) -> int:
    """The board's program: ``argv`` is ``[FD, launcher arguments...]``."""
    from ..cli import python as launcher

    _reporting(int(argv[0]))
    return launcher.main(argv[1:])


def main() -> int:
    """In a warm server's fork when it can (the event pipe passed along), else here."""
    argv = sys.argv[1:]
    status = _warm.launch(argv, entry="board", fds=(int(argv[0]),))
    return run(argv) if status is None else status


if __name__ == "__main__":
    sys.exit(main())
