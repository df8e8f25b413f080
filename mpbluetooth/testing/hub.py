"""A simulation hub in its own process, for tests that span processes (desktop only).

``mpbluetooth run`` puts each MicroPython script in its own process on one simulated link
served by a hub; a test that wants the same (``board``) needs such a hub, instances of its
own on it, and a way to inject faults while it runs. This module starts ``mpbluetooth
sim-hub`` as a child process and sends it control requests through ``mpbluetooth sim-ctl``'s
client, with the fault methods named as ``sim.Link``'s so a test reads the same on both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from ..cli._lifeline import STOP_GRACE_S, wait_or_kill
from .recorder import DEFAULT_TIMEOUT, Instance, Recorder, wait_until

if TYPE_CHECKING:
    from ..ble import BLE

__all__ = ["HubError", "HubProcess"]

#: How long a hub may take to start (a cold import of Bumble on a loaded machine).
START_TIMEOUT: Final = 30.0


class HubError(RuntimeError):
    """The hub refused a request (unknown member, wrong timing...) or could not start."""


def _address_of(who: BLE | Any) -> str:
    """The address of a ``Board`` (its ``address``) or an active ``BLE`` instance, as the
    hub names members."""
    address = getattr(who, "address", None)
    if address is None:
        address = who.config("mac")[1]
    return ":".join(f"{b:02X}" for b in bytes(address))


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child on the hub: without the transport and the
    stable address meant for this process, so the child gets only what it is given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPBLUETOOTH_TRANSPORT", "MPBLUETOOTH_SIM_ADDRESS")
    }
    env.update(extra)
    return env


class HubProcess:
    """``mpbluetooth sim-hub`` running in a child process until ``stop()``.

    ``timing``: ``"air"`` or ``"instant"`` (None: the hub's default). ``extra``: more
    ``sim-hub`` options (``--pty PATH``, ``--loss 0.1``...). ``spec`` is the transport spec
    that joins it (``mpbluetooth.open(transport=hub.spec)``, or ``MPBLUETOOTH_TRANSPORT``
    for another process): a unix socket in a temporary directory unless given
    (``unix:PATH`` or ``tcp-client:HOST:PORT``, to bring a hub back where it was).
    ``instance()`` makes an active
    instance of this process on it, with a ``Recorder``; they are closed by ``stop()``.
    """

    def __init__(
        self, timing: str | None = None, *, spec: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        from ..cli._lifeline import own_process_group, shared

        self._dir = tempfile.mkdtemp(prefix="mpbt-hub-")  # short: a unix socket path is
        self._instances: list[BLE] = []  # limited to about 100 bytes
        #: The test's names for members: its instances' and its boards' (``register``).
        self._names: dict[str, str] = {}
        if spec is None:
            if hasattr(socket, "AF_UNIX"):
                spec = f"unix:{os.path.join(self._dir, 'hub.sock')}"
            else:
                spec = f"tcp-client:127.0.0.1:{_free_port()}"
        kind, _, where = spec.partition(":")
        if kind not in ("unix", "tcp-client"):
            raise ValueError(f"a hub listens at unix:PATH or tcp-client:HOST:PORT, not {spec!r}")
        self.spec = spec
        listen = ["--unix", where] if kind == "unix" else ["--tcp", where]
        args = [sys.executable, "-m", "mpbluetooth", "sim-hub", *listen, *extra]
        if timing is not None:
            args += ["--timing", timing]
        self.timing = timing
        # Its log goes to a file: a pipe nobody reads would block a talkative hub.
        self._log_path = os.path.join(self._dir, "hub.log")
        lifeline = shared()
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                args,
                env=child_environment(**lifeline.environment(self._dir)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=lifeline.pass_fds,
                process_group=own_process_group(),
            )
        self._log = ""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise HubError(f"sim-hub exited with {self.process.returncode}: {self.log()}")
            try:
                self.control("list", timeout=1.0)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise HubError(f"sim-hub did not answer within {START_TIMEOUT:g} s") from None
                time.sleep(0.02)

    # --- control ------------------------------------------------------------------------
    def control(self, op: str, *, timeout: float = DEFAULT_TIMEOUT, **arguments: Any) -> Any:
        """Send one control request (``Hub.control`` lists them) and return its result.
        Raises ``HubError`` with the hub's reason when refused, ``OSError`` when the hub
        cannot be reached or does not answer within ``timeout`` s."""
        from ..cli.sim_ctl import send

        reply = send(self.spec, {"op": op, **arguments}, timeout)
        if not reply.get("ok"):
            raise HubError(f"{op}: {reply.get('error')}")
        return reply.get("result")

    def members(self) -> list[dict[str, Any]]:
        """Every member: name, address, position (m), dead, connections (see ``sim-ctl list``)."""
        result: list[dict[str, Any]] = self.control("list")["members"]
        return result

    def wait_members(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until ``count`` controllers are on the hub (boards that have opened theirs)."""
        wait_until(lambda: len(self.members()) >= count, timeout, f"{count} members on the hub")

    # --- faults: the names of sim.Link's ------------------------------------------------
    def register(self, name: str, who: Any) -> None:
        """Let faults name a member ``name``: a ``Board`` or an active ``BLE`` on the hub
        (``instance`` and the ``board`` fixture register theirs)."""
        self._names[name] = _address_of(who)

    def _member_name(self, who: BLE | str | Any) -> str:
        """A hub member by what the test holds: the name of one of its instances or boards
        (``"central"``), the hub's name (``tcp-3``), an address string, a ``Board`` or an
        active ``BLE`` instance on the hub."""
        if isinstance(who, str):
            return self._names.get(who, who)
        return _address_of(who)

    def _pair(self, a: Any, b: Any) -> dict[str, Any]:
        if (a is None) != (b is None):
            raise ValueError("give both a and b, or neither")
        return {} if a is None else {"a": self._member_name(a), "b": self._member_name(b)}

    def set_loss(self, rate: float, a: Any = None, b: Any = None) -> None:
        """Lose ``rate`` of the PDUs between ``a`` and ``b`` (or everyone); air timing.
        Members are ``BLE`` instances, ``Board`` objects, names or addresses."""
        self.control("loss", rate=rate, **self._pair(a, b))

    def set_latency(self, seconds: float, a: Any = None, b: Any = None) -> None:
        """Add ``seconds`` before a queued PDU may leave; air timing."""
        self.control("latency", seconds=seconds, **self._pair(a, b))

    def move(self, who: Any, x: float, y: float = 0.0, z: float = 0.0) -> None:
        """Put a member at (x, y, z) metres; air timing."""
        self.control("move", name=self._member_name(who), x=x, y=y, z=z)

    def out_of_range(self, who: Any) -> None:
        """Move a member out of everyone's range; its links end at the supervision timeout."""
        self.control("out_of_range", name=self._member_name(who))

    def disconnect(self, a: Any, b: Any, reason: int = 0x08) -> None:
        """Force the link between two members down with an HCI ``reason``."""
        self.control("disconnect", a=self._member_name(a), b=self._member_name(b), reason=reason)

    def kill(self, who: Any) -> None:
        """A member's controller dies: its process sees its transport lost, its peers time out."""
        self.control("kill", name=self._member_name(who))

    # --- the test's own instances -----------------------------------------------------------
    def instance(self, name: str | None = None) -> Instance:
        """An active ``BLE`` of this process joined to the hub, with a ``Recorder`` as its
        handler; ``stop()`` closes it."""
        import mpbluetooth

        ble = mpbluetooth.open(transport=self.spec, name=name)
        self._instances.append(ble)
        recorder = Recorder()
        ble.irq(recorder)
        ble.active(True)
        if name is not None:
            self.register(name, ble)
        return Instance(ble, recorder)

    def close_instances(self) -> None:
        """Close the instances ``instance`` made (before their peers' boards stop: a link
        closed from this side ends at once, one whose peer vanished first waits out a
        timeout)."""
        errors: list[BaseException] = []
        for ble in self._instances:
            try:
                ble.close()
            except Exception as exc:  # close the others, then report
                errors.append(exc)
        self._instances.clear()
        if errors:
            raise errors[0]

    # --- life -------------------------------------------------------------------------------
    def log(self) -> str:
        """What the hub wrote to stderr so far (all of it once stopped)."""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return self._log

    def crash(self) -> None:
        """The hub process dies (SIGKILL): every member sees its transport lost. (``kill``
        is the fault that kills one member's controller, as on ``sim.Link``.)"""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP_GRACE_S)

    def stop(self, *, wait: bool = True) -> str:
        """Close this process's instances, stop the hub (killed if it lingers) and return
        what it logged.

        ``wait=False`` (the pytest plugin's teardown) returns once the hub has been told
        to stop, with nothing logged: its interpreter takes a fifth of a second or more
        to exit on a loaded machine, which a test need not wait for. A thread finishes
        the job, and the hub ends with this process in any case (its lifeline)."""
        errors: list[BaseException] = []
        try:
            self.close_instances()
        except Exception as exc:  # the hub must still stop
            errors.append(exc)
        if self.process.poll() is None:
            self.process.terminate()
        if wait:
            self._finish()
        else:
            reaper = threading.Thread(target=self._finish, name="mpbluetooth-hub", daemon=True)
            reaper.start()
        if errors:
            raise errors[0]
        return self._log

    def _finish(self) -> None:
        wait_or_kill(self.process)
        self._log = self.log()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
