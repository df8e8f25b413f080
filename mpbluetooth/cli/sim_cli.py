"""``mpbluetooth sim-hub``: serve a simulated link to other processes until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from ..sim.hub import DEFAULT_TCP
from ..sim.hub import run_hub as serve

logger = logging.getLogger(__name__)

DEFAULT_TCP_TEXT = f"{DEFAULT_TCP[0]}:{DEFAULT_TCP[1]}"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tcp",
        action="append",
        type=_host_port,
        default=[],
        metavar="HOST:PORT",
        help="listen on TCP (repeatable); clients use tcp-client:HOST:PORT",
    )
    parser.add_argument(
        "--unix",
        action="append",
        default=[],
        metavar="PATH",
        help="listen on a unix socket (repeatable); clients use unix:PATH",
    )
    parser.add_argument(
        "--pty",
        action="append",
        default=[],
        metavar="PATH",
        help="also attach a virtual controller behind a pseudo-terminal linked at PATH "
        "(repeatable), for programs that open an HCI UART",
    )


def run_hub(args: argparse.Namespace) -> int:
    tcp = list(args.tcp) or ([] if args.unix else [DEFAULT_TCP])

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(tcp, list(args.unix), list(args.pty), stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        logger.error("sim-hub: %s", exc)
        return 1
    logger.info("sim-hub stopped")
    return 0
