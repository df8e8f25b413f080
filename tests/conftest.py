"""Our suite's fixtures, on top of the ``mpbluetooth.testing`` plugin: the engine matrix
behind ``link`` (sim, hub, RootCanal), ``pair`` and ``gatt`` built on it, a session hub,
and ``connect``. The recorder, the waits and the hub process are the plugin's."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import BLE, sim
from mpbluetooth.cli import _warm
from mpbluetooth.constants import IRQ_CENTRAL_CONNECT, IRQ_PERIPHERAL_CONNECT
from mpbluetooth.testing import HubProcess, Recorder

# The unit suite checks what the host sees, not when: it runs the simulated links it makes
# (sim.Link(), BLE() on the default link, the hubs and `mpbluetooth run` it starts) in
# instant timing, for speed. Tests of timing itself (test_sim_timing.py, test_sim_faults.py)
# ask for air timing explicitly. Setting MPBLUETOOTH_SIM_TIMING=air before pytest runs the
# whole suite in air timing instead.
os.environ.setdefault("MPBLUETOOTH_SIM_TIMING", "instant")

# Tests read the lines of the programs they start as the lines come. Like `python`,
# `mpbluetooth-python` buffers a piped stdout unless told (-u, PYTHONUNBUFFERED), so the suite
# tells every program it starts, whatever the caller's shell has (`env -i` has nothing).
# Tests of buffering itself set their programs' environment explicitly.
os.environ.setdefault("PYTHONUNBUFFERED", "1")

# The programs the suite starts (`mpbluetooth-python`, `mpbluetooth run`) start warm, as a
# user's do (cli/_warm.py), from servers in a folder of this session that end with it.
_WARM_DIR = tempfile.mkdtemp(prefix="mpbluetooth-warm-")
os.environ.setdefault(_warm.ENV_WARM_DIR, _WARM_DIR)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's warm servers and wait (bounded) until they are gone."""
    _warm.stop_all(_WARM_DIR)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and any(n.endswith(".pid") for n in os.listdir(_WARM_DIR)):
        time.sleep(0.05)
    shutil.rmtree(_WARM_DIR, ignore_errors=True)


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if anything in mpbluetooth logged an ERROR during it: an unhandled
    exception on the loop thread, a failed listener or task (all logged at ERROR). A lost
    transport is reported at ERROR on purpose and does not count."""
    caplog.set_level(logging.WARNING, logger="mpbluetooth")
    yield
    errors = [
        r.getMessage()
        for phase in ("setup", "call")
        for r in caplog.get_records(phase)
        if r.name.startswith("mpbluetooth")
        and r.levelno >= logging.ERROR
        and not r.getMessage().endswith(" lost")
    ]
    assert errors == []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engines(*names): run the test once per engine behind its `link` fixture: sim (our "
        "simulated controller, in process), hub (our sim-hub process, over TCP), rootcanal "
        "(Android's RootCanal process, skipped with the reason where its binary cannot start)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test (or module, through ``pytestmark``) marked ``engines(...)`` that uses ``link``
    (or ``pair``, ``gatt``... built on it) runs once per engine; unmarked tests run on sim."""
    if "link" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is not None:
        metafunc.parametrize("link", marker.args, indirect=True)


#: Why RootCanal cannot start here, once found (every later test skips at once).
_rootcanal_missing: list[str] = []


@pytest.fixture
def link(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Where the test's instances live: ``link.instance(name)`` makes one, ``close()``
    deactivates them all. The same scenario on each engine is how a difference between
    our host, our simulator and a controller written by others shows up."""
    engine = getattr(request, "param", "sim")
    if engine == "sim":
        with sim.Link() as the_link:
            yield the_link
    elif engine == "hub":
        medium = HubMedium(request.getfixturevalue("hub_spec"))
        yield medium
        medium.close()
    elif engine == "rootcanal":
        from mpbluetooth.sim.rootcanal import RootCanalError

        if _rootcanal_missing:
            pytest.skip(_rootcanal_missing[0])
        try:
            # A fresh RootCanal per test: its controllers keep state.
            rootcanal_link = sim.Link(engine="rootcanal")
        except RootCanalError as exc:
            _rootcanal_missing.append(f"RootCanal cannot start here: {exc}")
            pytest.skip(_rootcanal_missing[0])
        with rootcanal_link:
            yield rootcanal_link
    else:
        raise ValueError(f"unknown engine {engine!r}")


@pytest.fixture
def pair(link: sim.Link) -> Iterator[tuple[BLE, Recorder, BLE, Recorder]]:
    """Two active instances on one link, each with a recording handler."""
    a, b = link.instance("a"), link.instance("b")
    ra, rb = Recorder(), Recorder()
    a.irq(ra)
    b.irq(rb)
    a.active(True)
    b.active(True)
    yield a, ra, b, rb


@pytest.fixture
def gatt(link: Any) -> Any:
    """A GATT server on ``a`` and a connected client ``b`` (see tests/gatt_setup.py)."""
    from .gatt_setup import make_gatt

    return make_gatt(link)


@pytest.fixture
def web_server() -> Iterator[str]:
    """``127.0.0.1:PORT`` of something that is not a controller nor a hub: it answers its
    first request as a web server would (for the errors that say so)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer() -> None:
            try:
                peer, _ = server.accept()
            except OSError:
                return  # the test ended without calling
            with peer:
                peer.recv(100)
                peer.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test interrupts with SIGINT: a shell runs a
    background job (CI's second lane) with SIGINT ignored, the child would inherit that,
    and Python then installs no KeyboardInterrupt handler of its own."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def connect(central: BLE, rc: Recorder, peripheral: BLE, rp: Recorder) -> tuple[int, int]:
    """Connect ``central`` to ``peripheral``; return (central's handle, peripheral's handle)."""
    before_c, before_p = len(rc.of(IRQ_PERIPHERAL_CONNECT)), len(rp.of(IRQ_CENTRAL_CONNECT))
    peripheral.gap_advertise(20000, b"\x02\x01\x06")
    addr_type, addr = peripheral.config("mac")
    central.gap_connect(addr_type, addr)
    c_handle = rc.wait(IRQ_PERIPHERAL_CONNECT, count=before_c + 1)[0]
    p_handle = rp.wait(IRQ_CENTRAL_CONNECT, count=before_p + 1)[0]
    return c_handle, p_handle


class HubMedium:
    """Instances joined to a hub process: the same interface as ``sim.Link``."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._instances: list[BLE] = []

    def instance(self, name: str | None = None) -> BLE:
        ble = mpbluetooth.open(self.spec, name or f"hub{len(self._instances) + 1}")
        self._instances.append(ble)
        return ble

    def close(self) -> None:
        for ble in self._instances:
            ble.close()
        self._instances.clear()


ENV = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}


@pytest.fixture(scope="session")
def hub_spec() -> Iterator[str]:
    """One hub process for the session, over TCP (the boards' hubs use unix sockets)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = HubProcess(spec=f"tcp-client:127.0.0.1:{port}")
    yield hub.spec
    hub.stop()
