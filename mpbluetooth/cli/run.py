"""``mpbluetooth run A.py [B.py ...]``: MicroPython BLE scripts, each its own board.

Each script runs in its own process (``mpbluetooth-python``), all joined to one simulated
link; ``_supervise`` interleaves their output and decides when the run is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import boards
from .._trace import instance_spec
from .._views import ENV_STRICT
from ._app import Failure, command, one_line
from ._board import STAY_ON_ENV, STAY_ON_MARKER
from ._lifeline import Lifeline, own_process_group
from ._options import (
    POSITIVE,
    RootCanalAt,
    link_options,
    link_settings,
    stop_on_signals,
    transport_options,
)

if TYPE_CHECKING:
    from ..sim.hub import Hub
    from ..sim.rootcanal import RootCanal

logger = logging.getLogger(__name__)

TIMEOUT_STATUS = 124
#: How long a stopped script may take to exit (closing its radio, flushing a trace) before
#: it is killed; a loaded machine needs more than a second or two.
_GRACE_S = 10


_SETTINGS = ("stdin", "input", "address", "board")


@dataclass
class _Script:
    path: Path
    label: str = ""
    module: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stdin: Path | None = None
    input: str | None = None
    address: str | None = None
    board: str | None = None
    process: asyncio.subprocess.Process | None = None
    status: int | None = None
    staying: bool = False


class SpecError(ValueError):
    """A per-script setting the user must fix."""


def fold_module_options(argv: list[str]) -> list[str]:
    """``-m MODULE`` -> the one word ``module=MODULE``, so click keeps it among the scripts."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "-m":
            out.append("module=" + next(words, ""))
        elif word.startswith("-m") and len(word) > 2:
            out.append("module=" + word[2:].lstrip("="))
        else:
            out.append(word)
    return out


def parse_scripts(words: list[str | Path]) -> list[_Script]:
    """Scripts and the settings that precede each (see the module docstring)."""
    scripts: list[_Script] = []
    pending = _Script(Path())
    for item in words:
        word = str(item)
        key, eq, value = word.partition("=")
        if key == "module" and eq:
            if not value:
                raise SpecError("-m needs a module name (-m MODULE or module=MODULE)")
            pending.module = value
            pending.path = Path(value.replace(".", "/") + ".py")
        elif eq and key in _SETTINGS:
            if key == "stdin":
                pending.stdin = Path(value)
            elif key == "input":
                pending.input = value
            elif key == "board":
                pending.board = _board_name(value)
            else:
                pending.address = _address_setting(value)
            continue
        elif eq and key.isidentifier() and not word.endswith(".py"):
            pending.env[key] = value
            continue
        else:
            pending.path = Path(word)
        scripts.append(pending)
        pending = _Script(Path())
    if (
        pending.env
        or pending.stdin
        or pending.input is not None
        or pending.address
        or pending.board
    ):
        raise SpecError("settings after the last script: put them before the script they are for")
    if not scripts:
        raise SpecError("no script given")
    for script, label in zip(scripts, _labels([s.path for s in scripts]), strict=True):
        script.label = label
    return scripts


def _address_setting(value: str) -> str:
    """``address=``: six bytes as ``XX:XX:XX:XX:XX:XX`` (a typo must not become another
    address silently, as a name given to ``$MPBLUETOOTH_SIM_ADDRESS`` would)."""
    try:
        address = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        address = b""
    if len(address) != 6:
        raise SpecError(f"address={value}: expected six bytes, as XX:XX:XX:XX:XX:XX")
    return address.hex(":")


def check_scripts(scripts: list[_Script]) -> None:
    """Every script and stdin file exists (``SpecError`` naming what is missing)."""
    missing = [
        f"no such script: {s.path}" for s in scripts if s.module is None and not s.path.is_file()
    ]
    missing += [
        f"no such stdin file: {s.stdin}"
        for s in scripts
        if s.stdin is not None and not s.stdin.is_file()
    ]
    if missing:
        raise SpecError("; ".join(missing))


