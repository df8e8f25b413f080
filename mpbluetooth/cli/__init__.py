"""The ``mpbluetooth`` command: a front door to the simulated radio and real controllers.

Subcommands grow with the project; ``demo`` runs a peripheral and a central talking over
the in-process simulated link, with nothing to install or plug in.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import demo, sim_cli

__all__ = ["main"]


def _configure_logging(default: str = "") -> None:
    level = os.environ.get("MPBLUETOOTH_LOG", default).strip().upper()
    if level:
        logging.basicConfig(
            level=getattr(logging, level, logging.INFO),
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mpbluetooth",
        description="MicroPython's bluetooth module on CPython, over Bumble.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo", help="a peripheral and a central on the simulated radio, in one process"
    )
    demo_parser.add_argument(
        "--timeout", type=float, default=10.0, help="give up after this many seconds"
    )
    hub_parser = commands.add_parser(
        "sim-hub",
        help="host one simulated link that processes join over TCP, unix sockets or a pty",
        description=(
            "Serve a simulated link. Each process that connects (MPBLUETOOTH_TRANSPORT="
            "tcp-client:HOST:PORT or unix:PATH) gets its own virtual controller on it. "
            f"Default: --tcp {sim_cli.DEFAULT_TCP_TEXT}."
        ),
    )
    sim_cli.add_hub_arguments(hub_parser)
    args = parser.parse_args(argv)
    _configure_logging(default="INFO" if args.command == "sim-hub" else "")
    if args.command == "demo":
        return demo.run(timeout=args.timeout)
    if args.command == "sim-hub":
        return sim_cli.run_hub(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
