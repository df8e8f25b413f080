"""The board's serial line: a pseudo-terminal, and optionally a TCP port, that MicroPython's
tools open as they open a board's USB serial device.

A board's USB serial line has three properties tools rely on, kept here:

* output written while no host has the port open is lost, not queued: a host that opens
  the port later does not read a stale banner first. We do not hold the pty's slave end
  open ourselves, so the kernel reports a hang-up on the master while no client has it
  open, and output is dropped then (its termios, set to raw once, outlast the clients);
* the interrupt character is recognised when it arrives, not when the program reads it:
  while code runs (``interrupt_char()`` >= 0, as MicroPython's
  ``mp_hal_set_interrupt_char`` sets it) it is taken out of the input and ``on_interrupt`` is
  called from the reader thread;
* every other byte waits in order in one input buffer, read by the REPL and by the
  program's ``sys.stdin`` alike.

Input is read by a thread of its own (``mpbluetooth-serial``); the main thread waits for
it in the scheduler's idle point, so IRQ handlers run while the REPL waits for a key.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Final

from .._scheduler import scheduler

logger = logging.getLogger(__name__)

#: How often the reader looks again for a client on a hung-up pty, in seconds.
_HANGUP_POLL_S: Final = 0.05
#: How long output may wait for a connected host to read before it is dropped, in seconds
#: (a USB CDC board gives up on a host that stopped reading, too).
_WRITE_TIMEOUT_S: Final = 5.0
_READ_SIZE: Final = 4096


class SerialLine:
    """The pty (``device``) and, with ``tcp``, a TCP port (``url``, pyserial's
    ``socket://HOST:PORT``, which ``mpremote connect`` opens). Output goes to every host
    connected; input from all of them is merged."""

    def __init__(self, tcp: tuple[str, int] | None = None, link: str | None = None) -> None:
        import tty

        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.device = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self._master, False)
        self.link = link
        if link is not None:
            if os.path.lexists(link) and not os.path.islink(link):
                os.close(self._master)
                raise FileExistsError(errno.EEXIST, f"--link {link}: exists, not a symlink")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)  # a board's link left from an earlier run
            os.symlink(self.device, link)
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self.url: str | None = None
        if tcp is not None:
            self._listener = socket.create_server(tcp)
            host, port = self._listener.getsockname()[:2]
            self.url = f"socket://{host}:{port}"
        #: The character that interrupts running code now, or -1 (given by the REPL).
        self.interrupt_char: Callable[[], int] = lambda: -1
        #: Called on the reader thread when the interrupt character arrives.
        self.on_interrupt: Callable[[], None] = lambda: None
        #: Called on the reader thread each time it wakes, to retry a deferred interrupt.
        self.retry_interrupt: Callable[[], bool] = lambda: False
        self._input = bytearray()
        self._input_lock = threading.Lock()
        self._local = bytearray()  # main thread only: taken from _input, not yet consumed
        self._bell_r, self._bell_w = os.pipe()
        self._stop_r, self._stop_w = os.pipe()
        for fd in (self._bell_r, self._bell_w):
            os.set_blocking(fd, False)
        self._out_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="mpbluetooth-serial")
        self._reader.daemon = True
        self._reader.start()

    # --- output (any thread) -----------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data`` to every connected host; dropped where none is connected."""
        if not data:
            return
        with self._out_lock:
            self._write_pty(data)
            self._write_tcp(data)

    def _write_pty(self, data: bytes) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._master, select.POLLOUT)
        while view:
            events = poller.poll(_WRITE_TIMEOUT_S * 1000)
            if not events or events[0][1] & (select.POLLHUP | select.POLLERR):
                return  # no client (or one that stopped reading): lost, as on a board
            try:
                sent = os.write(self._master, view)
            except BlockingIOError:
                continue
            except OSError:
                return
            view = view[sent:]

    def _write_tcp(self, data: bytes) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.sendall(data)
        except OSError as exc:
            logger.info("serial: TCP client dropped (%s)", exc)
            self._drop_client(client)

    # --- input (main thread) -----------------------------------------------------------
    def read_byte(self) -> int:
        """The next input byte, waiting for it (an idle point of the scheduler)."""
        self._fill()
        value = self._local[0]
        del self._local[0]
        return value

    def read(self, size: int, line: bool = False) -> bytes:
        """Up to ``size`` bytes, at least one (waiting for it); with ``line``, no further
        than the first newline, so a reader that buffers ahead never takes input that
        belongs to whoever reads after it (the REPL, once the program ends)."""
        self._fill()
        end = min(size, len(self._local))
        if line:
            newline = self._local.find(b"\n", 0, end)
            if newline >= 0:
                end = newline + 1
        data = bytes(self._local[:end])
        del self._local[:end]
        return data

    def discard_input(self) -> None:
        """Forget the input received so far (a soft reset keeps nothing a program left)."""
        with self._input_lock:
            self._input.clear()
        self._local.clear()

    def _fill(self) -> None:
        while not self._local:
            self._ring_off()
            with self._input_lock:
                self._local += self._input
                self._input.clear()
            if self._local:
                return
            # The scheduler's idle point runs IRQ handlers meanwhile; it returns at once
            # where it cannot (inside a handler), so select() waits then.
            scheduler().wait_readable(self._bell_r)
            select.select([self._bell_r], [], [])

    def _ring_off(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._bell_r, 512):
                pass

    # --- the reader thread ---------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            self._read_forever()
        except Exception:  # the line is gone; the board stays up for the console
            logger.exception("serial: the reader stopped")

    def _read_forever(self) -> None:
        hangup = select.poll()
        hangup.register(self._master, select.POLLIN)
        while True:
            sources: list[int | socket.socket] = [self._stop_r]
            pty_open = not any(ev & select.POLLHUP for _, ev in hangup.poll(0))
            if pty_open:
                sources.append(self._master)
            if self._listener is not None:
                sources.append(self._listener)
            if self._client is not None:
                sources.append(self._client)
            timeout = None if pty_open else _HANGUP_POLL_S
            if self.retry_interrupt():
                timeout = _HANGUP_POLL_S
            ready, _, _ = select.select(sources, [], [], timeout)
            if self._stop_r in ready:
                return
            if self._master in ready:
                self._receive(self._read_pty())
            if self._listener is not None and self._listener in ready:
                self._accept()
            client = self._client
            if client is not None and client in ready:
                try:
                    data = client.recv(_READ_SIZE)
                except OSError:
                    data = b""
                if data:
                    self._receive(data)
                else:
                    self._drop_client(client)

    def _read_pty(self) -> bytes:
        try:
            return os.read(self._master, _READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the last client closed it meanwhile
                raise
            return b""

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, peer = self._listener.accept()
        except OSError:
            return
        client.settimeout(_WRITE_TIMEOUT_S)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        previous, self._client = self._client, client
        if previous is not None:  # the newest host wins, as a replugged cable does
            self._drop_client(previous)
        logger.info("serial: TCP client %s:%s connected", *peer[:2])

    def _drop_client(self, client: socket.socket) -> None:
        if self._client is client:
            self._client = None
        with contextlib.suppress(OSError):
            client.close()

    def _receive(self, data: bytes) -> None:
        char = self.interrupt_char()
        if char >= 0 and char in data:
            data = data.replace(bytes([char]), b"")
            self.on_interrupt()
        if not data:
            return
        with self._input_lock:
            self._input += data
        with contextlib.suppress(BlockingIOError):
            os.write(self._bell_w, b"\0")

    def close(self) -> None:
        """Stop the reader and close every endpoint (and the ``link``)."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"\0")
        self._reader.join(2)
        for sock in (self._client, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        for fd in (self._master, self._bell_r, self._bell_w, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link is not None:
            with contextlib.suppress(OSError):
                if os.path.islink(self.link):
                    os.unlink(self.link)
