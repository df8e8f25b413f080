"""The simulation hub: one simulated link shared by several processes.

Every stream that connects (TCP or unix socket) gets its own virtual controller on the
hub's link, created when the stream opens and removed when it closes; the process on the
other end is an ordinary HCI host (mpbluetooth with ``MPBLUETOOTH_TRANSPORT=tcp-client:...``,
or any Bumble host). A pseudo-terminal can also be attached, so a program that opens an HCI
UART (MicroPython's unix port with NimBLE, a firmware emulator) joins the same link.

When a process goes away (exit, crash, ``kill -9``), its controller tells every peer that
the link was lost (LL_TERMINATE_IND, reason 0x08 "connection timeout", as a radio would
see it), so survivors get their disconnect events at once; the hub keeps serving the rest.
Bumble's own ``bumble.apps.controllers`` does neither (exactly two fixed clients, and a
dead client's peers are never told).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import termios
import tty
from dataclasses import dataclass, field
from typing import Any

from bumble import hci, ll
from bumble.transport.common import PacketParser

from .controller import SimController
from .link import SimLink

logger = logging.getLogger(__name__)

DEFAULT_TCP = ("127.0.0.1", 10723)
_CONNECTION_TIMEOUT = 0x08


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


class Hub:
    """A simulated link served to other processes. Run it on one asyncio loop."""

    def __init__(self, acl_length: int | None = None) -> None:
        self.link = SimLink()
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
        logger.info("%s joined as %s (%d on the link)", name, address, len(self.members))
        return member

    def _leave(self, member: _Member) -> None:
        """The process behind ``member`` is gone: its peers lose their links at once."""
        if self.members.pop(member.name, None) is None:
            return
        controller = member.controller
        controller.host = None
        for connection in list(controller.le_connections.values()):
            try:
                connection.send_ll_control_pdu(ll.TerminateInd(error_code=_CONNECTION_TIMEOUT))
            except Exception:  # noqa: BLE001 - the peer may be leaving too
                logger.debug("%s: could not tell %s", member.name, connection.peer_address)
        controller.le_connections.clear()
        controller.go_silent()
        if controller in self.link.controllers:
            self.link.remove_controller(controller)
        member.closed.set()
        logger.info("%s left (%d on the link)", member.name, len(self.members))

    # --- streams (TCP, unix sockets) ------------------------------------------------------
    async def serve_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = await asyncio.start_server(self._serve_stream, host, port)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        logger.info("hub listening on tcp %s:%d", bound[0], bound[1])
        return bound[0], bound[1]

    async def serve_unix(self, path: str) -> None:
        if os.path.exists(path):
            os.unlink(path)
        server = await asyncio.start_unix_server(self._serve_stream, path)
        self._servers.append(server)
        logger.info("hub listening on unix %s", path)

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        member = self._join("tcp" if writer.get_extra_info("peername") else "unix", writer.write)
        parser = PacketParser(member.controller)
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def run_hub(
    tcp: list[tuple[str, int]], unix: list[str], ptys: list[str], stop: asyncio.Event
) -> None:
    """Serve until ``stop`` is set (the CLI sets it on Ctrl-C / SIGTERM)."""
    hub = Hub()
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
