"""The simulation hub: instances in different processes on one simulated link."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpbluetooth
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import HubProcess, Recorder, wait_until
from mpbluetooth.testing.lowlevel import on_loop

from .conftest import ENV

ADV = b"\x02\x01\x06\x06\x09remote"
RESP = b"\x05\x09resp"

PERIPHERAL = """
import sys, mpbluetooth
ble = mpbluetooth.BLE()
ble.irq(lambda e, d: print("irq", e, *[bytes(x).hex() if isinstance(x, memoryview) else x
                                      for x in d], flush=True))
ble.active(True)
ble.gap_advertise(20000, bytes.fromhex(sys.argv[1]), resp_data=bytes.fromhex(sys.argv[2]),
                  connectable=sys.argv[3] == "1")
kind, addr = ble.config("mac")
print("ready", kind, addr.hex(), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def hub() -> Iterator[HubProcess]:
    the_hub = HubProcess()
    yield the_hub
    the_hub.stop()


class Peer:
    """A MicroPython-style peripheral in its own process, joined to the hub."""

    def __init__(
        self, spec: str, adv: bytes = ADV, connectable: bool = True, identity: str = ""
    ) -> None:
        env = {**ENV, "MPBLUETOOTH_TRANSPORT": spec}
        if identity:
            env["MPBLUETOOTH_SIM_ADDRESS"] = identity
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PERIPHERAL, adv.hex(), RESP.hex(), "1" if connectable else "0"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for _ in range(50):  # IRQs raised while starting (secrets) may come first
            words = self.proc.stdout.readline().split()
            if not words or words[0] == "ready":
                break
        if words[:1] != ["ready"]:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"peer did not start: {words} {err}")
        self.addr_type, self.addr = int(words[1]), bytes.fromhex(words[2])

    def line(self) -> str:
        """The next output line about connections (IRQ 1/2), skipping any others."""
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline().strip()
            if not line or line.startswith(("irq 1 ", "irq 2 ")):
                return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def local(hub: HubProcess) -> tuple[BLE, Recorder]:
    """An instance in this process, joined to the hub (closed with it)."""
    return hub.instance("local")


@pytest.mark.parametrize(("connectable", "adv_type"), [(True, 0), (False, 2)])
def test_scan_across_processes_sees_payload_type_and_scan_response(
    hub: HubProcess, local: tuple[BLE, Recorder], connectable: bool, adv_type: int
) -> None:
    ble, recorder = local
    peer = Peer(hub.spec, connectable=connectable)
    try:
        ble.gap_scan(0, 30000, 30000, True)
        result = recorder.wait(IRQ_SCAN_RESULT, lambda d: d[1] == peer.addr and d[2] == adv_type)
        response = recorder.wait(IRQ_SCAN_RESULT, lambda d: d[1] == peer.addr and d[2] == 4)
        ble.gap_scan(None)
        assert result == (peer.addr_type, peer.addr, adv_type, -50, ADV)
        assert response[4] == RESP
    finally:
        peer.close()


def test_connect_disconnect_across_processes(hub: HubProcess, local: tuple[BLE, Recorder]) -> None:
    ble, recorder = local
    peer = Peer(hub.spec)
    try:
        ble.gap_connect(peer.addr_type, peer.addr)
        conn = recorder.wait(IRQ_PERIPHERAL_CONNECT)[0]
        assert peer.line().startswith("irq 1 ")
        assert ble.gap_disconnect(conn) is True
        recorder.wait(IRQ_PERIPHERAL_DISCONNECT)
        assert peer.line().startswith("irq 2 ")
    finally:
        peer.close()


def test_killed_peer_disconnects_survivor_at_once_and_hub_serves_on(
    hub: HubProcess, local: tuple[BLE, Recorder]
) -> None:
    ble, recorder = local
    peer = Peer(hub.spec)
    ble.gap_connect(peer.addr_type, peer.addr)
    conn = recorder.wait(IRQ_PERIPHERAL_CONNECT)[0]
    killed = time.monotonic()
    peer.proc.kill()
    assert recorder.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=1.0)[0] == conn
    took = time.monotonic() - killed
    assert took < 1.0
    peer.close()
    # A new pair is served afterwards.
    fresh = Peer(hub.spec)
    try:
        ble.gap_connect(fresh.addr_type, fresh.addr)
        recorder.wait(IRQ_PERIPHERAL_CONNECT, count=2)
    finally:
        fresh.close()


