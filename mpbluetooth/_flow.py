"""Sends handed to the loop without a round trip, and the ACL backlog that bounds them.

MicroPython's ``gatts_notify``/``gattc_write``/``gattc_read`` return once NimBLE has
queued the PDU; waiting for a round trip through the loop instead would cost a thread
hand-over per packet. The caller raises what it can see (not connected, buffers full),
then hands the send over here. Sends still queued count toward the ACL backlog, as the
ACL packets each will take, so a fast caller meets ``ENOMEM`` as on a board, and memory
stays bounded (Bumble's own queue is unbounded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import mp_oserror
from ._runtime import runtime
from .constants import ENOMEM

if TYPE_CHECKING:
    from bumble.device import Device

logger = logging.getLogger(__name__)

#: ACL packets waiting for the controller above which notify, indicate and
#: write-without-response are refused with OSError(ENOMEM), as NimBLE refuses when its
#: buffers are exhausted.
ACL_BACKLOG_LIMIT = 128


class FlowControl:
    """The sends of one instance that are on their way to the loop."""

    def __init__(self, name: str, active: Callable[[], bool]) -> None:
        self.name = name
        self._active = active
        self.queued = 0
        self._lock = threading.Lock()

    def send_soon(self, send: Callable[..., Any], *args: Any, packets: int = 1) -> None:
        """Hand a send to the loop without waiting for it (any thread); it is dropped if
        the stack stops first, as the controller would drop it. Sends from one thread
        keep their order."""
        with self._lock:
            self.queued += packets
        runtime().call_soon(self._run, send, args, False, packets)

    def start_soon(self, start: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`send_soon`, for the start of a procedure that reports its outcome:
        it runs even if the stack stopped meanwhile, so the procedure can end (with
        status 7 after a transport loss) and free its slot."""
        with self._lock:
            self.queued += 1
        runtime().call_soon(self._run, start, args, True)

    def _run(
        self, send: Callable[..., Any], args: tuple[Any, ...], always: bool, packets: int = 1
    ) -> None:
        with self._lock:
            self.queued -= packets
        if not self._active() and not always:
            return  # stopped meanwhile: the PDU is dropped, as the controller would
        try:
            send(*args)
        except Exception:
            logger.exception("%s: deferred send failed", self.name)

    def refuse_if_backlogged(self, device: Device) -> None:
        """Raise ENOMEM, as NimBLE does when out of buffers, for a send from a caller's
        thread while the ACL backlog is full; the caller first yields the GIL to the loop
        (see ``Runtime.yield_to_loop``), since a program retries at once."""
        if backlog_full(device, self.queued):
            runtime().yield_to_loop()
            raise mp_oserror(ENOMEM, "ACL buffers full")


def acl_packets(device: Device, pdu_size: int) -> int:
    """How many ACL packets an ATT PDU of ``pdu_size`` bytes takes (with its 4-byte L2CAP
    header), so the backlog counts what the controller's buffers hold."""
    host = device.host
    queue = host.le_acl_packet_queue or host.acl_packet_queue
    size = getattr(queue, "max_packet_size", 0) or 27
    return max(1, -(-(pdu_size + 4) // size))


def backlog_full(device: Device, queued: int = 0) -> bool:
    """Whether ``ACL_BACKLOG_LIMIT`` packets already wait for the controller, counting
    ``queued`` sends not yet handed to the host."""
    host = device.host
    queue = host.le_acl_packet_queue or host.acl_packet_queue
    pending = queue.pending if queue is not None else 0
    return pending + queued >= ACL_BACKLOG_LIMIT


__all__ = ["FlowControl", "acl_packets", "backlog_full", "ACL_BACKLOG_LIMIT"]
