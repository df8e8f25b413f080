"""``mpbluetooth run A.py [B.py ...]``: MicroPython BLE scripts, each its own board.

Every script runs in its own process with ``mpbluetooth-python`` semantics, all on one
simulated link (a hub started here, unless ``--hub`` names a running one, or a real
controller with ``--transport``). Their output is interleaved line by line behind a
per-script prefix. The exit status is non-zero if any script fails; everything is stopped
on Ctrl-C, on ``--timeout``, or (``--stop-on-exit``) when the first script ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sim.hub import Hub

logger = logging.getLogger(__name__)

TIMEOUT_STATUS = 124


@dataclass
class _Script:
    path: Path
    label: str
    process: asyncio.subprocess.Process | None = None
    status: int | None = None


def _labels(paths: list[Path]) -> list[str]:
    labels: list[str] = []
    for path in paths:
        label = path.stem
        n = 2
        while label in labels:
            label = f"{path.stem}#{n}"
            n += 1
        labels.append(label)
    return labels


def _trace_for(snoop: str, label: str) -> str:
    head, dot, tail = snoop.rpartition(".")
    return f"{head}-{label}.{tail}" if dot and "/" not in tail else f"{snoop}-{label}"


def _say(text: str) -> None:
    print(f"mpbluetooth: {text}", file=sys.stderr, flush=True)


async def _pump(script: _Script, width: int) -> None:
    assert script.process is not None and script.process.stdout is not None
    prefix = f"[{script.label:<{width}}] "
    async for raw in script.process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()
    script.status = await script.process.wait()


async def run_scripts(
    paths: list[Path],
    *,
    transport: str | None = None,
    hub: str | None = None,
    timeout: float | None = None,
    snoop: str | None = None,
    stop_on_exit: bool = False,
    str_buffer: bool = True,
    link: dict[str, Any] | None = None,
) -> int:
    """Run the scripts to completion; the process exit status to return. ``link``: the
    local hub's timing and faults (``sim_cli.link_settings``)."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        _say(f"no such script: {', '.join(missing)}")
        return 2
    scripts = [_Script(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    local_hub: Hub | None = None
    with tempfile.TemporaryDirectory(prefix="mpbluetooth-run-") as workdir:
        if transport is not None:
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
                scripts, spec, transport is None, stop, timeout, snoop, stop_on_exit, str_buffer
            )
        finally:
            if local_hub is not None:
                await local_hub.close()


async def _supervise(
    scripts: list[_Script],
    spec: str,
    simulated: bool,
    stop: asyncio.Event,
    timeout: float | None,
    snoop: str | None,
    stop_on_exit: bool,
    str_buffer: bool,
) -> int:
    width = max(len(s.label) for s in scripts)
    pumps = []
    for script in scripts:
        env = {**os.environ, "MPBLUETOOTH_TRANSPORT": spec, "PYTHONUNBUFFERED": "1"}
        if snoop:
            env["MPBLUETOOTH_SNOOP"] = _trace_for(snoop, script.label)
        if simulated:
            # The same script gets the same address on every run, as a board keeps its own.
            env.setdefault("MPBLUETOOTH_SIM_ADDRESS", f"mpbluetooth-run:{script.label}")
        args = [sys.executable, "-m", "mpbluetooth.cli.python", "-u"]
        if not str_buffer:
            args.append("--no-str-buffer")
        script.process = await asyncio.create_subprocess_exec(
            *args,
            str(script.path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        pumps.append(asyncio.create_task(_pump(script, width)))
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[object]] = set(pumps)
    timed_out = interrupted = False
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    while pending:
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            timed_out = True
            break
        done, _ = await asyncio.wait(
            pending | {stopper}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        if stopper in done:
            interrupted = True
            break
        pending -= done
        finished = [s for s in scripts if s.status is not None]
        if any(s.status != 0 for s in finished) or (stop_on_exit and finished):
            break
    stopper.cancel()
    for script in scripts:
        if script.process is not None and script.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                script.process.terminate()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), 3)
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
        _say("interrupted")
        return 130
    failed = [s for s in scripts if s.status not in (0, None) and s.status != -signal.SIGTERM]
    return 1 if failed else 0
