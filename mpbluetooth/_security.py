"""Pairing, bonding and the application-owned secret store (SMP through Bumble).

* ``config(io, mitm, le_secure, bond)`` become a Bumble ``PairingConfig`` per connection,
  with a ``PairingDelegate`` that turns Bumble's questions into ``_IRQ_PASSKEY_ACTION``
  and waits for ``gap_passkey``.
* Keys live with the application (``_secrets.SecretStore``, a Bumble ``KeyStore`` whose
  reads and writes are ``_IRQ_GET_SECRET`` / ``_IRQ_SET_SECRET``).
* The local IRK comes from ``_IRQ_GET_SECRET(10, 0, b'irk')`` at every start, and is
  created with ``_IRQ_SET_SECRET`` when the application has none (SPEC 1.3), so resolvable
  private addresses stay resolvable across restarts.
* ``_IRQ_ENCRYPTION_UPDATE`` ends each pairing procedure once, as NimBLE's
  ``ble_sm_key_exch_success`` does: after key distribution on both roles (the keys
  stored; as initiator, once the controller has sent ours), or with the link's state when
  the pairing fails, times out (SMP's 30 s) or the link drops first (before the link's
  DISCONNECT). Re-encryption from stored keys reports at Encryption Change. MITM is
  "authenticated"; the key size is the controller's (Bumble reports 0 with v1 events).

Where Bumble differs (see also ``_overrides``): a central answers the peer's Security
Request (Bumble leaves it to the application), and the peripheral finds the right LTK of
a legacy bond by its EDIV/Rand through the host's LTK provider hook (Bumble hands the
central's key back, and the link drops with a MIC failure).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import mp_oserror
from ._overrides import (
    adjust_smp_sessions,
    forget_finished_smp_session,
    route_bumble_module_logging,
    smp_session,
)
from ._runtime import guarded
from ._secrets import SecretStore, make_store
from .constants import (
    EALREADY,
    EINVAL,
    ENOENT,
    IRQ_ENCRYPTION_UPDATE,
    IRQ_PASSKEY_ACTION,
    PASSKEY_ACTION_DISPLAY,
    PASSKEY_ACTION_INPUT,
    PASSKEY_ACTION_NUMERIC_COMPARISON,
)

if TYPE_CHECKING:
    from bumble.device import Connection, Device
    from bumble.keys import PairingKeys
    from bumble.pairing import PairingConfig

    from ._stack import Stack

logger = logging.getLogger(__name__)

#: Seconds a pairing waits for ``gap_passkey`` (SMP's own timeout is 30 s).
PASSKEY_TIMEOUT = 30.0
#: Key size reported when the controller does not say (v1 Encryption Change events).
DEFAULT_KEY_SIZE = 16
#: SMP's IO capabilities (``config(io=)``): display only .. keyboard and display.
_IO_CAPABILITIES = range(5)
#: Most seconds ATT requests wait for a pairing that encrypted the link to report.
_SETTLE_TIMEOUT = 5.0
#: SMP's procedure timeout (Core Vol 3 Part H 3.4): a pairing without progress for this
#: long fails, as NimBLE's ``BLE_SM_TIMEOUT_MS``.
SMP_TIMEOUT = 30.0
#: Most seconds the initiator's report waits for the controller to send our keys.
_DRAIN_TIMEOUT = 5.0


@dataclass
class LinkSecurity:
    """What ``_IRQ_ENCRYPTION_UPDATE`` last said about a link."""

    encrypted: bool = False
    authenticated: bool = False
    bonded: bool = False
    key_size: int = 0


_LINKS: weakref.WeakKeyDictionary[Any, LinkSecurity] = weakref.WeakKeyDictionary()


@dataclass
class _Procedure:
    """One pairing on a link, from Bumble's pairing start to its one report."""

    session: Any
    #: Resolved once ``_IRQ_ENCRYPTION_UPDATE`` is posted for this pairing.
    reported: asyncio.Future[None]
    #: Loop time after which the pairing has timed out (moved on by progress).
    deadline: float
    #: What a success reports, once Bumble has stored the keys (initiator: before the
    #: controller has sent ours).
    success: LinkSecurity | None = None


def link_security(connection: Connection) -> tuple[bool, bool, int]:
    """``(encrypted, authenticated, key_size)`` of a Bumble connection, for permission checks.

    ``authenticated`` means MITM-protected pairing (not Just Works), which is what
    NimBLE's ``*_AUTHENTICATED`` flags require; Bumble's own ``connection.authenticated``
    turns true on any encryption.
    """
    state = _LINKS.get(connection)
    encrypted = bool(getattr(connection, "is_encrypted", False))
    if not encrypted:
        return False, False, 0
    if state is None:
        return True, False, _key_size(connection)
    return True, state.authenticated, state.key_size or _key_size(connection)


