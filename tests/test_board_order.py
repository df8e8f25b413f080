"""What a program sees happen, and in which order, as on a NimBLE board (SPEC D2).

Under MicroPython's runtime (``mpbluetooth-python``) IRQ handlers run on the main thread
between two bytecodes of the program, or while it waits; these tests run such programs in
a subprocess, with two instances on one simulated link, and check their transcript.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from mpbluetooth.constants import (
    IRQ_GATTC_READ_DONE,
    IRQ_PERIPHERAL_DISCONNECT,
)
from mpbluetooth.testing import Recorder

from .gatt_setup import make_gatt

#: Bounds every program below: it prints what it saw and exits well before this.
RUN_TIMEOUT = 60

#: Two instances on one link, both handlers recording to ``log`` (and printing).
PRELUDE = """
import bluetooth, machine, threading, time
from mpbluetooth import sim

link = sim.Link()
a = link.instance("a")
b = link.instance("b")
log = []

def recorder(name, answer=None):
    def irq(event, data):
        log.append((name, event, threading.current_thread() is threading.main_thread()))
        if answer is not None:
            return answer(event, data)
    return irq

def wait_for(name, event, timeout_ms=5000):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
        if any(n == name and e == event for n, e, _ in log):
            return
        machine.idle()
    raise SystemExit("no event %d on %s" % (event, name))

"""


def run_program(
    body: str, tmp_path: Path, timing: str = "instant"
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` after ``PRELUDE`` under ``mpbluetooth-python``."""
    script = tmp_path / "program.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    return run_script(script, MPBLUETOOTH_LOG="warning", MPBLUETOOTH_SIM_TIMING=timing)


def run_script(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a file under ``mpbluetooth-python`` with ``env`` added (and no transport
    inherited unless ``env`` names one)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MPBLUETOOTH_TRANSPORT", "MPBLUETOOTH_SIM_ADDRESS")
    }
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", str(script)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**environment, **env},
        cwd=script.parent,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_handlers_run_on_the_main_thread_and_read_done_before_the_next_statement(
    tmp_path: Path,
) -> None:
    result = run_program(
        """
        order = []
        def central(event, data):
            if event == 7:
                CONN.append(data[0])
            if event == 15:
                order.append("READ_RESULT")
            if event == 16:
                order.append("READ_DONE")
        CONN = []
        a.irq(recorder("a"))
        b.irq(recorder("b", lambda e, d: central(e, d)))
        a.active(True)
        b.active(True)
        ((handle,),) = a.gatts_register_services(
            ((bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_READ),)),)
        )
        a.gatts_write(handle, b"\\x64")
        a.gap_advertise(20000, b"\\x02\\x01\\x06")
        b.gap_connect(*a.config("mac"))
        wait_for("b", 7)
        for _ in range(20):
            before = len(order)
            b.gattc_read(CONN[0], handle)
            while len(order) == before:
                machine.idle()
            order.append("next statement")
        print(" ".join(order[:3]))
        print("all main thread:", all(main for _, _, main in log))
        print("ordered:", order == ["READ_RESULT", "READ_DONE", "next statement"] * 20)
        """,
        tmp_path,
    )
    out = lines(result)
    assert out[0] == "READ_RESULT READ_DONE next statement"
    assert "all main thread: True" in out
    assert "ordered: True" in out


def test_a_computing_program_is_interrupted_between_bytecodes(tmp_path: Path) -> None:
    result = run_program(
        """
        seen = []
        b.irq(lambda event, data: seen.append(event) if event == 6 else None)
        b.active(True)
        b.gap_scan(50, 30000, 30000)
        spins = 0
        t0 = time.ticks_ms()
        while not seen and time.ticks_diff(time.ticks_ms(), t0) < 5000:
            spins += 1  # never idles: only an interrupt can run the handler
        print("scan done while computing:", seen == [6], spins > 0)
        """,
        tmp_path,
    )
    assert lines(result) == ["scan done while computing: True True"]