def _board_name(value: str) -> str:
    try:
        return boards.get(value).name
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _labels(paths: list[Path]) -> list[str]:
    labels: list[str] = []
    for path in paths:
        label = path.stem if path.stem != "__main__" else path.parent.name
        n = 2
        while label in labels:
            label = f"{path.stem}#{n}"
            n += 1
        labels.append(label)
    return labels


def _say(text: str) -> None:
    print(f"mpbluetooth: {text}", file=sys.stderr, flush=True)


async def _pump(script: _Script, width: int, changed: asyncio.Event) -> None:
    assert script.process is not None and script.process.stdout is not None
    prefix = f"[{script.label:<{width}}] "
    async for raw in script.process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line == STAY_ON_MARKER:
            script.staying = True
            _say(f"{script.label} returned with its radio on: it stays on as a board does")
            changed.set()
            continue
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()
    script.status = await script.process.wait()


async def run_scripts(
    paths: list[Path] | list[str] | list[str | Path],
    *,
    transport: str | None = None,
    hub: str | None = None,
    timeout: float | None = None,
    snoop: str | None = None,
    stop_on_exit: bool = False,
    str_buffer: bool = True,
    link: dict[str, Any] | None = None,
    engine: str = "sim",
    rootcanal: str | None = None,
    board: str | None = None,
    strict: bool = False,
) -> int:
    """Run the scripts to completion; the process exit status to return. ``link``: the
    local hub's timing and faults (``_options.link_settings``). ``engine="rootcanal"``: a
    RootCanal started for the run instead of the local hub; ``rootcanal="HOST:PORT"``
    (which implies that engine) joins a running one instead. ``board``: every script's
    profile unless its own ``board=`` says otherwise; ``strict``: release event
    memoryviews when the handler returns (SPEC D5)."""
    try:
        scripts = parse_scripts(list(paths))
        check_scripts(scripts)
    except SpecError as exc:
        _say(str(exc))
        return 2
    for script in scripts:
        script.board = script.board or board
        if strict:
            script.env.setdefault(ENV_STRICT, "1")
    from ..sim.hub import Hub
    from ..sim.rootcanal import RootCanal, RootCanalError

    stop = asyncio.Event()
    stop_on_signals(stop)
    local_hub: Hub | None = None
    started: RootCanal | None = None
    if rootcanal is not None:
        engine = "rootcanal"
    with tempfile.TemporaryDirectory(prefix="mpbluetooth-run-") as workdir:
        lifeline = Lifeline()
        if engine == "rootcanal" and (transport is not None or hub is not None):
            _say("--engine rootcanal runs on a RootCanal: drop --transport/--hub")
            return 2
        if rootcanal is not None:
            # Joined, not ours: it keeps running, and its controllers' state, after the run.
            spec = transport = f"tcp-client:{rootcanal}"
            _say(f"running {len(scripts)} script(s) on RootCanal at {spec} (joined)")
        elif engine == "rootcanal":
            started = RootCanal()
            try:
                spec = await asyncio.to_thread(started.start)
            except RootCanalError as exc:
                _say(str(exc))
                return 1
            transport = spec  # its controllers are not ours: no simulated addresses
            _say(f"running {len(scripts)} script(s) on RootCanal at {spec}")
        elif transport is not None:
            spec = transport
            _say(f"running {len(scripts)} script(s) on {spec}")
        elif hub is not None:
            spec = hub
            _say(f"running {len(scripts)} script(s) on the hub at {spec}")
        else:
            try:
                local_hub = Hub(**(link or {}))
            except ValueError as exc:
                _say(str(exc))
                return 2
            socket_path = os.path.join(workdir, "hub.sock")
            await local_hub.serve_unix(socket_path)
            spec = f"unix:{socket_path}"
            _say(
                f"running {len(scripts)} script(s) on a simulated link ({local_hub.link.timing} "
                f"timing; mpbluetooth sim-ctl --hub {spec} ...)"
            )
        try:
            return await _supervise(
                scripts,
                _Launch(spec, transport is None, snoop, str_buffer, lifeline, workdir),
                stop,
                timeout,
                stop_on_exit,
            )
        finally:
            lifeline.close()
            if local_hub is not None:
                await local_hub.close()
            if started is not None:
                await asyncio.to_thread(started.stop)


