"""The virtual controller used for simulation: Bumble's ``Controller``, made to behave as a
real one does on air, so what a program sees in simulation is what it would see on a board.

Bumble's stock controller (0.0.236) reports every advert as connectable with the advert's
data in the scan response, sends scan responses to passive scans, answers legacy scans with
extended reports (a NimBLE host ignores those), lets a central connect to a non-connectable
advert, never completes a connection cancel (a timed-out connect then wedges it), tells the
peripheral fixed connection parameters, and hands the host ACL packets of any length. Each
of those is fixed here by overriding the controller's hooks. Adverts travel the link as
Python objects, so an outgoing one is tagged with its advertising properties and its set's
scan-response data for the receiving controller to report faithfully.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bumble import hci, ll
from bumble.controller import AdvertisingSet, Controller, LegacyAdvertiser

from .hci_checks import invalid_parameters

if TYPE_CHECKING:
    from .link import SimLink

logger = logging.getLogger(__name__)

# Advertising event properties (Core Vol 4, Part E, 7.8.53), as carried on our adverts.
_CONNECTABLE = 0x01
_SCANNABLE = 0x02
_DIRECTED = 0x04
_LEGACY = 0x10
_SCAN_RESPONSE = 0x08  # in extended reports
_ADV_IND = _LEGACY | _SCANNABLE | _CONNECTABLE

#: Legacy advertising type (HCI_LE_Set_Advertising_Parameters) -> event properties.
_LEGACY_TYPE_PROPERTIES = {
    0: _ADV_IND,
    1: _LEGACY | _DIRECTED | _CONNECTABLE,
    2: _LEGACY | _SCANNABLE,
    3: _LEGACY,
    4: _LEGACY | _DIRECTED | _CONNECTABLE,
}
#: Event properties of a legacy PDU -> legacy report event type (0 ADV_IND .. 3 NONCONN).
_LEGACY_REPORT_TYPE = {
    _ADV_IND: 0,
    _LEGACY | _DIRECTED | _CONNECTABLE: 1,
    _LEGACY | _SCANNABLE: 2,
    _LEGACY: 3,
}
_SCAN_RSP = 4
#: RSSI of every report in instant timing (air timing computes it from the geometry).
_RSSI = -50
#: Seconds per advertising/scan interval unit (0.625 ms).
_UNIT = 0.000625

#: Vendor command (OGF 0x3F) our simulated controllers understand: set the public address
#: (6 bytes, little-endian). A process that rejoins a hub uses it to keep its identity, so a
#: peer that bonded with it recognises it after a restart, as it would a board.
SET_PUBLIC_ADDRESS_OPCODE = hci.hci_command_op_code(0x3F, 0x3D0)
#: Vendor command: number connections from this handle (2 bytes, little-endian), as the
#: controller of the board being simulated does (an ESP32's gives its first link 0).
SET_FIRST_CONNECTION_HANDLE_OPCODE = hci.hci_command_op_code(0x3F, 0x3D1)
#: What Bumble's controller numbers from, and ours unless told otherwise.
DEFAULT_FIRST_CONNECTION_HANDLE = 1
_MAX_CONNECTION_HANDLE = 0x0EFF

_PROPERTIES = "mpb_properties"
_SCAN_RESPONSE_DATA = "mpb_scan_response"


def _air_link(controller: Controller) -> SimLink | None:
    """The controller's link if it runs in air timing, else None."""
    link = controller.link
    return link if getattr(link, "air", False) else None  # type: ignore[return-value]


def _advertising_period(controller: Controller, units: int, instant: float) -> float:
    """Seconds to the next advertising event: in air timing the interval (``units`` of
    0.625 ms, at least 20 ms) plus advDelay, a random 0-10 ms (Core Vol 6, Part B,
    4.4.2.2); in instant timing ``instant``, the stock controller's period."""
    link = _air_link(controller)
    if link is None:
        return instant
    from .link import ADV_DELAY_MAX, ADV_INTERVAL_MIN

    return max(units * _UNIT, ADV_INTERVAL_MIN) + link.rng.uniform(0.0, ADV_DELAY_MAX)


def _next_advertising_event(advertiser: Any, period: float, fire: Any) -> asyncio.TimerHandle:
    """Schedule the next advertising event ``period`` after the one that was *planned*
    (not after the late moment the loop ran it), so the loop's lateness does not add up
    into the interval: a 100 ms advertiser stays at 105 ms on average, as on air."""
    loop = asyncio.get_running_loop()
    if _air_link(advertiser.controller) is None:
        return loop.call_later(period, fire)  # instant timing: the stock behaviour
    now = loop.time()
    planned = getattr(advertiser, "_mpb_planned", None)
    when = (planned if planned is not None and now - planned < period else now) + period
    advertiser._mpb_planned = when
    return loop.call_at(when, fire)


