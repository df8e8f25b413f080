"""What several subcommands share: the transport and link options, the default hub, the
address formats (``HOST:PORT``, Bluetooth addresses), and the environment variables the
help lists.

Nothing here imports Bumble or the hub: the help of every command is built from this
module, and must work where the hub cannot (``termios`` is POSIX-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Where ``sim-hub`` listens by default, and where ``scan``/``info``/``sim-ctl`` look for one.
#: The same as ``sim.hub.DEFAULT_TCP`` (a test checks): importing the hub for a help text
#: would import Bumble, and ``termios``, which Windows lacks.
DEFAULT_HUB: Final = ("127.0.0.1", 10723)
DEFAULT_HUB_TEXT: Final = f"{DEFAULT_HUB[0]}:{DEFAULT_HUB[1]}"
DEFAULT_HUB_SPEC: Final = f"tcp-client:{DEFAULT_HUB_TEXT}"

#: Every ``MPBLUETOOTH_*`` variable a user sets, for ``mpbluetooth --help``;
#: the README's 'Environment variables' table says more about each (a test checks both
#: name the same ones).
ENVIRONMENT: Final = (
    ("MPBLUETOOTH_TRANSPORT", "the HCI controller (Bumble spec); unset: a simulated one"),
    ("MPBLUETOOTH_LOG", "log level of the mpbluetooth.* loggers (debug, info, ...[,bumble])"),
    ("MPBLUETOOTH_SNOOP", "write every HCI packet to this btsnoop file"),
    ("MPBLUETOOTH_SIM_TIMING", "air (default) or instant: the simulated radio's timing"),
    ("MPBLUETOOTH_SIM_ADDRESS", "this process's address on a hub (an address or any name)"),
    ("MPBLUETOOTH_BOARD", "the board profile: unix (default), esp32, stm32, rp2"),
    ("MPBLUETOOTH_STRICT", "1: event memoryviews are released when the IRQ handler returns"),
    ("MPBLUETOOTH_DELIVERY", "thread: IRQ handlers on a thread, not the main one"),
    ("MPBLUETOOTH_CPU", "any: leave mpbluetooth's threads off one shared CPU"),
    ("MPBLUETOOTH_L2CAP_MULTICHANNEL", "1: several L2CAP channels per connection"),
    ("MPBLUETOOTH_ROOTCANAL", "the RootCanal binary to run instead of the package's"),
    ("MPBLUETOOTH_MIP_INDEX", "the package index of `mip install`"),
    ("MPBLUETOOTH_WARM", "0: start mpbluetooth-python programs cold (no warm server)"),
    ("MPBLUETOOTH_WARM_DIR", "where warm-start servers keep their sockets"),
    ("MPBLUETOOTH_WARM_IDLE", "seconds a warm-start server waits idle before it ends (60)"),
    ("MPBLUETOOTH_<ROW>", "0 switches off a MicroPython behaviour (mpbluetooth-python -h)"),
)

ENV_TRANSPORT: Final = "MPBLUETOOTH_TRANSPORT"
ENV_SNOOP: Final = "MPBLUETOOTH_SNOOP"
ENV_TIMING: Final = "MPBLUETOOTH_SIM_TIMING"

#: The timings of the simulated link (``sim.link.TIMINGS``, checked by the same test).
TIMINGS: Final = ("air", "instant")
#: LL PDUs per connection event and direction (``sim.link.DEFAULT_PDUS_PER_EVENT``).
DEFAULT_PDUS_PER_EVENT: Final = 4

NON_NEGATIVE: Final = click.FloatRange(min=0)
POSITIVE: Final = click.FloatRange(min=0, min_open=True)


class HostPort(click.ParamType):
    """``HOST:PORT`` (``:PORT`` means 127.0.0.1) with a port in 0..65535."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        host, _, port = str(value).rpartition(":")
        try:
            number = int(port)
        except ValueError:
            self.fail(f"expected HOST:PORT, got {value!r}", param, ctx)
        if not 0 <= number <= 65535:
            self.fail(f"port {number} is not in 0..65535", param, ctx)
        return host or "127.0.0.1", number


class RootCanalAt(HostPort):
    """``HOST:PORT`` of a running RootCanal's HCI port; the ``tcp-client:HOST:PORT`` spec
    that ``mpbluetooth rootcanal`` prints is taken too, so it can be pasted as it is."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            value = value.removeprefix("tcp-client:")
        host, port = super().convert(value, param, ctx)
        if port == 0:
            self.fail("port 0: give the port RootCanal's HCI port listens on", param, ctx)
        return host, port


def format_address(addr: bytes) -> str:
    """The one way the command line shows an address: big-endian, upper case, colons
    (``F2:00:00:00:00:01``), as Bumble, BlueZ and the hub's listing show it."""
    return bytes(addr).hex(":").upper()


