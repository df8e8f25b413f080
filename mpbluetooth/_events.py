"""The bounded IRQ event ring of one instance.

Stack callbacks (on the loop thread) post events here; the handler runs where
:mod:`._scheduler` runs all handler code (the main thread at MicroPython's check points,
or the process's one fallback thread), in arrival order, never on the loop, never
overlapping (SPEC D2). Events whose answer the stack needs wait in the same queue, so a
handler answers a read request only after every event that arrived before it.

Events become deliverable a whole loop callback at a time: what one stack callback posts
(``_IRQ_GATTC_READ_RESULT`` and ``_IRQ_GATTC_READ_DONE``) is published together once that
callback has returned, so the program never sees the first handled without the second.

The ring is accounted in bytes with MicroPython's ring-buffer encoding (1 byte of event
code, 2 per u16, 1 per u8, 6 per address, 1 + size per UUID, 2 + length per data field)
so ``config('rxbuf')`` means what it means on a ring-buffer build (SPEC D1, section 5).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._runtime import YIELD_SECONDS, runtime
from ._scheduler import scheduler
from ._views import EventViews
from .constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_CENTRAL_DISCONNECT,
    IRQ_CONNECTION_UPDATE,
    IRQ_ENCRYPTION_UPDATE,
    IRQ_GATTC_CHARACTERISTIC_DONE,
    IRQ_GATTC_CHARACTERISTIC_RESULT,
    IRQ_GATTC_DESCRIPTOR_DONE,
    IRQ_GATTC_DESCRIPTOR_RESULT,
    IRQ_GATTC_INDICATE,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_GATTS_INDICATE_DONE,
    IRQ_GATTS_READ_REQUEST,
    IRQ_GATTS_WRITE,
    IRQ_GET_SECRET,
    IRQ_L2CAP_ACCEPT,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_L2CAP_RECV,
    IRQ_L2CAP_SEND_READY,
    IRQ_MTU_EXCHANGED,
    IRQ_PASSKEY_ACTION,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
    IRQ_SET_SECRET,
)

logger = logging.getLogger(__name__)

DEFAULT_RXBUF = 16384
MIN_RXBUF = 16
MAX_RXBUF = 0xFFFF

#: How long the stack waits for the handler's answer to events 4, 22, 29 and 30 before it
#: takes the default answer (allow / accept / not found / failure), in seconds (SPEC D3).
ANSWER_DEADLINE = 5.0

#: Least time between two GIL hand-overs to a handler that is falling behind, in s.
_YIELD_SPACING = 0.001

# Field layout of every event, in MicroPython's ring encoding:
# H u16, B u8, b i8, I u32, a address (6), u UUID (1 + size), d data (2 + length).
_LAYOUTS: dict[int, str] = {
    IRQ_CENTRAL_CONNECT: "HBa",
    IRQ_CENTRAL_DISCONNECT: "HBa",
    IRQ_GATTS_WRITE: "HH",
    IRQ_GATTS_READ_REQUEST: "HH",
    IRQ_SCAN_RESULT: "BaBbd",
    IRQ_SCAN_DONE: "",
    IRQ_PERIPHERAL_CONNECT: "HBa",
    IRQ_PERIPHERAL_DISCONNECT: "HBa",
    IRQ_GATTC_SERVICE_RESULT: "HHHu",
    IRQ_GATTC_SERVICE_DONE: "HH",
    IRQ_GATTC_CHARACTERISTIC_RESULT: "HHHBu",
    IRQ_GATTC_CHARACTERISTIC_DONE: "HH",
    IRQ_GATTC_DESCRIPTOR_RESULT: "HHu",
    IRQ_GATTC_DESCRIPTOR_DONE: "HH",
    IRQ_GATTC_READ_RESULT: "HHd",
    IRQ_GATTC_READ_DONE: "HHH",
    IRQ_GATTC_WRITE_DONE: "HHH",
    IRQ_GATTC_NOTIFY: "HHd",
    IRQ_GATTC_INDICATE: "HHd",
    IRQ_GATTS_INDICATE_DONE: "HHB",
    IRQ_MTU_EXCHANGED: "HH",
    IRQ_L2CAP_ACCEPT: "HHHHH",
    IRQ_L2CAP_CONNECT: "HHHHH",
    IRQ_L2CAP_DISCONNECT: "HHHH",
    IRQ_L2CAP_RECV: "HH",
    IRQ_L2CAP_SEND_READY: "HHB",
    IRQ_CONNECTION_UPDATE: "HHHHB",
    IRQ_ENCRYPTION_UPDATE: "HBBBB",
    IRQ_GET_SECRET: "BHd",
    IRQ_SET_SECRET: "Bdd",
    IRQ_PASSKEY_ACTION: "HBI",
}
_FIXED_SIZE = {"H": 2, "B": 1, "b": 1, "I": 4, "a": 6}


def _compile(layout: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    fixed = 1 + sum(_FIXED_SIZE.get(c, 0) for c in layout)
    data = tuple(i for i, c in enumerate(layout) if c == "d")
    uuids = tuple(i for i, c in enumerate(layout) if c == "u")
    return fixed, data, uuids


_COMPILED = {event: _compile(layout) for event, layout in _LAYOUTS.items()}


def data_cap(rxbuf: int) -> int:
    """Largest data field an event may carry in a ring of ``rxbuf`` bytes (SPEC section 5)."""
    return max(rxbuf // 2, rxbuf - 64)


@dataclass(frozen=True)
class IrqStats:
    """Counters of one instance's event ring (desktop only, see ``mpbluetooth.irq_stats``)."""

    delivered: int
    dropped: int
    queued: int
    queued_bytes: int
    capacity: int


