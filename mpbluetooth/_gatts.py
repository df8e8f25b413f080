"""GATT server: the attribute database, local values, remote access, notify and indicate.

IRQs 3 (GATTS_WRITE), 4 (GATTS_READ_REQUEST) and 20 (GATTS_INDICATE_DONE).

The values live here, not in Bumble: each user characteristic value and user descriptor is
a ``StoredValue`` with MicroPython's capacity and append mode, and Bumble's attributes only
call back into it. Bumble enforces none of the ``FLAG_*`` permissions itself, so the
callbacks apply NimBLE's checks (``ble_att_svr_check_perms``) before touching a value.
The local calls (``gatts_read``/``gatts_write``/``gatts_set_buffer``) take a lock instead
of a trip to the loop: they are cheap, never wait on the stack, and ``gatts_read`` must
never raise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _gatts_defs as defs
from . import _overrides
from ._errors import mp_oserror
from ._events import wait_answer
from ._flow import acl_packets, backlog_full
from ._gatts_defs import (
    ServiceDef,
    StoredValue,
    attribute_count,
    bumble_uuid,
    properties_byte,
)
from ._runtime import runtime
from ._status import (
    ATT_INSUFFICIENT_AUTHENTICATION,
    ATT_INSUFFICIENT_ENCRYPTION,
    ATT_READ_NOT_PERMITTED,
    ATT_WRITE_NOT_PERMITTED,
    HS_EAPP,
    link_status,
)
from .constants import (
    CONN_HANDLE_NONE,
    EBUSY,
    EINVAL,
    ENOMEM,
    FLAG_INDICATE,
    FLAG_NOTIFY,
    IRQ_GATTS_INDICATE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
)

if TYPE_CHECKING:
    from bumble.device import Connection, Device

    from ._security import Security
    from ._stack import Stack

logger = logging.getLogger(__name__)

#: Above this ``gatts_set_buffer`` answers ENOMEM, as a board whose heap cannot hold it.
MAX_BUFFER = 1 << 24
#: The longest attribute value ATT allows (Core Vol 3, Part F, 3.2.9).
_MAX_ATTRIBUTE = 512
#: Indications waiting for their confirmation, per instance, above which OSError(ENOMEM)
#: (NimBLE counts them among its 4 GATT procedures).
MAX_PENDING_INDICATIONS = 4

#: ``config(mtu=)``: its default, restored at every activation, and its range.
DEFAULT_MTU = 256
_MTU_RANGE = range(23, 528)
_LAST_HANDLE = 0xFFFF


class GattServer:
    """The local GATT database of one instance and the server-side IRQs."""

    def __init__(self, stack: Stack, security: Security) -> None:
        self.stack = stack
        self.ring = stack.ring
        #: Pairing's answers for the permission checks: whether a link's peer is bonded
        #: (0x0F vs 0x05 for an unencrypted access, as NimBLE decides), whether the link
        #: is MITM-protected (Bumble's ``connection.authenticated`` is also true after
        #: Just Works), and while pairing has encrypted a link but not finished, a future
        #: resolved once ``_IRQ_ENCRYPTION_UPDATE`` is posted (NimBLE reports the update
        #: before it handles the next ATT request, so a request waits for it).
        self.security = security
        #: ``config('mtu')``: what we offer in an MTU exchange (Bumble's server max MTU).
        self.mtu = DEFAULT_MTU
        self._lock = threading.Lock()
        self._values: dict[int, StoredValue] = {}
        self._indications: set[asyncio.Task[Any]] = set()
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)

    # --- lifecycle ------------------------------------------------------------------
    def _attach(self, device: Device) -> None:
        with self._lock:
            self._values = {}
        self.mtu = DEFAULT_MTU
        server = device.gatt_server
        server.max_mtu = DEFAULT_MTU
        # Write Commands run synchronously here: Bumble would run each in its own task.
        _overrides.take_write_commands(server, self._on_write_command)
        _overrides.take_requests(server, self._on_request)
        _overrides.ignore_late_confirmations(server)
        if not self.stack.board.peer_starts_mtu_as_central:
            _overrides.refuse_mtu_exchange_as_central(server)
        _overrides.reset_gatt_database(device, defs.builtin_services(self.stack.board))
        self.stack.set_gap_name(self.stack.gap_name)

    def set_mtu(self, mtu: int) -> None:
        """``config(mtu=)`` (caller's thread): 23..527, offered in later MTU exchanges."""
        self.stack.require()
        if mtu not in _MTU_RANGE:
            raise mp_oserror(EINVAL, "mtu must be 23..527")
        runtime().call(self._apply_mtu, mtu, what=f"{self.stack.name}: set mtu")

    def _apply_mtu(self, mtu: int) -> None:
        self.mtu = mtu
        self.stack.require().gatt_server.max_mtu = mtu

    def _detach(self) -> None:
        with self._lock:
            self._values = {}
        for task in list(self._indications):
            task.cancel()

    # --- registration (loop thread) ---------------------------------------------------
    def reset(self) -> None:
        """Wipe the database back to the GAP and GATT services (NimBLE's ``ble_gatts_reset``),
        refused with EBUSY while advertising, scanning, connecting or connected."""
        device = self.stack.require()
        if (
            device.is_advertising
            or device.is_scanning
            or device.is_le_connecting
            or device.connections
        ):
            raise mp_oserror(EBUSY, "the GATT database cannot change while the radio is busy")
        with self._lock:
            self._values = {}
        # NimBLE empties its attribute list but never resets its handle counter
        # (ble_att_svr_reset): each registration numbers on from the last (docs/boards.md).
        first = defs.last_handle(device) + 1 if self.stack.board.handles_continue else 1
        _overrides.reset_gatt_database(device, defs.builtin_services(self.stack.board), first)
        self.stack.set_gap_name(self.stack.gap_name)

    def register(self, services: list[ServiceDef]) -> tuple[tuple[int, ...], ...]:
        """Add the services after the default ones; return MicroPython's handle tuples."""
        from bumble.att import Attribute, AttributeValue
        from bumble.gatt import (
            GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
            Characteristic,
            Descriptor,
            Service,
        )

        device = self.stack.require()
        server = device.gatt_server
        if defs.last_handle(device) + attribute_count(services) > _LAST_HANDLE:
            # NimBLE runs out of attribute memory long before; Bumble would fail half-way
            # with a struct.error when a handle passes 0xFFFF.
            raise mp_oserror(ENOMEM, "the services do not fit in the 16-bit handle space")
        permissions = Attribute.Permissions.READABLE | Attribute.Permissions.WRITEABLE
        layout: list[list[tuple[StoredValue, Any]]] = []
        bumble_services = []
        for service in services:
            entries: list[tuple[StoredValue, Any]] = []
            characteristics = []
            for char in service.characteristics:
                value = StoredValue(char.flags, descriptor=False)
                characteristic = Characteristic(
                    bumble_uuid(char.uuid),
                    Characteristic.Properties(properties_byte(char.flags)),
                    permissions,
                    self._attribute_value(value, AttributeValue),
                )
                entries.append((value, characteristic))
                descriptors = []
                if char.flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    # NimBLE puts the CCCD right after the value, before user descriptors;
                    # Bumble would append its own after them.
                    descriptors.append(
                        Descriptor(
                            GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                            permissions,
                            server.make_descriptor_value(characteristic),
                        )
                    )
                for desc in char.descriptors:
                    d_value = StoredValue(desc.flags, descriptor=True)
                    descriptor = Descriptor(
                        bumble_uuid(desc.uuid),
                        permissions,
                        self._attribute_value(d_value, AttributeValue),
                    )
                    descriptors.append(descriptor)
                    entries.append((d_value, descriptor))
                characteristic.descriptors = descriptors
                characteristics.append(characteristic)
            bumble_services.append(Service(bumble_uuid(service.uuid), characteristics))
            layout.append(entries)
        device.add_services(bumble_services)
        values: dict[int, StoredValue] = {}
        for entries in layout:
            for value, attribute in entries:
                value.handle = attribute.handle
                values[value.handle] = value
        with self._lock:
            self._values = values
        return tuple(tuple(value.handle for value, _ in entries) for entries in layout)

    def _attribute_value(self, value: StoredValue, factory: Any) -> Any:
        async def read(connection: Connection) -> bytes:
            return await self._remote_read(value, connection)

        def write(connection: Connection, data: bytes) -> Any:
            settled = self.security.settled(connection)
            if settled is None:
                return self._remote_write(value, connection, data)
            return self._remote_write_after(settled, value, connection, data)

        return factory(read=read, write=write)

    # --- remote access (loop thread) --------------------------------------------------
    def _security_error(self, connection: Connection, rule: tuple[bool, bool]) -> int:
        """NimBLE's check: unencrypted → 0x0F for a bonded peer else 0x05; encrypted
        without MITM where authentication is required → 0x05."""
        encrypted, authenticated = rule
        if not (encrypted or authenticated):
            return 0
        if not connection.is_encrypted:
            if self.security.peer_bonded(connection):
                return ATT_INSUFFICIENT_ENCRYPTION
            return ATT_INSUFFICIENT_AUTHENTICATION
        if authenticated and not self.security.link_authenticated(connection):
            return ATT_INSUFFICIENT_AUTHENTICATION
        return 0

    def _write_error(self, value: StoredValue, connection: Connection) -> int:
        if not value.writable:
            return ATT_WRITE_NOT_PERMITTED
        return self._security_error(connection, value.write_security)

    def _read_error(self, value: StoredValue, connection: Connection) -> int:
        if not value.readable:
            return ATT_READ_NOT_PERMITTED
        return self._security_error(connection, value.read_security)

    async def _remote_write_after(
        self, settled: asyncio.Future[None], value: StoredValue, connection: Connection, data: bytes
    ) -> None:
        await settled
        await self._remote_write(value, connection, data)

    async def _remote_read(self, value: StoredValue, connection: Connection) -> bytes:
        from bumble.att import ATT_Error

        settled = self.security.settled(connection)
        if settled is not None:
            await settled

        code = self._read_error(value, connection)
        if code:
            raise ATT_Error(code, value.handle)
        answer = await wait_answer(
            self.ring.ask(IRQ_GATTS_READ_REQUEST, connection.handle, value.handle),
            "a read request",
        )
        code = answer & 0xFF if isinstance(answer, int) else 0
        if code:
            raise ATT_Error(code, value.handle)
        with self._lock:
            return value.data

    def _remote_write(
        self, value: StoredValue, connection: Connection, data: bytes
    ) -> Coroutine[Any, Any, Any]:
        """A write that reaches the value through Bumble's own server (a Write Request on
        a bearer ``_on_write_request`` does not take: EATT): refused at once, or answered
        once its ``_IRQ_GATTS_WRITE`` handler has returned (Bumble awaits what the value's
        ``write`` returns, then responds, one loop iteration later than
        ``_take_write_request`` does)."""
        from bumble.att import ATT_Error

        code = self._write_error(value, connection)
        if code:
            raise ATT_Error(code, value.handle)
        return wait_answer(
            self.ring.ask(
                IRQ_GATTS_WRITE,
                connection.handle,
                value.handle,
                before=self._queue_unseen(value, data),
            ),
            "a write",
        )

    def _on_request(self, bearer: Any, request: Any, bumble_default: Callable[..., Any]) -> None:
        """A Read or Write Request to one of the program's values: refused at once, or
        answered as its ``_IRQ_GATTS_READ_REQUEST``/``_IRQ_GATTS_WRITE`` handler returns (a
        write stored as it is handled). On NimBLE the handler runs inside the ATT server's
        access callback, so the response leaves right after it: a central's next write
        cannot reach the server before the program has seen this one, and what the
        program does next (a notification) follows the response (SPEC 1.16)."""
        from bumble.att import is_enhanced_bearer
        from bumble.gatt import GATT_MAX_ATTRIBUTE_VALUE_SIZE

        with self._lock:
            value = self._values.get(request.attribute_handle)
        data = getattr(request, "attribute_value", b"")
        if value is None or is_enhanced_bearer(bearer) or len(data) > GATT_MAX_ATTRIBUTE_VALUE_SIZE:
            bumble_default(bearer, request)  # the stack's own attributes, and errors
            return
        settled = self.security.settled(bearer)
        if settled is None:
            self._take_request(value, bearer, request)
        else:
            self.stack.spawn(self._take_request_after(settled, value, bearer, request), "request")

    async def _take_request_after(
        self, settled: asyncio.Future[None], value: StoredValue, bearer: Any, request: Any
    ) -> None:
        await settled
        self._take_request(value, bearer, request)

    def _take_request(self, value: StoredValue, connection: Connection, request: Any) -> None:
        from bumble.att import ATT_Error_Response, ATT_Read_Response, ATT_Write_Response, Opcode

        server = connection.device.gatt_server
        reading = request.op_code == Opcode.ATT_READ_REQUEST

        def refuse(code: int) -> None:
            error = ATT_Error_Response(
                request_opcode_in_error=request.op_code,
                attribute_handle_in_error=value.handle,
                error_code=code,
            )
            server.send_response(connection, error)

        code = (
            self._read_error(value, connection) if reading else self._write_error(value, connection)
        )
        if code:
            refuse(code)
            return

        def respond(answer: Any) -> None:
            device = self.stack.device
            if device is None or device.lookup_connection(connection.handle) is not connection:
                return
            if not reading:
                server.send_response(connection, ATT_Write_Response())
            elif status := answer & 0xFF if isinstance(answer, int) else 0:
                refuse(status)  # the handler's answer: an ATT error code
            else:
                with self._lock:
                    data = value.data
                server.send_response(
                    connection, ATT_Read_Response(attribute_value=data[: connection.att_mtu - 1])
                )

        self.ring.ask_reply(
            IRQ_GATTS_READ_REQUEST if reading else IRQ_GATTS_WRITE,
            connection.handle,
            value.handle,
            reply=respond,
            before=None if reading else self._queue_unseen(value, bytes(request.attribute_value)),
            what="a read request" if reading else "a write",
        )

    def _on_write_command(
        self, bearer: Any, request: Any, bumble_write_command: Callable[..., Any]
    ) -> None:
        from bumble.att import is_enhanced_bearer

        with self._lock:
            value = self._values.get(request.attribute_handle)
        if value is None or is_enhanced_bearer(bearer):
            bumble_write_command(bearer, request)  # CCCDs and the stack's own attributes
            return
        if self._write_error(value, bearer):
            return  # a refused Write Command is dropped silently (no response exists)
        self._store_remote(value, bearer, bytes(request.attribute_value))

    def _store_remote(self, value: StoredValue, connection: Connection, data: bytes) -> None:
        """Take a remote write, and let the program see it as it handles its event.

        On NimBLE the handler of ``_IRQ_GATTS_WRITE`` runs inside the write, before the
        next ATT PDU is processed, so a handler that reads the value (``gatts_read``, as
        every UART peripheral does) reads that write's data, and the program never sees a
        value whose event it has not reached. Here the handler runs later, in arrival
        order with every other event, so each write waits in the value's ``unseen`` queue
        and is stored just before its handler is called. A read request asked after it
        is answered after it (same queue), so it counts every earlier write. This is the
        Write Command's path, which has no response to hold; a Write Request's is
        ``_take_write_request``.
        """
        self.ring.post(
            IRQ_GATTS_WRITE,
            connection.handle,
            value.handle,
            before=self._queue_unseen(value, data),
        )

    def _queue_unseen(self, value: StoredValue, data: bytes) -> Callable[[], None]:
        """Queue a remote write in the value's ``unseen`` queue; return the hook that
        stores it as its ``_IRQ_GATTS_WRITE`` is handled (the event's ``before``)."""
        with self._lock:
            value.unseen.append(data)
        return functools.partial(self._store_unseen, value)

    def _store_unseen(self, value: StoredValue) -> None:
        """Store a value's oldest unseen remote write: truncated to the capacity (remote
        writes never grow it) or appended (any thread)."""
        with self._lock:
            if not value.unseen:
                return
            data = value.unseen.popleft()
            if value.append:
                value.data = (value.data + data)[: value.capacity]
            else:
                value.data = bytes(data[: value.capacity])

    # --- local values (any thread) ----------------------------------------------------
    def is_local_value(self, handle: int) -> bool:
        """Whether ``handle`` is one of the registered values (any thread)."""
        with self._lock:
            return self.stack.active and handle in self._values

    def read(self, handle: int) -> bytes:
        """``gatts_read``: the stored value, ``b''`` for anything unknown; drains append mode."""
        with self._lock:
            value = self._values.get(handle) if self.stack.active else None
            if value is None:
                return b""
            data = value.data
            if value.append:
                value.data = b""
            return data

    def write(self, handle: int, data: bytes) -> None:
        """``gatts_write`` without the update: store, growing the capacity to fit."""
        self.stack.require()
        with self._lock:
            value = self._values.get(handle)
            if value is None:
                raise mp_oserror(EINVAL, f"no value with handle {handle}")
            value.capacity = max(value.capacity, len(data))
            value.data = data

    def set_buffer(self, handle: int, size: int, append: bool) -> None:
        self.stack.require()
        with self._lock:
            value = self._values.get(handle)
            if value is None:
                raise mp_oserror(EINVAL, f"no value with handle {handle}")
            # MicroPython reallocates the buffer: a size of 0 (or more than any board's
            # heap) fails with ENOMEM; a negative size becomes a huge size_t that the
            # allocator accepts, so a board takes it (and then overruns its buffer on
            # a long write). Here it means the largest attribute value.
            if size == 0 or size > MAX_BUFFER:
                raise mp_oserror(ENOMEM, f"cannot allocate a {size}-byte value buffer")
            value.capacity = _MAX_ATTRIBUTE if size < 0 else size
            value.append = append
            value.data = b""

    def stored(self, handle: int) -> bytes | None:
        with self._lock:
            value = self._values.get(handle)
            return None if value is None else value.data

    # --- notify / indicate (loop thread) ----------------------------------------------
    def send_update(self, handle: int) -> None:
        """``gatts_write(..., True)``: to each link whose CCCD subscribes, a notification
        if its notify bit is set (notify wins), else an indication.

        As NimBLE (``ble_gatts_chr_updated``): the links are picked now, the updates go
        out afterwards, and each reads the stored value through the access callback
        first: the handler gets ``_IRQ_GATTS_READ_REQUEST(65535, h)`` once per link, not
        nested in the ``gatts_write`` (which has returned), may refresh the value, and a
        non-zero answer skips that link's update.
        """
        from bumble.att import is_enhanced_bearer

        device = self.stack.require()
        with self._lock:
            value = self._values.get(handle)
            if value is None or not value.updates:
                return
        links = []
        for bearer, cccds in list(device.gatt_server.subscribers.items()):
            cccd = cccds.get(handle)
            if cccd and cccd[0] & 0x03 and not is_enhanced_bearer(bearer):
                links.append((bearer, bool(cccd[0] & 0x01)))
        if links:
            self.stack.spawn(self._send_updates(device, handle, links), "send update")

    async def _send_updates(
        self, device: Device, handle: int, links: list[tuple[Connection, bool]]
    ) -> None:
        for connection, notify in links:
            answer = await wait_answer(
                self.ring.ask(IRQ_GATTS_READ_REQUEST, CONN_HANDLE_NONE, handle),
                "the read of an updated value",
            )
            data = self.stored(handle)
            refused = isinstance(answer, int) and answer & 0xFF
            if refused or data is None or device.lookup_connection(connection.handle) is None:
                continue
            if notify:
                if not backlog_full(device):
                    self._notify(device, connection, handle, data)
            elif len(self._indications) < MAX_PENDING_INDICATIONS:
                self._indicate(device, connection, handle, data)

    def notify(self, conn_handle: int, handle: int, data: bytes | None) -> None:
        """Any thread: raise what NimBLE would raise now, then send without waiting."""
        device, connection, payload = self._prepare(conn_handle, handle, data)
        self.stack.flow.send_soon(
            self._notify_if_connected,
            device,
            connection,
            handle,
            payload,
            packets=acl_packets(device, len(payload) + 3),
        )

    def _notify_if_connected(
        self, device: Device, connection: Connection, handle: int, data: bytes
    ) -> None:
        if device.lookup_connection(connection.handle) is connection:
            self._notify(device, connection, handle, data)

    def indicate(self, conn_handle: int, handle: int, data: bytes | None) -> None:
        device, connection, payload = self._prepare(conn_handle, handle, data)
        if len(self._indications) >= MAX_PENDING_INDICATIONS:
            raise mp_oserror(ENOMEM, "too many indications awaiting confirmation")
        self._indicate(device, connection, handle, payload)

    def _prepare(
        self, conn_handle: int, handle: int, data: bytes | None
    ) -> tuple[Device, Connection, bytes]:
        device = self.stack.require()
        if data is None:
            data = self.stored(handle)
            if data is None:
                raise mp_oserror(-HS_EAPP, f"no value stored at handle {handle} to send")
        connection = self.stack.connection(conn_handle)
        self.stack.flow.refuse_if_backlogged(device)
        return device, connection, data

    def _notify(self, device: Device, connection: Connection, handle: int, data: bytes) -> None:
        from bumble.att import ATT_Handle_Value_Notification

        pdu = ATT_Handle_Value_Notification(
            attribute_handle=handle, attribute_value=data[: connection.att_mtu - 3]
        )
        device.gatt_server.send_gatt_pdu(connection, bytes(pdu))

    def _indicate(self, device: Device, connection: Connection, handle: int, data: bytes) -> None:
        self.stack.spawn(
            self._indication(device, connection, handle, data),
            "indicate",
            link=connection.handle,
            group=self._indications,
        )

    async def _indication(
        self, device: Device, connection: Connection, handle: int, data: bytes
    ) -> None:
        """Send one indication (Bumble queues it behind an unconfirmed one) and report
        INDICATE_DONE: 0 confirmed, 13 timed out, 7 link lost."""
        from bumble.att import Attribute
        from bumble.core import UUID as BumbleUUID
        from bumble.hci import Role

        attribute = device.gatt_server.get_attribute(handle)
        if attribute is None:  # NimBLE sends explicit data to any handle
            attribute = Attribute(BumbleUUID.from_16_bits(0), Attribute.Permissions(0))
            attribute.handle = handle
        status = await link_status(
            connection,
            device.gatt_server.indicate_subscriber(connection, attribute, data, force=True),
            f"{self.stack.name}: indication on handle {handle}",
        )
        # NimBLE reports INDICATE_DONE only on links where we are the peripheral.
        if connection.role == Role.PERIPHERAL:
            self.stack.post(IRQ_GATTS_INDICATE_DONE, connection.handle, handle, status)


__all__ = ["GattServer", "DEFAULT_MTU"]
