"""MicroPython's module path and ``mpbluetooth-python -m mip install`` from a local index.

The index is built in a temporary folder with micropython-lib's layout; no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def launch(*args: str, cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MPBLUETOOTH_") and k not in ("MICROPYPATH", "PYTHONINSPECT")
    }
    environ["PYTHONPATH"] = str(REPO)
    environ["HOME"] = str(cwd / "home")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mpbluetooth.cli.python", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=environ, input=stdin,
    )  # fmt: skip


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def make_index(root: Path) -> Path:
    """An index with ``blepkg`` (a package, by hash) depending on ``bleutil`` (by url)."""
    index = root / "index"
    files = {
        "blepkg/__init__.py": b"from bleutil import twice\nX = const(21)\nVALUE = twice(X)\n",
        "blepkg/extra.py": b"NAME = 'extra'\n",
    }
    hashes = []
    for target, data in files.items():
        short = _short_hash(data)
        blob = index / "file" / short[:2] / short
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        hashes.append([target, short])
    package = index / "package" / "py" / "blepkg"
    package.mkdir(parents=True)
    (package / "latest.json").write_text(
        json.dumps({"hashes": hashes, "deps": [["bleutil", "latest"]], "version": "1.0"})
    )
    util = index / "package" / "py" / "bleutil"
    util.mkdir(parents=True)
    (util / "bleutil.py").write_text("def twice(x):\n    return 2 * x\n")
    (util / "latest.json").write_text(json.dumps({"urls": [["bleutil.py", "bleutil.py"]]}))
    return index


def test_mip_installs_into_micropythons_lib_and_the_program_imports_it(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    installed = launch("-m", "mip", "install", "--index", index.as_uri(), "blepkg", cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    lib = tmp_path / "home" / ".micropython" / "lib"
    assert (lib / "blepkg" / "__init__.py").is_file() and (lib / "bleutil.py").is_file()
    assert "Done" in installed.stdout
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("import blepkg, sys\nprint(blepkg.VALUE)\n")
    result = launch("app/main.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"
    again = launch("-m", "mip", "install", "--index", str(index), "blepkg", cwd=tmp_path)
    assert again.returncode == 0 and "Exists:" in again.stdout


def test_mip_target_and_a_missing_package(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    target = tmp_path / "board-lib"
    result = launch(
        "-m", "mip", "install", "-t", str(target), "-i", str(index), "bleutil", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout
    assert (target / "bleutil.py").is_file()
    missing = launch("-m", "mip", "install", "-i", str(index), "nothing", cwd=tmp_path)
    assert missing.returncode == 1 and "Package not found" in missing.stdout


def test_mip_offline_says_the_index_cannot_be_reached(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = launch(
        "-m", "mip", "install", "-i", f"http://127.0.0.1:{port}", "aioble", cwd=tmp_path
    )
    assert result.returncode == 1
    assert f"cannot reach the package index at http://127.0.0.1:{port}" in result.stdout
    assert "Package not found" not in result.stdout


def test_mip_refuses_a_file_whose_hash_does_not_match(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    for blob in (index / "file").rglob("*"):
        if blob.is_file():
            blob.write_bytes(b"tampered\n")
    result = launch("-m", "mip", "install", "-i", str(index), "blepkg", cwd=tmp_path)
    assert result.returncode == 1 and "does not match" in result.stdout


def test_module_path_is_micropypath_else_home_lib_after_the_script_folder(tmp_path: Path) -> None:
    (tmp_path / "mpath").mkdir()
    (tmp_path / "mpath" / "onpath.py").write_text("WHERE = 'micropypath'\n")
    code = "import sys, onpath; print(onpath.WHERE, sys.path[1])"
    result = launch("-c", code, cwd=tmp_path, MICROPYPATH=str(tmp_path / "mpath"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"micropypath {tmp_path / 'mpath'}\n"
    default = launch("-c", "import sys; print(sys.path[1])", cwd=tmp_path)
    assert default.stdout == f"{tmp_path / 'home' / '.micropython' / 'lib'}\n"


def test_inspect_keeps_the_program_for_the_prompt(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text("import bluetooth\nCOUNT = const(7)\nprint('ran')\n")
    result = launch("-i", "prog.py", cwd=tmp_path, stdin="print(COUNT * 6)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ran\n") and "42" in result.stdout
