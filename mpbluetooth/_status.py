"""Status codes, in one place: ATT error codes, NimBLE host statuses, L2CAP results, and
how a link-bound operation's end becomes the status MicroPython's events carry.

Events such as ``_IRQ_GATTC_READ_DONE`` or ``_IRQ_GATTS_INDICATE_DONE`` carry NimBLE's host
status (``BLE_HS_*``): 0, ``0x100 + ATT error`` for an error response, 7 when the link
went, 13 on a timeout. Calls raise ``OSError`` with an errno (``constants``) or, where
NimBLE passes its own code through, the negated host code (``_errors``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from .constants import (
    GATTS_ERROR_INSUFFICIENT_AUTHENTICATION,
    GATTS_ERROR_INSUFFICIENT_ENCRYPTION,
    GATTS_ERROR_READ_NOT_PERMITTED,
    GATTS_ERROR_WRITE_NOT_PERMITTED,
)

# --- ATT error codes (Core Vol 3, Part F, 3.4.1.1) --------------------------------------
ATT_READ_NOT_PERMITTED: Final = GATTS_ERROR_READ_NOT_PERMITTED
ATT_WRITE_NOT_PERMITTED: Final = GATTS_ERROR_WRITE_NOT_PERMITTED
ATT_INVALID_PDU: Final = 0x04
ATT_INSUFFICIENT_AUTHENTICATION: Final = GATTS_ERROR_INSUFFICIENT_AUTHENTICATION
ATT_ATTRIBUTE_NOT_FOUND: Final = 0x0A
ATT_INSUFFICIENT_ENCRYPTION: Final = GATTS_ERROR_INSUFFICIENT_ENCRYPTION

# --- NimBLE host statuses (BLE_HS_*) ----------------------------------------------------
HS_EALREADY: Final = 2
HS_EINVAL: Final = 3
#: What GATT events report for a failure we cannot name better (NimBLE's 5).
HS_FAILED: Final = 5
HS_ENOMEM: Final = 6
#: The link went.
HS_ENOTCONN: Final = 7
HS_ENOTSUP: Final = 8
#: The application refused (a read of the stored value failed): ``OSError(-9)``.
HS_EAPP: Final = 9
#: A malformed response.
HS_EBADDATA: Final = 10
HS_ETIMEOUT: Final = 13
HS_EREJECT: Final = 16
HS_EUNKNOWN: Final = 17
#: ``gap_advertise`` with a payload over 31 bytes: ``OSError(-18)``.
HS_ADV_DATA_TOO_LONG: Final = 18
HS_EAUTHEN: Final = 23
HS_EAUTHOR: Final = 24
HS_EENCRYPT: Final = 25
HS_EENCRYPT_KEY_SZ: Final = 26
#: BLE_HS_ERR_ATT_BASE: an ATT error response is reported as 0x100 + its code.
ATT_ERROR_BASE: Final = 0x100
#: BLE_HS_ERR_HCI_BASE: a controller status ``x`` reaches the binding as ``0x200 + x``.
HCI_ERROR_BASE: Final = 0x200
#: HCI status Invalid HCI Command Parameters (Core Vol 1, Part F).
HCI_INVALID_PARAMETERS: Final = 0x12

# --- L2CAP LE credit-based connection results (Core Vol 3, Part A, 4.23) ----------------
L2CAP_SUCCESS: Final = 0x0000
L2CAP_PSM_NOT_SUPPORTED: Final = 0x0002
L2CAP_NO_RESOURCES: Final = 0x0004
L2CAP_INSUFFICIENT_AUTHENTICATION: Final = 0x0005
L2CAP_INSUFFICIENT_AUTHORIZATION: Final = 0x0006
L2CAP_INSUFFICIENT_KEY_SIZE: Final = 0x0007
L2CAP_INSUFFICIENT_ENCRYPTION: Final = 0x0008
L2CAP_INVALID_SOURCE_CID: Final = 0x0009
L2CAP_SOURCE_CID_ALREADY_ALLOCATED: Final = 0x000A
L2CAP_UNACCEPTABLE_PARAMETERS: Final = 0x000B

#: An L2CAP accept handler's non-zero answer (a NimBLE host code) -> the result sent.
L2CAP_ANSWER_TO_RESULT: Final = {
    HS_ENOTSUP: L2CAP_PSM_NOT_SUPPORTED,
    HS_ENOMEM: L2CAP_NO_RESOURCES,
    HS_EAUTHEN: L2CAP_INSUFFICIENT_AUTHENTICATION,
    HS_EAUTHOR: L2CAP_INSUFFICIENT_AUTHORIZATION,
    HS_EENCRYPT: L2CAP_INSUFFICIENT_ENCRYPTION,
    HS_EENCRYPT_KEY_SZ: L2CAP_INSUFFICIENT_KEY_SIZE,
    HS_EINVAL: L2CAP_UNACCEPTABLE_PARAMETERS,
}
#: A refusal received by the connecting side -> the status of its L2CAP_DISCONNECT.
L2CAP_RESULT_TO_STATUS: Final = {
    L2CAP_PSM_NOT_SUPPORTED: HS_ENOTSUP,
    L2CAP_NO_RESOURCES: HS_ENOMEM,
    L2CAP_INSUFFICIENT_AUTHENTICATION: HS_EAUTHEN,
    L2CAP_INSUFFICIENT_AUTHORIZATION: HS_EAUTHOR,
    L2CAP_INSUFFICIENT_KEY_SIZE: HS_EENCRYPT_KEY_SZ,
    L2CAP_INSUFFICIENT_ENCRYPTION: HS_EENCRYPT,
    L2CAP_INVALID_SOURCE_CID: HS_EREJECT,
    L2CAP_SOURCE_CID_ALREADY_ALLOCATED: HS_EALREADY,
    L2CAP_UNACCEPTABLE_PARAMETERS: HS_EINVAL,
}


async def link_status(
    connection: Any,
    work: Coroutine[Any, Any, Any],
    what: str,
    classify: Callable[[Exception], int | None] = lambda exc: None,
) -> int:
    """Await ``work``, cut short if the link drops, and say how it ended as NimBLE's status:
    0, 7 link lost, 13 timeout, ``classify(exc)`` for errors the caller knows, else 5
    (logged). Our own task being cancelled means the stack is stopping: that re-raises,
    so no event follows, as on NimBLE."""
    from bumble.core import TimeoutError as BumbleTimeoutError

    # Bumble's cancel_on_disconnection runs the work in a task of its own: one more task
    # per GATT procedure, and a loop iteration at each end of it. The work runs in our
    # own task instead, which the disconnection cancels.
    task = asyncio.current_task()
    assert task is not None
    lost = False

    def on_disconnection(*_: Any) -> None:
        nonlocal lost
        lost = True
        # Cut short one loop turn later: the last packets of the link may have answered
        # the work (a write response in the same connection event as the termination),
        # and its task was woken before the disconnection came in. NimBLE completes the
        # procedure with that answer (WRITE_DONE status 0) before it reports the
        # disconnection.
        task.get_loop().call_soon(cut_short)

    def cut_short() -> None:
        if not task.done():
            task.cancel()

    watchers = _link_watchers(connection)
    watchers[on_disconnection] = None
    try:
        await work
    except asyncio.CancelledError:
        if not lost or task.uncancel() > 0:
            raise  # our task is being cancelled: the stack is stopping
        return HS_ENOTCONN
    except (TimeoutError, BumbleTimeoutError):
        return HS_ETIMEOUT
    except Exception as exc:  # reported through the status
        status = classify(exc)
        if status is None:
            logging.getLogger(__name__).exception("%s failed", what)
            return HS_FAILED
        return status
    finally:
        watchers.pop(on_disconnection, None)
    return 0


#: Where a connection keeps the watchers of its running work (an attribute of Bumble's
#: Connection: a lookup on the object costs less than a weak dictionary's).
_WATCHERS: Final = "_mpbluetooth_link_watchers"


def _link_watchers(connection: Any) -> dict[Callable[..., None], None]:
    """The functions the link's disconnection calls, in the order their work started. One
    listener per link, not one added and removed per procedure: pyee's ``on`` and
    ``remove_listener`` cost more than a GATT round trip's other bookkeeping."""
    watchers: dict[Callable[..., None], None] | None = getattr(connection, _WATCHERS, None)
    if watchers is None:
        watchers = {}
        setattr(connection, _WATCHERS, watchers)
        kept = watchers

        def on_disconnection(*args: Any) -> None:
            for watcher in list(kept):
                watcher(*args)

        connection.on("disconnection", on_disconnection)
    return watchers
