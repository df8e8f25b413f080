"""The simulation hub: one simulated link shared by several processes.

Every stream that connects (TCP or unix socket) gets its own virtual controller on the
hub's link, created when the stream opens and removed when it closes; the process on the
other end is an ordinary HCI host (mpbluetooth with ``MPBLUETOOTH_TRANSPORT=tcp-client:...``,
or any Bumble host). A pseudo-terminal can also be attached, so a program that opens an HCI
UART (MicroPython's unix port with NimBLE, a firmware emulator) joins the same link.

When a process goes away (exit, crash, ``kill -9``), its controller leaves the air: in air
timing its peers lose their links at the supervision timeout (reason 0x08, as a radio sees
a peer that went silent); in instant timing they are told at once (LL_TERMINATE_IND with
0x08). The hub keeps serving the rest. Bumble's own ``bumble.apps.controllers`` does
neither (exactly two fixed clients, and a dead client's peers are never told).

A stream whose first bytes are ``MPBCTL`` is a control session instead of a controller
(``mpbluetooth sim-ctl``): JSON requests and answers, one per line, to list the members and
set faults at run time (see ``Hub.control``). No HCI packet starts with ``M``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bumble import hci, ll
from bumble.transport.common import PacketParser

from .controller import SimController
from .link import DEFAULT_PDUS_PER_EVENT, FAR_AWAY, SimLink

logger = logging.getLogger(__name__)

DEFAULT_TCP = ("127.0.0.1", 10723)
_CONNECTION_TIMEOUT = 0x08
#: Connections the kernel queues before the hub accepts them. asyncio's default (100) is
#: less than a room of boards that all join in the same second (they start warm, in tens of
#: milliseconds each): an overflowing queue drops the handshake's last ACK, and a board
#: then waits seconds for its first answer.
_BACKLOG = 1024
#: First bytes of a control session (``sim-ctl``), then a newline.
CONTROL_HELLO = b"MPBCTL"


class _StreamSink:
    """Controller -> host: H4 packets written to the client's stream."""

    def __init__(self, write: Any) -> None:
        self._write = write

    def on_packet(self, packet: bytes) -> None:
        self._write(packet)


@dataclass
class _Member:
    name: str
    controller: SimController
    address: hci.Address
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Closes the stream to the member's process (None for a pty), used by ``kill``.
    hang_up: Any = None


