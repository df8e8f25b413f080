"""``mpbluetooth rootcanal``: serve Android's RootCanal virtual controller until stopped.

Each process (on this machine or another) that connects to the printed spec gets its own
controller on RootCanal's one shared medium, as with ``mpbluetooth sim-hub`` but with a
controller written by others (``docs/rootcanal.md``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from ..sim.rootcanal import RootCanal, RootCanalError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="the HCI port hosts join (default: a free one)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to put in the printed spec: this machine's address as other "
        "machines reach it (RootCanal listens on every interface whatever this says)",
    )


def run(args: argparse.Namespace) -> int:
    """Start RootCanal, print the spec on stdout, serve until SIGINT/SIGTERM or its exit."""
    rootcanal = RootCanal(args.port, host=args.host)
    try:
        spec = rootcanal.start()
    except RootCanalError as exc:
        print(f"mpbluetooth rootcanal: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    process = rootcanal.process
    assert process is not None

    def watch() -> None:
        process.wait()
        stop.set()

    watcher = threading.Thread(target=watch, name="rootcanal-watch", daemon=True)
    watcher.start()
    try:
        print(f"MPBLUETOOTH_TRANSPORT={spec}", flush=True)
        print(
            f"mpbluetooth rootcanal: serving (pid {process.pid}); every connection is a new "
            "controller. It listens on EVERY interface with no authentication: anyone who "
            f"reaches port {rootcanal.hci_port} joins. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
        status = process.poll()
        if status is not None:
            print(f"mpbluetooth rootcanal: RootCanal exited with {status}", file=sys.stderr)
            return 1
        return 0
    finally:
        rootcanal.stop()
        watcher.join(5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
