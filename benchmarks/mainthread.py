"""Workload 11: request/response with handlers on the main thread, as the conformance
suites run them.

MicroPython's own tests wait for an event in a ``machine.idle()`` loop; under MicroPython's
runtime (SPEC D2) the handler then runs on that waiting main thread, with no dispatcher
hop. This runs workloads 3 and 4 that way, in a fresh child process with
``mpbluetooth.deliver_on_main_thread()`` (and ``compat.install()`` for ``machine``), and
raw Bumble in the same child, alternating, as the other workloads do.

Without the fallback thread each round trip crosses threads half a round trip less per
event than workloads 3 and 4 (``gatt.CROSSINGS``): a write with response 2 bare round trips
(the call main -> loop, the server's ``_IRQ_GATTS_WRITE`` loop -> main -> back, since the
Write Response waits for it, ``_IRQ_GATTC_WRITE_DONE`` loop -> main), a read 2 (the call,
the server's ``_IRQ_GATTS_READ_REQUEST`` loop -> main -> its answer back, the result loop
-> main). The child measures the bare hop (``hop``) after each repetition, in its own
process, where ``Runtime.call`` waits through the scheduler's ``wait_call``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from . import hop
from ._common import Result, Settings, interleaved, median

WORKLOAD = 11
#: Bare round trips per operation (see the module docstring).
WRITE_CROSSINGS = 2.0
READ_CROSSINGS = 2.0


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.mainthread", str(settings.seconds), str(settings.reps)],
        capture_output=True,
        text=True,
        timeout=120 + 8 * settings.reps * (settings.seconds + 1),
        env={**os.environ, "MPBLUETOOTH_SIM_TIMING": "instant"},
        check=False,
    )
    if child.returncode != 0:
        log(f"  main-thread workload failed: {child.stderr.strip().splitlines()[-1:]}")
        return []
    results = []
    for name, runs in json.loads(child.stdout.strip().splitlines()[-1]).items():
        result = Result(
            name,
            median(runs["facade"]),
            median(runs["raw"]),
            "round trips/s",
            WORKLOAD,
            None,
            {"facade": runs["facade"], "raw": runs["raw"]},
            crossings=runs["crossings"],
            hops=runs["hops"],
        )
        log(
            f"  {name}: facade {result.facade:,.0f}  raw {result.raw:,.0f}  "
            f"ratio {result.ratio:.2f}"
        )
        results.append(result)
    return results


def _idle_round_trips(
    start_one: Callable[[], None], counts: list[int], event: int, seconds: float
) -> float:
    """Request, then ``machine.idle()`` until its ``*_DONE`` was handled; round trips/s."""
    import machine

    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        target = counts[event] + 1
        start_one()
        while counts[event] < target:
            machine.idle()
        done += 1
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def _child(seconds: float, reps: int) -> dict[str, Any]:
    import mpbluetooth
    from mpbluetooth import compat

    compat.install()
    if not mpbluetooth.deliver_on_main_thread():
        raise SystemExit("main-thread delivery is not available here")
    from ._common import call, facade_pair, raw_pair
    from .gatt import SMALL, raw_read, raw_write_request

    IRQ_GATTC_READ_DONE, IRQ_GATTC_WRITE_DONE = 16, 17
    fp = facade_pair()
    rp = call(raw_pair(), "raw GATT pair")
    counts = fp.ch.counts
    conn, handle, data = fp.c_conn, fp.value_handle, bytes(SMALL)
    fp.server.gatts_write(handle, data)
    figures: dict[str, Any] = {}
    try:
        for name, crossings, facade, raw in (
            (
                f"write-with-response round trips/s, {SMALL} B, main thread in machine.idle()",
                WRITE_CROSSINGS,
                lambda: _idle_round_trips(
                    lambda: fp.client.gattc_write(conn, handle, data, 1),
                    counts,
                    IRQ_GATTC_WRITE_DONE,
                    seconds,
                ),
                lambda: call(raw_write_request(rp, seconds), "raw write request"),
            ),
            (
                f"reads/s, {SMALL} B, main thread in machine.idle()",
                READ_CROSSINGS,
                lambda: _idle_round_trips(
                    lambda: fp.client.gattc_read(conn, handle), counts, IRQ_GATTC_READ_DONE, seconds
                ),
                lambda: call(raw_read(rp, seconds), "raw read"),
            ),
        ):
            hops: dict[str, list[float]] = {}
            f_runs, r_runs = interleaved(reps, facade, raw, functools.partial(hop.record, hops))
            figures[name] = {"facade": f_runs, "raw": r_runs, "hops": hops, "crossings": crossings}
    finally:
        fp.close()
        call(rp.close(), "close raw pair")
    return figures


if __name__ == "__main__":
    print(json.dumps(_child(float(sys.argv[1]), int(sys.argv[2]))), flush=True)
