"""The simulator as a transport: a controller per ``active(True)`` on an in-process link,
and the stable-address command of a hub's simulated controllers.

``_transport`` opens a :class:`Medium` like any other transport spec (``sim`` for the
process's default link, ``sim:N`` for each ``sim.Link``); nothing here knows of ``BLE``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import random
import threading
from typing import TYPE_CHECKING

from .._engine import SIM_SPEC, OpenedTransport, register_engine
from .._errors import mp_oserror
from ..constants import ETIMEDOUT

if TYPE_CHECKING:
    from bumble.device import Device

    from .._address import OwnAddress
    from .link import RadioModel, SimLink

logger = logging.getLogger(__name__)

ENV_SIM_ADDRESS = "MPBLUETOOTH_SIM_ADDRESS"
#: Seconds a controller gets to answer the stable-address command.
ANSWER_TIMEOUT = 5.0

_counter = itertools.count(1)
_used_addresses: set[bytes] = set()
_address_lock = threading.Lock()


def new_public_address() -> bytes:
    """A public address (big-endian, display order) unique in this process.

    The top byte 0xF2 and the pid make collisions between processes on one hub unlikely;
    the link routes by address, so uniqueness matters.
    """
    with _address_lock:
        while True:
            pid = os.getpid() & 0xFFFF
            addr = bytes(
                [
                    0xF2,
                    pid >> 8,
                    pid & 0xFF,
                    random.getrandbits(8),
                    next(_counter) & 0xFF,
                    random.getrandbits(8),
                ]
            )
            if addr not in _used_addresses:
                _used_addresses.add(addr)
                return addr


class Medium:
    """One simulated radio medium as an in-process transport engine.

    ``timing``: ``"air"`` or ``"instant"`` (default ``$MPBLUETOOTH_SIM_TIMING``, else air);
    the rest as :class:`~mpbluetooth.sim.link.SimLink` takes them.
    """

    def __init__(
        self,
        timing: str | None = None,
        *,
        pdus_per_event: int | None = None,
        radio: RadioModel | None = None,
        seed: int | None = None,
    ) -> None:
        from .air import DEFAULT_PDUS_PER_EVENT, check_timing, default_timing

        self.timing = check_timing(timing) if timing else default_timing()
        self._pdus_per_event = pdus_per_event or DEFAULT_PDUS_PER_EVENT
        self._radio = radio
        self._seed = seed
        self._bumble_link: SimLink | None = None

    def bumble_link(self) -> SimLink:
        """The Bumble link (created lazily, on the stack's loop thread)."""
        if self._bumble_link is None:
            from .link import SimLink

            self._bumble_link = SimLink(
                self.timing, pdus_per_event=self._pdus_per_event, radio=self._radio, seed=self._seed
            )
        return self._bumble_link

    def open_controller(self, name: str, address: OwnAddress) -> OpenedTransport:
        """A new simulated controller on this medium, with the instance's public address."""
        from bumble.hci import Address
        from bumble.transport.common import AsyncPipeSink

        from .controller import SimController

        if address.sim_public_address is None:
            address.sim_public_address = new_public_address()
        bumble_link = self.bumble_link()
        controller = SimController(
            name,
            link=bumble_link,
            public_address=Address(address.sim_public_address[::-1], Address.PUBLIC_DEVICE_ADDRESS),
        )

        async def close() -> None:
            controller.go_silent()
            if controller in bumble_link.controllers:
                bumble_link.remove_controller(controller)

        return OpenedTransport(controller, AsyncPipeSink(controller), close, "simulated controller")


_default: Medium | None = None


def default_engine() -> Medium:
    """The process's default medium (``BLE()`` with no transport configured), registered
    as the ``sim`` spec."""
    global _default
    if _default is None:
        _default = Medium()
        register_engine(SIM_SPEC, _default)
    return _default


def sim_address() -> bytes | None:
    """The public address (big-endian) to ask a hub's simulated controller for, if any.

    ``MPBLUETOOTH_SIM_ADDRESS`` is either an address (``f2:00:00:00:00:01``) or any name,
    hashed into an address, so a script keeps its identity when it rejoins a hub (its
    bonded peers recognise it, as they would a board after a reset).
    """
    value = os.environ.get(ENV_SIM_ADDRESS, "").strip()
    if not value:
        return None
    try:
        address = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        address = b""
    if len(address) != 6:
        address = b"\xf2" + hashlib.sha256(value.encode()).digest()[:5]
    return address


async def claim_stable_address(device: Device, own: OwnAddress, name: str) -> None:
    """Ask a hub's simulated controller for our stable address: the one
    ``MPBLUETOOTH_SIM_ADDRESS`` names, else the one it gave this instance first.

    Sent only then, so a real controller never sees the vendor command (see
    ``OwnAddress.remember_sim_identity``); a controller that refuses it keeps its own
    address. It goes after power-on because a Bumble host ignores everything before its
    HCI Reset completes.
    """
    from bumble.hci import Address

    from .controller import SET_PUBLIC_ADDRESS_OPCODE

    address = sim_address() or own.sim_identity
    if address is None:
        own.remember_sim_identity(device)
        return
    status = await _vendor_command(device, SET_PUBLIC_ADDRESS_OPCODE, address[::-1], "address")
    if status == 0x01 and sim_address() is None:
        # Unknown command: not our simulator, though its public address is locally
        # administered too (RootCanal's are). It gives a new address to every
        # connection; stop asking for the one it gave first.
        logger.debug("%s: the controller has no simulated-address command", name)
        own.sim_identity = None
        return
    if status:
        logger.warning(
            "%s: the controller refused address %s (status 0x%02x): it keeps its own",
            name,
            address.hex(":").upper(),
            status,
        )
        return
    device.public_address = Address(address[::-1], Address.PUBLIC_DEVICE_ADDRESS)


async def number_connections_from(device: Device, first: int, name: str) -> None:
    """Ask a simulated controller to number its connections from ``first``, as the
    simulated board's controller does (the program sees the controller's handles).

    A real controller keeps its own numbering and is never sent the vendor command: it
    goes only to a controller with a locally administered public address, as ours
    (in-process and on a hub) have; one that does not know it (RootCanal) keeps its own.
    """
    from .controller import DEFAULT_FIRST_CONNECTION_HANDLE, SET_FIRST_CONNECTION_HANDLE_OPCODE

    if first == DEFAULT_FIRST_CONNECTION_HANDLE or not bytes(device.public_address)[5] & 0x02:
        return
    status = await _vendor_command(
        device, SET_FIRST_CONNECTION_HANDLE_OPCODE, first.to_bytes(2, "little"), "numbering"
    )
    if status:
        logger.debug(
            "%s: the controller keeps its own connection handles (status 0x%02x)", name, status
        )


async def _vendor_command(device: Device, opcode: int, parameters: bytes, what: str) -> int:
    """Send one of our simulated controllers' vendor commands; its status (0x01: the
    controller does not know it)."""
    from bumble.hci import HCI_Command

    command = HCI_Command(parameters, op_code=opcode)
    try:
        response = await asyncio.wait_for(
            device.host.send_command(command, check_result=False),  # type: ignore[call-overload]
            ANSWER_TIMEOUT,
        )
    except TimeoutError:
        raise mp_oserror(
            ETIMEDOUT, f"the controller did not answer the simulated-{what} command"
        ) from None
    # Bumble gives an unknown opcode's return parameters as raw bytes (or a generic
    # object holding them): the first byte is the status.
    parameters_back = getattr(response, "return_parameters", None)
    raw = getattr(parameters_back, "data", parameters_back)
    if isinstance(raw, bytes | bytearray):
        return raw[0] if raw else 0
    return int(getattr(parameters_back, "status", 0) or 0)


__all__ = [
    "Medium",
    "number_connections_from",
    "default_engine",
    "claim_stable_address",
    "new_public_address",
]
