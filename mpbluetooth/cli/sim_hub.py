"""``mpbluetooth sim-hub``: serve a simulated link to other processes until stopped."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import click

from ._app import Failure, command
from ._options import (
    DEFAULT_HUB,
    DEFAULT_HUB_TEXT,
    HostPort,
    link_options,
    link_settings,
    stop_on_signals,
)

logger = logging.getLogger(__name__)


def ipaddress_is_loopback(host: str) -> bool:
    """Whether a listening address only accepts this machine (a name counts if it is
    ``localhost``); an unspecified address (0.0.0.0, ::) accepts everyone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@command(
    "sim-hub",
    log_default="info",
    epilog="\b\nExamples:\n"
    "  mpbluetooth sim-hub &\n"
    f"  MPBLUETOOTH_TRANSPORT=tcp-client:{DEFAULT_HUB_TEXT} mpbluetooth-python peripheral.py &\n"
    f"  MPBLUETOOTH_TRANSPORT=tcp-client:{DEFAULT_HUB_TEXT} mpbluetooth-python central.py\n"
    "  mpbluetooth sim-hub --unix /tmp/hub.sock --timing instant --loss 5%\n"
    "  mpbluetooth sim-hub --pty /tmp/ttyBLE     # a program that opens an HCI UART",
)
@click.option(
    "--tcp",
    "tcp",
    multiple=True,
    type=HostPort(),
    help="Listen on TCP (repeatable); clients use MPBLUETOOTH_TRANSPORT=tcp-client:HOST:PORT. "
    f"[default: {DEFAULT_HUB_TEXT} unless --unix is given]",
)
@click.option(
    "--unix",
    "unix",
    multiple=True,
    metavar="PATH",
    help="Listen on a unix socket (repeatable); clients use unix:PATH.",
)
@click.option(
    "--pty",
    "pty",
    multiple=True,
    metavar="PATH",
    help="Also attach a virtual controller behind a pseudo-terminal linked at PATH "
    "(repeatable, POSIX only), for programs that open an HCI UART.",
)
@link_options
def _sim_hub(
    tcp: tuple[tuple[str, int], ...], unix: tuple[str, ...], pty: tuple[str, ...], **link: Any
) -> int:
    """Host a simulated link that other processes join.

    They join over TCP, unix sockets or a pty. Each process that connects gets its own
    virtual controller on the link, with its own address ($MPBLUETOOTH_SIM_ADDRESS keeps one
    across runs). Runs until Ctrl-C or SIGTERM; `mpbluetooth sim-ctl` changes its radio
    meanwhile. Logs at the info level unless -v/--log-level/$MPBLUETOOTH_LOG say otherwise.
    """
    listen = list(tcp) or ([] if unix else [DEFAULT_HUB])
    for host, port in listen:
        if not ipaddress_is_loopback(host):
            logger.warning(
                "sim-hub: %s:%d is reachable from other machines and the link has no "
                "authentication: anyone who reaches it joins the link and sees every instance",
                host,
                port,
            )
    from ..sim.hub import run_hub

    async def serve() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_hub(listen, list(unix), list(pty), stop, **link_settings(**link))

    try:
        asyncio.run(serve())
    except (OSError, ValueError) as exc:
        raise Failure.of(exc) from None
    logger.info("sim-hub stopped")
    return 0
