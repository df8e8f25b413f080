"""``mpbluetooth rootcanal``: serve Android's RootCanal virtual controller until stopped."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click

from ._app import Failure, command
from ._options import received

logger = logging.getLogger(__name__)


@command(
    "rootcanal",
    epilog="\b\nExamples:\n"
    "  mpbluetooth rootcanal                 # prints MPBLUETOOTH_TRANSPORT=tcp-client:...\n"
    "  mpbluetooth rootcanal --port 6402 --host 192.0.2.10\n"
    "  mpbluetooth run --rootcanal 192.0.2.10:6402 a.py   # a run (on any machine) joins it\n"
    "  MPBLUETOOTH_ROOTCANAL=/opt/rootcanal/bin/rootcanal mpbluetooth rootcanal",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="The HCI port hosts join. [default: a free one]",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to put in the printed spec: this machine's address as other machines "
    "reach it (RootCanal listens on every interface whatever this says).",
)
def _rootcanal(port: int | None, host: str) -> int:
    """Serve Android's RootCanal virtual controller.

    Prints the MPBLUETOOTH_TRANSPORT=... line that joins it. Each process (on this machine
    or another) that connects to the printed spec gets its own controller on RootCanal's one
    shared medium, as with `mpbluetooth sim-hub` but with a controller written by others
    (docs/rootcanal.md); `mpbluetooth run --rootcanal HOST:PORT` runs scripts on it. Needs
    the rootcanal extra (pip install "mpbluetooth[rootcanal]") or $MPBLUETOOTH_ROOTCANAL
    naming a binary. Runs until Ctrl-C, SIGTERM or RootCanal's exit.
    """
    return serve(port, host)


def serve(port: int | None, host: str) -> int:
    """Start RootCanal, print the spec on stdout, serve until SIGINT/SIGTERM or its exit."""
    from ..sim.rootcanal import RootCanal, RootCanalError

    rootcanal = RootCanal(port, host=host)
    try:
        spec = rootcanal.start()
    except RootCanalError as exc:
        raise Failure.of(exc) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # Ctrl-C: one line and status 130 (``_app.main``)
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
            raise Failure(f"RootCanal exited with {status}")
        return 0
    finally:
        rootcanal.stop()
        watcher.join(5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
