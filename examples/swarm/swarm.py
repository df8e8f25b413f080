"""Many instances, each its own process, on one engine; prints their CPU time and memory.

    python examples/swarm/swarm.py --engine rootcanal --count 20
    python examples/swarm/swarm.py --engine sim --count 20

Half the processes are peripherals serving a greeting, half are centrals that find the
peripheral of their index by name, read the greeting and disconnect (``node.py``, a
MicroPython program run by ``mpbluetooth-python``). The engine is one RootCanal
(``mpbluetooth.sim.rootcanal``) or one ``mpbluetooth sim-hub``; every process joins it
with ``MPBLUETOOTH_TRANSPORT=tcp-client:127.0.0.1:PORT``, as processes on other machines
would with the engine's address. Desktop only (uses /proc for the figures).

The processes start warm (``mpbluetooth-python``'s default: each program is a fork of one
server that has already imported Bumble); ``--cold`` makes each import Bumble itself.
Memory is given as PSS, which shares each page among the processes that map it (the
launcher's and its program's, when warm), and as RSS, which counts shared pages in full.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


def pss_rss(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB of a running process, 0 when it is gone. PSS shares each page among
    the processes that map it: the memory a board really adds, where its warm-start
    server's pages are shared by every board."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def children_of(pid: int) -> list[int]:
    """The running children of ``pid`` (a warm-start server's programs)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def children_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` has reaped (a warm server's finished programs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / TICKS


def warm_server(folder: str) -> int | None:
    for pid_file in Path(folder).glob("warm-*.pid"):
        try:
            return int(pid_file.read_text())
        except (OSError, ValueError):
            pass
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("rootcanal", "sim"), default="rootcanal")
    parser.add_argument("--count", type=int, default=20, help="processes (an even number)")
    parser.add_argument(
        "--cold", action="store_true", help="every process imports Bumble itself (no warm start)"
    )
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
    # A warm-start server of this run's own (ended 1 s after the last program), so that its
    # programs' CPU is counted here and nothing of it outlives the run.
    warm_dir = tempfile.mkdtemp(prefix="swarm-warm-")
    env.update(MPBLUETOOTH_WARM_DIR=warm_dir, MPBLUETOOTH_WARM_IDLE="1")
    if args.cold:
        env["MPBLUETOOTH_WARM"] = "0"
    console = Path(sys.executable).with_name("mpbluetooth-python")
    launcher = (
        [str(console)] if console.exists() else [sys.executable, "-m", "mpbluetooth.cli.python"]
    )
    started = time.monotonic()
    nodes: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
    peak: dict[int, tuple[int, int]] = {}  # pid -> peak (PSS, RSS) seen
    server: int | None = None
    server_cpu_before = 0.0
    try:
        for index in range(pairs):
            for role in ("peripheral", "central"):
                node = subprocess.Popen(
                    [*launcher, str(NODE)],
                    env={**env, "NODE_ROLE": role, "NODE_INDEX": str(index)},
                    stdin=subprocess.DEVNULL,
                )
                nodes[node.pid] = (f"{role} {index}", node)
        cpu_total, failed = 0.0, []
        while nodes:
            if server is None and not args.cold:
                server = warm_server(warm_dir)
                if server is not None:
                    server_cpu_before = children_cpu(server)
            watched = list(nodes) + (children_of(server) if server is not None else [])
            for pid in watched:
                pss, rss = pss_rss(pid)
                old = peak.get(pid, (0, 0))
                peak[pid] = (max(old[0], pss), max(old[1], rss))
            # wait4 gives each launcher's own CPU time (with --cold, the whole program's).
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.25)
                continue
            label, node = nodes.pop(pid)
            node.returncode = os.waitstatus_to_exitcode(status)
            cpu_total += usage.ru_utime + usage.ru_stime
            if node.returncode != 0:
                failed.append(label)
        wall = time.monotonic() - started
        programs_cpu = children_cpu(server) - server_cpu_before if server is not None else 0.0
        engine_cpu, engine_peak = engine_figures(engine_pid)
        server_cpu, server_peak = engine_figures(server) if server is not None else (0.0, 0)
    finally:
        for _, node in nodes.values():
            node.kill()
            node.wait()
        if rootcanal is not None:
            rootcanal.stop()
        if hub is not None:
            hub.terminate()
            hub.wait(10)
        shutil.rmtree(warm_dir, ignore_errors=True)
    count = 2 * pairs
    print(f"  (memory sampled in {len(peak)} processes)")
    cpu_total += programs_cpu
    pss_each = sum(p for p, _ in peak.values()) / count / 1024
    rss_each = sum(r for _, r in peak.values()) / count / 1024
    mode = "cold" if args.cold else "warm"
    print(
        f"{count} processes ({mode}) on {args.engine} ({spec}): "
        f"{count - len(failed)} ok in {wall:.1f} s"
    )
    print(
        f"  boards:    CPU {cpu_total:.1f} s in all ({cpu_total / count:.2f} s each); "
        f"peak memory {pss_each:.0f} MiB PSS each ({rss_each:.0f} MiB RSS), "
        f"{pss_each * count:.0f} MiB PSS in all"
    )
    if server is not None:
        print(
            f"  warm server: CPU {server_cpu:.2f} s (its imports, once), "
            f"peak RSS {server_peak / 1024:.0f} MiB"
        )
    print(f"  engine:    CPU {engine_cpu:.2f} s, peak RSS {engine_peak / 1024:.0f} MiB")
    if failed:
        print(f"  failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
