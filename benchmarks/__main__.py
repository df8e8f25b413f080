"""``python -m benchmarks [--quick] [--only N,...] [--reps N] [--seconds S] [--baseline]``.

Runs every workload through mpbluetooth's ``BLE`` API and through raw Bumble on an
identical simulated link, in this one process (start-up, memory and the hub workloads use
fresh child processes, as they must), prints the table and writes ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import dispatch, gatt, hub, l2cap, mainthread, report, scan, startup
from ._common import REPS, Result, Settings

FAMILIES = {
    "gatt": (1, 2, 3, 4),
    "l2cap": (5,),
    "dispatch": (6,),
    "scan": (7,),
    "startup": (8, 9),
    "hub": (10,),
    "mainthread": (11,),
}


def log(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="mpbluetooth's BLE facade against raw Bumble on the same simulated link.",
    )
    parser.add_argument("--quick", action="store_true", help="0.3 s windows, still 5 repetitions")
    parser.add_argument("--only", default="", help="workload numbers to run, e.g. 1,2,6")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5)")
    parser.add_argument("--seconds", type=float, help="measuring window per repetition")
    parser.add_argument(
        "--baseline", action="store_true", help="also write benchmarks/results/BASELINE.md"
    )
    args = parser.parse_args(argv)
    settings = Settings.make(args.quick, args.reps, args.seconds)
    if settings.reps < 1:
        parser.error("--reps must be at least 1")
    wanted = {int(n) for n in args.only.split(",") if n.strip()} or set(range(1, 12))
    # The library logs a warning at the first drop of a burst; the flood makes them on purpose.
    logging.getLogger("mpbluetooth").setLevel(logging.ERROR)

    mode = "quick" if settings.quick else "full"
    log(f"mpbluetooth benchmarks ({mode}: {settings.reps} repetitions x {settings.seconds:g} s)")
    if settings.reps < REPS:
        log(f"fewer than {REPS} repetitions: the medians and spreads say little")
    started = time.perf_counter()
    results: list[Result] = []
    for family, workloads in FAMILIES.items():
        if not wanted.intersection(workloads):
            continue
        # The GATT family runs only the wanted ones of its workloads; the others run whole.
        running = sorted(wanted.intersection(workloads)) if family == "gatt" else workloads
        log(f"[{family}] workloads {', '.join(map(str, running))}")
        if family == "gatt":
            results += gatt.run(settings, log, wanted)
        elif family == "l2cap":
            results += l2cap.run(settings, log)
        elif family == "dispatch":
            results += dispatch.run(settings, log)
        elif family == "scan":
            results += scan.run(settings, log)
        elif family == "startup":
            results += startup.run(settings, log)
        elif family == "mainthread":
            results += mainthread.run(settings, log)
        elif family == "hub":
            small = next((r for r in results if r.name == f"notifications/s, {gatt.SMALL} B"), None)
            if small is not None and small.facade and small.raw:
                in_process = {"facade": small.facade, "raw": small.raw}
            else:
                in_process = gatt.notify_reference(settings)
            results += hub.run(settings, log, in_process)
    log("")
    log(report.console_table(results))
    log("")
    floor = report.floor_tables(results)
    if floor:
        log(floor)
        log("")
    for target in report.targets(results):
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[target.met]
        log(f"{mark} {target.text}: {target.detail}")
    report.write(results, mode, args.baseline, log)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
