"""GATT client: discovery, reads, writes, MTU exchange, incoming notifications.

IRQs 9-19 and 21 (MTU_EXCHANGED, raised for exchanges either side starts).

The procedures are NimBLE's, written on Bumble's ATT request/response primitive rather
than its higher-level client, because the peer must see NimBLE's behaviour (SPEC D7):
one Read Request and no Read Blob, one Write Request and no Prepare/Execute, values cut
to the MTU, descriptor discovery from ``start + 1``, characteristic end handles from the
next reported declaration, UUIDs of their on-air size, and every result posted as its
response arrives. Each procedure runs as a task on the loop; the ``BLE`` call returns as
soon as it has started, and its ``*_DONE`` event carries the status: 0, ``0x100 + ATT
error``, 13 (timeout) or 7 (link lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._errors import mp_oserror
from ._flow import acl_packets
from ._overrides import fail_pending_response, intercept_att_pdus, take_every_value
from ._runtime import guarded, runtime
from ._status import (
    ATT_ATTRIBUTE_NOT_FOUND,
    ATT_ERROR_BASE,
    ATT_INVALID_PDU,
    HS_EBADDATA,
    HS_ENOTCONN,
    link_status,
)
from .constants import (
    EALREADY,
    EBUSY,
    EINVAL,
    ENOMEM,
    ENOTCONN,
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_DESCRIPTOR_DONE,
    IRQ_GATTC_DESCRIPTOR_RESULT,
    IRQ_GATTC_INDICATE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_MTU_EXCHANGED,
)
from .uuid import UUID

if TYPE_CHECKING:
    from bumble.device import Connection, Device
    from bumble.gatt_client import Client

    from ._stack import Stack

logger = logging.getLogger(__name__)

#: NimBLE's BLE_GATT_MAX_PROCS in MicroPython's builds: more at once → OSError(ENOMEM).
MAX_PROCEDURES = 4

_LAST_HANDLE = 0xFFFF


class _BadResponse(Exception):
    """The peer answered with something NimBLE would reject (BLE_HS_EBADDATA)."""


def _entries(data: bytes, size: int, sizes: tuple[int, ...]) -> None:
    """NimBLE's check of a list response: a known entry size, at least one entry and a
    whole number of them (Bumble silently ignores what does not fit)."""
    if size not in sizes or not data or len(data) % size:
        raise _BadResponse()


def _procedure_status(exc: Exception) -> int | None:
    """The statuses only a client procedure has: ATT error responses, malformed answers."""
    from bumble.att import ATT_Error

    if isinstance(exc, ATT_Error):
        return ATT_ERROR_BASE + exc.error_code
    if isinstance(exc, _BadResponse):
        return HS_EBADDATA
    return None


def _send_if_connected(device: Device, connection: Connection, pdu: bytes) -> None:
    if device.lookup_connection(connection.handle) is connection:
        connection.gatt_client.send_gatt_pdu(pdu)


def mp_uuid(raw: bytes) -> UUID:
    """A UUID as it was on air (2 or 16 bytes, little-endian), keeping its size."""
    return UUID._from_le(bytes(raw))


def _att_value(uuid: UUID) -> bytes:
    """A UUID as an attribute value: 16-bit stays 2 bytes; 32-bit goes out as 128-bit."""
    raw = bytes(uuid)
    if len(raw) == 4:
        from bumble.core import UUID as BumbleUUID

        return BumbleUUID.from_bytes(raw).to_bytes(force_128=True)
    return raw


class GattClient:
    """The GATT client procedures of one instance."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ring = stack.ring
        self._procedures = 0
        #: The procedure count is raised by callers' threads (read/write are checked and
        #: started without a round trip) and lowered on the loop.
        self._count_lock = threading.Lock()
        self._epoch = 0  # activations, so a late procedure frees no slot of a later one
        self._discovering_characteristics = False
        #: Links with a service discovery running, and how many more were asked meanwhile.
        self._services_running: dict[int, int] = {}
        self._mtu_exchanged: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Per link: responses received and not yet taken by their procedure, and the
        #: notifications held behind them (see ``_on_value``).
        self._answered: dict[int, int] = {}
        self._held: dict[int, list[tuple[Any, ...]]] = {}
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)

    # --- lifecycle ------------------------------------------------------------------
    def _attach(self, device: Device) -> None:
        self._answered = {}
        self._held = {}
        with self._count_lock:
            self._procedures = 0
            self._epoch += 1
        self._discovering_characteristics = False
        self._services_running = {}
        self._mtu_exchanged = set()
        device.on("connection", guarded(self._on_connection))
        intercept_att_pdus(device, functools.partial(self._on_att_pdu, device))

    def _detach(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _on_connection(self, connection: Connection) -> None:
        client = connection.gatt_client

        def on_notification(pdu: Any) -> None:
            self._on_value(connection, IRQ_GATTC_NOTIFY, pdu)

        def on_indication(pdu: Any) -> None:
            self._on_value(connection, IRQ_GATTC_INDICATE, pdu)

        def on_mtu() -> None:
            self._mtu_exchanged.add(connection.handle)
            self.ring.post(IRQ_MTU_EXCHANGED, connection.handle, connection.att_mtu)

        def on_disconnection(*args: Any) -> None:
            self._mtu_exchanged.discard(connection.handle)
            self._answered.pop(connection.handle, None)

        take_every_value(client, guarded(on_notification), guarded(on_indication))
        connection.on("connection_att_mtu_update", guarded(on_mtu))
        connection.on("disconnection", guarded(on_disconnection))

    def _on_att_pdu(
        self,
        device: Device,
        on_att_pdu: Callable[[int, bytes], None],
        conn_handle: int,
        pdu: bytes,
    ) -> None:
        """Every ATT PDU from a peer. A malformed one gets NimBLE's answer: a request an
        Error Response "Invalid PDU", a response ends our pending procedure with status 10
        (instead of a 30 s timeout), anything else is dropped."""
        if pdu and pdu[0] in _response_opcodes():
            self._answered[conn_handle] = self._answered.get(conn_handle, 0) + 1
        try:
            on_att_pdu(conn_handle, pdu)
        except Exception:
            from bumble.att import ATT_PDU

            try:
                ATT_PDU.from_bytes(pdu)
            except Exception:  # malformed: handled below
                self._on_malformed(device, conn_handle, bytes(pdu))
                return
            raise  # well-formed: not the peer's fault, let it be reported

    def _on_malformed(self, device: Device, conn_handle: int, pdu: bytes) -> None:
        from bumble.att import ATT_REQUESTS, ATT_RESPONSES, ATT_Error_Response

        connection = device.lookup_connection(conn_handle)
        opcode = pdu[0] if pdu else None
        logger.warning(
            "%s: malformed ATT PDU from %s: %s",
            self.stack.name,
            None if connection is None else connection.peer_address,
            pdu.hex() or "(empty)",
        )
        if connection is None or opcode is None:
            return
        if opcode in ATT_REQUESTS:
            device.gatt_server.send_response(
                connection,
                ATT_Error_Response(
                    request_opcode_in_error=opcode,
                    attribute_handle_in_error=0,
                    error_code=ATT_INVALID_PDU,
                ),
            )
        elif opcode in ATT_RESPONSES:
            fail_pending_response(connection, _BadResponse())

    def _on_value(self, connection: Connection, event: int, pdu: Any) -> None:
        """A notification or indication. One that arrives right behind the response to a
        procedure of ours waits until that procedure has reported (its task resumes a loop
        iteration later): NimBLE handles PDUs in arrival order, so the program sees
        ``WRITE_DONE`` before the notification the peer sent after its write response."""
        handle = connection.handle
        values = (event, handle, pdu.attribute_handle, bytes(pdu.attribute_value))
        if self._answered.get(handle) or self._held.get(handle):
            self._held.setdefault(handle, []).append(values)
        else:
            self.ring.post(*values)
        if event == IRQ_GATTC_INDICATE:
            from bumble.att import ATT_Handle_Value_Confirmation

            connection.gatt_client.send_confirmation(ATT_Handle_Value_Confirmation())

    # --- starting procedures (loop thread) --------------------------------------------
    def _start(
        self,
        connection: Connection,
        body: Callable[[Client], Coroutine[Any, Any, None]],
        finish: Callable[[int], object],
    ) -> None:
        with self._count_lock:
            if self._procedures >= MAX_PROCEDURES:
                raise mp_oserror(ENOMEM, f"more than {MAX_PROCEDURES} GATT procedures at once")
            self._procedures += 1
            epoch = self._epoch
        if runtime().in_loop_thread():
            self._spawn(connection, body, finish, epoch)
        else:
            self.stack.flow.start_soon(self._spawn, connection, body, finish, epoch)

    def _spawn(
        self,
        connection: Connection,
        body: Callable[[Client], Coroutine[Any, Any, None]],
        finish: Callable[[int], object],
        epoch: int,
    ) -> None:
        self.stack.spawn(
            self._run(connection, body, finish, epoch),
            "gatt-procedure",
            link=connection.handle,
            group=self._tasks,
        )

    async def _run(
        self,
        connection: Connection,
        body: Callable[[Client], Coroutine[Any, Any, None]],
        finish: Callable[[int], object],
        epoch: int,
    ) -> None:
        device = self.stack.device
        try:
            if device is None or device.lookup_connection(connection.handle) is not connection:
                # The link went between the call's check and now (the call was made on
                # another thread): Bumble would send into the void and wait 30 s.
                status = HS_ENOTCONN
            else:
                status = await link_status(
                    connection,
                    body(connection.gatt_client),
                    f"{self.stack.name}: GATT procedure",
                    _procedure_status,
                )
        finally:
            with self._count_lock:
                if epoch == self._epoch:  # not a procedure of an earlier activation
                    self._procedures -= 1
        if self.stack.reporting:  # finish posts its events (several) itself
            finish(status)
        self._release(connection.handle)

    def _release(self, handle: int) -> None:
        """Post the notifications held behind a response, once what the response caused
        has been posted (see ``_on_value``)."""
        for values in self._held.pop(handle, None) or ():
            self.stack.post(*values)

    def _consumed(self, handle: int) -> None:
        """A response has been taken by the procedure waiting for it."""
        count = self._answered.get(handle, 0)
        if count > 1:
            self._answered[handle] = count - 1
        else:
            self._answered.pop(handle, None)

    async def _request(self, client: Client, pdu: Any, not_found_ends: bool = True) -> Any:
        """Send one ATT request; ``None`` when the peer says "attribute not found" (the
        normal end of a discovery), ``ATT_Error`` for any other error response."""
        from bumble.att import ATT_Error, Opcode

        handle = client.connection.handle
        self._release(handle)  # what the previous response caused is posted by now
        try:
            response = await client.send_request(pdu)
        finally:
            self._consumed(handle)
        if response.op_code == Opcode.ATT_ERROR_RESPONSE:
            if not_found_ends and response.error_code == ATT_ATTRIBUTE_NOT_FOUND:
                return None
            raise ATT_Error(response.error_code, response.attribute_handle_in_error)
        return response

    # --- discovery ------------------------------------------------------------------------
    def discover_services(self, conn_handle: int, uuid: UUID | None) -> None:
        from bumble.att import ATT_Find_By_Type_Value_Request, ATT_Read_By_Group_Type_Request
        from bumble.gatt import GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE

        connection = self.stack.connection(conn_handle)
        handle = connection.handle
        if handle in self._services_running:
            # NimBLE runs the second one into the first one's responses: one result set,
            # and the second ends with BLE_HS_EBADDATA (10) after the first's DONE.
            self._services_running[handle] += 1
            return
        self._services_running[handle] = 0

        async def body(client: Client) -> None:
            start = 1
            while start <= _LAST_HANDLE:
                if uuid is None:
                    response = await self._request(
                        client,
                        ATT_Read_By_Group_Type_Request(
                            starting_handle=start,
                            ending_handle=_LAST_HANDLE,
                            attribute_group_type=GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE,
                        ),
                    )
                    if response is not None:
                        _entries(response.attribute_data_list, response.length, (6, 20))
                    found = [] if response is None else response.attributes
                    groups = [(s, e, mp_uuid(value)) for s, e, value in found]
                else:
                    response = await self._request(
                        client,
                        ATT_Find_By_Type_Value_Request(
                            starting_handle=start,
                            ending_handle=_LAST_HANDLE,
                            attribute_type=GATT_PRIMARY_SERVICE_ATTRIBUTE_TYPE,
                            attribute_value=_att_value(uuid),
                        ),
                    )
                    if response is not None:
                        _entries(response.handles_information_list, 4, (4,))
                    found = [] if response is None else response.handles_information
                    groups = [(s, e, uuid) for s, e in found]
                if not groups:
                    return
                for first, last, service_uuid in groups:
                    if first < start or last < first:
                        raise _BadResponse()
                    self.ring.post(IRQ_GATTC_SERVICE_RESULT, handle, first, last, service_uuid)
                start = groups[-1][1] + 1

        def finish(status: int) -> None:
            extra = self._services_running.pop(handle, 0)
            self.ring.post(IRQ_GATTC_SERVICE_DONE, handle, status)
            for _ in range(extra):
                self.ring.post(IRQ_GATTC_SERVICE_DONE, handle, HS_EBADDATA)

        try:
            self._start(connection, body, finish)
        except BaseException:
            self._services_running.pop(handle, None)
            raise

    def discover_characteristics(
        self, conn_handle: int, start: int, end: int, uuid: UUID | None
    ) -> None:
        from bumble.att import ATT_Read_By_Type_Request
        from bumble.gatt import GATT_CHARACTERISTIC_ATTRIBUTE_TYPE

        # NimBLE checks the range before it looks the link up: EINVAL on any link.
        self.stack.require()
        if start == 0 or start > end:
            raise mp_oserror(EINVAL, "invalid handle range")
        connection = self.stack.connection(conn_handle)
        handle = connection.handle
        if self._discovering_characteristics:
            raise mp_oserror(EBUSY, "a characteristic discovery is already running")
        # A result is held back until the next one is known, to give it an end handle.
        pending: list[tuple[int, int, UUID]] = []

        def flush(end_handle: int) -> None:
            if pending:
                value_handle, properties, char_uuid = pending.pop()
                self.ring.post(
                    IRQ_GATTC_CHARACTERISTIC_RESULT,
                    handle,
                    end_handle,
                    value_handle,
                    properties,
                    char_uuid,
                )

        async def body(client: Client) -> None:
            previous = start - 1
            while previous < end:
                response = await self._request(
                    client,
                    ATT_Read_By_Type_Request(
                        starting_handle=previous + 1,
                        ending_handle=end,
                        attribute_type=GATT_CHARACTERISTIC_ATTRIBUTE_TYPE,
                    ),
                )
                if response is None:
                    return
                _entries(response.attribute_data_list, response.length, (7, 21))
                for declaration, value in response.attributes:
                    if declaration <= previous or len(value) not in (5, 19):
                        raise _BadResponse()
                    previous = declaration
                    char_uuid = mp_uuid(value[3:])
                    # Any next characteristic ends the held one, matching or not: NimBLE
                    # discovers all and filters in the host, after computing end handles.
                    flush(declaration - 1)
                    if uuid is not None and char_uuid != uuid:
                        continue
                    pending.append((struct.unpack_from("<H", value, 1)[0], value[0], char_uuid))

        def finish(status: int) -> None:
            self._discovering_characteristics = False
            flush(end)
            self.ring.post(IRQ_GATTC_CHARACTERISTIC_DONE, handle, status)

        self._start(connection, body, finish)
        self._discovering_characteristics = True

    def discover_descriptors(self, conn_handle: int, start: int, end: int) -> None:
        from bumble.att import ATT_Find_Information_Request

        # NimBLE starts after the given handle (callers pass the characteristic value),
        # and checks the range before it looks the link up.
        self.stack.require()
        if start + 1 > end:
            raise mp_oserror(EINVAL, "invalid handle range")
        connection = self.stack.connection(conn_handle)
        handle = connection.handle

        async def body(client: Client) -> None:
            previous = start
            while previous < end:
                response = await self._request(
                    client,
                    ATT_Find_Information_Request(starting_handle=previous + 1, ending_handle=end),
                )
                if response is None:
                    return
                _entries(response.information_data, 4 if response.format == 1 else 18, (4, 18))
                if response.format not in (1, 2):
                    raise _BadResponse()
                for attribute, raw_uuid in response.information:
                    if attribute <= previous:
                        raise _BadResponse()
                    previous = attribute
                    self.ring.post(
                        IRQ_GATTC_DESCRIPTOR_RESULT, handle, attribute, mp_uuid(raw_uuid)
                    )

        self._start(
            connection,
            body,
            lambda status: self.ring.post(IRQ_GATTC_DESCRIPTOR_DONE, handle, status),
        )

    # --- values ---------------------------------------------------------------------------
    def read(self, conn_handle: int, value_handle: int) -> None:
        """One Read Request, never a Read Blob: a long value arrives cut to MTU - 1.
        Any thread: checked now, started on the loop without waiting."""
        from bumble.att import ATT_Read_Request

        self.stack.require()
        if value_handle == 0:
            # NimBLE's ATT client refuses handle 0 before it looks the link up.
            raise mp_oserror(EINVAL, "handle 0 is not an attribute")
        connection = self.stack.connection(conn_handle)
        handle = connection.handle

        async def body(client: Client) -> None:
            response = await self._request(
                client, ATT_Read_Request(attribute_handle=value_handle), not_found_ends=False
            )
            self.ring.post(
                IRQ_GATTC_READ_RESULT, handle, value_handle, bytes(response.attribute_value)
            )

        self._start(
            connection,
            body,
            lambda status: self.ring.post(IRQ_GATTC_READ_DONE, handle, value_handle, status),
        )

    def write(self, conn_handle: int, value_handle: int, data: bytes, mode: int) -> None:
        """Mode 0: a Write Command, no event. Mode 1: a Write Request, WRITE_DONE. The data
        is cut to MTU - 3; there are no long writes. Any thread: checked now, sent on the
        loop without waiting."""
        from bumble.att import ATT_Write_Command, ATT_Write_Request

        device = self.stack.require()
        if mode not in (0, 1):
            raise mp_oserror(EINVAL, "write mode must be 0 or 1")
        connection = self.stack.connection(conn_handle)
        handle = connection.handle
        data = data[: connection.att_mtu - 3]
        if mode == 0:
            self.stack.flow.refuse_if_backlogged(device)
            pdu = ATT_Write_Command(attribute_handle=value_handle, attribute_value=data)
            raw = bytes(pdu)
            self.stack.flow.send_soon(
                _send_if_connected, device, connection, raw, packets=acl_packets(device, len(raw))
            )
            return

        async def body(client: Client) -> None:
            await self._request(
                client,
                ATT_Write_Request(attribute_handle=value_handle, attribute_value=data),
                not_found_ends=False,
            )

        self._start(
            connection,
            body,
            lambda status: self.ring.post(IRQ_GATTC_WRITE_DONE, handle, value_handle, status),
        )

    # --- MTU ------------------------------------------------------------------------------
    def exchange_mtu(self, conn_handle: int) -> None:
        """Request ``config('mtu')``; once per link, whichever side started (EALREADY).
        MTU_EXCHANGED comes from the connection's MTU update, on both sides."""
        device = self.stack.device
        connection = device.lookup_connection(conn_handle) if device is not None else None
        if connection is None or not self.stack.active:
            raise mp_oserror(ENOTCONN, f"no connection with handle {conn_handle}")
        if connection.handle in self._mtu_exchanged:
            raise mp_oserror(EALREADY, "the MTU of this link was already exchanged")
        self._mtu_exchanged.add(connection.handle)
        mtu = self.stack.require().gatt_server.max_mtu  # config('mtu'), set by the server

        async def body(client: Client) -> None:
            try:
                await client.request_mtu(mtu)
            finally:
                self._consumed(connection.handle)

        self._start(connection, body, lambda status: None)


@functools.cache
def _response_opcodes() -> frozenset[int]:
    """ATT response opcodes (Bumble is imported on first use, not with mpbluetooth)."""
    from bumble.att import ATT_RESPONSES

    return frozenset(int(opcode) for opcode in ATT_RESPONSES)


__all__ = ["GattClient", "mp_uuid", "MAX_PROCEDURES"]
