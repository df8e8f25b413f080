"""A simulated board that MicroPython's own tools talk to (desktop only, POSIX).

``mpbluetooth board`` runs one: a serial line (a pseudo-terminal, optionally a TCP port)
with MicroPython's REPL on it (``_repl``), a folder as its filesystem (``_fs``), and the
program's console and Ctrl-C (``_console``), all in this process, whose ``bluetooth``
module is mpbluetooth's. mpremote, ``tools/pyboard.py``, run-multitests.py and terminal
programs open the line as they open a board's ``/dev/ttyACM0``. See docs/board.md.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import types
from collections.abc import Callable

__all__ = ["run"]

logger = logging.getLogger(__name__)


def run(
    root: str,
    *,
    tcp: tuple[str, int] | None = None,
    link: str | None = None,
    announce: Callable[[str, str | None], None] = lambda device, url: None,
) -> int:
    """Serve a board with the folder ``root`` as its filesystem until SIGINT or SIGTERM;
    the exit status. ``announce(device, url)`` is called once the line is open (``url``:
    pyserial's ``socket://`` URL of the TCP port, when ``tcp`` asks for one). Call on the
    main thread: the board's code runs there, as ``mpbluetooth-python``'s does."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("a board runs on the main thread")
    from .. import boards, compat
    from ..compat import _board, features
    from ._console import SerialText
    from ._fs import BoardFs
    from ._repl import BoardStop, Repl, deinit_bluetooth
    from ._serial import SerialLine

    off = features.env_off()
    compat.install(str_buffer="str-buffer" not in off, off=off - {"str-buffer"})
    _board.apply(boards.current())  # MPBLUETOOTH_BOARD: sys.platform, os.uname(), modules
    fs = BoardFs(root)
    line = SerialLine(tcp, link)
    fs.install()

    def stop(signum: int, frame: types.FrameType | None) -> None:
        raise BoardStop

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    streams = sys.stdin, sys.stdout, sys.stderr
    try:
        announce(line.device, line.url)
        sys.stdout = sys.stderr = SerialText(line)
        Repl(line, fs).serve()
    except BoardStop:
        pass
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(Exception):
            deinit_bluetooth()
        line.close()
    return 0
