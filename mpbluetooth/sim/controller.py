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
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller, LegacyAdvertiser

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
_RSSI = -50

#: Vendor command (OGF 0x3F) our simulated controllers understand: set the public address
#: (6 bytes, little-endian). A process that rejoins a hub uses it to keep its identity, so a
#: peer that bonded with it recognises it after a restart, as it would a board.
SET_PUBLIC_ADDRESS_OPCODE = hci.hci_command_op_code(0x3F, 0x3D0)

_PROPERTIES = "mpb_properties"
_SCAN_RESPONSE_DATA = "mpb_scan_response"


class _LegacyAdvertiser(LegacyAdvertiser):
    """Sends every legacy advertising type (the stock one sends only ADV_IND), tagged."""

    def send_advertising_data(self) -> None:
        if not self.enabled:
            return
        pdu = ll.AdvInd(advertiser_address=self.address, data=bytes(self.advertising_data))
        setattr(pdu, _PROPERTIES, _LEGACY_TYPE_PROPERTIES.get(self.advertising_type, _ADV_IND))
        setattr(pdu, _SCAN_RESPONSE_DATA, bytes(self.scan_response_data))
        self.controller.send_advertising_pdu(pdu)


class SimController(Controller):
    """A Bumble virtual controller that reports and connects as a real one does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.le_legacy_advertiser = _LegacyAdvertiser(self)
        self._extended_scan = False
        self._active_scan = False
        self._connect_ind: ll.ConnectInd | None = None

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

    # --- vendor commands ---------------------------------------------------------------
    def on_hci_command(self, command: hci.HCI_Command) -> Any:
        if command.op_code != SET_PUBLIC_ADDRESS_OPCODE:
            return super().on_hci_command(command)
        # Bumble dispatches opcodes it does not know as asynchronous commands: the handler
        # sends its own Command Complete.
        status = self._set_public_address(bytes(command.parameters or b""))
        self.send_hci_packet(
            hci.HCI_Command_Complete_Event(
                num_hci_command_packets=1,
                command_opcode=command.op_code,
                return_parameters=hci.HCI_StatusReturnParameters(status),
            )
        )
        return None

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
        return result

    def on_hci_le_set_scan_enable_command(self, command: Any) -> Any:
        self._extended_scan = False
        return super().on_hci_le_set_scan_enable_command(command)

    def on_hci_le_set_extended_scan_parameters_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_extended_scan_parameters_command(command)
        scan_types = getattr(command, "scan_types", None) or [0]
        self._active_scan = scan_types[0] == 1
        return result

    def on_hci_le_set_extended_scan_enable_command(self, command: Any) -> Any:
        self._extended_scan = True
        return super().on_hci_le_set_extended_scan_enable_command(command)

    def on_advertising_pdu(self, pdu: Any) -> None:
        properties = getattr(pdu, _PROPERTIES, None)
        if properties is None:  # from a stock controller on the same link
            properties = _ADV_IND if isinstance(pdu, ll.AdvInd) else _CONNECTABLE
        if self.le_scan_enable:
            self._report(pdu, properties)
        # Let the parent handle periodic sync and connection creation, without its reports,
        # and without connecting to an advert that does not accept connections.
        connectable = bool(properties & _CONNECTABLE)
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
            rssi=_RSSI,
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
            rssi=_RSSI,
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

    # --- to the host ----------------------------------------------------------------
    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
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
