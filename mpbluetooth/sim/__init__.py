"""Simulation: BLE instances on a simulated link, with no hardware (desktop only).

``BLE()`` with no transport configured already runs on the process's default link. This
module adds instances beyond the process singleton, each with the full ``BLE`` interface,
so a test or a notebook can have a peripheral and a central talk in one process::

    from mpbluetooth import sim

    link = sim.Link()
    peripheral = link.instance("peripheral")
    central = link.instance("central")
    peripheral.active(True); central.active(True)
    ...
    link.close()          # deactivates every instance made by this link

A link has a timing (``docs/simulation.md``): ``"air"`` (the default, or
``$MPBLUETOOTH_SIM_TIMING``) models connection events, advertising and scan timing,
supervision timeouts and RSSI from positions; ``"instant"`` delivers every packet at once,
for fast tests. Faults are set on the link: ``set_loss``, ``set_latency``, ``move``,
``out_of_range``, ``disconnect``, ``kill``.

``sim.Link(engine="rootcanal")`` makes the same kind of object on a RootCanal started for
it (Android's virtual controller, ``docs/rootcanal.md``): instances join it over TCP, the
link's faults and timing do not apply, and ``close()`` stops it.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .._engine import register_engine, unregister_engine
from .transport import Medium, default_engine, new_public_address

if TYPE_CHECKING:
    from ..ble import BLE
    from .controller import SimController
    from .link import RadioModel, SimLink
    from .rootcanal import RootCanal

#: ``Link(engine=...)``: our simulated controller and link, or a RootCanal process.
ENGINES = ("sim", "rootcanal")

__all__ = ["Link", "default_link", "new_public_address"]

_link_numbers = itertools.count(1)


class Link:
    """One simulated radio medium; every instance made from it can see the others.

    ``timing``: ``"air"`` or ``"instant"`` (default ``$MPBLUETOOTH_SIM_TIMING``, else air).
    ``pdus_per_event``: LL PDUs per connection event and direction (air). ``radio``: the
    path-loss model (``sim.link.RadioModel``). ``seed``: makes loss, RSSI jitter and
    advDelay reproducible.

    The fault methods take ``BLE`` instances made by this link (active ones: an instance's
    controller exists only while it is active) and may be called from any thread.

    ``engine="rootcanal"`` starts a RootCanal now (``RootCanalError`` in one line if it
    cannot start) and makes every instance a controller of it; only our simulator has the
    fault methods and timings.
    """

    def __init__(
        self,
        timing: str | None = None,
        *,
        pdus_per_event: int | None = None,
        radio: RadioModel | None = None,
        seed: int | None = None,
        engine: str = "sim",
        _medium: Medium | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.engine = engine
        self.rootcanal: RootCanal | None = None
        if engine == "rootcanal":
            from .rootcanal import RootCanal

            self.rootcanal = RootCanal()
            self.rootcanal.start()

        self._medium = _medium or Medium(
            timing, pdus_per_event=pdus_per_event, radio=radio, seed=seed
        )
        self.timing = self._medium.timing
        #: The transport spec of this link, for ``mpbluetooth.open(link.spec)``.
        self.spec = f"sim:{next(_link_numbers)}"
        if self.rootcanal is not None:
            self.spec = self.rootcanal.spec
        else:
            register_engine(self.spec, self._medium)
        self._instances: list[BLE] = []

    def bumble_link(self) -> SimLink:
        """The Bumble link (created lazily, on the stack's loop thread)."""
        return self._medium.bumble_link()

    # --- faults (pytest-friendly; any thread) ------------------------------------------
    def _on_loop(self, what: str, fn: Any) -> Any:
        from .._runtime import runtime

        return runtime().call(fn, what=what)

    @staticmethod
    def controller_of(ble: BLE) -> SimController:
        """The simulated controller behind an active instance of this link."""
        transport = ble._stack.transport
        controller = getattr(transport, "source", None)
        if controller is None or not hasattr(controller, "receive_advertising_pdu"):
            raise ValueError(f"{ble!r} is not active on a simulated link")
        return controller

    def set_loss(self, rate: float, a: BLE | None = None, b: BLE | None = None) -> None:
        """Lose ``rate`` (0 <= rate < 1) of the PDUs and adverts between ``a`` and ``b``
        (between everyone when not given). Lost PDUs are sent again at later connection
        events, so data is delayed, never lost. Air timing."""
        self._need_air("loss")
        ca = self.controller_of(a) if a is not None else None
        cb = self.controller_of(b) if b is not None else None
        self._on_loop("set loss", lambda: self.bumble_link().set_loss(rate, ca, cb))

    def set_latency(self, seconds: float, a: BLE | None = None, b: BLE | None = None) -> None:
        """Add ``seconds`` before a queued PDU may leave (between ``a`` and ``b``, or all).
        Air timing."""
        self._need_air("latency")
        ca = self.controller_of(a) if a is not None else None
        cb = self.controller_of(b) if b is not None else None
        self._on_loop("set latency", lambda: self.bumble_link().set_latency(seconds, ca, cb))

    def move(self, ble: BLE, x: float, y: float = 0.0, z: float = 0.0) -> None:
        """Put the instance at (x, y, z) metres. Out of range (``RadioModel.range_m``, about
        316 m by default) nothing is heard and its links end at the supervision timeout
        unless it comes back first. Air timing."""
        self._need_air("move")
        controller = self.controller_of(ble)
        self._on_loop("move", lambda: self.bumble_link().move(controller, (x, y, z)))

    def out_of_range(self, ble: BLE) -> None:
        """Move the instance far out of everyone's range."""
        from .air import FAR_AWAY

        self.move(ble, *FAR_AWAY)

    def position(self, ble: BLE) -> tuple[float, float, float]:
        controller = self.controller_of(ble)
        return self._on_loop("position", lambda: self.bumble_link().positions[controller])

    def disconnect(self, a: BLE, b: BLE, reason: int = 0x08) -> bool:
        """Force the link between ``a`` and ``b`` down: both get their DISCONNECT with
        ``reason`` (default 0x08, connection timeout). False if they are not connected."""
        ca, cb = self.controller_of(a), self.controller_of(b)
        return bool(
            self._on_loop("disconnect", lambda: self.bumble_link().disconnect(ca, cb, reason))
        )

    def connection_parameters(self, a: BLE, b: BLE) -> tuple[float, int, float] | None:
        """(interval s, peripheral latency, supervision timeout s) of the link between
        ``a`` and ``b`` as the air sees it, or None when they are not connected (air)."""
        ca, cb = self.controller_of(a), self.controller_of(b)

        def find() -> tuple[float, int, float] | None:
            for c in self.bumble_link().connections.values():
                if c.involves(ca) and c.involves(cb):
                    return (c.interval, c.latency, c.timeout)
            return None

        return self._on_loop("connection parameters", find)

    def disconnect_reasons(self, ble: BLE) -> list[tuple[int, int]]:
        """(connection handle, HCI reason) of every disconnection the instance's controller
        reported to its host since ``active(True)``; MicroPython's DISCONNECT event has no
        reason, this is where a test finds it (0x08 connection timeout, 0x13 remote user...)."""
        controller = self.controller_of(ble)
        return self._on_loop("disconnect reasons", lambda: list(controller.disconnections))

    def kill(self, ble: BLE) -> None:
        """The instance's radio dies: it stops advertising and scanning, hears and is
        heard by no one, and its links end at the supervision timeout (reason 0x08) on
        both sides (at once in instant timing). Its host is not told."""
        controller = self.controller_of(ble)
        self._on_loop("kill", lambda: self.bumble_link().kill(controller))

    def _need_air(self, what: str) -> None:
        if self.timing != "air":
            raise ValueError(f"{what} needs timing='air' (this link is {self.timing!r})")

    def instance(self, name: str | None = None, board: str | None = None) -> BLE:
        """A new, inactive ``BLE`` instance on this link (not the process singleton), of
        the board profile ``board`` (None: ``MPBLUETOOTH_BOARD``, else ``unix``)."""
        from ..ble import open as open_instance

        ble = open_instance(self.spec, name or f"sim{len(self._instances) + 1}", board)
        self._instances.append(ble)
        return ble

    def close(self) -> None:
        """Deactivate every instance made by this link."""
        try:
            for ble in self._instances:
                ble.close()
            self._instances.clear()
        finally:
            if self.rootcanal is not None:
                self.rootcanal.stop()
            elif self is not _default_link:
                unregister_engine(self.spec)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default_link: Link | None = None


def default_link() -> Link:
    """The process's default link, used by ``BLE()`` when no transport is configured."""
    global _default_link
    if _default_link is None:
        _default_link = Link(_medium=default_engine())
    return _default_link
