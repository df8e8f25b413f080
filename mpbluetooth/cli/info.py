"""``mpbluetooth info``: what controller is attached, as its power-on told the host."""

from __future__ import annotations

import sys
from typing import TextIO

from ..ble import BLE


def info(transport: str | None, out: TextIO = sys.stdout) -> int:
    ble = BLE._new_instance("info", transport=transport)
    try:
        ble.active(True)
        details = ble._stack.controller_info()
        width = max(len(k) for k in details)
        for key, value in details.items():
            out.write(f"{key:<{width}}  {value}\n")
        return 0
    finally:
        ble._close()
