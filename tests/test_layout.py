"""The package's layout holds: one seam per concern, no import cycle, no upward import,
modules small enough to read (issue #12)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mpbluetooth

PACKAGE = Path(mpbluetooth.__file__).parent
#: Modules exempt from the size limit (MicroPython compatibility shims and the launcher).
SIZE_EXEMPT = {"compat", "cli"}
MAX_LINES = 600
MAX_STACK_LINES = 300


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (annotations only, never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, at module level and inside functions alike
    (a function-level import still makes the dependency), but not under TYPE_CHECKING.
    ``from . import x`` counts ``x`` when it is a module; the parent package that Python
    runs first is not counted as an edge (its own imports are its edges)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` depends on ``mod``; ``from mod import name`` on ``mod``.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in modules)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_importing_the_stack_imports_no_simulator() -> None:
    code = (
        "import sys, mpbluetooth._stack; "
        "print(' '.join(m for m in sys.modules if m.startswith('mpbluetooth.sim')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_nothing_below_the_facade_imports_it() -> None:
    graph = _graph()
    facade = {"mpbluetooth", "mpbluetooth.ble"}
    below = [name for name in graph if name.startswith("mpbluetooth._") and graph[name] & facade]
    assert below == []


def test_the_gatt_client_does_not_import_the_server() -> None:
    assert "mpbluetooth._gatts" not in _graph()["mpbluetooth._gattc"]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_the_stack_is_the_lifecycle_only() -> None:
    """Under 300 lines. ``controller_info`` is counted out: it moves into the ``info``
    command (issue #18)."""
    path = PACKAGE / "_stack.py"
    tree = ast.parse(path.read_text())
    info = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "controller_info"
    ]
    moving = sum((node.end_lineno or node.lineno) - node.lineno + 2 for node in info)
    assert _lines(path) - moving < MAX_STACK_LINES


def test_no_module_is_over_600_lines() -> None:
    too_long = {
        name: _lines(path)
        for name, path in _modules().items()
        if not set(path.relative_to(PACKAGE).parts) & SIZE_EXEMPT and _lines(path) > MAX_LINES
    }
    assert too_long == {}
