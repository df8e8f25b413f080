"""Choosing and opening the HCI controller an instance talks to.

The controller is chosen, in order, by an explicit spec given to the instance, by
``mpbluetooth.set_transport()``, by the ``MPBLUETOOTH_TRANSPORT`` environment variable,
and otherwise is an in-process virtual controller on the process's simulated link (so
``BLE().active(True)`` works with no hardware). Any Bumble transport spec is accepted,
and the specs of in-process engines: ``sim`` (the default link) and the ``sim:N`` of each
``sim.Link``, which registers itself here (:func:`register_engine`). This module is the
one way a stack gets a controller. Every failure to open becomes a
:class:`TransportError` naming the spec, the cause and, where we can tell, the fix;
opening never takes longer than ``OPEN_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import weakref
from typing import TYPE_CHECKING, Any

from ._engine import SIM_SPEC, OpenedTransport, engine_for
from ._errors import TransportError
from ._overrides import check_bumble_version
from ._runtime import runtime

if TYPE_CHECKING:
    from bumble.device import Device

    from ._address import OwnAddress

logger = logging.getLogger(__name__)

ENV_TRANSPORT = "MPBLUETOOTH_TRANSPORT"

#: Seconds allowed to open a transport (a TCP connect, a USB claim, a serial open).
OPEN_TIMEOUT = 5.0
#: Seconds a transport may take to close before teardown goes on without it.
CLOSE_TIMEOUT = 2.0

_process_spec: str | None = None


def set_transport(spec: str | None) -> None:
    """Desktop only: choose the HCI transport for instances activated from now on.

    ``spec`` is any Bumble transport spec (``usb:0``, ``serial:/dev/ttyACM0,1000000``,
    ``hci-socket:0``, ``tcp-client:127.0.0.1:10723``, ``unix:PATH``...). ``None`` goes back
    to ``MPBLUETOOTH_TRANSPORT`` or, without it, the in-process simulated controller.
    Takes effect at the next ``active(True)``.
    """
    global _process_spec
    if spec is not None and (not isinstance(spec, str) or not spec.strip()):
        raise ValueError("transport spec must be a non-empty str or None")
    _process_spec = spec


def configured_spec() -> str | None:
    """The transport spec in force for instances without their own, or None for the sim."""
    if _process_spec is not None:
        return _process_spec
    spec = os.environ.get(ENV_TRANSPORT, "").strip()
    return spec or None


async def open_controller(
    spec: str | None, name: str, address: OwnAddress, first_conn_handle: int = 1
) -> OpenedTransport:
    """Open the controller for an instance: ``spec``, else the configured one, else the
    default simulated link. ``address`` keeps what the instance's addresses need across
    openings (a simulated controller's public address, a hub's stable one);
    ``first_conn_handle`` is the board profile's, which a simulated controller is asked to
    number its connections from."""
    check_bumble_version()  # once per process, as its first controller opens
    spec = resolve_spec(spec)
    engine = engine_for(spec)
    if engine is None and spec == SIM_SPEC:
        from .sim.transport import default_engine

        engine = default_engine()
    if engine is not None:
        opened = engine.open_controller(name, address)
    else:
        opened = await open_spec(spec)
        if opened.terminated is None:
            return opened
    from .sim.transport import claim_stable_address, number_connections_from

    claim = engine is None
    earlier = opened.after_power_on

    async def after_power_on(device: Device) -> None:
        if earlier is not None:
            await earlier(device)
        if claim:
            await claim_stable_address(device, address, name)
        await number_connections_from(device, first_conn_handle, name)

    opened.after_power_on = after_power_on
    return opened


class KeptController:
    """A controller behind a transport, kept open across ``active(False)``.

    A board's host keeps its controller (and so its address) while the radio is off, and
    an engine that makes a controller per connection (RootCanal) would give the next
    activation a new address (SPEC D6). The in-process simulated controller is not kept:
    the instance keeps its address itself.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._transport: OpenedTransport | None = None

    def keep(self, transport: OpenedTransport) -> bool:
        """Keep ``transport`` (loop thread); False if it cannot be (in process, or lost)."""
        if transport.terminated is None or transport.terminated.done():
            return False
        logger.debug("%s: keeping the controller behind %s", self._name, transport.spec)
        self._transport = transport
        runtime().add_shutdown_hook(self.release)
        return True

    def take(self, spec: str | None) -> OpenedTransport | None:
        """The kept controller, if it is still there and the instance still asks for the
        same transport; else None (and the kept one is closed)."""
        kept, self._transport = self._transport, None
        if kept is None:
            return None
        runtime().remove_shutdown_hook(self.release)
        if kept.terminated is not None and not kept.terminated.done():
            if kept.spec == resolve_spec(spec):
                return kept
        runtime().spawn(close_quietly(kept), f"{self._name}-close")
        return None

    async def release(self) -> None:
        """Close the kept controller (the instance is discarded, or the interpreter exits)."""
        kept, self._transport = self._transport, None
        runtime().remove_shutdown_hook(self.release)
        if kept is not None:
            await close_quietly(kept)


async def close_quietly(transport: OpenedTransport) -> None:
    """Close a transport within a deadline; a failure is only logged (teardown goes on)."""
    try:
        await asyncio.wait_for(transport.close(), CLOSE_TIMEOUT)
    except Exception as exc:
        logger.warning("closing %s failed: %r", transport.spec, exc)


def resolve_spec(spec: str | None) -> str:
    """The transport an instance opens: its own spec, else the configured one, else the
    default simulated link."""
    return spec if spec is not None else configured_spec() or SIM_SPEC


