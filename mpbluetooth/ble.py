"""``bluetooth.BLE``: MicroPython's synchronous API, checked here and run on Bumble.

This module only validates arguments the way MicroPython does and delegates: each call is
marshalled onto the runtime's loop thread, where the concern modules talk to Bumble.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from . import _transport, boards
from ._convert import UNSET, advertise_args, buffer_bytes, int32, mp_args, to_int, uint8, uint16
from ._errors import mp_oserror
from ._events import MAX_RXBUF, MIN_RXBUF, EventRing, IrqStats
from ._gap import DEFAULT_MAX_CONN_US, DEFAULT_MIN_CONN_US, Gap
from ._gattc import GattClient
from ._gatts import GattServer
from ._gatts_defs import MAX_SERVICES, parse_service, sized
from ._l2cap import L2cap, clamp_mtu
from ._runtime import runtime
from ._security import Security
from ._stack import Stack
from ._status import HS_EAPP
from .constants import (
    CONN_HANDLE_NONE,
    E2BIG,
    EINVAL,
    ENODEV,
    ENOENT,
    ENOMEM,
    ENOTCONN,
    IRQ_GATTS_READ_REQUEST,
)
from .uuid import UUID

logger = logging.getLogger(__name__)

_UNSET = UNSET
_MAX_GAP_NAME = 31


def _not_yet(feature: str, issue: str) -> NotImplementedError:
    return NotImplementedError(f"{feature} is not implemented yet in mpbluetooth ({issue})")


_PASSKEY_ACTIONS = (2, 3, 4)


class BLE:
    """The Bluetooth Low Energy radio (MicroPython's ``bluetooth.BLE``).

    ``BLE()`` returns the process singleton. Further independent instances (desktop only)
    come from :mod:`mpbluetooth.sim`.
    """

    _singleton: BLE | None = None
    _singleton_lock = threading.Lock()
    _board: boards.Board
    _stack: Stack
    _ring: EventRing
    _gap: Gap
    _l2cap: L2cap
    _security: Security
    _gatts: GattServer
    _gattc: GattClient

    def __new__(cls, *args: Any, **kwargs: Any) -> BLE:
        # MicroPython accepts and ignores any arguments.
        if cls._singleton is None:
            with cls._singleton_lock:
                if cls._singleton is None:
                    cls._singleton = cls._new_instance(name="ble")
        return cls._singleton

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: the singleton was set up by ``__new__``."""

    @classmethod
    def _new_instance(
        cls, name: str, transport: str | None = None, board: str | boards.Board | None = None
    ) -> BLE:
        profile = boards.get(board)
        self = object.__new__(boards.without_absent_methods(cls, profile))
        rt = runtime()
        self._board = profile
        self._ring = EventRing(name, lambda: rt.loop)
        self._stack = Stack(name, self._ring, transport, profile)
        self._gap = Gap(self._stack)
        self._l2cap = L2cap(self._stack)
        self._security = Security(self._stack)
        self._gatts = GattServer(self._stack, self._security)
        self._gattc = GattClient(self._stack)
        return self

    def __repr__(self) -> str:
        return f"<BLE {self._stack.name} {'active' if self._stack.active else 'inactive'}>"

    def _call(self, fn: Callable[..., Any], *args: Any, what: str, drain: bool = False) -> Any:
        """Run ``fn(*args)`` on the loop thread (see ``Runtime.call``)."""
        return runtime().call(fn, *args, what=f"{self._stack.name}: {what}", drain=drain)

    def close(self) -> None:
        """Desktop only: deactivate and stop delivering events, for an instance made by
        :func:`mpbluetooth.open` (or ``sim.Link.instance``) that is being discarded. MicroPython
        has no such method: a board's radio lives as long as the program."""
        try:
            self.active(False)
            self._call(self._stack.kept.release, what="release the controller")
        finally:
            self._ring.close()

    def __enter__(self) -> BLE:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- general -----------------------------------------------------------------------
    @mp_args(1, 2)
    def active(self, active: Any = _UNSET, /) -> bool:
        """Start (``True``; restarts a running stack, as NimBLE) or stop the radio.

        Returns the current state. Starting opens the transport (see
        ``mpbluetooth.set_transport``); failures raise ``OSError`` within a bounded time.
        """
        if active is not _UNSET:
            if active:
                # A gap_name set while off does not survive activation (see Gap.set_name).
                self._stack.gap_name = self._gap.kept_name
                self._call(self._stack.power_on, what="power on", drain=True)
            elif self._stack.active or self._stack.device is not None:
                self._call(self._stack.power_off, what="power off", drain=True)
        return self._stack.active

    @mp_args(2, 2)
    def irq(self, handler: Callable[[int, tuple[Any, ...]], Any] | None, /) -> None:
        """Install the event handler, called as ``handler(event, data)`` on the IRQ thread."""
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._ring.handler = handler

    def config(self, *args: Any, **kwargs: Any) -> Any:
        """Query one value (``config('mac')``) or set any number (``config(mtu=247)``)."""
        if not kwargs:
            if len(args) != 1:
                raise TypeError("must query one param")
            return self._config_get(args[0])
        if args:
            raise TypeError("can't specify pos and kw args")
        for key, value in kwargs.items():
            self._config_set(key, value)
        return None

    def _config_get(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError(f"can't convert '{type(name).__name__}' object to str implicitly")
        if name not in self._board.config_keys:
            raise ValueError("unknown config param")
        stack = self._stack
        if name == "mac":
            return stack.address()
        if name == "gap_name":
            return stack.gap_name
        if name == "mtu":
            stack.require()
            return self._gatts.mtu
        if name == "rxbuf":
            return self._ring.capacity
        raise ValueError("unknown config param")

    def _config_set(self, key: str, value: Any) -> None:
        entry = _CONFIG_SET.get(key)
        if entry is None or key not in self._board.config_keys:
            raise ValueError("unknown config param")
        convert, owner, setter = entry
        concern = getattr(self, owner)
        if setter is None:
            setattr(concern, key, convert(value))
        else:
            getattr(concern, setter)(convert(value))

    # --- GAP ---------------------------------------------------------------------------
    def gap_advertise(self, *args: Any, **kwargs: Any) -> None:
        """``gap_advertise(interval_us=500000, adv_data=None, *, resp_data=None,
        connectable=True)``: advertise every ``interval_us`` (in 625 µs units; 0 is
        NimBLE's default); ``None`` stops.

        ``None`` payloads keep the previous call's, ``b''`` clears. Legacy payloads are at
        most 31 bytes (``OSError(-18)``, NimBLE's answer; advertising has stopped, as on a
        board). Non-connectable advertising is ADV_SCAN_IND.
        An interval outside 20 ms .. 10.24 s is refused by the controller (Invalid HCI
        Command Parameters), which NimBLE reports as ``OSError(-530)``.
        """
        interval_us, adv_data, resp_data, connectable = advertise_args(args, kwargs)
        if interval_us is None:
            if self._stack.active:
                self._call(self._gap.stop_advertising, what="stop advertising")
            return None
        interval = int32(interval_us)
        adv = None if adv_data is None else buffer_bytes(adv_data)
        resp = None if resp_data is None else buffer_bytes(resp_data)
        self._stack.require()
        self._call(self._gap.advertise, interval, adv, resp, bool(connectable), what="advertise")
        return None

    @mp_args(1, 5)
    def gap_scan(
        self,
        duration_ms: Any = 0,
        interval_us: Any = 1280000,
        window_us: Any = 11250,
        active: Any = False,
        /,
    ) -> None:
        """Scan for ``duration_ms`` (0: until stopped); ``None`` stops, delivering
        ``_IRQ_SCAN_DONE`` before it returns (nested when called from a handler)."""
        if duration_ms is None:
            self._stack.require()
            self._gap.stop_scan()
            return None
        # NimBLE takes int32_t: 2**31 is negative, and a negative duration ends at once.
        duration = int32(duration_ms)
        interval = int32(interval_us)
        window = int32(window_us)
        self._stack.require()
        self._call(self._gap.scan, duration, interval, window, bool(active), what="scan")
        return None

    @mp_args(2, 6)
    def gap_connect(
        self,
        addr_type: Any,
        addr: Any = _UNSET,
        scan_duration_ms: Any = 2000,
        min_conn_interval_us: Any = None,
        max_conn_interval_us: Any = None,
        /,
    ) -> None:
        """Connect to a peripheral as central; ``gap_connect(None)`` cancels a pending attempt.

        The outcome is ``_IRQ_PERIPHERAL_CONNECT``, or ``_IRQ_PERIPHERAL_DISCONNECT`` with
        handle 65535 when the attempt times out after ``scan_duration_ms`` or is cancelled.
        Parameters the controller refuses (an interval outside 7.5 ms .. 4 s, a minimum
        above the maximum, a maximum of 1.28 s or more, which two intervals of the 2.56 s
        supervision timeout cannot hold) raise ``OSError(-530)``, as NimBLE reports it.
        """
        if addr is _UNSET:
            if addr_type is not None:
                raise TypeError("invalid addr")
            self._call(self._gap.cancel_connect, what="cancel connect")
            return None
        kind = to_int(addr_type) & 0xFF
        address = buffer_bytes(addr)
        if len(address) != 6:
            raise ValueError("invalid addr")
        scan_ms = 2000 if scan_duration_ms is None else int32(scan_duration_ms)
        min_us = (
            DEFAULT_MIN_CONN_US if min_conn_interval_us is None else int32(min_conn_interval_us)
        )
        max_us = (
            DEFAULT_MAX_CONN_US if max_conn_interval_us is None else int32(max_conn_interval_us)
        )
        self._stack.require()
        self._gap.connect(kind, address, scan_ms, min_us, max_us)
        return None

    @mp_args(2, 2)
    def gap_disconnect(self, conn_handle: Any, /) -> bool:
        """Start disconnecting; ``False`` when the handle is not connected."""
        handle = uint16(conn_handle)
        self._stack.require()
        return bool(self._call(self._gap.disconnect, handle, what="disconnect"))

    @mp_args(2, 2)
    def gap_pair(self, conn_handle: Any, /) -> None:
        """Secure the link: as central, encrypt with the bond's keys or pair; as
        peripheral, send a Security Request. The outcome is ``_IRQ_ENCRYPTION_UPDATE``."""
        handle = uint16(conn_handle)
        if not self._stack.active:
            raise mp_oserror(ENOTCONN, "gap_pair: the radio is off")  # NimBLE finds no link
        self._call(self._security.pair, handle, what="gap_pair")

    @mp_args(4, 4)
    def gap_passkey(self, conn_handle: Any, action: Any, passkey: Any, /) -> None:
        """Answer ``_IRQ_PASSKEY_ACTION``: the number typed (2), the number to display (3),
        or for a numeric comparison (4) non-zero to accept."""
        handle, action_value, passkey_value = uint16(conn_handle), uint8(action), to_int(passkey)
        if action_value not in _PASSKEY_ACTIONS:
            raise mp_oserror(EINVAL, "action must be 2, 3 or 4")
        if not self._stack.active:
            raise mp_oserror(ENOENT, "gap_passkey: the radio is off")  # no pairing waiting
        self._call(self._security.passkey, handle, action_value, passkey_value, what="gap_passkey")

    # --- GATT server -------------------------------------------------------------------
    @mp_args(2, 2)
    def gatts_register_services(self, services_definition: Any, /) -> tuple[tuple[int, ...], ...]:
        """Replace the local services; return, per service, its characteristics' value
        handles each followed by its user descriptors' handles (CCCDs excluded).

        Every value starts empty with a 20-byte capacity. Refused with ``OSError(EBUSY)``
        while advertising, scanning, connecting or connected, as NimBLE refuses. Handles
        are the board profile's (``mpbluetooth.boards``): on NimBLE's unix build the first
        value handle is 21, and each registration numbers on from the last.
        """
        services = sized(services_definition)
        if len(services) > MAX_SERVICES:
            raise mp_oserror(E2BIG, f"at most {MAX_SERVICES} services")
        self._stack.require()
        # As on MicroPython, the old database is gone before the definition is parsed.
        self._call(self._gatts.reset, what="reset the GATT database")
        parsed = [parse_service(service) for service in services]
        handles: tuple[tuple[int, ...], ...] = self._call(
            self._gatts.register, parsed, what="register services"
        )
        return handles

    @mp_args(2, 2)
    def gatts_read(self, value_handle: Any, /) -> bytes:
        """The stored value (``b''`` for an unknown handle or an inactive radio; never
        raises). In append mode, reading empties it."""
        return self._gatts.read(uint16(value_handle))

    @mp_args(3, 4)
    def gatts_write(self, value_handle: Any, data: Any, send_update: Any = False, /) -> int:
        """Store a value (growing its capacity to fit); return ``len(data)``.

        ``send_update`` notifies or indicates each link per its CCCD (notify wins).
        """
        handle = uint16(value_handle)
        value = buffer_bytes(data)
        self._gatts.write(handle, value)
        if send_update:
            self._call(self._gatts.send_update, handle, what="send update")
        return len(value)

    @mp_args(3, 4)
    def gatts_notify(self, conn_handle: Any, value_handle: Any, data: Any = None, /) -> None:
        """Notify regardless of subscription: ``data``, or the stored value when ``None``,
        cut to MTU - 3. ``OSError(ENOMEM)`` while the ACL buffers are full."""
        conn, handle = uint16(conn_handle), uint16(value_handle)
        payload = None if data is None else buffer_bytes(data)
        _no_handle_zero(self._stack, handle, payload)
        if payload is None:
            self._stored_value_read(handle)
        self._gatts.notify(conn, handle, payload)

    @mp_args(3, 4)
    def gatts_indicate(self, conn_handle: Any, value_handle: Any, data: Any = None, /) -> None:
        """Indicate regardless of subscription; ``_IRQ_GATTS_INDICATE_DONE`` follows with
        status 0 on confirmation (on links where we are the peripheral, as NimBLE)."""
        conn, handle = uint16(conn_handle), uint16(value_handle)
        payload = None if data is None else buffer_bytes(data)
        _no_handle_zero(self._stack, handle, payload)
        if payload is None:
            self._stored_value_read(handle)
        self._call(self._gatts.indicate, conn, handle, payload, what="indicate")

    def _stored_value_read(self, handle: int) -> None:
        """NimBLE reads the stored value through the attribute access callback, with conn
        handle 65535, so the handler gets ``_IRQ_GATTS_READ_REQUEST(65535, h)`` (nested,
        before the call returns) and may refresh the value; a non-zero answer aborts the
        send with NimBLE's ``BLE_HS_EAPP``, ``OSError(-9)`` (SPEC 1.14)."""
        if not self._gatts.is_local_value(handle):
            return
        answer = self._ring.deliver_now(IRQ_GATTS_READ_REQUEST, CONN_HANDLE_NONE, handle)
        if isinstance(answer, int) and answer & 0xFF:
            raise mp_oserror(-HS_EAPP, "the IRQ handler refused the read of the value")

    @mp_args(3, 4)
    def gatts_set_buffer(self, value_handle: Any, len: Any, append: Any = False, /) -> None:
        """Set a value's capacity to ``len`` bytes and clear it; with ``append``, remote
        writes accumulate until it is full (extra bytes are dropped)."""
        self._gatts.set_buffer(uint16(value_handle), to_int(len), bool(append))

    # --- GATT client -------------------------------------------------------------------
    @mp_args(2, 3)
    def gattc_discover_services(self, conn_handle: Any, uuid: Any = None, /) -> None:
        """``_IRQ_GATTC_SERVICE_RESULT`` per primary service (only ``uuid``'s if given),
        then ``_IRQ_GATTC_SERVICE_DONE``."""
        conn = uint16(conn_handle)
        if uuid is not None and not isinstance(uuid, UUID):
            raise TypeError("UUID")
        self._call(self._gattc.discover_services, conn, uuid, what="discover services")

    @mp_args(4, 5)
    def gattc_discover_characteristics(
        self, conn_handle: Any, start_handle: Any, end_handle: Any, uuid: Any = None, /
    ) -> None:
        """``_IRQ_GATTC_CHARACTERISTIC_RESULT`` per characteristic in the range (only
        ``uuid``'s if given), then ``_IRQ_GATTC_CHARACTERISTIC_DONE``."""
        conn, start, end = uint16(conn_handle), uint16(start_handle), uint16(end_handle)
        if uuid is not None and not isinstance(uuid, UUID):
            raise TypeError("UUID")
        self._call(
            self._gattc.discover_characteristics,
            conn,
            start,
            end,
            uuid,
            what="discover characteristics",
        )

    @mp_args(4, 4)
    def gattc_discover_descriptors(
        self, conn_handle: Any, start_handle: Any, end_handle: Any, /
    ) -> None:
        """``_IRQ_GATTC_DESCRIPTOR_RESULT`` per attribute in ``start + 1 .. end``, then
        ``_IRQ_GATTC_DESCRIPTOR_DONE``."""
        conn, start, end = uint16(conn_handle), uint16(start_handle), uint16(end_handle)
        self._call(self._gattc.discover_descriptors, conn, start, end, what="discover descriptors")

    @mp_args(3, 3)
    def gattc_read(self, conn_handle: Any, value_handle: Any, /) -> None:
        """One read (no long read): ``_IRQ_GATTC_READ_RESULT`` then ``_IRQ_GATTC_READ_DONE``."""
        conn, handle = uint16(conn_handle), uint16(value_handle)
        self._gattc.read(conn, handle)

    @mp_args(4, 5)
    def gattc_write(self, conn_handle: Any, value_handle: Any, data: Any, mode: Any = 0, /) -> None:
        """Write without response (mode 0) or with it (mode 1, ``_IRQ_GATTC_WRITE_DONE``);
        data beyond MTU - 3 is dropped."""
        conn, handle = uint16(conn_handle), uint16(value_handle)
        payload = buffer_bytes(data)
        self._gattc.write(conn, handle, payload, to_int(mode))

    @mp_args(2, 2)
    def gattc_exchange_mtu(self, conn_handle: Any, /) -> None:
        """Exchange ``config('mtu')`` once per link; ``_IRQ_MTU_EXCHANGED`` on both sides."""
        conn = uint16(conn_handle)
        if not self._stack.active:
            # NimBLE's binding does not check: its procedure pool is not set up (ENOMEM).
            raise mp_oserror(ENOMEM, "gattc_exchange_mtu: the radio is off")
        self._call(self._gattc.exchange_mtu, conn, what="exchange MTU")

    # --- L2CAP -------------------------------------------------------------------------
    @mp_args(3, 3)
    def l2cap_listen(self, psm: Any, mtu: Any, /) -> None:
        """Accept channels on ``psm`` (``_IRQ_L2CAP_ACCEPT`` decides each), MTU clamped to
        32..65535. Listening lasts until the stack stops; a PSM already listened on raises
        ``OSError(EALREADY)``."""
        psm_value, mtu_value = uint16(psm), clamp_mtu(to_int(mtu))
        self._stack.require()
        # On the caller's thread, as NimBLE's ble_l2cap_create_server registers in the
        # call: a request the loop is about to handle must find the PSM listened on.
        self._l2cap.listen(psm_value, mtu_value)

    @mp_args(4, 4)
    def l2cap_connect(self, conn_handle: Any, psm: Any, mtu: Any, /) -> None:
        """Open a channel; the outcome is ``_IRQ_L2CAP_CONNECT`` or ``_IRQ_L2CAP_DISCONNECT``
        with a non-zero status."""
        handle, psm_value = uint16(conn_handle), uint16(psm)
        mtu_value = clamp_mtu(to_int(mtu))  # MicroPython clamps to 32..65535 first
        self._stack.require()
        self._call(self._l2cap.connect, handle, psm_value, mtu_value, what="l2cap_connect")

    @mp_args(3, 3)
    def l2cap_disconnect(self, conn_handle: Any, cid: Any, /) -> None:
        """Close a channel; both ends get ``_IRQ_L2CAP_DISCONNECT`` with status 0."""
        handle, cid_value = uint16(conn_handle), uint16(cid)
        self._stack.require()
        self._call(self._l2cap.disconnect, handle, cid_value, what="l2cap_disconnect")

    @mp_args(4, 4)
    def l2cap_send(self, conn_handle: Any, cid: Any, buf: Any, /) -> bool:
        """Send ``buf`` as one SDU. ``False``: it waits for credits (it will be sent); wait
        for ``_IRQ_L2CAP_SEND_READY`` before the next send (else ``OSError(EBUSY)``)."""
        handle, cid_value = uint16(conn_handle), uint16(cid)
        data = buffer_bytes(buf)
        self._stack.require()
        return self._l2cap.send(handle, cid_value, data)

    @mp_args(4, 4)
    def l2cap_recvinto(self, conn_handle: Any, cid: Any, buf: Any, /) -> int:
        """Copy received bytes into ``buf`` and return the count (0: nothing pending);
        ``buf=None`` returns the count pending. The peer gets new credits only once
        everything pending has been read."""
        handle, cid_value = uint16(conn_handle), uint16(cid)
        target: memoryview | None = None
        if buf is not None:
            try:
                target = memoryview(buf).cast("B")
            except TypeError:
                raise TypeError("object with buffer protocol required") from None
            if target.readonly:
                raise TypeError("object with buffer protocol required")
        self._stack.require()
        if target is None:
            return int(self._l2cap.recv(handle, cid_value, None))
        got = self._l2cap.recv(handle, cid_value, len(target))
        assert isinstance(got, bytes)
        target[: len(got)] = got
        return len(got)

    # --- HCI ---------------------------------------------------------------------------
    @mp_args(5, 5)
    def hci_cmd(self, ogf: Any, ocf: Any, request: Any, response: Any, /) -> int:
        """Raw HCI command (MicroPython's optional, undocumented ``hci_cmd``)."""
        raise _not_yet("hci_cmd", "raw HCI commands are not planned yet")


def _gap_name_arg(value: Any) -> bytes:
    name = buffer_bytes(value)
    if len(name) > _MAX_GAP_NAME:
        raise mp_oserror(EINVAL, f"gap_name longer than {_MAX_GAP_NAME} bytes")
    # NimBLE keeps the name as a C string: it ends at the first NUL.
    return name.split(b"\0", 1)[0]


def _rxbuf_arg(value: Any) -> int:
    size = to_int(value)
    if not MIN_RXBUF <= size <= MAX_RXBUF:
        raise ValueError()
    return size


#: ``config(key=value)``: the argument's conversion (MicroPython's checks, in its order),
#: the concern that owns the setting (a ``BLE`` attribute) and its setter (None: the
#: concern's attribute of that name). ``addr_mode`` and ``io`` are ``uint8_t`` in NimBLE.
_CONFIG_SET: dict[str, tuple[Callable[[Any], Any], str, str | None]] = {
    "gap_name": (_gap_name_arg, "_gap", "set_name"),
    "rxbuf": (_rxbuf_arg, "_ring", "set_capacity"),
    "mtu": (uint16, "_gatts", "set_mtu"),
    "addr_mode": (uint8, "_gap", "set_address_mode"),
    "bond": (bool, "_security", None),
    "mitm": (bool, "_security", None),
    "le_secure": (bool, "_security", None),
    "io": (uint8, "_security", None),
}


def _no_handle_zero(stack: Stack, handle: int, payload: bytes | None) -> None:
    """NimBLE's ATT layer refuses handle 0 for a notification or indication with data
    (EINVAL, whatever the link); without data the value read fails first (EAPP, -9)."""
    stack.require()
    if handle == 0 and payload is not None:
        raise mp_oserror(EINVAL, "handle 0 is not an attribute")


def set_rxbuf(size: int, ble: BLE | None = None) -> None:
    """Desktop only: an instance's event ring capacity, 16..65535 bytes (default 16384),
    discarding queued events as a ring-buffer port's ``config(rxbuf=)``, which no board
    profile has (SPEC D1, D10). ``irq_stats(ble).capacity`` reads it back."""
    (ble or BLE())._ring.set_capacity(_rxbuf_arg(size))


def irq_stats(ble: BLE | None = None) -> IrqStats:
    """Desktop only: counters of an instance's IRQ ring (delivered, dropped, queued).

    ``dropped`` counts events lost to a full ring (``config('rxbuf')`` too small for the
    handler's pace), including scan results evicted to make room for other events.
    """
    return (ble or BLE())._ring.stats()


def set_l2cap_multichannel(enabled: bool, ble: BLE | None = None) -> None:
    """Desktop only: let an instance (default: ``BLE()``) have any number of L2CAP
    channels and listened PSMs. Off by default: a board has one channel slot, which
    ``l2cap_listen`` takes for good, and code tested here must not break there. Also
    ``MPBLUETOOTH_L2CAP_MULTICHANNEL=1`` for instances made afterwards."""
    (ble or BLE())._l2cap.multichannel = bool(enabled)


_opened = itertools.count(1)


def open(
    transport: str | None = None, name: str | None = None, board: str | boards.Board | None = None
) -> BLE:
    """Desktop only: a new, inactive ``BLE`` instance of its own, not the process singleton
    that ``BLE()`` returns (as on MicroPython).

    ``transport`` is a transport spec (``usb:0``, ``tcp-client:127.0.0.1:6402``, ...); None
    takes the configured one (``set_transport``, else ``MPBLUETOOTH_TRANSPORT``, else the
    in-process simulated link). ``name`` names the instance in logs and traces. ``board``
    is its profile (``unix``, ``esp32``, ``stm32``, ``rp2``; None: ``MPBLUETOOTH_BOARD``,
    else ``unix``; see ``mpbluetooth.boards``). Use it as a context manager, or call
    ``close()`` when done::

        with mpbluetooth.open("usb:0") as ble:
            ble.active(True)
    """
    return BLE._new_instance(
        name=name or f"ble{next(_opened)}", transport=transport, board=boards.get(board)
    )


def set_transport(spec: str | None) -> None:
    """Desktop only: see :func:`mpbluetooth._transport.set_transport`."""
    _transport.set_transport(spec)


__all__ = ["BLE", "irq_stats", "set_l2cap_multichannel", "set_rxbuf", "set_transport", "ENODEV"]
