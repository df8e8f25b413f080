"""MicroPython's runtime shims: ticks, schedule, machine, asyncio additions, str as a buffer.

The public shim modules (``micropython``, ``machine``, ``strbuf``) are tested directly, so
this process's ``sys.modules`` is not touched; what ``install()`` adds to ``time`` and
``asyncio`` is tested as a program sees it, under ``mpbluetooth-python`` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import pytest

from mpbluetooth.compat import machine, micropython, strbuf

WAIT_S = 5.0
#: How many callbacks ``micropython.schedule`` holds before "schedule queue full".
SCHEDULE_DEPTH = 32
REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def _sync_with_scheduler() -> None:
    """Wait until everything scheduled before this call has run."""
    done = threading.Event()
    micropython.schedule(lambda _: done.set(), None)
    assert done.wait(WAIT_S), "scheduler thread did not drain"


# --- time -------------------------------------------------------------------------------


def _micropython(code: str) -> None:
    """Run ``code`` as a MicroPython program (``mpbluetooth-python -c``); it must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}
    done = subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_ticks_add_and_diff_wrap_around() -> None:
    _micropython("""
        import time
        top = time.ticks_add(0, -1)
        assert top == (1 << 30) - 1, top  # MicroPython's ticks period is 2**30
        assert time.ticks_diff(top, 0) == -1 and time.ticks_diff(0, top) == 1
        assert time.ticks_add(top, 1) == 0
        assert time.ticks_diff(time.ticks_add(top - 5, 100), top - 5) == 100
        assert time.ticks_diff(1 << 29, 0) == -(1 << 29)  # the signed range's edge
        assert time.ticks_diff((1 << 29) - 1, 0) == (1 << 29) - 1
        for delta in (1 << 29, -(1 << 29)):  # deltas ticks_diff could not recover
            try:
                time.ticks_add(0, delta)
            except OverflowError as exc:
                assert "ticks interval overflow" in str(exc)
            else:
                raise AssertionError(delta)
        for ticks in (time.ticks_ms, time.ticks_us, time.ticks_cpu):
            assert 0 <= ticks() <= top
        start = time.ticks_ms()
        time.sleep_ms(20)
        assert time.ticks_diff(time.ticks_ms(), start) >= 19
        time.sleep_ms(-5)  # MicroPython returns at once; CPython's sleep would raise
        time.sleep_us(-5)
        time.sleep_us(100)
        assert time.sleep is not time.sleep_ms  # added to the real module, nothing replaced
    """)


# --- micropython ------------------------------------------------------------------------


def test_const_and_no_op_decorators() -> None:
    assert micropython.const(0x180D) == 0x180D

    def f() -> int:
        return 1

    assert micropython.native(f) is f and micropython.viper(f) is f
    assert micropython.asm_thumb(f) is f
    micropython.alloc_emergency_exception_buf(100)


def test_schedule_runs_serially_off_the_calling_thread() -> None:
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def record(n: int) -> None:
        seen.append((n, threading.current_thread().name))
        if n == 4:
            done.set()

    for n in range(5):
        micropython.schedule(record, n)
    assert done.wait(WAIT_S)
    assert [n for n, _ in seen] == list(range(5))
    assert {name for _, name in seen} == {"mpbluetooth-irq"}  # the one fallback IRQ context


def test_schedule_queue_full() -> None:
    started, release = threading.Event(), threading.Event()

    def block(_: object) -> None:
        started.set()
        release.wait(WAIT_S)

    drained = threading.Event()
    micropython.schedule(block, None)
    assert started.wait(WAIT_S)
    try:
        for _ in range(SCHEDULE_DEPTH - 1):
            micropython.schedule(lambda _: None, None)
        micropython.schedule(lambda _: drained.set(), None)
        with pytest.raises(RuntimeError, match="schedule queue full"):
            micropython.schedule(lambda _: None, None)
    finally:
        release.set()
    assert drained.wait(WAIT_S)


