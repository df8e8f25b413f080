"""Where mpbluetooth's threads run (``_cpu.py``, docs/design.md "Threads"): the loop thread on
one CPU, a thread that waits for it on that CPU only while it waits, every thread's own
affinity untouched otherwise, and nothing placed with ``MPBLUETOOTH_CPU=any``.

Each case runs in a fresh process: placement is chosen once per process, when the loop
thread starts, and a test must be able to start it with the environment it asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="thread placement needs sched_setaffinity and two CPUs",
)

# Two connected instances; a central that reads the peripheral's value while the program
# records, from every side, the affinity the user could see.
_PROGRAM = textwrap.dedent(
    """
    import json, os, threading, time
    from mpbluetooth import sim
    from mpbluetooth._runtime import runtime
    from mpbluetooth.testing import Recorder
    from mpbluetooth.constants import (
        FLAG_READ, IRQ_GATTC_READ_DONE, IRQ_GATTC_READ_RESULT, IRQ_PERIPHERAL_CONNECT,
        IRQ_CENTRAL_CONNECT,
    )
    from mpbluetooth import UUID

    before = sorted(os.sched_getaffinity(0))
    main_tid = threading.get_native_id()
    link = sim.Link()
    server, client = link.instance("s"), link.instance("c")
    seen = {}

    def in_handler(data):
        seen["handler"] = sorted(os.sched_getaffinity(0))
        seen["handler_thread"] = threading.current_thread().name

    rs, rc = Recorder(), Recorder()
    rc.on[IRQ_GATTC_READ_RESULT] = in_handler
    server.irq(rs)
    client.irq(rc)
    server.active(True)
    client.active(True)
    ((h,),) = server.gatts_register_services(((UUID(0x180F), ((UUID(0x2A19), FLAG_READ),)),))
    server.gatts_write(h, b"ok")
    server.gap_advertise(20000)
    client.gap_connect(*server.config("mac"))
    conn = rc.wait(IRQ_PERIPHERAL_CONNECT)[0]
    rs.wait(IRQ_CENTRAL_CONNECT)
    client.gattc_read(conn, h)
    value = bytes(rc.wait(IRQ_GATTC_READ_RESULT)[2])
    rc.wait(IRQ_GATTC_READ_DONE)

    threads = {t.name: t.native_id for t in threading.enumerate()}
    loop_mask = os.sched_getaffinity(threads["mpbluetooth-loop"])

    def waiting_mask():
        # On the loop thread, while the program waits for this answer. The program narrows
        # its mask as it starts to wait, which a loaded machine may let the loop overtake:
        # look again until it has (bounded), as the wake-up that matters comes after.
        deadline = time.monotonic() + 2.0
        while os.sched_getaffinity(main_tid) != loop_mask and time.monotonic() < deadline:
            time.sleep(0.001)
        return sorted(os.sched_getaffinity(main_tid))

    report = {
        "before": before,
        "after": sorted(os.sched_getaffinity(0)),
        "value": value.decode(),
        "loop": sorted(os.sched_getaffinity(threads["mpbluetooth-loop"])),
        # asked on the loop thread while this thread waits for the answer
        "waiting": runtime().call(waiting_mask),
        **seen,
    }
    client.active(False)
    server.active(False)
    print(json.dumps(report))
    """
)


def _run(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env={**os.environ, "MPBLUETOOTH_SIM_TIMING": "instant", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_loop_thread_on_one_cpu_and_waits_visit_it() -> None:
    report = _run()
    assert report["value"] == "ok"
    loop = report["loop"]
    assert isinstance(loop, list) and len(loop) == 1
    # The program waiting for the loop waits on the loop's CPU ...
    assert report["waiting"] == loop
    # ... and has its own affinity back as soon as the wait ends, as do handlers on the
    # IRQ thread (a process a handler starts inherits the program's mask, not ours).
    assert report["after"] == report["before"]
    assert report["handler_thread"] == "mpbluetooth-irq"
    assert report["handler"] == report["before"]


def test_any_leaves_every_thread_where_the_kernel_puts_it() -> None:
    report = _run(MPBLUETOOTH_CPU="any")
    assert report["value"] == "ok"
    assert report["loop"] == report["before"]
    assert report["waiting"] == report["before"]
    assert report["handler"] == report["before"]


def test_a_narrowed_program_is_not_widened() -> None:
    """A program already held on one CPU keeps it; the loop thread starts there too."""
    cpu = min(os.sched_getaffinity(0))
    program = f"import os; os.sched_setaffinity(0, {{{cpu}}})\n" + _PROGRAM
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "MPBLUETOOTH_SIM_TIMING": "instant"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["before"] == report["after"] == report["waiting"] == [cpu]
    assert report["loop"] == [cpu]
