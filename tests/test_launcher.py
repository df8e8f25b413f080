"""``mpbluetooth-python`` behaves like ``python`` and runs MicroPython programs unmodified.

Every run is a subprocess with a timeout and without ``MPBLUETOOTH_TRANSPORT``, so
the default (simulated) controller is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60
ACCEPTANCE_A = (
    "import bluetooth, time, machine; from micropython import const; "
    "print(bluetooth.UUID(0x180D), time.ticks_diff(time.ticks_add(0, -1), 0))"
)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPBLUETOOTH_TRANSPORT", "MPBLUETOOTH_STR_BUFFER", "PYTHONUNBUFFERED")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def launch(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    command: list[str] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the launcher (as ``python -m mpbluetooth.cli.python`` unless ``command`` is given)."""
    return subprocess.run(
        [*(command or [sys.executable, "-m", "mpbluetooth.cli.python"]), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env=_env(**env),
    )


def _write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def _installed_script() -> str | None:
    beside = Path(sys.executable).parent / "mpbluetooth-python"
    return str(beside) if beside.exists() else shutil.which("mpbluetooth-python")


# --- acceptance -------------------------------------------------------------------------


def test_acceptance_a_micropython_runtime_via_dash_c() -> None:
    result = launch("-c", ACCEPTANCE_A)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "UUID(0x180d) -1\n"


def test_acceptance_b_advertising_payload_from_script_and_helper(tmp_path: Path) -> None:
    _write(
        tmp_path / "adv_helper.py",
        """
        def payload_for(name):
            payload = bytearray()
            payload += name
            return payload
        """,
    )
    script = _write(
        tmp_path / "advertise.py",
        """
        import struct
        from adv_helper import payload_for
        name = "abc"
        print(struct.pack("BB", len(name) + 1, 0x09) + name)
        print(payload_for(name))
        """,
    )
    result = launch(str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b'\\x04\\tabc'", "bytearray(b'abc')"]
    assert not (tmp_path / "__pycache__").exists()


def test_installed_console_script() -> None:
    script = _installed_script()
    if script is None:
        pytest.skip("mpbluetooth-python is not installed (pip install -e . creates it)")
    result = launch("-c", ACCEPTANCE_A, command=[script])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "UUID(0x180d) -1\n"


# --- argument forms ---------------------------------------------------------------------

_SHOW = "import sys; print(sys.argv, repr(sys.path[0]), __name__)"


def test_dash_c_sets_argv_and_path_like_python() -> None:
    result = launch("-c", _SHOW, "a", "--b")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['-c', 'a', '--b'] '' __main__\n"


def test_file_with_args(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "prog.py",
        """
        import sys
        print(sys.argv, sys.path[0], __name__, __file__)
        """,
    )
    result = launch("prog.py", "x", "-y", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    real = os.path.realpath(tmp_path)
    assert result.stdout == f"['prog.py', 'x', '-y'] {real} __main__ {script}\n"


def test_dash_m_module_with_args(tmp_path: Path) -> None:
    _write(
        tmp_path / "mod_main.py",
        """
        import sys
        print(sys.argv[0].endswith("mod_main.py"), sys.argv[1:], sys.path[0], __name__)
        """,
    )
    result = launch("-m", "mod_main", "p", "q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"True ['p', 'q'] {os.path.realpath(tmp_path)} __main__\n"


def test_dash_reads_program_from_stdin() -> None:
    result = launch("-", "one", stdin=_SHOW + "; print(b'x' + 'y')")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['-', 'one'] '' __main__\nb'xy'\n"


def test_no_argument_reads_program_from_stdin() -> None:
    result = launch(stdin=_SHOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[''] '' __main__\n"


def test_dash_u_writes_through() -> None:
    code = "import sys, os; sys.stdout.write('partial'); os._exit(0)"
    assert launch("-u", "-c", code).stdout == "partial"
    assert launch("-uc", code).stdout == "partial"
    assert launch("-c", code).stdout == ""  # buffered output dies with os._exit, as in python


# --- exit statuses ----------------------------------------------------------------------


def test_system_exit_code_propagates() -> None:
    assert launch("-c", "raise SystemExit(3)").returncode == 3
    assert launch("-c", "import sys; sys.exit()").returncode == 0
    message = launch("-c", "import sys; sys.exit('bye')")
    assert (message.returncode, message.stderr) == (1, "bye\n")


def test_uncaught_exception_prints_traceback_and_exits_1(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "boom.py",
        """
        def explode():
            raise ValueError("boom")

        explode()
        """,
    )
    result = launch(str(script))
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{script}", line 5, in <module>' in result.stderr
    assert f'File "{script}", line 3, in explode' in result.stderr
    assert result.stderr.endswith("ValueError: boom\n")
    assert "mpbluetooth" not in result.stderr  # no launcher or helper frames


def test_syntax_error_and_usage_errors() -> None:
    result = launch("-c", "def (")
    assert result.returncode == 1 and "SyntaxError" in result.stderr
    assert "Traceback" not in result.stderr
    assert launch("-Z").returncode == 2
    missing = launch("-c")
    assert missing.returncode == 2 and "Argument expected for the -c option" in missing.stderr
    absent = launch("no_such_file.py")
    assert absent.returncode == 2 and "can't open file" in absent.stderr


# --- the str-as-buffer switch ----------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_str_buffer_off_gives_a_hint(how: str) -> None:
    code = "name = 'abc'; print(b'\\x09' + name)"
    if how == "flag":
        result = launch("--no-str-buffer", "-c", code)
    else:
        result = launch("-c", code, MPBLUETOOTH_STR_BUFFER="0")
    assert result.returncode == 1
    assert "TypeError: can't concat str to bytes" in result.stderr
    assert "hint: MicroPython treats str as a buffer" in result.stderr


def test_str_buffer_off_leaves_user_modules_alone(tmp_path: Path) -> None:
    _write(tmp_path / "plain_helper.py", "def join(a, b):\n    return a + b\n")
    code = "import plain_helper; print(plain_helper.join(b'a', 'b'))"
    result = launch("--no-str-buffer", "-c", code, cwd=tmp_path)
    assert result.returncode == 1 and "hint:" in result.stderr
    assert launch("-c", code, cwd=tmp_path).stdout == "b'ab'\n"


def test_stdlib_keeps_cpython_semantics() -> None:
    # posixpath.join does ``sep + b`` itself; transformed, it would mix instead of raising.
    code = "import os\ntry:\n    os.path.join(b'a', 'b')\nexcept TypeError:\n    print('ok')\n"
    result = launch("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