@dataclass
class _Launch:
    """How every script of a run is started."""

    spec: str
    simulated: bool
    snoop: str | None
    str_buffer: bool
    #: The scripts end when ``run`` does, even if it is killed; they then remove ``workdir``.
    lifeline: Lifeline
    workdir: str


async def _supervise(
    scripts: list[_Script],
    launch: _Launch,
    stop: asyncio.Event,
    timeout: float | None,
    stop_on_exit: bool,
) -> int:
    width = max(len(s.label) for s in scripts)
    pumps = []
    changed = asyncio.Event()
    for script in scripts:
        env = {
            **os.environ, **script.env, "MPBLUETOOTH_TRANSPORT": launch.spec,
            "PYTHONUNBUFFERED": "1", STAY_ON_ENV: "1",
            **launch.lifeline.environment(launch.workdir),
        }  # fmt: skip
        if launch.snoop:
            env["MPBLUETOOTH_SNOOP"] = instance_spec(launch.snoop, script.label)
        if script.board is not None:
            env[boards.ENV_BOARD] = script.board
        if script.address is not None:
            if not launch.simulated:
                _say(f"{script.label}: address= only applies to the simulated link; ignored")
            env["MPBLUETOOTH_SIM_ADDRESS"] = script.address
        elif launch.simulated:
            # The same script gets the same address on every run, as a board keeps its own.
            env.setdefault("MPBLUETOOTH_SIM_ADDRESS", f"mpbluetooth-run:{script.label}")
        args = [sys.executable, "-m", "mpbluetooth.cli._launch", "-u"]
        if not launch.str_buffer:
            args.append("--no-str-buffer")
        args += ["-m", script.module] if script.module is not None else [str(script.path)]
        stdin_file = open(script.stdin, "rb") if script.stdin is not None else None
        try:
            script.process = await asyncio.create_subprocess_exec(
                *args,
                stdin=(
                    stdin_file
                    if stdin_file is not None
                    else asyncio.subprocess.PIPE
                    if script.input is not None
                    else asyncio.subprocess.DEVNULL
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                pass_fds=launch.lifeline.pass_fds,
                process_group=own_process_group(),
            )
        finally:
            if stdin_file is not None:
                stdin_file.close()
        if script.input is not None and script.process.stdin is not None:
            script.process.stdin.write(script.input.encode())
            with contextlib.suppress(ConnectionError):
                await script.process.stdin.drain()
            script.process.stdin.close()
        pumps.append(asyncio.create_task(_pump(script, width, changed)))
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[object]] = set(pumps)
    timed_out = interrupted = False
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    while pending:
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            timed_out = True
            break
        changed.clear()
        waker: asyncio.Task[object] = asyncio.create_task(changed.wait())
        done, _ = await asyncio.wait(
            pending | {stopper, waker}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        waker.cancel()
        if stopper in done:
            interrupted = True
            break
        pending -= done
        finished = [s for s in scripts if s.status is not None]
        if any(s.status != 0 for s in finished) or (stop_on_exit and finished):
            break
        # Boards that stayed on serve the others; once no program is left running, the
        # run is over. A script run alone stays on until --timeout or Ctrl-C.
        staying = [s for s in scripts if s.status is None and s.staying]
        if len(scripts) > 1 and staying and all(s.status is not None or s.staying for s in scripts):
            _say("every program has returned: stopping the boards that stayed on")
            break
    stopper.cancel()
    for script in scripts:
        if script.process is not None and script.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                script.process.terminate()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), _GRACE_S)
    for script in scripts:
        if script.process is not None and script.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                script.process.kill()
            await script.process.wait()
    for script in scripts:
        if script.status not in (None, 0, -signal.SIGTERM):
            _say(f"{script.label} exited with status {script.status}")
    if timed_out:
        _say(f"stopped after --timeout {timeout:g} s")
        return TIMEOUT_STATUS
    if interrupted:
        return 130  # said by the command (``_app.main``)
    failed = [s for s in scripts if s.status not in (0, None) and s.status != -signal.SIGTERM]
    return 1 if failed else 0


