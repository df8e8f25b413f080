"""What every workload shares: settings, results, the loop, and the two stacks on one kind of link.

The facade side is ordinary MicroPython-style code: ``BLE`` instances from ``sim.Link``, a
sending loop in the main thread, an IRQ handler on each instance's dispatcher thread. The raw
side is what a Bumble program would write: coroutines on the same loop thread that
mpbluetooth uses (``mpbluetooth.testing.lowlevel.on_loop``), plain ``Device``/``Host``
objects, and our ``SimController`` on a ``SimLink`` as mpbluetooth builds them for a
simulated instance, so both sides move their packets through identical simulated
controllers.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from mpbluetooth import UUID, sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    FLAG_NOTIFY,
    FLAG_READ,
    FLAG_WRITE,
    FLAG_WRITE_NO_RESPONSE,
    IRQ_CENTRAL_CONNECT,
    IRQ_L2CAP_CONNECT,
    IRQ_MTU_EXCHANGED,
    IRQ_PERIPHERAL_CONNECT,
)
from mpbluetooth.testing import Recorder
from mpbluetooth.testing.lowlevel import on_loop

from .hop import UNIT, Spread, floor_figures
from .hop import as_json as hop_json

ENOMEM = 12

#: The ACL backlog both senders respect (mpbluetooth's ``ACL_BACKLOG_LIMIT``; the raw
#: sender waits for Bumble's ``flow`` event instead of catching ENOMEM).
ACL_BACKLOG = 128
#: ATT MTU after the exchange, and the payload that fills one notification or write.
MTU = 247
MTU_PAYLOAD = MTU - 3
SERVICE_UUID = "6E400001-B5A3-F393-E0A9-E50E24DCCA9E"
CHAR_UUID = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"
WAIT = 10.0


#: Repetitions of every figure unless ``--reps`` says otherwise: a median of five runs
#: and their range say how far a row can be trusted on a shared machine.
REPS = 5


@dataclass
class Settings:
    """How long and how often each measurement runs."""

    quick: bool
    reps: int
    seconds: float

    @classmethod
    def make(cls, quick: bool, reps: int | None = None, seconds: float | None = None) -> Settings:
        """``--quick`` keeps the repetitions and shortens the window instead, so its figures
        carry a spread as a full run's do."""
        return cls(
            quick=quick,
            reps=reps if reps is not None else REPS,
            seconds=seconds if seconds is not None else (0.3 if quick else 2.0),
        )


@dataclass
class Result:
    """One row of the table: the facade's figure, raw Bumble's, and what they count."""

    name: str
    facade: float | None
    raw: float | None
    unit: str
    workload: int
    #: Payload size in bytes for throughput rows (the chart's x axis), else None.
    payload: int | None = None
    #: Every repetition, for the record (medians are what the table shows, with the
    #: lowest and highest run as the spread).
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    #: Round-trip rows only: how many bare main -> loop -> main round trips one facade
    #: operation makes at least (``gatt.CROSSINGS``, ``mainthread``); None for other rows.
    crossings: float | None = None
    #: Round-trip rows only: the bare hops (``hop.PRIMITIVES``, microseconds) measured
    #: right after each repetition, one entry per repetition.
    hops: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.facade is None or self.raw is None or self.raw == 0:
            return None
        return self.facade / self.raw

    def spread(self, side: str) -> Spread | None:
        """Median and range of one side's repetitions; None if it kept none."""
        values = self.samples.get(side)
        return Spread.of(values) if values else None

    def runs(self) -> int:
        """Repetitions behind the row's figures (the most either side made)."""
        return max((len(v) for v in self.samples.values()), default=0)

    def floor(self) -> dict[str, Spread] | None:
        """A round-trip row's figures against the floor (``hop.floor_figures``); None for
        other rows, or when the hop was not measured with every repetition."""
        unit_hops = self.hops.get(UNIT, [])
        facade, raw = self.samples.get("facade", []), self.samples.get("raw", [])
        if (
            self.crossings is None
            or not unit_hops
            or len({len(facade), len(raw), len(unit_hops)}) > 1
        ):
            return None
        return floor_figures(facade, raw, unit_hops, self.crossings)

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "facade": self.facade,
            "raw": self.raw,
            "ratio": self.ratio,
            "unit": self.unit,
            "workload": self.workload,
        }
        if self.payload is not None:
            entry["payload"] = self.payload
        if self.samples:
            entry["samples"] = self.samples
            entry["spread"] = {
                side: [min(values), max(values)] for side, values in self.samples.items() if values
            }
        if self.crossings is not None:
            entry["crossings"] = self.crossings
            entry["hops"] = hop_json(self.hops)
            figures = self.floor()
            if figures is not None:
                entry["floor"] = {key: spread.as_json() for key, spread in figures.items()}
        if self.note:
            entry["note"] = self.note
        return entry


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an unsorted list."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def interleaved(
    reps: int,
    facade: Callable[[], float],
    raw: Callable[[], float],
    after: Callable[[], object] | None = None,
) -> tuple[list[float], list[float]]:
    """Run the two measurements alternately, so a disturbance on this shared machine
    hits both sides alike rather than one whole series; ``after`` runs after each pair
    (the round-trip rows measure the bare hop there, under the same conditions)."""
    facade_runs: list[float] = []
    raw_runs: list[float] = []
    for _ in range(reps):
        facade_runs.append(facade())
        raw_runs.append(raw())
        if after is not None:
            after()
    return facade_runs, raw_runs


