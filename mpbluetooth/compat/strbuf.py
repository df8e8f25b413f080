"""The str-as-buffer transform: MicroPython's ``bytes + str`` for the user's own code.

MicroPython lets a ``str`` stand wherever a buffer is read, so BLE code builds
advertising payloads with ``struct.pack("BB", len(name) + 1, 0x09) + name``. CPython
raises ``TypeError`` there, and no runtime shim can change how ``bytes.__add__``
treats a ``str``. So the user's source is rewritten at compile time instead:

* ``a + b``              -> ``__mpb_add__(a, b)``
* ``t += v``             -> ``t = __mpb_iadd__(t, v)`` (target parts evaluated once)
* ``bytes(x)``, ``bytearray(x)``, ``memoryview(x)`` -> ``__mpb_call__(bytes, x)``

Each helper performs the plain CPython operation first and falls back to the
UTF-8 bytes of the ``str`` only when that raised ``TypeError`` for a str/bytes
mix, so numbers, lists and ``str + str`` behave exactly as before. The helpers
are imported by a statement inserted after the docstring and ``__future__``
imports; every rewritten node keeps its source position, so tracebacks point at
the user's lines.

MicroPython: ``str + bytes`` and ``bytes(str)`` raise there too; here they give
bytes, a superset no MicroPython program can observe.
"""

from __future__ import annotations

import ast
import re
import types
from typing import Any, Final

_HELPER_MODULE: Final = __name__
_ADD: Final = "__mpb_add__"
_IADD: Final = "__mpb_iadd__"
_CALL: Final = "__mpb_call__"
_BUFFER_CALLS: Final = frozenset({"bytes", "bytearray", "memoryview"})
_BUFFER_TYPES: Final = (bytes, bytearray, memoryview)

HINT_OFF: Final = (
    "hint: MicroPython treats str as a buffer (bytes + str); run with the str-as-buffer "
    "transform on (drop --no-str-buffer, or set MPBLUETOOTH_STR_BUFFER=1), or encode the str"
)
HINT_ON: Final = (
    "hint: MicroPython treats str as a buffer (bytes + str); the str-as-buffer transform "
    "only rewrites your own modules, not the standard library or site-packages: encode the str"
)
_MIX_MESSAGE: Final = re.compile(
    r"can't concat str to (bytes|bytearray)"
    r"|can only concatenate str \(not \"(bytes|bytearray|memoryview)\"\) to str"
    r"|a bytes-like object is required, not 'str'"
    r"|string argument without an encoding"
)


# --- runtime helpers called by transformed code ---------------------------------------


def _encode_mix(a: object, b: object) -> tuple[Any, Any] | None:
    """The operands with the str side encoded, or None if this is not a str/buffer mix."""
    if isinstance(a, bytes | bytearray) and isinstance(b, str):
        return a, b.encode()
    if isinstance(a, str) and isinstance(b, _BUFFER_TYPES):
        return a.encode(), b
    return None


def add(a: Any, b: Any) -> Any:
    """``a + b``, or its bytes result when one side is a str and the other a buffer."""
    try:
        return a + b
    except TypeError:
        mixed = _encode_mix(a, b)
        if mixed is None:
            raise
    return mixed[0] + mixed[1]


def iadd(a: Any, b: Any) -> Any:
    """``a += b`` returning the new value; a bytearray target is still extended in place."""
    try:
        a += b
        return a
    except TypeError:
        mixed = _encode_mix(a, b)
        if mixed is None:
            raise
    target, value = mixed
    target += value
    return target


def call(func: Any, arg: Any, /) -> Any:
    """``func(arg)``; for ``bytes``/``bytearray``/``memoryview`` of a str, of its UTF-8."""
    try:
        return func(arg)
    except TypeError:
        if not (isinstance(arg, str) and any(func is t for t in _BUFFER_TYPES)):
            raise
    return func(arg.encode())


# --- error reporting --------------------------------------------------------------------


def add_hint(exc: BaseException, *, transform_on: bool) -> None:
    """Attach the MicroPython idiom hint to a str/bytes-mix ``TypeError`` (and its chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TypeError) and _MIX_MESSAGE.search(str(current)):
            hint = HINT_ON if transform_on else HINT_OFF
            if hint not in getattr(current, "__notes__", ()):
                current.add_note(hint)
        current = current.__cause__ or current.__context__


def strip_helper_frames(exc: BaseException) -> None:
    """Drop this module's frames from the tracebacks of ``exc`` and its chain.

    A genuine ``TypeError`` (``1 + "a"`` in user code) passes through ``add``; the
    user should see their own line, not ours.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kept = []
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename != __file__:
                kept.append(tb)
            tb = tb.tb_next
        rebuilt: types.TracebackType | None = None
        for entry in reversed(kept):
            rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
        current.__traceback__ = rebuilt
        current = current.__cause__ or current.__context__


# --- the AST transform ------------------------------------------------------------------


def _is_number(node: ast.expr) -> bool:
    """A numeric literal operand can never be half of a str/bytes mix: leave ``i + 1`` alone."""
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float | complex)