def _check_command_line(
    words: list[str],
    transport: str | None,
    hub: str | None,
    rootcanal: tuple[str, int] | None,
    engine: str,
) -> str:
    """Refuse, as a usage error, what ``run`` cannot do, before anything starts: missing
    scripts, bad settings, options that contradict each other; and fail in one line when
    ``--hub`` or ``--rootcanal`` names nothing that answers. Returns the engine."""
    try:
        check_scripts(parse_scripts(list(words)))
    except SpecError as exc:
        raise click.UsageError(str(exc)) from None
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("timing", "loss", "latency", "pdus_per_event", "seed")
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    named = {"--transport": transport, "--hub": hub, "--rootcanal": rootcanal}
    where = [option for option, value in named.items() if value is not None]
    if len(where) > 1:
        raise click.UsageError(
            f"{', '.join(where[:-1])} and {where[-1]} "
            f"{'both' if len(where) == 2 else 'all'} name where to run: give one"
        )
    engine = _engine(ctx, engine, where)
    # The link options set the simulated link run starts itself, and nothing else.
    instead = where[0] if where else "--engine rootcanal" if engine == "rootcanal" else None
    if given and instead is not None:
        why = {
            "--hub": " (a running hub takes faults from `mpbluetooth sim-ctl`)",
            "--engine rootcanal": " (RootCanal's own link layer has no such settings)",
        }.get(instead, "")
        raise click.UsageError(
            f"{', '.join(given)} set the link run starts itself: not with {instead}{why}"
        )
    if hub is not None:
        from .sim_ctl import send

        try:
            send(hub, {"op": "list"}, 5.0)
        except (OSError, ValueError) as exc:
            raise Failure(f"no hub answers at {hub} ({one_line(exc)})") from None
    if rootcanal is not None:
        from ..sim.rootcanal import probe

        try:
            probe(*rootcanal)
        except (OSError, ValueError) as exc:
            raise Failure(
                f"no RootCanal answers at {rootcanal[0]}:{rootcanal[1]} ({one_line(exc)})"
            ) from None
    return engine


def _engine(ctx: click.Context, engine: str, where: list[str]) -> str:
    """The engine to run on. ``--rootcanal`` implies RootCanal, as ``--hub`` implies ours;
    a contradicting ``--engine``, or ``--engine rootcanal`` with ``--hub``/``--transport``,
    is a usage error (those name controllers that are not RootCanal's)."""
    named = ctx.get_parameter_source("engine") is click.core.ParameterSource.COMMANDLINE
    if where == ["--rootcanal"]:
        if named and engine != "rootcanal":
            raise click.UsageError(f"--rootcanal joins a RootCanal: not with --engine {engine}")
        return "rootcanal"
    if engine == "rootcanal" and where:
        raise click.UsageError(
            f"--engine rootcanal runs on a RootCanal (its own, or --rootcanal HOST:PORT): "
            f"not with {where[0]}"
        )
    return engine


class _RunCommand(click.Command):
    """Folds ``-m MODULE`` into one word before click parses, so it stays among the
    scripts (a script's ``-m`` is not an option of ``run``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fold_module_options(args))


@command(
    "run",
    cls=_RunCommand,
    epilog="""\b
