"""Workload 5: L2CAP connection-oriented channel throughput, 512-byte SDUs, MTU 512.

Facade: the central sends with ``l2cap_send`` from the main thread and, when it returns
False, waits for ``_IRQ_L2CAP_SEND_READY``; the peripheral's handler drains each
``_IRQ_L2CAP_RECV`` with ``l2cap_recvinto``. The peer gets new credits only once everything
received has been read, as on MicroPython (NimBLE grants one SDU's worth).

Raw Bumble: ``create_l2cap_channel``/``create_l2cap_server`` with the same MTU and an MPS of
247 (one PDU per 251-byte LE data packet), 64 credits, a sink callback on the receiver, and
``write`` + ``drain`` per SDU on the sender (what Bumble's own ``bench`` app does). A second
row gives raw Bumble NimBLE's credit window (credits for one SDU, 3 here), which separates
what MicroPython's flow control costs from what the facade costs; Bumble still returns
credits as PDUs arrive, so it is an upper bound for a one-SDU window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mpbluetooth.constants import IRQ_L2CAP_CONNECT, IRQ_L2CAP_RECV, IRQ_L2CAP_SEND_READY
from mpbluetooth.testing import wait_until

from ._common import (
    WAIT,
    Result,
    Settings,
    call,
    facade_pair,
    median,
    raw_connect,
    raw_device,
)

PSM = 0x0080
CHANNEL_MTU = 512
SDU = CHANNEL_MTU
RAW_MPS = 247
RAW_CREDITS = 64
#: NimBLE's window: credits for one SDU and its 2-byte header, at MPS 247.
ONE_SDU_CREDITS = -(-(CHANNEL_MTU + 2) // RAW_MPS)


class FacadeChannel:
    """A connected channel between two facade instances and its receive counter."""

    def __init__(self) -> None:
        self.pair = facade_pair(mtu=None, name="l2")
        pair = self.pair
        self.received = 0
        self.last = 0.0
        buffer = bytearray(CHANNEL_MTU)
        server = pair.server
        server.l2cap_listen(PSM, CHANNEL_MTU)
        pair.client.l2cap_connect(pair.c_conn, PSM, CHANNEL_MTU)
        self.c_cid = pair.ch.wait(IRQ_L2CAP_CONNECT)[1]
        s_conn, s_cid = pair.s_conn, pair.sh.wait(IRQ_L2CAP_CONNECT)[1]

        def on_recv(data: tuple[Any, ...]) -> None:
            # Drain everything pending, as a MicroPython program does on _IRQ_L2CAP_RECV.
            while True:
                got = server.l2cap_recvinto(s_conn, s_cid, buffer)
                if not got:
                    break
                self.received += got
            self.last = time.perf_counter()

        pair.sh.on[IRQ_L2CAP_RECV] = on_recv

    def measure(self, seconds: float) -> float:
        client, conn, cid, ch = self.pair.client, self.pair.c_conn, self.c_cid, self.pair.ch
        sdu = bytes(SDU)
        before = self.received
        sent = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            readied = ch.count(IRQ_L2CAP_SEND_READY)
            ready = client.l2cap_send(conn, cid, sdu)
            sent += len(sdu)
            if not ready:
                ch.wait_count(IRQ_L2CAP_SEND_READY, readied + 1)
        wait_until(lambda: self.received - before >= sent, WAIT, f"{sent} bytes")
        return sent / (self.last - start)

    def close(self) -> None:
        self.pair.close()


class RawChannel:
    """The same channel made with Bumble's API (built on the loop)."""

    received = 0
    last = 0.0

    def __init__(self, credits: int = RAW_CREDITS) -> None:
        self.credits = credits

    async def open(self) -> RawChannel:
        from bumble.l2cap import LeCreditBasedChannelSpec

        from mpbluetooth.sim.link import SimLink

        link = SimLink()
        self.server = await raw_device(link, "l2-server")
        self.client = await raw_device(link, "l2-client")
        spec = LeCreditBasedChannelSpec(
            psm=PSM, mtu=CHANNEL_MTU, mps=RAW_MPS, max_credits=self.credits
        )

        def on_sdu(sdu: bytes) -> None:
            self.received += len(sdu)
            self.last = time.perf_counter()

        def on_channel(channel: Any) -> None:
            channel.sink = on_sdu

        self.server.create_l2cap_server(spec=spec, handler=on_channel)
        c_connection, _ = await raw_connect(self.client, self.server)
        self.channel = await c_connection.create_l2cap_channel(spec=spec)
        return self

    async def measure(self, seconds: float) -> float:
        channel = self.channel
        sdu = bytes(SDU)
        before = self.received
        sent = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            channel.write(sdu)
            sent += len(sdu)
            await channel.drain()
        deadline = time.monotonic() + WAIT
        while self.received - before < sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.received - before} of {sent} bytes arrived")
            await asyncio.sleep(0.001)
        return sent / (self.last - start)

    async def close(self) -> None:
        for device in (self.client, self.server):
            await device.power_off()


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    facade = FacadeChannel()
    raw: RawChannel = call(RawChannel().open(), "raw L2CAP channel")
    windowed: RawChannel = call(RawChannel(ONE_SDU_CREDITS).open(), "raw L2CAP, one-SDU window")
    f_runs: list[float] = []
    r_runs: list[float] = []
    w_runs: list[float] = []
    try:
        for _ in range(settings.reps):
            f_runs.append(facade.measure(settings.seconds))
            r_runs.append(call(raw.measure(settings.seconds), "raw L2CAP"))
            w_runs.append(call(windowed.measure(settings.seconds), "raw L2CAP, one-SDU window"))
    finally:
        facade.close()
        call(raw.close(), "close raw L2CAP")
        call(windowed.close(), "close raw L2CAP, one-SDU window")

    def row(name: str, raw_runs: list[float], payload: int | None, note: str) -> Result:
        return Result(
            name,
            median(f_runs),
            median(raw_runs),
            "bytes/s",
            5,
            payload,
            {"facade": f_runs, "raw": raw_runs},
            note=note,
        )

    results = [
        row(
            f"L2CAP CoC bytes/s, {SDU} B SDUs (MTU {CHANNEL_MTU})",
            r_runs,
            SDU,
            f"raw: {RAW_CREDITS} credits",
        ),
        row(
            f"L2CAP CoC bytes/s, {SDU} B SDUs, raw with NimBLE's one-SDU credit window",
            w_runs,
            None,
            f"raw: {ONE_SDU_CREDITS} credits, as NimBLE grants (the facade's window)",
        ),
    ]
    for result in results:
        log(
            f"  {result.name}: facade {result.facade:,.0f}  raw {result.raw:,.0f}  "
            f"ratio {result.ratio:.2f}"
        )
    return results
