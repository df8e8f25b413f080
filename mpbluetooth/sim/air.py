"""The air of a simulated link: timing constants, the radio's path-loss model, and one
LE connection's event clock and PDU queues (``AirConnection``). ``sim/link.py`` routes
packets through these; see its docstring and ``docs/simulation.md``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bumble import hci, ll

if TYPE_CHECKING:
    from bumble.controller import Connection, Controller

    from .link import SimLink

logger = logging.getLogger(__name__)

Timing = Literal["air", "instant"]
TIMINGS: tuple[Timing, ...] = ("air", "instant")
#: Environment variable choosing the timing of links that are not given one.
TIMING_ENV = "MPBLUETOOTH_SIM_TIMING"
#: Seconds before a connection event's anchor after which a PDU queued by a host waits for
#: the next event (a controller sets its radio up ahead of the anchor; 1.25 ms here).
PREPARE_AHEAD = 0.00125

#: LL PDUs a connection event carries per direction at the shortest interval (a real
#: controller's event length limits it; 4-6 at 27 bytes is typical of phones and NimBLE at
#: 7.5 ms). Longer intervals carry proportionally more (``AirConnection.pdus_per_event``).
DEFAULT_PDUS_PER_EVENT = 4
#: The shortest connection interval, seconds (Core Vol 6, Part B, 4.5.2).
SHORTEST_INTERVAL = 0.0075
#: Seconds from CONNECT_IND to the first connection event: transmitWindowDelay (1.25 ms)
#: plus a transmitWindowOffset of 0 and the 1.25 ms window itself (Core Vol 6, Part B, 4.5.3).
CONNECT_TO_FIRST_EVENT = 0.0025
#: Connection events between an LL_CONNECTION_UPDATE_IND and its instant (the spec's minimum
#: is 6, Core Vol 6, Part B, 5.1.1).
UPDATE_INSTANT_EVENTS = 6
#: Seconds of advDelay, the random 0-10 ms added to every advertising event (Vol 6, B, 4.4.2.2).
ADV_DELAY_MAX = 0.010
#: Shortest advertising interval, seconds (Vol 6, Part B, 4.4.2.2).
ADV_INTERVAL_MIN = 0.020
#: Events a connection may wait for its first packet before it fails to be established.
ESTABLISH_EVENTS = 6

CONNECTION_TIMEOUT = 0x08
CONNECTION_FAILED_TO_BE_ESTABLISHED = 0x3E


def default_timing() -> Timing:
    """The timing of a link made without one: ``$MPBLUETOOTH_SIM_TIMING``, else ``air``."""
    return check_timing(os.environ.get(TIMING_ENV) or "air")


def check_timing(value: str) -> Timing:
    if value not in TIMINGS:
        raise ValueError(f"timing must be 'air' or 'instant', not {value!r}")
    return value


@dataclass
class RadioModel:
    """Log-distance path loss, the model RSSI and range follow (all powers in dBm, dB).

    ``rssi(d) = tx_power - loss_at_1m - 10 * exponent * log10(d / 1 m) + N(0, jitter)``,
    with ``d`` clamped to at least ``min_distance`` metres. A receiver hears a packet when
    the *mean* RSSI at that distance is at least ``sensitivity``, so range is a sharp edge
    (``range_m`` metres) and jitter never loses a packet by itself (use loss for that).
    Defaults: 0 dBm transmitter, 40 dB at 1 m (free space at 2.4 GHz), exponent 2.0 (free
    space), 2 dB jitter, -90 dBm sensitivity: about 316 m of range.
    """

    tx_power: float = 0.0
    loss_at_1m: float = 40.0
    exponent: float = 2.0
    jitter: float = 2.0
    sensitivity: float = -90.0
    min_distance: float = 0.1

    def mean_rssi(self, distance: float) -> float:
        d = max(distance, self.min_distance)
        return self.tx_power - self.loss_at_1m - 10.0 * self.exponent * math.log10(d)

    def audible(self, distance: float) -> bool:
        return self.mean_rssi(distance) >= self.sensitivity

    def sample(self, distance: float, rng: random.Random) -> int:
        """One packet's RSSI, an int in the HCI range -127..20."""
        value = self.mean_rssi(distance) + (rng.gauss(0.0, self.jitter) if self.jitter else 0)
        return max(-127, min(20, round(value)))

    @property
    def range_m(self) -> float:
        return float(
            10 ** ((self.tx_power - self.loss_at_1m - self.sensitivity) / (10 * self.exponent))
        )


Position = tuple[float, float, float]
#: Where an instance is placed when the link has nothing better: off in the distance.
FAR_AWAY: Position = (1e9, 0.0, 0.0)


