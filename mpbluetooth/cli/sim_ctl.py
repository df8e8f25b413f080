"""``mpbluetooth sim-ctl``: change a running hub's radio (faults) from the command line.

It opens the hub's ordinary socket and says ``MPBCTL`` instead of speaking HCI, then sends
one JSON request per line (``Hub.control`` lists them) and prints each answer. Examples::

    mpbluetooth sim-ctl list
    mpbluetooth sim-ctl loss 0.1                  # everyone
    mpbluetooth sim-ctl loss 0.1 tcp-1 tcp-2      # one pair
    mpbluetooth sim-ctl latency 20                # milliseconds
    mpbluetooth sim-ctl move tcp-2 30 0           # metres
    mpbluetooth sim-ctl out-of-range tcp-2
    mpbluetooth sim-ctl disconnect tcp-1 tcp-2 0x13
    mpbluetooth sim-ctl kill tcp-2
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from ..sim.hub import CONTROL_HELLO, DEFAULT_TCP

#: Seconds to wait for the hub to answer a request.
ANSWER_TIMEOUT = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub",
        default=f"tcp-client:{DEFAULT_TCP[0]}:{DEFAULT_TCP[1]}",
        metavar="SPEC",
        help="the hub: tcp-client:HOST:PORT or unix:PATH (default: %(default)s)",
    )
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    ops.add_parser("list", help="members, positions and connections")
    loss = ops.add_parser("loss", help="loss rate (0..1) between a pair, or everyone")
    loss.add_argument("rate", type=float)
    loss.add_argument("pair", nargs="*", metavar="MEMBER")
    latency = ops.add_parser("latency", help="extra latency in ms between a pair, or everyone")
    latency.add_argument("ms", type=float)
    latency.add_argument("pair", nargs="*", metavar="MEMBER")
    move = ops.add_parser("move", help="put a member at X Y [Z] metres")
    move.add_argument("name")
    move.add_argument("coordinates", nargs="+", type=float, metavar="X")
    far = ops.add_parser("out-of-range", help="move a member out of everyone's range")
    far.add_argument("name")
    disconnect = ops.add_parser("disconnect", help="force a link down with a reason")
    disconnect.add_argument("a")
    disconnect.add_argument("b")
    disconnect.add_argument("reason", nargs="?", default="0x08", help="HCI reason (default 0x08)")
    kill = ops.add_parser("kill", help="a member's controller dies")
    kill.add_argument("name")


def request_from(args: argparse.Namespace) -> dict[str, Any]:
    op = args.op
    if op == "list":
        return {"op": "list"}
    if op in ("loss", "latency"):
        if len(args.pair) not in (0, 2):
            raise ValueError(f"{op}: give two members or none")
        request: dict[str, Any] = {"op": op}
        if op == "loss":
            request["rate"] = args.rate
        else:
            request["seconds"] = args.ms / 1000.0
        if args.pair:
            request["a"], request["b"] = args.pair
        return request
    if op == "move":
        x, y, z = (list(args.coordinates) + [0.0, 0.0])[:3]
        return {"op": "move", "name": args.name, "x": x, "y": y, "z": z}
    if op == "out-of-range":
        return {"op": "out_of_range", "name": args.name}
    if op == "disconnect":
        return {"op": "disconnect", "a": args.a, "b": args.b, "reason": int(args.reason, 0)}
    return {"op": "kill", "name": args.name}


def send(spec: str, request: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """Send one request to the hub at ``spec``; returns its answer (``ok``, ``result`` or
    ``error``). Raises OSError when the hub cannot be reached or does not answer."""
    scheme, _, rest = spec.partition(":")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Any = rest
    elif scheme in ("tcp-client", "tcp"):
        host, _, port = rest.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host or "127.0.0.1", int(port))
    else:
        raise ValueError(f"a hub is tcp-client:HOST:PORT or unix:PATH, not {spec!r}")
    with sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(CONTROL_HELLO + b"\n" + json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the hub closed the control session")
            answer += chunk
    result: dict[str, Any] = json.loads(answer)
    return result


def run(args: argparse.Namespace) -> int:
    try:
        answer = send(args.hub, request_from(args))
    except (OSError, ValueError) as exc:
        print(f"mpbluetooth sim-ctl: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"mpbluetooth sim-ctl: {answer.get('error')}", file=sys.stderr)
        return 1
    result = answer.get("result")
    if args.op == "list" and isinstance(result, dict):
        print(f"timing: {result['timing']}")
        for member in result["members"]:
            x, y, z = member["position"]
            dead = " (dead)" if member["dead"] else ""
            where = f"({x:.1f}, {y:.1f}, {z:.1f}) m"
            print(f"{member['name']:<10} {member['address']:<22} at {where}{dead}")
            for c in member["connections"]:
                timing = (
                    f" {c['interval_ms']:.2f} ms, timeout {c['timeout_ms']:.0f} ms,"
                    f" {c['delivered']} PDUs, {c['lost']} lost"
                    if "interval_ms" in c
                    else ""
                )
                print(f"    {c['role']} of {c['peer']}{timing}")
    else:
        print(result)
    return 0
