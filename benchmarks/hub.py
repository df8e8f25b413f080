"""Workload 10: notifications per second between two processes joined through the hub.

``mpbluetooth sim-hub`` runs in its own process; a server process notifies (20 B, after the
client exchanged the MTU to 247) for a fixed window and a client process counts. The same
pair is written twice, with the facade (``MPBLUETOOTH_TRANSPORT=tcp-client:...``, ``BLE()``)
and with raw Bumble (``open_transport`` + ``Device``). The client's rate is its count over
the span from the first to the last notification. The in-process reference is workload 1's
20-byte figure for the same API, so the ratio row reads "hub / one process".

The peers are this module run as ``python -m benchmarks.hub peer API ROLE ...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from mpbluetooth.constants import (
    FLAG_NOTIFY,
    FLAG_READ,
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTC_NOTIFY,
    IRQ_MTU_EXCHANGED,
    IRQ_PERIPHERAL_CONNECT,
)

from ._common import (
    CHAR_UUID,
    ENOMEM,
    MTU,
    SERVICE_UUID,
    Result,
    Settings,
    handler,
    interleaved,
    median,
)
from .startup import ROOT

PAYLOAD = 20
IDLE_END = 1.0  # the client stops after this long without a notification


# --- orchestration (the benchmark process) ----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    return {**env, "MPBLUETOOTH_SIM_TIMING": "instant"}


class HubProcess:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mpbluetooth", "sim-hub", "--tcp", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        self.spec = f"tcp-client:127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def _peer(api: str, role: str, spec: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.hub", "peer", api, role, spec, *extra],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def measure(spec: str, api: str, seconds: float) -> float:
    """One server process and one client process through the hub; notifications/s."""
    server = _peer(api, "server", spec, str(seconds))
    client = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(
                f"{api} server did not start: {server.stderr.read() if server.stderr else ''}"
            )
        client = _peer(api, "client", spec, line[1], line[2])
        out, err = client.communicate(timeout=seconds + 60)
        if client.returncode:
            raise RuntimeError(f"{api} client failed: {err}")
        server.communicate(timeout=30)
        return float(json.loads(out.strip().splitlines()[-1])["rate"])
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


def run(
    settings: Settings, log: Callable[[str], None], in_process: dict[str, float]
) -> list[Result]:
    hub = HubProcess()
    try:
        f_runs, r_runs = interleaved(
            settings.reps,
            lambda: measure(hub.spec, "facade", settings.seconds),
            lambda: measure(hub.spec, "raw", settings.seconds),
        )
    finally:
        hub.stop()
    rate = Result(
        f"hub: notifications/s between two processes, {PAYLOAD} B",
        median(f_runs),
        median(r_runs),
        "notif/s",
        10,
        samples={"facade": f_runs, "raw": r_runs},
    )
    results = [rate]
    if in_process:
        assert rate.facade is not None and rate.raw is not None
        results.append(
            Result(
                f"hub / one process, notifications {PAYLOAD} B",
                rate.facade / in_process["facade"],
                rate.raw / in_process["raw"],
                "x",
                10,
                samples={
                    "facade": [run / in_process["facade"] for run in f_runs],
                    "raw": [run / in_process["raw"] for run in r_runs],
                },
                note="cross-process rate over workload 1's in-process rate, per API",
            )
        )
    for row in results:
        log(f"  {row.name}: facade {row.facade:,.2f}  raw {row.raw:,.2f}")
    return results


# --- the peers (child processes) ----------------------------------------------------------------
def facade_peer(role: str, args: list[str]) -> None:
    import mpbluetooth
    from mpbluetooth import UUID

    ble = mpbluetooth.BLE()  # MPBLUETOOTH_TRANSPORT points at the hub
    events = handler()
    ble.irq(events)
    ble.active(True)
    if role == "server":
        seconds = float(args[0])
        ((handle,),) = ble.gatts_register_services(
            ((UUID(SERVICE_UUID), ((UUID(CHAR_UUID), FLAG_READ | FLAG_NOTIFY),)),)
        )
        ble.config(mtu=MTU)
        ble.gap_advertise(20000, b"\x02\x01\x06")
        addr_type, addr = ble.config("mac")
        print("ready", addr_type, addr.hex(), flush=True)
        conn = events.wait(IRQ_CENTRAL_CONNECT, timeout=30)[0]
        events.wait_count(IRQ_MTU_EXCHANGED, 1, timeout=30)
        time.sleep(0.3)
        data, sent = bytes(PAYLOAD), 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            try:
                ble.gatts_notify(conn, handle, data)
                sent += 1
            except OSError as exc:
                if exc.errno != ENOMEM:
                    raise
        print("sent", sent, flush=True)
        time.sleep(IDLE_END + 0.5)
        ble.active(False)
        return
    ble.gap_connect(int(args[0]), bytes.fromhex(args[1]))
    conn = events.wait(IRQ_PERIPHERAL_CONNECT, timeout=30)[0]
    ble.config(mtu=MTU)
    ble.gattc_exchange_mtu(conn)
    events.wait_count(IRQ_MTU_EXCHANGED, 1, timeout=30)
    _count_until_idle(lambda: events.count(IRQ_GATTC_NOTIFY), lambda: events.last)
    ble.active(False)


def _count_until_idle(count: Callable[[], int], last: Callable[[], float]) -> None:
    deadline = time.monotonic() + 60
    while count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no notification")
        time.sleep(0.001)
    first, first_count = time.perf_counter(), count()
    while time.perf_counter() - last() < IDLE_END:
        time.sleep(0.05)
    received = count() - first_count
    print(json.dumps({"received": received, "rate": received / (last() - first)}), flush=True)


async def raw_peer(role: str, args: list[str]) -> None:
    from bumble.core import UUID as BumbleUUID
    from bumble.core import PhysicalTransport
    from bumble.device import Device, DeviceConfiguration, Peer
    from bumble.gatt import Characteristic, Service
    from bumble.hci import Address, OwnAddressType
    from bumble.host import Host
    from bumble.transport import open_transport

    from ._common import ACL_BACKLOG, backlog, wait_for_flow

    transport = await open_transport(args[0])
    device = Device(
        config=DeviceConfiguration(name=role, address=Address.generate_static_address()),
        host=Host(transport.source, transport.sink),
    )
    await device.power_on()
    loop = asyncio.get_running_loop()
    if role == "server":
        seconds = float(args[1])
        attribute = Characteristic(
            CHAR_UUID,
            Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
            Characteristic.Permissions.READABLE,
            bytes(PAYLOAD),
        )
        device.add_service(Service(SERVICE_UUID, [attribute]))
        device.gatt_server.max_mtu = MTU
        connected: asyncio.Future[Any] = loop.create_future()
        exchanged: asyncio.Future[None] = loop.create_future()

        def on_connection(connection: Any) -> None:
            # Listen at once: the MTU request may come in the same read as the connection.
            connection.once("connection_att_mtu_update", lambda: exchanged.set_result(None))
            connected.set_result(connection)

        device.once("connection", on_connection)
        await device.start_advertising(
            own_address_type=OwnAddressType.PUBLIC,
            advertising_interval_min=20,
            advertising_interval_max=20,
        )
        print("ready", 0, bytes(device.public_address)[::-1].hex(), flush=True)
        connection = await asyncio.wait_for(connected, 30)
        await asyncio.wait_for(exchanged, 30)
        await asyncio.sleep(0.3)
        data, sent = bytes(PAYLOAD), 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            if backlog(device) >= ACL_BACKLOG:
                await wait_for_flow(device)
                continue
            await device.gatt_server.notify_subscriber(connection, attribute, data)
            sent += 1
        print("sent", sent, flush=True)
        await asyncio.sleep(IDLE_END + 0.5)
        await transport.close()
        return
    address = Address(bytes.fromhex(args[2])[::-1], Address.PUBLIC_DEVICE_ADDRESS)
    connection = await device.connect(
        address,
        transport=PhysicalTransport.LE,
        own_address_type=OwnAddressType.PUBLIC,
        timeout=30,
    )
    await connection.gatt_client.request_mtu(MTU)
    peer = Peer(connection)
    service_uuid = BumbleUUID(SERVICE_UUID)
    await peer.discover_services([service_uuid])
    service = peer.get_services_by_uuid(service_uuid)[0]
    (proxy,) = await service.discover_characteristics([BumbleUUID(CHAR_UUID)])
    counted = [0, 0.0]

    def on_value(value: bytes) -> None:
        counted[0] += 1
        counted[1] = time.perf_counter()

    await proxy.subscribe(on_value)
    await loop.run_in_executor(
        None, _count_until_idle, lambda: int(counted[0]), lambda: float(counted[1])
    )
    await transport.close()


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] != "peer":
        raise SystemExit("usage: python -m benchmarks.hub peer facade|raw server|client SPEC ...")
    api, role, spec, rest = argv[1], argv[2], argv[3], argv[4:]
    if api == "facade":
        os.environ["MPBLUETOOTH_TRANSPORT"] = spec
        facade_peer(role, rest)
    else:
        asyncio.run(raw_peer(role, [spec, *rest]))


if __name__ == "__main__":
    main(sys.argv[1:])
