"""Board profiles under the runtime: ``mpbluetooth-python``, ``mpbluetooth run --board``,
``mpbluetooth info --board``, and the kept-view rule of SPEC D5 (amended)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without mpbluetooth's variables (the plugin sets STRICT)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run(
    args: list[str], cwd: Path, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env(**env),
    )  # fmt: skip


PLATFORM = """
import os, sys
import BLE
print(sys.platform, tuple(os.uname()), BLE.WHO)
for name in ("esp32", "neopixel", "rp2"):
    try:
        __import__(name)
        print(name, "yes")
    except ImportError:
        print(name, "no")
"""


@pytest.mark.parametrize(
    ("board", "platform", "machine", "modules"),
    [
        ("unix", sys.platform, os.uname().machine, {"esp32"}),
        ("esp32", "esp32", "Generic ESP32 module with ESP32", {"esp32", "neopixel"}),
        ("stm32", "pyboard", "PYBD-SF6W with STM32F767IIK", {"esp32"}),
        ("rp2", "rp2", "Raspberry Pi Pico W with RP2040", {"esp32", "neopixel", "rp2"}),
    ],
)
def test_platform_uname_port_modules_and_the_lib_folder(
    tmp_path: Path, board: str, platform: str, machine: str, modules: set[str]
) -> None:
    """Run from another directory, with no MICROPYPATH: the script folder's lib/ package
    imports (a board has /lib on its path), and the port's modules are there."""
    app = tmp_path / "app"
    (app / "lib" / "BLE").mkdir(parents=True)
    (app / "lib" / "BLE" / "__init__.py").write_text("WHO = 'lib'\n")
    (app / "main.py").write_text(PLATFORM)
    result = run(
        ["mpbluetooth.cli.python", str(app / "main.py")], tmp_path, MPBLUETOOTH_BOARD=board
    )
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith(f"{platform} ") and first.endswith(" lib")
    assert machine in first
    assert {line.split()[0] for line in rest if line.endswith("yes")} == modules


def test_a_neopixel_strip_keeps_grb_order(tmp_path: Path) -> None:
    (tmp_path / "led.py").write_text(
        "import neopixel\nnp = neopixel.NeoPixel(None, 2)\nnp[1] = (1, 2, 3)\nnp.write()\n"
        "print(len(np), np[1], bytes(np.buf).hex())\n"
    )
    result = run(["mpbluetooth.cli.python", "led.py"], tmp_path, MPBLUETOOTH_BOARD="esp32")
    assert result.stdout == "2 (1, 2, 3) 000000020103\n", result.stderr


def test_an_unknown_board_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print('ran')\n")
    result = run(["mpbluetooth.cli.python", "a.py"], tmp_path, MPBLUETOOTH_BOARD="esp8266")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "mpbluetooth-python: unknown board 'esp8266': choose one of unix, esp32, stm32, rp2 "
        "(MPBLUETOOTH_BOARD)"
    ]


# A driver that keeps the notification's view and reads it after its handler returned.
KEEPER = """\
import time
from mpbluetooth import sim, UUID, FLAG_NOTIFY, FLAG_READ
kept, links = [], []
def central_irq(event, data):
    if event == 18:
        kept.append(data[2])
def server_irq(event, data):
    if event == 1:
        links.append(data[0])
link = sim.Link("instant")
server, central = link.instance("server"), link.instance("central")
server.irq(server_irq); server.active(True); central.irq(central_irq); central.active(True)
battery = (UUID(0x180F), ((UUID(0x2A19), FLAG_READ | FLAG_NOTIFY),))
((value,),) = server.gatts_register_services([battery])
server.gap_advertise(20000, b"\\x02\\x01\\x06")
central.gap_connect(*server.config("mac"))
while not links:
    time.sleep_ms(5)
server.gatts_notify(links[0], value, b"label")
while not kept:
    time.sleep_ms(5)
print("kept", bytes(kept[0]))
"""
HANDLER_LINE = 4  # the line of ``def central_irq``


def keeper(tmp_path: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "keeper.py").write_text(KEEPER)
    return run(["mpbluetooth.cli.python", *options, "keeper.py"], tmp_path, **env)


