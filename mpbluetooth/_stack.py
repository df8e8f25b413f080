"""One instance's lifecycle: open the controller, build Host and Device, power on and off.

Everything here runs on the runtime's loop thread. A fresh Device and Host are made at every
``active(True)`` and dropped at ``active(False)``, so no state leaks from one activation
into the next; a transport's controller is kept (reset) across them, as a board keeps its
own. What MicroPython keeps across a restart lives beside them: the GAP name, the addresses
(SPEC D6), the pairing settings in ``_security``. The concerns attach through the hooks
below and share the helpers they all need (``require``, ``post``, ``spawn``, ``flow``...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _transport
from ._address import OwnAddress
from ._errors import TransportError, mp_oserror
from ._events import EventRing
from ._flow import FlowControl
from ._overrides import report_transport_lost, serve_gap_name
from ._runtime import runtime
from ._trace import Trace
from .boards import Board
from .constants import ENODEV, ENOTCONN, ETIMEDOUT

if TYPE_CHECKING:
    from bumble.device import Connection, Device

logger = logging.getLogger(__name__)

#: Seconds one power-on command may stay unanswered (the whole may take longer).
POWER_ON_TIMEOUT = 5.0
#: Seconds allowed to tear an instance down before the transport is closed regardless.
POWER_OFF_TIMEOUT = 2.0
#: Seconds a lost transport's operations in flight get to report their outcome (status 7,
#: as for a lost link) before what is left is cancelled silently.
LOSS_SETTLE_TIMEOUT = 1.0


class Stack:
    """The Bumble objects behind one ``BLE`` instance, and the settings it keeps."""

    def __init__(self, name: str, ring: EventRing, spec: str | None, board: Board) -> None:
        self.name = name
        self.ring = ring
        #: The transport spec of this instance (None: the configured one, else the sim).
        self.spec = spec
        #: The board profile: built-in services, default name, connection numbering...
        self.board = board
        # Kept across active(False)/active(True), as MicroPython keeps them.
        self.gap_name = board.gap_name
        self.own_address = OwnAddress()
        # Valid while active.
        self.device: Device | None = None
        self.transport: _transport.OpenedTransport | None = None
        self.kept = _transport.KeptController(name)  # kept while inactive (SPEC D6)
        self.active = False
        #: Why the last activation ended without ``active(False)`` (the transport was lost);
        #: events of the links and operations that ended with it are still reported.
        self.lost: str | None = None
        #: Background work of this activation, which a transport loss lets report first.
        self.tasks: set[asyncio.Task[Any]] = set()
        self._link_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        self._watch: asyncio.Task[Any] | None = None
        self.flow = FlowControl(name, lambda: self.active)
        self._trace = Trace(name)
        #: Concern modules attach here: called with the new Device after power-on; before power-off.
        self.on_power_on: list[Callable[[Device], None]] = []
        self.on_power_off: list[Callable[[], None]] = []
        #: Called when the transport is lost, before the power-off hooks: what a lost link
        #: does not end by itself (a running scan) ends here, with its event.
        self.on_transport_lost: list[Callable[[], None]] = []
        #: Called with the new Device before power-on (a key store, say); may be async.
        self.on_device_created: list[Callable[[Device], Awaitable[None] | None]] = []

    # --- lifecycle ------------------------------------------------------------------
    async def power_on(self) -> None:
        """Start (or, like NimBLE, restart) the stack. Raises OSError on failure."""
        if self.active:
            await self.power_off()
        transport = self.kept.take(self.spec)
        if transport is None:
            transport = await _transport.open_controller(
                self.spec, self.name, self.own_address, self.board.first_conn_handle
            )
        try:
            device = self._make_device(transport)
            for prepare in self.on_device_created:
                pending = prepare(device)
                if pending is not None:
                    await pending
            try:
                await _transport.answered(device, transport, POWER_ON_TIMEOUT)
            except TimeoutError as stalled:
                raise mp_oserror(
                    ETIMEDOUT,
                    f"controller behind {transport.spec!r} did not answer a command of the "
                    f"power-on (HCI Reset and setup) within {POWER_ON_TIMEOUT:g} s ({stalled})",
                ) from None
            except OSError:
                raise
            except Exception as exc:
                raise _transport.transport_error(transport.spec, exc) from None
            if transport.after_power_on is not None:
                await transport.after_power_on(device)
        except BaseException:
            await self._close_transport(transport)
            raise
        self.device = device
        self.transport = transport
        self.own_address.powered_on(device)
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
            addr.hex(":").upper(),
            "public" if addr_type == 0 else "random",
        )

    def _make_device(self, transport: _transport.OpenedTransport) -> Device:
        from bumble.device import Device, DeviceConfiguration
        from bumble.host import Host

        config = DeviceConfiguration(
            name=self.gap_name.decode("utf-8", "replace"),
            address=self.own_address.static(),
            irk=self.own_address.irk,
        )
        host = Host(transport.source, transport.sink)
        self._trace.start(host)
        return Device(config=config, host=host)

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
        except Exception as exc:
            logger.warning("%s: controller did not stop cleanly: %r", self.name, exc)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.device = None
        self.transport = None
        if self.kept.keep(transport):
            self._trace.stop()
        else:
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
            except Exception as exc:
                logger.debug("%s: disconnect during power-off: %r", self.name, exc)
        if self.spec_is_real():
            await device.host.send_command(HCI_Reset_Command())
        await device.power_off()

    @property
    def reporting(self) -> bool:
        """Whether events are delivered: while active, and after a transport loss (its
        links and operations end with their events), but not after ``active(False)``,
        which is silent as on NimBLE."""
        return self.active or self.lost is not None

    def post(self, event: int, *values: Any, after: Callable[[], None] | None = None) -> None:
        """Post an event while :attr:`reporting` (else run ``after`` at once)."""
        if self.reporting:
            self.ring.post(event, *values, after=after)
        elif after is not None:
            after()

    def connection(self, conn_handle: int) -> Connection:
        """The link with that handle, or MicroPython's ``OSError(ENOTCONN)`` (``ENODEV``
        while inactive)."""
        connection = self.require().lookup_connection(conn_handle)
        if connection is None:
            raise mp_oserror(ENOTCONN, f"no connection with handle {conn_handle}")
        return connection

    def spawn(
        self, coro: Coroutine[Any, Any, Any], what: str, link: int | None = None, group: Any = None
    ) -> asyncio.Task[Any]:
        """Start background work of this activation (loop thread), kept in ``group`` (a set)
        too while it runs. Work bound to a link (its connection handle) reports before the
        link's DISCONNECT event, as NimBLE fails a link's procedures first (``link_work``)."""
        kept = [self.tasks]
        if link is not None:
            kept.append(self._link_tasks.setdefault(link, set()))
        if group is not None:
            kept.append(group)
        task = runtime().spawn(coro, f"{self.name}-{what}", lambda done: _forget(done, kept))
        for tasks in kept:
            tasks.add(task)
        return task

    def link_work(self, conn_handle: int) -> list[asyncio.Task[Any]]:
        """The link's unfinished work, forgotten here (the link is gone)."""
        return [task for task in self._link_tasks.pop(conn_handle, ()) if not task.done()]

    def _run_power_off_hooks(self) -> None:
        for hook in self.on_power_off:
            try:
                hook()
            except Exception:  # teardown goes on whatever a concern says
                logger.exception("%s: power-off hook failed", self.name)

    def spec_is_real(self) -> bool:
        return self.transport is not None and self.transport.terminated is not None

    async def _close_transport(
        self, transport: _transport.OpenedTransport, stop_trace: bool = True
    ) -> None:
        if stop_trace:
            self._trace.stop()
        await _transport.close_quietly(transport)

    async def _watch_transport(self, transport: _transport.OpenedTransport) -> None:
        assert transport.terminated is not None
        # Shielded: cancelling this watch (at power-off) must not cancel the transport's
        # own future, which says whether a kept controller is still there.
        await asyncio.shield(transport.terminated)
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
            report_transport_lost(device)
        for hook in self.on_transport_lost:
            try:
                hook()
            except Exception:
                logger.exception("%s: transport-loss hook failed", self.name)
        pending = [task for task in self.tasks if not task.done()]
        self._trace.stop()
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
            raise mp_oserror(ENODEV, self.lost or "the radio is off: active(True) first")
        return device

    def address(self) -> tuple[int, bytes]:
        """``config('mac')``: the address in use, as ``(addr_type, big-endian bytes)``."""
        return self.own_address.current(self.require())

    def set_gap_name(self, name: bytes) -> None:
        """Store the name and, when active, serve it from the GAP service at once."""
        self.gap_name = name
        if self.device is not None:
            serve_gap_name(self.device, name)


def _forget(task: asyncio.Task[Any], kept: list[set[asyncio.Task[Any]]]) -> None:
    for tasks in kept:
        tasks.discard(task)


__all__ = ["Stack", "TransportError", "POWER_ON_TIMEOUT"]
