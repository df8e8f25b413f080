"""Fixtures: simulated instances on one link, and a handler that records events."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mpbluetooth import sim
from mpbluetooth.ble import BLE

WAIT = 5.0

# The unit suite checks what the host sees, not when: it runs the simulated links it makes
# (sim.Link(), BLE() on the default link, the hubs and `mpbluetooth run` it starts) in
# instant timing, for speed. Tests of timing itself (test_sim_timing.py, test_sim_faults.py)
# ask for air timing explicitly. Setting MPBLUETOOTH_SIM_TIMING=air before pytest runs the
# whole suite in air timing instead.
os.environ.setdefault("MPBLUETOOTH_SIM_TIMING", "instant")


class Recorder:
    """An IRQ handler that keeps a copy of every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[int, tuple[Any, ...]]] = []
        self._cond = threading.Condition()

    def __call__(self, event: int, data: tuple[Any, ...]) -> None:
        copy = tuple(bytes(x) if isinstance(x, memoryview) else x for x in data)
        with self._cond:
            self.events.append((event, copy))
            self._cond.notify_all()

    def of(self, event: int) -> list[tuple[Any, ...]]:
        with self._cond:
            return [data for code, data in self.events if code == event]

    def wait(
        self,
        event: int,
        where: Callable[[tuple[Any, ...]], bool] = lambda data: True,
        timeout: float = WAIT,
        count: int = 1,
    ) -> tuple[Any, ...]:
        """Wait until ``count`` events of this code matching ``where`` arrived; return the last."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [d for code, d in self.events if code == event and where(d)]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no event {event} within {timeout} s; got {self.events}")
                self._cond.wait(remaining)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll a condition that no event announces (counters), with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.005)


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


def connect(central: BLE, rc: Recorder, peripheral: BLE, rp: Recorder) -> tuple[int, int]:
    """Connect ``central`` to ``peripheral``; return (central's handle, peripheral's handle)."""
    before_c, before_p = len(rc.of(7)), len(rp.of(1))
    peripheral.gap_advertise(20000, b"\x02\x01\x06")
    addr_type, addr = peripheral.config("mac")
    central.gap_connect(addr_type, addr)
    c_handle = rc.wait(7, count=before_c + 1)[0]
    p_handle = rp.wait(1, count=before_p + 1)[0]
    return c_handle, p_handle


class HubMedium:
    """Instances joined to a hub process over TCP: the same interface as ``sim.Link``."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._instances: list[BLE] = []

    def instance(self, name: str | None = None) -> BLE:
        ble = BLE._new_instance(name or f"hub{len(self._instances) + 1}", transport=self.spec)
        self._instances.append(ble)
        return ble

    def close(self) -> None:
        for ble in self._instances:
            ble._close()
        self._instances.clear()


ENV = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_connectable(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class HubProcess:
    """``mpbluetooth sim-hub`` in its own process, on a free TCP port."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mpbluetooth",
                "sim-hub",
                "--tcp",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_connectable(self.port)
        except OSError:
            self.stop()
            raise
        self.spec = f"tcp-client:127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)

    def stop(self) -> str:
        """Stop the hub; returns what it logged."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err or ""


@pytest.fixture(scope="session")
def hub_spec() -> Iterator[str]:
    """One hub process for the session; each instance joins it over TCP."""
    hub = HubProcess()
    yield hub.spec
    hub.stop()
