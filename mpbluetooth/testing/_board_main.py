"""The child side of a ``Board``: ``mpbluetooth-python`` with every IRQ event reported.

Run as ``python -m mpbluetooth.testing._board_main FD [launcher arguments]``. Before the
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

from ..ble import BLE
from ..cli import python as launcher
from ..uuid import UUID

_write_lock = threading.Lock()


def encode(value: Any) -> Any:
    """An event argument as JSON: bytes-like as ``{"b": hex}``, a UUID as ``{"u": hex}``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    if isinstance(value, UUID):
        return {"u": bytes(value).hex()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return {"r": repr(value)}


def _reporting(fd: int) -> None:
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


def main() -> int:
    fd = int(sys.argv[1])
    _reporting(fd)
    return launcher.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