Examples:
  mpbluetooth run examples/sensor_peripheral.py examples/sensor_central.py
  mpbluetooth run beacon.py NAME=left address=f2:00:00:00:00:01 input=$'1\\n' menu.py -m app.central
  mpbluetooth run --timing instant --loss 10% --timeout 30 a.py b.py
  mpbluetooth run --snoop run.btsnoop a.py b.py      # run-a.btsnoop, run-b.btsnoop
  mpbluetooth run --engine rootcanal a.py b.py
  mpbluetooth run --engine rootcanal --rootcanal 192.0.2.10:6402 a.py   # join a running one
  mpbluetooth run --board esp32 server.py board=rp2 client.py""",
)
@click.argument("scripts", nargs=-1, required=True, metavar="[SETTING=value ...] SCRIPT.py...")
@click.option(
    "--timeout", type=POSITIVE, metavar="SECONDS", help="Stop everything after this many seconds."
)
@click.option(
    "--hub", metavar="SPEC", help="Join a running hub (tcp-client:HOST:PORT or unix:PATH)."
)
@click.option("--stop-on-exit", is_flag=True, help="Stop the others when the first script ends.")
@click.option("--no-str-buffer", is_flag=True, help="Run without the str-as-buffer transform.")
@transport_options("Run the scripts on this HCI transport instead", from_env=False)
@click.option(
    "--engine",
    type=click.Choice(["sim", "rootcanal"]),
    default="sim",
    show_default=True,
    help="The controllers of the local link: ours (sim) or a RootCanal started for the run "
    "(or joined: --rootcanal).",
)
@click.option(
    "--rootcanal",
    type=RootCanalAt(),
    help="Join the RootCanal whose HCI port is HOST:PORT (as `mpbluetooth rootcanal` prints "
    "it, maybe on another machine) instead of starting one; implies --engine rootcanal.",
)
@click.option(
    "--board",
    type=click.Choice(list(boards.BOARDS)),
    envvar=boards.ENV_BOARD,
    show_envvar=True,
    help="The board profile of every script (a script's board=NAME wins). [default: unix]",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Release event memoryviews when the IRQ handler returns, so a program that keeps "
    "one fails (else they stay readable, with a warning, as on a board).",
)
@link_options
def _run(
    scripts: tuple[str, ...],
    timeout: float | None,
    hub: str | None,
    stop_on_exit: bool,
    no_str_buffer: bool,
    transport: str | None,
    snoop: str | None,
    engine: str,
    rootcanal: tuple[str, int] | None,
    board: str | None,
    strict: bool,
    **link: Any,
) -> int:
    """Run MicroPython BLE scripts, each as its own board.

    Every script runs in its own process as `mpbluetooth-python` runs it, all on one
    simulated link (a hub started here, unless --hub names a running one, or a real
    controller with --transport; $MPBLUETOOTH_TRANSPORT is not read: each script gets the
    run's). --engine rootcanal starts a RootCanal for the run instead; --rootcanal
    HOST:PORT joins a running one (other runs, on this machine or others, join it too),
    which is left running at the end. Output is interleaved line by line behind a
    per-script prefix. A script that fails (a non-zero exit status, an uncaught
    exception) stops all the others, and the run's exit status is then 1 (124 after
    --timeout, 130 after Ctrl-C); everything is also stopped on Ctrl-C, on --timeout, or
    (--stop-on-exit) when the first script ends.

    A script whose radio is still active when it returns stays on, as a board at its REPL
    keeps advertising and answering IRQs, until every other script's program has returned
    too (or, run alone, until --timeout or Ctrl-C).

    Per-script settings precede their script, as `env` takes them: VAR=value sets an
    environment variable, stdin=FILE or input=TEXT give the script's stdin,
    address=XX:XX:XX:XX:XX:XX its simulated address, board=NAME its board profile
    (`mpbluetooth info --board NAME` shows one), and -m MODULE (or module=MODULE)
    runs a module instead of a file. --snoop PATH writes one HCI trace per script
    (PATH with the script's name added before the extension).
    """
    engine = _check_command_line(list(scripts), transport, hub, rootcanal, engine)
    return asyncio.run(
        run_scripts(
            list(scripts),
            transport=transport,
            hub=hub,
            timeout=timeout,
            snoop=snoop,
            stop_on_exit=stop_on_exit,
            str_buffer=not no_str_buffer,
            link=link_settings(**link),
            engine=engine,
            rootcanal=None if rootcanal is None else f"{rootcanal[0]}:{rootcanal[1]}",
            board=board,
            strict=strict,
        )
    )
