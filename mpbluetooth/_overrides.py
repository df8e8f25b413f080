"""Every place we replace a Bumble method or reach into Bumble's internals, in one module.

Bumble's API changes between 0.0.x releases; what we override is where an upgrade bites.
Each function here names the upstream bug or gap it works around, and
``tests/test_overrides.py`` shows on plain Bumble objects that it is still needed (when
such a test starts failing, Bumble fixed it: drop the override). The concern modules call
these functions and never assign into Bumble objects themselves.

The Bumble releases we test are :data:`TESTED_BUMBLE` (``constraints.txt`` pins the
oldest; tox's ``newest-bumble`` runs the newest); :func:`check_bumble_version` warns when
a process opens its first controller outside them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._runtime import guarded

if TYPE_CHECKING:
    from bumble.device import Connection, Device
    from bumble.gatt_client import Client
    from bumble.gatt_server import Server
    from bumble.l2cap import ChannelManager, LeCreditBasedChannel

logger = logging.getLogger(__name__)

#: The oldest and newest Bumble releases the suite has passed on.
TESTED_BUMBLE = ("0.0.236", "0.0.236")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def check_bumble_version() -> str | None:
    """Log a warning when the installed Bumble is outside :data:`TESTED_BUMBLE` (without
    importing Bumble). Returns the installed version, None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("bumble")
    except PackageNotFoundError:
        return None
    oldest, newest = (_version(v) for v in TESTED_BUMBLE)
    if not oldest <= _version(installed) <= newest:
        logger.warning(
            "Bumble %s is installed; mpbluetooth is tested with %s..%s (see constraints.txt)",
            installed,
            *TESTED_BUMBLE,
        )
    return installed


# --- device and host ----------------------------------------------------------------
def serve_gap_name(device: Device, name: bytes) -> None:
    """Serve ``name`` from the running GAP service at once.

    Gap: Bumble builds the Device Name characteristic from ``device.name`` when the
    default services are added and has no way to change it afterwards; NimBLE serves
    the new name at once, and keeps bytes that are not UTF-8 as they are.
    """
    from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

    device.name = name.decode("utf-8", "replace")
    for attribute in device.gatt_server.attributes:
        if getattr(attribute, "type", None) == GATT_DEVICE_NAME_CHARACTERISTIC and hasattr(
            attribute, "value"
        ):
            attribute.value = name


def reset_gatt_database(
    device: Device, services: list[Any] | None = None, first_handle: int = 1
) -> None:
    """Back to the built-in services (NimBLE's ``ble_gatts_reset``): ``services``, else
    Bumble's default GAP and GATT services, numbered from ``first_handle``.

    Gaps: Bumble's GATT server can add services but never remove them, and numbers
    attributes from 1 by their count; NimBLE's handle counter may run on from an earlier
    database (see ``docs/boards.md``).
    """
    server = device.gatt_server
    server.attributes.clear()
    server.attributes_by_handle.clear()
    server.services.clear()
    server.subscribers.clear()
    offset = first_handle - 1
    # Bumble asks for the next handle twice per characteristic (declaration, value)
    # before adding it: it must be computed from the list, not counted.
    server.next_handle = lambda: offset + 1 + len(server.attributes)  # type: ignore[method-assign]
    if services is None:
        device.add_default_services()
    else:
        device.add_services(services)


def refuse_mtu_exchange_as_central(server: Server) -> None:
    """Answer an Exchange MTU Request with Request Not Supported on links where we are
    the central (BTstack: "it does not support a remote peripheral initiating the MTU
    exchange", MicroPython's docs).

    Gap: Bumble's server always answers it.
    """
    from bumble.att import ATT_REQUEST_NOT_SUPPORTED_ERROR, ATT_Error_Response
    from bumble.hci import Role

    default = server.on_att_exchange_mtu_request

    def on_exchange_mtu_request(bearer: Any, request: Any) -> None:
        if getattr(bearer, "role", None) != Role.CENTRAL:
            default(bearer, request)
            return
        server.send_response(
            bearer,
            ATT_Error_Response(
                request_opcode_in_error=request.op_code,
                attribute_handle_in_error=0x0000,
                error_code=ATT_REQUEST_NOT_SUPPORTED_ERROR,
            ),
        )

    server.on_att_exchange_mtu_request = guarded(on_exchange_mtu_request)  # type: ignore[method-assign]


