"""Workload 6: event dispatch latency, idle and under a 10k events/s load.

Measured from the moment Bumble hands a notification to us (the GATT client's
``on_att_handle_value_notification``, wrapped with a timestamp; behaviour unchanged) to the
first line of the user's handler. For the facade that span is our guarded listener, the copy
of the value, the ring, the dispatcher thread's wake-up and the GIL hand-over; for raw
Bumble it is Bumble calling the subscriber it was given, on the loop thread.

The load models a controller delivering notifications: HCI ACL packets are fed into the
receiving host (``Host.on_packet``) from the loop, so the sending side's simulated stack,
which on air would be another device, costs this process nothing. Rates: a steady 500/s when
idle, 10,000/s under load (in the bursts that asyncio's 1 ms timer resolution allows). Each
notification carries a sequence number, so a dropped event cannot skew the pairing of
timestamps. p50 and p99 are medians over the repetitions; max is the worst in any of them.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any

from mpbluetooth.constants import IRQ_GATTC_NOTIFY
from mpbluetooth.testing import wait_until
from mpbluetooth.testing.lowlevel import bumble_device

from ._common import (
    WAIT,
    Result,
    Settings,
    call,
    facade_pair,
    in_loop_thread,
    median,
    percentile,
    raw_pair,
)

IDLE_RATE = 500
LOAD_RATE = 10_000
PAYLOAD = 20
_ATT_HANDLE_VALUE_NOTIFICATION = 0x1B
_ATT_CID = 0x0004
_PB_FIRST_FLUSHABLE = 0b10


def notification_packet(conn_handle: int, value_handle: int, seq: int) -> bytes:
    """An HCI ACL packet (H4) carrying one notification whose value starts with ``seq``."""
    from bumble.hci import HCI_AclDataPacket

    att = struct.pack("<BHI", _ATT_HANDLE_VALUE_NOTIFICATION, value_handle, seq)
    att += bytes(PAYLOAD - 4)
    l2cap = struct.pack("<HH", len(att), _ATT_CID) + att
    return bytes(HCI_AclDataPacket(conn_handle, _PB_FIRST_FLUSHABLE, 0, len(l2cap), l2cap))


async def inject(host: Any, conn_handle: int, value_handle: int, rate: int, seconds: float) -> int:
    """Feed ``rate`` notifications per second into ``host`` for ``seconds``; return the count."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    interval = 1 / rate
    sent = 0
    start = loop.time()
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            host.on_packet(notification_packet(conn_handle, value_handle, sent))
            sent += 1
        await asyncio.sleep(interval)
    return sent


def _stamp(connection: Any, stamps: dict[int, float]) -> None:
    """Wrap the client's notification entry point with a timestamp (loop thread)."""
    client = connection.gatt_client
    inner = client.on_att_handle_value_notification

    def stamped(pdu: Any) -> None:
        stamps[struct.unpack_from("<I", pdu.attribute_value)[0]] = time.perf_counter()
        inner(pdu)

    client.on_att_handle_value_notification = stamped


class FacadeLatency:
    def __init__(self) -> None:
        self.pair = pair = facade_pair(mtu=None, name="lat")
        self.stamps: dict[int, float] = {}
        self.arrivals: list[tuple[int, float]] = []
        arrivals = self.arrivals

        def handler(event: int, data: tuple[Any, ...]) -> None:
            now = time.perf_counter()
            if event == IRQ_GATTC_NOTIFY:
                arrivals.append((struct.unpack_from("<I", data[2])[0], now))

        c_device = bumble_device(pair.client)
        self.host = c_device.host
        in_loop_thread(lambda: _stamp(c_device.lookup_connection(pair.c_conn), self.stamps))
        pair.client.irq(handler)

    def measure(self, rate: int, seconds: float) -> tuple[list[float], int]:
        """Latencies in seconds, and how many events never reached the handler."""
        from mpbluetooth import irq_stats

        self.arrivals.clear()
        self.stamps.clear()
        dropped = irq_stats(self.pair.client).dropped
        sent = call(
            inject(self.host, self.pair.c_conn, self.pair.value_handle, rate, seconds),
            "inject notifications",
        )
        wait_until(
            lambda: len(self.arrivals) + irq_stats(self.pair.client).dropped - dropped >= sent,
            WAIT,
            f"{sent} notifications",
        )
        lost = irq_stats(self.pair.client).dropped - dropped
        return [now - self.stamps[seq] for seq, now in self.arrivals], lost

    def close(self) -> None:
        self.pair.close()


class RawLatency:
    async def open(self) -> RawLatency:
        self.stamps: dict[int, float] = {}
        self.arrivals: list[tuple[int, float]] = []

        def subscriber(value: bytes) -> None:
            now = time.perf_counter()
            self.arrivals.append((struct.unpack_from("<I", value)[0], now))

        self.pair = await raw_pair(mtu=None, name="lat", subscriber=subscriber)
        _stamp(self.pair.c_connection, self.stamps)
        return self

    async def measure(self, rate: int, seconds: float) -> tuple[list[float], int]:
        self.arrivals.clear()
        self.stamps.clear()
        pair = self.pair
        sent = await inject(
            pair.client.host, pair.c_connection.handle, pair.proxy.handle, rate, seconds
        )
        deadline = time.monotonic() + WAIT
        while len(self.arrivals) < sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.arrivals)} of {sent} notifications")
            await asyncio.sleep(0.001)
        return [now - self.stamps[seq] for seq, now in self.arrivals], 0


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    facade = FacadeLatency()
    raw: RawLatency = call(RawLatency().open(), "raw latency pair")
    results: list[Result] = []
    try:
        for label, rate in (("idle", IDLE_RATE), ("10k events/s", LOAD_RATE)):
            stats: dict[str, dict[str, list[float]]] = {"facade": {}, "raw": {}}
            lost = 0
            for _ in range(settings.reps):
                f_samples, f_lost = facade.measure(rate, settings.seconds)
                r_samples, _ = call(raw.measure(rate, settings.seconds), "raw latency")
                lost += f_lost
                for side, samples in (("facade", f_samples), ("raw", r_samples)):
                    ms = [1000 * s for s in samples]
                    for key, value in (
                        ("p50", percentile(ms, 0.50)),
                        ("p99", percentile(ms, 0.99)),
                        ("max", max(ms)),
                    ):
                        stats[side].setdefault(key, []).append(value)
            for key in ("p50", "p99", "max"):
                pick = max if key == "max" else median
                result = Result(
                    f"dispatch latency {key}, {label}",
                    pick(stats["facade"][key]),
                    pick(stats["raw"][key]),
                    "ms",
                    6,
                    samples={side: stats[side][key] for side in stats},
                    note="Bumble callback -> handler start"
                    + (f"; {lost} events dropped by the ring" if lost else ""),
                )
                log(f"  {result.name}: facade {result.facade:.3f} ms  raw {result.raw:.3f} ms")
                results.append(result)
    finally:
        facade.close()
        call(raw.pair.close(), "close raw latency pair")
    return results