class _LegacyAdvertiser(LegacyAdvertiser):
    """Sends every legacy advertising type (the stock one sends only ADV_IND), tagged, and
    in air timing at the advertising interval plus advDelay (the stock one reads the
    interval's 0.625 ms units as milliseconds)."""

    def _on_timer_fired(self) -> None:
        self.send_advertising_data()
        period = _advertising_period(
            self.controller, self.advertising_interval_min, self.advertising_interval_min / 1000.0
        )
        self.timer_handle = _next_advertising_event(self, period, self._on_timer_fired)

    def send_advertising_data(self) -> None:
        if not self.enabled:
            return
        pdu = ll.AdvInd(advertiser_address=self.address, data=bytes(self.advertising_data))
        setattr(pdu, _PROPERTIES, _LEGACY_TYPE_PROPERTIES.get(self.advertising_type, _ADV_IND))
        setattr(pdu, _SCAN_RESPONSE_DATA, bytes(self.scan_response_data))
        self.controller.send_advertising_pdu(pdu)


class _AdvertisingSet(AdvertisingSet):
    """An extended advertising set whose events come at its interval plus advDelay in air
    timing (the stock one uses the bare interval, at least 10 ms)."""

    def _on_extended_advertising_timer_fired(self) -> None:
        if not self.enabled:
            return
        self.send_extended_advertising_data()
        units = self.parameters.primary_advertising_interval_min if self.parameters else 1600
        period = _advertising_period(self.controller, units, max(units * _UNIT, 0.01))
        self.timer_handle = _next_advertising_event(
            self, period, self._on_extended_advertising_timer_fired
        )


def _in_window(clock: tuple[float, float, float] | None, now: float) -> bool:
    """Whether a scan that started at ``clock[0]`` with interval ``clock[1]`` and window
    ``clock[2]`` (seconds) is listening at ``now``."""
    if clock is None:
        return True
    start, interval, window = clock
    if window >= interval:
        return True
    return (now - start) % interval < window


