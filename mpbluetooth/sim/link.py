"""The simulated radio medium: Bumble's ``LocalLink`` with its routing fixed and, in air
timing, with time.

Routing: Bumble's link stamps every LE data packet with the sender's *random* address, so
the receiver cannot find the connection when the link was made with a public address (our
simulated controllers have one, SPEC D6) and the data is dropped. Here the source is the
address the sender's connection actually uses.

Timing (``timing="air"``, see ``docs/simulation.md``): every connection has connection
events at its interval. LL PDUs (data fragments and control PDUs) queue per direction and
leave only at an event, at most ``pdus_per_event`` per direction, central first; a PDU
queued during an event leaves at a later one, so an answer is always at least one interval
behind its request. The sender's host learns a fragment has gone (Number Of Completed
Packets) only when it was acknowledged, so host flow control sees the air's pace. A lost
PDU stays at the head of its queue and closes the direction for that event: it is sent
again at the next event, never dropped. Nothing runs for an idle connection: the next
event is computed, and a timer set, only when something waits to be sent. A peer that
vanishes (its process died, it was killed, it moved out of range) ends the link on the
other side at the supervision timeout, reason 0x08.

``timing="instant"`` is the behaviour from before: every packet is delivered at once
(``call_soon``), adverts carry RSSI -50, and a departing controller's peers are told at
once by whoever removes it (the hub).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bumble import core, hci, ll
from bumble.link import LocalLink

from .air import (
    ADV_DELAY_MAX,
    ADV_INTERVAL_MIN,
    CONNECTION_FAILED_TO_BE_ESTABLISHED,
    CONNECTION_TIMEOUT,
    DEFAULT_PDUS_PER_EVENT,
    ESTABLISH_EVENTS,
    FAR_AWAY,
    TIMING_ENV,
    TIMINGS,
    AirConnection,
    Position,
    RadioModel,
    Timing,
    _Pdu,
    check_timing,
    default_position,
    default_timing,
)

if TYPE_CHECKING:
    from bumble.controller import Connection, Controller

logger = logging.getLogger(__name__)


class SimLink(LocalLink):
    """A ``LocalLink`` whose LE data carries the right source address, with air timing.

    ``timing`` is ``"air"`` or ``"instant"`` (default: ``$MPBLUETOOTH_SIM_TIMING``, else
    air); ``pdus_per_event`` bounds each connection event per direction; ``radio`` is the
    path-loss model; ``seed`` makes loss, jitter and advDelay reproducible.
    """

    def __init__(
        self,
        timing: str | None = None,
        *,
        pdus_per_event: int = DEFAULT_PDUS_PER_EVENT,
        radio: RadioModel | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.timing: Timing = check_timing(timing) if timing else default_timing()
        if pdus_per_event < 1:
            raise ValueError("pdus_per_event must be at least 1")
        self.pdus_per_event = pdus_per_event
        self.radio = radio or RadioModel()
        self.rng = random.Random(seed)
        self.connections: dict[frozenset[hci.Address], AirConnection] = {}
        # Weak: a controller is made at every active(True); the link must not keep old ones
        # (and their hosts and devices) alive.
        self.positions: weakref.WeakKeyDictionary[Controller, Position] = (
            weakref.WeakKeyDictionary()
        )
        self.dead: weakref.WeakSet[Controller] = weakref.WeakSet()
        self._placed = 0
        #: Loss rate (0..1) and extra latency (s) per pair of controllers; None = all pairs.
        self.loss: dict[frozenset[Controller] | None, float] = {None: 0.0}
        self.latency: dict[frozenset[Controller] | None, float] = {None: 0.0}

    @property
    def air(self) -> bool:
        return self.timing == "air"

    # --- geometry and faults -------------------------------------------------------
    def add_controller(self, controller: Controller) -> None:
        super().add_controller(controller)
        if controller not in self.positions:
            self._placed += 1
            self.positions[controller] = default_position(self._placed)

    def distance(self, a: Controller, b: Controller) -> float:
        pa = self.positions.get(a, FAR_AWAY)
        pb = self.positions.get(b, FAR_AWAY)
        return math.dist(pa, pb)

    def hear_each_other(
        self, a: Controller, b: Controller, connection: AirConnection | None = None
    ) -> bool:
        """Whether ``a`` and ``b`` can exchange packets now (both on the air, in range)."""
        if a in self.dead or b in self.dead:
            return False
        for c in (a, b):
            if c not in self.controllers and not (
                connection is not None
                and any(d.finishing and d.sender is c for d in connection.directions())
            ):
                return False
        return self.radio.audible(self.distance(a, b))

    def rssi(self, a: Controller, b: Controller) -> int:
        return self.radio.sample(self.distance(a, b), self.rng)

    def _pair_value(
        self, table: dict[frozenset[Controller] | None, float], a: Any, b: Any
    ) -> float:
        return table.get(frozenset((a, b)), table[None])

    def loss_between(self, a: Controller, b: Controller) -> float:
        return self._pair_value(self.loss, a, b)

    def latency_between(self, a: Controller, b: Controller) -> float:
        return self._pair_value(self.latency, a, b)

    def set_loss(
        self, rate: float, a: Controller | None = None, b: Controller | None = None
    ) -> None:
        """Loss rate 0 <= rate < 1 for PDUs and adverts between ``a`` and ``b`` (all pairs
        when both are None). A lost PDU is sent again at a later connection event."""
        if not 0.0 <= rate < 1.0:
            raise ValueError("loss rate must be in [0, 1)")
        self.loss[None if a is None or b is None else frozenset((a, b))] = rate

    def set_latency(
        self, seconds: float, a: Controller | None = None, b: Controller | None = None
    ) -> None:
        """Extra latency: a PDU queued now may leave at the first event ``seconds`` later."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency[None if a is None or b is None else frozenset((a, b))] = seconds

    def move(self, controller: Controller, position: Position) -> None:
        """Put ``controller`` at ``position`` (metres); links going out of range start their
        supervision timer, links coming back stop it and carry on."""
        self.positions[controller] = position
        self._reassess(controller)

    def kill(self, controller: Controller) -> None:
        """The controller's radio dies: nothing it sends is heard, it hears nothing, its
        links end at the supervision timeout on both sides. Its host is not told."""
        if hasattr(controller, "go_silent"):
            controller.go_silent()
        if not self.air:
            self.dead.add(controller)
            for connection in self._connections_of(controller):
                connection.end(CONNECTION_TIMEOUT)
            self._instant_kill(controller)
            return
        self.dead.add(controller)
        self._reassess(controller)

    def _instant_kill(self, controller: Controller) -> None:
        for peer_address, connection in list(controller.le_connections.items()):
            peer = self.find_le_controller(peer_address)
            controller.on_le_disconnected(connection, CONNECTION_TIMEOUT)
            if peer is not None and (
                peer_connection := peer.le_connections.get(connection.self_address)
            ):
                peer.on_le_disconnected(peer_connection, CONNECTION_TIMEOUT)

    def disconnect(self, a: Controller, b: Controller, reason: int) -> bool:
        """Force the link between ``a`` and ``b`` down: both ends get their disconnection
        with ``reason`` at the next connection event (at once in instant timing)."""
        connection = next(
            (c for c in self.connections.values() if c.involves(a) and c.involves(b)), None
        )
        if connection is not None:
            loop = asyncio.get_running_loop()
            index = max(
                connection.last_index + 1,
                math.floor((loop.time() - connection.anchor) / connection.interval) + 1,
            )
            loop.call_at(connection.event_time(index), connection.end, reason)
            return True
        found = False
        for connection_a in list(a.le_connections.values()):
            if b.le_connections.get(connection_a.self_address) is not None:
                found = True
                a.on_le_disconnected(connection_a, reason)
                b.on_le_disconnected(b.le_connections[connection_a.self_address], reason)
        return found

    def _connections_of(self, controller: Controller) -> list[AirConnection]:
        return [c for c in self.connections.values() if c.involves(controller)]

    def _reassess(self, controller: Controller) -> None:
        for connection in self._connections_of(controller):
            if self.hear_each_other(connection.central, connection.peripheral, connection):
                connection.stop_supervision()
                connection.kick()
            else:
                connection.start_supervision()

    # --- membership ------------------------------------------------------------------
    def remove_controller(self, controller: Controller) -> None:
        """The controller leaves the air (power-off, its process died). In air timing an
        LL_TERMINATE_IND it already queued still goes out; otherwise its peers find out at
        the supervision timeout, as on air."""
        if controller in self.controllers:
            super().remove_controller(controller)
        for table in (self.loss, self.latency):
            for key in [k for k in table if k is not None and controller in k]:
                del table[key]
        if not self.air:
            return
        for connection in self._connections_of(controller):
            for direction in connection.directions():
                if direction.sender is controller:
                    terminate = next(
                        (p for p in direction.queue if isinstance(p.control, ll.TerminateInd)), None
                    )
                    if terminate is not None:
                        direction.finishing = True
                    else:
                        direction.queue.clear()
            if not self.hear_each_other(connection.central, connection.peripheral, connection):
                connection.start_supervision()

    def forget(self, connection: AirConnection) -> None:
        if self.connections.get(connection.key) is connection:
            del self.connections[connection.key]
        connection.close()

    def air_connection(self, a: hci.Address, b: hci.Address) -> AirConnection | None:
        return self.connections.get(frozenset((a, b)))

    # --- LE traffic ----------------------------------------------------------------
    def send_fragment(
        self, sender: Controller, connection: Connection, fragment: hci.HCI_AclDataPacket
    ) -> bool:
        """Queue one host ACL fragment for the air; False if the link does not know it."""
        air = self.air_connection(connection.self_address, connection.peer_address)
        if air is None:
            return False
        self._queue(air, sender, _Pdu(0.0, fragment=fragment))
        return True

    def send_control(
        self,
        sender: Controller,
        connection: Connection,
        packet: ll.ControlPdu,
        on_sent: Callable[[], None] | None = None,
    ) -> bool:
        air = self.air_connection(connection.self_address, connection.peer_address)
        if air is None:
            return False
        self._queue(air, sender, _Pdu(0.0, control=packet, on_sent=on_sent))
        return True

    def _queue(self, air: AirConnection, sender: Controller, pdu: _Pdu) -> None:
        direction = air.to_peripheral if sender is air.central else air.to_central
        now = asyncio.get_running_loop().time()
        pdu.ready_at = now + self.latency_between(air.central, air.peripheral)
        if direction.queue:
            pdu.ready_at = max(pdu.ready_at, direction.queue[-1].ready_at)
        direction.queue.append(pdu)
        air.kick()

    def send_acl_data(
        self,
        sender_controller: Any,
        destination_address: Any,
        transport: core.PhysicalTransport,
        data: bytes,
    ) -> None:
        if transport != core.PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        connection = sender_controller.le_connections.get(destination_address)
        source = connection.self_address if connection else sender_controller.random_address
        if self.air and connection is not None:
            air = self.air_connection(connection.self_address, destination_address)
            if air is not None:
                # Called at a connection event, from the sender's reassembler: deliver now.
                receiver = air.other(sender_controller)
                receiver.on_link_acl_data(source, transport, data)
                return
        destination = self.find_le_controller(destination_address)
        if destination is not None:
            asyncio.get_running_loop().call_soon(
                destination.on_link_acl_data, source, transport, data
            )

    def send_ll_control_pdu(
        self, sender_address: hci.Address, receiver_address: hci.Address, packet: ll.ControlPdu
    ) -> None:
        if self.air:
            air = self.air_connection(sender_address, receiver_address)
            if air is not None:
                sender = (
                    air.central
                    if air.to_peripheral.sender_address == sender_address
                    else air.peripheral
                )
                self._queue(air, sender, _Pdu(0.0, control=packet))
                return
        super().send_ll_control_pdu(sender_address, receiver_address, packet)

    def send_advertising_pdu(self, sender_controller: Any, packet: ll.AdvertisingPdu) -> None:
        if not self.air:
            super().send_advertising_pdu(sender_controller, packet)
            return
        loop = asyncio.get_running_loop()
        if isinstance(packet, ll.ConnectInd):
            self._connect(sender_controller, packet)
            return
        if sender_controller in self.dead:
            return
        for receiver in list(self.controllers):
            if receiver is sender_controller or not self.hear_each_other(
                sender_controller, receiver
            ):
                continue
            loss = self.loss_between(sender_controller, receiver)
            if loss and self.rng.random() < loss:
                continue
            rssi = self.rssi(sender_controller, receiver)
            receive = getattr(receiver, "receive_advertising_pdu", None)
            if receive is not None:
                loop.call_soon(receive, packet, rssi)
            else:
                loop.call_soon(receiver.on_ll_advertising_pdu, packet)

    def _connect(self, central: Controller, packet: ll.ConnectInd) -> None:
        """CONNECT_IND: the connection's clock starts; the advertiser learns of it now."""
        peripheral = next(
            (
                c
                for c in self.controllers
                if c is not central and _advertises_as(c, packet.advertiser_address)
            ),
            None,
        )
        if peripheral is None:
            peripheral = self.find_le_controller(packet.advertiser_address)
        if peripheral is None:
            return
        air = AirConnection(
            self,
            central,
            packet.initiator_address,
            peripheral,
            packet.advertiser_address,
            packet.interval,
            packet.latency,
            packet.timeout,
        )
        old = self.connections.get(air.key)
        if old is not None:
            self.forget(old)
        self.connections[air.key] = air
        loop = asyncio.get_running_loop()

        def deliver() -> None:
            peripheral.on_ll_advertising_pdu(packet)
            if packet.initiator_address not in peripheral.le_connections:
                # Nobody answers at the first events: the central gives up (0x3E).
                loop.call_later(ESTABLISH_EVENTS * air.interval, fail)

        def fail() -> None:
            if (
                self.connections.get(air.key) is air
                and packet.initiator_address not in peripheral.le_connections
            ):
                air.end(CONNECTION_FAILED_TO_BE_ESTABLISHED)

        loop.call_soon(deliver)


def _advertises_as(controller: Controller, address: hci.Address) -> bool:
    legacy = controller.le_legacy_advertiser
    if legacy.enabled and legacy.address == address:
        return True
    return any(s.enabled and s.address == address for s in controller.advertising_sets.values())


# What other modules (and users: ``sim.link.RadioModel``) take from here, defined in ``air``.
__all__ = [
    "ADV_DELAY_MAX",
    "ADV_INTERVAL_MIN",
    "DEFAULT_PDUS_PER_EVENT",
    "FAR_AWAY",
    "TIMINGS",
    "TIMING_ENV",
    "RadioModel",
    "SimLink",
    "check_timing",
    "default_timing",
]
