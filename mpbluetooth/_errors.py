"""How failures surface: MicroPython's ``OSError(errno)`` and our desktop-only errors."""

from __future__ import annotations

import errno as _errno
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from ._status import HCI_ERROR_BASE

_T = TypeVar("_T")
logger = logging.getLogger(__name__)
_HCI_UNSPECIFIED_ERROR = 0x1F


def mp_oserror(code: int, detail: str | None = None) -> OSError:
    """Build MicroPython's ``OSError(code)``: a plain ``OSError`` (never CPython's errno
    subclass such as ``BlockingIOError``), ``args == (code,)``, ``e.errno == code`` and
    ``str(e)`` exactly ``[Errno 22] EINVAL``, so a program printing ``e`` prints what a
    board prints.

    ``detail`` (desktop only) says what failed. It goes to the debug log and into
    ``e.__notes__`` (PEP 678), which a traceback shows and ``print(e)`` does not.
    Negative codes (NimBLE host errors passed through) read as the bare number, as on
    MicroPython: ``str(OSError(-18)) == '-18'``.
    """
    # OSError(code, text) would let CPython pick a subclass from the errno; a single
    # argument never does, and errno/strerror are then set as MicroPython reports them.
    error = OSError(code)
    error.errno = code
    if code > 0:
        error.strerror = _errno.errorcode.get(code, str(code))
    if detail:
        logger.debug("OSError(%d): %s", code, detail)
        error.add_note(detail)
    return error


def hci_oserror(status: int, detail: str | None = None) -> OSError:
    """A controller's HCI error status as NimBLE's binding reports it: ``OSError(-(0x200 +
    status))``, e.g. Invalid HCI Command Parameters (0x12) is ``OSError(-530)``."""
    return mp_oserror(-(HCI_ERROR_BASE + status), detail)


async def controller_answer(work: Awaitable[_T]) -> _T:
    """Await a Bumble call whose HCI command the controller may refuse; a refusal (Bumble's
    ``HCI_Error``, e.g. Invalid HCI Command Parameters for an advertising interval under
    20 ms) is :func:`hci_oserror`, as NimBLE reports a refused command."""
    from bumble.hci import HCI_Error

    try:
        return await work
    except HCI_Error as exc:
        raise hci_oserror(hci_status(exc), f"the controller refused: {exc.error_name}") from None


def hci_status(error: Any) -> int:
    """The controller's status in Bumble's ``HCI_Error`` (Unspecified Error if it has none)."""
    code = error.error_code
    return int(code) if code is not None else _HCI_UNSPECIFIED_ERROR


class TransportError(OSError):
    """The HCI transport could not be opened, or was lost.

    Desktop only: a board has no transport to choose. The message names the transport
    spec, the cause and, where we can tell, the fix (permissions, a busy adapter).
    """

    __module__ = "mpbluetooth"


class CallTimeoutError(OSError):
    """A call into the stack's loop did not finish within its deadline (errno ETIMEDOUT)."""
