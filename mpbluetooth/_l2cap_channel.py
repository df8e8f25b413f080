"""One L2CAP channel as we keep it beside Bumble's (received data, the send stall), the
channel parameters MicroPython uses, and the connection response we send ourselves."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bumble.device import Connection
    from bumble.l2cap import (
        ChannelManager,
        L2CAP_LE_Credit_Based_Connection_Request,
        LeCreditBasedChannel,
    )

#: MicroPython clamps a channel's MTU to this range.
MIN_MTU, MAX_MTU = 32, 65535
#: Largest PDU payload (MPS) we accept: one PDU fills a 251-byte LE data packet.
MAX_MPS = 247


def clamp_mtu(mtu: int) -> int:
    """MicroPython's clamp of a channel MTU to [32, 65535]."""
    return min(max(mtu, MIN_MTU), MAX_MTU)


def mps_for(mtu: int) -> int:
    return min(mtu + 2, MAX_MPS)


def credits_for(mtu: int, mps: int) -> int:
    """Credits for one full SDU (its 2-byte length header included), as NimBLE grants."""
    return -(-(mtu + 2) // mps)


class Channel:
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


def respond(
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


__all__ = ["Channel", "clamp_mtu", "credits_for", "mps_for", "respond", "MAX_MPS"]
