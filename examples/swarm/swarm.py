"""Many instances, each its own process, on one engine; prints their CPU time and memory.

    python examples/swarm/swarm.py --engine rootcanal --count 20
    python examples/swarm/swarm.py --engine sim --count 20

Half the processes are peripherals serving a greeting, half are centrals that find the
peripheral of their index by name, read the greeting and disconnect (``node.py``, a
MicroPython program run by ``mpbluetooth-python``). The engine is one RootCanal
(``mpbluetooth.sim.rootcanal``) or one ``mpbluetooth sim-hub``; every process joins it
with ``MPBLUETOOTH_TRANSPORT=tcp-client:127.0.0.1:PORT``, as processes on other machines
would with the engine's address. Desktop only (uses /proc for the engine's figures).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mpbluetooth.sim.rootcanal import RootCanal, RootCanalError, free_port

NODE = Path(__file__).with_name("node.py")
TICKS = os.sysconf("SC_CLK_TCK")


def engine_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KiB) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cpu, peak


def start_hub() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    hub = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", "sim-hub", "--tcp", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:  # bounded wait for the hub's socket
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return hub, f"tcp-client:127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or hub.poll() is not None:
                hub.kill()
                raise SystemExit("sim-hub did not start") from None
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("rootcanal", "sim"), default="rootcanal")
    parser.add_argument("--count", type=int, default=20, help="processes (an even number)")
    args = parser.parse_args()
    pairs = max(1, args.count // 2)
    rootcanal: RootCanal | None = None
    hub: subprocess.Popen[bytes] | None = None
    if args.engine == "rootcanal":
        rootcanal = RootCanal()
        try:
            spec = rootcanal.start()
        except RootCanalError as exc:
            print(f"swarm: {exc}", file=sys.stderr)
            return 1
        assert rootcanal.process is not None
        engine_pid = rootcanal.process.pid
    else:
        hub, spec = start_hub()
        engine_pid = hub.pid
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    env.update(MPBLUETOOTH_TRANSPORT=spec, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    nodes: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for index in range(pairs):
            for role in ("peripheral", "central"):
                node = subprocess.Popen(
                    [sys.executable, "-m", "mpbluetooth.cli.python", str(NODE)],
                    env={**env, "NODE_ROLE": role, "NODE_INDEX": str(index)},
                )
                nodes[node.pid] = (f"{role} {index}", node)
        cpu_total, peaks, failed = 0.0, [], []
        while nodes:
            # wait4 gives each child's own CPU time and peak RSS.
            pid, status, usage = os.wait4(-1, 0)
            label, node = nodes.pop(pid)
            node.returncode = os.waitstatus_to_exitcode(status)
            cpu_total += usage.ru_utime + usage.ru_stime
            peaks.append(usage.ru_maxrss)
            if node.returncode != 0:
                failed.append(label)
        wall = time.monotonic() - started
        engine_cpu, engine_peak = engine_figures(engine_pid)
    finally:
        for _, node in nodes.values():
            node.kill()
            node.wait()
        if rootcanal is not None:
            rootcanal.stop()
        if hub is not None:
            hub.terminate()
            hub.wait(10)
    count = 2 * pairs
    print(f"{count} processes on {args.engine} ({spec}): {count - len(failed)} ok in {wall:.1f} s")
    print(
        f"  processes: CPU {cpu_total:.1f} s in all ({cpu_total / count:.2f} s each), "
        f"peak RSS {sum(peaks) / count / 1024:.0f} MiB each, {sum(peaks) / 1024:.0f} MiB in all"
    )
    print(f"  engine:    CPU {engine_cpu:.2f} s, peak RSS {engine_peak / 1024:.0f} MiB")
    if failed:
        print(f"  failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
