"""The addresses one instance uses: address mode, IRK, static address, own-address type.

What MicroPython keeps across ``active(False)``/``active(True)`` (the IRK, the random
static address, and for a simulated controller its public address, SPEC D6) is kept here
for the life of the instance; the mode goes back to public (or random static without a
public address) at every start, as NimBLE chooses it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._errors import mp_oserror
from .constants import (
    ADDR_MODE_NRPA,
    ADDR_MODE_PUBLIC,
    ADDR_MODE_RANDOM_STATIC,
    ADDR_MODE_RPA,
    EINVAL,
)

if TYPE_CHECKING:
    from bumble.device import Device
    from bumble.hci import Address, OwnAddressType


def has_public(device: Device) -> bool:
    """Whether the controller has a public address (all zeros means none)."""
    return bytes(device.public_address) != bytes(6)


class OwnAddress:
    """``config('mac')``, ``config(addr_mode=)`` and the addresses behind them."""

    def __init__(self) -> None:
        #: Our identity resolving key (replaced by the application's, see ``_security``).
        self.irk = os.urandom(16)
        self.static_address: Address | None = None
        #: The public address of our in-process simulated controller (chosen at first use).
        self.sim_public_address: bytes | None = None
        #: The address a hub's simulated controller gave us first (``sim/transport``).
        self.sim_identity: bytes | None = None
        self.mode = ADDR_MODE_PUBLIC
        #: The HCI own-address type: 0 public, 1 random.
        self.own_address_type = 0

    def static(self) -> Address:
        """The random static address of this instance (made once, kept across restarts)."""
        from bumble.hci import Address

        if self.static_address is None:
            self.static_address = Address.generate_static_address()
        return self.static_address

    def powered_on(self, device: Device) -> None:
        """NimBLE's choice at start: public if the controller has one, else random static."""
        self.mode = ADDR_MODE_PUBLIC
        self.own_address_type = 0 if has_public(device) else 1

    def current(self, device: Device) -> tuple[int, bytes]:
        """``config('mac')``: the address in use, as ``(addr_type, big-endian bytes)``."""
        if self.own_address_type == 0:
            return 0, bytes(device.public_address)[::-1]
        return 1, bytes(device.random_address)[::-1]

    def hci_type(self) -> OwnAddressType:
        """The address type our adverts, scans and connects use (per ``addr_mode``)."""
        from bumble.hci import OwnAddressType

        return OwnAddressType(self.own_address_type)

    def identity_type(self, device: Device | None) -> int:
        """The identity address type we distribute when pairing: public if we have one."""
        from bumble.hci import Address

        if device is not None and has_public(device):
            return int(Address.PUBLIC_DEVICE_ADDRESS)
        return int(Address.RANDOM_DEVICE_ADDRESS)

    async def set_mode(self, device: Device, mode: int) -> None:
        """``config(addr_mode=)``: program the controller's random address for the mode."""
        from bumble.hci import Address, HCI_LE_Set_Random_Address_Command

        if mode == ADDR_MODE_PUBLIC:
            if not has_public(device):
                raise mp_oserror(EINVAL, "the controller has no public address")
            self.mode, self.own_address_type = mode, 0
            return
        if mode == ADDR_MODE_RANDOM_STATIC:
            address = Address.generate_static_address()
            self.static_address = address
        elif mode == ADDR_MODE_RPA:
            address = Address.generate_private_address(self.irk)
        elif mode == ADDR_MODE_NRPA:
            address = Address.generate_private_address()
        else:
            return  # MicroPython ignores other values silently
        await device.send_command(
            HCI_LE_Set_Random_Address_Command(random_address=address), check_result=True
        )
        device.random_address = address
        self.mode, self.own_address_type = mode, 1

    def remember_sim_identity(self, device: Device) -> None:
        """Keep the address a hub's simulated controller gave us at the first activation,
        to ask for it again at the next ones: a board keeps its identity across
        ``active(False)``/``active(True)`` and its peers reconnect to it (SPEC D6).

        Only a locally administered public address (bit 1 of the first octet) is taken
        for a simulated one: a real controller's public address never is, so a real
        controller is never sent the vendor command.
        """
        address = bytes(device.public_address)[::-1]
        if len(address) == 6 and address[0] & 0x02 and any(address):
            self.sim_identity = address


__all__ = ["OwnAddress", "has_public"]
