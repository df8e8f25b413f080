"""One instance's Bumble side: the transport, Host and Device, and its lifecycle.

Everything here runs on the runtime's loop thread. A fresh Device (and Host, and
controller for the simulation) is made at every ``active(True)`` and dropped at
``active(False)``: Bumble objects are cheap to make and this is the only way to be sure no
state leaks from one activation into the next. What MicroPython keeps across a restart
(the handler, the GAP name, the pairing settings, and here the address, SPEC D6) lives on
this object instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _transport
from ._errors import TransportError, mp_oserror
from ._events import EventRing
from ._runtime import runtime
from .constants import (
    ADDR_MODE_NRPA,
    ADDR_MODE_PUBLIC,
    ADDR_MODE_RANDOM_STATIC,
    ADDR_MODE_RPA,
    EINVAL,
    ENODEV,
    ETIMEDOUT,
)

if TYPE_CHECKING:
    from bumble.device import Device
    from bumble.hci import Address, OwnAddressType

    from .sim import Link

logger = logging.getLogger(__name__)

#: Seconds allowed for the controller to answer HCI Reset and the setup commands.
POWER_ON_TIMEOUT = 5.0
#: Seconds allowed to tear an instance down before the transport is closed regardless.
POWER_OFF_TIMEOUT = 2.0
#: Seconds a lost transport's operations in flight get to report their outcome (status 7,
#: as for a lost link) before what is left is cancelled silently.
LOSS_SETTLE_TIMEOUT = 1.0

DEFAULT_GAP_NAME = b"MPY BUMBLE"

#: Trace specs being written by instances of this process.
_TRACES_OPEN: set[str] = set()
DEFAULT_MTU = 256


class Stack:
    """The Bumble objects behind one ``BLE`` instance, and the settings it keeps."""

    def __init__(self, name: str, ring: EventRing, link: Link | None, spec: str | None) -> None:
        self.name = name
        self.ring = ring
        self.link = link
        self.spec = spec
        # Kept across active(False)/active(True), as MicroPython keeps them.
        self.gap_name = DEFAULT_GAP_NAME
        self.bond = False
        self.mitm = False
        self.le_secure = True
        self.io = 3
        self.irk = os.urandom(16)
        self.sim_public_address: bytes | None = None
        #: The address a hub gave this instance first (see ``_remember_sim_identity``).
        self.sim_identity: bytes | None = None
        self.static_address: Address | None = None
        # Valid while active.
        self.device: Device | None = None
        self.transport: _transport.OpenedTransport | None = None
        self.mtu = DEFAULT_MTU
        self.addr_mode = ADDR_MODE_PUBLIC
        self.own_address_type = 0
        self.active = False
        #: Why the last activation ended without ``active(False)`` (the transport was lost);
        #: events of the links and operations that ended with it are still reported.
        self.lost: str | None = None
        #: Background work of this activation (GATT procedures, indications, pairing...),
        #: so that a transport loss can let it report before tearing down.
        self.tasks: set[asyncio.Task[Any]] = set()
        self._link_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        self._watch: asyncio.Task[Any] | None = None
        self.sends_queued = 0
        self._sends_lock = threading.Lock()
        self._trace: contextlib.ExitStack | None = None
        self._trace_spec = ""
        #: Concern modules attach here; called with the new Device after power-on, and
        #: before power-off.
        self.on_power_on: list[Callable[[Device], None]] = []
        self.on_power_off: list[Callable[[], None]] = []
        #: Called when the transport is lost, before the power-off hooks: what a lost link
        #: does not end by itself (a running scan) ends here, with its event.
        self.on_transport_lost: list[Callable[[], None]] = []
        #: Called with the new Device before it is powered on (e.g. to give it a key store,
        #: which Bumble only creates itself when none is set); may be a coroutine function.
        self.on_device_created: list[Callable[[Device], Awaitable[None] | None]] = []

    # --- lifecycle ------------------------------------------------------------------
    async def power_on(self) -> None:
        """Start (or, like NimBLE, restart) the stack. Raises OSError on failure."""
        if self.active:
            await self.power_off()
        transport = await self._open_transport()
        try:
            device = self._make_device(transport)
            for prepare in self.on_device_created:
                pending = prepare(device)
                if pending is not None:
                    await pending
            try:
                await asyncio.wait_for(device.power_on(), POWER_ON_TIMEOUT)
            except TimeoutError:
                raise mp_oserror(
                    ETIMEDOUT,
                    f"controller behind {transport.spec!r} did not answer the HCI reset "
                    f"within {POWER_ON_TIMEOUT:g} s",
                ) from None
            except OSError:
                raise
            except Exception as exc:
                raise _transport.transport_error(transport.spec, exc) from None
            if transport.terminated is not None:
                await self._ask_for_sim_address(device)
        except BaseException:
            await self._close_transport(transport)
            raise
        self.device = device
        self.transport = transport
        self.mtu = DEFAULT_MTU
        device.gatt_server.max_mtu = DEFAULT_MTU
        self._choose_own_address(device)
        self.active = True
        self.lost = None
        runtime().add_shutdown_hook(self.power_off)
        if transport.terminated is not None:
            self._watch = runtime().spawn(self._watch_transport(transport), f"{self.name}-watch")
        for hook in self.on_power_on:
            hook(device)
        addr_type, addr = self.address()
        logger.info(
            "%s: active on %s, address %s (%s)",
            self.name,
            transport.spec,
            addr.hex(":"),
            "public" if addr_type == 0 else "random",
        )

    async def _open_transport(self) -> _transport.OpenedTransport:
        spec = (
            self.spec
            if self.spec is not None
            else (None if self.link is not None else _transport.configured_spec())
        )
        if spec is not None:
            return await _transport.open_spec(spec)
        return self._open_simulated()

    def _open_simulated(self) -> _transport.OpenedTransport:
        from bumble.hci import Address
        from bumble.transport.common import AsyncPipeSink

        from .sim import default_link, new_public_address
        from .sim.controller import SimController

        link = self.link or default_link()
        if self.sim_public_address is None:
            self.sim_public_address = new_public_address()
        bumble_link = link.bumble_link()
        controller = SimController(
            self.name,
            link=bumble_link,
            public_address=Address(self.sim_public_address[::-1], Address.PUBLIC_DEVICE_ADDRESS),
        )

        async def close() -> None:
            controller.go_silent()
            if controller in bumble_link.controllers:
                bumble_link.remove_controller(controller)

        return _transport.OpenedTransport(
            controller, AsyncPipeSink(controller), close, "simulated controller"
        )

    def _make_device(self, transport: _transport.OpenedTransport) -> Device:
        from bumble.device import Device, DeviceConfiguration
        from bumble.hci import Address
        from bumble.host import Host

        if self.static_address is None:
            self.static_address = Address.generate_static_address()
        config = DeviceConfiguration(
            name=self.gap_name.decode("utf-8", "replace"),
            address=self.static_address,
            irk=self.irk,
        )
        host = Host(transport.source, transport.sink)
        self._start_trace(host)
        device = Device(config=config, host=host)
        return device

    async def _ask_for_sim_address(self, device: Device) -> None:
        """Ask a hub's simulated controller for our stable address (MPBLUETOOTH_SIM_ADDRESS).

        Sent only when that variable is set, so a real controller never sees the vendor
        command; a controller that refuses it keeps its own address. It goes after power-on
        because a Bumble host ignores everything before its HCI Reset completes.
        """
        from bumble.hci import HCI_Command

        from .sim.controller import SET_PUBLIC_ADDRESS_OPCODE

        address = _transport.sim_address() or self.sim_identity
        if address is None:
            self._remember_sim_identity(device)
            return
        command = HCI_Command(address[::-1], op_code=SET_PUBLIC_ADDRESS_OPCODE)
        try:
            response = await asyncio.wait_for(
                device.host.send_command(command, check_result=False),  # type: ignore[call-overload]
                POWER_ON_TIMEOUT,
            )
        except TimeoutError:
            raise mp_oserror(
                ETIMEDOUT, "the controller did not answer the simulated-address command"
            ) from None
        # Bumble gives an unknown opcode's return parameters as raw bytes (or a generic
        # object holding them): the first byte is the status.
        parameters = getattr(response, "return_parameters", None)
        raw = getattr(parameters, "data", parameters)
        if isinstance(raw, bytes | bytearray):
            status = raw[0] if raw else 0
        else:
            status = int(getattr(parameters, "status", 0) or 0)
        if status == 0x01 and _transport.sim_address() is None:
            # Unknown command: not our simulator, though its public address is locally
            # administered too (RootCanal's are). It gives a new address to every
            # connection; stop asking for the one it gave first.
            logger.debug("%s: the controller has no simulated-address command", self.name)
            self.sim_identity = None
            return
        if status:
            logger.warning(
                "%s: the controller refused address %s (status 0x%02x): it keeps its own",
                self.name,
                address.hex(":"),
                status,
            )
            return
        from bumble.hci import Address

        device.public_address = Address(address[::-1], Address.PUBLIC_DEVICE_ADDRESS)

    def _remember_sim_identity(self, device: Device) -> None:
        """Keep the address a hub's simulated controller gave us at the first activation,
        and ask for it again at the next ones: a board keeps its identity across
        ``active(False)``/``active(True)`` and its peers reconnect to it (SPEC D6).

        Only a locally administered public address (bit 1 of the first octet) is taken
        for a simulated one: a real controller's public address never is, so a real
        controller is never sent the vendor command.
        """
        address = bytes(device.public_address)[::-1]
        if len(address) == 6 and address[0] & 0x02 and any(address):
            self.sim_identity = address

    def _start_trace(self, host: Any) -> None:
        """Write an HCI trace when ``MPBLUETOOTH_SNOOP`` asks for one (closed at power-off)."""
        spec = _transport.snoop_spec()
        if spec is None:
            return
        from bumble.snoop import create_snooper

        if spec in _TRACES_OPEN:
            # Another instance of this process writes that file: keep both traces whole.
            head, dot, tail = spec.rpartition(".")
            spec = (
                f"{head}-{self.name}.{tail}" if dot and "/" not in tail else f"{spec}-{self.name}"
            )

        trace = contextlib.ExitStack()
        try:
            host.snooper = trace.enter_context(create_snooper(spec))
        except Exception as exc:
            raise mp_oserror(EINVAL, f"cannot write the HCI trace {spec!r}: {exc}") from None
        self._trace = trace
        self._trace_spec = spec
        _TRACES_OPEN.add(spec)
        logger.info("%s: HCI trace to %s", self.name, spec)

    def _stop_trace(self) -> None:
        if self._trace is not None:
            self._trace.close()
            self._trace = None
            _TRACES_OPEN.discard(self._trace_spec)

    async def power_off(self) -> None:
        """Stop the stack and release the transport. No DISCONNECT events (SPEC 1.3)."""
        device, transport = self.device, self.transport
        if not self.active or device is None or transport is None:
            return
        self.active = False
        self.lost = None
        runtime().remove_shutdown_hook(self.power_off)
        self._run_power_off_hooks()
        try:
            await asyncio.wait_for(self._quiesce(device), POWER_OFF_TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s: controller did not stop cleanly: %r", self.name, exc)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.device = None
        self.transport = None
        await self._close_transport(transport)
        logger.info("%s: inactive", self.name)

    async def _quiesce(self, device: Device) -> None:
        """Leave the controller idle: peers get their disconnection, adverts stop.

        A real controller keeps advertising and its links until reset, so it gets an HCI
        Reset too; Bumble's own power_off only flushes the host.
        """
        from bumble.hci import HCI_Reset_Command

        for connection in list(device.connections.values()):
            try:
                await connection.disconnect()
            except Exception as exc:  # noqa: BLE001
                logger.debug("%s: disconnect during power-off: %r", self.name, exc)
        if self.link is None and self.transport is not None and self.spec_is_real():
            await device.host.send_command(HCI_Reset_Command())
        await device.power_off()

    @property
    def reporting(self) -> bool:
        """Whether events are delivered: while active, and after a transport loss (its
        links and operations end with their events), but not after ``active(False)``,
        which is silent as on NimBLE."""
        return self.active or self.lost is not None

    def send_soon(self, send: Callable[..., Any], *args: Any, packets: int = 1) -> None:
        """Hand a send to the loop without waiting for it (any thread).

        MicroPython's ``gatts_notify``/``gattc_write``/``gattc_read`` return once NimBLE has
        queued the PDU; waiting for a round trip through the loop instead would cost a
        thread hand-over per packet. The caller has already raised whatever it can see
        (not connected, buffers full); sends still queued here count toward the ACL backlog,
        as the ``packets`` ACL packets each will take, so a fast caller meets ``ENOMEM`` as
        on a board. Sends from one thread keep order.
        """
        with self._sends_lock:
            self.sends_queued += packets
        runtime().call_soon(self._run_send, send, args, False, packets)

    def start_soon(self, start: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`send_soon`, for the start of a procedure that reports its outcome:
        it runs even if the stack stopped meanwhile, so the procedure can end (with
        status 7 after a transport loss) and free its slot."""
        with self._sends_lock:
            self.sends_queued += 1
        runtime().call_soon(self._run_send, start, args, True)

    def _run_send(
        self, send: Callable[..., Any], args: tuple[Any, ...], always: bool, packets: int = 1
    ) -> None:
        with self._sends_lock:
            self.sends_queued -= packets
        if not self.active and not always:
            return  # stopped meanwhile: the PDU is dropped, as the controller would
        try:
            send(*args)
        except Exception:
            logger.exception("%s: deferred send failed", self.name)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], what: str, link: int | None = None
    ) -> asyncio.Task[Any]:
        """Start background work of this activation (on the loop thread).

        Work bound to a link (``link``: its connection handle) reports its outcome before
        the link's DISCONNECT event, as NimBLE fails a link's procedures before it tells
        the application the link is gone (see :meth:`link_work`).
        """
        task = runtime().spawn(coro, f"{self.name}-{what}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if link is not None:
            bound = self._link_tasks.setdefault(link, set())
            bound.add(task)
            task.add_done_callback(bound.discard)
        return task

    def link_work(self, conn_handle: int) -> list[asyncio.Task[Any]]:
        """The link's unfinished work, forgotten here (the link is gone)."""
        return [task for task in self._link_tasks.pop(conn_handle, ()) if not task.done()]

    def _run_power_off_hooks(self) -> None:
        for hook in self.on_power_off:
            try:
                hook()
            except Exception:  # noqa: BLE001 - teardown goes on whatever a concern says
                logger.exception("%s: power-off hook failed", self.name)

    def spec_is_real(self) -> bool:
        return self.transport is not None and self.transport.terminated is not None

    async def _close_transport(
        self, transport: _transport.OpenedTransport, stop_trace: bool = True
    ) -> None:
        if stop_trace:
            self._stop_trace()
        try:
            await asyncio.wait_for(transport.close(), POWER_OFF_TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s: closing %s failed: %r", self.name, transport.spec, exc)

    async def _watch_transport(self, transport: _transport.OpenedTransport) -> None:
        assert transport.terminated is not None
        await transport.terminated
        if self.transport is not transport or not self.active:
            return
        logger.error("%s: transport %r lost", self.name, transport.spec)
        device = self.device
        # From here calls fail with ENODEV, but the links and the operations the loss ends
        # still report, as when a link is lost: DISCONNECT, then *_DONE with status 7.
        self.active = False
        self.lost = f"the transport {transport.spec!r} was lost"
        self.device = None
        self.transport = None
        runtime().remove_shutdown_hook(self.power_off)
        if device is not None:
            # Bumble's snooping wrapper hides the loss from the host: tell it ourselves,
            # so connections see their disconnection (and the user their IRQs).
            try:
                device.host.on_transport_lost()
            except Exception:  # noqa: BLE001
                logger.debug("%s: host already knew of the transport loss", self.name)
        for hook in self.on_transport_lost:
            try:
                hook()
            except Exception:  # noqa: BLE001
                logger.exception("%s: transport-loss hook failed", self.name)
        pending = [task for task in self.tasks if not task.done()]
        self._stop_trace()
        if pending:
            await asyncio.wait(pending, timeout=LOSS_SETTLE_TIMEOUT)
        if not self.active:  # not restarted meanwhile
            self._run_power_off_hooks()
        await self._close_transport(transport, stop_trace=False)

    # --- state the facade reads ------------------------------------------------------------
    def require(self) -> Device:
        """The active Device, or MicroPython's ``OSError(ENODEV)``."""
        device = self.device
        if device is None or not self.active:
            raise mp_oserror(ENODEV, self.lost)
        return device

    def address(self) -> tuple[int, bytes]:
        """``config('mac')``: the address in use, as ``(addr_type, big-endian bytes)``."""
        device = self.require()
        if self.own_address_type == 0:
            return 0, bytes(device.public_address)[::-1]
        return 1, bytes(device.random_address)[::-1]

    def hci_own_address_type(self) -> OwnAddressType:
        """The address type our adverts, scans and connects use (per ``addr_mode``)."""
        from bumble.hci import OwnAddressType

        return OwnAddressType(self.own_address_type)

    def _choose_own_address(self, device: Device) -> None:
        # NimBLE: public if the controller has one, else a random static address.
        self.addr_mode = ADDR_MODE_PUBLIC
        self.own_address_type = 0 if _has_public(device) else 1

    async def set_address_mode(self, mode: int) -> None:
        """``config(addr_mode=)``: program the controller's random address for the mode."""
        from bumble.hci import Address, HCI_LE_Set_Random_Address_Command

        device = self.require()
        if mode == ADDR_MODE_PUBLIC:
            if not _has_public(device):
                raise mp_oserror(EINVAL, "the controller has no public address")
            self.addr_mode, self.own_address_type = mode, 0
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
        self.addr_mode, self.own_address_type = mode, 1

    def set_gap_name(self, name: bytes) -> None:
        """Store the name and, when active, serve it from the GAP service at once."""
        self.gap_name = name
        device = self.device
        if device is None:
            return
        from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

        device.name = name.decode("utf-8", "replace")
        for attribute in device.gatt_server.attributes:
            if getattr(attribute, "type", None) == GATT_DEVICE_NAME_CHARACTERISTIC and hasattr(
                attribute, "value"
            ):
                attribute.value = name


def _has_public(device: Device) -> bool:
    return bytes(device.public_address) != bytes(6)


__all__ = ["Stack", "TransportError", "POWER_ON_TIMEOUT"]
