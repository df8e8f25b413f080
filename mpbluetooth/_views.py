"""The memoryviews of an event tuple, and what happens to them when the handler returns.

SPEC D5 (amended 2026-12-03). MicroPython's docs say the ``addr``/``adv_data``/
``char_data``/``notify_data`` views are valid only during the handler. On a board a view
kept afterwards still reads, until the stack reuses its buffer, and real programs rely on
that. So by default a kept view stays readable (it is over a private copy here, so its
content never changes) and the first one kept warns once on stderr, naming the handler's
file and line. **Strict mode** releases every view when the handler returns, so a program
that keeps one fails loudly (``ValueError: operation forbidden on released memoryview
object``): the default under the pytest plugin, where the latent bug should fail, and
opt-in elsewhere (``MPBLUETOOTH_STRICT=1``, ``mpbluetooth run --strict``,
``mpbluetooth-python --strict``).

A view counts as kept when the handler left a reference to it, or to the event tuple,
behind (in a global, an attribute, a list...); slices and copies (``bytes(view)``) do not.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, Final

__all__ = ["ENV_STRICT", "EventViews", "KeptViewWarning", "set_strict", "strict"]

ENV_STRICT: Final = "MPBLUETOOTH_STRICT"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})

_strict: bool | None = None
_warned = False
_warn_lock = threading.Lock()


class KeptViewWarning(RuntimeWarning):
    """A memoryview from an event tuple was kept after its IRQ handler returned."""


def set_strict(flag: bool | None) -> None:
    """Desktop only: release event views when the handler returns (True), keep them
    readable with a warning (False), or follow ``MPBLUETOOTH_STRICT`` (None)."""
    global _strict
    _strict = flag


def strict() -> bool:
    """Whether views are released when the handler returns."""
    if _strict is not None:
        return _strict
    return os.environ.get(ENV_STRICT, "").strip().lower() in _TRUE


class EventViews:
    """The views of one event's delivery: made before the handler, settled after it."""

    __slots__ = ("views", "values", "_counts")

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.views: list[memoryview] = []
        self.values = tuple(self._view(v) if type(v) is bytes else v for v in values)
        # References held now (this object, the list, the tuple, getrefcount's argument):
        # more after the handler means the handler kept one.
        self._counts = [sys.getrefcount(v) for v in (self.values, *self.views)]

    def _view(self, value: bytes) -> memoryview:
        view = memoryview(value)
        self.views.append(view)
        return view

    def settle(self, handler: Callable[..., Any], event: int, failed: bool) -> None:
        """After the handler: release the views (strict), or warn once if it kept one."""
        if strict():
            for view in self.views:
                view.release()
            return
        if failed or _warned:
            return
        counts = [sys.getrefcount(v) for v in (self.values, *self.views)]
        if any(now > before for now, before in zip(counts, self._counts, strict=True)):
            _warn_kept(handler, event)


def _warn_kept(handler: Callable[..., Any], event: int) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    filename, line = _where(handler)
    message = (
        f"a memoryview from IRQ event {event} was kept after the handler returned: on a "
        "board its content changes when the stack reuses the buffer; copy it with "
        "bytes() (MPBLUETOOTH_STRICT=1 makes this an error)"
    )
    # Always shown, whatever the warning filters say: once is the promise.
    with warnings.catch_warnings():
        warnings.simplefilter("always", KeptViewWarning)
        warnings.warn_explicit(message, KeptViewWarning, filename, line)


def _where(handler: Callable[..., Any]) -> tuple[str, int]:
    """The file and first line of the handler's code (a function, a bound method or an
    object with ``__call__``)."""
    target: Any = getattr(handler, "__func__", handler)
    code = getattr(target, "__code__", None)
    if code is None:
        call = type(handler).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
    if code is None:
        return "<IRQ handler>", 0
    return code.co_filename, code.co_firstlineno
