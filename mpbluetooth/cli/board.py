"""``mpbluetooth board``: one simulated board on a serial line, for MicroPython's own tools."""

from __future__ import annotations

import os
import sys

import click

from .. import boards
from ._app import Failure, command
from ._options import (
    ENV_TRANSPORT,
    HostPort,
    resolve_transport,
    transport_options,
    use_snoop,
)


@command(
    "board",
    epilog="""\b
Examples:
  mpbluetooth board --root ./board                  # prints: serial /dev/pts/N
  mpremote connect /dev/pts/N fs cp -r lib :        # then: run app.py, repl, soft-reset
  mpbluetooth board --hub tcp-client:127.0.0.1:10723 --tcp :0     # also socket://HOST:PORT
  mpbluetooth board --transport tcp-client:127.0.0.1:6402   # join `mpbluetooth rootcanal`
  mpbluetooth board --engine rootcanal              # a RootCanal of its own, shareable
  mpbluetooth board --board esp32 --root ./esp32    # behave as an ESP32 does""",
)
@click.option(
    "--root",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, dir_okay=True, exists=True),
    help="The folder that is the board's filesystem (/): boot.py, main.py, lib/.",
)
@click.option(
    "--hub", metavar="SPEC", help="Join a running hub (tcp-client:HOST:PORT or unix:PATH)."
)
@transport_options("The board's controller")
@click.option(
    "--engine",
    type=click.Choice(["sim", "rootcanal"]),
    default="sim",
    show_default=True,
    help="Without --hub/--transport: sim joins the sim-hub on the default port when one "
    "runs (else a link of its own); rootcanal starts a RootCanal that other boards join "
    "with the printed --transport.",
)
@click.option(
    "--tcp",
    type=HostPort(),
    help="Also serve the serial line on TCP (HOST:PORT, :0 for a free port); mpremote "
    "connects to the printed socket://HOST:PORT.",
)
@click.option(
    "--link", metavar="PATH", help="A symlink at PATH to the pseudo-terminal (a stable name)."
)
@click.option(
    "--board",
    "profile",
    type=click.Choice(list(boards.BOARDS)),
    envvar=boards.ENV_BOARD,
    show_envvar=True,
    help="The board profile (docs/boards.md): its stack facts, sys.platform, os.uname() "
    "and banner. [default: unix]",
)
def _board(
    root: str,
    hub: str | None,
    transport: str | None,
    snoop: str | None,
    engine: str,
    tcp: tuple[str, int] | None,
    link: str | None,
    profile: str | None,
) -> int:
    """Run a simulated board that mpremote, pyboard.py and run-multitests.py talk to.

    The board's serial line is a pseudo-terminal (printed first: `serial /dev/pts/N`),
    with MicroPython's friendly and raw REPL on it, raw-paste mode, Ctrl-C and the soft
    reset (Ctrl-D), which runs boot.py and main.py of --root again. Its `bluetooth` is
    mpbluetooth's, on a hub, a RootCanal or a real controller; several boards, each its own
    `mpbluetooth board`, share one. Runs until Ctrl-C or SIGTERM on this console.
    """
    if sys.platform == "win32":
        raise Failure("a board needs a pseudo-terminal: Linux or macOS")
    rootcanal = None
    spec = hub or transport
    if spec is None and engine == "rootcanal":
        from ..sim.rootcanal import RootCanal, RootCanalError

        rootcanal = RootCanal()
        try:
            spec = rootcanal.start()
        except RootCanalError as exc:
            raise Failure.of(exc) from None
        click.echo(f"engine --transport {spec}")
    elif spec is None:
        spec = resolve_transport(None)
    if spec is not None:
        os.environ[ENV_TRANSPORT] = spec
    else:
        os.environ.pop(ENV_TRANSPORT, None)
    use_snoop(snoop)
    if profile is not None:
        os.environ[boards.ENV_BOARD] = profile

    def announce(device: str, url: str | None) -> None:
        click.echo(f"serial {device}")
        if url is not None:
            click.echo(f"tcp {url}")
        sys.stdout.flush()
        click.echo(
            f"mpbluetooth board: / is {os.path.realpath(root)}; controller: "
            f"{spec or 'a simulated link of its own'}; Ctrl-C stops the board",
            err=True,
        )

    from ..board import run

    try:
        return run(root, tcp=tcp, link=link, announce=announce)
    except OSError as exc:
        raise Failure.of(exc) from None
    finally:
        if rootcanal is not None:
            rootcanal.stop()