async def open_spec(spec: str) -> OpenedTransport:
    """Open a Bumble transport by spec (on the loop), bounded and with a clear error."""
    from bumble.transport import open_transport

    try:
        transport = await asyncio.wait_for(open_transport(spec), OPEN_TIMEOUT)
    except TimeoutError:
        raise TransportError(
            errno.ETIMEDOUT,
            f"cannot open transport {spec!r}: no answer within {OPEN_TIMEOUT:g} s",
        ) from None
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise transport_error(spec, exc) from None
    source = transport.source
    _ack_promptly(source, transport.sink)
    terminated = getattr(source, "terminated", None)
    return OpenedTransport(source, transport.sink, transport.close, spec, terminated)


def _ack_promptly(source: Any, sink: Any) -> None:
    """On a TCP transport, acknowledge every segment at once instead of after Linux's
    delayed-ACK timer (40 ms).

    A controller that writes one H4 packet in two ``send()`` calls without TCP_NODELAY
    (RootCanal writes the packet type, then the packet) has its second write held by Nagle's
    algorithm until our ACK of the first, which the delayed-ACK timer holds back: every
    command then takes about 44 ms and power-on, 20 commands, 0.9 s instead of 0.1 s.
    TCP_QUICKACK is not sticky (the kernel may fall back to delayed ACKs), so it is set again
    after every read; setting it also sends an ACK that is pending. The first bytes read are
    kept for ``answered``'s error.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    writer = getattr(sink, "transport", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    received = getattr(source, "data_received", None)
    if quickack is None or get_extra_info is None or received is None:
        return
    sock = get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return

    first = _first_bytes[source] = []

    def data_received(data: bytes) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass  # the socket is closing; the data is still delivered
        if not first:  # a local test: this runs for every chunk the controller sends
            first.append(data[:_FIRST_BYTES])
        received(data)

    source.data_received = data_received


def transport_error(spec: str, exc: BaseException) -> TransportError:
    """Turn whatever a transport raised into one line: spec, cause, and a hint."""
    cause = str(exc) or type(exc).__name__
    if type(exc) is not Exception and type(exc).__name__ not in cause:
        cause = f"{type(exc).__name__}: {cause}"
    code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.ENODEV
    scheme = spec.split(":", 1)[0].lower()
    hint = _hint(scheme, exc, code)
    message = f"cannot open transport {spec!r}: {cause}"
    if hint:
        message += f" (hint: {hint})"
    return TransportError(code, message.replace("\n", " "))


def _hint(scheme: str, exc: BaseException, code: int) -> str:
    name = type(exc).__name__
    text = str(exc).lower()
    if "unknown transport scheme" in text:
        return "use one of usb:, serial:, hci-socket:, tcp-client:, unix:, pty:, vhci, ..."
    if scheme in ("usb", "pyusb"):
        if "access" in name.lower() or "access" in text or code in (errno.EACCES, errno.EPERM):
            return (
                "no permission to open the USB device: add a udev rule for the dongle "
                "(or join the plugdev group), or run as root"
            )
        if "busy" in text or code == errno.EBUSY:
            return (
                "the dongle is claimed by the OS Bluetooth driver: unbind btusb or stop bluetoothd"
            )
        if "not found" in text or "no such device" in text:
            return "no matching USB Bluetooth dongle is attached; `usb:0` is the first one"
        return "check the dongle is attached and libusb is installed"
    if scheme == "hci-socket":
        if code in (errno.EPERM, errno.EACCES):
            return (
                "raw HCI sockets need CAP_NET_RAW and CAP_NET_ADMIN: run as root or "
                "`sudo setcap cap_net_raw,cap_net_admin+eip $(readlink -f $(which python3))`"
            )
        if code == errno.EBUSY:
            return "bluetoothd holds the adapter: power it down first (`sudo hciconfig hci0 down`)"
        if "not supported" in text:
            return "HCI sockets need Linux with a Bluetooth adapter"
    if scheme == "serial":
        return "the spec is serial:DEVICE[,BAUDRATE] (H4 boards usually run at 1000000 baud)"
    if scheme in ("tcp-client", "unix") and code in (errno.ECONNREFUSED, errno.ENOENT):
        return "nothing is listening there: start `mpbluetooth sim-hub` or the HCI bridge first"
    return ""


#: How often ``answered`` looks whether the controller has answered a command.
_ANSWER_POLL = 0.1
#: What a TCP controller sent first, kept to say what answered a power-on that stalled
#: (a server that is not a controller, or nothing at all).
_first_bytes: weakref.WeakKeyDictionary[Any, list[bytes]] = weakref.WeakKeyDictionary()
_FIRST_BYTES = 16


async def answered(device: Device, transport: OpenedTransport, limit: float) -> None:
    """Run Bumble's power-on (about twenty HCI commands, one at a time) and fail only when
    the controller leaves one of them unanswered for ``limit`` seconds, not when the
    whole sequence takes longer: a simulated controller behind a hub that a hundred
    starting programs starve of CPU answers every command, late (3-7 s in all for 100
    boards on 2 cores), and a controller that is gone never does. The caller's own
    deadline (``Runtime.call``'s 15 s) still bounds the whole."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(device.power_on())
    host = device.host
    seen: object = None
    since = loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_ANSWER_POLL)
            if done:
                return task.result()
            command = host.pending_command
            if command is not seen:
                seen, since = command, loop.time()
            elif loop.time() - since >= limit:
                # Name what was waited for (a lost command and a stalled host differ),
                # and what the controller sent first, if it is a TCP one.
                what = "no HCI command was pending" if command is None else command.name
                first = _first_bytes.get(transport.source)
                if first:
                    what += f"; it sent first: 0x{first[0].hex()}"
                raise TimeoutError(what)
    finally:
        if not task.done():
            task.cancel()