def test_a_handler_printing_while_the_program_prints_never_fails(tmp_path: Path) -> None:
    result = run_program(
        """
        count = [0]
        def irq(event, data):
            if event == 5:
                count[0] += 1
                print("handler line", count[0])
        b.irq(irq)
        a.active(True)
        b.active(True)
        a.gap_advertise(20000, b"\\x02\\x01\\x06", connectable=False)
        b.gap_scan(0, 20000, 20000)
        t0 = time.ticks_ms()
        n = 0
        while time.ticks_diff(time.ticks_ms(), t0) < 1500 or count[0] < 20:
            n += 1
            print("program line", n)
            if time.ticks_diff(time.ticks_ms(), t0) > 20000:
                break
        b.gap_scan(None)
        print("handled", count[0] >= 20)
        """,
        tmp_path,
    )
    assert "reentrant" not in result.stderr
    assert "Traceback" not in result.stderr
    out = lines(result)
    assert out[-1] == "handled True"
    assert any(line.startswith("handler line") for line in out)
    assert all(line.startswith(("program line", "handler line", "handled")) for line in out)


def test_delivery_on_the_dispatcher_thread_when_asked(tmp_path: Path) -> None:
    script = tmp_path / "thread.py"
    script.write_text(
        "import bluetooth, threading, machine\n"
        "ble = bluetooth.BLE()\n"
        "where = []\n"
        "ble.irq(lambda e, d: where.append(threading.current_thread().name) if e == 6 else None)\n"
        "ble.active(True)\n"
        "ble.gap_scan(20)\n"
        "while not where:\n"
        "    machine.idle()\n"
        "print(where[0] != 'MainThread')\n"
    )
    assert lines(run_script(script, MPBLUETOOTH_DELIVERY="thread")) == ["True"]


def test_a_procedure_cut_by_the_link_reports_before_the_disconnect(link: Any) -> None:
    """NimBLE fails a link's GATT procedures (status 7) before the DISCONNECT event."""
    gatt = make_gatt(link)
    answering = threading.Event()
    released = threading.Event()

    def hold(conn: int, handle: int) -> None:
        answering.set()
        released.wait(5)

    gatt.rs.on_read = hold
    gatt.client.gattc_read(gatt.c_conn, gatt.battery)
    assert answering.wait(5)
    try:
        assert gatt.client.gap_disconnect(gatt.c_conn) is True
        gatt.rc.wait(IRQ_PERIPHERAL_DISCONNECT)
    finally:
        released.set()
    codes = [code for code, _ in gatt.rc.events]
    done = codes.index(IRQ_GATTC_READ_DONE)
    assert gatt.rc.of(IRQ_GATTC_READ_DONE)[-1][-1] == 7
    assert done < codes.index(IRQ_PERIPHERAL_DISCONNECT)


def test_gap_disconnect_twice_is_ealready_then_false(link: Any) -> None:
    gatt = make_gatt(link)
    rec: Recorder = gatt.rc
    assert gatt.client.gap_disconnect(gatt.c_conn) is True
    rec.wait(IRQ_PERIPHERAL_DISCONNECT)
    assert gatt.client.gap_disconnect(gatt.c_conn) is False


def test_identity_address_survives_a_restart_on_a_hub(hub_spec: str, tmp_path: Path) -> None:
    """A board keeps its address across active(False)/active(True) (SPEC D6): a process
    joined to a hub asks for the address it was first given."""
    script = tmp_path / "restart.py"
    script.write_text(
        "import bluetooth\n"
        "ble = bluetooth.BLE()\n"
        "seen = []\n"
        "for _ in range(3):\n"
        "    ble.active(True)\n"
        "    seen.append(ble.config('mac'))\n"
        "    ble.active(False)\n"
        "print(len(set(seen)), seen[0][0])\n"
    )
    assert lines(run_script(script, MPBLUETOOTH_TRANSPORT=hub_spec)) == ["1 0"]


def test_scheduled_calls_and_disable_irq_on_the_main_thread(tmp_path: Path) -> None:
    result = run_program(
        """
        import micropython
        ran = []
        def later(arg):
            ran.append((arg, threading.current_thread() is threading.main_thread()))
        seen = []
        b.irq(lambda event, data: seen.append(event) if event == 6 else None)
        b.active(True)
        state = machine.disable_irq()
        micropython.schedule(later, 1)
        b.gap_scan(20, 30000, 30000)
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < 300:
            machine.idle()
        held = (list(ran), list(seen))
        machine.enable_irq(state)
        print("held while disabled:", held == ([], []))
        print("then run on the main thread:", ran == [(1, True)], seen == [6])
        """,
        tmp_path,
    )
    assert lines(result) == [
        "held while disabled: True",
        "then run on the main thread: True True",
    ]


