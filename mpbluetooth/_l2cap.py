"""L2CAP connection-oriented channels (LE credit-based), with MicroPython's flow control.

Bumble's LE CoC support is close but not what MicroPython programs see, so this module
takes over the parts that differ, per instance and only for channels we own:

* **Accept veto.** Bumble answers "connection successful" before its server handler runs.
  We replace the channel manager's handler for LE credit-based connection requests: a
  request on a PSM we listen on is held until the IRQ handler has answered
  ``_IRQ_L2CAP_ACCEPT``; a non-zero answer refuses it with the L2CAP result NimBLE would
  send, and the connecting side gets ``_IRQ_L2CAP_DISCONNECT`` with a non-zero status.
  A request for a PSM not listened on yet, on a link the program has just been told of,
  waits for the listen as the air would make it wait (``_l2cap_early``).
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
from typing import TYPE_CHECKING, Any

from . import _events
from ._errors import mp_oserror
from ._l2cap_channel import Channel, clamp_mtu, credits_for, mps_for, respond
from ._l2cap_early import EarlyRequests
from ._overrides import (
    bumble_credits,
    drop_closed_le_channels,
    guard_l2cap_pdus,
    own_channel_flow,
    take_le_coc_requests,
)
from ._runtime import guarded, runtime
from ._status import (
    HS_ENOTCONN,
    HS_ETIMEOUT,
    HS_EUNKNOWN,
    L2CAP_ANSWER_TO_RESULT,
    L2CAP_INVALID_SOURCE_CID,
    L2CAP_NO_RESOURCES,
    L2CAP_RESULT_TO_STATUS,
    L2CAP_SOURCE_CID_ALREADY_ALLOCATED,
    L2CAP_SUCCESS,
)
from .constants import (
    EALREADY,
    EBUSY,
    EINVAL,
    ENOMEM,
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

#: Seconds an ``l2cap_connect`` waits for the peer's answer (it holds its answer for at
#: most the IRQ answer deadline).
CONNECT_TIMEOUT = _events.ANSWER_DEADLINE + 5.0
#: Seconds an ``l2cap_disconnect`` waits for the peer's response before dropping the channel.
DISCONNECT_TIMEOUT = 5.0

_LE_CID_RANGE = range(0x0040, 0x0080)


def _multichannel_default() -> bool:
    """The default of the desktop-only multi-channel switch, read as each instance is made
    (not at import: a warm start's server imports this module for many programs)."""
    return os.environ.get("MPBLUETOOTH_L2CAP_MULTICHANNEL", "") in ("1", "true")


class L2cap:
    """The L2CAP channels of one instance."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ring = stack.ring
        #: PSM -> our MTU, for ``l2cap_listen``; lost at power-off as on MicroPython.
        self.listening: dict[int, int] = {}
        self.channels: dict[tuple[int, int], Channel] = {}
        #: Closed channels whose L2CAP_DISCONNECT the handler has not seen yet, with the
        #: data that arrived before the close: the handler's RECV events for it are still
        #: in the ring, so ``l2cap_recvinto`` keeps reading it (then 0) until then.
        self.closed_rx: dict[tuple[int, int], Channel] = {}
        #: Guards changes to ``closed_rx``, which the IRQ context also makes.
        self._closed_lock = threading.Lock()
        #: Desktop only: any number of channels (see the module docstring).
        self.multichannel = _multichannel_default()
        #: MicroPython's one channel slot: taken by a listen (for good) or a connect.
        self.slot_taken = False
        self.slot_listening = False
        #: Guards the slot and ``listening`` (``listen`` runs on the caller's thread).
        self._slot_lock = threading.Lock()
        #: Requests for a PSM not yet listened on, on a link the program just saw come up.
        self.early = EarlyRequests(stack, self.listening, self._on_connection_request)
        stack.on_power_on.append(self._attach)
        stack.on_power_off.append(self._detach)

    # --- lifecycle ------------------------------------------------------------------
    def _attach(self, device: Device) -> None:
        self._detach()
        manager = device.l2cap_channel_manager
        take_le_coc_requests(manager, self._on_connection_request)
        drop_closed_le_channels(manager)
        guard_l2cap_pdus(manager, self._dropped_pdu)

    def _detach(self) -> None:
        """Forget the channels and the listened PSMs (also as the stack starts)."""
        with self._slot_lock:
            self.listening.clear()
            self.slot_taken = self.slot_listening = False
        self.early.clear()
        self.channels.clear()
        with self._closed_lock:
            self.closed_rx.clear()

    # --- calls from ble.py (loop thread, except listen) ----------------------------------
    def _take_slot(self, listening: bool) -> None:
        """``create_l2cap_channel``: one channel per device (EALREADY); under the lock."""
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
        with self._slot_lock:
            if not self.slot_listening:
                self.slot_taken = False

    def listen(self, psm: int, mtu: int) -> None:
        """Any thread: only what ``_on_connection_request`` reads, no Bumble state."""
        self.stack.require()
        with self._slot_lock:
            if psm in self.listening:
                raise mp_oserror(EALREADY, f"already listening on PSM {psm}")
            self._take_slot(listening=True)
            self.listening[psm] = clamp_mtu(mtu)
        self.early.wake()

    def connect(self, conn_handle: int, psm: int, mtu: int) -> None:
        from bumble.l2cap import LeCreditBasedChannel

        device = self.stack.require()
        # Taken before the link is looked up, and kept if that fails, as on a board.
        with self._slot_lock:
            self._take_slot(listening=False)
        connection = self.stack.connection(conn_handle)
        manager = device.l2cap_channel_manager
        by_cid = manager.channels.setdefault(conn_handle, {})
        cid = manager.find_free_le_cid(by_cid)
        if cid is None:
            raise mp_oserror(ENOMEM, "no free L2CAP channel identifier")
        mtu = clamp_mtu(mtu)
        mps = mps_for(mtu)
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
            peer_credits=credits_for(mtu, mps),
            connected=False,
        )
        by_cid[cid] = bumble
        channel = self._adopt(conn_handle, psm, bumble)
        bumble.on("open", guarded(functools.partial(self._on_open, manager, channel)))
        self.stack.spawn(self._connect(manager, channel), "l2cap-connect", link=conn_handle)

    async def _connect(self, manager: ChannelManager, channel: Channel) -> None:
        from bumble.l2cap import L2capError

        bumble = channel.bumble
        status = 0
        try:
            await asyncio.wait_for(bumble.connect(), CONNECT_TIMEOUT)
        except L2capError as exc:
            status = L2CAP_RESULT_TO_STATUS.get(int(exc.error_code or 0), HS_EUNKNOWN)
        except TimeoutError:
            status = HS_ETIMEOUT
        except asyncio.CancelledError:
            # The link went down (Bumble cancels the request), or we are powering off.
            status = HS_ENOTCONN
            if not self.stack.reporting:
                raise
        except Exception as exc:  # any other failure is still a failed connect
            logger.warning("%s: L2CAP connect failed: %r", self.stack.name, exc)
            status = HS_EUNKNOWN
        if status == 0:
            return
        by_cid = manager.channels.get(channel.conn_handle, {})
        if by_cid.get(channel.cid) is bumble:
            del by_cid[channel.cid]
        self.channels.pop((channel.conn_handle, channel.cid), None)
        self._free_slot()
        self.stack.post(IRQ_L2CAP_DISCONNECT, channel.conn_handle, channel.cid, channel.psm, status)

    def _on_open(self, manager: ChannelManager, channel: Channel) -> None:
        """Our connect succeeded (runs inside Bumble's handling of the response)."""
        bumble = channel.bumble
        manager.le_coc_channels.setdefault(channel.conn_handle, {})[bumble.destination_cid] = bumble
        channel.connected = True
        self.stack.post(
            IRQ_L2CAP_CONNECT,
            channel.conn_handle,
            channel.cid,
            channel.psm,
            bumble.mtu,
            bumble.peer_mtu,
        )

    def disconnect(self, conn_handle: int, cid: int) -> None:
        self.stack.require()
        channel = self._lookup(conn_handle, cid)
        self.stack.spawn(self._disconnect(channel), "l2cap-disconnect")

    async def _disconnect(self, channel: Channel) -> None:
        bumble = channel.bumble
        try:
            await asyncio.wait_for(bumble.disconnect(), DISCONNECT_TIMEOUT)
        except TimeoutError:
            logger.warning("%s: no L2CAP disconnection response, dropping", self.stack.name)
            bumble.abort()
        except Exception as exc:  # e.g. closed by the peer meanwhile
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

    def _hand_over(self, channel: Channel, sdu: bytes, promised_stall: bool, took: int) -> None:
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
            self.stack.post(IRQ_L2CAP_SEND_READY, channel.conn_handle, channel.cid, 0)

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

    def _lookup(self, conn_handle: int, cid: int) -> Channel:
        channel = self.channels.get((conn_handle, cid))
        if (
            channel is None
            or not channel.connected
            or channel.bumble.state != channel.bumble.State.CONNECTED
        ):
            raise mp_oserror(EINVAL, f"no L2CAP channel {cid} on connection {conn_handle}")
        return channel

    # --- channel plumbing (loop thread) -------------------------------------------------
    def _dropped_pdu(self, connection: Connection, cid: int, exc: Exception) -> None:
        """A PDU the stack could not parse or handle (a truncated SMP command or signalling
        frame...): dropped with a warning, never a loop error."""
        logger.warning(
            "%s: dropped a PDU on CID 0x%04x from %s that the stack could not handle: %r",
            self.stack.name,
            cid,
            connection.peer_address,
            exc,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def _adopt(self, conn_handle: int, psm: int, bumble: LeCreditBasedChannel) -> Channel:
        channel = Channel(conn_handle, psm, bumble)
        self.channels[(conn_handle, channel.cid)] = channel
        with self._closed_lock:
            self.closed_rx.pop((conn_handle, channel.cid), None)
        own_channel_flow(
            bumble,
            guarded(functools.partial(self._on_pdu, channel)),
            guarded(functools.partial(self._on_credits, channel)),
        )
        bumble.on("close", guarded(functools.partial(self._on_close, channel)))
        return channel

    def _on_pdu(self, channel: Channel, pdu: bytes) -> None:
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
        self.stack.post(IRQ_L2CAP_RECV, channel.conn_handle, channel.cid)

    def _return_credits_if_drained(self, channel: Channel) -> None:
        with channel.rx_lock:
            drained = not channel.rx
        if drained and channel.connected and self.stack.active:
            self._return_credits(channel)

    def _return_credits(self, channel: Channel) -> None:
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

    def _on_credits(self, channel: Channel, credits: int) -> None:
        bumble = channel.bumble
        with channel.tx_lock:
            bumble_credits(bumble, credits)
            ready = channel.stalled and bumble.out_sdu is None
            if ready:
                channel.stalled = False
                channel.refused = 0
        if ready:
            self.stack.post(IRQ_L2CAP_SEND_READY, channel.conn_handle, channel.cid, 0)

    def _on_close(self, channel: Channel) -> None:
        if self.channels.get((channel.conn_handle, channel.cid)) is not channel:
            return
        key = (channel.conn_handle, channel.cid)
        if channel.connected:
            # Keep what arrived readable first: l2cap_recvinto reads from other threads.
            with self._closed_lock:
                self.closed_rx[key] = channel
            del self.channels[key]
            channel.connected = False

            def told() -> None:  # in the IRQ context, once the handler has returned
                with self._closed_lock:
                    if self.closed_rx.get(key) is channel:
                        del self.closed_rx[key]

            self._free_slot()
            self.stack.post(
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
        if mtu is None and self.early.park(manager, delegate, connection, signaling_cid, request):
            return  # the program may not have had its chance to listen yet
        if mtu is None or not self.stack.active:
            delegate(connection, signaling_cid, request)
            return
        try:
            self._accept(manager, connection, signaling_cid, request, mtu)
        except Exception:  # never let Bumble answer a Command Reject
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

        mps = mps_for(mtu)
        refuse = functools.partial(
            respond, manager, connection, signaling_cid, request, 0, mtu, mps, 0
        )
        if request.source_cid not in _LE_CID_RANGE:
            refuse(L2CAP_INVALID_SOURCE_CID)
            return
        if request.source_cid in manager.le_coc_channels.get(connection.handle, {}):
            refuse(L2CAP_SOURCE_CID_ALREADY_ALLOCATED)
            return
        by_cid = manager.channels.setdefault(connection.handle, {})
        cid = manager.find_free_le_cid(by_cid)
        if cid is None:
            refuse(L2CAP_NO_RESOURCES)
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
            credits_for(mtu, mps),
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
        answer_peer = functools.partial(
            respond, manager, connection, signaling_cid, request, mtu=bumble.mtu, mps=bumble.mps
        )
        if isinstance(answer, int) and answer != 0:
            del by_cid[bumble.source_cid]
            refused = L2CAP_ANSWER_TO_RESULT.get(answer, L2CAP_NO_RESOURCES)
            answer_peer(cid=0, credits=0, result=refused)
            return
        manager.le_coc_channels.setdefault(handle, {})[request.source_cid] = bumble
        bumble.state = bumble.State.CONNECTED
        bumble.connected = True
        channel = self._adopt(handle, request.le_psm, bumble)
        channel.connected = True
        answer_peer(cid=bumble.source_cid, credits=bumble.peer_credits, result=L2CAP_SUCCESS)
        self.stack.post(
            IRQ_L2CAP_CONNECT, handle, bumble.source_cid, request.le_psm, bumble.mtu, request.mtu
        )


__all__ = ["L2cap", "clamp_mtu"]
