"""``mpbluetooth sim-ctl``: change a running hub's radio (faults) from the command line.

It opens the hub's ordinary socket and says ``MPBCTL`` instead of speaking HCI, then sends
one JSON request per line (``Hub.control`` lists them) and prints each answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import click

from ._app import Failure, command, one_line
from ._options import DEFAULT_HUB_SPEC, NON_NEGATIVE, LossRate

#: Seconds to wait for the hub to answer a request.
ANSWER_TIMEOUT = 5.0

_EXAMPLES = """\b
Examples:
  mpbluetooth sim-ctl list
  mpbluetooth sim-ctl loss 0.1                  # everyone
  mpbluetooth sim-ctl loss 0.1 tcp-1 tcp-2      # one pair
  mpbluetooth sim-ctl latency 20                # milliseconds
  mpbluetooth sim-ctl move tcp-2 30 0           # metres
  mpbluetooth sim-ctl out-of-range tcp-2
  mpbluetooth sim-ctl disconnect tcp-1 tcp-2 0x13
  mpbluetooth sim-ctl kill tcp-2
  mpbluetooth sim-ctl --hub unix:/tmp/hub.sock list"""


def send(spec: str, request: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """Send one request to the hub at ``spec``; returns its answer (``ok``, ``result`` or
    ``error``). Raises OSError when the hub cannot be reached or does not answer."""
    from ..sim.hub import CONTROL_HELLO

    scheme, _, rest = spec.partition(":")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Any = rest
    elif scheme in ("tcp-client", "tcp"):
        host, _, port = rest.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host or "127.0.0.1", int(port))
    else:
        raise ValueError(f"a hub is tcp-client:HOST:PORT or unix:PATH, not {spec!r}")
    with sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(CONTROL_HELLO + b"\n" + json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the hub closed the control session")
            answer += chunk
    try:
        result = json.loads(answer)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise ConnectionError(f"what answered is not a hub (it said {answer[:32]!r})")
    return result


def _ask(request: dict[str, Any]) -> int:
    """Send ``request`` to the hub of ``--hub`` and print its answer; the exit status."""
    spec = click.get_current_context().obj or DEFAULT_HUB_SPEC
    try:
        answer = send(spec, request)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    except OSError as exc:
        cause = one_line(exc)
        raise Failure(
            f"no answer from a hub at {spec} ({cause}): is `mpbluetooth sim-hub` running?"
        ) from None
    if not answer.get("ok"):
        raise Failure(str(answer.get("error")))
    result = answer.get("result")
    if request["op"] == "list" and isinstance(result, dict):
        _print_listing(result)
    else:
        click.echo(result)
    return 0


def _print_listing(result: dict[str, Any]) -> None:
    click.echo(f"timing: {result['timing']}")
    for member in result["members"]:
        x, y, z = member["position"]
        dead = " (dead)" if member["dead"] else ""
        where = f"({x:.1f}, {y:.1f}, {z:.1f}) m"
        click.echo(f"{member['name']:<10} {member['address']:<22} at {where}{dead}")
        for c in member["connections"]:
            timing = (
                f" {c['interval_ms']:.2f} ms, timeout {c['timeout_ms']:.0f} ms,"
                f" {c['delivered']} PDUs, {c['lost']} lost"
                if "interval_ms" in c
                else ""
            )
            click.echo(f"    {c['role']} of {c['peer']}{timing}")


def _pair(pair: tuple[str, ...]) -> dict[str, str]:
    if len(pair) not in (0, 2):
        raise click.UsageError(f"give two members or none, not {len(pair)}")
    return {"a": pair[0], "b": pair[1]} if pair else {}


@command("sim-ctl", cls=click.Group, epilog=_EXAMPLES)
@click.option(
    "--hub",
    default=DEFAULT_HUB_SPEC,
    show_default=True,
    metavar="SPEC",
    help="The hub: tcp-client:HOST:PORT or unix:PATH.",
)
@click.pass_context
def sim_ctl(ctx: click.Context, hub: str) -> None:
    """Change a running sim-hub's radio: loss, latency, positions, kills.

    Members are named as `list` shows them (tcp-1, unix-2, ...). A change applies at once
    and lasts until the hub stops.
    """
    ctx.obj = hub


assert isinstance(sim_ctl, click.Group)


@sim_ctl.command("list")
def _list() -> int:
    """Members, their addresses and positions, and their connections."""
    return _ask({"op": "list"})


@sim_ctl.command("loss")
@click.argument("rate", type=LossRate())
@click.argument("pair", nargs=-1, metavar="[MEMBER MEMBER]")
def _loss(rate: float, pair: tuple[str, ...]) -> int:
    """Lose this share (0.1 or 10%) of PDUs between a pair, or between everyone."""
    return _ask({"op": "loss", "rate": rate, **_pair(pair)})


@sim_ctl.command("latency")
@click.argument("ms", type=NON_NEGATIVE)
@click.argument("pair", nargs=-1, metavar="[MEMBER MEMBER]")
def _latency(ms: float, pair: tuple[str, ...]) -> int:
    """Extra latency in milliseconds between a pair, or between everyone."""
    return _ask({"op": "latency", "seconds": ms / 1000.0, **_pair(pair)})


@sim_ctl.command("move")
@click.argument("name")
@click.argument("coordinates", nargs=-1, required=True, type=float, metavar="X Y [Z]")
def _move(name: str, coordinates: tuple[float, ...]) -> int:
    """Put a member at X Y [Z] metres (RSSI and range follow, air timing)."""
    if len(coordinates) > 3:
        raise click.UsageError(f"at most three coordinates, not {len(coordinates)}")
    x, y, z = (list(coordinates) + [0.0, 0.0])[:3]
    return _ask({"op": "move", "name": name, "x": x, "y": y, "z": z})


@sim_ctl.command("out-of-range")
@click.argument("name")
def _out_of_range(name: str) -> int:
    """Move a member out of everyone's range."""
    return _ask({"op": "out_of_range", "name": name})


@sim_ctl.command("disconnect")
@click.argument("a")
@click.argument("b")
@click.argument("reason", default="0x08")
def _disconnect(a: str, b: str, reason: str) -> int:
    """Force the link between members A and B down with an HCI REASON (default 0x08,
    connection timeout)."""
    try:
        code = int(reason, 0)
    except ValueError:
        raise click.BadParameter(f"{reason!r} is not a number", param_hint="REASON") from None
    if not 0 <= code <= 0xFF:
        raise click.BadParameter(f"{reason} is not in 0..0xff", param_hint="REASON")
    return _ask({"op": "disconnect", "a": a, "b": b, "reason": code})


@sim_ctl.command("kill")
@click.argument("name")
def _kill(name: str) -> int:
    """A member's controller dies."""
    return _ask({"op": "kill", "name": name})