class _Rewriter(ast.NodeTransformer):
    """Rewrites ``+``, ``+=`` and buffer-builtin calls into helper calls."""

    def __init__(self) -> None:
        self.changed = False
        self._temps = 0

    def _helper(self, name: str, args: list[ast.expr], where: ast.AST) -> ast.Call:
        self.changed = True
        func = ast.copy_location(ast.Name(id=name, ctx=ast.Load()), where)
        return ast.copy_location(ast.Call(func=func, args=args, keywords=[]), where)

    def _hoist(self, node: ast.expr) -> tuple[ast.expr, ast.expr]:
        """(first use binding a temporary, later use reading it) so ``node`` runs once."""
        if isinstance(node, ast.Constant):
            return node, ast.Constant(value=node.value)
        name = f"__mpb_t{self._temps}__"
        self._temps += 1
        return ast.NamedExpr(target=ast.Name(id=name, ctx=ast.Store()), value=node), ast.Name(
            id=name, ctx=ast.Load()
        )

    def _hoist_index(self, index: ast.expr) -> tuple[ast.expr, ast.expr] | None:
        if isinstance(index, ast.Slice):
            first, later = ast.Slice(), ast.Slice()
            for field in ("lower", "upper", "step"):
                part = getattr(index, field)
                if part is not None:
                    once, again = self._hoist(part)
                    setattr(first, field, once)
                    setattr(later, field, again)
            return first, later
        if isinstance(index, ast.Starred) or (
            isinstance(index, ast.Tuple)
            and any(isinstance(e, ast.Slice | ast.Starred) for e in index.elts)
        ):
            return None
        return self._hoist(index)

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Add) or _is_number(node.left) or _is_number(node.right):
            return node
        return self._helper(_ADD, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Add) or _is_number(node.value):
            return node
        target = node.target
        current: ast.expr
        store: ast.expr
        if isinstance(target, ast.Name):
            current = ast.Name(id=target.id, ctx=ast.Load())
            store = ast.Name(id=target.id, ctx=ast.Store())
        elif isinstance(target, ast.Attribute):
            obj_once, obj_again = self._hoist(target.value)
            current = ast.Attribute(value=obj_once, attr=target.attr, ctx=ast.Load())
            store = ast.Attribute(value=obj_again, attr=target.attr, ctx=ast.Store())
        elif isinstance(target, ast.Subscript):
            index = self._hoist_index(target.slice)
            if index is None:
                return node
            obj_once, obj_again = self._hoist(target.value)
            current = ast.Subscript(value=obj_once, slice=index[0], ctx=ast.Load())
            store = ast.Subscript(value=obj_again, slice=index[1], ctx=ast.Store())
        else:
            return node
        value = self._helper(_IADD, [current, node.value], node)
        return ast.copy_location(ast.Assign(targets=[store], value=value), node)

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in _BUFFER_CALLS
            and len(node.args) == 1
            and not isinstance(node.args[0], ast.Starred)
            and not node.keywords
        ):
            return self._helper(_CALL, [func, node.args[0]], node)
        return node

    # Annotations (strings under PEP 563) and match patterns must keep their exact form.
    def visit_arg(self, node: ast.arg) -> ast.arg:
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        returns, node.returns = node.returns, None
        self.generic_visit(node)
        node.returns = returns
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        annotation, node.annotation = node.annotation, ast.Constant(value=None)
        self.generic_visit(node)
        node.annotation = annotation
        return node

    def visit_match_case(self, node: ast.match_case) -> ast.AST:
        pattern, node.pattern = node.pattern, ast.MatchAs()
        self.generic_visit(node)
        node.pattern = pattern
        return node


def _helper_import(body: list[ast.stmt]) -> None:
    """Insert the helpers' import after the docstring and any ``from __future__`` imports."""
    index = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        index = 1 if isinstance(body[0].value.value, str) else 0
    while (
        index < len(body)
        and isinstance(body[index], ast.ImportFrom)
        and getattr(body[index], "module", None) == "__future__"
    ):
        index += 1
    names = [
        ast.alias(name=n, asname=a) for n, a in (("add", _ADD), ("iadd", _IADD), ("call", _CALL))
    ]
    statement = ast.ImportFrom(module=_HELPER_MODULE, names=names, level=0)
    anchor = body[min(index, len(body) - 1)]
    body.insert(index, ast.copy_location(statement, anchor))


def transform(tree: ast.Module | ast.Interactive) -> bool:
    """Rewrite ``tree`` in place; True if anything changed (and the helpers were imported)."""
    rewriter = _Rewriter()
    rewriter.visit(tree)
    if rewriter.changed:
        _helper_import(tree.body)
        ast.fix_missing_locations(tree)
    return rewriter.changed


def compile_source(source: str | bytes, filename: str, mode: str = "exec") -> types.CodeType:
    """Compile ``source`` as the user's code, with the transform applied.

    ``dont_inherit`` keeps this module's own ``__future__`` flags out of user code.
    """
    tree = compile(source, filename, mode, ast.PyCF_ONLY_AST, dont_inherit=True)
    if not isinstance(tree, ast.Module | ast.Interactive):
        raise ValueError(f"compile_source: mode must be 'exec' or 'single', not {mode!r}")
    transform(tree)
    return compile(tree, filename, mode, dont_inherit=True)