def transport_options(what: str, *, from_env: bool = True) -> Callable[[F], F]:
    """``--transport SPEC`` (``$MPBLUETOOTH_TRANSPORT`` when ``from_env``) and
    ``--snoop PATH`` (``$MPBLUETOOTH_SNOOP``)."""

    def decorate(function: F) -> F:
        function = click.option(
            "--snoop",
            metavar="PATH",
            envvar=ENV_SNOOP,
            show_envvar=True,
            help="Write an HCI trace (btsnoop, for Wireshark) to PATH.",
        )(function)
        return click.option(
            "--transport",
            metavar="SPEC",
            envvar=ENV_TRANSPORT if from_env else None,
            show_envvar=from_env,
            help=f"{what} (any Bumble transport spec: usb:0, serial:/dev/ttyACM0,1000000, "
            "hci-socket:0, tcp-client:HOST:PORT, unix:PATH).",
        )(function)

    return decorate


#: The signals :func:`stop_on_signals` received: a command stopped by Ctrl-C ends with
#: exit status 130 and one line (``_app.main``), however it wound down.
received: list[int] = []


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on Ctrl-C or SIGTERM (call on the running loop). Windows has no signal
    handlers on a loop: there Ctrl-C interrupts ``asyncio.run`` instead."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)


def use_snoop(snoop: str | None) -> None:
    """Make ``--snoop`` the process's ``$MPBLUETOOTH_SNOOP``, which the stack reads."""
    if snoop:
        os.environ[ENV_SNOOP] = snoop


def resolve_transport(given: str | None) -> str | None:
    """The transport for ``scan``/``info``: ``given`` (the option or its environment
    variable), else the hub on the default port if one runs, else None (an in-process
    simulated link, which is empty: said on stderr)."""
    if given:
        return given
    try:
        socket.create_connection(DEFAULT_HUB, 0.2).close()
    except OSError:
        click.echo(
            f"mpbluetooth: no --transport and no sim-hub on {DEFAULT_HUB_TEXT}: "
            "using an empty in-process simulated link",
            err=True,
        )
        return None
    click.echo(f"mpbluetooth: using the sim-hub at {DEFAULT_HUB_SPEC}", err=True)
    return DEFAULT_HUB_SPEC


class LossRate(click.ParamType):
    """A share of lost PDUs: ``0.1`` or ``10%``, in [0, 1)."""

    name = "RATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            rate = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            self.fail(f"{text!r} is not a number (0.1 or 10%)", param, ctx)
        if not 0 <= rate < 1:
            self.fail(f"a loss rate is in [0, 1) or [0%, 100%), not {text!r}", param, ctx)
        return rate


def link_options(function: F) -> F:
    """The simulated link's timing and faults (``sim-hub`` and ``run``), as ``link=``, the
    keyword arguments of ``sim.hub.Hub``."""
    options = [
        click.option(
            "--timing",
            type=click.Choice(TIMINGS),
            envvar=ENV_TIMING,
            show_envvar=True,
            help="air: connection events, advertising/scan timing, supervision timeouts, "
            "RSSI from positions; instant: every packet at once. [default: air]",
        ),
        click.option(
            "--loss",
            type=LossRate(),
            default=0.0,
            help="Lose this share of PDUs and adverts (0.1 or 10%); lost PDUs are "
            "retransmitted at later connection events (air timing).",
        ),
        click.option(
            "--latency",
            type=NON_NEGATIVE,
            default=0.0,
            metavar="MS",
            help="Extra milliseconds before a queued PDU may leave (air timing).",
        ),
        click.option(
            "--pdus-per-event",
            type=click.IntRange(min=1),
            default=DEFAULT_PDUS_PER_EVENT,
            show_default=True,
            metavar="N",
            help="LL PDUs per connection event and direction.",
        ),
        click.option(
            "--seed", type=int, help="Seed loss, RSSI jitter and advDelay (reproducible runs)."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def link_settings(
    timing: str | None, loss: float, latency: float, pdus_per_event: int, seed: int | None
) -> dict[str, Any]:
    """``Hub`` keyword arguments from the options of :func:`link_options`."""
    return {
        "timing": timing,
        "loss": loss,
        "latency": latency / 1000.0,
        "pdus_per_event": pdus_per_event,
        "seed": seed,
    }
