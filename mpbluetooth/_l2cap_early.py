"""L2CAP connection requests that come before the program could listen (SPEC-silent; our
decision, ``docs/design.md``, "L2CAP": "Early requests").

Over the air a peer's first L2CAP PDU on a new link cannot arrive before a connection
event, one connection interval or more after the link came up (NimBLE's ``gap_connect``
asks for 30-50 ms). A board program that calls ``l2cap_listen`` as soon as it has seen its
connect event is therefore always in time, and MicroPython's own tests rely on it.
A controller that forwards data the instant a link exists (RootCanal, on a 5 ms tick; our
hub in instant timing) lets the request overtake that listen, and the PSM would be refused.

So a request for a PSM nobody listens on, on a young link, waits here (on the loop
thread) instead of being refused at once: until the program listens on it (it is then
accepted as any other request), or until one connection interval, at least
:data:`GRACE_S`, after the program was told of the link (its connect handler returned).
Then it is refused as before. A request on a link the program has not been told of yet
waits for that, for at most :data:`TOLD_LIMIT_S`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._runtime import runtime

if TYPE_CHECKING:
    from bumble.device import Connection
    from bumble.l2cap import ChannelManager, L2CAP_LE_Credit_Based_Connection_Request

    from ._stack import Stack

logger = logging.getLogger(__name__)

#: The least a request waits after the program was told of its link: a desktop process is
#: descheduled for longer than a board's core, so the shortest interval (7.5 ms) is not
#: enough to stand for the program's next few statements.
GRACE_S = 0.05
#: The longest a request waits for the program to be told of its link.
TOLD_LIMIT_S = 2.0

#: When the program was told of each link (its connect event's handler had returned).
_told_at: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


def mark_told(connection: Connection) -> None:
    """Called in the IRQ context once a connect event has been handled (any thread)."""
    _told_at[connection] = time.monotonic()


class _Parked(NamedTuple):
    manager: ChannelManager
    delegate: Callable[..., Any]
    connection: Connection
    signaling_cid: int
    request: L2CAP_LE_Credit_Based_Connection_Request
    since: float


class EarlyRequests:
    """The requests of one instance waiting for a listen (loop thread only)."""

    def __init__(self, stack: Stack, listening: dict[int, int], answer: Callable[..., Any]):
        self.stack = stack
        #: The instance's listened PSMs (PSM -> MTU), read here, written by ``listen``.
        self.listening = listening
        #: Answers a request whose PSM is now listened on (as if it had just arrived).
        self.answer = answer
        self.parked: list[_Parked] = []

    def park(self, manager: Any, delegate: Any, connection: Any, cid: int, request: Any) -> bool:
        """Hold a request for an unlistened PSM if its link is young; False: answer now."""
        now = time.monotonic()
        if not self.stack.active or self._due(connection, now) <= now:
            return False
        entry = _Parked(manager, delegate, connection, cid, request, now)
        self.parked.append(entry)
        logger.debug(
            "%s: L2CAP request for PSM %d held until the program listens (link %d is new)",
            self.stack.name,
            request.le_psm,
            connection.handle,
        )
        self._recheck(entry, now)
        return True

    def wake(self) -> None:
        """A PSM was just listened on (any thread): settle the parked requests now."""
        runtime().call_soon(self.settle)

    def clear(self) -> None:
        """Power-off: the links are gone, nothing is answered."""
        self.parked.clear()

    def settle(self) -> None:
        """Accept what is now listened on, refuse what is due, drop what lost its link."""
        now, device = time.monotonic(), self.stack.device
        for entry in list(self.parked):
            handle = entry.connection.handle
            gone = device is None or device.lookup_connection(handle) is not entry.connection
            listened = entry.request.le_psm in self.listening
            due = self._due(entry.connection, entry.since) <= now
            if not (gone or listened or due) and self.stack.active:
                continue
            self.parked.remove(entry)
            if gone or not self.stack.active:
                continue
            args = (entry.connection, entry.signaling_cid, entry.request)
            try:
                if listened:
                    self.answer(entry.manager, entry.delegate, *args)
                else:
                    entry.delegate(*args)
            except Exception:  # the other held requests are still answered
                logger.exception("%s: answering a held L2CAP request failed", self.stack.name)

    def _due(self, connection: Connection, since: float) -> float:
        told = _told_at.get(connection)
        if told is None:
            return since + TOLD_LIMIT_S
        return told + max(GRACE_S, connection.parameters.connection_interval / 1000)

    def _recheck(self, entry: _Parked, now: float) -> None:
        """Settle again at the entry's deadline, or soon while its link is not yet told."""
        if entry.connection in _told_at:
            delay = self._due(entry.connection, entry.since) - now
        else:
            delay = GRACE_S / 5
        runtime().loop.call_later(max(delay, 0.0), self._on_timer, entry)

    def _on_timer(self, entry: _Parked) -> None:
        self.settle()
        if entry in self.parked:
            self._recheck(entry, time.monotonic())
