"""Each row of MicroPython's behaviour (``compat.features``), run under ``mpbluetooth-python``.

Every test runs a small program in a subprocess and compares its output with what
MicroPython prints (the values come from the issue's table and MicroPython's
sources); then runs it with the row switched off and checks the hint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mpbluetooth.compat import features

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def run(source: str, *options: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script file under the launcher, in ``cwd``."""
    script = cwd / "program.py"
    script.write_text(textwrap.dedent(source))
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MPBLUETOOTH_") and k not in ("MICROPYPATH", "PYTHONINSPECT")
    }
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ["HOME"] = str(cwd)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", *options, str(script)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=environ,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


# (row, program, what MicroPython prints, the error with the row off)
ROWS = [
    ("const", "X = const(5)\nprint(X * 2)\n", "10\n", "NameError: name 'const' is not defined"),
    (
        "json",
        "import json\nprint(json.dumps([b'ab', {'k': b'\\x01'}]))\n",
        '["ab", {"k": "\\u0001"}]\n',
        "TypeError: Object of type bytes is not JSON serializable",
    ),
    (
        "item-store",
        "buf = bytearray(3)\nbuf[0] = 256\nbuf[1] = 256 - 1\nbuf[2] = -1\nbuf[1] += 2\n"
        "print(list(buf))\n",
        "[0, 1, 255]\n",
        "ValueError: byte must be in range(0, 256)",
    ),
    (
        "random",
        "import random\nrandom.seed(22)\nprint([random.randint(0, 255) for _ in range(4)])\n",
        "[124, 150, 254, 155]\n",
        None,
    ),
    (
        "struct",
        "import struct\nbuf = bytearray(8)\nstruct.pack_into('5s', buf, 0, memoryview(b'ab'))\n"
        "struct.pack_into('3s', buf, 5, 'xy')\nprint(bytes(buf), struct.pack('<Bh', 256, 40000))\n",
        "b'ab\\x00\\x00\\x00xy\\x00' b'\\x00@\\x9c'\n",
        "struct.error: argument for 's' must be a bytes object",
    ),
    (
        "bytes-in",
        "print('b' in b'abc', 'z' not in bytearray(b'abc'), 'b' in 'abc', 2 in [1, 2])\n",
        "True True True True\n",
        "TypeError: a bytes-like object is required, not 'str'",
    ),
    (
        "bytes-encoding",
        "n = 3\nprint(bytearray((n, 0x09), 'utf-8'), bytes('é', 'utf-8'))\n",
        "bytearray(b'\\x03\\t') b'\\xc3\\xa9'\n",
        "TypeError: encoding without a string argument",
    ),
    (
        "viper",
        "@micropython.viper\ndef f(buf) -> int:\n    p = ptr8(buf)\n    p[0] = 0x1ff\n"
        "    q = ptr16(buf)\n    return int(q[0]) + uint(-1)\n"
        "@micropython.native\ndef g():\n    return 1\n"
        "b = bytearray(4)\nprint(f(b), b[0], g())\n",
        # ptr16 reads native-endian: b = [0xff, 0, ...] -> 0x00ff on little-endian
        f"{(0xFF if sys.byteorder == 'little' else 0xFF00) + 0xFFFFFFFF} 255 1\n",
        "NameError: name 'micropython' is not defined",
    ),
    (
        "annotations",
        "def f(cb: function, n: int = 1) -> nothing:\n    return n\nx: undefined_type = 2\n"
        "print(f(None), x)\n",
        "1 2\n",
        "NameError: name 'function' is not defined",
    ),
    (
        "private-names",
        "class _Profile:\n    def __init__(self):\n        self.__uuid = 7\n"
        "    def peer(self, other):\n        return other.__uuid\n"
        "class Other:\n    def __init__(self):\n        self.__uuid = 8\n"
        "p = _Profile()\nprint(p.__uuid, p.peer(Other()))\n",
        "7 8\n",
        "AttributeError:",
    ),
    (
        "machine",
        "from machine import Pin, ADC, PWM, SoftSPI, SPI, I2C, SoftI2C, Signal, WDT, RTC\n"
        "led = Pin(2, Pin.OUT)\nled.value(1)\nled.toggle()\nled.on()\n"
        "p4 = Pin(4, Pin.OUT)\nsig = Signal(p4, invert=True)\nsig.on()\n"
        "pwm = PWM(Pin(5), freq=1000, duty_u16=100)\n"
        "print(led.value(), led(), sig.value(), p4.value(), ADC(Pin(34)).read_u16(),"
        " pwm.duty_u16(), pwm.freq(), I2C(0).scan(), SPI(1).read(2, 0xff))\n"
        "WDT(timeout=5000).feed()\nRTC().datetime((2024, 1, 2, 0, 3, 4, 5, 0))\n"
        "print(RTC().datetime()[:3])\n",
        "1 1 1 0 32768 100 1000 [] b'\\xff\\xff'\n(2024, 1, 2)\n",
        "ImportError: cannot import name 'Pin'",
    ),
    (
        "esp32",
        "import esp32\nn = esp32.NVS('hid')\nn.set_i32('count', 3)\nn.set_blob('key', b'abc')\n"
        "n.commit()\nm = esp32.NVS('hid')\nbuf = bytearray(8)\n"
        "print(m.get_i32('count'), m.get_blob('key', buf), bytes(buf[:3]))\n"
        "try:\n    m.get_i32('missing')\nexcept OSError as e:\n    print(e.args)\n",
        "3 3 b'abc'\n(-4354, 'ESP_ERR_NVS_NOT_FOUND')\n",
        "ModuleNotFoundError: No module named 'esp32'",
    ),
    (
        "gc",
        "import gc\nprint(gc.mem_free() > 0, gc.mem_alloc() > 0, gc.threshold())\n"
        "gc.threshold(4096)\nprint(gc.threshold())\n",
        "True True -1\n4096\n",
        "AttributeError: module 'gc' has no attribute 'mem_free'",
    ),
]


