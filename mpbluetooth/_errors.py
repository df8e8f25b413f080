"""How failures surface: MicroPython's ``OSError(errno)`` and our desktop-only errors."""

from __future__ import annotations

import errno as _errno


def mp_oserror(code: int, detail: str | None = None) -> OSError:
    """Build ``OSError(code)`` whose ``str()`` reads like MicroPython's ``[Errno 19] ENODEV``.

    ``detail`` (desktop only) is appended to the symbolic name so a log line says what
    failed; ``e.errno`` stays the MicroPython number either way. Negative codes (NimBLE
    host errors passed through) become a bare ``OSError(-4)`` as on MicroPython.
    """
    if code < 0:
        return OSError(code)
    name = _errno.errorcode.get(code, str(code))
    return OSError(code, f"{name} ({detail})" if detail else name)


class TransportError(OSError):
    """The HCI transport could not be opened, or was lost.

    Desktop only: a board has no transport to choose. The message names the transport
    spec, the cause and, where we can tell, the fix (permissions, a busy adapter).
    """

    __module__ = "mpbluetooth"


class CallTimeoutError(OSError):
    """A call into the stack's loop did not finish within its deadline (errno ETIMEDOUT)."""