def test_handlers_run_while_the_program_waits_for_a_line_on_stdin(tmp_path: Path) -> None:
    """A board's stdin loop runs the scheduler while it waits for a character: a program
    blocked in ``sys.stdin.readline()`` (as MicroPython's multitest helper is, waiting for
    the other instance) still has its handlers run, so a peer waiting on one of them (a
    read request's answer) is not held up until the line arrives."""
    script = tmp_path / "program.py"
    script.write_text(
        textwrap.dedent(
            """
            import micropython, sys, threading
            def handler(_):
                print("handled while waiting")
            threading.Timer(0.2, micropython.schedule, (handler, None)).start()
            print("line:", sys.stdin.readline().strip())
            """
        )
    )
    program = subprocess.Popen(
        [sys.executable, "-m", "mpbluetooth.cli.python", str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert program.stdout is not None and program.stdin is not None
        first = threading.Thread(target=lambda: said.append(program.stdout.readline()))
        said: list[str] = []
        first.start()
        first.join(RUN_TIMEOUT)
        assert said == ["handled while waiting\n"]  # before any line was written
        program.stdin.write("go\n")
        program.stdin.close()
        assert program.stdout.read() == "line: go\n"
        assert program.wait(RUN_TIMEOUT) == 0
    finally:
        program.kill()
        program.wait()


@pytest.mark.parametrize("timing", ["air", "instant"])
def test_no_handler_between_a_call_and_the_statement_that_uses_it(
    tmp_path: Path, timing: str
) -> None:
    """``gap_disconnect`` returns when the controller accepted the command, as NimBLE's
    does. On air the termination then takes a connection event; on a fast controller
    (instant timing, as RootCanal) the disconnection's event arrives while the call still
    waits, and MicroPython's scheduler runs it only at the next check point. Either way
    the line that prints the call's result comes first (MicroPython's own
    ``ble_gap_connect`` test expects exactly this)."""
    result = run_program(
        """
        CONN = []
        def central(event, data):
            if event == 7:
                CONN.append(data[0])
            elif event == 8:
                print("_IRQ_PERIPHERAL_DISCONNECT")
        a.irq(recorder("a"))
        b.irq(recorder("b", central))
        a.active(True)
        b.active(True)
        for _ in range(5):
            a.gap_advertise(20000, b"\\x02\\x01\\x06")
            b.gap_connect(*a.config("mac"))
            wait_for("b", 7)
            log.clear()
            print("gap_disconnect:", b.gap_disconnect(CONN.pop()))
            wait_for("b", 8)
        """,
        tmp_path,
        timing=timing,
    )
    assert lines(result) == ["gap_disconnect: True", "_IRQ_PERIPHERAL_DISCONNECT"] * 5


def test_scheduled_work_waits_for_the_programs_next_branch(tmp_path: Path) -> None:
    """A callback scheduled by the program runs at its next branch (``py/vm.c`` checks
    for pending work after the jump opcodes only), not at its next instruction."""
    result = run_program(
        """
        import micropython
        order = []
        micropython.schedule(order.append, "callback")
        order.append(1)
        order.append(2)
        if order:
            order.append(3)
        print(order)
        """,
        tmp_path,
    )
    assert lines(result) == ["[1, 2, 'callback', 3]"]


@pytest.mark.parametrize("delivery", ["main", "thread"])
def test_disable_irq_holds_back_handlers_and_scheduled_calls(tmp_path: Path, delivery: str) -> None:
    """``machine.disable_irq()`` holds back BLE handlers and scheduled callbacks wherever
    they run: on the main thread, and on the fallback thread (``MPBLUETOOTH_DELIVERY=
    thread``, the only way on a platform without SIGURG)."""
    script = tmp_path / "program.py"
    script.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            import micropython
            ran, seen = [], []
            b.irq(lambda event, data: seen.append(event) if event == 5 else None)
            b.active(True)
            a.active(True)
            a.gap_advertise(20000, b"\\x02\\x01\\x06")
            state = machine.disable_irq()
            micropython.schedule(ran.append, 1)
            b.gap_scan(300, 30000, 30000)
            t0 = time.ticks_ms()
            while time.ticks_diff(time.ticks_ms(), t0) < 400:
                machine.idle()
            held = (list(ran), list(seen))
            machine.enable_irq(state)
            t0 = time.ticks_ms()
            while not (ran and seen) and time.ticks_diff(time.ticks_ms(), t0) < 5000:
                machine.idle()
            print("held while disabled:", held == ([], []))
            print("run once enabled:", ran == [1], len(seen) > 0)
            """
        )
    )
    result = run_script(
        script,
        MPBLUETOOTH_LOG="warning",
        MPBLUETOOTH_SIM_TIMING="instant",
        MPBLUETOOTH_DELIVERY=delivery,
    )
    assert lines(result) == ["held while disabled: True", "run once enabled: True True"]


@pytest.mark.parametrize("delivery", ["main", "thread"])
def test_a_scheduled_callback_never_overlaps_a_handler(tmp_path: Path, delivery: str) -> None:
    """BLE handlers and ``micropython.schedule`` callbacks share one IRQ context: while
    a scan floods the handler and a thread schedules callbacks, never two run at once."""
    script = tmp_path / "program.py"
    script.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            import micropython
            inside = [0]
            most = [0]
            counts = {"handler": 0, "callback": 0}
            def work(kind):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                total = 0
                for i in range(2000):  # long enough for another thread to get the GIL
                    total += i
                counts[kind] += 1
                inside[0] -= 1
            b.irq(lambda event, data: work("handler") if event == 5 else None)
            b.active(True)
            a.active(True)
            a.gap_advertise(20000, b"\\x02\\x01\\x06")
            def scheduler_thread():
                for _ in range(200):
                    while True:
                        try:
                            micropython.schedule(work, "callback")
                            break
                        except RuntimeError:
                            time.sleep(0.001)
                    time.sleep(0.001)
            worker = threading.Thread(target=scheduler_thread)
            worker.start()
            b.gap_scan(0, 30000, 30000)
            t0 = time.ticks_ms()
            while (worker.is_alive() or counts["callback"] < 200 or counts["handler"] <= 10) and (
                time.ticks_diff(time.ticks_ms(), t0) < 10000
            ):
                machine.idle()
            b.gap_scan(None)
            print("most at once:", most[0])
            print("both ran:", counts["handler"] > 10, counts["callback"] == 200)
            """
        )
    )
    result = run_script(
        script,
        MPBLUETOOTH_LOG="warning",
        MPBLUETOOTH_SIM_TIMING="instant",
        MPBLUETOOTH_DELIVERY=delivery,
    )
    assert lines(result) == ["most at once: 1", "both ran: True True"]