def test_schedule_prints_exceptions_and_carries_on(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(_: object) -> None:
        raise ZeroDivisionError("scheduled failure")

    micropython.schedule(fail, None)
    _sync_with_scheduler()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ZeroDivisionError: scheduled failure" in err


def test_memory_and_compiler_controls(capsys: pytest.CaptureFixture[str]) -> None:
    micropython.heap_lock()
    micropython.heap_lock()
    assert micropython.heap_locked() == 2
    assert micropython.heap_unlock() == 1
    assert micropython.heap_unlock() == 0
    assert micropython.heap_unlock() == 0
    level = micropython.opt_level()
    assert micropython.opt_level(2) is None and micropython.opt_level() == 2
    micropython.opt_level(level)
    assert micropython.stack_use() > 0
    micropython.kbd_intr(-1)
    micropython.kbd_intr(3)
    micropython.mem_info()
    micropython.mem_info(1)
    micropython.qstr_info()
    assert "GC:" in capsys.readouterr().out


# --- machine ----------------------------------------------------------------------------


def test_idle_lets_other_threads_run() -> None:
    progressed = threading.Event()
    threading.Thread(target=progressed.set).start()
    deadline = time.monotonic() + WAIT_S
    while not progressed.is_set() and time.monotonic() < deadline:
        machine.idle()
    assert progressed.is_set()


def test_unique_id_is_stable_bytes() -> None:
    uid = machine.unique_id()
    assert isinstance(uid, bytes) and len(uid) == 8
    assert machine.unique_id() == uid
    other = _python("from mpbluetooth.compat import machine; print(machine.unique_id().hex())")
    assert other.stdout.strip() == uid.hex(), other.stderr


def test_resets_end_the_program_and_misc() -> None:
    with pytest.raises(SystemExit) as exited:
        machine.reset()
    assert exited.value.code == machine.RESET_EXIT_STATUS == 0
    with pytest.raises(SystemExit):
        machine.soft_reset()
    with pytest.raises(SystemExit):
        machine.deepsleep(1)
    machine.lightsleep(1)
    assert machine.reset_cause() == machine.PWRON_RESET
    assert (machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET) == (1, 2, 3)
    assert (machine.DEEPSLEEP_RESET, machine.SOFT_RESET) == (4, 5)
    hz = machine.freq()
    assert isinstance(hz, int) and hz > 0
    machine.freq(80_000_000)
    assert machine.freq() == 80_000_000
    machine.freq(hz)


def test_reset_from_another_thread_exits_the_process() -> None:
    result = _python(
        """
        import threading
        from mpbluetooth.compat import machine
        print("before", flush=False)
        threading.Thread(target=machine.reset).start()
        threading.Event().wait(30)
        print("not reached")
        """
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["before"]


def test_periodic_and_one_shot_timers() -> None:
    ticks: list[machine.Timer] = []
    three = threading.Event()
    shots: list[int] = []
    shot = threading.Event()

    def tick(timer: machine.Timer) -> None:
        ticks.append(timer)
        if len(ticks) == 3:
            three.set()

    periodic = machine.Timer(-1, mode=machine.Timer.PERIODIC, period=10, callback=tick)
    one_shot = machine.Timer(-1)

    def fire_once(timer: machine.Timer) -> None:
        shots.append(1)
        shot.set()

    one_shot.init(mode=machine.Timer.ONE_SHOT, freq=200, callback=fire_once)
    try:
        assert three.wait(WAIT_S) and shot.wait(WAIT_S)
    finally:
        periodic.deinit()
        one_shot.deinit()
    _sync_with_scheduler()
    assert all(t is periodic for t in ticks)
    assert shots == [1]
    count = len(ticks)
    _sync_with_scheduler()
    assert len(ticks) == count
    assert "deinit" in repr(periodic)
    with pytest.raises(ValueError):
        machine.Timer(0).init(mode=machine.Timer.PERIODIC)


def test_disable_irq_holds_back_scheduled_callbacks() -> None:
    ran = threading.Event()
    state = machine.disable_irq()
    try:
        micropython.schedule(lambda _: ran.set(), None)
        assert not ran.wait(0.1)
    finally:
        machine.enable_irq(state)
    assert ran.wait(WAIT_S)


# --- asyncio ----------------------------------------------------------------------------


def test_thread_safe_flag_and_the_ms_helpers() -> None:
    _micropython("""
        import asyncio, threading

        async def main():
            # Set before the wait: the wait returns at once and clears the flag.
            flag = asyncio.ThreadSafeFlag()
            setter = threading.Thread(target=flag.set)
            setter.start()
            setter.join(5)
            await asyncio.wait_for(flag.wait(), 5)
            try:
                await asyncio.wait_for_ms(flag.wait(), 20)
                raise AssertionError("the flag stayed set")
            except asyncio.TimeoutError:
                pass
            # Set from another thread while a task waits.
            flag = asyncio.ThreadSafeFlag()
            waiter = asyncio.create_task(flag.wait())
            asyncio.get_running_loop().call_soon(
                lambda: threading.Thread(target=flag.set).start())
            await asyncio.wait_for(waiter, 5)
            # clear() cancels a set nobody waited for.
            flag = asyncio.ThreadSafeFlag()
            flag.set()
            flag.clear()
            try:
                await asyncio.wait_for_ms(flag.wait(), 20)
                raise AssertionError("a cleared flag woke a waiter")
            except asyncio.TimeoutError:
                pass
            assert await asyncio.sleep_ms(1, "done") == "done"
            assert await asyncio.sleep_ms(-1, 0) == 0
            assert await asyncio.wait_for_ms(asyncio.sleep_ms(1, 7), 5_000) == 7
            try:
                await asyncio.wait_for_ms(asyncio.sleep(10), 10)
                raise AssertionError("no timeout")
            except asyncio.TimeoutError:
                pass
            print("ok")

        asyncio.run(main())
    """)


def test_create_task_before_a_loop_runs_is_deferred_to_asyncio_run() -> None:
    result = _python(
        """
        import asyncio
        from mpbluetooth.compat import install
        install()
        out = []
        async def early():
            out.append("early")
        task = asyncio.create_task(early())
        async def main():
            await task
            out.append("main")
            return 5
        assert asyncio.run(main()) == 5
        assert asyncio.run(asyncio.sleep(0, 6)) == 6  # a plain run afterwards
        print(out, asyncio.sleep_ms, asyncio.ThreadSafeFlag.__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("['early', 'main'] <function sleep_ms")


# --- install() --------------------------------------------------------------------------


def test_importing_mpbluetooth_installs_nothing_and_install_does() -> None:
    result = _python(
        """
        import sys, time, asyncio
        import mpbluetooth
        assert "mpbluetooth.compat" not in sys.modules
        assert not {"bluetooth", "ubluetooth", "micropython", "machine"} & set(sys.modules)
        assert not hasattr(time, "ticks_ms") and not hasattr(asyncio, "ThreadSafeFlag")
        from mpbluetooth.compat import install
        install()
        install(str_buffer=False)
        import bluetooth, ubluetooth, micropython, machine, utime, uasyncio, ustruct
        import struct
        assert bluetooth is ubluetooth and utime is time and uasyncio is asyncio
        assert ustruct is struct
        assert bluetooth.BLE is mpbluetooth.BLE and bluetooth.UUID is mpbluetooth.UUID
        print(sorted(n for n in dir(bluetooth) if not n.startswith("_")))
        print(bluetooth.FLAG_READ, bluetooth.FLAG_WRITE, bluetooth.FLAG_NOTIFY,
              bluetooth.FLAG_INDICATE, bluetooth.FLAG_WRITE_NO_RESPONSE)
        print(time.ticks_diff(time.ticks_add(0, -1), 0), micropython.const(1))
        """
    )
    assert result.returncode == 0, result.stderr
    names, flags, ticks = result.stdout.splitlines()
    assert names == str(sorted(["BLE", "UUID", "FLAG_READ", "FLAG_WRITE", "FLAG_NOTIFY",
                                "FLAG_INDICATE", "FLAG_WRITE_NO_RESPONSE"]))  # fmt: skip
    assert flags == "2 8 16 32 4"
    assert ticks == "-1 1"


# --- str as a buffer: helpers -----------------------------------------------------------


def test_helpers_mix_str_and_buffers_as_utf8() -> None:
    assert strbuf.add(b"\x04\x09", "abc") == b"\x04\x09abc"
    assert strbuf.add("é", b"!") == "é".encode() + b"!"
    assert strbuf.add(bytearray(b"x"), "y") == bytearray(b"xy")
    assert strbuf.add("x", memoryview(b"y")) == b"xy"
    payload = bytearray(b"a")
    assert strbuf.iadd(payload, "bc") is payload and payload == bytearray(b"abc")
    assert strbuf.iadd(b"a", "b") == b"ab"
    assert strbuf.call(bytes, "hi") == b"hi"
    assert strbuf.call(bytearray, "hi") == bytearray(b"hi")
    view = strbuf.call(memoryview, "hi")
    assert bytes(view) == b"hi" and view.readonly


def test_helpers_keep_cpython_semantics_otherwise() -> None:
    assert strbuf.add(1, 2) == 3 and strbuf.add("a", "b") == "ab"
    assert strbuf.add([1], [2]) == [1, 2]
    items = [1]
    assert strbuf.iadd(items, "ab") is items and items == [1, "a", "b"]
    assert strbuf.call(bytes, 3) == b"\x00\x00\x00"
    for bad in ((1, "a"), (b"a", 1), (memoryview(b"a"), "b")):
        with pytest.raises(TypeError):
            strbuf.add(*bad)
    with pytest.raises(TypeError):
        strbuf.call(len, 5)


def test_hint_names_the_micropython_idiom() -> None:
    with pytest.raises(TypeError) as caught:
        _ = b"a" + "b"  # type: ignore[operator]
    strbuf.add_hint(caught.value, transform_on=False)
    strbuf.add_hint(caught.value, transform_on=False)
    assert caught.value.__notes__ == [strbuf.HINT_OFF]
    assert "MicroPython treats str as a buffer" in strbuf.HINT_OFF
    with pytest.raises(TypeError) as unrelated:
        _ = 1 + "a"  # type: ignore[operator]
    strbuf.add_hint(unrelated.value, transform_on=False)
    assert not hasattr(unrelated.value, "__notes__")
    with pytest.raises(TypeError) as on:
        memoryview("x")  # type: ignore[arg-type]
    strbuf.add_hint(on.value, transform_on=True)
    assert on.value.__notes__ == [strbuf.HINT_ON]


# --- str as a buffer: the transform -----------------------------------------------------


def _exec(source: str, filename: str = "<sample>") -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "sample"}
    exec(strbuf.compile_source(textwrap.dedent(source), filename), namespace)
    return namespace


def test_transform_gives_micropython_results() -> None:
    ns = _exec(
        """
        import struct
        name = "abc"
        adv = struct.pack("BB", len(name) + 1, 0x09) + name
        mixed = (b"x" + "y", "y" + b"x")
        payload = bytearray()
        alias = payload
        payload += name
        view = memoryview("hi")
        made = (bytes("é"), bytearray("ab"))
        """
    )
    assert ns["adv"] == b"\x04\x09abc"
    assert ns["mixed"] == (b"xy", b"yx")
    assert ns["payload"] is ns["alias"] and ns["payload"] == bytearray(b"abc")
    assert bytes(ns["view"]) == b"hi"  # type: ignore[call-overload]
    assert ns["made"] == ("é".encode(), bytearray(b"ab"))


def test_transform_leaves_other_semantics_alone() -> None:
    ns = _exec(
        """
        total = 1 + 2 + 3.5
        words = "a" + "b"
        items = [1] + [2]
        items += (3,)
        n = 0
        n += 1
        t = (1,) + (2,)
        b = bytes(2)
        """
    )
    assert ns["total"] == 6.5 and ns["words"] == "ab" and ns["items"] == [1, 2, 3]
    assert (ns["n"], ns["t"], ns["b"]) == (1, (1, 2), b"\x00\x00")


def test_transform_evaluates_augmented_targets_once() -> None:
    ns = _exec(
        """
        calls = []
        def key(k):
            calls.append(k)
            return k
        class Box:
            def __init__(self):
                self.__data = b""
            def add(self, s):
                self.__data += s
                return self.__data
        boxes = {"k": [b"1", b"2"]}
        boxes[key("k")][key(0):key(1)] = [b"0"]
        boxes[key("k")][key(1)] += "3"
        out = Box().add("z")
        """
    )
    assert ns["boxes"] == {"k": [b"0", b"23"]}
    assert ns["calls"] == ["k", 0, 1, "k", 1]
    assert ns["out"] == b"z"


def test_transform_keeps_future_imports_docstring_annotations_and_patterns() -> None:
    ns = _exec(
        '''
        """The docstring."""
        from __future__ import annotations
        def f(a: "x" + "y") -> "z" + "w":
            return a + "!"
        v: "p" + "q" = b"v" + "!"
        match 1 + 2j:
            case 1 + 2j:
                matched = True
        '''
    )
    assert ns["__doc__"] == "The docstring."
    f = ns["f"]
    assert f.__annotations__ == {"a": "'x' + 'y'", "return": "'z' + 'w'"}
    assert f(b"q") == b"q!"  # type: ignore[operator]
    assert ns["v"] == b"v!" and ns["matched"] is True


def test_transform_preserves_line_numbers_and_hides_helper_frames() -> None:
    source = "x = 1\n\ny = b'a' + 'b'\nz = y + [1]\n"
    with pytest.raises(TypeError) as caught:
        exec(strbuf.compile_source(source, "sample.py"), {})
    exc = caught.value
    assert traceback.extract_tb(exc.__traceback__)[-1].filename.endswith("strbuf.py")
    strbuf.strip_helper_frames(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert (last.filename, last.lineno) == ("sample.py", 4)


def test_untransformed_source_compiles_without_helper_import() -> None:
    code = strbuf.compile_source("x = 1 + 2\n", "<s>")
    assert "__mpb_add__" not in code.co_names


# --- str as a buffer: the import hook ---------------------------------------------------


def test_import_hook_transforms_user_modules_only(tmp_path: Path) -> None:
    """Under ``mpbluetooth-python``, a module of the user's gets ``bytes + str``; the
    standard library and mpbluetooth itself are left as they are."""
    (tmp_path / "usermod_strbuf.py").write_text("def name(s):\n    return b'>' + s\n")
    (tmp_path / "main.py").write_text(
        "import os, usermod_strbuf\n"
        "assert usermod_strbuf.name('x') == b'>x'\n"
        "try:\n"  # posixpath.join adds bytes and str inside: untransformed, it refuses
        "    os.path.join(b'a', 'b')\n"
        "except TypeError:\n"
        "    print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPBLUETOOTH_TRANSPORT"}
    done = subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", str(tmp_path / "main.py")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "ok\n", done.stdout + done.stderr
    assert not (tmp_path / "__pycache__").exists()  # transformed code is never cached