def default_position(number: int) -> Position:
    """Instance ``number`` (1, 2, ...) sits on a 1 m circle around the origin, spread by the
    golden angle: every pair is 0.2-2 m apart, so RSSI is -34..-46 dBm plus jitter."""
    angle = number * 2.399963229728653
    return (math.cos(angle), math.sin(angle), 0.0)


@dataclass
class _Pdu:
    """One LL PDU waiting for a connection event: an ACL fragment or a control PDU."""

    ready_at: float
    fragment: hci.HCI_AclDataPacket | None = None
    control: ll.ControlPdu | None = None
    #: Called when the peer has acknowledged it (for LL_TERMINATE_IND: the sender's end).
    on_sent: Callable[[], None] | None = None


@dataclass
class _Direction:
    sender: Controller
    sender_address: hci.Address
    receiver: Controller
    receiver_address: hci.Address
    queue: deque[_Pdu] = field(default_factory=deque)
    #: The sender left the link with this LL_TERMINATE_IND still to send: it still goes.
    finishing: bool = False

    def connection(self) -> Connection | None:
        return self.sender.le_connections.get(self.receiver_address)


class AirConnection:
    """One LE connection on the air: its parameters, event clock and two PDU queues."""

    def __init__(
        self,
        link: SimLink,
        central: Controller,
        central_address: hci.Address,
        peripheral: Controller,
        peripheral_address: hci.Address,
        interval: int,
        latency: int,
        timeout: int,
    ) -> None:
        self.link = link
        self.central = central
        self.peripheral = peripheral
        self.to_peripheral = _Direction(central, central_address, peripheral, peripheral_address)
        self.to_central = _Direction(peripheral, peripheral_address, central, central_address)
        self.set_parameters(interval, latency, timeout)
        loop = asyncio.get_running_loop()
        self.anchor = loop.time() + CONNECT_TO_FIRST_EVENT
        self.last_index = -1
        self.timer: asyncio.TimerHandle | None = None
        self.supervision: asyncio.TimerHandle | None = None
        #: (event index, interval, latency, timeout) of a pending connection update.
        self.update: tuple[int, int, int, int] | None = None
        self.closed = False
        #: Counters for tests and ``sim-ctl``: PDUs delivered and transmissions lost.
        self.delivered = 0
        self.lost = 0

    def set_parameters(self, interval: int, latency: int, timeout: int) -> None:
        """``interval`` in 1.25 ms units (clamped to 6..3200), ``timeout`` in 10 ms units."""
        self.interval_units = min(max(int(interval), 6), 3200)
        self.interval = self.interval_units * 0.00125
        self.latency = latency
        self.timeout_units = timeout
        # A timeout of 0 (never negotiated) is taken as the default 2.56 s of NimBLE.
        self.timeout = (timeout or 256) * 0.010

    @property
    def pdus_per_event(self) -> int:
        """The link's bound holds for the shortest interval (7.5 ms); a controller keeps a
        longer event open while it has data and time (More Data), so a longer interval
        carries proportionally more PDUs, as NimBLE's link layer does."""
        bound = self.link.pdus_per_event
        return max(bound, round(bound * self.interval / SHORTEST_INTERVAL))

    @property
    def key(self) -> frozenset[hci.Address]:
        return frozenset((self.to_peripheral.sender_address, self.to_central.sender_address))

    def directions(self) -> tuple[_Direction, _Direction]:
        return self.to_peripheral, self.to_central

    def involves(self, controller: Controller) -> bool:
        return controller is self.central or controller is self.peripheral

    def other(self, controller: Controller) -> Controller:
        return self.peripheral if controller is self.central else self.central

    def event_time(self, index: int) -> float:
        return self.anchor + index * self.interval

    def last_event_before(self, now: float) -> float:
        """Time of the last connection event at or before ``now`` (the link's last contact)."""
        index = math.floor((now - self.anchor) / self.interval)
        return self.event_time(max(index, 0)) if now >= self.anchor else now

    # --- scheduling ----------------------------------------------------------------
    def kick(self) -> None:
        """Make sure an event is scheduled if anything waits (and the peers hear each other)."""
        if self.closed or self.timer is not None:
            return
        heads = [d.queue[0].ready_at for d in self.directions() if d.queue]
        if self.update is not None:
            heads.append(self.event_time(self.update[0]))
        if not heads or not self.link.hear_each_other(self.central, self.peripheral, self):
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        ready = min(heads)
        index = max(
            self.last_index + 1,
            # A controller prepares an event ahead of its anchor: a PDU queued later than
            # that waits for the following event.
            math.floor((now + PREPARE_AHEAD - self.anchor) / self.interval) + 1,
            math.ceil((ready - self.anchor) / self.interval - 1e-9),
        )
        self.timer = loop.call_at(self.event_time(index), self._event, index)

    def _event(self, index: int) -> None:
        self.timer = None
        if self.closed:
            return
        self.last_index = index
        when = self.event_time(index)
        if self.update is not None and index >= self.update[0]:
            self._apply_update(when)
            if self.closed:
                return
        if not self.link.hear_each_other(self.central, self.peripheral, self):
            return  # they wait for a move back into range, or for the supervision timeout
        loss = self.link.loss_between(self.central, self.peripheral)
        rng = self.link.rng
        per_event = self.pdus_per_event
        for direction in self.directions():
            completed = 0
            sent = 0
            queue = direction.queue
            while queue and sent < per_event and queue[0].ready_at <= when:
                if loss and rng.random() < loss:
                    # Not acknowledged: the event closes for this direction, the PDU goes
                    # again at the next one (SN/NESN retransmission).
                    self.lost += 1
                    break
                pdu = queue.popleft()
                sent += 1
                self.delivered += 1
                if pdu.fragment is not None:
                    completed += self._deliver_fragment(direction, pdu.fragment)
                elif pdu.control is not None:
                    self._deliver_control(direction, pdu.control)
                if pdu.on_sent is not None:
                    pdu.on_sent()
                if self.closed:
                    return
            if completed:
                connection = direction.connection()
                if connection is not None:
                    direction.sender.send_hci_packet(
                        hci.HCI_Number_Of_Completed_Packets_Event(
                            connection_handles=[connection.handle],
                            num_completed_packets=[completed],
                        )
                    )
        self.kick()

    def _deliver_fragment(self, direction: _Direction, fragment: hci.HCI_AclDataPacket) -> int:
        connection = direction.connection()
        if connection is None:
            return 0
        # The sender's reassembler gives whole L2CAP PDUs to the link (send_acl_data), which
        # in air timing hands them to the receiver now.
        connection.assembler.feed_packet(fragment)
        return 1

    def _deliver_control(self, direction: _Direction, packet: ll.ControlPdu) -> None:
        if isinstance(packet, ll.ConnectionUpdateInd):
            self.update = (
                self.last_index + UPDATE_INSTANT_EVENTS,
                packet.interval,
                packet.latency,
                packet.timeout,
            )
            return
        receiver = direction.receiver
        if direction.sender_address not in receiver.le_connections:
            return
        receiver.on_ll_control_pdu(direction.sender_address, packet)
        if isinstance(packet, ll.TerminateInd):
            self.link.forget(self)

    def _apply_update(self, when: float) -> None:
        assert self.update is not None
        _, interval, latency, timeout = self.update
        self.update = None
        self.set_parameters(interval, latency, timeout)
        self.anchor = when
        self.last_index = 0
        for direction in self.directions():
            connection = direction.connection()
            if connection is None:
                continue
            direction.sender.send_hci_packet(
                hci.HCI_LE_Connection_Update_Complete_Event(
                    status=hci.HCI_ErrorCode.SUCCESS,
                    connection_handle=connection.handle,
                    connection_interval=self.interval_units,
                    peripheral_latency=latency,
                    supervision_timeout=timeout,
                )
            )

    # --- endings ---------------------------------------------------------------------
    def start_supervision(self) -> None:
        """The peers stopped hearing each other: end the link ``timeout`` after the last
        event they shared, unless they hear each other again before."""
        if self.closed or self.supervision is not None:
            return
        loop = asyncio.get_running_loop()
        last = self.last_event_before(loop.time())
        self.supervision = loop.call_at(last + self.timeout, self._supervision_expired)
        logger.debug("link %s: supervision timer, %.3f s", self, self.timeout)

    def stop_supervision(self) -> None:
        if self.supervision is not None:
            self.supervision.cancel()
            self.supervision = None

    def _supervision_expired(self) -> None:
        self.supervision = None
        logger.info("link %s: supervision timeout", self)
        self.end(CONNECTION_TIMEOUT)

    def end(self, reason: int) -> None:
        """Both ends lose the link now, with ``reason`` (0x08 for a supervision timeout)."""
        self.link.forget(self)
        for direction in self.directions():
            connection = direction.connection()
            if connection is not None:
                direction.sender.on_le_disconnected(connection, reason)

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.stop_supervision()
        for direction in self.directions():
            direction.queue.clear()

    def __str__(self) -> str:
        return f"{self.central.name}->{self.peripheral.name}"