@pytest.mark.parametrize("timing", ["air", "instant"])
def test_after_a_connect_event_the_program_goes_on_once_the_features_request_is_acknowledged(
    tmp_path: Path, timing: str
) -> None:
    """NimBLE sends LE Read Remote Features after the connect event's callback, on every
    new link, and the program's next statement runs only once the controller answered it
    with a Command Status (the unix port waits inside the task that ran the handler). Each
    side's program records, at its first statement after seeing the connect event, whether
    its own host had that Command Status by then."""
    result = run_program(
        """
        from mpbluetooth.testing.lowlevel import bumble_device, on_loop

        acknowledged = {"a": 0, "b": 0}

        def watch(name, ble):
            host = bumble_device(ble).host
            original = host.on_hci_command_status_event

            def on_status(event):
                if event.command_opcode == 0x2016:  # HCI_LE_Read_Remote_Features
                    acknowledged[name] += 1
                return original(event)

            host.on_hci_command_status_event = on_status

        a.irq(recorder("a"))
        b.irq(recorder("b"))
        a.active(True)
        b.active(True)
        on_loop(lambda: (watch("a", a), watch("b", b)))
        b.gap_advertise(20000, b"\\x02\\x01\\x06")
        a.gap_connect(*b.config("mac"))
        wait_for("a", 7)
        print("a acknowledged", acknowledged["a"])
        wait_for("b", 1)
        print("b acknowledged", acknowledged["b"])
        """,
        tmp_path,
        timing,
    )
    assert lines(result) == ["a acknowledged 1", "b acknowledged 1"], result.stderr
