"""IRQ delivery: the bounded ring, the dispatcher thread, handler errors and answers."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

import mpbluetooth
from mpbluetooth import _events, sim
from mpbluetooth.ble import BLE
from mpbluetooth.constants import (
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTS_READ_REQUEST,
    IRQ_PERIPHERAL_CONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder, wait_until

from .conftest import connect

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
    scanner.config(rxbuf=64)  # room for two 24-byte scan results
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
    scanner.config(rxbuf=70)  # three 22-byte scan results fill it: no room for a connect
    scanner.active(True)
    scanner.gap_advertise(20000, ADV)
    scanner.gap_scan(0, 30000, 30000)
    wait_until(lambda: mpbluetooth.irq_stats(scanner).queued == 3, what="a full ring")
    central.gap_connect(*scanner.config("mac"))
    rc.wait(IRQ_PERIPHERAL_CONNECT)
    gate.set()
    # The connection event found room by evicting old scan results; it was not dropped.
    assert recorder.wait(IRQ_CENTRAL_CONNECT)[1:] == central.config("mac")
    scanner.gap_scan(None)


def test_payload_truncated_to_the_per_event_cap(link: sim.Link) -> None:
    assert _events.data_cap(128) == 64 and _events.data_cap(2000) == 1936
    assert _events.data_cap(16384) == 16320


def test_handler_that_raises_is_reported_and_uninstalled(
    pair: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a, ra, b, rb = pair
    calls: list[int] = []

    def bad(event: int, data: tuple[Any, ...]) -> None:
        calls.append(event)
        raise ZeroDivisionError("boom in handler")

    b.irq(bad)
    a.gap_advertise(20000, ADV)
    b.gap_scan(0, 30000, 30000)
    wait_until(lambda: b._ring.handler is None, what="the handler to be uninstalled")
    # More adverts reach the stack, but the uninstalled handler is never called again.
    reports = []
    device = b._stack.device
    assert device is not None
    device.host.on("advertising_report", reports.append)
    wait_until(lambda: len(reports) >= 4, what="later adverts")
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


# --- events whose answer goes back to the stack (SPEC D3), on the ring itself ------------
@pytest.fixture
async def ring() -> Any:
    loop = asyncio.get_running_loop()
    the_ring = _events.EventRing("test", lambda: loop)
    yield the_ring
    the_ring.close()


async def test_answer_comes_back_to_the_stack(ring: _events.EventRing) -> None:
    ring.handler = lambda event, data: 0x05 if event == IRQ_GATTS_READ_REQUEST else None
    answer = await _events.wait_answer(ring.ask(IRQ_GATTS_READ_REQUEST, 1, 20), "read")
    assert answer == 0x05


async def test_no_handler_or_raising_handler_gives_the_default(
    ring: _events.EventRing, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _events.wait_answer(ring.ask(IRQ_GATTS_READ_REQUEST, 1, 20), "read") is None

    def bad(event: int, data: tuple[Any, ...]) -> int:
        raise RuntimeError("no answer")

    ring.handler = bad
    assert await _events.wait_answer(ring.ask(IRQ_GATTS_READ_REQUEST, 1, 20), "read") is None
    assert ring.handler is None
    assert "Unhandled exception in IRQ callback handler" in capsys.readouterr().err


async def test_answer_deadline(ring: _events.EventRing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_events, "ANSWER_DEADLINE", 0.05)
    stop = threading.Event()
    ring.handler = lambda event, data: stop.wait(5)
    assert await _events.wait_answer(ring.ask(IRQ_GATTS_READ_REQUEST, 1, 20), "read") is None
    stop.set()


async def test_answered_events_are_never_dropped(ring: _events.EventRing) -> None:
    ring.set_capacity(16)
    ring.handler = lambda event, data: 7
    answers = [ring.ask(IRQ_GATTS_READ_REQUEST, 1, h) for h in range(50)]
    assert [await _events.wait_answer(f, "read") for f in answers] == [7] * 50
    assert ring.stats().dropped == 0
