"""Each Bumble override in ``mpbluetooth._overrides`` is still needed: the unpatched
behaviour, shown on plain Bumble objects, and what the override makes of it.

When an "unpatched" assertion here starts failing after a Bumble upgrade, Bumble fixed
the bug or closed the gap: drop the override (and its test).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from bumble.att import ATT_Handle_Value_Notification
from bumble.device import Device
from bumble.gatt_client import Client
from bumble.l2cap import L2CAP_LE_SIGNALING_CID, ChannelManager

from mpbluetooth import _overrides


def _le_channel(handle: int = 1) -> Any:
    """A closed LE channel as the manager files it (the manager reads only these fields)."""
    return SimpleNamespace(
        connection=SimpleNamespace(handle=handle), source_cid=0x40, destination_cid=0x41
    )


def _filed(manager: ChannelManager, channel: Any) -> None:
    manager.channels[1] = {channel.source_cid: channel}
    manager.le_coc_channels[1] = {channel.destination_cid: channel}


def test_a_closed_le_channel_stays_in_bumbles_le_table() -> None:
    manager = ChannelManager()
    channel = _le_channel()
    _filed(manager, channel)
    manager.on_channel_closed(channel)
    assert manager.le_coc_channels[1] == {0x41: channel}  # the stale-CID bug

    _overrides.drop_closed_le_channels(manager)
    _filed(manager, channel)
    manager.on_channel_closed(channel)
    assert manager.le_coc_channels[1] == {} and manager.channels[1] == {}


def test_a_truncated_signalling_frame_escapes_bumbles_manager() -> None:
    manager = ChannelManager()
    connection = SimpleNamespace(handle=1, peer_address="peer")
    with pytest.raises(Exception):  # noqa: B017 - whatever the parser raises
        manager.on_pdu(connection, L2CAP_LE_SIGNALING_CID, b"\x14")

    dropped: list[int] = []
    _overrides.guard_l2cap_pdus(manager, lambda conn, cid, exc: dropped.append(cid))
    manager.on_pdu(connection, L2CAP_LE_SIGNALING_CID, b"\x14")
    assert dropped == [L2CAP_LE_SIGNALING_CID]


async def test_a_late_confirmation_makes_bumble_fail() -> None:
    server = Device().gatt_server
    bearer = object()
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ended.cancel()  # the indication's wait was cancelled (link lost, power-off)
    server.pending_confirmations[bearer] = ended  # type: ignore[index]
    with pytest.raises(asyncio.InvalidStateError):
        server.on_att_handle_value_confirmation(bearer, None)  # type: ignore[arg-type]

    _overrides.ignore_late_confirmations(server)
    server.on_att_handle_value_confirmation(bearer, None)  # type: ignore[arg-type]


def test_bumbles_client_drops_notifications_of_unsubscribed_handles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = SimpleNamespace(handle=1, EVENT_DISCONNECTION="disconnection", on=lambda *a: None)
    client = Client(link)  # type: ignore[arg-type]
    notification = ATT_Handle_Value_Notification(attribute_handle=7, attribute_value=b"v")
    with caplog.at_level(logging.WARNING):
        client.on_att_handle_value_notification(notification)
    assert "no subscriber" in caplog.text  # and nobody was told

    got: list[int] = []
    _overrides.take_every_value(
        client, lambda pdu: got.append(pdu.attribute_handle), lambda pdu: None
    )
    client.on_att_handle_value_notification(notification)
    assert got == [7]


def test_bumble_serves_the_first_gap_name_for_good() -> None:
    device = Device()  # with the default GAP and GATT services

    def served() -> Any:
        from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

        return next(
            a.value
            for a in device.gatt_server.attributes
            if getattr(a, "type", None) == GATT_DEVICE_NAME_CHARACTERISTIC and hasattr(a, "value")
        )

    first = served()
    device.name = "renamed"
    assert served() == first

    _overrides.serve_gap_name(device, b"renamed \xff")
    assert served() == b"renamed \xff"


def test_bumbles_gatt_server_cannot_remove_services() -> None:
    server = Device().gatt_server
    assert not any(hasattr(server, name) for name in ("remove_service", "remove_services"))
    device = Device()  # with the default GAP and GATT services
    count = len(device.gatt_server.attributes)
    device.add_default_services()
    assert len(device.gatt_server.attributes) == 2 * count  # added, never replaced
    _overrides.reset_gatt_database(device)
    assert len(device.gatt_server.attributes) == count


def test_the_installed_bumble_is_a_tested_one() -> None:
    assert _overrides.check_bumble_version() is not None


def test_bumble_hands_a_new_pairing_request_to_a_finished_session() -> None:
    from bumble.smp import Manager, SMP_Pairing_Request_Command

    manager = Manager(SimpleNamespace(), lambda connection: None)  # type: ignore[arg-type,return-value]
    seen: list[Any] = []
    manager.sessions[1] = SimpleNamespace(completed=True, on_smp_command=seen.append)  # type: ignore[assignment]
    request = SMP_Pairing_Request_Command(
        io_capability=3,
        oob_data_flag=0,
        auth_req=0,
        maximum_encryption_key_size=16,
        initiator_key_distribution=0,
        responder_key_distribution=0,
    )
    connection = SimpleNamespace(handle=1, peer_address="peer", role=0)
    manager.on_smp_pdu(connection, bytes(request))  # type: ignore[arg-type]
    assert len(seen) == 1  # the second pairing went to the finished session: it never ends

    _overrides.forget_finished_smp_session(SimpleNamespace(smp_manager=manager), 1)  # type: ignore[arg-type]
    assert manager.sessions == {}


def test_bumble_takes_write_commands_in_tasks_of_their_own() -> None:
    from bumble.gatt_server import Server

    # A coroutine behind a wrapper that spawns it: each Write Command runs in a task of its
    # own, after what arrived with it, and with no permission check.
    handler = Server.on_att_write_command
    assert not asyncio.iscoroutinefunction(handler)
    assert asyncio.iscoroutinefunction(inspect.unwrap(handler))

    server = Device().gatt_server
    taken: list[Any] = []
    _overrides.take_write_commands(server, lambda bearer, request, default: taken.append(request))
    server.on_att_write_command(None, "request")  # type: ignore[arg-type]
    assert taken == ["request"]  # synchronously, in arrival order


def test_bumbles_responder_sends_its_keys_as_it_handles_encryption_change() -> None:
    """Plain Bumble: the responder's key distribution runs inside the Encryption Change
    handler (a NimBLE initiator then fails the pairing, see ``adjust_smp_sessions``)."""
    from bumble.smp import Session

    handler = inspect.getsource(Session.on_connection_encryption_change)
    assert "self.distribute_keys()" in handler

    device = Device()
    _overrides.adjust_smp_sessions(device)
    ours = device.smp_manager.session_proxy
    assert issubclass(ours, Session) and ours is not Session
    assert ours.on_connection_encryption_change is not Session.on_connection_encryption_change
    assert _overrides.RESPONDER_KEY_DELAY > 0


def test_bumble_cancels_the_end_of_pairing_when_the_link_drops() -> None:
    """Plain Bumble: storing the keys after the last one arrived is a task the link's
    disconnection cancels (a peer that disconnects at once leaves us without the bond)."""
    from bumble.smp import Session

    source = inspect.getsource(Session.on_peer_key_distribution_complete)
    assert "cancel_on_disconnection(self.on_pairing())" in source

    device = Device()
    _overrides.adjust_smp_sessions(device)
    ours = device.smp_manager.session_proxy
    assert "cancel_on_disconnection" not in inspect.getsource(
        ours.on_peer_key_distribution_complete
    )
    assert getattr(ours, "keys_received") is False  # noqa: B009


def test_bumble_modules_call_the_logging_module_which_configures_the_root_logger() -> None:
    """Plain Bumble: ``gatt_server`` calls ``logging.debug`` at every discovery's last Read
    By Type Request, which runs ``basicConfig`` on a root logger without handlers."""
    from bumble import gatt_server, smp

    source = inspect.getsource(gatt_server.Server.on_att_read_by_type_request)
    assert "logging.debug(" in source

    _overrides.route_bumble_module_logging()
    for module in (gatt_server, smp):
        routed = getattr(module, "logging")  # noqa: B009
        assert routed.debug == logging.getLogger(module.__name__).debug
        assert routed.DEBUG == logging.DEBUG  # the rest is the real module