def call(coro: Coroutine[Any, Any, Any], what: str, timeout: float = 120.0) -> Any:
    """Run a coroutine on mpbluetooth's loop thread and wait for its result."""
    return on_loop(lambda: coro, f"benchmark: {what}", timeout)


def rss_kib() -> int:
    """This process's resident set size now (VmRSS), in KiB."""
    return _status_field("VmRSS")


def hwm_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    return _status_field("VmHWM")


def _status_field(name: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status")


# --- the facade side -----------------------------------------------------------------------
def handler() -> Recorder:
    """A MicroPython-style IRQ handler for a benchmark: it counts every event and stamps
    the last one, and keeps the data of the few events a workload reads back (keeping every
    notification would measure the copying). ``on[event]`` runs the program's own code
    inside the handler."""
    return Recorder(keep={IRQ_CENTRAL_CONNECT, IRQ_PERIPHERAL_CONNECT, IRQ_L2CAP_CONNECT})


def round_trip(start_one: Callable[[], object], recorder: Recorder, event: int) -> None:
    """Start a request and wait until the handler saw its ``event`` (the next one)."""
    before = recorder.count(event)
    start_one()
    recorder.wait_count(event, before + 1)


@dataclass
class FacadePair:
    """A GATT server (peripheral) and a connected client (central), both ``BLE`` objects."""

    link: sim.Link
    server: BLE
    client: BLE
    sh: Recorder
    ch: Recorder
    value_handle: int
    s_conn: int
    c_conn: int

    def close(self) -> None:
        self.sh.on.clear()
        self.ch.on.clear()
        self.link.close()


def facade_pair(mtu: int | None = MTU, name: str = "f") -> FacadePair:
    """Two instances on a fresh link, one characteristic (read, write, write without
    response, notify), connected; the MTU exchanged to ``mtu`` when given."""
    link = sim.Link()
    server, client = link.instance(f"{name}-server"), link.instance(f"{name}-client")
    sh, ch = handler(), handler()
    server.irq(sh)
    client.irq(ch)
    server.active(True)
    client.active(True)
    flags = FLAG_READ | FLAG_WRITE | FLAG_WRITE_NO_RESPONSE | FLAG_NOTIFY
    ((value_handle,),) = server.gatts_register_services(
        ((UUID(SERVICE_UUID), ((UUID(CHAR_UUID), flags),)),)
    )
    server.gatts_write(value_handle, bytes(MTU_PAYLOAD))
    server.gap_advertise(20000, b"\x02\x01\x06")
    client.gap_connect(*server.config("mac"))
    c_conn = ch.wait(IRQ_PERIPHERAL_CONNECT)[0]
    s_conn = sh.wait(IRQ_CENTRAL_CONNECT)[0]
    if mtu is not None:
        server.config(mtu=mtu)
        client.config(mtu=mtu)
        client.gattc_exchange_mtu(c_conn)
        ch.wait_count(IRQ_MTU_EXCHANGED, 1)
        sh.wait_count(IRQ_MTU_EXCHANGED, 1)
    return FacadePair(link, server, client, sh, ch, value_handle, s_conn, c_conn)


def retry_enomem(send: Callable[[], None]) -> int:
    """Call ``send`` until it stops raising ENOMEM (MicroPython's answer to full ACL
    buffers); return how many times it was refused."""
    refused = 0
    while True:
        try:
            send()
            return refused
        except OSError as exc:
            if exc.errno != ENOMEM:
                raise
            refused += 1


# --- the raw Bumble side -------------------------------------------------------------------
_raw_names = iter(range(1, 1_000_000))


async def raw_device(link: Any, name: str) -> Any:
    """A powered-on Bumble ``Device`` behind our ``SimController`` on ``link``: the same
    objects mpbluetooth makes for a simulated instance."""
    from bumble.device import Device, DeviceConfiguration
    from bumble.hci import Address
    from bumble.host import Host
    from bumble.transport.common import AsyncPipeSink

    from mpbluetooth.sim import new_public_address
    from mpbluetooth.sim.controller import SimController

    controller = SimController(
        f"{name}-{next(_raw_names)}",
        link=link,
        public_address=Address(new_public_address()[::-1], Address.PUBLIC_DEVICE_ADDRESS),
    )
    host = Host(controller, AsyncPipeSink(controller))
    config = DeviceConfiguration(name=name, address=Address.generate_static_address())
    device = Device(config=config, host=host)
    await device.power_on()
    return device


async def raw_connect(central: Any, peripheral: Any) -> tuple[Any, Any]:
    """Advertise on ``peripheral``, connect from ``central``; return both connections."""
    from bumble.core import PhysicalTransport
    from bumble.hci import OwnAddressType

    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Any] = loop.create_future()
    peripheral.once("connection", lambda connection: accepted.set_result(connection))
    await peripheral.start_advertising(
        own_address_type=OwnAddressType.PUBLIC,
        advertising_interval_min=20,
        advertising_interval_max=20,
    )
    c_connection = await central.connect(
        peripheral.public_address,
        transport=PhysicalTransport.LE,
        own_address_type=OwnAddressType.PUBLIC,
        timeout=WAIT,
    )
    p_connection = await asyncio.wait_for(accepted, WAIT)
    return c_connection, p_connection


