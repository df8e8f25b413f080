"""RootCanal as an engine: the one-line error where it cannot start, ``mpbluetooth rootcanal``
serving one, and ``mpbluetooth run --engine rootcanal``. (The scenario tests run on it
through the ``link`` fixture.)"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbluetooth import sim
from mpbluetooth.constants import IRQ_CENTRAL_CONNECT, IRQ_PERIPHERAL_CONNECT
from mpbluetooth.sim.rootcanal import ENV_BINARY, RootCanal, RootCanalError, find_binary
from mpbluetooth.testing import Recorder

from .conftest import ENV, HubMedium, connect
from .test_run_board import BEACON, REPO, SCANNER


@pytest.fixture(scope="module")
def working_binary() -> str:
    """The RootCanal binary, once it has been seen to start here (else the test skips)."""
    try:
        with RootCanal() as rootcanal:
            assert rootcanal.binary is not None
            return rootcanal.binary
    except RootCanalError as exc:
        pytest.skip(f"RootCanal cannot start here: {exc}")


@pytest.fixture
def unstartable(working_binary: str, tmp_path: Path) -> Path:
    """A copy of the real binary that asks the loader for glibc 2.99: it fails exactly as a
    RootCanal built for a newer glibc does (1.11.1 needs 2.38/2.39) on this one."""
    data = Path(working_binary).read_bytes()
    needed = re.findall(rb"GLIBC_2\.\d+\x00", data)
    if not needed:
        pytest.skip("the binary names no glibc version to replace")
    newest = max(needed, key=lambda v: int(v[8:-1]))
    path = tmp_path / "rootcanal-for-glibc-2.99"
    path.write_bytes(data.replace(newest, b"GLIBC_2.99\x00"))
    path.chmod(0o755)
    return path


def mpbluetooth_cli(*args: str, env: dict[str, str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth", *args],
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def test_a_binary_that_cannot_start_is_one_line_naming_both_glibcs(
    unstartable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = os.confstr("CS_GNU_LIBC_VERSION")
    env = {**ENV, ENV_BINARY: str(unstartable)}
    for args in (["rootcanal"], ["run", "--engine", "rootcanal", "nothing.py"]):
        if args[0] == "run":
            Path(unstartable.parent / "nothing.py").write_text("print('never')\n")
        proc = mpbluetooth_cli(*args, env=env, cwd=unstartable.parent)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert "Traceback" not in err and "never" not in out
        lines = [line for line in err.splitlines() if "cannot start" in line]
        assert len(lines) == 1, err
        assert "needs glibc 2.99" in lines[0] and f"this system has {found}" in lines[0]
    monkeypatch.setenv(ENV_BINARY, str(unstartable))
    with pytest.raises(RootCanalError, match="needs glibc 2.99"):
        sim.Link(engine="rootcanal")


def test_a_port_taken_before_rootcanal_binds_it_starts_it_on_fresh_ports(
    working_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ports are free when chosen and bound by RootCanal a moment later; one taken in
    between (RootCanals starting side by side, as in CI) costs a second start, not an
    error. A port the caller names is tried once."""
    from mpbluetooth.sim import rootcanal as module

    real_free_ports = module.free_ports
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        handed = iter([port])

        def free_ports(count: int, *, besides: int | None = None) -> list[int]:
            first = next(handed, None)
            if first is None:
                return real_free_ports(count, besides=besides)
            return [first, *real_free_ports(count - 1, besides=besides)]

        monkeypatch.setattr(module, "free_ports", free_ports)
        with RootCanal(binary=working_binary) as rootcanal:
            assert rootcanal.hci_port not in (None, port)
            medium = HubMedium(rootcanal.spec)
            try:
                a = medium.instance("a")
                a.active(True)
                assert a.active()
            finally:
                medium.close()
        with pytest.raises(RootCanalError):
            RootCanal(port, binary=working_binary).start()


def test_its_four_ports_are_distinct() -> None:
    """Linux may hand a port just freed to the next probe: RootCanal given one port twice
    binds it for its test channel (opened first), logs the HCI server's bind error, and its
    "Listening on" line names the HCI port, so hosts joined the test channel (CI: HCI Reset
    unanswered, "invalid packet" warnings, first bytes 0x1b000000 "RegisterSendResponse")."""
    from mpbluetooth.sim.rootcanal import free_ports

    for _ in range(2000):
        ports = free_ports(4)
        assert len(set(ports)) == 4
        assert ports[0] not in free_ports(3, besides=ports[0])


def test_a_missing_package_or_binary_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, "/nonexistent/rootcanal")
    with pytest.raises(RootCanalError, match="no such file"):
        find_binary()


@pytest.fixture
def served(working_binary: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """``mpbluetooth rootcanal`` in its own process: (process, spec, RootCanal's pid)."""
    proc = mpbluetooth_cli("rootcanal", env=ENV)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(30), "mpbluetooth rootcanal printed nothing within 30 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("MPBLUETOOTH_TRANSPORT=tcp-client:127.0.0.1:"), line
        notice = proc.stderr.readline()
        pid = int(re.search(r"pid (\d+)", notice).group(1))  # type: ignore[union-attr]
        yield proc, line.split("=", 1)[1], pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_served_rootcanal_joins_hosts_and_stops_with_its_child(
    served: tuple[subprocess.Popen[str], str, int],
) -> None:
    proc, spec, pid = served
    medium = HubMedium(spec)
    try:
        a, b = medium.instance("a"), medium.instance("b")
        ra, rb = Recorder(), Recorder()
        a.irq(ra)
        b.irq(rb)
        a.active(True)
        b.active(True)
        connect(a, ra, b, rb)
        assert ra.of(IRQ_PERIPHERAL_CONNECT) and rb.of(IRQ_CENTRAL_CONNECT)
    finally:
        medium.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # The binary itself is gone, not only the command that started it.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_run_with_the_rootcanal_engine(working_binary: str, tmp_path: Path) -> None:
    (tmp_path / "beacon.py").write_text(BEACON)
    (tmp_path / "scanner.py").write_text(SCANNER)
    proc = mpbluetooth_cli(
        "run", "--engine", "rootcanal", "beacon.py", "scanner.py", "--timeout", "60",
        env=ENV, cwd=tmp_path,
    )  # fmt: skip
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "on RootCanal at tcp-client:127.0.0.1:" in err
    assert "[scanner] seen ['stay-on']" in out.splitlines()
