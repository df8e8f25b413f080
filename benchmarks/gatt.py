"""Workloads 1-4: GATT notifications, writes without and with response, reads.

Each measurement is a fixed sending window; a rate counts what the receiver got, from the
first send to the last arrival (so nothing still queued at the end is credited). The
facade sends from the main thread and retries on ENOMEM as a MicroPython program does; the
raw sender is a coroutine that waits for Bumble's ``flow`` event while 128 ACL packets are
pending. Request/response loops wait for each answer before the next request: the facade
through its IRQ handler (``*_DONE`` wakes the main thread), raw Bumble by awaiting.

The request/response rows (3 and 4) also say how many times one facade operation must
cross between threads, counted in bare main -> loop thread -> main round trips
(``CROSSINGS``), and are read against that many bare hops measured after each repetition
(``hop``). Raw Bumble's loop stays on the loop thread and crosses none. Here the handlers
run on the scheduler's fallback thread (the IRQ context of a program whose main thread does
not wait in ``machine.idle()``), so:

* a write with response crosses 2.5 times: the call (main -> loop, half a round trip), the
  server's ``_IRQ_GATTS_WRITE`` (loop -> handler thread -> back to the loop, whole: the
  Write Response leaves after the handler, as NimBLE sends it), then
  ``_IRQ_GATTC_WRITE_DONE`` (loop -> handler thread -> the waiting main thread, whole).
* a read crosses 2.5 times: the call (half), the server's ``_IRQ_GATTS_READ_REQUEST``
  (loop -> handler thread -> its answer back to the loop, whole: NimBLE raises it for every
  read, so the facade does too), then the result (loop -> handler thread -> main, whole).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Coroutine
from functools import partial
from typing import Any

from mpbluetooth import irq_stats
from mpbluetooth.constants import (
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_WRITE,
)
from mpbluetooth.testing import wait_until

from . import hop
from ._common import (
    ACL_BACKLOG,
    ENOMEM,
    MTU_PAYLOAD,
    WAIT,
    FacadePair,
    RawPair,
    Result,
    Settings,
    backlog,
    call,
    facade_pair,
    interleaved,
    median,
    raw_pair,
    round_trip,
    wait_for_flow,
)

SMALL = 20
#: Bare round trips one facade operation makes at least, per round-trip workload (see the
#: module docstring for the count).
CROSSINGS: dict[int, float] = {3: 2.5, 4: 2.5}


def payloads(settings: Settings) -> list[int]:
    """20 B and MTU-sized always; the points between for the chart in a full run."""
    if settings.quick:
        return [SMALL, MTU_PAYLOAD]
    return [SMALL, 60, 120, 180, MTU_PAYLOAD]


# --- facade ---------------------------------------------------------------------------------
def facade_stream(
    pair: FacadePair,
    send: Callable[[], None],
    received: Callable[[], int],
    dropped: Callable[[], int],
    last: Callable[[], float],
    seconds: float,
) -> float:
    """Send for ``seconds`` (retrying on ENOMEM), wait until every message arrived or was
    dropped by the receiver's full event ring (counted, as MicroPython would drop it);
    messages delivered to the receiving handler per second."""
    before = received()
    dropped_before = dropped()
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        try:
            send()
        except OSError as exc:
            if exc.errno != ENOMEM:
                raise
            continue
        sent += 1
    wait_until(
        lambda: received() - before + dropped() - dropped_before >= sent,
        WAIT,
        f"{sent} messages (delivered or dropped)",
    )
    return (received() - before) / (last() - start)


def facade_notify(pair: FacadePair, size: int, seconds: float) -> float:
    notify, conn, handle, data = (
        pair.server.gatts_notify,
        pair.s_conn,
        pair.value_handle,
        bytes(size),
    )
    counts = pair.ch.counts
    return facade_stream(
        pair,
        lambda: notify(conn, handle, data),
        lambda: counts[IRQ_GATTC_NOTIFY],
        lambda: irq_stats(pair.client).dropped,
        lambda: pair.ch.last,
        seconds,
    )


def facade_write_command(pair: FacadePair, size: int, seconds: float) -> float:
    write, conn, handle, data = pair.client.gattc_write, pair.c_conn, pair.value_handle, bytes(size)
    counts = pair.sh.counts
    return facade_stream(
        pair,
        lambda: write(conn, handle, data, 0),
        lambda: counts[IRQ_GATTS_WRITE],
        lambda: irq_stats(pair.server).dropped,
        lambda: pair.sh.last,
        seconds,
    )


def facade_round_trips(one: Callable[[], None], seconds: float) -> float:
    """Request, wait for its ``*_DONE`` (``round_trip``), repeat; round trips/s."""
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        one()
        done += 1
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def facade_write_request(pair: FacadePair, seconds: float) -> float:
    write, conn, handle, data = (
        pair.client.gattc_write,
        pair.c_conn,
        pair.value_handle,
        bytes(SMALL),
    )
    return facade_round_trips(
        lambda: round_trip(lambda: write(conn, handle, data, 1), pair.ch, IRQ_GATTC_WRITE_DONE),
        seconds,
    )


def facade_read(pair: FacadePair, seconds: float) -> float:
    read, conn, handle = pair.client.gattc_read, pair.c_conn, pair.value_handle
    pair.server.gatts_write(handle, bytes(SMALL))
    return facade_round_trips(
        lambda: round_trip(lambda: read(conn, handle), pair.ch, IRQ_GATTC_READ_DONE), seconds
    )


# --- raw Bumble -----------------------------------------------------------------------------
async def _await_count(received: Callable[[], int], target: int) -> None:
    deadline = time.monotonic() + WAIT
    while received() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {received()} of {target} messages arrived")
        await asyncio.sleep(0.001)


async def raw_notify(pair: RawPair, size: int, seconds: float) -> float:
    server, connection, attribute, data = (
        pair.server,
        pair.s_connection,
        pair.attribute,
        bytes(size),
    )
    notify = server.gatt_server.notify_subscriber
    before = pair.notified[0]
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if backlog(server) >= ACL_BACKLOG:
            await wait_for_flow(server)
            continue
        await notify(connection, attribute, data)
        sent += 1
    await _await_count(lambda: pair.notified[0], before + sent)
    return sent / (pair.last[0] - start)


async def raw_write_command(pair: RawPair, size: int, seconds: float) -> float:
    client, proxy, data = pair.client, pair.proxy, bytes(size)
    before = pair.written[0]
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if backlog(client) >= ACL_BACKLOG:
            await wait_for_flow(client)
            continue
        await proxy.write_value(data, with_response=False)
        sent += 1
    await _await_count(lambda: pair.written[0], before + sent)
    return sent / (pair.last[0] - start)


async def raw_write_request(pair: RawPair, seconds: float) -> float:
    proxy, data = pair.proxy, bytes(SMALL)
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        await proxy.write_value(data, with_response=True)
        done += 1
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


async def raw_read(pair: RawPair, seconds: float) -> float:
    proxy = pair.proxy
    pair.stored[0] = bytes(SMALL)
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        await proxy.read_value()
        done += 1
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def _run_raw(
    workload: Callable[[RawPair, int, float], Coroutine[Any, Any, float]],
    pair: RawPair,
    size: int,
    seconds: float,
    what: str,
) -> float:
    """One raw streaming measurement, run on the loop."""
    return float(call(workload(pair, size, seconds), what))


# --- the family -----------------------------------------------------------------------------
def run(
    settings: Settings, log: Callable[[str], None], wanted: Collection[int] = (1, 2, 3, 4)
) -> list[Result]:
    """The ``wanted`` workloads of 1-4, on one facade pair and one raw pair."""
    seconds, reps = settings.seconds, settings.reps
    fp = facade_pair()
    rp: RawPair = call(raw_pair(), "raw GATT pair")
    results: list[Result] = []

    def measure(
        name: str,
        workload: int,
        unit: str,
        facade: Callable[[], float],
        raw: Callable[[], float],
        payload: int | None = None,
    ) -> None:
        crossings = CROSSINGS.get(workload)
        hops: dict[str, list[float]] = {}
        after = None if crossings is None else lambda: hop.record(hops)
        f_runs, r_runs = interleaved(reps, facade, raw, after)
        result = Result(
            name,
            median(f_runs),
            median(r_runs),
            unit,
            workload,
            payload,
            {"facade": f_runs, "raw": r_runs},
            crossings=crossings,
            hops=hops,
        )
        log(
            f"  {name}: facade {result.facade:,.0f}  raw {result.raw:,.0f}  "
            f"ratio {result.ratio:.2f}"
        )
        results.append(result)

    try:
        for size in payloads(settings) if 1 in wanted else ():
            measure(
                f"notifications/s, {size} B",
                1,
                "notif/s",
                partial(facade_notify, fp, size, seconds),
                partial(_run_raw, raw_notify, rp, size, seconds, "raw notify"),
                size,
            )
        for size in payloads(settings) if 2 in wanted else ():
            measure(
                f"writes without response/s, {size} B",
                2,
                "writes/s",
                partial(facade_write_command, fp, size, seconds),
                partial(_run_raw, raw_write_command, rp, size, seconds, "raw write cmd"),
                size,
            )
        if 3 in wanted:
            measure(
                f"write-with-response round trips/s, {SMALL} B",
                3,
                "round trips/s",
                lambda: facade_write_request(fp, seconds),
                lambda: call(raw_write_request(rp, seconds), "raw write request"),
            )
        if 4 in wanted:
            measure(
                f"reads/s, {SMALL} B",
                4,
                "reads/s",
                lambda: facade_read(fp, seconds),
                lambda: call(raw_read(rp, seconds), "raw read"),
            )
    finally:
        fp.close()
        call(rp.close(), "close raw pair")
    return results


def notify_reference(settings: Settings) -> dict[str, float]:
    """Workload 1's 20-byte figures alone (the hub workload's in-process reference)."""
    fp = facade_pair()
    rp: RawPair = call(raw_pair(), "raw GATT pair")
    try:
        f_runs, r_runs = interleaved(
            settings.reps,
            lambda: facade_notify(fp, SMALL, settings.seconds),
            lambda: call(raw_notify(rp, SMALL, settings.seconds), "raw notify"),
        )
    finally:
        fp.close()
        call(rp.close(), "close raw pair")
    return {"facade": median(f_runs), "raw": median(r_runs)}