def test_every_row_has_a_test() -> None:
    tested = {row for row, *_ in ROWS} | {"str-buffer"}  # str-buffer: test_launcher
    assert tested == set(features.FEATURES)


@pytest.mark.parametrize(("row", "program", "expected", "error"), ROWS, ids=[r[0] for r in ROWS])
def test_row_behaves_as_on_micropython(
    row: str, program: str, expected: str, error: str | None, tmp_path: Path
) -> None:
    result = run(program, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


@pytest.mark.parametrize(
    ("row", "program", "error"),
    [(r, p, e) for r, p, _, e in ROWS if e is not None],
    ids=[r[0] for r in ROWS if r[3] is not None],
)
def test_row_switched_off_fails_with_its_hint(
    row: str, program: str, error: str, tmp_path: Path
) -> None:
    hint = features.FEATURES[row].hint()
    by_option = run(program, f"--no-{row}", cwd=tmp_path)
    assert by_option.returncode == 1, by_option.stdout
    assert error in by_option.stderr
    assert hint in by_option.stderr.replace("\n", " ") or hint in by_option.stderr
    env = {features.FEATURES[row].env: "0"}
    by_env = run(program, cwd=tmp_path, **env)
    assert by_env.returncode == 1 and hint in by_env.stderr


def test_random_switched_off_is_cpythons_generator(tmp_path: Path) -> None:
    program = "import random\nrandom.seed(22)\nprint([random.randint(0, 255) for _ in range(4)])\n"
    result = run(program, "--no-random", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout != "[124, 150, 254, 155]\n"


def test_random_follows_micropythons_generator_everywhere(tmp_path: Path) -> None:
    """getrandbits keeps the low bits; choice/randrange draw below a bound; floats in [0, 1)."""
    program = """
        import random
        random.seed(22)
        a = [random.getrandbits(8) for _ in range(4)]
        random.seed(22)
        b = [random.getrandbits(32) & 0xff for _ in range(4)]
        random.seed(22)
        c = [random.randrange(256) for _ in range(4)], random.choice("abc")
        f = random.random(); u = random.uniform(5, 6)
        print(a == b, c[0] == [124, 150, 254, 155], c[1] in "abc", 0 <= f < 1, 5 <= u < 6)
        random.seed(1)
        print(random.randrange(10, 0, -3) in (10, 7, 4, 1), random.getrandbits(0))
        print(random.shuffle is not None)
        """
    result = run(program, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True True True True True\nTrue 0\nTrue\n"


def test_json_dump_writes_nothing_when_it_cannot_encode(tmp_path: Path) -> None:
    """aioble's security.py: a failed dump must not leave the bond file truncated."""
    program = """
        import json, binascii
        with open("secrets.json", "w") as f:
            json.dump([(binascii.b2a_base64(b"\\x01\\x02"), "é")], f)
        with open("secrets.json") as f:
            print(repr(f.read()))
        try:
            with open("other.json", "w") as f:
                json.dump([1, object()], f)
        except TypeError:
            pass
        print(repr(open("other.json").read()))
        """
    result = run(program, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "'[[\"AQI=\\\\n\", \"é\"]]'\n''\n"
    assert json.loads((tmp_path / "secrets.json").read_text()) == [["AQI=\n", "é"]]


def test_rows_apply_to_user_modules_but_not_the_standard_library(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text(
        "import json\nX = const(3)\ndef dump(v):\n    return json.dumps(v)\n"
    )
    program = """
        import helper, sys
        print(helper.X, helper.dump(b"a"), "json" in sys.modules)
        try:
            sys.modules["json"].dumps(b"a")  # the standard library's own json
        except TypeError:
            print("stdlib json unchanged")
        """
    result = run(program, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '3 "a" True\nstdlib json unchanged\n'


def test_install_applies_the_rows_to_modules_imported_after_it(tmp_path: Path) -> None:
    (tmp_path / "board.py").write_text(
        "import random\nrandom.seed(22)\nbuf = bytearray(1)\nbuf[0] = 257\n"
        "VALUES = [const(1), buf[0], random.randint(0, 255)]\n"
    )
    code = (
        "import sys; sys.path.insert(0, '.')\n"
        "from mpbluetooth.compat import install\ninstall()\nimport board, gc, machine\n"
        "print(board.VALUES, callable(gc.mem_free), machine.Pin(1).value())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPBLUETOOTH_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[1, 1, 124] True 0\n"


def test_unknown_row_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        features.configure({"no-such-row"})
