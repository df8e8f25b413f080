"""Warm start (``cli/_warm.py``): ``mpbluetooth-python`` hands the program to a fork of a
process that has already imported Bumble, and the program cannot tell: its arguments,
environment, directory, streams, exit status and signals are what a cold start gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth.cli import _warm

from .conftest import default_sigint

pytestmark = pytest.mark.skipif(not _warm.supported(), reason="warm start needs fork")

LAUNCHER = [sys.executable, "-m", "mpbluetooth.cli.python"]
#: What a program prints to say how it started: its pid and whether Bumble was imported
#: before its first line ran.
PROBE = "import os, sys; print(os.getpid(), 'bumble.hci' in sys.modules, flush=True)\n"


@pytest.fixture
def warm_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder of servers of this test only, stopped (and waited for) at its end."""
    folder = tmp_path / "warm"
    yield folder
    if folder.exists():
        _warm.stop_all(str(folder))
        deadline = time.monotonic() + 15
        while list(folder.glob("*.pid")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list(folder.glob("*.pid")), "a warm server outlived its test"


def environment(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_WARM")}
    env[_warm.ENV_WARM_DIR] = str(folder)
    env.update(extra)
    return env


def run(
    folder: Path, *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAUNCHER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(folder, **extra),
        timeout=60,
    )


def warm_probe(folder: Path) -> None:
    """Start the folder's server (the first launch waits for it) and check the next one
    is served by it."""
    first = run(folder, "-c", PROBE)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[1] == "True"


def test_a_program_starts_with_bumble_already_imported(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    cold = run(warm_dir, "-c", PROBE, MPBLUETOOTH_WARM="0")
    assert cold.stdout.split()[1] == "False"
    # The console entry's launcher (what `mpbluetooth-python` and `run` start) is served
    # by the same server.
    console = subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli._launch", "-c", PROBE],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment(warm_dir),
        timeout=60,
    )
    assert console.stdout.split()[1] == "True", console.stderr
    assert len(list(warm_dir.glob("*.pid"))) == 1


def test_the_program_sees_its_own_arguments_environment_and_directory(
    warm_dir: Path, tmp_path: Path
) -> None:
    warm_probe(warm_dir)
    program = (
        "import os, sys\n"
        "print(sys.argv)\n"
        "print(os.getcwd())\n"
        "print(os.environ.get('PROBE_VALUE'), os.environ.get('MPBLUETOOTH_LIFELINE'))\n"
        "print(sys.stdin.read().upper())\n"
        "sys.exit(3)\n"
    )
    result = subprocess.run(
        [*LAUNCHER, "-c", program, "one", "two"],
        input="from stdin",
        capture_output=True,
        text=True,
        env=environment(warm_dir, PROBE_VALUE="42"),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        "['-c', 'one', 'two']",
        str(tmp_path),
        "42 None",
        "FROM STDIN",
    ]


def test_an_uncaught_exception_is_reported_as_by_a_cold_start(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    results = [
        run(warm_dir, "-c", "raise ValueError('boom')", MPBLUETOOTH_WARM=value)
        for value in ("1", "0")
    ]
    assert [r.returncode for r in results] == [1, 1]
    assert results[0].stderr == results[1].stderr
    assert "ValueError: boom" in results[0].stderr


def test_streams_are_buffered_as_in_a_cold_start(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    program = (
        "import sys\n"
        "for i in range(2):\n"
        "    print('out', i)\n"
        "    print('err', i, file=sys.stderr)\n"
    )
    for unbuffered in ("", "1"):
        outputs = [
            subprocess.run(
                [*LAUNCHER, "-c", program],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=environment(warm_dir, PYTHONUNBUFFERED=unbuffered, MPBLUETOOTH_WARM=value),
                timeout=60,
            ).stdout
            for value in ("1", "0")
        ]
        assert outputs[0] == outputs[1]


def test_ctrl_c_reaches_the_program(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    # Announced from inside the ``try``: a SIGINT sent as soon as the line is read cannot
    # arrive before the program handles it.
    program = (
        "import os, sys, time\n"
        "try:\n"
        "    print(os.getpid(), 'bumble.hci' in sys.modules, flush=True)\n"
        "    time.sleep(30)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    raise SystemExit(7)\n"
    )
    process = subprocess.Popen(
        [*LAUNCHER, "-c", program],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=environment(warm_dir),
        preexec_fn=default_sigint,
    )
    assert process.stdout is not None
    pid, warm = process.stdout.readline().split()
    assert warm == "True" and int(pid) != process.pid
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 7
    assert process.stdout.read() == "interrupted\n"


def test_a_program_killed_by_a_signal_kills_its_launcher_alike(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    result = run(warm_dir, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == -signal.SIGKILL


def test_the_program_ends_when_its_launcher_is_killed(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    process = subprocess.Popen(
        [*LAUNCHER, "-c", PROBE + "import time; time.sleep(60)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=environment(warm_dir),
    )
    assert process.stdout is not None
    pid = int(process.stdout.readline().split()[0])
    process.kill()
    process.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def test_programs_started_together_share_one_server(warm_dir: Path) -> None:
    processes = [
        subprocess.Popen(
            [*LAUNCHER, "-c", PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            env=environment(warm_dir),
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4
    assert all(o.split()[1] == "True" for o in outputs)
    assert len(list(warm_dir.glob("*.pid"))) == 1


def test_two_forks_draw_different_random_numbers(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    program = "import random; print(random.getrandbits(32), random.random())"
    draws = {run(warm_dir, "-c", program).stdout for _ in range(2)}
    assert len(draws) == 2


def test_an_idle_server_ends_by_itself(warm_dir: Path) -> None:
    assert run(warm_dir, "-c", "pass", MPBLUETOOTH_WARM_IDLE="0.2").returncode == 0
    deadline = time.monotonic() + 15
    while list(warm_dir.glob("*.pid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(warm_dir.glob("*.sock"))


def test_a_terminal_or_the_switch_starts_cold(warm_dir: Path) -> None:
    result = run(warm_dir, "-c", PROBE, MPBLUETOOTH_WARM="0")
    assert result.stdout.split()[1] == "False"
    assert not warm_dir.exists() or not list(warm_dir.glob("*.sock"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_launcher_imports_neither_bumble_nor_asyncio() -> None:
    code = (
        "import sys, mpbluetooth.cli._launch; "
        "print(sorted(m for m in ('asyncio', 'bumble', 'mpbluetooth.ble') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_signal_the_caller_ignores_stays_ignored(warm_dir: Path) -> None:
    warm_probe(warm_dir)
    program = (
        "import signal\n"
        "print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN,"
        " signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL)\n"
    )
    result = subprocess.run(
        [*LAUNCHER, "-c", program],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment(warm_dir),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
        timeout=60,
    )
    assert result.stdout.split() == ["True", "True"], result.stderr