def report_transport_lost(device: Device) -> None:
    """Tell the host its transport is gone, so connections see their disconnection.

    Bug: Bumble's snooping wrapper around a transport's source hides the loss from the
    host, so without this its connections never end.
    """
    try:
        device.host.on_transport_lost()
    except Exception:  # the host knew already
        logger.debug("the host already knew of the transport loss")


# --- GATT server ----------------------------------------------------------------------
def take_write_commands(
    server: Server, handler: Callable[[Any, Any, Callable[..., Any]], None]
) -> None:
    """Give ATT Write Commands to ``handler(bearer, request, bumble_default)``.

    Gap: Bumble runs each Write Command in a task of its own, so a burst is stored out of
    step with the notifications and events around it, and it applies no permission
    checks; NimBLE stores them in arrival order, synchronously.
    """
    default = server.on_att_write_command

    def on_write_command(bearer: Any, request: Any) -> None:
        handler(bearer, request, default)

    server.on_att_write_command = guarded(on_write_command)


def take_requests(server: Server, handler: Callable[[Any, Any, Callable[..., Any]], None]) -> None:
    """Give ATT Read and Write Requests to ``handler(bearer, request, bumble_default)``.

    Gap: Bumble reads or writes the attribute in a task of its own and sends the response
    when that task resumes, one loop iteration (two for a read) after the value's access
    completes; NimBLE sends it from the access callback that ran the application's
    handler, before the application does anything else (a notification it sends then
    follows the response), and handles the request as it arrives.
    """
    for name in ("on_att_read_request", "on_att_write_request"):
        default = getattr(server, name)

        def on_request(bearer: Any, request: Any, default: Any = default) -> None:
            handler(bearer, request, default)

        setattr(server, name, guarded(on_request))


def ignore_late_confirmations(server: Server) -> None:
    """Drop a Handle Value Confirmation for an indication whose wait already ended.

    Bug: an indication whose wait was cancelled (link lost, power-off) or timed out
    leaves its future done until Bumble's cleanup runs; a confirmation arriving in
    between makes Bumble set the future again and log an ``InvalidStateError``. NimBLE
    ignores such a confirmation.
    """
    bumble_confirmation = server.on_att_handle_value_confirmation

    def on_confirmation(bearer: Any, confirmation: Any) -> None:
        pending = server.pending_confirmations.get(bearer)
        if pending is not None and pending.done():
            return
        bumble_confirmation(bearer, confirmation)

    server.on_att_handle_value_confirmation = guarded(on_confirmation)  # type: ignore[method-assign]


# --- GATT client ----------------------------------------------------------------------
def take_every_value(
    client: Client,
    on_notification: Callable[[Any], None],
    on_indication: Callable[[Any], None],
) -> None:
    """Deliver every notification and indication, subscribed or not.

    Gap: Bumble's client delivers them only for handles subscribed through its own API;
    MicroPython programs subscribe by writing the CCCD themselves (and NimBLE reports
    every one).
    """
    client.on_att_handle_value_notification = on_notification  # type: ignore[method-assign,assignment]
    client.on_att_handle_value_indication = on_indication  # type: ignore[method-assign,assignment]


def intercept_att_pdus(
    device: Device, handler: Callable[[Callable[[int, bytes], None], int, bytes], None]
) -> None:
    """Give every ATT PDU to ``handler(bumble_default, conn_handle, pdu)`` first.

    Gap: a malformed PDU raises inside Bumble's ATT dispatch (a loop error); NimBLE
    answers a malformed request with "Invalid PDU" and ends a procedure whose response is
    malformed. Also lets us see which PDUs are responses, to keep NimBLE's event order.
    """
    from bumble.att import ATT_CID

    manager = device.l2cap_channel_manager
    default = manager.fixed_channels[ATT_CID]
    assert default is not None
    manager.register_fixed_channel(ATT_CID, functools.partial(handler, default))


def fail_pending_response(connection: Connection, exc: Exception) -> None:
    """End the client's request waiting on ``connection`` with ``exc`` (instead of the
    30 s ATT timeout): Bumble has no API to fail it."""
    pending = connection.gatt_client.pending_response
    if pending is not None and not pending.done():
        pending.set_exception(exc)


