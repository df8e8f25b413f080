"""The pytest plugin of ``mpbluetooth.testing`` (registered as ``mpbluetooth``).

Installed with the package through the ``pytest11`` entry point, so a project that tests
its MicroPython BLE code needs no conftest of its own. It adds fixtures and markers, sets
``MPBLUETOOTH_STRICT`` for the session (below) and ``MPBLUETOOTH_BOARD`` for a test that
asks; nothing else runs unless a test asks for a fixture, and importing it loads neither
Bumble nor the simulator. ``pytest -p no:mpbluetooth`` switches it off.

Fixtures:

* ``sim_link``: a ``sim.Link`` (one simulated radio in this process), closed afterwards;
* ``sim_instances``: ``sim_instances(n)`` -> n active ``Instance(ble, events)`` on
  ``sim_link``, each with a ``Recorder`` as its IRQ handler;
* ``sim_hub``: ``mpbluetooth sim-hub`` in its own process (``HubProcess``), with
  ``sim_hub.instance(name)`` and the fault methods, stopped afterwards;
* ``board``: ``board("sensor.py")`` -> a ``Board``, the script running as its own
  simulated board on ``sim_hub`` (as ``mpbluetooth run`` runs it), stopped afterwards.

The radio timing of what these fixtures make is ``air`` (connection events, advertising
intervals, supervision timeouts) unless ``@pytest.mark.mpbluetooth_timing("instant")``,
``--mpbluetooth-timing`` or the ``mpbluetooth_timing`` ini option says otherwise; instant
is faster, air is what a board sees. The hub process lives for one test unless the
``mpbluetooth_hub_scope`` ini option shares it across a module or the session (each test
still gets its own instances and boards, closed after it).

A failing test's report shows the last lines each of its boards printed.

Board profile (``mpbluetooth.boards``): the ``mpbluetooth_board`` ini option (also
``pytest -o mpbluetooth_board=esp32``) or ``@pytest.mark.mpbluetooth_board("esp32")`` sets
``MPBLUETOOTH_BOARD`` for the test, so its boards and its own instances behave as that
port (default ``unix``).

Memoryviews from event tuples are released when the handler returns (strict mode, SPEC D5):
a test is where a program that keeps one should fail. ``mpbluetooth_strict = false`` in the
ini file (or ``MPBLUETOOTH_STRICT=0``) keeps them readable, as on a board.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..sim import Link
    from .board import Board
    from .hub import HubProcess
    from .recorder import Instance

_TIMINGS = ("air", "instant")
_SCOPES = ("function", "module", "package", "session")
#: The boards a test started, for its failure report.
_STARTED_BOARDS = pytest.StashKey["list[Board]"]()
_BOARDS = ("unix", "esp32", "stm32", "rp2")  # mpbluetooth.boards.BOARDS, without importing it
_STRICT_ENV = "MPBLUETOOTH_STRICT"
_BOARD_ENV = "MPBLUETOOTH_BOARD"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mpbluetooth_board",
        "board profile of the instances and boards of every test: unix, esp32, stm32 or rp2 "
        "(default: $MPBLUETOOTH_BOARD, else unix)",
        default=None,
    )
    parser.addini(
        "mpbluetooth_strict",
        "release event memoryviews when the IRQ handler returns (default true; "
        "$MPBLUETOOTH_STRICT wins when set)",
        type="bool",
        default=True,
    )
    parser.addini(
        "mpbluetooth_timing",
        "radio timing of the links and hubs mpbluetooth's fixtures make: air or instant "
        "(default: $MPBLUETOOTH_SIM_TIMING, else air)",
        default=None,
    )
    parser.addini(
        "mpbluetooth_hub_scope",
        "how long the sim_hub process lives: function (default), module, package or "
        "session; each test's instances and boards are closed after it either way",
        default="function",
    )
    parser.getgroup("mpbluetooth").addoption(
        "--mpbluetooth-timing",
        choices=_TIMINGS,
        default=None,
        help="radio timing of the links and hubs mpbluetooth's fixtures make (wins over "
        "the mpbluetooth_timing ini option; a test's marker wins over both)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mpbluetooth_board(name): board profile (unix, esp32, stm32, rp2) of this test's "
        "instances and boards",
    )
    if _STRICT_ENV not in os.environ:
        # The session, and every board it starts, runs strict (SPEC D5) unless told not to.
        os.environ[_STRICT_ENV] = "1" if config.getini("mpbluetooth_strict") else "0"
        config.add_cleanup(_forget_strict)
    config.addinivalue_line(
        "markers",
        "mpbluetooth_timing(timing): radio timing ('air' or 'instant') of the sim_link, "
        "sim_instances, sim_hub and board fixtures in this test",
    )


def _forget_strict() -> None:
    os.environ.pop(_STRICT_ENV, None)


def timing_for(request: pytest.FixtureRequest) -> str:
    """The test's timing: its marker, else ``--mpbluetooth-timing``, else the ini option,
    else the environment, else air."""
    marker = request.node.get_closest_marker("mpbluetooth_timing")
    timing = (
        marker.args[0]
        if marker is not None and marker.args
        else request.config.getoption("mpbluetooth_timing", None)
        or request.config.getini("mpbluetooth_timing")
        or os.environ.get("MPBLUETOOTH_SIM_TIMING")
        or "air"
    )
    if timing not in _TIMINGS:
        raise pytest.UsageError(f"mpbluetooth_timing is air or instant, not {timing!r}")
    return str(timing)


@pytest.fixture(autouse=True)
def _mpbluetooth_board(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's board profile, from its marker or the ini option (else the environment)."""
    marker = request.node.get_closest_marker("mpbluetooth_board")
    name = (
        marker.args[0]
        if marker is not None and marker.args
        else request.config.getini("mpbluetooth_board")
    )
    if not name:
        return
    if name not in _BOARDS:
        raise pytest.UsageError(f"mpbluetooth_board is one of {', '.join(_BOARDS)}, not {name!r}")
    monkeypatch.setenv(_BOARD_ENV, str(name))


