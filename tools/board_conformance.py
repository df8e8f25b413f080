"""MicroPython's two-instance conformance suites on two ``mpbluetooth board`` processes,
each reached through its serial device: ``run-multitests.py -t /dev/pts/N -t /dev/pts/M``,
the pyboard path MicroPython's CI takes for boards on real hardware.

Where ``../shared/conformance/run`` starts each instance as an ``exec:mpbluetooth-python``
process, here each is a board in its own process, driven over its pseudo-terminal through
the raw REPL, raw-paste mode and soft resets (``tools/pyboard.py``). Per test, as that
runner does: a fresh engine (our hub in air timing, or RootCanal), two fresh boards whose
folders are empty (aioble's suite: ``/lib/aioble`` copied in, as ``mpremote cp`` would).
The upstream files are read where they are, never modified.

    python tools/board_conformance.py                          # both suites, on our hub
    python tools/board_conformance.py --engine rootcanal --suite micropython
    python tools/board_conformance.py -k gap_advertise --repeat 3 --logs board-logs

The last line is ``board conformance: N passed, M failed``; the exit status is 0 only
when M is 0 (and N is not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mpbluetooth.board.process import BoardProcess

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFORMANCE = REPO.parent / "shared" / "conformance"
#: Needs a board that deep-sleeps and reboots (as the shared runner skips it).
NEEDS_A_BOARD = {"stress_deepsleep_reconnect"}


def tests_of(conformance: Path, suite: str) -> list[Path]:
    if suite == "micropython":
        folder = conformance / "micropython" / "tests" / "multi_bluetooth"
    else:
        folder = conformance / "aioble" / "micropython" / "bluetooth" / "aioble" / "multitests"
    return sorted(folder.glob("*.py"))


@contextlib.contextmanager
def engine(kind: str) -> Iterator[str]:
    """A fresh engine for one test; yields the transport spec boards join."""
    if kind == "rootcanal":
        from mpbluetooth.sim.rootcanal import RootCanal

        rootcanal = RootCanal()
        spec = rootcanal.start()
        try:
            yield spec
        finally:
            rootcanal.stop()
    else:
        from mpbluetooth.testing import HubProcess

        with HubProcess(timing="air") as hub:
            yield hub.spec


def run_one(conformance: Path, path: Path, suite: str, kind: str, work: Path, timeout: float):
    """One test; (passed, transcript)."""
    roots = [work / "board0", work / "board1"]
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        if suite == "aioble":
            aioble = path.parent.parent / "aioble"
            shutil.copytree(aioble, root / "lib" / "aioble")
    tests = conformance / "micropython" / "tests"
    results = tempfile.mkdtemp(prefix="results-", dir=work)
    with engine(kind) as spec:
        boards = [BoardProcess(root, spec) for root in roots]
        try:
            command = [sys.executable, "run-multitests.py", "--result-dir", results]
            for board in boards:
                command += ["-t", board.device]
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
            try:
                done = subprocess.run(
                    [*command, str(path)],
                    cwd=tests,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env=env,
                )
                output = done.stdout + done.stderr
            except subprocess.TimeoutExpired as exc:
                output = _text(exc.stdout) + f"\n(no result within {timeout:g} s)"
        finally:
            logs = [board.stop() for board in boards]
    output += "".join(f"\n--- board{i} console ---\n{log}" for i, log in enumerate(logs))
    passed = re.search(r": pass\s*$", output, re.M) is not None and ": FAIL" not in output
    return passed, output


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conformance", type=Path, default=DEFAULT_CONFORMANCE)
    parser.add_argument("--suite", choices=["micropython", "aioble", "all"], default="all")
    parser.add_argument("--engine", choices=["hub", "rootcanal"], default="hub")
    parser.add_argument("-k", dest="pattern", default="", help="only tests whose name has this")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=150, help="seconds per test")
    parser.add_argument("--logs", type=Path, help="keep every transcript in this folder")
    args = parser.parse_args(argv)
    if not (args.conformance / "micropython" / "tests" / "run-multitests.py").is_file():
        parser.error(f"no conformance suites at {args.conformance} (--conformance DIR)")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="board-conformance-"))
    logs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mpbt-boards-"))
    suites = ["micropython", "aioble"] if args.suite == "all" else [args.suite]
    passed = failed = 0
    from mpbluetooth.sim.rootcanal import RootCanalError

    try:
        for suite in suites:
            for path in tests_of(args.conformance, suite):
                name = path.stem
                if args.pattern not in name or name in NEEDS_A_BOARD:
                    continue
                for i in range(args.repeat):
                    start = time.monotonic()
                    ok, output = run_one(
                        args.conformance, path, suite, args.engine, work, args.timeout
                    )
                    (logs / f"{suite}-{name}-{i}.log").write_text(output)
                    took = time.monotonic() - start
                    passed, failed = passed + ok, failed + (not ok)
                    print(f"{'pass' if ok else 'FAIL'} {suite}/{name} ({took:.1f} s)", flush=True)
    except RootCanalError as exc:
        print(f"board conformance: RootCanal cannot start here: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"transcripts in {logs}")
    print(f"board conformance: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
