"""Workloads 8 and 9: start-up time and the memory of two connected instances.

Each figure comes from a fresh Python process (``sys.executable -c ...`` from the
repository root), so nothing this process already imported counts:

* import: ``import mpbluetooth`` against the Bumble modules a raw program imports
  (``bumble.device``, ``bumble.host``, ``bumble.controller``, ``bumble.link``);
* first start: ``BLE()`` + ``active(True)`` on the simulated controller, measured after
  ``import mpbluetooth`` (it includes Bumble's import, which mpbluetooth defers to here),
  against an ``asyncio.run`` that imports Bumble and powers on a ``Device`` behind our
  ``SimController``;
* restart: ``active(False)`` then ``active(True)`` again, against a second Device;
* memory: VmHWM of a process holding two connected instances (MTU exchanged), against two
  connected raw Devices. The raw process imports ``mpbluetooth.sim`` for ``SimController``
  (the identical link), so both include that package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ._common import Result, Settings, median

ROOT = Path(__file__).resolve().parent.parent

_IMPORT_FACADE = """
import json, time
t = time.perf_counter()
import mpbluetooth
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

_IMPORT_RAW = """
import json, time
t = time.perf_counter()
import bumble.device, bumble.host, bumble.controller, bumble.link
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

_ACTIVE_FACADE = """
import json, time
import mpbluetooth
t = time.perf_counter()
ble = mpbluetooth.BLE()
ble.active(True)
first = time.perf_counter() - t
ble.active(False)
t = time.perf_counter()
ble.active(True)
again = time.perf_counter() - t
print(json.dumps({"first": first, "again": again}))
"""

_ACTIVE_RAW = """
import asyncio, json, time
t = time.perf_counter()

async def main():
    from benchmarks._common import raw_device
    from mpbluetooth.sim.link import SimLink
    link = SimLink()
    device = await raw_device(link, "raw")
    first = time.perf_counter() - t
    await device.power_off()
    t2 = time.perf_counter()
    device = await raw_device(link, "raw")
    return first, time.perf_counter() - t2

first, again = asyncio.run(main())
print(json.dumps({"first": first, "again": again}))
"""

_MEMORY_FACADE = """
import json
from benchmarks._common import facade_pair, hwm_kib
pair = facade_pair()
print(json.dumps({"kib": hwm_kib()}))
pair.close()
"""

_MEMORY_RAW = """
import asyncio, json
from benchmarks._common import hwm_kib, raw_pair

async def main():
    pair = await raw_pair()
    kib = hwm_kib()
    await pair.close()
    return kib

print(json.dumps({"kib": asyncio.run(main())}))
"""


def child(code: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter at the repository root; its JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    env["MPBLUETOOTH_SIM_TIMING"] = "instant"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _runs(code: str, key: str, reps: int) -> list[float]:
    return [child(code)[key] for _ in range(reps)]


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    reps = max(settings.reps, 3) if settings.quick else max(settings.reps, 5)
    results: list[Result] = []

    def add(
        name: str,
        facade: list[float],
        raw: list[float],
        unit: str,
        workload: int,
        scale: float = 1.0,
        note: str = "",
    ) -> None:
        f_runs, r_runs = [v * scale for v in facade], [v * scale for v in raw]
        result = Result(
            name,
            median(f_runs),
            median(r_runs),
            unit,
            workload,
            samples={"facade": f_runs, "raw": r_runs},
            note=note,
        )
        log(f"  {name}: facade {result.facade:,.1f}  raw {result.raw:,.1f} {unit}")
        results.append(result)

    f_import, r_import = [], []
    for _ in range(reps):
        f_import.append(child(_IMPORT_FACADE)["seconds"])
        r_import.append(child(_IMPORT_RAW)["seconds"])
    add(
        "import time",
        f_import,
        r_import,
        "ms",
        8,
        1000,
        "import mpbluetooth vs import bumble.device/host/controller/link",
    )

    f_first, f_again, r_first, r_again = [], [], [], []
    for _ in range(reps):
        facade = child(_ACTIVE_FACADE)
        raw = child(_ACTIVE_RAW)
        f_first.append(facade["first"])
        f_again.append(facade["again"])
        r_first.append(raw["first"])
        r_again.append(raw["again"])
    add(
        "BLE() to active(True), first in the process",
        f_first,
        r_first,
        "ms",
        8,
        1000,
        "after import mpbluetooth; includes importing Bumble",
    )
    add("active(True) again after active(False)", f_again, r_again, "ms", 8, 1000)

    f_mem, r_mem = [], []
    for _ in range(max(3, settings.reps)):
        f_mem.append(child(_MEMORY_FACADE)["kib"])
        r_mem.append(child(_MEMORY_RAW)["kib"])
    add(
        "peak RSS, two connected instances",
        f_mem,
        r_mem,
        "MiB",
        9,
        1 / 1024,
        "VmHWM of a fresh process",
    )
    return results