@pytest.fixture
def sim_link(request: pytest.FixtureRequest) -> Iterator[Link]:
    """One simulated radio in this process: ``sim_link.instance(name)`` makes a ``BLE``
    on it, and its fault methods (``set_loss``, ``move``, ``kill``...) act on the air.
    Every instance is closed after the test."""
    from .. import sim

    with sim.Link(timing_for(request)) as link:
        yield link


@pytest.fixture
def sim_instances(sim_link: Link) -> Callable[..., list[Instance]]:
    """``sim_instances(n, names=...)``: n active instances on ``sim_link``, each with a
    ``Recorder`` as handler, ready to advertise, scan and connect to one another."""
    from .recorder import Instance, Recorder

    def make(n: int = 2, names: list[str] | None = None) -> list[Instance]:
        made = []
        for index in range(n):
            ble = sim_link.instance(names[index] if names else None)
            events = Recorder()
            ble.irq(events)
            ble.active(True)
            made.append(Instance(ble, events))
        return made

    return make


def _hub_scope(fixture_name: str, config: pytest.Config) -> str:
    scope = str(config.getini("mpbluetooth_hub_scope") or "function")
    if scope not in _SCOPES:
        raise pytest.UsageError(
            f"mpbluetooth_hub_scope is one of {', '.join(_SCOPES)}, not {scope!r}"
        )
    return scope


@pytest.fixture(scope=_hub_scope)  # type: ignore[arg-type]
def _mpbluetooth_hub(request: pytest.FixtureRequest) -> Iterator[HubProcess]:
    """The hub process, for as long as ``mpbluetooth_hub_scope`` says."""
    from .hub import HubProcess

    hub = HubProcess(timing_for(request))
    try:
        yield hub
    finally:
        hub.stop(wait=False)


@pytest.fixture
def sim_hub(request: pytest.FixtureRequest, _mpbluetooth_hub: HubProcess) -> Iterator[HubProcess]:
    """``mpbluetooth sim-hub`` in its own process: boards join it, and so do the test's
    own instances (``sim_hub.instance(name)`` -> (ble, recorder)); faults by ``set_loss``,
    ``move``, ``out_of_range``, ``disconnect``, ``kill`` of any member. A shared hub of
    another timing than the test's, or one a test crashed, is not used: the test gets a
    hub of its own."""
    from .hub import HubProcess

    hub = _mpbluetooth_hub
    own = hub.timing != timing_for(request) or hub.process.poll() is not None
    if own:
        hub = HubProcess(timing_for(request))
    try:
        yield hub
    finally:
        if own:
            hub.stop(wait=False)
        else:
            hub.close_instances()


@pytest.fixture
def board(request: pytest.FixtureRequest, sim_hub: HubProcess) -> Iterator[Callable[..., Board]]:
    """``board(script, *args, env=..., input=..., name=...)``: run a MicroPython script as
    its own simulated board on ``sim_hub``; returns the running ``Board``. After the test
    the test's own instances close first (their links end at once, with the boards still
    there to answer), then every board is told to stop; they end on their own (and with
    the test run in any case)."""
    from .board import Board

    boards: list[Board] = []
    request.node.stash[_STARTED_BOARDS] = boards

    def start(script: str | os.PathLike[str], *args: str, **options: Any) -> Board:
        started = Board(sim_hub.spec, script, *args, **options)
        boards.append(started)
        sim_hub.register(started.name, started)
        return started

    yield start
    errors: list[BaseException] = []
    try:
        sim_hub.close_instances()
    except Exception as exc:  # the boards must still stop
        errors.append(exc)
    for started in boards:  # not waited for: a board that stayed on takes a while to exit
        started.terminate()
    if errors:
        raise errors[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report shows the tail of what each of its boards printed."""
    report = yield
    if report.failed:
        for started in item.stash.get(_STARTED_BOARDS, []):
            report.sections.append((f"board {started.name} printed", started.tail()))
    return report
