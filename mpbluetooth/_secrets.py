"""The application-owned secret store: Bumble's ``KeyStore`` kept through IRQs 29 and 30.

One secret per bonded peer, ``sec_type`` 2, keyed by NimBLE's 7-byte address form (type
byte, then the little-endian identity address); the value is opaque bytes (versioned JSON
that carries the identity address, so enumeration by index works). Nothing is written
while ``bond`` is off. Our IRK is ``sec_type`` 10, key ``b'irk'`` (SPEC 1.3).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _events
from ._convert import buffer_bytes
from .constants import IRQ_GET_SECRET, IRQ_SET_SECRET

if TYPE_CHECKING:
    from bumble.keys import PairingKeys

    from ._stack import Stack

logger = logging.getLogger(__name__)

#: ``sec_type`` of a bonded peer's keys (NimBLE's BLE_STORE_OBJ_TYPE_PEER_SEC).
SEC_TYPE_PEER = 2
#: ``sec_type`` and key of our identity resolving key (SPEC 1.3).
SEC_TYPE_IRK = 10
IRK_KEY = b"irk"
#: Most bonds enumerated through ``_IRQ_GET_SECRET(type, index, None)``.
MAX_BONDS = 256
_FORMAT = 1


def address_key(name: str) -> bytes:
    """NimBLE's 7-byte ``ble_addr_t`` for a Bumble key-store name (an address string)."""
    from bumble.hci import Address

    address = Address(name)
    return bytes([int(address.address_type) & 1]) + bytes(address)


def encode_keys(name: str, keys: PairingKeys) -> bytes:
    """The opaque value stored for a peer (versioned JSON; applications never parse it)."""
    record = {"v": _FORMAT, "address": name, "keys": keys.to_dict()}
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode_keys(value: Any) -> tuple[str, PairingKeys] | None:
    """``(name, keys)`` from a stored value, or None for anything we did not write."""
    from bumble.keys import PairingKeys

    if value is None:
        return None
    try:
        record = json.loads(buffer_bytes(value))
        if record.get("v") != _FORMAT:
            return None
        return str(record["address"]), PairingKeys.from_dict(record["keys"])
    except Exception as exc:  # a foreign or damaged value is "not found"
        logger.debug("ignoring a stored secret we cannot read: %r", exc)
        return None


class SecretStore:
    """A Bumble ``KeyStore`` kept by the application through IRQs 29 and 30.

    (Subclassed from Bumble's ``KeyStore`` at first use, see :func:`_store_class`.)
    """

    def __init__(self, stack: Stack, bonding: Callable[[], bool]) -> None:
        self.stack = stack
        self._bonding = bonding
        #: The keys seen for each peer in this activation (read or written), so that the
        #: encryption events can say whether the bond is MITM-protected without a new IRQ.
        self.known: dict[str, PairingKeys] = {}

    async def _get_secret(self, sec_type: int, index: int, key: bytes | None) -> Any:
        answer = await _events.wait_answer(
            self.stack.ring.ask(IRQ_GET_SECRET, sec_type, index, key), "_IRQ_GET_SECRET"
        )
        return answer

    async def _set_secret(self, sec_type: int, key: bytes, value: bytes | None) -> bool:
        answer = await _events.wait_answer(
            self.stack.ring.ask(IRQ_SET_SECRET, sec_type, key, value), "_IRQ_SET_SECRET"
        )
        return bool(answer)

    async def get(self, name: str) -> PairingKeys | None:
        found = decode_keys(await self._get_secret(SEC_TYPE_PEER, 0, address_key(name)))
        if found is None:
            return None
        self.known[name] = found[1]
        return found[1]

    async def update(self, name: str, keys: PairingKeys) -> None:
        if not self._bonding():
            return  # Bumble stores keys even without bonding; MicroPython does not
        self.known[name] = keys
        if not await self._set_secret(SEC_TYPE_PEER, address_key(name), encode_keys(name, keys)):
            logger.warning(
                "%s: the IRQ handler did not store the keys of %s", self.stack.name, name
            )

    async def delete(self, name: str) -> None:
        self.known.pop(name, None)
        await self._set_secret(SEC_TYPE_PEER, address_key(name), None)

    async def get_all(self) -> list[tuple[str, PairingKeys]]:
        found: list[tuple[str, PairingKeys]] = []
        for index in range(MAX_BONDS):
            value = await self._get_secret(SEC_TYPE_PEER, index, None)
            if value is None:
                break
            entry = decode_keys(value)
            if entry is not None:
                found.append(entry)
                self.known[entry[0]] = entry[1]
        return found

    async def delete_all(self) -> None:
        for name, _ in await self.get_all():
            await self.delete(name)

    async def load_irk(self) -> bytes | None:
        """Our IRK from the application, created there if it has none (SPEC 1.3)."""
        if self.stack.ring.handler is None:
            return None
        value = await self._get_secret(SEC_TYPE_IRK, 0, IRK_KEY)
        try:
            irk = None if value is None else buffer_bytes(value)
        except TypeError:
            irk = None
        if irk is not None and len(irk) == 16:
            return irk
        irk = os.urandom(16)
        await self._set_secret(SEC_TYPE_IRK, IRK_KEY, irk)
        return irk


@functools.cache
def _store_class() -> type[Any]:
    from bumble.keys import KeyStore

    return type("SecretKeyStore", (SecretStore, KeyStore), {"__module__": __name__})


def make_store(stack: Stack, bonding: Callable[[], bool]) -> SecretStore:
    """A new key store for one activation; ``bonding`` says whether keys are kept."""
    store: SecretStore = _store_class()(stack, bonding)
    return store


__all__ = ["SecretStore", "make_store", "encode_keys", "decode_keys", "address_key"]