def test_a_kept_view_reads_after_the_handler_with_one_warning(tmp_path: Path) -> None:
    result = keeper(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kept b'label'\n"
    warnings = [line for line in result.stderr.splitlines() if "KeptViewWarning" in line]
    assert len(warnings) == 1, result.stderr
    assert f"{tmp_path / 'keeper.py'}:{HANDLER_LINE}: KeptViewWarning" in warnings[0]
    assert "content changes when the stack reuses the buffer" in warnings[0]


@pytest.mark.parametrize(
    ("options", "env"), [(("--strict",), {}), ((), {"MPBLUETOOTH_STRICT": "1"})]
)
def test_strict_mode_releases_the_view_at_return(
    tmp_path: Path, options: tuple[str, ...], env: dict[str, str]
) -> None:
    result = keeper(tmp_path, *options, **env)
    assert result.returncode == 1
    assert "ValueError: operation forbidden on released memoryview object" in result.stderr
    assert "KeptViewWarning" not in result.stderr


def test_run_strict_releases_the_view_in_every_script(tmp_path: Path) -> None:
    (tmp_path / "keeper.py").write_text(KEEPER)
    result = run(["mpbluetooth", "run", "--strict", "keeper.py", "--timeout", "60"], tmp_path)
    assert result.returncode == 1
    assert "ValueError: operation forbidden on released memoryview object" in result.stdout


ESP32_SERVER = """
import bluetooth, time
from micropython import const
_IRQ_CENTRAL_CONNECT = const(1)
ble = bluetooth.BLE()
connected = []
ble.irq(lambda event, data: connected.append(data[0]) if event == _IRQ_CENTRAL_CONNECT else None)
ble.active(True)
((value,),) = ble.gatts_register_services(
    [(bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), bluetooth.FLAG_NOTIFY),))]
)
ble.gap_advertise(20000, b"\\x02\\x01\\x06\\x05\\x09esp1")
while not connected:
    time.sleep_ms(10)
print("connection", connected[0], "gap_name", ble.config("gap_name"))
time.sleep_ms(300)
ble.gatts_notify(0, value, b"hello")  # as the ESP32 program does
time.sleep_ms(1000)
"""

CENTRAL = """
import bluetooth, time
ble = bluetooth.BLE()
got = []
def irq(event, data):
    if event == 5 and b"esp1" in bytes(data[4]):
        ble.gap_scan(None)
        ble.gap_connect(data[0], bytes(data[1]))
    elif event == 18:
        got.append(bytes(data[2]))
ble.irq(irq)
ble.active(True)
ble.gap_scan(5000, 30000, 30000)
while not got:
    time.sleep_ms(10)
print("notified", got[0], "gap_name", ble.config("gap_name"))
"""


def test_run_board_esp32_notifies_handle_0_to_a_central(tmp_path: Path) -> None:
    """Done when: under --board esp32 a program that notifies connection handle 0 works
    against a central (here a unix board, by its own board= setting)."""
    (tmp_path / "server.py").write_text(ESP32_SERVER)
    (tmp_path / "central.py").write_text(CENTRAL)
    result = run(
        ["mpbluetooth", "run", "--board", "esp32", "server.py", "board=unix", "central.py",
         "--timing", "instant", "--timeout", "60"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[server ] connection 0 gap_name b'MPY ESP32'" in lines
    assert "[central] notified b'hello' gap_name b'MPY NIMBLE'" in lines


def test_run_refuses_an_unknown_board(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    result = run(["mpbluetooth", "run", "board=esp8266", "a.py"], tmp_path)
    assert result.returncode == 2
    assert "unknown board 'esp8266': choose one of unix, esp32, stm32, rp2" in result.stderr
    result = run(["mpbluetooth", "run", "--board", "esp8266", "a.py"], tmp_path)
    assert result.returncode == 2 and "'esp8266' is not one of" in result.stderr


def test_info_board_prints_the_profile(tmp_path: Path) -> None:
    result = run(["mpbluetooth", "info", "--board", "unix"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
        for line in result.stdout.splitlines()
    }
    assert (
        rows["first user handle"].startswith("21 ")
        and "registered again: 33" in rows["first user handle"]
    )
    assert rows["gap_name"] == "b'MPY NIMBLE'"
    assert rows["methods compiled out"] == "hci_cmd"
    esp32 = run(["mpbluetooth", "info", "--board", "esp32"], tmp_path).stdout
    assert "first connection handle  0" in esp32 and "l2cap_listen" in esp32


USER_TEST = """
import os

from mpbluetooth import UUID
from mpbluetooth.testing.recorder import wait_until


def test_board_and_strictness(sim_instances):
    (a, ea), (b, eb) = sim_instances(2)
    kept = []
    ((value,),) = a.gatts_register_services([(UUID(0x180F), ((UUID(0x2A19), 0x12),))])
    b.irq(lambda event, data: kept.append(data[2]) if event == 18 else eb(event, data))
    a.gap_advertise(20000, b"\\x02\\x01\\x06")
    b.gap_connect(*a.config("mac"))
    a.gatts_notify(ea.wait(1)[0], value, b"kept")
    wait_until(lambda: kept, what="the notification")
    print("BOARD", a.config("gap_name"), hasattr(a, "gap_pair"), os.environ["MPBLUETOOTH_STRICT"])
    assert bytes(kept[0]) == b"kept"
"""


@pytest.mark.parametrize(
    ("ini", "outcome"),
    [
        ("", "ValueError: operation forbidden on released memoryview object"),
        ("[pytest]\nmpbluetooth_board = rp2\nmpbluetooth_strict = false\n",
         "BOARD b'MPY BTSTACK' False 0"),
    ],
)  # fmt: skip
def test_the_plugin_runs_strict_unless_told_and_takes_a_board(
    tmp_path: Path, ini: str, outcome: str
) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    (tmp_path / "pytest.ini").write_text(ini or "[pytest]\n")
    result = run(["pytest", "-q", "-s", "-p", "no:cacheprovider", "test_user.py"], tmp_path)
    assert outcome in result.stdout, result.stdout + result.stderr
    assert result.returncode == (1 if not ini else 0)


@pytest.mark.mpbluetooth_board("rp2")
@pytest.mark.mpbluetooth_timing("instant")
def test_the_marker_reaches_the_board_fixtures_process(board, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "pico.py"
    script.write_text(
        "import bluetooth, sys\nble = bluetooth.BLE()\nble.active(True)\n"
        "print(sys.platform, ble.config('gap_name'), hasattr(ble, 'gap_pair'))\n"
        "ble.active(False)\n"
    )
    pico = board(script)
    pico.wait_for_line("rp2 b'MPY BTSTACK' False")
