"""Board profiles (desktop only): behave like the MicroPython port a program will run on.

MicroPython's ports build ``bluetooth`` differently: NimBLE or BTstack, with or without
L2CAP channels and pairing, with their own built-in GATT services, default name and
controller. A program written for one board can depend on any of that (a hard-coded
attribute handle, ``gatts_notify(0, ...)`` on an ESP32), so the instance says which board
it is. Every fact below cites its source in ``docs/boards.md``; the default is ``unix``,
the NimBLE build MicroPython's own test suites run on (SPEC D10).

Chosen per instance: ``mpbluetooth.open(board="esp32")``; for ``BLE()`` and everything a
process starts, ``MPBLUETOOTH_BOARD`` (``mpbluetooth run --board``/``board=NAME``, the
pytest plugin's ``mpbluetooth_board`` marker and ini option set it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = ["BOARDS", "DEFAULT_BOARD", "ENV_BOARD", "Board", "BuiltinService", "current", "get"]

ENV_BOARD: Final = "MPBLUETOOTH_BOARD"
DEFAULT_BOARD: Final = "unix"

# GATT characteristic properties, as the built-in services declare them.
_READ: Final = 0x02
_WRITE: Final = 0x08
_INDICATE: Final = 0x20

#: MicroPython's version the profiles were read from (``py/mpconfig.h``).
_MICROPYTHON: Final = "1.29.0"

_L2CAP: Final = (
    "l2cap_listen",
    "l2cap_connect",
    "l2cap_disconnect",
    "l2cap_send",
    "l2cap_recvinto",
)
_PAIRING: Final = ("gap_pair", "gap_passkey")
_PAIRING_KEYS: Final = ("bond", "mitm", "le_secure", "io")
_BASE_KEYS: Final = ("mac", "gap_name", "mtu", "addr_mode")


@dataclass(frozen=True)
class BuiltinService:
    """A service the stack registers before the user's: its 16-bit UUID and its
    characteristics as (16-bit UUID, properties, initial value)."""

    uuid: int
    characteristics: tuple[tuple[int, int, bytes], ...]


# MicroPython's NimBLE (lib/mynewt-nimble): GAP with Device Name and Appearance, GATT with
# Service Changed (its CCCD follows): 9 attributes.
_NIMBLE_SERVICES: Final = (
    BuiltinService(0x1800, ((0x2A00, _READ, b""), (0x2A01, _READ, b"\x00\x00"))),
    BuiltinService(0x1801, ((0x2A05, _INDICATE, b""),)),
)
# ESP-IDF's NimBLE (esp-nimble 1.6): the GATT service also has Server and Client Supported
# Features: 13 attributes.
_ESP_NIMBLE_SERVICES: Final = (
    _NIMBLE_SERVICES[0],
    BuiltinService(
        0x1801,
        ((0x2A05, _INDICATE, b""), (0x2B3A, _READ, b"\x00"), (0x2B29, _READ | _WRITE, b"\x00")),
    ),
)
# MicroPython's BTstack binding: GAP with Device Name, GATT with a readable Service
# Changed and no CCCD: 6 attributes.
_BTSTACK_SERVICES: Final = (
    BuiltinService(0x1800, ((0x2A00, _READ, b""),)),
    BuiltinService(0x1801, ((0x2A05, _READ, b""),)),
)


@dataclass(frozen=True)
class Board:
    """What one MicroPython port's ``bluetooth`` looks like to a program."""

    name: str
    description: str
    #: The host stack of the port: ``NimBLE`` or ``BTstack``.
    stack: str
    #: Registered at ``active(True)`` and again before the user's services.
    builtin_services: tuple[BuiltinService, ...]
    #: Whether a new ``gatts_register_services`` numbers on from the last handle the
    #: previous database used (MicroPython's NimBLE never resets its counter) or from 1.
    handles_continue: bool
    #: The handle the simulated controller gives its first connection.
    first_conn_handle: int
    gap_name: bytes
    #: ``config()`` keys that exist (the others: ``ValueError('unknown config param')``).
    config_keys: frozenset[str]
    #: ``BLE`` methods the port compiles out (``AttributeError``, ``hasattr`` False).
    absent_methods: frozenset[str]
    #: Whether, while this board is the central, the peripheral may start the MTU
    #: exchange (BTstack refuses it).
    peer_starts_mtu_as_central: bool
    #: ``sys.platform`` and ``os.uname()`` under the runtime; None: the host's.
    platform: str | None
    uname: tuple[str, str, str, str, str] | None
    #: Port modules served as stubs (``import neopixel`` works as on the board).
    modules: tuple[str, ...]
    #: The board's default ``sys.path``, as the port sets it (for the docs and ``info``).
    sys_path: tuple[str, ...]

    def describe(self) -> list[tuple[str, str]]:
        """The profile as (fact, value) rows, for ``mpbluetooth info --board``."""
        absent = ", ".join(sorted(self.absent_methods)) or "none"
        first_value = self.first_user_value_handle()
        again = first_value + (self.builtin_attributes() + 3 if self.handles_continue else 0)
        return [
            ("board", f"{self.name}: {self.description}"),
            ("host stack", self.stack),
            (
                "built-in services",
                ", ".join(f"0x{s.uuid:04X}" for s in self.builtin_services)
                + f" ({self.builtin_attributes()} attributes)",
            ),
            (
                "first user handle",
                f"{first_value} (one service with one characteristic; registered again: {again})",
            ),
            ("first connection handle", str(self.first_conn_handle)),
            ("gap_name", repr(self.gap_name)),
            ("config keys", ", ".join(sorted(self.config_keys))),
            ("methods compiled out", absent),
            (
                "MTU exchange",
                "either side may start it"
                if self.peer_starts_mtu_as_central
                else "as central, a peripheral cannot start it",
            ),
            ("sys.platform", self.platform or "the host's"),
            ("os.uname()", repr(self.uname) if self.uname else "the host's"),
            ("port modules", ", ".join(self.modules) or "none"),
            ("sys.path", repr(list(self.sys_path)) + " (here /lib is the script's lib/)"),
        ]

    def builtin_attributes(self) -> int:
        """Attribute handles the built-in services take."""
        return sum(
            1 + sum(3 if props & _INDICATE else 2 for _, props, _ in service.characteristics)
            for service in self.builtin_services
        )

    def first_user_value_handle(self) -> int:
        """The value handle of the first characteristic of the first registration."""
        offset = self.builtin_attributes() if self.handles_continue else 0
        return offset + self.builtin_attributes() + 3