def _key_size(connection: Any) -> int:
    size = int(getattr(connection, "encryption_key_size", 0) or 0)
    return size or DEFAULT_KEY_SIZE


@functools.cache
def _delegate_class() -> type[Any]:
    """Bumble's pairing questions as ``_IRQ_PASSKEY_ACTION`` (built at first use, so that
    importing mpbluetooth does not import Bumble)."""
    from bumble.pairing import PairingDelegate

    class Delegate(PairingDelegate):
        def __init__(self, security: Security, connection: Connection, io: int) -> None:
            # config(io=) takes any int, as MicroPython's does; one SMP does not know
            # fails the pairing (the peer's Pairing Request is refused).
            self.io_valid = io in _IO_CAPABILITIES
            capability = io if self.io_valid else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
            super().__init__(io_capability=PairingDelegate.IoCapability(capability))
            self.security = security
            self.connection = connection

        async def accept(self) -> bool:
            return self.io_valid  # NimBLE accepts a peer's pairing request

        async def confirm(self, auto: bool = False) -> bool:
            return True  # Just Works: no user interaction on NimBLE either

        async def compare_numbers(self, number: int, digits: int) -> bool:
            answer = await self.security.ask_passkey(
                self.connection, PASSKEY_ACTION_NUMERIC_COMPARISON, number
            )
            return bool(answer)

        async def get_number(self) -> int | None:
            answer = await self.security.ask_passkey(self.connection, PASSKEY_ACTION_INPUT, 0)
            return None if answer is None else int(answer) % 1_000_000

        async def generate_passkey(self) -> int:
            answer = await self.security.ask_passkey(self.connection, PASSKEY_ACTION_DISPLAY, 0)
            if answer is None:
                raise TimeoutError("no passkey to display was given with gap_passkey")
            return int(answer) % 1_000_000

        async def display_number(self, number: int, digits: int) -> None:
            return None  # the application chose the number itself (action 3)

    return Delegate


