"""The floor: a bare thread round trip main -> loop thread -> main, measured in this run.

A facade request that waits for its answer crosses between the program's thread and the
loop thread a fixed number of times, and no amount of tuning inside the facade takes those
crossings away. So each round-trip row is read against the cost of a bare crossing,
measured in the same process and between the same repetitions (the machine's load moves
both alike), with nothing on either side but the primitive itself:

* ``lock``: ``loop.call_soon_threadsafe(lock.release)``, the caller blocks in
  ``lock.acquire()``. This is the unit of the round-trip rows: a ``gattc_read`` or a write
  with response is started with ``call_soon_threadsafe`` (``Runtime.call_soon``) and its
  events come back through lock-based ``threading.Condition`` objects (the event ring, the
  scheduler, the program's wait), so this is the cheapest hop made of the primitives the
  facade's request path uses.
* ``future``: ``call_soon_threadsafe(future.set_result)``, the caller waits in
  ``concurrent.futures.Future.result()``.
* ``coroutine``: ``asyncio.run_coroutine_threadsafe(coro, loop).result()``.
* ``runtime``: mpbluetooth's own blocking call, ``Runtime.call`` with a plain function (a
  ``call_soon_threadsafe`` that runs it one loop iteration later, the caller blocked on a
  lock; on the main thread under main-thread delivery the wait is the scheduler's
  ``wait_call``). Every ``BLE`` call that waits for
  the stack goes through it.
* ``lock-apart``: ``lock`` with the caller held on another CPU than the loop thread's: what
  each hand-over cost before mpbluetooth kept its waits on the loop thread's CPU
  (``mpbluetooth/_cpu.py``), and what it costs with ``MPBLUETOOTH_CPU=any``. Empty where
  threads are not placed (one CPU, no ``sched_setaffinity``, no GIL).
* ``in-loop``: the same hand-over inside the loop (``loop.call_soon(future.set_result)``,
  then ``await`` the ``asyncio.Future``), which is what raw Bumble pays for a hand-over.

The cross-thread primitives are timed as the facade's waits run: the caller waits on the
loop thread's CPU (``_cpu.visiting``), so ``lock`` is the hop the facade pays.

Each figure is the median of ``iterations`` timed round trips, in microseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from mpbluetooth import _cpu
from mpbluetooth._runtime import runtime
from mpbluetooth.testing.lowlevel import on_loop

#: The primitives, in the order the tables show them, with their column labels.
PRIMITIVES: dict[str, str] = {
    "lock": "call_soon_threadsafe+Lock",
    "future": "cf.Future",
    "coroutine": "run_coroutine_threadsafe",
    "runtime": "Runtime.call",
    "lock-apart": "Lock, CPUs apart",
    "in-loop": "in-loop",
}
#: The hop the round-trip rows are counted in (see the module docstring).
UNIT = "lock"
#: Timed round trips per primitive and measurement.
ITERATIONS = 2000
#: Untimed round trips first, so the first timed ones find the threads running.
WARM_UP = 50


def _timed(one: Callable[[], object], iterations: int) -> float:
    """Median of ``iterations`` calls of ``one``, in microseconds (each call timed alone,
    so a preemption spoils one sample, not the figure)."""
    for _ in range(WARM_UP):
        one()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(iterations):
        start = clock()
        one()
        samples.append(clock() - start)
    return statistics.median(samples) / 1000


def _lock_trip(loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
    lock = threading.Lock()
    lock.acquire()

    def one() -> None:
        loop.call_soon_threadsafe(lock.release)
        lock.acquire()

    return one


def _future_trip(loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
    def one() -> object:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop.call_soon_threadsafe(future.set_result, None)
        return future.result()

    return one


async def _nothing() -> None:
    return None


def _coroutine_trip(loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
    def one() -> object:
        return asyncio.run_coroutine_threadsafe(_nothing(), loop).result()

    return one


def _noop() -> None:
    return None


def _runtime_trip(_: asyncio.AbstractEventLoop) -> Callable[[], object]:
    call_on_loop = runtime().call

    def one() -> object:
        return call_on_loop(_noop, what="benchmark: bare hop")

    return one


async def _in_loop(iterations: int) -> float:
    """The hand-over inside the loop, timed on the loop thread."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    samples = []
    for n in range(WARM_UP + iterations):
        future: asyncio.Future[None] = loop.create_future()
        start = clock()
        loop.call_soon(future.set_result, None)
        await future
        if n >= WARM_UP:
            samples.append(clock() - start)
    return statistics.median(samples) / 1000