# --- L2CAP ----------------------------------------------------------------------------
def take_le_coc_requests(manager: ChannelManager, handler: Callable[..., None]) -> None:
    """Give LE credit-based connection requests to
    ``handler(manager, bumble_default, connection, signaling_cid, request)``.

    Gap: Bumble answers "connection successful" before its server handler runs, so the
    application cannot refuse a channel (NimBLE's ``_IRQ_L2CAP_ACCEPT``). The manager
    looks its handlers up by name on the instance, so an instance attribute wins.
    """
    default = manager.on_l2cap_le_credit_based_connection_request
    manager.on_l2cap_le_credit_based_connection_request = functools.partial(  # type: ignore[method-assign]
        handler, manager, default
    )


def drop_closed_le_channels(manager: ChannelManager) -> None:
    """Forget a closed LE channel in the manager's LE table too.

    Bug: Bumble's ``on_channel_closed`` removes the channel from ``channels`` but not from
    ``le_coc_channels``, so the peer cannot open another channel on the same link with
    the same CID (a stale-CID refusal).
    """
    closed = manager.on_channel_closed

    def on_channel_closed(channel: Any) -> None:
        closed(channel)
        handle: int = channel.connection.handle
        source_cid: int = channel.source_cid
        destination_cid: int = channel.destination_cid
        le_channels = manager.le_coc_channels.get(handle)
        if le_channels is not None and le_channels.get(destination_cid) is channel:
            del le_channels[destination_cid]
        by_cid = manager.channels.get(handle)
        if by_cid is not None and by_cid.get(source_cid) is channel:
            del by_cid[source_cid]

    manager.on_channel_closed = on_channel_closed  # type: ignore[method-assign]


def guard_l2cap_pdus(
    manager: ChannelManager, dropped: Callable[[Any, int, Exception], None]
) -> None:
    """Drop an L2CAP PDU Bumble cannot parse or handle, with ``dropped(connection, cid,
    exc)``.

    Gap: a truncated SMP command or signalling frame raises out of the manager into the
    host's packet handling, where it surfaces as a loop error; NimBLE drops it.
    """
    on_pdu = manager.on_pdu

    def guarded_pdu(connection: Any, cid: int, pdu: bytes) -> None:
        try:
            on_pdu(connection, cid, pdu)
        except Exception as exc:  # whatever a peer sends
            dropped(connection, cid, exc)

    manager.on_pdu = guarded_pdu  # type: ignore[method-assign]


def own_channel_flow(
    channel: LeCreditBasedChannel,
    on_pdu: Callable[[bytes], None],
    on_credits: Callable[[int], None],
) -> None:
    """Take a channel's received PDUs and credit frames.

    Gap: Bumble hands the peer new credits as PDUs arrive; MicroPython returns them only
    once the application has read everything (``l2cap_recvinto``), which is its flow
    control. The manager and the credit frames call these by name on the instance.
    """
    channel.on_pdu = on_pdu  # type: ignore[method-assign,assignment]
    channel.on_credits = on_credits  # type: ignore[method-assign,assignment]


def bumble_credits(channel: LeCreditBasedChannel, credits: int) -> None:
    """Bumble's own handling of a credit frame (after :func:`own_channel_flow`)."""
    type(channel).on_credits(channel, credits)


# --- logging --------------------------------------------------------------------------
class _ModuleLogging:
    """Stands in for the ``logging`` module inside a Bumble module: its logging calls go
    to the module's own logger; everything else is the real module's."""

    _CALLS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def __getattr__(self, name: str) -> Any:
        if name in self._CALLS:
            return getattr(self._logger, name)
        return getattr(logging, name)


def route_bumble_module_logging() -> None:
    """Bumble's module-level ``logging.debug(...)`` calls go to the module's logger.

    Bug: some Bumble modules call the ``logging`` module's functions (``gatt_server`` at
    every Read By Type Request that finds nothing, so at every discovery; ``smp``), and
    on a root logger without handlers such a call runs ``logging.basicConfig``: the
    program's own ``basicConfig`` is then ignored, and records that reach the root print
    in that default format on stderr.
    """
    from bumble import gatt_server, smp

    for module in (gatt_server, smp):
        if not isinstance(getattr(module, "logging", None), _ModuleLogging):
            setattr(module, "logging", _ModuleLogging(module.__name__))  # noqa: B010


