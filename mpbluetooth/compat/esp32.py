"""MicroPython's ``esp32`` module for CPython (installed as ``esp32``): ``NVS`` and a few no-ops.

``NVS`` is the flash key store a HID keyboard keeps its bonds in. Here it is a
JSON file in the working directory (``esp32-nvs.json``), so bonds survive a
restart as on a board, and deleting the file is a factory reset. Nothing touches
hardware; what the program did is logged at debug level.
"""

from __future__ import annotations

import json as _json
import logging as _logging
import os as _os
import threading as _threading
from typing import Any as _Any
from typing import Final as _Final

__all__ = [
    "NVS", "NVS_FILE", "idf_heap_info", "mcu_temperature", "raw_temperature", "wake_on_ext0",
    "wake_on_ext1", "wake_on_gpio", "wake_on_touch", "WAKEUP_ALL_LOW", "WAKEUP_ANY_HIGH",
]  # fmt: skip

_logger = _logging.getLogger("mpbluetooth.compat.esp32")

#: The file ``NVS`` keeps its namespaces in, relative to the working directory.
NVS_FILE: _Final = "esp32-nvs.json"
WAKEUP_ALL_LOW: _Final = False
WAKEUP_ANY_HIGH: _Final = True
_MAX_KEY: _Final = 15  # ESP-IDF's NVS_KEY_NAME_MAX_SIZE - 1
# ESP-IDF error codes, raised as MicroPython's esp32 port raises them: OSError(-code, name).
_NOT_FOUND: _Final = (0x1102, "ESP_ERR_NVS_NOT_FOUND")
_KEY_TOO_LONG: _Final = (0x1109, "ESP_ERR_NVS_KEY_TOO_LONG")
_INVALID_LENGTH: _Final = (0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
_file_lock = _threading.Lock()


def _esp_error(code: tuple[int, str]) -> OSError:
    return OSError(-code[0], code[1])


def _read_store() -> dict[str, dict[str, list[_Any]]]:
    try:
        with open(NVS_FILE, encoding="utf-8") as file:
            data = _json.load(file)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


class NVS:
    """One namespace of the key store: ``set_i32``/``get_i32``, ``set_blob``/``get_blob``,
    ``erase_key``, ``commit``.

    As on ESP-IDF, changes are staged in this object until ``commit()`` writes them
    (to ``esp32-nvs.json``); this object reads its own staged changes. A missing key
    raises ``OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")`` as on the board.
    """

    def __init__(self, namespace: str) -> None:
        if len(namespace) > _MAX_KEY:
            raise _esp_error(_KEY_TOO_LONG)
        self._namespace = namespace
        # key -> ["i32", int] | ["blob", hex] | None (erased)
        self._staged: dict[str, list[_Any] | None] = {}
        _logger.debug("esp32.NVS(%r) in %s", namespace, _os.path.abspath(NVS_FILE))

    def _get(self, key: str, kind: str) -> _Any:
        if key in self._staged:
            entry = self._staged[key]
        else:
            with _file_lock:
                entry = _read_store().get(self._namespace, {}).get(key)
        if not entry or entry[0] != kind:
            raise _esp_error(_NOT_FOUND)
        return entry[1]

    def _set(self, key: str, entry: list[_Any] | None) -> None:
        if len(key) > _MAX_KEY:
            raise _esp_error(_KEY_TOO_LONG)
        self._staged[key] = entry

    def set_i32(self, key: str, value: int) -> None:
        """Stage a signed 32-bit integer (wider values keep their low 32 bits, signed)."""
        value = ((int(value) + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)
        _logger.debug("NVS(%r).set_i32(%r, %d)", self._namespace, key, value)
        self._set(key, ["i32", value])

    def get_i32(self, key: str) -> int:
        """The integer stored under ``key``."""
        value: int = self._get(key, "i32")
        return value

    def set_blob(self, key: str, value: _Any) -> None:
        """Stage the bytes of a buffer (or the UTF-8 of a str)."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        _logger.debug("NVS(%r).set_blob(%r, %d bytes)", self._namespace, key, len(data))
        self._set(key, ["blob", data.hex()])

    def get_blob(self, key: str, buffer: _Any) -> int:
        """Copy the blob into ``buffer``; returns its length. Too small a buffer raises."""
        data = bytes.fromhex(self._get(key, "blob"))
        view = memoryview(buffer).cast("B")
        if len(data) > len(view):
            raise _esp_error(_INVALID_LENGTH)
        view[: len(data)] = data
        return len(data)

    def erase_key(self, key: str) -> None:
        """Stage the removal of ``key``; a missing key raises, as on the board."""
        self._get_any(key)
        _logger.debug("NVS(%r).erase_key(%r)", self._namespace, key)
        self._staged[key] = None

    def _get_any(self, key: str) -> None:
        if key in self._staged:
            if self._staged[key] is None:
                raise _esp_error(_NOT_FOUND)
            return
        with _file_lock:
            if key not in _read_store().get(self._namespace, {}):
                raise _esp_error(_NOT_FOUND)

    def commit(self) -> None:
        """Write the staged changes to ``esp32-nvs.json`` (atomically: a crash keeps the old)."""
        with _file_lock:
            store = _read_store()
            space = store.setdefault(self._namespace, {})
            for key, entry in self._staged.items():
                if entry is None:
                    space.pop(key, None)
                else:
                    space[key] = entry
            temporary = f"{NVS_FILE}.{_os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as file:
                _json.dump(store, file, indent=1, sort_keys=True)
            _os.replace(temporary, NVS_FILE)
        _logger.debug("NVS(%r).commit(): %d change(s)", self._namespace, len(self._staged))
        self._staged.clear()


def raw_temperature() -> int:
    """A fixed reading (128, Fahrenheit as the original ESP32 reports it): no sensor here."""
    return 128


def mcu_temperature() -> int:
    """A fixed reading of 40 (degrees Celsius): no sensor here."""
    return 40


def idf_heap_info(capabilities: int) -> list[tuple[int, int, int, int]]:
    """An empty list: there are no ESP-IDF heaps on a desktop."""
    return []


def _wake(name: str, *args: _Any, **kwargs: _Any) -> None:
    _logger.debug("esp32.%s%r %r: recorded; sleep never wakes on pins here", name, args, kwargs)


def wake_on_touch(wake: bool) -> None:
    """Recorded only: deep sleep ends the program here."""
    _wake("wake_on_touch", wake)


def wake_on_ext0(pin: _Any, level: int) -> None:
    """Recorded only: deep sleep ends the program here."""
    _wake("wake_on_ext0", pin, level)


def wake_on_ext1(pins: _Any, level: int) -> None:
    """Recorded only: deep sleep ends the program here."""
    _wake("wake_on_ext1", pins, level)


def wake_on_gpio(pins: _Any, level: int) -> None:
    """Recorded only: deep sleep ends the program here."""
    _wake("wake_on_gpio", pins, level)
