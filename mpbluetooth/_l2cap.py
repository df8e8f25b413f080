"""L2CAP connection-oriented channels (LE credit-based), with MicroPython's flow control.

Bumble's LE CoC support is close but not what MicroPython programs see, so this module
takes over the parts that differ, per instance and only for channels we own:

* **Accept veto.** Bumble answers "connection successful" before its server handler runs.
  We replace the channel manager's handler for LE credit-based connection requests: a
  request on a PSM we listen on is held until the IRQ handler has answered
  ``_IRQ_L2CAP_ACCEPT``; a non-zero answer refuses it with the L2CAP result NimBLE would
  send, and the connecting side gets ``_IRQ_L2CAP_DISCONNECT`` with a non-zero status.
* **Receive credits.** Bumble hands the peer new credits as PDUs arrive. We replace each
  channel's PDU handler: received SDUs queue up for ``l2cap_recvinto`` and the peer gets
  its credits back only once the application has drained everything.
* **Send stall.** ``l2cap_send`` queues exactly one SDU (Bumble's ``write`` is a byte
  stream that merges writes); it returns ``False`` when the SDU could not go out for lack
  of credits, and ``_IRQ_L2CAP_SEND_READY`` follows once it has.
* **Stale CID.** Bumble forgets to drop a closed channel from its LE table, so the peer
  cannot open another channel on the same link; our close hook removes it.

* **One slot**, as MicroPython's NimBLE binding: one channel per device. ``l2cap_listen``
  takes the slot for good (until the radio stops), so a listening device cannot connect
  and cannot listen on a second PSM (EALREADY); ``l2cap_connect`` takes it from the call
  on, and gives it back when that channel closes or its connection fails. A call that
  fails (a stale link: ENOTCONN) keeps it, exactly as the binding does.

Desktop only: :func:`set_multichannel` (or ``MPBLUETOOTH_L2CAP_MULTICHANNEL=1``) lifts the
one-slot limit for an instance: any number of listened PSMs and channels per link. It is
off by default so that code tested here does not break on a board (SPEC D9).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _events
from ._errors import mp_oserror
from ._runtime import guarded, runtime
from .constants import (
    EALREADY,
    EBUSY,
    EINVAL,
    ENOMEM,
    ENOTCONN,
    IRQ_L2CAP_ACCEPT,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
)

if TYPE_CHECKING:
    from bumble.device import Connection, Device
    from bumble.l2cap import (
        ChannelManager,
        L2CAP_LE_Credit_Based_Connection_Request,
        LeCreditBasedChannel,
    )

    from ._stack import Stack

logger = logging.getLogger(__name__)

#: MicroPython clamps a channel's MTU to this range.
MIN_MTU, MAX_MTU = 32, 65535
#: Largest PDU payload (MPS) we accept: one PDU fills a 251-byte LE data packet.
MAX_MPS = 247
#: Seconds an ``l2cap_connect`` waits for the peer's answer (it holds its answer for at
#: most the IRQ answer deadline).
CONNECT_TIMEOUT = _events.ANSWER_DEADLINE + 5.0
#: Seconds an ``l2cap_disconnect`` waits for the peer's response before dropping the channel.
DISCONNECT_TIMEOUT = 5.0

# NimBLE host error codes, as they appear in L2CAP_DISCONNECT statuses and as accept answers.
_HS_EINVAL, _HS_EALREADY, _HS_ENOMEM, _HS_ENOTCONN, _HS_ENOTSUP = 3, 2, 6, 7, 8
_HS_ETIMEOUT, _HS_EREJECT, _HS_EUNKNOWN = 13, 16, 17
_HS_EAUTHEN, _HS_EAUTHOR, _HS_EENCRYPT, _HS_EENCRYPT_KEY_SZ = 23, 24, 25, 26

# L2CAP LE credit-based connection results (Core Vol 3, Part A, 4.23).
_SUCCESS = 0x0000
_PSM_NOT_SUPPORTED = 0x0002
_NO_RESOURCES = 0x0004
_INSUFFICIENT_AUTHENTICATION = 0x0005
_INSUFFICIENT_AUTHORIZATION = 0x0006
_INSUFFICIENT_KEY_SIZE = 0x0007
_INSUFFICIENT_ENCRYPTION = 0x0008
_INVALID_SOURCE_CID = 0x0009
_SOURCE_CID_ALREADY_ALLOCATED = 0x000A
_UNACCEPTABLE_PARAMETERS = 0x000B

#: An accept handler's non-zero answer (a NimBLE host code) -> the result sent to the peer.
_ANSWER_TO_RESULT = {
    _HS_ENOTSUP: _PSM_NOT_SUPPORTED,
    _HS_ENOMEM: _NO_RESOURCES,
    _HS_EAUTHEN: _INSUFFICIENT_AUTHENTICATION,
    _HS_EAUTHOR: _INSUFFICIENT_AUTHORIZATION,
    _HS_EENCRYPT: _INSUFFICIENT_ENCRYPTION,
    _HS_EENCRYPT_KEY_SZ: _INSUFFICIENT_KEY_SIZE,
    _HS_EINVAL: _UNACCEPTABLE_PARAMETERS,
}
#: A refusal received by the connecting side -> the status of its L2CAP_DISCONNECT.
_RESULT_TO_STATUS = {
    _PSM_NOT_SUPPORTED: _HS_ENOTSUP,
    _NO_RESOURCES: _HS_ENOMEM,
    _INSUFFICIENT_AUTHENTICATION: _HS_EAUTHEN,
    _INSUFFICIENT_AUTHORIZATION: _HS_EAUTHOR,
    _INSUFFICIENT_KEY_SIZE: _HS_EENCRYPT_KEY_SZ,
    _INSUFFICIENT_ENCRYPTION: _HS_EENCRYPT,
    _INVALID_SOURCE_CID: _HS_EREJECT,
    _SOURCE_CID_ALREADY_ALLOCATED: _HS_EALREADY,
    _UNACCEPTABLE_PARAMETERS: _HS_EINVAL,
}

_LE_CID_RANGE = range(0x0040, 0x0080)

#: The default of the desktop-only multi-channel switch, for instances made from now on.
_MULTICHANNEL_DEFAULT = os.environ.get("MPBLUETOOTH_L2CAP_MULTICHANNEL", "") in ("1", "true")


def clamp_mtu(mtu: int) -> int:
    """MicroPython's clamp of a channel MTU to [32, 65535]."""
    return min(max(mtu, MIN_MTU), MAX_MTU)


