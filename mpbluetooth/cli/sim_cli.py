"""``mpbluetooth sim-hub``: serve a simulated link to other processes until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from ..sim.hub import DEFAULT_TCP
from ..sim.hub import run_hub as serve
from ..sim.link import DEFAULT_PDUS_PER_EVENT, TIMING_ENV, TIMINGS

logger = logging.getLogger(__name__)

DEFAULT_TCP_TEXT = f"{DEFAULT_TCP[0]}:{DEFAULT_TCP[1]}"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None


def _rate(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a loss rate is in [0, 1) or [0%, 100%), not {text!r}")
    return value


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulated link's timing and faults (``sim-hub`` and ``run``)."""
    group = parser.add_argument_group("simulated radio")
    group.add_argument(
        "--timing",
        choices=TIMINGS,
        default=None,
        help=f"air: connection events, advertising/scan timing, supervision timeouts, RSSI "
        f"from positions; instant: every packet at once (default: ${TIMING_ENV}, else air)",
    )
    group.add_argument(
        "--loss",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="lose this share of PDUs and adverts (0.1 or 10%%); lost PDUs are retransmitted "
        "at later connection events (air timing)",
    )
    group.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="extra milliseconds before a queued PDU may leave (air timing)",
    )
    group.add_argument(
        "--pdus-per-event",
        type=int,
        default=DEFAULT_PDUS_PER_EVENT,
        metavar="N",
        help=f"LL PDUs per connection event and direction (default {DEFAULT_PDUS_PER_EVENT})",
    )
    group.add_argument(
        "--seed", type=int, default=None, help="seed loss, RSSI jitter and advDelay (reproducible)"
    )


def link_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``Hub`` keyword arguments from the options of ``add_link_arguments``."""
    return {
        "timing": args.timing,
        "loss": args.loss,
        "latency": args.latency / 1000.0,
        "pdus_per_event": args.pdus_per_event,
        "seed": args.seed,
    }


def ipaddress_is_loopback(host: str) -> bool:
    """Whether a listening address only accepts this machine (a name counts if it is
    ``localhost``); an unspecified address (0.0.0.0, ::) accepts everyone."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    add_link_arguments(parser)


def run_hub(args: argparse.Namespace) -> int:
    tcp = list(args.tcp) or ([] if args.unix else [DEFAULT_TCP])
    for host, port in tcp:
        if not ipaddress_is_loopback(host):
            logger.warning(
                "sim-hub: %s:%d is reachable from other machines and the link has no "
                "authentication: anyone who reaches it joins the link and sees every instance",
                host,
                port,
            )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(tcp, list(args.unix), list(args.pty), stop, **link_settings(args))

    try:
        asyncio.run(main())
    except (OSError, ValueError) as exc:
        logger.error("sim-hub: %s", exc)
        return 1
    logger.info("sim-hub stopped")
    return 0
