"""Workload 7: scan reports handled per second under an advertising flood.

Twenty raw Bumble devices advertise on the same simulated link as the scanner (31-byte
legacy adverts). Their own 20 ms timers are replaced by a driver on the loop that makes
them advertise far faster than a radio could (``FLOOD_RATE`` adverts/s in total, sent in
1 ms steps, never more than 10 ms worth at once when the loop falls behind), so the scanner
is flooded. The facade scanner is a ``BLE`` instance with a
passive ``gap_scan`` whose handler copies each ``adv_data``, at the default ``rxbuf`` and at
``rxbuf=256``; the raw scanner is a Bumble ``Device`` with an ``advertisement`` listener
that copies ``data``. Memory: RSS sampled every 50 ms during each flood; the peak and the
growth from the first to the last second show whether queued reports pile up.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from mpbluetooth import irq_stats, set_rxbuf, sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import IRQ_SCAN_RESULT

from ._common import Result, Settings, call, interleaved, median, raw_device, rss_kib

ADVERTISERS = 20
FLOOD_RATE = 5_000
ADV_DATA = b"\x02\x01\x06" + b"\x1b\xff" + bytes(26)  # flags + manufacturer data: 31 bytes
SMALL_RXBUF = 256


class Flood:
    """Twenty advertisers on a link and a driver that makes them advertise on demand."""

    async def open(self, link: Any) -> Flood:
        from bumble.hci import OwnAddressType

        self.devices = []
        self.senders: list[Callable[[], None]] = []
        for i in range(ADVERTISERS):
            device = await raw_device(link, f"adv{i}")
            await device.start_advertising(
                own_address_type=OwnAddressType.PUBLIC,
                advertising_data=ADV_DATA,
                advertising_interval_min=20,
                advertising_interval_max=20,
            )
            self.devices.append(device)
            self.senders.append(_take_over_timer(device))
        self.task: asyncio.Task[None] | None = None
        return self

    def start(self, rate: int) -> None:
        self.task = asyncio.get_running_loop().create_task(self._drive(rate))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None

    async def _drive(self, rate: int) -> None:
        loop = asyncio.get_running_loop()
        senders = self.senders
        sent = 0
        start = loop.time()
        while True:
            due = int((loop.time() - start) * rate)
            # A loop that fell behind does not catch up later: the flood is at most
            # ``rate``, never a backlog of callbacks that grows without bound.
            sent = max(sent, due - rate // 100)
            while sent < due:
                senders[sent % len(senders)]()
                sent += 1
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        await self.stop()
        for device in self.devices:
            await device.power_off()


def _take_over_timer(device: Any) -> Callable[[], None]:
    """Stop the controller's advertising timer; return what the timer would call."""
    controller = device.host.hci_sink.sink  # our SimController behind the AsyncPipeSink
    legacy = controller.le_legacy_advertiser
    if legacy.enabled:
        if legacy.timer_handle is not None:
            legacy.timer_handle.cancel()
        return legacy.send_advertising_data
    for advertising_set in controller.advertising_sets.values():
        if advertising_set.enabled:
            if advertising_set.timer_handle is not None:
                advertising_set.timer_handle.cancel()
            advertising_set.enabled = True
            return advertising_set.send_extended_advertising_data
    raise RuntimeError("advertiser has no enabled advertising set")


