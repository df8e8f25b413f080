"""The pytest plugin of ``mpbluetooth.testing`` (registered as ``mpbluetooth``).

Installed with the package through the ``pytest11`` entry point, so a project that tests
its MicroPython BLE code needs no conftest of its own. It only adds fixtures and a marker:
nothing runs unless a test asks for a fixture, and importing it loads neither Bumble nor
the simulator. ``pytest -p no:mpbluetooth`` switches it off.

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
_BOARDS = pytest.StashKey["list[Board]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
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
        "mpbluetooth_timing(timing): radio timing ('air' or 'instant') of the sim_link, "
        "sim_instances, sim_hub and board fixtures in this test",
    )


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
    there to answer), then every board stops."""
    from .board import Board

    boards: list[Board] = []
    request.node.stash[_BOARDS] = boards

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
    for started in boards:  # all at once: each takes a moment to close its radio
        if started.process.poll() is None:
            started.process.terminate()
    for started in boards:
        try:
            started.stop()
        except Exception as exc:  # stop the others, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report shows the tail of what each of its boards printed."""
    report = yield
    if report.failed:
        for started in item.stash.get(_BOARDS, []):
            report.sections.append((f"board {started.name} printed", started.tail()))
    return report