# --- security -------------------------------------------------------------------------
def smp_session(device: Device, conn_handle: int) -> Any:
    """The link's SMP session, if any (Bumble has no public accessor)."""
    return device.smp_manager.sessions.get(conn_handle)


#: Seconds a responder waits after Encryption Change before it distributes its keys.
RESPONDER_KEY_DELAY = 0.1


def adjust_smp_sessions(device: Device) -> None:
    """Bumble's SMP sessions with two changes, both for NimBLE peers.

    1. A responder's keys leave :data:`RESPONDER_KEY_DELAY` after Encryption Change.
       Gap: Bumble's responder sends its keys in the same step as it handles Encryption
       Change, which SMP allows. NimBLE's initiator sends LE Start Encryption from inside
       its loop over received ACL data and blocks for the Command Status; data read
       meanwhile (our keys) joins that loop's queue and is handled before the Encryption
       Change event that came first, in the wrong state: NimBLE answers each key with
       Pairing Failed (Unspecified Reason). On a controller that delivers the Command
       Status, the Encryption Change and our keys together (RootCanal), pairing with
       MicroPython as central failed every time. On a radio, encryption start takes
       connection events, and NimBLE's own responder is slower than that.
    2. Keys that all arrived are stored even when the link drops right after.
       Bug: Bumble runs the end of pairing (storing the keys) as a task that the link's
       disconnection cancels, so a peer that disconnects as soon as its last key is out
       leaves us without the bond (seen on RootCanal: the next encryption fails with
       PIN or Key Missing). NimBLE stores them as the last key arrives.
       ``keys_received`` tells :mod:`._security` that the pairing will still report.
    """
    device.smp_manager.session_proxy = _session_class()


@functools.cache
def _session_class() -> type[Any]:
    import asyncio

    from bumble.smp import Session

    class NimbleFriendlySession(Session):
        keys_received = False
        _finishing: asyncio.Task[None] | None = None

        def on_connection_encryption_change(self) -> None:
            if not (self.is_responder and self.connection.is_encrypted and not self.completed):
                super().on_connection_encryption_change()
                return
            self.connection.cancel_on_disconnection(self._distribute_later())

        async def _distribute_later(self) -> None:
            await asyncio.sleep(RESPONDER_KEY_DELAY)
            Session.on_connection_encryption_change(self)

        def on_peer_key_distribution_complete(self) -> None:
            self.keys_received = True
            if self.is_initiator:
                self.distribute_keys()
            self._finishing = asyncio.ensure_future(self._finish_pairing())

        async def _finish_pairing(self) -> None:
            try:
                await self.on_pairing()
            except Exception as exc:  # the pairing's watcher reports it as failed
                logger.debug("finishing a pairing failed: %r", exc)

    return NimbleFriendlySession


def forget_finished_smp_session(device: Device, conn_handle: int) -> None:
    """Drop a finished SMP session.

    Bug: Bumble keeps it until the link closes and hands the peer's next Pairing Request
    to it, so a second pairing on the link (after a wrong passkey, or to pair again)
    never completes.
    """
    sessions = device.smp_manager.sessions
    session = sessions.get(conn_handle)
    if session is not None and session.completed:
        del sessions[conn_handle]


__all__ = [
    "TESTED_BUMBLE",
    "check_bumble_version",
    "serve_gap_name",
    "reset_gatt_database",
    "refuse_mtu_exchange_as_central",
    "report_transport_lost",
    "take_write_commands",
    "take_requests",
    "ignore_late_confirmations",
    "take_every_value",
    "intercept_att_pdus",
    "fail_pending_response",
    "take_le_coc_requests",
    "drop_closed_le_channels",
    "guard_l2cap_pdus",
    "own_channel_flow",
    "bumble_credits",
    "smp_session",
    "adjust_smp_sessions",
    "route_bumble_module_logging",
    "RESPONDER_KEY_DELAY",
    "forget_finished_smp_session",
]
