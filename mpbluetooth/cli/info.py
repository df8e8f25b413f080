"""``mpbluetooth info``: what controller is attached, as its power-on told the host."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from .. import boards
from ._app import Failure, command
from ._options import format_address, resolve_transport, transport_options, use_snoop

if TYPE_CHECKING:
    from bumble.device import Device


def controller_info(device: Device, spec: str) -> dict[str, str]:
    """What the controller of a powered-on Bumble ``device`` said about itself: its
    addresses, versions, manufacturer, LE features and ACL buffers."""
    from bumble.company_ids import COMPANY_IDENTIFIERS

    host = device.host
    version = host.local_version
    queue = host.le_acl_packet_queue
    features = [f.name for f in type(host.local_le_features) if f in host.local_le_features]
    info = {
        "transport": spec,
        "public address": _address(device.public_address),
        "random address": _address(device.random_address),
        "LE features": ", ".join(str(f) for f in features) or "none",
        "LE ACL buffers": (
            f"{queue.max_in_flight} x {queue.max_packet_size} bytes" if queue else "none"
        ),
    }
    if version is not None:
        info["HCI version"] = (
            f"{_spec_name(version.hci_version)} (subversion 0x{version.hci_subversion:04x})"
        )
        info["LMP version"] = (
            f"{_spec_name(version.lmp_version)} (subversion 0x{version.lmp_subversion:04x})"
        )
        company = version.company_identifier
        info["manufacturer"] = f"{COMPANY_IDENTIFIERS.get(company, 'unknown')} (0x{company:04x})"
    return info


def _address(address: Any) -> str:
    # Bumble keeps addresses little-endian; the command line shows them big-endian.
    return format_address(bytes(address)[::-1])


def _spec_name(number: int) -> str:
    from bumble.hci import SpecificationVersion

    try:
        name = SpecificationVersion(number).name
    except ValueError:
        return f"0x{number:02x}"
    return name.replace("BLUETOOTH_CORE_", "").replace("_", ".")


def info(transport: str | None, out: TextIO = sys.stdout) -> int:
    """Power the controller on, print what it said, power it off."""
    from ..ble import open as open_ble

    with open_ble(transport, name="info") as ble:
        ble.active(True)
        stack = ble._stack
        opened = stack.transport
        details = controller_info(stack.require(), opened.spec if opened else "")
    _table(list(details.items()), out)
    return 0


def board_info(name: str, out: TextIO = sys.stdout) -> int:
    """Print a board profile (``mpbluetooth.boards``): what a program sees under it."""
    _table(boards.get(name).describe(), out)
    return 0


def _table(rows: list[tuple[str, str]], out: TextIO) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        out.write(f"{key:<{width}}  {value}\n")


@command(
    "info",
    epilog="\b\nExamples:\n"
    "  mpbluetooth info --transport usb:0\n"
    "  mpbluetooth info --transport serial:/dev/ttyACM0,1000000\n"
    "  mpbluetooth info     # a sim-hub's controller, if one runs on 127.0.0.1:10723\n"
    "  mpbluetooth info --board esp32     # the esp32 profile; no controller is opened",
)
@transport_options("The HCI transport to query")
@click.option(
    "--board",
    type=click.Choice(list(boards.BOARDS)),
    help="Print this board profile (built-in services, handles, names, keys, methods, "
    "platform, modules, path) instead of querying a controller.",
)
def _info(transport: str | None, snoop: str | None, board: str | None) -> int:
    """Describe the attached controller.

    Its addresses, HCI and LMP versions, manufacturer, LE features and ACL buffers. Opens
    --transport (else $MPBLUETOOTH_TRANSPORT, else a sim-hub on 127.0.0.1:10723 if one
    runs), powers the controller on, prints what it reported and closes it again.
    """
    if board is not None:
        return board_info(board)
    use_snoop(snoop)
    try:
        return info(resolve_transport(transport))
    except OSError as exc:
        raise Failure.of(exc) from None