async def wait_for_flow(device: Any) -> None:
    """Wait until the host's ACL queue completes packets (Bumble's own backpressure)."""
    packet_queue = device.host.le_acl_packet_queue
    flowed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_flow(*_: Any) -> None:
        if not flowed.done():
            flowed.set_result(None)

    packet_queue.once("flow", on_flow)
    try:
        await asyncio.wait_for(flowed, WAIT)
    finally:
        packet_queue.remove_listener("flow", on_flow)


def backlog(device: Any) -> int:
    return int(device.host.le_acl_packet_queue.pending)


@dataclass
class RawPair:
    """Raw Bumble counterpart of ``FacadePair``."""

    link: Any
    server: Any
    client: Any
    s_connection: Any
    c_connection: Any
    attribute: Any  # the server's characteristic
    proxy: Any  # the client's characteristic proxy
    written: list[int]  # writes received by the server
    notified: list[int]  # notifications received by the client
    last: list[float]  # perf_counter of the last one received
    stored: list[bytes]  # the server's value

    async def close(self) -> None:
        for device in (self.client, self.server):
            for connection in list(device.connections.values()):
                try:
                    await connection.disconnect()
                except Exception:  # the peer may be gone already
                    pass
            await device.power_off()


async def raw_pair(
    mtu: int | None = MTU, name: str = "r", subscriber: Callable[[bytes], Any] | None = None
) -> RawPair:
    """Bumble's API only: a GATT server with one characteristic, a client that discovered
    and subscribed to it (with ``subscriber``, else a counter), the MTU exchanged to ``mtu``
    when given."""
    from bumble.core import UUID as BumbleUUID
    from bumble.device import Peer
    from bumble.gatt import Characteristic, CharacteristicValue, Service

    from mpbluetooth.sim.link import SimLink

    link = SimLink()
    server = await raw_device(link, f"{name}-server")
    client = await raw_device(link, f"{name}-client")
    written = [0]
    notified = [0]
    last = [0.0]
    stored = [bytes(MTU_PAYLOAD)]

    def on_write(connection: Any, value: bytes) -> None:
        stored[0] = value
        written[0] += 1
        last[0] = time.perf_counter()

    def on_read(connection: Any) -> bytes:
        return stored[0]

    properties = (
        Characteristic.Properties.READ
        | Characteristic.Properties.WRITE
        | Characteristic.Properties.WRITE_WITHOUT_RESPONSE
        | Characteristic.Properties.NOTIFY
    )
    attribute: Characteristic[bytes] = Characteristic(
        CHAR_UUID,
        properties,
        Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE,
        CharacteristicValue(read=on_read, write=on_write),
    )
    server.add_service(Service(SERVICE_UUID, [attribute]))
    c_connection, s_connection = await raw_connect(client, server)
    if mtu is not None:
        server.gatt_server.max_mtu = mtu
        await c_connection.gatt_client.request_mtu(mtu)
    peer = Peer(c_connection)
    service_uuid = BumbleUUID(SERVICE_UUID)
    await peer.discover_services([service_uuid])
    service = peer.get_services_by_uuid(service_uuid)[0]
    (proxy,) = await service.discover_characteristics([BumbleUUID(CHAR_UUID)])

    def on_notification(value: bytes) -> None:
        notified[0] += 1
        last[0] = time.perf_counter()

    await proxy.subscribe(subscriber or on_notification)
    return RawPair(
        link,
        server,
        client,
        s_connection,
        c_connection,
        attribute,
        proxy,
        written,
        notified,
        last,
        stored,
    )


def in_loop_thread(fn: Callable[[], Any]) -> Any:
    """Run a plain function on the loop thread and return its result."""
    return on_loop(fn, "benchmark: run on the loop")