class _Pending:
    """An event waiting in the ring: its code, field values, accounted size, and for an
    answered event the ``reply`` that hands the handler's answer to the loop."""

    __slots__ = (
        "event",
        "values",
        "size",
        "reply",
        "done",
        "before",
        "after",
        "seq",
        "result",
    )

    def __init__(
        self,
        event: int,
        values: tuple[Any, ...],
        size: int,
        done: threading.Event | None = None,
        before: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
        reply: Callable[[Any], None] | None = None,
    ) -> None:
        self.event = event
        self.values = values
        self.size = size
        self.reply = reply
        self.done = done
        self.before = before
        self.after = after
        self.seq = 0
        self.result: Any = None


class EventRing:
    """Bounded, byte-accounted FIFO of IRQ events, drained by the scheduler."""

    def __init__(self, name: str, loop_getter: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._name = name
        self._loop_getter = loop_getter
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._capacity = DEFAULT_RXBUF
        self._cap = data_cap(DEFAULT_RXBUF)
        self._used = 0
        self._delivered = 0
        self._dropped = 0
        self._burst = 0
        self._last_yield = 0.0
        # Main-thread delivery: events numbered as posted; those up to ``_published`` may
        # be handled (see the module docstring).
        self._sched = scheduler()
        self._seq = 0
        self._published = 0
        self._publish_pending = False
        self._drain_submitted = False
        self._sched.add_ring(self)
        self.handler: Callable[[int, tuple[Any, ...]], Any] | None = None

    # --- configuration --------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    def set_capacity(self, size: int) -> None:
        """Replace the ring with one of ``size`` bytes, discarding queued events (as
        MicroPython's ``config(rxbuf=)`` does). Events awaiting an answer get the default."""
        with self._lock:
            discarded = [p for p in self._queue]
            self._queue.clear()
            self._used = 0
            self._capacity = size
            self._cap = data_cap(size)
        for pending in discarded:
            if pending.before is not None:
                _run_hooks(pending.before, None)
            self._finish(pending, None)

    def stats(self) -> IrqStats:
        with self._lock:
            return IrqStats(
                self._delivered, self._dropped, len(self._queue), self._used, self._capacity
            )

    # --- posting (loop thread) ----------------------------------------------------------
    def post(
        self,
        event: int,
        *values: Any,
        before: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> bool:
        """Queue an event; returns False when it was dropped (ring full or no handler).

        ``before`` runs in the IRQ context just before the handler is called with the
        event, and ``after`` as soon as it has returned; both run at once, on this thread,
        if the event is not delivered (``before`` first). So state the program sees
        through other calls can follow the events it has handled (a remote write's value
        becomes readable as its ``_IRQ_GATTS_WRITE`` is handled, as on NimBLE). Both must
        be safe on any thread (no Bumble calls).
        """
        if self.handler is None:
            _run_hooks(before, after)
            return False
        fixed, data_fields, uuid_fields = _COMPILED[event]
        size = fixed
        if data_fields:
            cap = self._cap
            for i in data_fields:
                value = values[i]
                if value is not None:
                    if len(value) > cap:
                        values = values[:i] + (value[:cap],) + values[i + 1 :]
                        value = values[i]
                    size += 2 + len(value)
                else:
                    size += 2
        for i in uuid_fields:
            size += 1 + bytes.__len__(values[i])
        with self._lock:
            queued = self._used + size <= self._capacity or self._make_room(event, size)
            if queued:
                self._append(_Pending(event, values, size, before=before, after=after))
                self._used += size
                if self._burst:
                    logger.info("%s: IRQ burst over: %d event(s) dropped", self._name, self._burst)
                    self._burst = 0
                crowded = self._used * 2 > self._capacity
            else:
                self._count_drop()
                crowded = False
        if queued:
            self._publish_soon()
        if crowded:
            self._yield_to_handler()
        if not queued:
            _run_hooks(before, after)
        return queued

    def _append(self, pending: _Pending) -> None:
        """Queue (under the lock) with the next sequence number."""
        self._seq += 1
        pending.seq = self._seq
        self._queue.append(pending)

    def _publish_soon(self) -> None:
        """Publish what is posted once the current loop callback returns (one wake-up of
        the main thread per stack callback); at once when posted from another thread, and
        on the fallback thread, which takes each event as it comes, as a dispatcher thread
        does (grouping there made a busy loop hand over hundreds of events at a time, and
        a 10k/s stream waited 15-60 ms instead of 4 ms)."""
        rt = runtime()
        if rt.in_loop_thread() and self._sched.enabled:
            with self._lock:
                if self._publish_pending:
                    return
                self._publish_pending = True
            rt.loop.call_soon(self._publish)
        else:
            self._publish()

    def _publish(self) -> None:
        with self._lock:
            self._publish_pending = False
            self._published = self._seq
            if self._drain_submitted or not self._queue:
                return
            self._drain_submitted = True
        self._sched.submit(self._drain, None)

    def _take_published(self, answered_only: bool = False) -> _Pending | None:
        with self._lock:
            queue = self._queue
            if not queue or queue[0].seq > self._published:
                return None
            if answered_only and queue[0].reply is None:
                return None
            pending = queue.popleft()
            self._used -= pending.size
            return pending

    def _drain(self, _: Any) -> None:
        """Run in the IRQ context: handle every published event, in order."""
        with self._lock:
            self._drain_submitted = False
        while (pending := self._take_published()) is not None:
            self._dispatch(pending)

    def drain_answered(self) -> None:
        """Handle the events at the head that hold the stack open (see ``Scheduler``)."""
        while (pending := self._take_published(answered_only=True)) is not None:
            self._dispatch(pending)

    def _yield_to_handler(self) -> None:
        """The ring is over half full: the handler is falling behind, often only because
        the loop thread keeps the GIL for a whole switch interval (5 ms) while it produces.
        Sleeping a moment hands the GIL to the handler's thread before the ring overflows. At
        most once per millisecond, so the sleeps cost the loop at most a tenth of its time
        when the handler is slow in itself; a handler that computes then shares the GIL
        with the loop as any two busy threads do."""
        now = time.perf_counter()
        if now - self._last_yield >= _YIELD_SPACING:
            time.sleep(YIELD_SECONDS)
            self._last_yield = time.perf_counter()

    def _make_room(self, event: int, size: int) -> bool:
        """Overflow policy (SPEC D1): a non-scan event evicts queued scan results from the
        head of the ring; anything else (and any new scan result) is dropped."""
        if event == IRQ_SCAN_RESULT:
            return False
        queue = self._queue
        while queue and queue[0].event == IRQ_SCAN_RESULT and self._used + size > self._capacity:
            evicted = queue.popleft()
            self._used -= evicted.size
            self._count_drop()
        return self._used + size <= self._capacity

    def _count_drop(self) -> None:
        """Count a lost event; the first of a burst is logged (once per burst, SPEC D1)."""
        if not self._burst:
            logger.warning(
                "%s: IRQ ring full (rxbuf=%d): dropping events until the handler catches up",
                self._name,
                self._capacity,
            )
        self._dropped += 1
        self._burst += 1

    def ask(
        self, event: int, *values: Any, before: Callable[[], None] | None = None
    ) -> asyncio.Future[Any]:
        """Queue an event whose handler answer the stack needs, or whose handler must
        have run before the stack goes on (call on the loop thread).

        The returned future resolves with the handler's return value, or ``None`` when no
        handler ran. These events are never dropped and not counted against ``rxbuf``:
        each one holds a stack operation open, so their number is bounded by the stack.
        ``before`` is as ``post``'s (run at once when there is no handler).
        """
        future: asyncio.Future[Any] = self._loop_getter().create_future()
        if self.handler is None:
            _run_hooks(before, None)
            future.set_result(None)
            return future
        with self._lock:
            self._append(
                _Pending(event, values, 0, before=before, reply=functools.partial(_resolve, future))
            )
        self._publish_soon()
        return future

    def ask_reply(
        self,
        event: int,
        *values: Any,
        reply: Callable[[Any], None],
        before: Callable[[], None] | None = None,
        what: str = "an event",
    ) -> None:
        """As ``ask``, for a stack operation that must go on in the same loop callback as
        the handler's return (call on the loop thread): ``reply(answer)`` runs on the loop
        in the callback the IRQ context hands over as the handler returns, so whatever the
        program does after its handler (a notification it sends, say) reaches the loop
        after it; an awaited future would resume its task one iteration later, behind it.
        Once, with ``None``, at once when there is no handler or after ``ANSWER_DEADLINE``.
        """
        once = _Reply(reply)
        if self.handler is None:
            _run_hooks(before, None)
            once(None)
            return
        once.timer = self._loop_getter().call_later(ANSWER_DEADLINE, once.expire, what)
        with self._lock:
            self._append(_Pending(event, values, 0, before=before, reply=once))
        self._publish_soon()

    def discard(self, event: int) -> None:
        """Forget queued events of one kind (not counted as drops).

        Used when a scan is stopped explicitly: on NimBLE SCAN_DONE is the last scan event
        and no result is seen after it, so results still queued here are withdrawn.
        """
        with self._lock:
            kept = deque(
                p
                for p in self._queue
                if p.event != event or p.reply or p.done or p.before or p.after
            )
            self._used = sum(p.size for p in kept)
            self._queue.clear()
            self._queue.extend(kept)

    def deliver_now(self, event: int, *values: Any) -> Any:
        """Deliver an event before returning to the caller and return the handler's answer
        (``None`` when no handler ran): the nested cases of SPEC section 5, ``SCAN_DONE``
        inside ``gap_scan(None)`` and ``_IRQ_GATTS_READ_REQUEST(65535, h)`` inside
        ``gatts_notify``/``gatts_indicate`` sending the stored value (SPEC 1.14).

        From the IRQ context's thread the event is dispatched nested, as MicroPython does;
        from any other thread it is queued (after what is queued) and this waits, at most
        ``ANSWER_DEADLINE`` seconds, until it has been handled, so handlers still never
        overlap.
        """
        if self.handler is None:
            return None
        if self._sched.in_irq_context():
            return self._dispatch(_Pending(event, values, 0))
        pending = _Pending(event, values, 0, done=threading.Event())
        with self._lock:
            self._append(pending)
        self._publish()
        assert pending.done is not None
        if not pending.done.wait(ANSWER_DEADLINE):
            logger.warning("%s: IRQ handler did not handle event %d in time", self._name, event)
        return pending.result

    # --- dispatching (IRQ context) -----------------------------------------------------
    def _dispatch(self, pending: _Pending) -> Any:
        if pending.before is not None:
            _run_hooks(pending.before, None)
        handler = self.handler
        result: Any = None
        if handler is not None:
            values = pending.values
            views: EventViews | None = None
            for value in values:  # a loop, not any(genexpr): this runs for every event
                if type(value) is bytes:
                    views = EventViews(values)
                    break
            failed = False
            try:
                result = handler(pending.event, values if views is None else views.values)
                self._delivered += 1
            except BaseException as exc:  # reported exactly like MicroPython
                # SPEC D4: report, uninstall the handler, let the stack take the default.
                failed = True
                self.handler = None
                result = None
                _report_handler_exception(exc)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    logger.warning("%s: %r raised in the IRQ handler", self._name, exc)
            finally:
                if views is not None:
                    views.settle(handler, pending.event, failed)
        self._finish(pending, result)
        return result

    def _finish(self, pending: _Pending, result: Any) -> None:
        pending.result = result
        if pending.reply is not None:
            try:
                self._loop_getter().call_soon_threadsafe(pending.reply, result)
            except RuntimeError:  # loop already closed (interpreter exit)
                pass
        if pending.done is not None:
            pending.done.set()
        if pending.after is not None:
            _run_hooks(None, pending.after)

    def close(self) -> None:
        """The instance is being discarded: its answered events stop being run during calls."""
        self._sched.remove_ring(self)


def _run_hooks(before: Callable[[], None] | None, after: Callable[[], None] | None) -> None:
    """Run an event's hooks; a failing hook is logged, and delivery goes on."""
    for hook in (before, after):
        if hook is not None:
            try:
                hook()
            except Exception:
                logger.exception("error in the hook of an IRQ event")


class _Reply:
    """A reply to the stack that runs once: the handler's answer, or the default."""

    __slots__ = ("_fn", "timer")

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self._fn: Callable[[Any], None] | None = fn
        self.timer: asyncio.TimerHandle | None = None

    def __call__(self, result: Any) -> None:
        fn, self._fn = self._fn, None
        if fn is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        try:
            fn(result)
        except Exception:
            logger.exception("error replying to the stack after an IRQ handler")

    def expire(self, what: str) -> None:
        if self._fn is not None:
            logger.warning("IRQ handler did not answer %s within %g s", what, ANSWER_DEADLINE)
            self(None)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _report_handler_exception(exc: BaseException) -> None:
    try:
        sys.stderr.write("Unhandled exception in IRQ callback handler\n")
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
    except Exception:  # stderr may be gone at exit
        logger.error("unhandled exception in IRQ callback handler", exc_info=exc)


async def wait_answer(future: asyncio.Future[Any], what: str) -> Any:
    """Await a handler's answer with the deadline of SPEC D3; ``None`` (default) on timeout.

    A timer that gives the default answer, rather than ``asyncio.wait_for``, which wraps
    the wait in a task of its own: one read request costs one answer, and it is on the
    path of every read.
    """
    timer = future.get_loop().call_later(ANSWER_DEADLINE, _expire, future, what)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Any], what: str) -> None:
    if not future.done():
        logger.warning("IRQ handler did not answer %s within %g s", what, ANSWER_DEADLINE)
        future.set_result(None)
