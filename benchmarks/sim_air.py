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
import subprocess
import sys
import time

CLIENT = r"""
import json, sys, time
import mpbluetooth
from mpbluetooth import UUID
from mpbluetooth.constants import IRQ_CENTRAL_CONNECT, IRQ_GATTC_NOTIFY, IRQ_PERIPHERAL_CONNECT
from mpbluetooth.testing import Recorder
spec, pairs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
SERVICE = ((UUID(0x180F), ((UUID(0x2A19), 0x12),)),)
links, centrals = [], []
for n in range(pairs):
    p, c = mpbluetooth.open(spec, f"p{n}"), mpbluetooth.open(spec, f"c{n}")
    on_p, on_c = Recorder(keep={IRQ_CENTRAL_CONNECT}), Recorder(keep={IRQ_PERIPHERAL_CONNECT})
    p.irq(on_p); c.irq(on_c); p.active(True); c.active(True)
    ((vh,),) = p.gatts_register_services(SERVICE)
    p.gap_advertise(20000, b"\x02\x01\x06")
    c.gap_connect(*p.config("mac"), 2000, 7500, 7500)
    on_c.wait(IRQ_PERIPHERAL_CONNECT)
    links.append((p, on_p.wait(IRQ_CENTRAL_CONNECT)[0], vh))
    centrals.append(on_c)
print("connected", flush=True)
sys.stdin.readline()  # idle phase measured by the parent
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for p, conn, vh in links:
        try:
            p.gatts_notify(conn, vh, b"x" * 20)
            sent += 1
        except OSError:
            time.sleep(0.0005)
time.sleep(0.5)
received = sum(on_c.count(IRQ_GATTC_NOTIFY) for on_c in centrals)
print(json.dumps({"sent": sent, "received": received}), flush=True)
sys.stdin.readline()
"""


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timing", default="air")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    from mpbluetooth.testing import HubProcess

    hub = HubProcess(args.timing)
    client = None
    try:
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                hub.spec,
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
        h0, c0, t0 = _cpu(hub.process.pid), _cpu(client.pid), time.monotonic()
        time.sleep(args.seconds)
        h1, c1, t1 = _cpu(hub.process.pid), _cpu(client.pid), time.monotonic()
        client.stdin.write("\n")
        client.stdin.flush()
        h2, c2, t2 = _cpu(hub.process.pid), _cpu(client.pid), time.monotonic()
        stream = json.loads(client.stdout.readline())
        h3, c3, t3 = _cpu(hub.process.pid), _cpu(client.pid), time.monotonic()
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
        hub.stop()


if __name__ == "__main__":
    main()