def _mps_for(mtu: int) -> int:
    return min(mtu + 2, MAX_MPS)


def _credits_for(mtu: int, mps: int) -> int:
    """Credits for one full SDU (its 2-byte length header included), as NimBLE grants."""
    return -(-(mtu + 2) // mps)


class _Channel:
    """Our view of one Bumble LE CoC channel: received data and the send stall."""

    __slots__ = (
        "conn_handle",
        "cid",
        "psm",
        "bumble",
        "rx",
        "rx_lock",
        "in_sdu",
        "stalled",
        "tx_lock",
        "reserved",
        "stall_pending",
        "connected",
        "refused",
    )

    def __init__(self, conn_handle: int, psm: int, bumble: LeCreditBasedChannel) -> None:
        self.conn_handle = conn_handle
        self.cid = bumble.source_cid
        self.psm = psm
        self.bumble = bumble
        #: Received bytes not yet read: appended on the loop, taken by ``l2cap_recvinto``
        #: on the caller's thread, under ``rx_lock``.
        self.rx = bytearray()
        self.rx_lock = threading.Lock()
        self.in_sdu: bytearray | None = None
        self.stalled = False
        #: Sends refused during the current stall: the first is ENOMEM (NimBLE finds its
        #: SDU pool empty), the next ones EBUSY, as a board answers.
        self.refused = 0
        #: Sends are answered on the caller's thread and handed to Bumble later: credits
        #: already promised to sends not yet handed over, and whether one of those will
        #: stall (the next send is then refused). Guarded with Bumble's credit count by
        #: ``tx_lock``.
        self.tx_lock = threading.Lock()
        self.reserved = 0
        self.stall_pending = False
        self.connected = False


class L2cap:
    """The L2CAP channels of one instance."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ring = stack.ring
        #: PSM -> our MTU, for ``l2cap_listen``; lost at power-off as on MicroPython.
        self.listening: dict[int, int] = {}
        self.channels: dict[tuple[int, int], _Channel] = {}
        #: Closed channels whose L2CAP_DISCONNECT the handler has not seen yet, with the
        #: data that arrived before the close: the handler's RECV events for it are still
        #: in the ring, so ``l2cap_recvinto`` keeps reading it (then 0) until then.
        self.closed_rx: dict[tuple[int, int], _Channel] = {}
        #: Guards changes to ``closed_rx``, which the dispatcher thread also makes.
        self._closed_lock = threading.Lock()
        #: Desktop only: any number of channels (see the module docstring).
        self.multichannel = _MULTICHANNEL_DEFAULT
        #: MicroPython's one channel slot: taken by a listen (for good) or a connect.
        self.slot_taken = False
        self.slot_listening = False
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)

    # --- lifecycle ------------------------------------------------------------------
    def _attach(self, device: Device) -> None:
        self.listening.clear()
        self.channels.clear()
        self.slot_taken = self.slot_listening = False
        with self._closed_lock:
            self.closed_rx.clear()
        manager = device.l2cap_channel_manager
        delegate = manager.on_l2cap_le_credit_based_connection_request
        # ChannelManager looks its handlers up by name on the instance, so these
        # instance attributes take precedence over the class's methods.
        manager.on_l2cap_le_credit_based_connection_request = functools.partial(  # type: ignore[method-assign]
            self._on_connection_request, manager, delegate
        )
        closed = manager.on_channel_closed
        manager.on_channel_closed = functools.partial(  # type: ignore[method-assign]
            _on_channel_closed, manager, closed
        )
        manager.on_pdu = functools.partial(self._on_any_pdu, manager.on_pdu)  # type: ignore[method-assign]

    def _detach(self) -> None:
        self.listening.clear()
        self.channels.clear()
        self.slot_taken = self.slot_listening = False
        with self._closed_lock:
            self.closed_rx.clear()

    def _post(self, event: int, *values: Any, after: Callable[[], None] | None = None) -> None:
        if self.stack.reporting:
            self.ring.post(event, *values, after=after)
        elif after is not None:
            after()

    # --- calls from ble.py (loop thread) ----------------------------------------------
    def _take_slot(self, listening: bool) -> None:
        """MicroPython's ``create_l2cap_channel``: one channel per device (EALREADY)."""
        if self.multichannel:
            return
        if self.slot_taken:
            raise mp_oserror(
                EALREADY,
                "one L2CAP channel per device, as on a board (listening takes it for good); "
                "see mpbluetooth.ble.set_l2cap_multichannel",
            )
        self.slot_taken = True
        self.slot_listening = listening

    def _free_slot(self) -> None:
        """MicroPython's ``destroy_l2cap_channel``: a listener keeps its slot."""
        if not self.slot_listening:
            self.slot_taken = False

    async def listen(self, psm: int, mtu: int) -> None:
        self.stack.require()
        if psm in self.listening:
            raise mp_oserror(EALREADY, f"already listening on PSM {psm}")
        self._take_slot(listening=True)
        self.listening[psm] = clamp_mtu(mtu)

    async def connect(self, conn_handle: int, psm: int, mtu: int) -> None:
        from bumble.l2cap import LeCreditBasedChannel

        device = self.stack.require()
        # Taken before the link is looked up, and kept if that fails, as on a board.
        self._take_slot(listening=False)
        connection = device.lookup_connection(conn_handle)
        if connection is None:
            raise mp_oserror(ENOTCONN)
        manager = device.l2cap_channel_manager
        by_cid = manager.channels.setdefault(conn_handle, {})
        cid = manager.find_free_le_cid(by_cid)
        if cid is None:
            raise mp_oserror(ENOMEM, "no free L2CAP channel identifier")
        mtu = clamp_mtu(mtu)
        mps = _mps_for(mtu)
        bumble = LeCreditBasedChannel(
            manager=manager,
            connection=connection,
            psm=psm,
            source_cid=cid,
            destination_cid=0,
            mtu=mtu,
            mps=mps,
            credits=0,
            peer_mtu=0,
            peer_mps=0,
            peer_credits=_credits_for(mtu, mps),
            connected=False,
        )
        by_cid[cid] = bumble
        channel = self._adopt(conn_handle, psm, bumble)
        bumble.on("open", guarded(functools.partial(self._on_open, manager, channel)))
        self.stack.spawn(self._connect(manager, channel), "l2cap-connect", link=conn_handle)

    async def _connect(self, manager: ChannelManager, channel: _Channel) -> None:
        from bumble.l2cap import L2capError

        bumble = channel.bumble
        status = 0
        try:
            await asyncio.wait_for(bumble.connect(), CONNECT_TIMEOUT)
        except L2capError as exc:
            status = _RESULT_TO_STATUS.get(int(exc.error_code or 0), _HS_EUNKNOWN)
        except TimeoutError:
            status = _HS_ETIMEOUT
        except asyncio.CancelledError:
            # The link went down (Bumble cancels the request), or we are powering off.
            status = _HS_ENOTCONN
            if not self.stack.reporting:
                raise
        except Exception as exc:  # noqa: BLE001 - any other failure is still a failed connect
            logger.warning("%s: L2CAP connect failed: %r", self.stack.name, exc)
            status = _HS_EUNKNOWN
        if status == 0:
            return
        by_cid = manager.channels.get(channel.conn_handle, {})
        if by_cid.get(channel.cid) is bumble:
            del by_cid[channel.cid]
        self.channels.pop((channel.conn_handle, channel.cid), None)
        self._free_slot()
        self._post(IRQ_L2CAP_DISCONNECT, channel.conn_handle, channel.cid, channel.psm, status)

    def _on_open(self, manager: ChannelManager, channel: _Channel) -> None:
        """Our connect succeeded (runs inside Bumble's handling of the response)."""
        bumble = channel.bumble
        manager.le_coc_channels.setdefault(channel.conn_handle, {})[bumble.destination_cid] = bumble
        channel.connected = True
        self._post(
            IRQ_L2CAP_CONNECT,
            channel.conn_handle,
            channel.cid,
            channel.psm,
            bumble.mtu,
            bumble.peer_mtu,
        )

    async def disconnect(self, conn_handle: int, cid: int) -> None:
        self.stack.require()
        channel = self._lookup(conn_handle, cid)
        self.stack.spawn(self._disconnect(channel), "l2cap-disconnect")

    async def _disconnect(self, channel: _Channel) -> None:
        bumble = channel.bumble
        try:
            await asyncio.wait_for(bumble.disconnect(), DISCONNECT_TIMEOUT)
        except TimeoutError:
            logger.warning("%s: no L2CAP disconnection response, dropping", self.stack.name)
            bumble.abort()
        except Exception as exc:  # noqa: BLE001 - e.g. closed by the peer meanwhile
            logger.debug("%s: L2CAP disconnect: %r", self.stack.name, exc)

    def send(self, conn_handle: int, cid: int, data: bytes) -> bool:
        """Queue one SDU; False when it is (partly) waiting for credits (SEND_READY follows).

        Any thread: checked and answered here, handed to the loop without waiting, so a
        sending loop does not pay a thread round trip per SDU. The answer is exact: the
        credits of sends not yet handed over are reserved, and the count only grows
        until then.
        """
        self.stack.require()
        channel = self._lookup(conn_handle, cid)
        bumble = channel.bumble
        if len(data) > bumble.peer_mtu or len(data) > 2 * bumble.mtu:
            raise mp_oserror(EINVAL, "larger than the peer's MTU or twice ours")
        # One SDU exactly: its length header, then the data, cut into PDUs as credits allow.
        sdu = struct.pack("<H", len(data)) + data
        with channel.tx_lock:
            if (
                channel.stalled
                or channel.stall_pending
                or bumble.out_sdu is not None
                or bumble.out_queue
            ):
                channel.refused += 1
                raise mp_oserror(
                    ENOMEM if channel.refused == 1 else EBUSY,
                    "the previous SDU is still waiting for credits",
                )
            needed = -(-len(sdu) // bumble.peer_mps)
            available = bumble.credits - channel.reserved
            stalls = available < needed
            take = min(needed, available)
            channel.reserved += take
            channel.stall_pending = stalls
            # Under the lock: hand-overs reach the loop in the order their credits were
            # reserved, even with sends from two threads on one channel.
            runtime().call_soon(self._hand_over, channel, sdu, stalls, take)
        return not stalls

    def _hand_over(self, channel: _Channel, sdu: bytes, promised_stall: bool, took: int) -> None:
        bumble = channel.bumble
        with channel.tx_lock:
            channel.reserved -= took
            if promised_stall:
                channel.stall_pending = False
            if (
                not self.stack.active
                or not channel.connected
                or bumble.state != bumble.State.CONNECTED
            ):
                return  # closed or stopped meanwhile: the SDU is dropped, as on a board
            if bumble.out_sdu is not None:  # cannot happen: sends are refused while stalled
                logger.error("%s: L2CAP SDU handed over while one is pending", self.stack.name)
                return
            bumble.out_sdu = sdu
            bumble.drained.clear()
            bumble.process_output()
            channel.stalled = bumble.out_sdu is not None
            if not channel.stalled:
                channel.refused = 0
            owed = promised_stall and not channel.stalled
        if owed:
            # Credits came in after the caller was told to wait: it still waits for this.
            self._post(IRQ_L2CAP_SEND_READY, channel.conn_handle, channel.cid, 0)

    def recv(self, conn_handle: int, cid: int, size: int | None) -> int | bytes:
        """``size`` None: the number of bytes pending. Else take up to ``size`` bytes; the
        peer gets its credits back once everything pending has been taken.

        Any thread: the bytes are taken here, under the channel's lock; only the credit
        return goes to the loop, without waiting."""
        self.stack.require()
        key = (conn_handle, cid)
        channel = self.channels.get(key)
        open_ = channel is not None and channel.connected
        if not open_:
            # Closed, but the handler has not been told yet: what arrived can be read.
            # (The close stores the channel here before it marks it closed.)
            channel = self.closed_rx.get(key)
            if channel is None:
                raise mp_oserror(EINVAL, f"no L2CAP channel {cid} on connection {conn_handle}")
        assert channel is not None
        with channel.rx_lock:
            rx = channel.rx
            if size is None:
                return len(rx)
            if not rx:
                return b""
            chunk = bytes(rx[:size])
            del rx[:size]
            drained = not rx
        if drained and open_:
            runtime().call_soon(self._return_credits_if_drained, channel)
        return chunk

    def _lookup(self, conn_handle: int, cid: int) -> _Channel:
        channel = self.channels.get((conn_handle, cid))
        if (
            channel is None
            or not channel.connected
            or channel.bumble.state != channel.bumble.State.CONNECTED
        ):
            raise mp_oserror(EINVAL, f"no L2CAP channel {cid} on connection {conn_handle}")
        return channel

    # --- channel plumbing (loop thread) -------------------------------------------------
    def _on_any_pdu(
        self,
        on_pdu: Callable[[Connection, int, bytes], None],
        connection: Connection,
        cid: int,
        pdu: bytes,
    ) -> None:
        """Every L2CAP PDU from a peer. One that Bumble cannot parse or handle (a truncated
        SMP command or signalling frame...) is dropped with a warning: it must not escape
        into the host's packet handling, where it would surface as a loop error."""
        try:
            on_pdu(connection, cid, pdu)
        except Exception as exc:  # noqa: BLE001 - whatever a peer sends
            logger.warning(
                "%s: dropped a PDU on CID 0x%04x from %s that the stack could not handle: %r",
                self.stack.name,
                cid,
                connection.peer_address,
                exc,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )

    def _adopt(self, conn_handle: int, psm: int, bumble: LeCreditBasedChannel) -> _Channel:
        channel = _Channel(conn_handle, psm, bumble)
        self.channels[(conn_handle, channel.cid)] = channel
        with self._closed_lock:
            self.closed_rx.pop((conn_handle, channel.cid), None)
        # Instance attributes: the manager and the credit frames call these by name.
        bumble.on_pdu = guarded(functools.partial(self._on_pdu, channel))  # type: ignore[method-assign]
        bumble.on_credits = guarded(functools.partial(self._on_credits, channel))  # type: ignore[method-assign]
        bumble.on("close", guarded(functools.partial(self._on_close, channel)))
        return channel

    def _on_pdu(self, channel: _Channel, pdu: bytes) -> None:
        bumble = channel.bumble
        if not channel.connected or bumble.state != bumble.State.CONNECTED:
            return
        if bumble.peer_credits == 0:
            logger.warning("%s: L2CAP PDU from a peer without credits", self.stack.name)
        else:
            bumble.peer_credits -= 1
        sdu = channel.in_sdu
        if sdu is None:
            sdu = channel.in_sdu = bytearray(pdu)
        else:
            sdu += pdu
        if len(sdu) < 2:
            return
        (length,) = struct.unpack_from("<H", sdu)
        if length > bumble.mtu or len(sdu) > 2 + length:
            logger.warning(
                "%s: L2CAP SDU of %d bytes overflows MTU %d, disconnecting",
                self.stack.name,
                length,
                bumble.mtu,
            )
            channel.in_sdu = None
            self.stack.spawn(self._disconnect(channel), "l2cap-overflow")
            return
        if len(sdu) < 2 + length:
            return
        channel.in_sdu = None
        with channel.rx_lock:
            channel.rx += sdu[2:]
        self._post(IRQ_L2CAP_RECV, channel.conn_handle, channel.cid)

    def _return_credits_if_drained(self, channel: _Channel) -> None:
        with channel.rx_lock:
            drained = not channel.rx
        if drained and channel.connected and self.stack.active:
            self._return_credits(channel)

    def _return_credits(self, channel: _Channel) -> None:
        from bumble.l2cap import L2CAP_LE_Flow_Control_Credit

        bumble = channel.bumble
        grant = bumble.peer_max_credits - bumble.peer_credits
        if grant <= 0 or bumble.state != bumble.State.CONNECTED:
            return
        bumble.peer_credits = bumble.peer_max_credits
        bumble.send_control_frame(
            L2CAP_LE_Flow_Control_Credit(
                identifier=bumble.manager.next_identifier(bumble.connection),
                cid=bumble.source_cid,
                credits=grant,
            )
        )

    def _on_credits(self, channel: _Channel, credits: int) -> None:
        bumble = channel.bumble
        with channel.tx_lock:
            type(bumble).on_credits(bumble, credits)
            ready = channel.stalled and bumble.out_sdu is None
            if ready:
                channel.stalled = False
                channel.refused = 0
        if ready:
            self._post(IRQ_L2CAP_SEND_READY, channel.conn_handle, channel.cid, 0)

    def _on_close(self, channel: _Channel) -> None:
        if self.channels.get((channel.conn_handle, channel.cid)) is not channel:
            return
        key = (channel.conn_handle, channel.cid)
        if channel.connected:
            # Keep what arrived readable first: l2cap_recvinto reads from other threads.
            with self._closed_lock:
                self.closed_rx[key] = channel
            del self.channels[key]
            channel.connected = False

            def told() -> None:  # on the dispatcher, once the handler has returned
                with self._closed_lock:
                    if self.closed_rx.get(key) is channel:
                        del self.closed_rx[key]

            self._free_slot()
            self._post(
                IRQ_L2CAP_DISCONNECT, channel.conn_handle, channel.cid, channel.psm, 0, after=told
            )
        else:
            del self.channels[key]

    # --- incoming requests ----------------------------------------------------------
    def _on_connection_request(
        self,
        manager: ChannelManager,
        delegate: Any,
        connection: Connection,
        signaling_cid: int,
        request: L2CAP_LE_Credit_Based_Connection_Request,
    ) -> None:
        mtu = self.listening.get(request.le_psm)
        if mtu is None or not self.stack.active:
            delegate(connection, signaling_cid, request)
            return
        try:
            self._accept(manager, connection, signaling_cid, request, mtu)
        except Exception:  # noqa: BLE001 - never let Bumble answer a Command Reject
            logger.exception("%s: L2CAP connection request failed", self.stack.name)

    def _accept(
        self,
        manager: ChannelManager,
        connection: Connection,
        signaling_cid: int,
        request: L2CAP_LE_Credit_Based_Connection_Request,
        mtu: int,
    ) -> None:
        from bumble.l2cap import LeCreditBasedChannel

        mps = _mps_for(mtu)
        refuse = functools.partial(
            _respond, manager, connection, signaling_cid, request, 0, mtu, mps, 0
        )
        if request.source_cid not in _LE_CID_RANGE:
            refuse(_INVALID_SOURCE_CID)
            return
        if request.source_cid in manager.le_coc_channels.get(connection.handle, {}):
            refuse(_SOURCE_CID_ALREADY_ALLOCATED)
            return
        by_cid = manager.channels.setdefault(connection.handle, {})
        cid = manager.find_free_le_cid(by_cid)
        if cid is None:
            refuse(_NO_RESOURCES)
            return
        # Not connected yet: the peer may not send before our response, and if the link
        # drops while the handler decides, Bumble's abort of it stays silent.
        bumble = LeCreditBasedChannel(
            manager,
            connection,
            request.le_psm,
            cid,
            request.source_cid,
            mtu,
            mps,
            request.initial_credits,
            request.mtu,
            request.mps,
            _credits_for(mtu, mps),
            False,
        )
        by_cid[cid] = bumble  # reserves the CID while the handler decides
        answer = self.ring.ask(
            IRQ_L2CAP_ACCEPT, connection.handle, cid, request.le_psm, mtu, request.mtu
        )
        self.stack.spawn(
            self._decide(manager, connection, signaling_cid, request, bumble, answer),
            "l2cap-accept",
        )

    async def _decide(
        self,
        manager: ChannelManager,
        connection: Connection,
        signaling_cid: int,
        request: L2CAP_LE_Credit_Based_Connection_Request,
        bumble: LeCreditBasedChannel,
        answer_future: asyncio.Future[Any],
    ) -> None:
        answer = await _events.wait_answer(answer_future, "L2CAP accept")
        handle = connection.handle
        by_cid = manager.channels.get(handle)
        if by_cid is None or by_cid.get(bumble.source_cid) is not bumble or not self.stack.active:
            return  # the link went down (or the stack stopped) while the handler decided
        # MicroPython: a non-zero int rejects; None and non-ints accept.
        if isinstance(answer, int) and answer != 0:
            del by_cid[bumble.source_cid]
            _respond(
                manager,
                connection,
                signaling_cid,
                request,
                0,
                bumble.mtu,
                bumble.mps,
                0,
                _ANSWER_TO_RESULT.get(answer, _NO_RESOURCES),
            )
            return
        manager.le_coc_channels.setdefault(handle, {})[request.source_cid] = bumble
        bumble.state = bumble.State.CONNECTED
        bumble.connected = True
        channel = self._adopt(handle, request.le_psm, bumble)
        channel.connected = True
        _respond(
            manager,
            connection,
            signaling_cid,
            request,
            bumble.source_cid,
            bumble.mtu,
            bumble.mps,
            bumble.peer_credits,
            _SUCCESS,
        )
        self._post(
            IRQ_L2CAP_CONNECT, handle, bumble.source_cid, request.le_psm, bumble.mtu, request.mtu
        )


def _respond(
    manager: ChannelManager,
    connection: Connection,
    signaling_cid: int,
    request: L2CAP_LE_Credit_Based_Connection_Request,
    cid: int,
    mtu: int,
    mps: int,
    credits: int,
    result: int,
) -> None:
    from bumble.l2cap import L2CAP_LE_Credit_Based_Connection_Response

    manager.send_control_frame(
        connection,
        signaling_cid,
        L2CAP_LE_Credit_Based_Connection_Response(
            identifier=request.identifier,
            destination_cid=cid,
            mtu=mtu,
            mps=mps,
            initial_credits=credits,
            result=result,
        ),
    )


def _on_channel_closed(manager: ChannelManager, closed: Any, channel: Any) -> None:
    """Bumble's close bookkeeping, plus the LE table entry it forgets (the stale-CID bug:
    the peer could not open another channel on the same link)."""
    closed(channel)
    handle: int = channel.connection.handle
    source_cid: int = channel.source_cid
    destination_cid: int = channel.destination_cid
    le_channels = manager.le_coc_channels.get(handle)
    if le_channels is not None and le_channels.get(destination_cid) is channel:
        del le_channels[destination_cid]
    by_cid = manager.channels.get(handle)
    if by_cid is not None and by_cid.get(source_cid) is channel:
        del by_cid[source_cid]


__all__ = ["L2cap", "clamp_mtu"]