def test_hub_killed_gives_disconnects_then_enodev_then_recovers(
    hub: HubProcess, local: tuple[BLE, Recorder]
) -> None:
    ble, recorder = local
    peer = Peer(hub.spec)
    try:
        ble.gap_connect(peer.addr_type, peer.addr)
        recorder.wait(IRQ_PERIPHERAL_CONNECT)
        hub.crash()
        recorder.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=2.0)
        wait_until(lambda: not ble.active(), 5, "inactive after the hub died")
        with pytest.raises(OSError) as info:
            ble.gap_scan(0)
        assert info.value.errno == 19
    finally:
        peer.close()
    # The hub comes back on the same port: active(True) works again.
    revived = HubProcess(spec=hub.spec)
    try:
        assert ble.active(True) is True
        assert ble.config("mac")[1] != bytes(6)
    finally:
        ble.active(False)
        revived.stop()


def test_hub_logs_joins_and_leaves(hub: HubProcess) -> None:
    peer = Peer(hub.spec)
    peer.close()
    err = hub.stop()
    assert "joined" in err and "left" in err


def test_unix_socket_hub(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sock")
    spec = f"unix:{path}"
    hub = HubProcess(spec=spec)
    try:
        ble = mpbluetooth.open(spec, "unix-local")
        recorder = Recorder()
        ble.irq(recorder)
        ble.active(True)
        peer = Peer(spec)
        try:
            ble.gap_connect(peer.addr_type, peer.addr)
            recorder.wait(IRQ_PERIPHERAL_CONNECT)
            peer.proc.kill()
            recorder.wait(IRQ_PERIPHERAL_DISCONNECT, timeout=1.0)
        finally:
            peer.close()
            ble.close()
    finally:
        hub.stop()


def test_pty_host_joins_the_link(tmp_path: Path) -> None:
    """A program speaking HCI over a UART (here a raw Bumble host on serial:) connects to an
    mpbluetooth instance on the same hub."""
    pty_path = str(tmp_path / "hci-uart")
    the_hub = HubProcess(extra=("--pty", pty_path))
    try:
        wait_until(lambda: os.path.islink(pty_path), 10, "the hub's pseudo-terminal")
        peripheral = mpbluetooth.open(the_hub.spec, "pty-peer")
        recorder = Recorder()
        peripheral.irq(recorder)
        peripheral.active(True)
        peripheral.gap_advertise(20000, ADV)
        addr_type, addr = peripheral.config("mac")

        async def raw_host_connects() -> str:
            from bumble.device import Device
            from bumble.hci import Address
            from bumble.transport import open_transport

            async with await open_transport(f"serial:{pty_path}") as transport:
                device = Device.with_hci(
                    "uart", Address("F0:F1:F2:F3:F4:F5"), transport.source, transport.sink
                )
                await asyncio.wait_for(device.power_on(), 5)
                connection = await device.connect(
                    Address(addr[::-1], Address.PUBLIC_DEVICE_ADDRESS), timeout=5
                )
                peer = str(connection.peer_address)
                await connection.disconnect()
                return peer

        peer = on_loop(raw_host_connects, "raw host over the pty")
        assert peer.startswith(addr.hex(":").upper())
        recorder.wait(IRQ_CENTRAL_CONNECT)
        recorder.wait(IRQ_CENTRAL_DISCONNECT)
        peripheral.close()
    finally:
        the_hub.stop()


def test_a_process_that_rejoins_keeps_its_address(
    hub: HubProcess, local: tuple[BLE, Recorder]
) -> None:
    ble, recorder = local
    first = Peer(hub.spec, identity="sensor-board")
    first.close()
    again = Peer(hub.spec, identity="sensor-board")
    try:
        assert (
            (again.addr_type, again.addr)
            == (first.addr_type, first.addr)
            == (
                0,
                again.addr,
            )
        )
        ble.gap_scan(0, 30000, 30000)
        seen = recorder.wait(IRQ_SCAN_RESULT, lambda d: d[1] == again.addr)
        ble.gap_scan(None)
        assert seen[0] == 0
        # An address already on the link is refused: the newcomer keeps the hub's own.
        twin = Peer(hub.spec, identity="sensor-board")
        try:
            assert twin.addr != again.addr
        finally:
            twin.close()
    finally:
        again.close()
