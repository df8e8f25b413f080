"""What an opened controller is for a stack (:class:`OpenedTransport`), and the in-process
engines that make controllers without a transport (the simulated link registers here).

Kept apart from ``_transport`` so that the simulator, which ``_transport`` opens, can
register itself without importing the module that imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bumble.device import Device

    from ._address import OwnAddress

#: The spec of the process's default simulated link.
SIM_SPEC = "sim"


@dataclass
class OpenedTransport:
    """The HCI packet source and sink of an opened controller, and how to close it."""

    source: Any
    sink: Any
    close: Callable[[], Awaitable[None]]
    spec: str
    #: Resolves when the transport is lost (None for the in-process controller).
    terminated: asyncio.Future[Any] | None = None
    #: Run once the host has powered on (before the address is chosen): a hub's simulated
    #: controller is asked for the instance's stable address there.
    after_power_on: Callable[[Device], Awaitable[None]] | None = None


class Engine(Protocol):
    """An in-process controller engine (the simulated link): makes a controller per open."""

    def open_controller(self, name: str, address: OwnAddress) -> OpenedTransport: ...


_engines: dict[str, Engine] = {}


def register_engine(spec: str, engine: Engine) -> None:
    """Make ``spec`` open a controller of ``engine`` (until :func:`unregister_engine`)."""
    _engines[spec] = engine


def unregister_engine(spec: str) -> None:
    _engines.pop(spec, None)


def engine_for(spec: str) -> Engine | None:
    """The engine registered for ``spec``, if any."""
    return _engines.get(spec)


__all__ = [
    "Engine",
    "OpenedTransport",
    "SIM_SPEC",
    "engine_for",
    "register_engine",
    "unregister_engine",
]
