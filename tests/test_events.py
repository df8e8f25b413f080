"""IRQ delivery: the bounded ring, the dispatcher thread, handler errors and answers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    GATTS_ERROR_INSUFFICIENT_AUTHENTICATION,
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTS_READ_REQUEST,
    IRQ_MTU_EXCHANGED,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder, wait_until

from .conftest import connect
from .gatt_setup import Gatt, make_gatt

ADV = b"\x02\x01\x06\x05\x09flood"


def flood(link: sim.Link, count: int) -> list[BLE]:
    advertisers = [link.instance(f"adv{i}") for i in range(count)]
    for ble in advertisers:
        ble.active(True)
        ble.gap_advertise(20000, ADV, connectable=False)
    return advertisers


def test_scan_result_tuple_layout(pair: Any) -> None:
    a, ra, b, rb = pair
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    addr_type, addr, adv_type, rssi, adv_data = rb.wait(IRQ_SCAN_RESULT)
    b.gap_scan(None)
    assert (addr_type, addr) == a.config("mac")
    assert adv_type == 0 and type(adv_type) is int and type(rssi) is int
    assert adv_data == ADV


def test_tiny_rxbuf_flood_drops_are_counted_and_later_events_arrive(
    link: sim.Link, caplog: pytest.LogCaptureFixture
) -> None:
    flood(link, 4)
    scanner = link.instance("scanner")
    release = threading.Event()
    seen: list[int] = []

    def handler(event: int, data: tuple[Any, ...]) -> None:
        seen.append(event)
        if event == IRQ_SCAN_RESULT and seen.count(IRQ_SCAN_RESULT) == 1:
            release.wait(10)  # a slow handler: the ring fills behind it

    scanner.irq(handler)
    mpbluetooth.set_rxbuf(64, scanner)  # room for two 24-byte scan results
    scanner.active(True)
    caplog.set_level(logging.INFO, logger="mpbluetooth")
    scanner.gap_scan(0, 30000, 30000)
    wait_until(lambda: mpbluetooth.irq_stats(scanner).dropped >= 20, what="drops")
    stats = mpbluetooth.irq_stats(scanner)
    assert stats.queued_bytes <= 64 and stats.capacity == 64
    # The stack and its loop were never blocked: calls still complete while the ring is full.
    scanner.config(gap_name="still alive")
    # One warning for the burst behind the blocked handler, however many events it lost.
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "ring full" in r.message
    ]
    assert len(warnings) == 1
    release.set()
    scanner.gap_scan(None)
    # Events after the burst are delivered: SCAN_DONE from the stop, after the backlog.
    wait_until(lambda: IRQ_SCAN_DONE in seen, what="SCAN_DONE after the flood")
    assert mpbluetooth.irq_stats(scanner).dropped >= 20


def test_full_ring_evicts_old_scan_results_for_other_events(link: sim.Link) -> None:
    (central,) = flood(link, 1)
    rc = Recorder()
    central.irq(rc)
    scanner = link.instance("scanner")
    gate = threading.Event()
    recorder = Recorder()

    def handler(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_SCAN_RESULT:
            gate.wait(10)
        recorder(event, data)

    scanner.irq(handler)
    mpbluetooth.set_rxbuf(70, scanner)  # three 22-byte scan results fill it: no room for a connect
    scanner.active(True)
    scanner.gap_advertise(20000, ADV)
    scanner.gap_scan(0, 30000, 30000)
    wait_until(lambda: mpbluetooth.irq_stats(scanner).queued == 3, what="a full ring")
    full = mpbluetooth.irq_stats(scanner).queued_bytes
    central.gap_connect(*scanner.config("mac"))
    # Handlers run in one IRQ context per process, held here by the scanner's: the
    # connection shows as a smaller event taking the place of a scan result.
    wait_until(
        lambda: mpbluetooth.irq_stats(scanner).queued_bytes < full,
        what="the connection event queued in place of a scan result",
    )
    gate.set()
    rc.wait(IRQ_PERIPHERAL_CONNECT)
    # The connection event found room by evicting old scan results; it was not dropped.
    assert recorder.wait(IRQ_CENTRAL_CONNECT)[1:] == central.config("mac")
    scanner.gap_scan(None)


def test_payload_truncated_to_the_per_event_cap(link: sim.Link) -> None:
    """A ring of ``rxbuf`` bytes carries at most max(rxbuf/2, rxbuf-64) bytes of data per
    event (SPEC section 5): 64 of a 100-byte notification with rxbuf=128, all of it with
    the default."""
    gatt = make_gatt(link)
    gatt.server.config(mtu=247)
    gatt.client.config(mtu=247)
    gatt.client.gattc_exchange_mtu(gatt.c_conn)
    gatt.rc.wait(IRQ_MTU_EXCHANGED)
    mpbluetooth.set_rxbuf(128, gatt.client)
    gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"y" * 100)
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY)[2] == b"y" * 64
    mpbluetooth.set_rxbuf(2000, gatt.client)
    gatt.server.gatts_notify(gatt.s_conn, gatt.tx, b"z" * 100)
    assert gatt.rc.wait(IRQ_GATTC_NOTIFY, count=2)[2] == b"z" * 100


def test_handler_that_raises_is_reported_and_uninstalled(
    pair: Any, link: sim.Link, capsys: pytest.CaptureFixture[str]
) -> None:
    a, ra, b, rb = pair
    calls: list[int] = []

    def bad(event: int, data: tuple[Any, ...]) -> None:
        calls.append(event)
        raise ZeroDivisionError("boom in handler")

    witness = Recorder()
    c = link.instance("witness")
    c.irq(witness)
    c.active(True)
    b.irq(bad)
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    c.gap_scan(0, 30000, 30000)
    wait_until(lambda: calls, what="the handler to be called")
    # More adverts are on the air (a witness scanning beside b hears them), but the
    # uninstalled handler is never called again.
    witness.wait_count(IRQ_SCAN_RESULT, witness.count(IRQ_SCAN_RESULT) + 4)
    c.gap_scan(None)
    assert calls == [IRQ_SCAN_RESULT]
    err = capsys.readouterr().err
    assert "Unhandled exception in IRQ callback handler" in err
    assert "Traceback" in err and "ZeroDivisionError: boom in handler" in err
    # The stack is unharmed: a new handler gets events again.
    b.irq(rb)
    rb.wait(IRQ_SCAN_RESULT)
    b.gap_scan(None)


def test_handler_may_call_back_into_ble_and_its_events_follow(pair: Any) -> None:
    a, ra, b, rb = pair
    order: list[str] = []
    done = threading.Event()

    def handler(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_SCAN_RESULT and not order:
            order.append("result")
            b.gap_scan(None)  # SCAN_DONE is delivered nested, inside this call
            order.append("stop returned")
            b.gap_connect(data[0], bytes(data[1]))  # waits on the loop: no deadlock
            order.append("handler returns")
        elif event == IRQ_SCAN_DONE:
            order.append("scan done")
        elif event == IRQ_PERIPHERAL_CONNECT:
            order.append("connected")
            done.set()

    b.irq(handler)
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    assert done.wait(5)
    assert order == ["result", "scan done", "stop returned", "handler returns", "connected"]


def test_gap_scan_none_from_main_thread_delivers_scan_done_before_returning(pair: Any) -> None:
    a, ra, b, rb = pair
    b.gap_scan(0, 30000, 30000)
    b.gap_scan(None)
    assert rb.of(IRQ_SCAN_DONE) == [()]
    b.gap_scan(None)  # nothing running: no event (NimBLE)
    assert rb.of(IRQ_SCAN_DONE) == [()]


def test_memoryviews_are_read_only_and_released_after_the_handler(pair: Any) -> None:
    a, ra, b, rb = pair
    kept: list[memoryview] = []
    got = threading.Event()

    def handler(event: int, data: tuple[Any, ...]) -> None:
        if event == IRQ_SCAN_RESULT and not kept:
            addr, adv = data[1], data[4]
            assert isinstance(addr, memoryview) and addr.readonly and len(addr) == 6
            assert isinstance(adv, memoryview) and adv.readonly
            with pytest.raises(TypeError):
                adv[0] = 0
            kept.append(adv)
            kept.append(adv[0:2])  # a slice taken inside the handler is still a copy-safe view
            got.set()

    b.irq(handler)
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    assert got.wait(5)
    b.gap_scan(None)
    with pytest.raises(ValueError, match="released"):
        bytes(kept[0])


def test_events_without_a_handler_are_not_queued(pair: Any) -> None:
    a, ra, b, rb = pair
    b.irq(None)
    a.gap_advertise(20000, ADV)
    b.gap_scan(50, 30000, 30000)
    assert mpbluetooth.irq_stats(b).queued == 0


def test_irq_rejects_non_callables(pair: Any) -> None:
    a, ra, b, rb = pair
    with pytest.raises(ValueError, match="invalid handler"):
        a.irq(5)
    with pytest.raises(TypeError):
        a.irq()  # type: ignore[call-arg]


def test_ints_in_tuples_are_plain_ints(pair: Any) -> None:
    a, ra, b, rb = pair
    b_handle, a_handle = connect(b, rb, a, ra)
    for data in (rb.of(IRQ_PERIPHERAL_CONNECT)[0], ra.of(IRQ_CENTRAL_CONNECT)[0]):
        assert type(data[0]) is int and type(data[1]) is int
    b.gap_disconnect(b_handle)
    rb.wait(IRQ_PERIPHERAL_DISCONNECT)


# --- events whose answer goes back to the stack (SPEC D3) ---------------------------------
#: How long the stack waits for a handler's answer before it goes on with the default, in s.
ANSWER_DEADLINE_S = 5.0
#: The client's READ_DONE status for the server's refusal: NimBLE adds 0x100 to ATT errors.
REFUSED = 0x100 + GATTS_ERROR_INSUFFICIENT_AUTHENTICATION


def read_status(gatt: Gatt, handle: int) -> int:
    """A client read of ``handle``: the status its READ_DONE reports."""
    return int(gatt.read(handle)[2])


def test_answer_comes_back_to_the_stack(link: sim.Link) -> None:
    gatt = make_gatt(link)
    authorized = gatt.secure(3)  # FLAG_READ_AUTHORIZED: the server's handler decides
    gatt.rs.answers[authorized] = GATTS_ERROR_INSUFFICIENT_AUTHENTICATION
    assert read_status(gatt, authorized) == REFUSED
    assert gatt.rs.of(IRQ_GATTS_READ_REQUEST) == [(gatt.s_conn, authorized)]


def test_no_handler_or_raising_handler_gives_the_default(
    link: sim.Link, capsys: pytest.CaptureFixture[str]
) -> None:
    gatt = make_gatt(link)
    authorized = gatt.secure(3)
    gatt.server.irq(None)
    assert read_status(gatt, authorized) == 0

    def bad(event: int, data: tuple[Any, ...]) -> int:
        raise RuntimeError("no answer")

    gatt.server.irq(bad)
    assert read_status(gatt, authorized) == 0
    assert "Unhandled exception in IRQ callback handler" in capsys.readouterr().err
    assert read_status(gatt, authorized) == 0  # the handler is gone: nothing printed
    assert capsys.readouterr().err == ""


def test_answer_deadline(link: sim.Link) -> None:
    gatt = make_gatt(link)
    authorized = gatt.secure(3)
    stop = threading.Event()
    # The handler answers a second after the deadline (it shares the process's one IRQ
    # context with the client's, which sees the outcome once it has returned).
    gatt.rs.on_read = lambda *_: stop.wait(ANSWER_DEADLINE_S + 1)
    gatt.rs.answers[authorized] = GATTS_ERROR_INSUFFICIENT_AUTHENTICATION
    try:
        assert read_status(gatt, authorized) == 0  # the default, not the late answer
    finally:
        stop.set()


def test_write_response_deadline(link: sim.Link) -> None:
    """A GATTS_WRITE handler that does not return holds the Write Response 5 s at most (as
    a read request's answer): the client's WRITE_DONE is queued then, while the handler
    still runs (it shares the one IRQ context, so it is handled after)."""
    gatt = make_gatt(link)
    seen: list[tuple[int, float]] = []
    started = time.monotonic()

    def on_write(*_: Any) -> None:
        deadline = time.monotonic() + ANSWER_DEADLINE_S + 3
        while time.monotonic() < deadline and not mpbluetooth.irq_stats(gatt.client).queued:
            time.sleep(0.01)
        seen.append((mpbluetooth.irq_stats(gatt.client).queued, time.monotonic() - started))

    gatt.rs.on_write = on_write
    assert gatt.write(gatt.control, b"late")[2] == 0
    ((queued, after),) = seen
    assert queued == 1
    assert ANSWER_DEADLINE_S <= after < ANSWER_DEADLINE_S + 3
    assert gatt.server.gatts_read(gatt.control) == b"late"


def test_answered_events_are_never_dropped(link: sim.Link) -> None:
    """A ring too small for a scan flood drops scan results, never a question the stack
    waits on: every read request is answered by the handler."""
    gatt = make_gatt(link)
    authorized = gatt.secure(3)
    gatt.rs.answers[authorized] = GATTS_ERROR_INSUFFICIENT_AUTHENTICATION
    mpbluetooth.set_rxbuf(64, gatt.server)

    def dropped() -> int:
        return mpbluetooth.irq_stats(gatt.server).dropped

    # While ``full`` is set the scan handler returns only once another event was dropped,
    # so the ring stays full, under any CPU load, until the read request has reached the
    # handler (a fixed delay filled it only on a fast enough machine). Then the flood
    # drains, and every instance's events get their turn in the one IRQ context.
    full = threading.Event()

    def behind_the_flood(data: Any) -> None:
        at_entry = dropped()
        deadline = time.monotonic() + 2.0
        while full.is_set() and dropped() == at_entry and time.monotonic() < deadline:
            time.sleep(0.001)

    gatt.rs.on[IRQ_SCAN_RESULT] = behind_the_flood
    gatt.rs.on_read = lambda *_: full.clear()
    flood(link, 4)
    gatt.server.gap_scan(0, 30000, 30000)

    def overflowed_after(count: int) -> Callable[[], bool]:
        return lambda: dropped() > count

    statuses = []
    for _ in range(20):
        full.set()
        wait_until(overflowed_after(dropped()), what="a full ring")  # the read meets it
        statuses.append(read_status(gatt, authorized))
    gatt.server.gap_scan(None)
    assert statuses == [REFUSED] * 20