class Security:
    """Pairing and bonding of one instance."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ring = stack.ring
        # config(bond=, mitm=, le_secure=, io=): kept across active(False)/active(True).
        self.bond = False
        self.mitm = False
        self.le_secure = True
        self.io = 3
        self.store: SecretStore | None = None
        #: conn_handle -> (action, future) of the passkey question being asked.
        self._passkeys: dict[int, tuple[int, asyncio.Future[int | None]]] = {}
        #: Links on which we (as central) are encrypting or pairing.
        self._securing: set[int] = set()
        #: Links whose ATT requests wait for the pairing's ENCRYPTION_UPDATE (``settled``).
        self._settling: dict[int, asyncio.Future[None]] = {}
        #: conn_handle -> the pairing running on that link.
        self._procedures: dict[int, _Procedure] = {}
        stack.on_device_created.append(self._prepare)
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)

    # --- lifecycle ------------------------------------------------------------------
    async def _prepare(self, device: Device) -> None:
        """Before power-on: our key store (Bumble makes a MemoryKeyStore otherwise), the
        pairing configuration, and the IRK from the application."""
        store = make_store(self.stack, lambda: self.bond)
        self.store = store
        device.keystore = store  # type: ignore[assignment]
        device.pairing_config_factory = self._pairing_config
        adjust_smp_sessions(device)
        # Here because Bumble is loaded by now (importing mpbluetooth does not load it).
        route_bumble_module_logging()
        irk = await store.load_irk()
        if irk is not None:
            self.stack.own_address.irk = irk
            device.irk = irk

    def _attach(self, device: Device) -> None:
        self._passkeys.clear()
        self._securing.clear()
        device.on("connection", guarded(self._on_connection))
        device.host.long_term_key_provider = functools.partial(self._long_term_key, device)

    def _detach(self) -> None:
        for procedure in self._procedures.values():
            _settle(procedure.reported)
        self._procedures.clear()
        for waiter in self._settling.values():
            _settle(waiter)
        self._settling.clear()
        for _, future in self._passkeys.values():
            if not future.done():
                future.cancel()
        self._passkeys.clear()

    # --- answers for the GATT server's permission checks (loop thread, synchronous) ---
    def peer_bonded(self, connection: Connection) -> bool:
        """Whether we hold keys for the link's peer (known from the enumeration at start,
        or read or written since)."""
        store = self.store
        return store is not None and str(connection.peer_address) in store.known

    def link_authenticated(self, connection: Connection) -> bool:
        """Whether the link is encrypted with MITM protection."""
        return link_security(connection)[1]

    def _pairing_config(self, connection: Connection) -> PairingConfig:
        from bumble.pairing import PairingConfig

        identity = self.stack.own_address.identity_type(self.stack.device)
        return PairingConfig(
            sc=self.le_secure,
            mitm=self.mitm,
            bonding=self.bond,
            delegate=_delegate_class()(self, connection, self.io),
            identity_address_type=PairingConfig.AddressType(identity),
        )

    # --- calls from ble.py (loop thread) ----------------------------------------------
    def pair(self, conn_handle: int) -> None:
        """Central: encrypt with the bond's keys, else pair. Peripheral: Security Request."""
        from bumble.hci import Role

        connection = self.stack.connection(conn_handle)
        if connection.handle in self._securing or self._pairing_active(connection):
            # NimBLE: security already being established on that link. (Two pairings at
            # once would confuse Bumble's SMP session and can drop the link.)
            raise mp_oserror(EALREADY, "the link is already being secured")
        if connection.role == Role.CENTRAL:
            self._start_securing(connection, "pair")
        else:
            self.stack.require().request_pairing(connection)

    def passkey(self, conn_handle: int, action: int, passkey: int) -> None:
        self.stack.require()
        pending = self._passkeys.get(conn_handle)
        if pending is None or pending[1].done():
            raise mp_oserror(ENOENT, "no passkey question pending on that connection")
        if pending[0] != action:
            raise mp_oserror(EINVAL, f"the pending passkey action is {pending[0]}")
        pending[1].set_result(passkey)

    async def ask_passkey(self, connection: Connection, action: int, number: int) -> int | None:
        """Post ``_IRQ_PASSKEY_ACTION`` and wait for the application's ``gap_passkey``."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        handle = connection.handle
        self._passkeys[handle] = (action, future)
        self._progress(connection, extra=PASSKEY_TIMEOUT)
        self.stack.post(IRQ_PASSKEY_ACTION, handle, action, number)
        try:
            return await asyncio.wait_for(future, PASSKEY_TIMEOUT)
        except TimeoutError:
            logger.warning("%s: no gap_passkey for action %d", self.stack.name, action)
            return None
        finally:
            if self._passkeys.get(handle, (0, None))[1] is future:
                del self._passkeys[handle]
            self._progress(connection)

    def _start_securing(self, connection: Connection, what: str) -> None:
        self._securing.add(connection.handle)
        self.stack.spawn(self._secure(connection), what)

    async def _secure(self, connection: Connection) -> None:
        """What NimBLE's security initiation does as central: encrypt if bonded, else pair."""
        try:
            if self.io not in _IO_CAPABILITIES:
                logger.warning(
                    "%s: cannot pair with config(io=%r): not an SMP IO capability (0..4)",
                    self.stack.name,
                    self.io,
                )
                self._report_current(connection)
                return
            if await self._bond_keys(connection) is not None:
                await connection.encrypt()
            else:
                await connection.pair()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the outcome is reported by the events
            logger.debug("%s: securing the link ended: %r", self.stack.name, exc)
        finally:
            self._securing.discard(connection.handle)

    async def _bond_keys(self, connection: Connection) -> PairingKeys | None:
        store = self.store
        if store is None:
            return None
        keys = await store.get(str(connection.peer_address))
        if keys is None or (keys.ltk is None and keys.ltk_central is None):
            return None
        return keys

    # --- Bumble events (loop thread) ----------------------------------------------------
    def _on_connection(self, connection: Connection) -> None:
        _LINKS[connection] = LinkSecurity()
        for event, listener in (
            ("pairing_start", self._on_pairing_start),
            ("pairing", self._on_pairing),
            ("pairing_failure", self._on_pairing_failure),
            ("connection_encryption_change", self._on_encryption_change),
            ("connection_encryption_failure", self._on_encryption_failure),
            ("security_request", self._on_security_request),
            ("disconnection", self._on_disconnection),
        ):
            connection.on(event, guarded(functools.partial(listener, connection)))

    def _pairing_active(self, connection: Connection) -> bool:
        procedure = self._procedures.get(connection.handle)
        if procedure is not None and not procedure.reported.done():
            return True
        device = self.stack.device
        if device is None:
            return False
        session = smp_session(device, connection.handle)
        return session is not None and not session.completed

    def settled(self, connection: Connection) -> asyncio.Future[None] | None:
        """For an ATT request arriving while pairing has encrypted the link but not yet
        reported: a future resolved right after ``_IRQ_ENCRYPTION_UPDATE`` is posted (or
        when the link goes, or after a deadline), else None."""
        waiter = self._settling.get(connection.handle)
        return None if waiter is None or waiter.done() else waiter

    def _settle(self, connection: Connection) -> None:
        waiter = self._settling.pop(connection.handle, None)
        if waiter is not None:
            _settle(waiter)

    def _report(self, connection: Connection, state: LinkSecurity) -> None:
        _LINKS[connection] = state
        try:
            self.stack.post(
                IRQ_ENCRYPTION_UPDATE,
                connection.handle,
                int(state.encrypted),
                int(state.authenticated),
                int(state.bonded),
                state.key_size,
            )
        finally:
            self._settle(connection)

    # --- the pairing procedure: one report each ---------------------------------------
    def _on_pairing_start(self, connection: Connection) -> None:
        """Bumble started SMP pairing on the link (either role): from here the link's
        DISCONNECT waits for this pairing's report (NimBLE fails the procedure first)."""
        device = self.stack.device
        previous = self._procedures.get(connection.handle)
        if previous is not None and not previous.reported.done():
            return
        loop = asyncio.get_running_loop()
        procedure = _Procedure(
            session=None if device is None else smp_session(device, connection.handle),
            reported=loop.create_future(),
            deadline=loop.time() + SMP_TIMEOUT,
        )
        self._procedures[connection.handle] = procedure
        self.stack.spawn(self._watch(connection, procedure), "pairing", link=connection.handle)

    async def _watch(self, connection: Connection, procedure: _Procedure) -> None:
        """Until the pairing has reported: fail it after SMP's timeout without progress."""
        loop = asyncio.get_running_loop()
        while not procedure.reported.done():
            remaining = procedure.deadline - loop.time()
            if remaining <= 0:
                logger.debug("%s: pairing timed out", self.stack.name)
                self._finish(connection, procedure, None)
                return
            await asyncio.wait({procedure.reported}, timeout=remaining)

    def _progress(self, connection: Connection, extra: float = 0.0) -> None:
        procedure = self._procedures.get(connection.handle)
        if procedure is not None:
            procedure.deadline = asyncio.get_running_loop().time() + SMP_TIMEOUT + extra

    def _finish(
        self, connection: Connection, procedure: _Procedure, state: LinkSecurity | None
    ) -> None:
        """Post the pairing's one report: ``state``, or the link as it is (a failure)."""
        if procedure.reported.done():
            return
        try:
            if state is None:
                self._report_current(connection)
            else:
                self._report(connection, state)
        finally:
            _settle(procedure.reported)
            if self._procedures.get(connection.handle) is procedure:
                del self._procedures[connection.handle]
            self._forget_session(connection)

    def _success_state(self, connection: Connection, procedure: _Procedure) -> LinkSecurity:
        """The link after a pairing whose keys all arrived: MITM unless Just Works, bonded
        when both sides asked for bonding and we keep keys."""
        from bumble.smp import PairingMethod

        session = procedure.session
        bonded = self.bond and bool(getattr(session, "bonding", False))
        method = getattr(session, "pairing_method", PairingMethod.JUST_WORKS)
        encrypted = bool(connection.is_encrypted)
        return LinkSecurity(
            encrypted=encrypted,
            authenticated=encrypted and method != PairingMethod.JUST_WORKS,
            bonded=encrypted and bonded,
            key_size=_key_size(connection) if encrypted else 0,
        )

    def _on_pairing(self, connection: Connection, keys: PairingKeys) -> None:
        """Keys distributed both ways and stored."""
        procedure = self._procedures.get(connection.handle)
        if procedure is None or procedure.reported.done():
            return
        procedure.success = self._success_state(connection, procedure)
        if getattr(procedure.session, "is_initiator", False):
            # Our keys went last: report once the controller has sent them, or an
            # application that disconnects at the report cuts them off.
            work = self._report_when_sent(connection, procedure)
            self.stack.spawn(work, "pairing-sent", link=connection.handle)
            return
        self._finish(connection, procedure, procedure.success)

    async def _report_when_sent(self, connection: Connection, procedure: _Procedure) -> None:
        try:
            await asyncio.wait_for(connection.drain(), _DRAIN_TIMEOUT)
        except Exception as exc:  # the keys are stored: report the pairing all the same
            logger.debug("%s: waiting for our keys to leave: %r", self.stack.name, exc)
        self._finish(connection, procedure, procedure.success)

    def _on_pairing_failure(self, connection: Connection, reason: int) -> None:
        logger.debug("%s: pairing failed: %r", self.stack.name, reason)
        procedure = self._procedures.get(connection.handle)
        if procedure is None:
            self._report_current(connection)
            self._forget_session(connection)
            return
        self._finish(connection, procedure, None)

    def _forget_session(self, connection: Connection) -> None:
        device = self.stack.device
        if device is not None:
            forget_finished_smp_session(device, connection.handle)

    def _on_encryption_change(self, connection: Connection) -> None:
        if self._pairing_active(connection):
            # Reported when the pairing has finished; ATT requests wait for it.
            self._progress(connection)
            if self.settled(connection) is None:
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._settling[connection.handle] = waiter
                loop.call_later(_SETTLE_TIMEOUT, _settle, waiter)
            return
        self._report_reencryption(connection)

    def _report_reencryption(self, connection: Connection) -> None:
        """Encrypted from a stored bond (or a key refresh): the bond's flags."""
        if not connection.is_encrypted:
            self._report_current(connection)
            return
        keys = None
        if self.store is not None:
            keys = self.store.known.get(str(connection.peer_address))
        previous = _LINKS.get(connection) or LinkSecurity()
        self._report(
            connection,
            LinkSecurity(
                encrypted=True,
                authenticated=_mitm(keys) if keys is not None else previous.authenticated,
                bonded=keys is not None or previous.bonded,
                key_size=_key_size(connection),
            ),
        )

    def _on_encryption_failure(self, connection: Connection, error: int) -> None:
        procedure = self._procedures.get(connection.handle)
        if procedure is not None:
            # Encryption failed inside the pairing: NimBLE ends the procedure there.
            logger.debug("%s: encryption failed while pairing: %r", self.stack.name, error)
            self._finish(connection, procedure, None)
            return
        if self._pairing_active(connection):
            return
        logger.debug("%s: encryption failed: %r", self.stack.name, error)
        self._report_current(connection)

    def _report_current(self, connection: Connection) -> None:
        """NimBLE reports a failed procedure with the link's current state."""
        previous = _LINKS.get(connection) or LinkSecurity()
        if connection.is_encrypted:
            self._report(connection, previous)
        else:
            self._report(connection, LinkSecurity())

    def _on_security_request(self, connection: Connection, auth_req: int) -> None:
        """Bumble leaves a peripheral's Security Request to the application; NimBLE
        answers it by encrypting (bonded) or pairing."""
        from bumble.hci import Role

        if (
            connection.role != Role.CENTRAL
            or self._pairing_active(connection)
            or connection.handle in self._securing
        ):
            return
        self._start_securing(connection, "security-request")

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        procedure = self._procedures.get(connection.handle)
        if procedure is not None:
            # The link went before the pairing reported. Once all keys arrived the
            # pairing succeeded (NimBLE reports at the last key): it reports when Bumble
            # has stored them, or now if ours were still leaving; otherwise it failed.
            if procedure.success is not None:
                self._finish(connection, procedure, procedure.success)
            elif not getattr(procedure.session, "keys_received", False):
                self._finish(connection, procedure, None)
        self._settle(connection)
        pending = self._passkeys.pop(connection.handle, None)
        if pending is not None and not pending[1].done():
            pending[1].cancel()

    async def _long_term_key(
        self, device: Device, conn_handle: int, rand: bytes, ediv: int
    ) -> bytes | None:
        """The LTK the central asks for: the session's, else the bond's whose EDIV/Rand
        match (for a legacy bond that is the key we distributed, not the central's)."""
        connection = device.lookup_connection(conn_handle)
        if connection is None:
            return None
        ltk = device.smp_manager.get_long_term_key(connection, rand, ediv)
        if ltk is not None:
            return bytes(ltk)
        store = self.store
        if store is None:
            return None
        keys = await store.get(str(connection.peer_address))
        if keys is None:
            return None
        if keys.ltk is not None and ediv == 0 and rand == bytes(8):
            return bytes(keys.ltk.value)
        for key in (keys.ltk_central, keys.ltk_peripheral):
            if key is not None and (key.ediv or 0) == ediv and (key.rand or bytes(8)) == rand:
                return bytes(key.value)
        return None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _mitm(keys: PairingKeys | None) -> bool:
    if keys is None:
        return False
    for key in (keys.ltk, keys.ltk_central, keys.ltk_peripheral):
        if key is not None:
            return bool(key.authenticated)
    return False


__all__ = ["Security", "link_security", "LinkSecurity"]
