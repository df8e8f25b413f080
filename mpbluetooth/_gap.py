"""GAP: advertising, scanning, connecting, and the connection IRQs (1, 2, 5-8).

Runs on the loop thread. Bumble's listeners here must never raise into Bumble (an
exception in a pyee listener aborts the remaining listeners for that HCI packet), so each
one posts to the event ring and nothing more.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from ._convert import address_to_mp, adv_type, mp_to_address
from ._errors import controller_answer, hci_oserror, hci_status, mp_oserror
from ._l2cap_early import mark_told
from ._runtime import guarded, runtime
from ._status import HCI_INVALID_PARAMETERS, HS_ADV_DATA_TOO_LONG
from .constants import (
    CONN_HANDLE_NONE,
    EALREADY,
    EBUSY,
    EINVAL,
    EIO,
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_CONNECTION_UPDATE,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)

if TYPE_CHECKING:
    from bumble.device import Connection, Device

    from ._stack import Stack

logger = logging.getLogger(__name__)

_NO_ADDR = bytes(6)

#: At most how long the IRQ context waits after a connect event for the controller to
#: acknowledge the host's feature request (NimBLE's HCI command timeout is 2 s).
_FEATURES_ACK_S = 2.0
#: NimBLE's defaults for gap_connect: 30..50 ms interval, 2.56 s supervision timeout.
DEFAULT_MIN_CONN_US = 30000
DEFAULT_MAX_CONN_US = 50000
#: NimBLE's advertising interval when 0 is asked for (BLE_GAP_ADV_FAST_INTERVAL1_MIN).
_DEFAULT_ADV_UNITS = 48
_MAX_LEGACY_PAYLOAD = 31
#: The longest interval LE Set Advertising Parameters takes (Core Vol 4, Part E, 7.8.5).
_LEGACY_ADV_UNITS_MAX = 0x4000
_SCAN_UNITS_MIN, _SCAN_UNITS_MAX = 4, 0x4000
#: NimBLE's supervision timeout for gap_connect (BLE_GAP_INITIAL_SUPERVISION_TIMEOUT,
#: 0x100 units of 10 ms): a controller refuses a max interval of 1.28 s or more with it.
_SUPERVISION_TIMEOUT_MS = 2560
#: NimBLE accepts peer address types 0..3 (public, random, public identity, random identity).
_MAX_ADDR_TYPE = 3


def _c_div(microseconds: int, unit: int) -> int:
    """C's integer division, which truncates toward zero (Python's floors)."""
    quotient = abs(microseconds) // unit
    return -quotient if microseconds < 0 else quotient


def _c_units(microseconds: int, unit: int) -> int:
    """``int32 / unit`` stored in NimBLE's ``uint16_t`` field: C's division truncates
    toward zero, and the store keeps the low 16 bits."""
    return _c_div(microseconds, unit) & 0xFFFF


#: Seconds a DISCONNECT event waits for the link's procedures to report their end.
_LINK_WORK_TIMEOUT = 0.5
#: Seconds gap_connect waits for the controller to accept the connection request.
_INITIATE_TIMEOUT = 2.0


def _legacy_payload(data: bytes) -> bytes:
    """A legacy advertising payload; over 31 bytes NimBLE's host refuses it itself
    (``ble_gap_adv_set_data`` returns the raw 0x12, which the binding passes through as
    ``OSError(-18)``), before any HCI command."""
    if len(data) > _MAX_LEGACY_PAYLOAD:
        raise mp_oserror(-HS_ADV_DATA_TOO_LONG, f"payload longer than {_MAX_LEGACY_PAYLOAD} bytes")
    return data


class Gap:
    """The GAP roles of one instance."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ring = stack.ring
        #: The GAP name in force at the next activation: set while active, else the default.
        self.kept_name = stack.gap_name
        self.advertising = False
        self.adv_data = b""
        self.resp_data = b""
        self.scanning = False
        self._scan_timer: asyncio.TimerHandle | None = None
        self.connecting: asyncio.Task[Any] | None = None
        #: gap_connect is waiting for the controller's answer to its request.
        self._initiating = False
        #: Links whose termination the controller accepted (until their disconnection).
        self._terminating: set[int] = set()
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)
        stack.on_transport_lost.append(self._on_transport_lost)

    # --- lifecycle ------------------------------------------------------------------
    def _attach(self, device: Device) -> None:
        self._terminating = set()
        self.advertising = self.scanning = False
        self.adv_data = self.resp_data = b""
        device.host.on("advertising_report", guarded(self._on_report))
        device.on("connection", guarded(self._on_connection))
        device.on("advertising_set_termination", guarded(self._on_advertising_ended))

    def _detach(self) -> None:
        self.advertising = self.scanning = False
        if self._scan_timer is not None:
            self._scan_timer.cancel()
            self._scan_timer = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None

    def _on_transport_lost(self) -> None:
        """A scan ends with the transport, with its SCAN_DONE (a program may wait for it)."""
        self.advertising = False
        if self.scanning:
            self._detach()
            self.ring.post(IRQ_SCAN_DONE)

    # --- settings (caller's thread) ---------------------------------------------------
    def set_name(self, name: bytes) -> None:
        """``config(gap_name=)``: served at once while active and kept for the next
        activation; set while off, it is readable until the radio starts, then lost, as on
        a board (NimBLE sets up its GAP service at activation)."""
        if self.stack.active:
            runtime().call(self.stack.set_gap_name, name, what=f"{self.stack.name}: set gap_name")
            self.kept_name = name
        else:
            self.stack.gap_name = name

    def set_address_mode(self, mode: int) -> None:
        """``config(addr_mode=)``; values other than 0..3 are ignored, as on MicroPython."""
        self.stack.require()
        runtime().call(self._set_address_mode, mode, what=f"{self.stack.name}: set addr_mode")

    async def _set_address_mode(self, mode: int) -> None:
        await self.stack.own_address.set_mode(self.stack.require(), mode)

    # --- broadcaster -----------------------------------------------------------------
    async def advertise(
        self, interval_us: int, adv: bytes | None, resp: bytes | None, connectable: bool
    ) -> None:
        from bumble.device import AdvertisingType

        device = self.stack.require()
        units = _c_units(interval_us, 625)
        if units == 0:
            units = _DEFAULT_ADV_UNITS
        # In mp_bluetooth_gap_advertise_start's order: stop, set each payload, then the
        # parameters; whatever fails leaves advertising stopped and the payloads set so far.
        if self.advertising:
            await device.stop_advertising()
            self.advertising = False
        if adv is not None:
            self.adv_data = _legacy_payload(adv)
        if resp is not None:
            self.resp_data = _legacy_payload(resp)
        if units > _LEGACY_ADV_UNITS_MAX:
            # NimBLE sends LE Set Advertising Parameters, whose controller refuses an
            # interval above 10.24 s; Bumble sends the extended command, which takes up to
            # 0xFFFFFF units. So the refusal a board shows is made here (after stopping, as
            # there). Shorter than 20 ms the controller refuses itself, as both commands do.
            raise hci_oserror(HCI_INVALID_PARAMETERS, "advertising interval longer than 10.24 s")
        interval_ms = units * 0.625
        await controller_answer(
            device.start_advertising(
                advertising_type=(
                    AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
                    if connectable
                    else AdvertisingType.UNDIRECTED_SCANNABLE
                ),
                own_address_type=self.stack.own_address.hci_type(),
                auto_restart=False,
                advertising_data=self.adv_data,
                scan_response_data=self.resp_data,
                advertising_interval_min=interval_ms,
                advertising_interval_max=interval_ms,
            )
        )
        self.advertising = True

    async def stop_advertising(self) -> None:
        device = self.stack.device
        if device is not None and self.stack.active and self.advertising:
            self.advertising = False
            await device.stop_advertising()

    def _on_advertising_ended(self, *args: Any) -> None:
        # Legacy advertising stops when a central connects and is never restarted.
        self.advertising = False

    # --- observer --------------------------------------------------------------------
    async def scan(self, duration_ms: int, interval_us: int, window_us: int, active: bool) -> None:
        device = self.stack.require()
        if self.scanning:
            raise mp_oserror(EALREADY, "a scan is already running")
        if self.connecting is not None:
            raise mp_oserror(EBUSY, "a connection is being made")
        interval = min(max(_c_div(interval_us, 625), _SCAN_UNITS_MIN), _SCAN_UNITS_MAX)
        window = min(max(_c_div(window_us, 625), _SCAN_UNITS_MIN), _SCAN_UNITS_MAX)
        if window > interval:
            raise mp_oserror(EINVAL, "scan window longer than the interval")
        await device.start_scanning(
            active=active,
            scan_interval=interval * 0.625,
            scan_window=window * 0.625,
            own_address_type=self.stack.own_address.hci_type(),
            filter_duplicates=False,
        )
        self.scanning = True
        if duration_ms != 0:
            # A negative duration (2**31 in NimBLE's int32_t too) has expired already:
            # SCAN_DONE follows at once, as on a board.
            loop = asyncio.get_running_loop()
            self._scan_timer = loop.call_later(max(duration_ms, 0) / 1000, self._scan_expired)

    def _scan_expired(self) -> None:
        self._scan_timer = None
        if self.scanning:
            self.stack.spawn(self._finish_scan(post_done=True), "scan-done")

    def stop_scan(self) -> None:
        """``gap_scan(None)`` (caller's thread): stop a running scan, withdraw its results
        still queued and deliver SCAN_DONE before returning, nested when called from a
        handler (SPEC 1.7), so SCAN_DONE stays last as on NimBLE."""
        if runtime().call(self._stop_scan, what=f"{self.stack.name}: stop scan"):
            self.ring.discard(IRQ_SCAN_RESULT)
            self.ring.deliver_now(IRQ_SCAN_DONE)

    async def _stop_scan(self) -> bool:
        self.stack.require()
        if not self.scanning:
            return False
        await self._finish_scan(post_done=False)
        return True

    async def _finish_scan(self, post_done: bool) -> None:
        if self._scan_timer is not None:
            self._scan_timer.cancel()
            self._scan_timer = None
        self.scanning = False
        device = self.stack.device
        if device is not None and self.stack.active:
            await device.stop_scanning()
        if post_done:
            self.ring.post(IRQ_SCAN_DONE)

    def _on_report(self, report: Any) -> None:
        if not self.scanning:
            return
        from bumble.hci import HCI_LE_Extended_Advertising_Report_Event

        extended = isinstance(report, HCI_LE_Extended_Advertising_Report_Event.Report)
        self.ring.post(
            IRQ_SCAN_RESULT,
            *address_to_mp(report.address),
            adv_type(report.event_type, extended),
            report.rssi,
            report.data,
        )

    # --- central ---------------------------------------------------------------------
    def connect(self, addr_type: int, addr: bytes, scan_ms: int, min_us: int, max_us: int) -> None:
        """``gap_connect`` (caller's thread): a running scan stops first, with its SCAN_DONE,
        as MicroPython's binding stops it before it connects."""
        if self.scanning:
            self.stop_scan()
        runtime().call(
            self._initiate,
            addr_type,
            addr,
            scan_ms,
            min_us,
            max_us,
            what=f"{self.stack.name}: connect",
        )

    async def _initiate(
        self, addr_type: int, addr: bytes, scan_ms: int, min_us: int, max_us: int
    ) -> None:
        from bumble.device import ConnectionParametersPreferences
        from bumble.hci import Phy

        device = self.stack.require()
        if addr_type > _MAX_ADDR_TYPE:
            raise mp_oserror(EINVAL, "address type must be 0..3")
        if self.connecting is not None:
            raise mp_oserror(EALREADY, "a connection is already being made")
        # NimBLE checks none of these (its LE Create Connection carries whatever the uint16_t
        # fields hold): the controller refuses what it cannot take, e.g. an interval outside
        # 7.5 ms .. 4 s, or one whose two intervals do not fit in the supervision timeout.
        min_units = _c_units(min_us, 1250) if min_us else DEFAULT_MIN_CONN_US // 1250
        max_units = _c_units(max_us, 1250) if max_us else DEFAULT_MAX_CONN_US // 1250
        peer = mp_to_address(addr_type, addr)
        for connection in device.connections.values():
            if connection.peer_address == peer:
                raise mp_oserror(EIO, "already connected to that peer")
        if self.scanning:
            await self._finish_scan(post_done=False)
        preferences = ConnectionParametersPreferences(
            connection_interval_min=min_units * 1.25,
            connection_interval_max=max_units * 1.25,
            max_latency=0,
            supervision_timeout=_SUPERVISION_TIMEOUT_MS,
            min_ce_length=0,
            max_ce_length=0,
        )
        if scan_ms < 0:
            # NimBLE's timer has expired already: the attempt ends at once, as a timeout.
            self.ring.post(IRQ_PERIPHERAL_DISCONNECT, CONN_HANDLE_NONE, 255, _NO_ADDR)
            return
        task = self.stack.spawn(
            self._connect(device, peer, {Phy.LE_1M: preferences}, scan_ms / 1000), "connect"
        )
        self.connecting = task
        # Return once the controller has accepted the request, as NimBLE's gap_connect
        # does: a gap_connect(None) that follows must find something to cancel.
        self._initiating = True
        try:
            deadline = asyncio.get_running_loop().time() + _INITIATE_TIMEOUT
            while not (device.is_le_connecting or task.done()):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.001)
        finally:
            self._initiating = False
        if task.done() and not task.cancelled() and (status := task.result()) is not None:
            raise hci_oserror(status, "the controller refused the connection request")

    async def _connect(
        self, device: Device, peer: Any, preferences: Any, timeout: float
    ) -> int | None:
        """The connection attempt; returns the controller's status if it refused the
        request while :meth:`connect` waits for its answer (NimBLE's ``ble_gap_connect``
        returns that refusal, and no event follows)."""
        from bumble.hci import HCI_Error

        try:
            await device.connect(
                peer,
                connection_parameters_preferences=preferences,
                own_address_type=self.stack.own_address.hci_type(),
                timeout=timeout if timeout > 0 else None,
            )
        except asyncio.CancelledError:
            self.stack.post(IRQ_PERIPHERAL_DISCONNECT, CONN_HANDLE_NONE, 255, _NO_ADDR)
        except HCI_Error as exc:
            logger.debug("%s: connect to %s refused: %r", self.stack.name, peer, exc)
            if self._initiating:
                return hci_status(exc)
            self.stack.post(IRQ_PERIPHERAL_DISCONNECT, CONN_HANDLE_NONE, 255, _NO_ADDR)
        except Exception as exc:  # timeout, cancel or refusal: all the same IRQ
            logger.debug("%s: connect to %s ended: %r", self.stack.name, peer, exc)
            self.stack.post(IRQ_PERIPHERAL_DISCONNECT, CONN_HANDLE_NONE, 255, _NO_ADDR)
        finally:
            self.connecting = None
        return None

    async def cancel_connect(self) -> None:
        device = self.stack.require()
        if self.connecting is None:
            raise mp_oserror(EALREADY, "no connection is being made")
        await device.cancel_connection()

    async def disconnect(self, conn_handle: int) -> bool:
        """Ask the controller to end the link; True once it accepted (Command Status), as
        NimBLE's ``ble_gap_terminate`` returns, so the program goes on before the
        DISCONNECT event. False for a handle that is not connected; a link already being
        terminated raises ``OSError(EALREADY)`` as on NimBLE."""
        from bumble.hci import HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR, HCI_Disconnect_Command

        device = self.stack.require()
        connection = device.lookup_connection(conn_handle)
        if connection is None:
            return False
        if conn_handle in self._terminating:
            raise mp_oserror(EALREADY, "the link is already being terminated")
        self._terminating.add(conn_handle)
        try:
            await device.send_async_command(
                HCI_Disconnect_Command(
                    connection_handle=conn_handle,
                    reason=HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR,
                )
            )
        except Exception as exc:
            self._terminating.discard(conn_handle)
            if device.lookup_connection(conn_handle) is None:
                return False  # it went down meanwhile: not connected
            logger.debug("%s: disconnect refused: %r", self.stack.name, exc)
            raise mp_oserror(EIO, f"the controller refused to disconnect: {exc}") from None
        return True

    # --- connection events --------------------------------------------------------------
    def _on_connection(self, connection: Connection) -> None:
        from bumble.hci import Role

        central = connection.role == Role.CENTRAL
        addr_type, addr = address_to_mp(connection.peer_address)
        exchanged = threading.Event()
        self.ring.post(
            IRQ_PERIPHERAL_CONNECT if central else IRQ_CENTRAL_CONNECT,
            connection.handle,
            addr_type,
            addr,
            after=functools.partial(_hold_until_acknowledged, exchanged, connection),
        )
        self.stack.spawn(self._read_remote_features(connection, exchanged), "remote-features")
        event = IRQ_PERIPHERAL_DISCONNECT if central else IRQ_CENTRAL_DISCONNECT
        connection.on(
            "connection_parameters_update",
            guarded(functools.partial(self._on_parameters, connection, 0)),
        )
        connection.on(
            "connection_parameters_update_failure",
            guarded(functools.partial(self._on_parameters, connection, 1)),
        )
        connection.on(
            "disconnection", guarded(functools.partial(self._on_disconnection, connection, event))
        )

    async def _read_remote_features(
        self, connection: Connection, exchanged: threading.Event
    ) -> None:
        """NimBLE's host asks for the peer's LE features on every new link, right after the
        connect event's callback, and waits for the controller's Command Status before it
        goes on (``ble_gap_rx_conn_complete`` -> ``ble_gap_rd_rem_sup_feat_tx``, a blocking
        ``ble_hs_hci_cmd_tx``). So does this host; ``exchanged`` tells the IRQ context."""
        from bumble.hci import HCI_LE_Read_Remote_Features_Command

        device = self.stack.require()
        try:
            await device.send_async_command(
                HCI_LE_Read_Remote_Features_Command(connection_handle=connection.handle),
                check_status=False,
            )
        except Exception as exc:  # a controller without it, a link gone: NimBLE goes on
            logger.debug("%s: LE Read Remote Features: %r", self.stack.name, exc)
        finally:
            exchanged.set()

    def _on_parameters(self, connection: Connection, status: int, *error: Any) -> None:
        """_IRQ_CONNECTION_UPDATE in raw HCI units (1.25 ms, 10 ms); NimBLE's status is 0/1."""
        parameters = connection.parameters
        self.ring.post(
            IRQ_CONNECTION_UPDATE,
            connection.handle,
            round(parameters.connection_interval / 1.25),
            parameters.peripheral_latency,
            round(parameters.supervision_timeout / 10),
            status,
        )

    def _on_disconnection(self, connection: Connection, event: int, reason: int) -> None:
        """The link's DISCONNECT comes after the outcome of its procedures, indications
        and L2CAP connects (each ends with status 7 when the link goes), as NimBLE fails
        them before it calls the application's disconnect callback."""
        self._terminating.discard(connection.handle)
        unfinished = self.stack.link_work(connection.handle)
        if not self.stack.reporting:
            return  # active(False) tears links down silently, as NimBLE does
        addr_type, addr = address_to_mp(connection.peer_address)
        values = (event, connection.handle, addr_type, addr)
        if not unfinished:
            self.ring.post(*values)
            return
        self.stack.spawn(self._post_after(unfinished, values), "disconnect-event")

    async def _post_after(
        self, unfinished: list[asyncio.Task[Any]], values: tuple[Any, ...]
    ) -> None:
        await asyncio.wait(unfinished, timeout=_LINK_WORK_TIMEOUT)
        self.stack.post(*values)


__all__ = ["Gap"]


def _hold_until_acknowledged(exchanged: threading.Event, connection: Connection) -> None:
    """After a connect event's handler: the IRQ context (and with it the program, whose
    next statement on a board runs only once the handler's task has finished) waits until
    the controller acknowledged the host's LE Read Remote Features, as NimBLE's connect
    handling does inside the task that ran the handler. A peer's request already received
    meanwhile (an L2CAP connection, a read) is then answered before the program's next
    call. Not on the loop thread (an event with no handler), which the wait would block.
    Then the program has been told of the link (``_l2cap_early``)."""
    if not runtime().in_loop_thread():
        exchanged.wait(_FEATURES_ACK_S)
    mark_told(connection)
