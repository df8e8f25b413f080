"""``python -m benchmarks.sim_air [--pairs 20] [--seconds 5] [--timing air]``: the hub's CPU
with connected pairs at a 7.5 ms interval, idle and streaming notifications.

A ``sim-hub`` process and one client process holding every instance (``pairs`` peripherals,
``pairs`` centrals, all joined to the hub over TCP). The hub's CPU time is read from
``/proc/PID/stat`` over ``seconds`` with the links idle, then with every peripheral
notifying 20-byte values as fast as the link takes them (retrying on ENOMEM). Prints one
JSON line. Idle must cost nothing in air timing: no wake-up per empty connection event.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

CLIENT = r"""
import json, sys, threading, time
from mpbluetooth.ble import BLE
spec, pairs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
SERVICE = ((0x180F and __import__("mpbluetooth.uuid", fromlist=["UUID"]).UUID(0x180F),
            ((__import__("mpbluetooth.uuid", fromlist=["UUID"]).UUID(0x2A19), 0x12),)),)
received = [0]
links = []
for n in range(pairs):
    p, c = mpbluetooth.open(spec, f"p{n}"), mpbluetooth.open(spec, f"c{n}")
    done = threading.Event()
    state = {}
    def on_p(e, d, state=state):
        if e == 1:
            state["ph"] = d[0]
    def on_c(e, d, state=state, done=done):
        if e == 7:
            state["ch"] = d[0]; done.set()
        elif e == 18:
            received[0] += 1
    p.irq(on_p); c.irq(on_c); p.active(True); c.active(True)
    ((vh,),) = p.gatts_register_services(SERVICE)
    p.gap_advertise(20000, b"\x02\x01\x06")
    c.gap_connect(*p.config("mac"), 2000, 7500, 7500)
    assert done.wait(10), "no connection"
    while "ph" not in state:
        time.sleep(0.01)
    links.append((p, state, vh))
print("connected", flush=True)
sys.stdin.readline()  # idle phase measured by the parent
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for p, state, vh in links:
        try:
            p.gatts_notify(state["ph"], vh, b"x" * 20)
            sent += 1
        except OSError:
            time.sleep(0.0005)
time.sleep(0.5)
print(json.dumps({"sent": sent, "received": received[0]}), flush=True)
sys.stdin.readline()
"""


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timing", default="air")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    port = _free_port()
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mpbluetooth",
            "sim-hub",
            "--tcp",
            f"127.0.0.1:{port}",
            "--timing",
            args.timing,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = None
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                f"tcp-client:127.0.0.1:{port}",
                str(args.pairs),
                str(args.seconds),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        time.sleep(1.0)  # let the connection set-up traffic settle
        h0, c0, t0 = _cpu(hub.pid), _cpu(client.pid), time.monotonic()
        time.sleep(args.seconds)
        h1, c1, t1 = _cpu(hub.pid), _cpu(client.pid), time.monotonic()
        client.stdin.write("\n")
        client.stdin.flush()
        h2, c2, t2 = _cpu(hub.pid), _cpu(client.pid), time.monotonic()
        stream = json.loads(client.stdout.readline())
        h3, c3, t3 = _cpu(hub.pid), _cpu(client.pid), time.monotonic()
        result = {
            "timing": args.timing,
            "pairs": args.pairs,
            "interval_ms": 7.5,
            "idle_hub_cpu": round((h1 - h0) / (t1 - t0), 4),
            "idle_client_cpu": round((c1 - c0) / (t1 - t0), 4),
            "stream_hub_cpu": round((h3 - h2) / (t3 - t2), 4),
            "stream_client_cpu": round((c3 - c2) / (t3 - t2), 4),
            "notifications_per_s": round(stream["received"] / args.seconds),
            **stream,
        }
        print(json.dumps(result))
        client.stdin.write("\n")
        client.stdin.flush()
    finally:
        if client is not None:
            client.kill()
            client.wait()
        hub.terminate()
        hub.wait(10)


if __name__ == "__main__":
    main()