class RssSampler:
    """RSS every 50 ms on a thread, while a flood runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, rss_kib()))
            self._stop.wait(0.05)

    def peak_mib(self) -> float:
        return max(kib for _, kib in self.samples) / 1024

    def growth_mib(self) -> float:
        """Mean RSS of the last second minus that of the first (after 0.25 s of warm-up)."""
        end = self.samples[-1][0]
        first = [kib for t, kib in self.samples if 0.25 <= t < 1.25]
        last = [kib for t, kib in self.samples if t >= end - 1.0]
        if not first or not last:
            return 0.0
        return (sum(last) / len(last) - sum(first) / len(first)) / 1024


class FacadeScanner:
    def __init__(self, link: sim.Link) -> None:
        self.ble: BLE = link.instance("scanner")
        self.handled = 0
        ble = self.ble

        def handler(event: int, data: tuple[Any, ...]) -> None:
            if event == IRQ_SCAN_RESULT:
                bytes(data[4])
                self.handled += 1

        ble.irq(handler)
        ble.active(True)

    def measure(self, flood: Flood, rxbuf: int, seconds: float) -> tuple[float, int, RssSampler]:
        ble = self.ble
        set_rxbuf(rxbuf, ble)
        dropped = irq_stats(ble).dropped
        with RssSampler() as sampler:
            call(_start(flood), "start flood")
            ble.gap_scan(0, 30000, 30000)
            time.sleep(0.2)  # let the ring reach its steady state
            before, start = self.handled, time.perf_counter()
            time.sleep(seconds)
            handled, elapsed = self.handled - before, time.perf_counter() - start
            ble.gap_scan(None)
            call(flood.stop(), "stop flood")
        return handled / elapsed, irq_stats(ble).dropped - dropped, sampler


class RawScanner:
    async def open(self, link: Any) -> RawScanner:
        self.device = await raw_device(link, "raw-scanner")
        self.handled = 0

        def on_advertisement(advertisement: Any) -> None:
            bytes(advertisement.data_bytes)
            self.handled += 1

        self.device.on("advertisement", on_advertisement)
        return self

    def measure(self, flood: Flood, seconds: float) -> tuple[float, RssSampler]:
        with RssSampler() as sampler:
            call(_start(flood), "start flood")
            call(self.device.start_scanning(active=False, filter_duplicates=False), "scan")
            time.sleep(0.2)
            before, start = self.handled, time.perf_counter()
            time.sleep(seconds)
            handled, elapsed = self.handled - before, time.perf_counter() - start
            call(self.device.stop_scanning(), "stop scan")
            call(flood.stop(), "stop flood")
        return handled / elapsed, sampler


async def _start(flood: Flood) -> None:
    flood.start(FLOOD_RATE)


def _facade_run(
    scanner: FacadeScanner,
    flood: Flood,
    rxbuf: int,
    seconds: float,
    drops: list[float],
    samplers: dict[str, list[RssSampler]],
) -> float:
    rate, dropped, sampler = scanner.measure(flood, rxbuf, seconds)
    drops.append(dropped)
    samplers["facade"].append(sampler)
    return rate


def _raw_run(
    scanner: RawScanner, flood: Flood, seconds: float, samplers: dict[str, list[RssSampler]]
) -> float:
    rate, sampler = scanner.measure(flood, seconds)
    samplers["raw"].append(sampler)
    return rate


def _memory_row(
    name: str,
    samplers: dict[str, list[RssSampler]],
    figure: Callable[[RssSampler], float],
    note: str = "",
) -> Result:
    """A memory row: ``figure`` of each repetition's sampler, per side, and their median."""
    runs = {side: [figure(sampler) for sampler in samplers[side]] for side in samplers}
    return Result(
        name, median(runs["facade"]), median(runs["raw"]), "MiB", 7, samples=runs, note=note
    )


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    link = sim.Link()
    seconds = max(settings.seconds, 2.0)  # the memory trend needs a few seconds
    flood: Flood = call(Flood().open(link.bumble_link()), "advertisers")
    facade = FacadeScanner(link)
    raw: RawScanner = call(RawScanner().open(link.bumble_link()), "raw scanner")
    results: list[Result] = []
    try:
        for rxbuf in (16384, SMALL_RXBUF):
            drops: list[float] = []
            samplers: dict[str, list[RssSampler]] = {"facade": [], "raw": []}
            f_runs, r_runs = interleaved(
                settings.reps,
                functools.partial(_facade_run, facade, flood, rxbuf, seconds, drops, samplers),
                functools.partial(_raw_run, raw, flood, seconds, samplers),
            )
            label = f"rxbuf {rxbuf}" + (" (default)" if rxbuf == 16384 else "")
            rows = [
                Result(
                    f"scan reports handled/s, {label}",
                    median(f_runs),
                    median(r_runs),
                    "reports/s",
                    7,
                    samples={"facade": f_runs, "raw": r_runs},
                    note=f"{ADVERTISERS} advertisers, {FLOOD_RATE} adverts/s offered",
                ),
                Result(
                    f"scan reports dropped per run, {label}",
                    median(drops),
                    None,
                    "events",
                    7,
                    samples={"facade": drops},
                ),
                _memory_row(f"RSS peak during the flood, {label}", samplers, RssSampler.peak_mib),
                _memory_row(
                    f"RSS growth during the flood, {label}",
                    samplers,
                    RssSampler.growth_mib,
                    "last second minus first second",
                ),
            ]
            for row in rows:
                raw_text = "-" if row.raw is None else f"{row.raw:,.2f}"
                log(f"  {row.name}: facade {row.facade:,.2f}  raw {raw_text}")
            results.extend(rows)
    finally:
        link.close()
        call(flood.close(), "close advertisers")
        call(raw.device.power_off(), "close raw scanner")
    return results