_CROSS_THREAD: dict[str, Callable[[asyncio.AbstractEventLoop], Callable[[], object]]] = {
    "lock": _lock_trip,
    "future": _future_trip,
    "coroutine": _coroutine_trip,
    "runtime": _runtime_trip,
}


def _apart(loop: asyncio.AbstractEventLoop, iterations: int) -> float | None:
    """``lock`` with this thread held on a CPU other than the loop thread's, or None."""
    cpu = _cpu.loop_cpu()
    if cpu is None:
        return None
    mask = os.sched_getaffinity(0)
    others = mask - {cpu}
    if not others:
        return None
    os.sched_setaffinity(0, {min(others)})
    try:
        return _timed(_lock_trip(loop), iterations)
    finally:
        os.sched_setaffinity(0, mask)


def measure(iterations: int = ITERATIONS) -> dict[str, float]:
    """Every primitive's round trip from this thread, median microseconds each (a
    primitive that cannot be measured here is left out)."""
    loop = runtime().loop
    with _cpu.visiting():
        figures = {name: _timed(make(loop), iterations) for name, make in _CROSS_THREAD.items()}
    apart = _apart(loop, iterations)
    if apart is not None:
        figures["lock-apart"] = apart
    figures["in-loop"] = on_loop(partial(_in_loop, iterations), "benchmark: in-loop hop")
    return figures


def record(hops: dict[str, list[float]], iterations: int = ITERATIONS) -> None:
    """Measure once and append each primitive's figure to ``hops`` (one list per
    primitive, one entry per repetition of the row it is measured with)."""
    for name, value in measure(iterations).items():
        hops.setdefault(name, []).append(value)


# --- reading a round-trip row against the floor ---------------------------------------------
@dataclass(frozen=True)
class Spread:
    """A figure over the repetitions: its median and the lowest and highest run."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(float(statistics.median(values)), min(values), max(values))

    def as_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


#: The figures of a round-trip row, in the order the table shows them.
FIGURES: dict[str, str] = {
    "facade_us": "facade µs",
    "raw_us": "raw µs",
    "overhead_us": "overhead µs",
    "overhead_hops": "overhead hops",
    "floor_us": "floor µs",
    "above_floor_pct": "above floor %",
}


def floor_figures(
    facade_rates: list[float], raw_rates: list[float], unit_hops: list[float], crossings: float
) -> dict[str, Spread]:
    """Per repetition ``i`` (facade run ``i``, raw run ``i`` and the hop measured after
    them were made back to back): µs per operation of each side, the facade's overhead in
    µs and in hops, the floor ``raw + crossings x hop`` and the facade's distance above it;
    each as its median and range over the repetitions. The pairing keeps a slow moment of
    the machine in one repetition's figures instead of mixing it into another's."""
    per_run: dict[str, list[float]] = {key: [] for key in FIGURES}
    for facade_rate, raw_rate, hop in zip(facade_rates, raw_rates, unit_hops, strict=True):
        facade_us, raw_us = 1e6 / facade_rate, 1e6 / raw_rate
        floor_us = raw_us + crossings * hop
        per_run["facade_us"].append(facade_us)
        per_run["raw_us"].append(raw_us)
        per_run["overhead_us"].append(facade_us - raw_us)
        per_run["overhead_hops"].append((facade_us - raw_us) / hop)
        per_run["floor_us"].append(floor_us)
        per_run["above_floor_pct"].append(100 * (facade_us / floor_us - 1))
    return {key: Spread.of(values) for key, values in per_run.items()}


def spreads(hops: dict[str, list[float]]) -> dict[str, Spread]:
    """Each primitive's measurements as median and range."""
    return {name: Spread.of(values) for name, values in hops.items() if values}


def as_json(hops: dict[str, list[float]]) -> dict[str, Any]:
    """The hop samples and their spreads, for ``latest.json``."""
    return {
        name: {"samples": values, **Spread.of(values).as_json()}
        for name, values in hops.items()
        if values
    }