def _uname(machine: str, platform: str) -> tuple[str, str, str, str, str]:
    # extmod/modos.c: sysname and nodename are sys.platform; machine is "BOARD with MCU".
    return (platform, platform, _MICROPYTHON, f"v{_MICROPYTHON} on mpbluetooth", machine)


BOARDS: Final[dict[str, Board]] = {
    board.name: board
    for board in (
        Board(
            name="unix",
            description="MicroPython's unix port with NimBLE (the oracle build)",
            stack="NimBLE",
            builtin_services=_NIMBLE_SERVICES,
            handles_continue=True,
            first_conn_handle=1,
            gap_name=b"MPY NIMBLE",
            config_keys=frozenset(_BASE_KEYS + _PAIRING_KEYS),
            absent_methods=frozenset({"hci_cmd"}),
            peer_starts_mtu_as_central=True,
            platform=None,
            uname=None,
            modules=(),
            sys_path=("", ".frozen", "~/.micropython/lib", "/usr/lib/micropython"),
        ),
        Board(
            name="esp32",
            description="ESP32 (ESP-IDF's NimBLE host, synchronous events with interlock)",
            stack="NimBLE",
            builtin_services=_ESP_NIMBLE_SERVICES,
            handles_continue=False,
            first_conn_handle=0,
            gap_name=b"MPY ESP32",
            config_keys=frozenset(_BASE_KEYS + _PAIRING_KEYS),
            absent_methods=frozenset({"hci_cmd", *_L2CAP}),
            peer_starts_mtu_as_central=True,
            platform="esp32",
            uname=_uname("Generic ESP32 module with ESP32", "esp32"),
            modules=("esp32", "neopixel"),
            sys_path=("", ".frozen", "/lib"),
        ),
        Board(
            name="stm32",
            description="STM32 (pyboard-D, NUCLEO-WB55) with NimBLE",
            stack="NimBLE",
            builtin_services=_NIMBLE_SERVICES,
            handles_continue=True,
            first_conn_handle=1,
            gap_name=b"MPY NIMBLE",
            config_keys=frozenset(_BASE_KEYS + _PAIRING_KEYS),
            absent_methods=frozenset({"hci_cmd"}),
            peer_starts_mtu_as_central=True,
            platform="pyboard",
            uname=_uname("PYBD-SF6W with STM32F767IIK", "pyboard"),
            modules=(),
            sys_path=("", ".frozen", "/flash", "/flash/lib"),
        ),
        Board(
            name="rp2",
            description="Raspberry Pi Pico W (BTstack on the CYW43439)",
            stack="BTstack",
            builtin_services=_BTSTACK_SERVICES,
            handles_continue=False,
            first_conn_handle=1,
            gap_name=b"MPY BTSTACK",
            config_keys=frozenset(_BASE_KEYS),
            absent_methods=frozenset({"hci_cmd", *_L2CAP, *_PAIRING}),
            peer_starts_mtu_as_central=False,
            platform="rp2",
            uname=_uname("Raspberry Pi Pico W with RP2040", "rp2"),
            modules=("rp2", "neopixel"),
            sys_path=("", ".frozen", "/lib"),
        ),
    )
}


class _Absent:
    """A method the board's port compiles out: reading it raises ``AttributeError`` (so
    ``hasattr`` is False), as on the board."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        raise AttributeError(f"'BLE' object has no attribute '{self._name}'")


_classes: dict[tuple[type, str], type] = {}
_C = TypeVar("_C", bound=type)


def without_absent_methods(cls: _C, board: Board) -> _C:
    """``cls`` (``BLE``) without the board's compiled-out methods, cached per board. It
    keeps the class's name and is a subclass, so ``isinstance(ble, BLE)`` holds."""
    if not board.absent_methods:
        return cls
    made = _classes.get((cls, board.name))
    if made is None:
        namespace: dict[str, Any] = {name: _Absent() for name in board.absent_methods}
        namespace["__qualname__"] = cls.__qualname__
        namespace["__module__"] = cls.__module__
        namespace["__doc__"] = cls.__doc__
        made = type(cls.__name__, (cls,), namespace)
        _classes[(cls, board.name)] = made
    return made  # type: ignore[return-value]


def get(name: str | Board | None) -> Board:
    """The profile called ``name`` (None: :func:`current`); ``ValueError`` names the
    known ones."""
    if isinstance(name, Board):
        return name
    if name is None:
        return current()
    board = BOARDS.get(str(name).strip().lower())
    if board is None:
        raise ValueError(f"unknown board {name!r}: choose one of {', '.join(BOARDS)}")
    return board


def current() -> Board:
    """The process's profile: ``MPBLUETOOTH_BOARD``, else ``unix``."""
    return get(os.environ.get(ENV_BOARD, "").strip() or DEFAULT_BOARD)