class Hub:
    """A simulated link served to other processes. Run it on one asyncio loop.

    ``timing`` (``"air"``/``"instant"``, default ``$MPBLUETOOTH_SIM_TIMING`` else air),
    ``pdus_per_event``, ``loss`` (0..1) and ``latency`` (s) are the link's settings (see
    ``sim.link.SimLink``); faults can be changed later with ``control``.
    """

    def __init__(
        self,
        acl_length: int | None = None,
        *,
        timing: str | None = None,
        pdus_per_event: int = DEFAULT_PDUS_PER_EVENT,
        loss: float = 0.0,
        latency: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.link = SimLink(timing, pdus_per_event=pdus_per_event, seed=seed)
        if loss or latency:
            if not self.link.air:
                raise ValueError("loss and latency need air timing")
            self.link.set_loss(loss)
            self.link.set_latency(latency)
        self.acl_length = acl_length
        self.members: dict[str, _Member] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._ptys: list[tuple[int, str]] = []
        self._pty_slaves: list[int] = []
        self._numbers = itertools.count(1)

    # --- membership -----------------------------------------------------------------
    def _join(self, kind: str, write: Any) -> _Member:
        number = next(self._numbers)
        name = f"{kind}-{number}"
        address = hci.Address(
            bytes([number & 0xFF, (number >> 8) & 0xFF, 0, 0, 0, 0xF2]),
            hci.Address.PUBLIC_DEVICE_ADDRESS,
        )
        controller = SimController(name, link=self.link, public_address=address)
        if self.acl_length is not None:
            controller.le_acl_data_packet_length = self.acl_length
        controller.host = _StreamSink(write)
        member = _Member(name, controller, address)
        self.members[name] = member
        logger.info(
            "%s joined (%d on the link), for now as %s",
            name,
            len(self.members),
            address.to_string(False),
        )
        return member

    @staticmethod
    def _note_address(member: _Member) -> None:
        """Log the address a member's host claimed (``MPBLUETOOTH_SIM_ADDRESS``, a board's
        stable one) once it has: the one its peers and ``sim-ctl`` know it by."""
        current = member.controller.public_address
        if current != member.address:
            member.address = current
            logger.info("%s is %s", member.name, current.to_string(False))

    def _leave(self, member: _Member) -> None:
        """The process behind ``member`` is gone: its peers lose their links at the
        supervision timeout (air timing) or at once (instant timing)."""
        if self.members.pop(member.name, None) is None:
            return
        controller = member.controller
        controller.host = None
        if self.link.air:
            controller.go_silent()
            self.link.remove_controller(controller)
            member.closed.set()
            logger.info("%s left (%d on the link)", member.name, len(self.members))
            return
        for connection in list(controller.le_connections.values()):
            try:
                connection.send_ll_control_pdu(ll.TerminateInd(error_code=_CONNECTION_TIMEOUT))
            except Exception:  # the peer may be leaving too
                logger.debug("%s: could not tell %s", member.name, connection.peer_address)
        controller.le_connections.clear()
        controller.go_silent()
        if controller in self.link.controllers:
            self.link.remove_controller(controller)
        member.closed.set()
        logger.info("%s left (%d on the link)", member.name, len(self.members))

    # --- streams (TCP, unix sockets) ------------------------------------------------------
    async def serve_tcp(self, host: str, port: int) -> tuple[str, int]:
        with _naming(f"tcp {host}:{port}"):
            server = await asyncio.start_server(self._serve_stream, host, port, backlog=_BACKLOG)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        logger.info("hub listening on tcp %s:%d", bound[0], bound[1])
        return bound[0], bound[1]

    async def serve_unix(self, path: str) -> None:
        with _naming(f"unix {path}"):
            if os.path.exists(path):
                os.unlink(path)
            server = await asyncio.start_unix_server(self._serve_stream, path, backlog=_BACKLOG)
        self._servers.append(server)
        logger.info("hub listening on unix %s", path)

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A host speaks first (HCI Reset); a control client says hello.
        try:
            first = await reader.read(65536)
        except (ConnectionError, asyncio.CancelledError):
            writer.close()
            return
        if not first:
            writer.close()
            return
        if first.startswith(CONTROL_HELLO[:1]):
            await self._serve_control(first, reader, writer)
            return
        member = self._join("tcp" if writer.get_extra_info("peername") else "unix", writer.write)
        member.hang_up = writer.close
        parser = PacketParser(member.controller)
        try:
            data = first
            while data:
                parser.feed_data(data)
                self._note_address(member)
                data = await reader.read(65536)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("%s: stream ended: %r", member.name, exc)
        except asyncio.CancelledError:
            # The hub is stopping. Ending quietly keeps asyncio's stream machinery from
            # reporting the cancelled handler as an error.
            pass
        except Exception:
            logger.exception("%s: bad data from the host", member.name)
        finally:
            self._leave(member)
            writer.close()

    # --- faults at run time ---------------------------------------------------------------
    def member(self, who: str) -> _Member:
        """A member by name (``tcp-3``) or address (``F2:00:00:00:00:03``, any case)."""
        if who in self.members:
            return self.members[who]
        wanted = who.upper().replace("/P", "")
        for member in self.members.values():
            c = member.controller
            if wanted in (
                str(c.public_address).upper().replace("/P", ""),
                str(c.random_address).upper(),
            ):
                return member
        raise KeyError(f"no member {who!r} (try: list)")

    def control(self, request: dict[str, Any]) -> Any:
        """Run one control request; returns a JSON-able answer or raises (KeyError,
        ValueError). Requests (``op`` plus arguments):

        * ``list``: members with address, position (m) and connections;
        * ``loss`` ``rate`` [``a`` ``b``]: loss rate between two members, or everyone;
        * ``latency`` ``seconds`` [``a`` ``b``]: extra latency;
        * ``move`` ``name`` ``x`` ``y`` [``z``]; ``out_of_range`` ``name``;
        * ``disconnect`` ``a`` ``b`` [``reason``, default 0x08]: force a link down;
        * ``kill`` ``name``: the member's controller dies (its process sees the transport
          lost; its peers time out).
        """
        op = request.get("op")
        link = self.link

        def pair() -> tuple[Any, Any]:
            a, b = request.get("a"), request.get("b")
            if (a is None) != (b is None):
                raise ValueError("give both a and b, or neither")
            if a is None:
                return None, None
            return self.member(str(a)).controller, self.member(str(b)).controller

        if op == "list":
            return {
                "timing": link.timing,
                "members": [self._describe(m) for m in self.members.values()],
            }
        if op in ("loss", "latency", "move", "out_of_range") and not link.air:
            raise ValueError(f"{op} needs air timing (this hub is {link.timing})")
        if op == "loss":
            link.set_loss(float(request["rate"]), *pair())
            return "ok"
        if op == "latency":
            link.set_latency(float(request["seconds"]), *pair())
            return "ok"
        if op == "move":
            position = (float(request["x"]), float(request.get("y", 0)), float(request.get("z", 0)))
            link.move(self.member(request["name"]).controller, position)
            return "ok"
        if op == "out_of_range":
            link.move(self.member(request["name"]).controller, FAR_AWAY)
            return "ok"
        if op == "disconnect":
            a, b = self.member(request["a"]), self.member(request["b"])
            reason = int(request.get("reason", _CONNECTION_TIMEOUT))
            if not link.disconnect(a.controller, b.controller, reason):
                raise ValueError(f"{a.name} and {b.name} are not connected")
            return "ok"
        if op == "kill":
            self.kill(request["name"])
            return "ok"
        raise ValueError(f"unknown op {op!r}")

    def kill(self, who: str) -> None:
        """The member's controller dies: its peers lose their links at the supervision
        timeout (at once in instant timing), and its process sees the transport lost."""
        member = self.member(who)
        self.link.kill(member.controller)
        if member.hang_up is not None:
            member.hang_up()
        logger.info("%s killed", member.name)

    def _describe(self, member: _Member) -> dict[str, Any]:
        c = member.controller
        peers = []
        for peer_address, connection in c.le_connections.items():
            air = self.link.air_connection(connection.self_address, peer_address)
            peer = next(
                (
                    m.name
                    for m in self.members.values()
                    if air is not None and air.involves(m.controller) and m is not member
                ),
                str(peer_address),
            )
            entry: dict[str, Any] = {
                "peer": peer,
                "role": "central" if connection.role == hci.Role.CENTRAL else "peripheral",
            }
            if air is not None:
                entry.update(
                    interval_ms=air.interval * 1000,
                    timeout_ms=air.timeout * 1000,
                    delivered=air.delivered,
                    lost=air.lost,
                )
            peers.append(entry)
        return {
            "name": member.name,
            "address": str(c.public_address),
            "position": list(self.link.positions.get(c, FAR_AWAY)),
            "dead": c in self.link.dead,
            "connections": peers,
        }

    async def _serve_control(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buffer = first
        try:
            while True:
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip() or line.strip() == CONTROL_HELLO:
                        continue
                    writer.write(self._answer(line) + b"\n")
                await writer.drain()
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = {"ok": True, "result": self.control(request)}
            logger.info("control: %s", line.decode("utf-8", "replace"))
        except (KeyError, ValueError, TypeError) as exc:
            answer = {
                "ok": False,
                "error": str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc),
            }
        return json.dumps(answer).encode()

    # --- pseudo-terminals -------------------------------------------------------------------
    def attach_pty(self, path: str) -> None:
        """A virtual controller behind a pseudo-terminal whose device is linked at ``path``.

        It lives as long as the hub: a program that reopens the terminal starts with an
        HCI Reset, as it would on a real UART controller.
        """
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        slave_name = os.ttyname(slave)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(slave_name, path)
        os.set_blocking(master, False)
        self._ptys.append((master, path))
        # Keep our copy of the slave open: without it, the master reads EIO between runs.
        self._pty_slaves.append(slave)
        member = self._join("pty", lambda packet: _write_all(master, packet))
        parser = PacketParser(member.controller)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                parser.feed_data(data)
                self._note_address(member)

        loop.add_reader(master, readable)
        logger.info("hub pty %s -> %s", path, slave_name)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for member in list(self.members.values()):
            self._leave(member)
        loop = asyncio.get_running_loop()
        for master, path in self._ptys:
            loop.remove_reader(master)
            os.close(master)
            if os.path.islink(path):
                os.unlink(path)
        for slave in self._pty_slaves:
            os.close(slave)
        self._pty_slaves.clear()
        self._ptys.clear()


@contextlib.contextmanager
def _naming(where: str) -> Iterator[None]:
    """An ``OSError`` while setting up a listener names it: ``[Errno 2] cannot listen on
    unix /no/dir/hub.sock: No such file or directory`` (the bare error names no path)."""
    try:
        yield
    except OSError as exc:
        error = OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}")
        raise error from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def run_hub(
    tcp: list[tuple[str, int]],
    unix: list[str],
    ptys: list[str],
    stop: asyncio.Event,
    **settings: Any,
) -> None:
    """Serve until ``stop`` is set (the CLI sets it on Ctrl-C / SIGTERM). ``settings`` go
    to ``Hub`` (timing, pdus_per_event, loss, latency, seed)."""
    hub = Hub(**settings)
    try:
        for host, port in tcp:
            await hub.serve_tcp(host, port)
        for path in unix:
            await hub.serve_unix(path)
        for path in ptys:
            hub.attach_pty(path)
        await stop.wait()
    finally:
        await hub.close()
