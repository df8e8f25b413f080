"""Starting and stopping: the singleton, restarts, transports, timeouts, process exit."""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import TransportError, _stack, sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
)
from mpbluetooth.testing import wait_until
from mpbluetooth.testing.lowlevel import call_soon, on_loop

from .conftest import connect

#: How long ``active(True)`` waits for a controller to answer its reset, in seconds.
POWER_ON_S = 5.0


def free_port() -> int:
    """A local TCP port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ENV = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}


def run_python(code: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, **env},
    )


def test_ble_is_a_singleton_that_ignores_arguments() -> None:
    assert BLE() is BLE()
    assert BLE(1, foo=2) is BLE()
    assert mpbluetooth.BLE() is BLE()


def test_active_returns_state(link: sim.Link) -> None:
    ble = link.instance("state")
    assert ble.active() is False
    assert ble.active(1) is True
    assert ble.active() is True
    assert ble.active(True) is True  # a restart, as NimBLE does
    assert ble.active(0) is False
    assert ble.active(False) is False  # stopping twice is a no-op
    with pytest.raises(TypeError):
        ble.active(True, False)  # type: ignore[call-arg]


def test_inactive_radio_raises_enodev(link: sim.Link) -> None:
    ble = link.instance("off")
    for call in (
        lambda: ble.gap_advertise(100000),
        lambda: ble.gap_scan(100),
        lambda: ble.gap_scan(None),
        lambda: ble.gap_connect(0, bytes(6)),
        lambda: ble.gap_disconnect(0),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == 19
    ble.gap_advertise(None)  # stopping advertising works even inactive


@pytest.mark.engines("sim", "hub", "rootcanal")
def test_identity_survives_active_false_and_peers_reconnect_to_it(pair: Any) -> None:
    """A board keeps its address across ``active(False)``/``active(True)`` (SPEC D6), on
    every engine: RootCanal makes a new controller, with a new address, per connection,
    so the instance keeps its controller while off (aioble's ``ble_shutdown`` depends on
    it: the central reconnects to the address it was given at the start)."""
    peripheral, rp, central, rc = pair
    identity = peripheral.config("mac")
    for cycle in range(3):
        if cycle:
            peripheral.active(False)
            peripheral.active(True)
        assert peripheral.config("mac") == identity
        c_handle, _ = connect(central, rc, peripheral, rp)
        assert rp.of(IRQ_CENTRAL_CONNECT)[-1][1:] == central.config("mac")
        central.gap_disconnect(c_handle)
        rc.wait(IRQ_PERIPHERAL_DISCONNECT, count=cycle + 1)


def test_the_kept_controller_is_closed_by_close(hub_spec: str) -> None:
    """``active(False)`` keeps a transport's controller open (and so the address);
    ``close()`` releases it: no socket is left behind."""
    with mpbluetooth.open(hub_spec, "warm-up") as first:  # the runtime's own descriptors
        first.active(True)
    before = _fds()
    ble = mpbluetooth.open(hub_spec, "kept")
    ble.active(True)
    address = ble.config("mac")
    ble.active(False)
    assert _fds() > before  # still connected to the hub, idle
    ble.active(True)
    assert ble.config("mac") == address
    ble.close()
    wait_until(lambda: _fds() == before, what="the transport closed")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fifty_active_cycles_leak_no_threads_or_fds(link: sim.Link) -> None:
    ble = link.instance("cycles")
    ble.active(True)
    ble.active(False)
    threads, fds = threading.active_count(), _fds()
    for _ in range(50):
        assert ble.active(True)
        ble.gap_advertise(20000, b"\x02\x01\x06")
        assert not ble.active(False)
    assert threading.active_count() == threads
    assert _fds() == fds


def test_active_false_gives_peers_their_disconnect_but_us_none(pair: Any) -> None:
    a, ra, b, rb = pair
    connect(b, rb, a, ra)
    a.active(False)
    rb.wait(IRQ_PERIPHERAL_DISCONNECT)  # the peer sees the link go
    assert (
        ra.of(IRQ_CENTRAL_DISCONNECT) == []
    )  # NimBLE: no DISCONNECT events on the side that stopped


def test_unknown_transport_fails_fast_naming_the_spec() -> None:
    ble = mpbluetooth.open("nonsense:1", "bad")
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        ble.active(True)
    assert time.monotonic() - started < 2
    assert isinstance(info.value, OSError)
    assert "'nonsense:1'" in str(info.value) and "unknown transport scheme" in str(info.value)
    assert "\n" not in str(info.value)
    assert ble.active() is False
    ble.close()


def test_refused_tcp_transport() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ble = mpbluetooth.open(f"tcp-client:127.0.0.1:{port}", "refused")
    with pytest.raises(TransportError) as info:
        ble.active(True)
    assert f"tcp-client:127.0.0.1:{port}" in str(info.value)
    assert "hint:" in str(info.value)
    ble.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never answers, like a dead HCI bridge."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_silent_controller_times_out_instead_of_hanging(silent_server: int) -> None:
    ble = mpbluetooth.open(f"tcp-client:127.0.0.1:{silent_server}", "silent")
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        ble.active(True)
    assert info.value.errno == 110
    assert "did not answer" in " ".join(getattr(info.value, "__notes__", []))
    assert time.monotonic() - started < POWER_ON_S + 3
    assert ble.active() is False
    ble.close()


def test_a_server_that_is_not_a_controller_is_named_by_what_it_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A power-on that stalls says what the other end sent first, so a port taken by a
    server of another kind (which answers, and stays connected) is told from a controller
    that went quiet."""
    monkeypatch.setattr(_stack, "POWER_ON_TIMEOUT", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as server:

        def answer_as_a_web_server() -> None:
            peer, _ = server.accept()
            with peer:
                peer.recv(100)
                peer.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                peer.recv(100)  # until the host gives up and closes

        thread = threading.Thread(target=answer_as_a_web_server, daemon=True)
        thread.start()
        ble = mpbluetooth.open(f"tcp-client:127.0.0.1:{server.getsockname()[1]}", "web")
        with pytest.raises(OSError) as info:
            ble.active(True)
        ble.close()
        thread.join(5)
    assert info.value.errno == 110
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "(HCI_RESET_COMMAND; it sent first: 0x" + b"HTTP/1.0".hex() in notes, notes


def test_set_transport_validates_and_resets() -> None:
    with pytest.raises(ValueError):
        mpbluetooth.set_transport("")
    mpbluetooth.set_transport(f"tcp-client:127.0.0.1:{free_port()}")
    try:
        # An instance with no transport of its own takes the configured one: nobody there.
        with mpbluetooth.open() as ble, pytest.raises(mpbluetooth.TransportError) as info:
            ble.active(True)
        assert "tcp-client:127.0.0.1:" in str(info.value)
    finally:
        mpbluetooth.set_transport(None)


def test_call_timeout_and_loop_thread_guard() -> None:
    with pytest.raises(OSError) as info:
        on_loop(lambda: asyncio.sleep(5), "a slow thing", timeout=0.05)
    assert info.value.errno == 110 and "a slow thing" in str(info.value)

    def from_the_loop() -> str:
        try:
            on_loop(lambda: None, "nested")
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "loop thread" in on_loop(from_the_loop, "guard")


def test_errors_on_the_loop_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise KeyError("lost on the loop")

    with caplog.at_level(logging.ERROR, logger="mpbluetooth"):
        call_soon(fail)
        wait_until(
            lambda: any(
                r.name.startswith("mpbluetooth") and "lost on the loop" in repr(r.exc_info)
                for r in caplog.records
            ),
            what="the loop's exception logged",
        )


def test_script_without_active_false_exits_promptly() -> None:
    started = time.monotonic()
    result = run_python(
        "import mpbluetooth; b = mpbluetooth.BLE(); b.active(True); print(b.config('mac'))"
    )
    assert result.returncode == 0, result.stderr
    addr_type, addr = ast.literal_eval(result.stdout)
    assert addr_type == 0 and len(addr) == 6
    assert result.stderr == ""
    assert time.monotonic() - started < 5


def test_exit_with_live_connections_is_prompt() -> None:
    code = """
import threading
from mpbluetooth import sim
link = sim.Link()
a, b = link.instance('a'), link.instance('b')
up = threading.Event()
b.irq(lambda e, d: e == 7 and up.set())
a.active(True); b.active(True)
a.gap_advertise(20000, b'\\x02\\x01\\x06')
b.gap_connect(*a.config('mac'))
assert up.wait(5)
print('connected', flush=True)
"""
    # Timed from outside: an atexit hook of the script's own would run before the
    # library's (atexit is last in, first out) and measure nothing.
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "connected"
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 0, err
    assert took < 2.0
    assert "Traceback" not in err


def test_environment_transport_is_used() -> None:
    result = run_python(
        "import mpbluetooth; mpbluetooth.BLE().active(True)",
        MPBLUETOOTH_TRANSPORT="nonsense:1",
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mpbluetooth.TransportError: ") and "'nonsense:1'" in last
