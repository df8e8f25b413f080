"""The ``mpbluetooth`` command: a front door to the simulated radio and real controllers.

Subcommands grow with the project; ``demo`` runs a peripheral and a central talking over
the in-process simulated link, with nothing to install or plug in.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import demo

__all__ = ["main"]


def _configure_logging() -> None:
    level = os.environ.get("MPBLUETOOTH_LOG", "").strip().upper()
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
    args = parser.parse_args(argv)
    _configure_logging()
    if args.command == "demo":
        return demo.run(timeout=args.timeout)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
