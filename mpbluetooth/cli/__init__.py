"""The ``mpbluetooth`` command: a front door to the simulated radio and real controllers.

Subcommands grow with the project; ``demo`` runs a peripheral and a central talking over
the in-process simulated link, with nothing to install or plug in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from .._logging import configure_from_env
from .._transport import configured_spec
from ..sim.hub import DEFAULT_TCP
from . import demo, info, rootcanal_cli, run, scan, sim_cli, sim_ctl

__all__ = ["main"]


def _transport_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--transport", metavar="SPEC", help=f"{what} (any Bumble spec)")
    parser.add_argument(
        "--snoop", metavar="PATH", help="write an HCI trace (btsnoop, for Wireshark) to PATH"
    )


def _resolve_transport(given: str | None) -> str | None:
    """--transport, else MPBLUETOOTH_TRANSPORT, else a hub on the default port if one runs.

    An in-process simulated link would be empty, so scan/info look for a local hub."""
    spec = given or configured_spec()
    if spec:
        return spec
    host, port = DEFAULT_TCP
    try:
        socket.create_connection((host, port), 0.2).close()
    except OSError:
        print(
            "mpbluetooth: no transport given and no sim-hub on "
            f"{host}:{port}: using an empty in-process simulated link",
            file=sys.stderr,
        )
        return None
    spec = f"tcp-client:{host}:{port}"
    print(f"mpbluetooth: using the sim-hub at {spec}", file=sys.stderr)
    return spec


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
    ctl_parser = commands.add_parser(
        "sim-ctl", help="change a running sim-hub's radio: loss, latency, positions, kills"
    )
    sim_ctl.add_arguments(ctl_parser)

    rootcanal_cli.add_arguments(
        commands.add_parser(
            "rootcanal",
            help="serve Android's RootCanal virtual controller; prints MPBLUETOOTH_TRANSPORT",
            description=rootcanal_cli.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )

    run_parser = commands.add_parser(
        "run",
        help="run MicroPython BLE scripts, each as its own board, on one simulated link",
    )
    run_parser.add_argument(
        "scripts",
        nargs="+",
        metavar="[VAR=value] [stdin=FILE|input=TEXT] [address=ADDR] SCRIPT.py|-m MODULE",
        help="each script, after its own settings (see docs/compat.md)",
    )
    run_parser.add_argument("--timeout", type=float, help="stop everything after this many s")
    run_parser.add_argument(
        "--hub", metavar="SPEC", help="join a running hub (tcp-client:HOST:PORT or unix:PATH)"
    )
    run_parser.add_argument(
        "--stop-on-exit", action="store_true", help="stop the others when the first script ends"
    )
    run_parser.add_argument(
        "--no-str-buffer", action="store_true", help="run without the str-as-buffer transform"
    )
    _transport_options(run_parser, "run the scripts on this HCI transport instead")
    run_parser.add_argument(
        "--engine",
        choices=("sim", "rootcanal"),
        default="sim",
        help="the controllers of the local link: ours (sim) or a RootCanal started for the run",
    )
    sim_cli.add_link_arguments(run_parser)

    scan_parser = commands.add_parser("scan", help="a live table of nearby devices")
    scan_parser.add_argument(
        "--duration", type=float, default=0, help="seconds to scan (default: until Ctrl-C)"
    )
    scan_parser.add_argument(
        "--plain", action="store_true", help="no live refresh: print the table once at the end"
    )
    _transport_options(scan_parser, "the HCI transport to scan with")

    info_parser = commands.add_parser("info", help="describe the attached controller")
    _transport_options(info_parser, "the HCI transport to query")

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        argv = run.fold_module_options(argv)
    args = parser.parse_args(argv)
    if getattr(args, "snoop", None) and args.command != "run":
        os.environ["MPBLUETOOTH_SNOOP"] = args.snoop
    configure_from_env(default="info" if args.command == "sim-hub" else "")
    if args.command == "demo":
        return demo.run(timeout=args.timeout)
    if args.command == "sim-hub":
        return sim_cli.run_hub(args)
    if args.command == "sim-ctl":
        return sim_ctl.run(args)
    if args.command == "rootcanal":
        return rootcanal_cli.run(args)
    if args.command == "run":
        return asyncio.run(
            run.run_scripts(
                list(args.scripts),
                transport=args.transport,
                hub=args.hub,
                timeout=args.timeout,
                snoop=args.snoop,
                stop_on_exit=args.stop_on_exit,
                str_buffer=not args.no_str_buffer,
                link=sim_cli.link_settings(args),
                engine=args.engine,
            )
        )
    if args.command in ("scan", "info"):
        transport = _resolve_transport(args.transport)
        try:
            if args.command == "scan":
                return scan.scan(transport, args.duration, args.plain)
            return info.info(transport)
        except OSError as exc:
            print(f"mpbluetooth {args.command}: {exc}", file=sys.stderr)
            return 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