class SimController(Controller):
    """A Bumble virtual controller that reports and connects as a real one does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.le_legacy_advertiser = _LegacyAdvertiser(self)
        self._extended_scan = False
        self._active_scan = False
        self._connect_ind: ll.ConnectInd | None = None
        #: Air timing: (start, interval, window) in seconds of the scan and of the
        #: initiator's scan; an advert outside the window is not heard.
        self._scan_parameters = (0.01, 0.01)
        self._scan_clock: tuple[float, float, float] | None = None
        self._initiate_clock: tuple[float, float, float] | None = None
        #: RSSI of the advert being received (air timing), else the fixed -50.
        self._rx_rssi = _RSSI
        #: (connection handle, reason) of every Disconnection Complete given to the host:
        #: the reason a MicroPython DISCONNECT event does not carry, for tests.
        self.disconnections: list[tuple[int, int]] = []
        self.first_connection_handle = DEFAULT_FIRST_CONNECTION_HANDLE

    def allocate_connection_handle(self) -> int:
        """The lowest free handle from ``first_connection_handle`` (Bumble's from 1)."""
        used = {
            link.handle
            for link in itertools.chain(
                self.le_connections.values(), self.classic_connections.values()
            )
        }
        return next(
            handle
            for handle in range(self.first_connection_handle, _MAX_CONNECTION_HANDLE + 1)
            if handle not in used
        )

    def go_silent(self) -> None:
        """Stop advertising, scanning and connecting, as a radio that is switched off.

        Bumble's advertising timers keep running (and sending adverts to the link) after the
        host is gone, even once the controller has left the link; a powered-off instance
        would go on advertising and be kept alive by its timer.
        """
        self.pending_le_connection = None
        self.le_scan_enable = False
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.le_legacy_advertiser.stop()

    # --- parameter checks -----------------------------------------------------------------
    def on_hci_command_packet(self, command: hci.HCI_Command) -> None:
        """Refuse a command whose parameters a real controller would refuse (see
        ``hci_checks``) with Invalid HCI Command Parameters, in the Command Complete or
        Command Status the command is answered with; the stock controller takes them all."""
        problem = invalid_parameters(command)
        if problem is None:
            super().on_hci_command_packet(command)
            return
        logger.debug("%s: %s refused: %s", self.name, command.name, problem)
        status = hci.HCI_ErrorCode.INVALID_COMMAND_PARAMETERS_ERROR
        if isinstance(command, hci.HCI_SyncCommand):
            self.send_hci_packet(
                hci.HCI_Command_Complete_Event(
                    num_hci_command_packets=1,
                    command_opcode=command.op_code,
                    return_parameters=hci.HCI_StatusReturnParameters(status),
                )
            )
        else:
            self._send_hci_command_status(status, command.op_code)

    # --- vendor commands ---------------------------------------------------------------
    def on_hci_command(self, command: hci.HCI_Command) -> Any:
        vendor = self._vendor_commands.get(command.op_code)
        if vendor is None:
            if isinstance(command, hci.HCI_SyncCommand):
                return super().on_hci_command(command)
            # The stock answer to a command it does not implement is a Command Complete,
            # which the dispatcher drops for a command answered by Command Status (LE Set
            # PHY...): the host would wait for ever. A controller answers Unknown Command.
            logger.debug("%s: %s not supported", self.name, command.name)
            self._send_hci_command_status(
                hci.HCI_ErrorCode.UNKNOWN_HCI_COMMAND_ERROR, command.op_code
            )
            return None
        # Bumble dispatches opcodes it does not know as asynchronous commands: the handler
        # sends its own Command Complete.
        status = vendor(self, bytes(command.parameters or b""))
        self.send_hci_packet(
            hci.HCI_Command_Complete_Event(
                num_hci_command_packets=1,
                command_opcode=command.op_code,
                return_parameters=hci.HCI_StatusReturnParameters(status),
            )
        )
        return None

    def _set_first_connection_handle(self, parameters: bytes) -> hci.HCI_ErrorCode:
        if len(parameters) != 2:
            return hci.HCI_ErrorCode.INVALID_COMMAND_PARAMETERS_ERROR
        first = int.from_bytes(parameters, "little")
        if first > _MAX_CONNECTION_HANDLE:
            return hci.HCI_ErrorCode.INVALID_COMMAND_PARAMETERS_ERROR
        self.first_connection_handle = first
        return hci.HCI_ErrorCode.SUCCESS

    def _set_public_address(self, parameters: bytes) -> hci.HCI_ErrorCode:
        if len(parameters) != 6:
            return hci.HCI_ErrorCode.INVALID_COMMAND_PARAMETERS_ERROR
        address = hci.Address(parameters, hci.Address.PUBLIC_DEVICE_ADDRESS)
        if any(
            other is not self and other.public_address == address for other in self.link.controllers
        ):
            return hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR
        self.public_address = address
        return hci.HCI_ErrorCode.SUCCESS

    _vendor_commands: dict[int, Callable[[SimController, bytes], hci.HCI_ErrorCode]] = {
        SET_PUBLIC_ADDRESS_OPCODE: _set_public_address,
        SET_FIRST_CONNECTION_HANDLE_OPCODE: _set_first_connection_handle,
    }

    # --- advertising out ------------------------------------------------------------
    def send_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        if isinstance(packet, ll.AdvExtInd) and not hasattr(packet, _PROPERTIES):
            for advertising_set in self.advertising_sets.values():
                parameters = advertising_set.parameters
                if (
                    advertising_set.enabled
                    and parameters is not None
                    and (advertising_set.address == packet.advertiser_address)
                ):
                    setattr(packet, _PROPERTIES, int(parameters.advertising_event_properties))
                    setattr(packet, _SCAN_RESPONSE_DATA, bytes(advertising_set.scan_response_data))
                    break
        super().send_advertising_pdu(packet)

    # --- scanning -------------------------------------------------------------------
    def on_hci_le_set_scan_parameters_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_scan_parameters_command(command)
        self._active_scan = command.le_scan_type == 1
        self._scan_parameters = (command.le_scan_interval * _UNIT, command.le_scan_window * _UNIT)
        return result

    def on_hci_le_set_scan_enable_command(self, command: Any) -> Any:
        self._extended_scan = False
        self._start_scan_clock(bool(command.le_scan_enable))
        return super().on_hci_le_set_scan_enable_command(command)

    def on_hci_le_set_extended_scan_parameters_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_extended_scan_parameters_command(command)
        scan_types = getattr(command, "scan_types", None) or [0]
        self._active_scan = scan_types[0] == 1
        intervals = getattr(command, "scan_intervals", None) or [16]
        windows = getattr(command, "scan_windows", None) or [16]
        self._scan_parameters = (intervals[0] * _UNIT, windows[0] * _UNIT)
        return result

    def on_hci_le_set_extended_scan_enable_command(self, command: Any) -> Any:
        self._extended_scan = True
        self._start_scan_clock(bool(command.enable))
        return super().on_hci_le_set_extended_scan_enable_command(command)

    def _start_scan_clock(self, enable: bool) -> None:
        if enable and not self.le_scan_enable:
            now = asyncio.get_running_loop().time()
            self._scan_clock = (now, *self._scan_parameters)

    def on_hci_le_create_connection_command(self, command: Any) -> Any:
        """NimBLE's link layer connects at the largest interval the host allows
        (``ble_ll_conn_hci.c``: ``conn_itvl = conn_itvl_max``); Bumble's takes the
        smallest. Programs' timing depends on it (MicroPython's default asks for 30 to
        50 ms: aioble's write-capture test expects 50)."""
        self._start_initiate_clock(command.le_scan_interval, command.le_scan_window)
        command.connection_interval_min = command.connection_interval_max
        return super().on_hci_le_create_connection_command(command)

    def on_hci_le_extended_create_connection_command(self, command: Any) -> Any:
        intervals = getattr(command, "scan_intervals", None) or [16]
        windows = getattr(command, "scan_windows", None) or [16]
        self._start_initiate_clock(intervals[0], windows[0])
        maxima = getattr(command, "connection_interval_maxs", None)
        if maxima:
            command.connection_interval_mins = list(maxima)
        return super().on_hci_le_extended_create_connection_command(command)

    def _start_initiate_clock(self, interval: int, window: int) -> None:
        if self.pending_le_connection is None:
            now = asyncio.get_running_loop().time()
            self._initiate_clock = (now, interval * _UNIT, window * _UNIT)

    def on_hci_le_set_extended_advertising_parameters_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_extended_advertising_parameters_command(command)
        advertising_set = self.advertising_sets.get(command.advertising_handle)
        if advertising_set is not None and type(advertising_set) is AdvertisingSet:
            advertising_set.__class__ = _AdvertisingSet
        return result

    def receive_advertising_pdu(self, pdu: Any, rssi: int) -> None:
        """An advert (or CONNECT_IND) from the air-timed link, heard with ``rssi`` dBm."""
        self._rx_rssi = rssi
        try:
            self.on_ll_advertising_pdu(pdu)
        finally:
            self._rx_rssi = _RSSI

    def on_advertising_pdu(self, pdu: Any) -> None:
        properties = getattr(pdu, _PROPERTIES, None)
        if properties is None:  # from a stock controller on the same link
            properties = _ADV_IND if isinstance(pdu, ll.AdvInd) else _CONNECTABLE
        scanning = initiating = True
        if _air_link(self) is not None:
            # On air a scanner (or initiator) hears only inside its scan window.
            now = asyncio.get_running_loop().time()
            scanning = _in_window(self._scan_clock, now)
            initiating = _in_window(self._initiate_clock, now)
        if self.le_scan_enable and scanning:
            self._report(pdu, properties)
        # Let the parent handle periodic sync and connection creation, without its reports,
        # and without connecting to an advert that does not accept connections.
        connectable = bool(properties & _CONNECTABLE) and initiating
        pending = self.pending_le_connection
        scan_enable = self.le_scan_enable
        self.le_scan_enable = False
        if not connectable:
            self.pending_le_connection = None
        try:
            super().on_advertising_pdu(pdu)
        finally:
            self.le_scan_enable = scan_enable
            if not connectable:
                self.pending_le_connection = pending

    def _report(self, pdu: Any, properties: int) -> None:
        address = pdu.advertiser_address
        scan_response = getattr(pdu, _SCAN_RESPONSE_DATA, b"")
        answer_scan = self._active_scan and bool(properties & _SCANNABLE)
        if self._extended_scan:
            self._extended_report(address, properties & 0x17, pdu.data)
            if answer_scan:
                kind = _SCAN_RESPONSE | (properties & (_LEGACY | _SCANNABLE | _CONNECTABLE))
                self._extended_report(address, kind, scan_response)
            return
        if not properties & _LEGACY:
            return  # extended adverts are invisible to a legacy scan
        kind = _LEGACY_REPORT_TYPE.get(properties & 0x17, 0)
        self._legacy_report(address, kind, pdu.data)
        if answer_scan:
            self._legacy_report(address, _SCAN_RSP, scan_response)

    def _extended_report(self, address: hci.Address, event_type: int, data: bytes) -> None:
        report = hci.HCI_LE_Extended_Advertising_Report_Event.Report(
            event_type=event_type,
            address_type=address.address_type,
            address=address,
            primary_phy=hci.Phy.LE_1M,
            secondary_phy=0,
            advertising_sid=0xFF,
            tx_power=0x7F,
            rssi=self._rx_rssi,
            periodic_advertising_interval=0,
            direct_address_type=0,
            direct_address=hci.Address.ANY,
            data=data,
        )
        self.send_hci_packet(hci.HCI_LE_Extended_Advertising_Report_Event([report]))

    def _legacy_report(self, address: hci.Address, event_type: int, data: bytes) -> None:
        report = hci.HCI_LE_Advertising_Report_Event.Report(
            event_type=event_type,
            address_type=address.address_type,
            address=address,
            data=data,
            rssi=self._rx_rssi,
        )
        self.send_hci_packet(hci.HCI_LE_Advertising_Report_Event([report]))

    # --- connections ----------------------------------------------------------------
    def on_le_connect_ind(self, packet: ll.ConnectInd) -> None:
        # The peripheral learns the parameters the central chose (the stock one makes up
        # 12.5 ms / 100 ms): patch them into the Connection Complete the parent sends.
        self._connect_ind = packet
        try:
            super().on_le_connect_ind(packet)
        finally:
            self._connect_ind = None

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
        if self.pending_le_connection is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # Core 7.8.13: Command Complete first, then the Connection Complete with "Unknown
        # Connection Identifier".
        asyncio.get_running_loop().call_soon(self._send_connect_cancelled)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _send_connect_cancelled(self) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=0,
                peer_address=hci.Address.ANY,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    # --- air timing: what goes over a connection waits for its events -------------------
    def on_hci_acl_data_packet(self, packet: hci.HCI_AclDataPacket) -> None:
        link = _air_link(self)
        connection = self.find_le_connection_by_handle(packet.connection_handle) if link else None
        if link is None or connection is None or not link.send_fragment(self, connection, packet):
            super().on_hci_acl_data_packet(packet)

    def on_hci_disconnect_command(self, command: Any) -> Any:
        link = _air_link(self)
        connection = self.find_le_connection_by_handle(command.connection_handle) if link else None
        if link is None or connection is None:
            return super().on_hci_disconnect_command(command)
        self._send_hci_command_status(hci.HCI_COMMAND_STATUS_PENDING, command.op_code)
        reason = command.reason

        def acknowledged() -> None:
            # Our end closes when the peer has acknowledged LL_TERMINATE_IND.
            if self.le_connections.get(connection.peer_address) is connection:
                self.on_le_disconnected(connection, reason)

        if not link.send_control(self, connection, ll.TerminateInd(reason), acknowledged):
            connection.send_ll_control_pdu(ll.TerminateInd(reason))
            self.on_le_disconnected(connection, reason)
        return None

    def on_hci_le_connection_update_command(self, command: Any) -> Any:
        link = _air_link(self)
        connection = self.find_le_connection_by_handle(command.connection_handle) if link else None
        if (
            link is None
            or connection is None
            or link.air_connection(connection.self_address, connection.peer_address) is None
        ):
            return super().on_hci_le_connection_update_command(command)
        self._send_hci_command_status(hci.HCI_COMMAND_STATUS_PENDING, command.op_code)
        update = ll.ConnectionUpdateInd(
            interval=command.connection_interval_max,
            latency=command.max_latency,
            timeout=command.supervision_timeout,
        )
        # Both ends get their Connection Update Complete at the update's instant.
        link.send_control(self, connection, update)
        return None

    # --- to the host ----------------------------------------------------------------
    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if isinstance(packet, hci.HCI_Disconnection_Complete_Event):
            self.disconnections.append((packet.connection_handle, packet.reason))
        connect_ind = self._connect_ind
        if connect_ind is not None and isinstance(packet, hci.HCI_LE_Connection_Complete_Event):
            packet.connection_interval = connect_ind.interval
            packet.peripheral_latency = connect_ind.latency
            packet.supervision_timeout = connect_ind.timeout
            packet.central_clock_accuracy = 0
        if isinstance(packet, hci.HCI_AclDataPacket):
            limit = self.le_acl_data_packet_length
            if packet.data_total_length > limit:
                self._send_fragmented(packet, limit)
                return
        super().send_hci_packet(packet)

    def _send_fragmented(self, packet: hci.HCI_AclDataPacket, limit: int) -> None:
        """A host may drop ACL packets longer than the buffer size we advertised (NimBLE
        does), so split them into a start fragment and continuation fragments."""
        data = packet.data
        for offset in range(0, len(data), limit):
            chunk = data[offset : offset + limit]
            boundary = packet.pb_flag if offset == 0 else 0b01
            super().send_hci_packet(
                hci.HCI_AclDataPacket(
                    packet.connection_handle, boundary, packet.bc_flag, len(chunk), chunk
                )
            )
