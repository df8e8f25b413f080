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

The same compile step carries MicroPython's other compiler-level rows (see
``compat.features``), each applied only while its row is on:

* ``const``, and viper's ``micropython``, ``ptr8``, ``ptr16``, ``ptr32``, ``uint`` used
  without an import -> bound by an import inserted with the helpers'
* ``obj[k] = v``/``obj[k] op= v`` -> ``__mpb_store__(v, obj, k)`` (bytearray truncation)
* ``a in b`` -> ``__mpb_in__(a, b)`` (a str in bytes)
* ``bytes(x, enc)``/``bytearray(x, enc)`` -> ``__mpb_bytes__(bytearray, x, enc)``
* ``import json``/``random``/``struct`` (and ``u`` names) -> mpbluetooth's MicroPython versions
* annotations compiled as strings (``from __future__ import annotations``), never evaluated
* private-name mangling undone in the code objects (``_lang.unmangle``)
"""

from __future__ import annotations
import __future__

import ast
import re
import types
from collections.abc import Collection
from typing import Any, Final

from . import _lang
from . import features as feature_table

_HELPER_MODULE: Final = __name__
_ADD: Final = "__mpb_add__"
_IADD: Final = "__mpb_iadd__"
_CALL: Final = "__mpb_call__"
_STORE: Final = "__mpb_store__"
_INPLACE: Final = "__mpb_inplace__"
_IN: Final = "__mpb_in__"
_BYTES: Final = "__mpb_bytes__"
#: helper name -> (module, attribute) it is imported from.
_HELPERS: Final = {
    _ADD: (__name__, "add"),
    _IADD: (__name__, "iadd"),
    _CALL: (__name__, "call"),
    _STORE: (__name__, "store"),
    _INPLACE: (_lang.__name__, "inplace"),
    _IN: (_lang.__name__, "contains"),
    _BYTES: (_lang.__name__, "bytes_call"),
}
#: Names MicroPython's compiler knows without an import -> (row, module, attribute).
_IMPLICIT: Final = {
    "const": ("const", "mpbluetooth.compat.micropython", "const"),
    "micropython": ("viper", "mpbluetooth.compat.micropython", ""),
    "ptr8": ("viper", _lang.__name__, "ptr8"),
    "ptr16": ("viper", _lang.__name__, "ptr16"),
    "ptr32": ("viper", _lang.__name__, "ptr32"),
    "uint": ("viper", _lang.__name__, "uint"),
}
#: Modules whose MicroPython behaviour differs at run time -> (row, replacement module).
_MODULES: Final = {
    "json": ("json", "mpbluetooth.compat._mpjson"),
    "ujson": ("json", "mpbluetooth.compat._mpjson"),
    "random": ("random", "mpbluetooth.compat._mprandom"),
    "urandom": ("random", "mpbluetooth.compat._mprandom"),
    "struct": ("struct", "mpbluetooth.compat._mpstruct"),
    "ustruct": ("struct", "mpbluetooth.compat._mpstruct"),
}
_OPS: Final = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|",
    ast.BitXor: "^", ast.MatMult: "@",
}  # fmt: skip
_DISPLAYS: Final = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp,
                    ast.DictComp, ast.GeneratorExp)  # fmt: skip
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


def store(value: Any, obj: Any, key: Any, /) -> None:
    """``obj[key] = value`` with MicroPython's truncation; value first, as CPython evaluates."""
    _lang.setitem(obj, key, value)


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
    """Attach the MicroPython idiom hint to a str/bytes-mix ``TypeError`` (and its chain).

    Also notes the hints of the other rows that are switched off (``compat.features``).
    """
    transform_on = transform_on and feature_table.enabled("str-buffer")
    feature_table.add_hints(exc)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        notes = getattr(current, "__notes__", ())
        explained = any(n.startswith("hint:") and n not in (HINT_ON, HINT_OFF) for n in notes)
        if isinstance(current, TypeError) and _MIX_MESSAGE.search(str(current)) and not explained:
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
            if tb.tb_frame.f_code.co_filename not in _HELPER_FILES:
                kept.append(tb)
            tb = tb.tb_next
        rebuilt: types.TracebackType | None = None
        for entry in reversed(kept):
            rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
        current.__traceback__ = rebuilt
        current = current.__cause__ or current.__context__


_HELPER_FILES: Final = frozenset({__file__, _lang.__file__})


# --- the AST transform ------------------------------------------------------------------


def _is_number(node: ast.expr) -> bool:
    """A numeric literal operand can never be half of a str/bytes mix: leave ``i + 1`` alone."""
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float | complex)


class _Rewriter(ast.NodeTransformer):
    """Rewrites the constructs of the rows in ``features`` into helper calls."""

    def __init__(self, features: Collection[str]) -> None:
        self.features = features
        self.used: set[str] = set()
        self.implicit: set[str] = set()
        self._temps = 0

    @property
    def changed(self) -> bool:
        return bool(self.used or self.implicit)

    def _on(self, row: str) -> bool:
        return row in self.features

    def _helper(self, name: str, args: list[ast.expr], where: ast.AST) -> ast.Call:
        self.used.add(name)
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

    @staticmethod
    def _plain_index(index: ast.expr) -> bool:
        """An index that is an expression on its own (no slice syntax): it can be an argument."""
        if isinstance(index, ast.Slice | ast.Starred):
            return False
        return not (
            isinstance(index, ast.Tuple)
            and any(isinstance(e, ast.Slice | ast.Starred) for e in index.elts)
        )

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        if (
            not self._on("str-buffer")
            or not isinstance(node.op, ast.Add)
            or _is_number(node.left)
            or _is_number(node.right)
        ):
            return node
        return self._helper(_ADD, [node.left, node.right], node)

    def visit_Assign(self, node: ast.Assign) -> ast.stmt:
        self.generic_visit(node)
        target = node.targets[0]
        if (
            self._on("item-store")
            and len(node.targets) == 1
            and isinstance(target, ast.Subscript)
            and self._plain_index(target.slice)
        ):
            call = self._helper(_STORE, [node.value, target.value, target.slice], node)
            return ast.copy_location(ast.Expr(value=call), node)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        self.generic_visit(node)
        target = node.target
        store_item = (
            self._on("item-store")
            and isinstance(target, ast.Subscript)
            and self._plain_index(target.slice)
            and type(node.op) in _OPS
        )
        add_mix = (
            self._on("str-buffer") and isinstance(node.op, ast.Add) and not _is_number(node.value)
        )
        if not (store_item or add_mix):
            return node
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
        if add_mix:
            value = self._helper(_IADD, [current, node.value], node)
        else:
            op = ast.Constant(value=_OPS[type(node.op)])
            value = self._helper(_INPLACE, [op, current, node.value], node)
        if store_item and isinstance(store, ast.Subscript):
            call = self._helper(_STORE, [value, store.value, store.slice], node)
            return ast.copy_location(ast.Expr(value=call), node)
        return ast.copy_location(ast.Assign(targets=[store], value=value), node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        if (
            not self._on("bytes-in")
            or len(node.ops) != 1
            or not isinstance(node.ops[0], ast.In | ast.NotIn)
            or isinstance(node.comparators[0], _DISPLAYS)
            or (isinstance(node.left, ast.Constant) and not isinstance(node.left.value, str))
        ):
            return node
        test: ast.expr = self._helper(_IN, [node.left, node.comparators[0]], node)
        if isinstance(node.ops[0], ast.NotIn):
            test = ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=test), node)
        return test

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        if (
            not isinstance(func, ast.Name)
            or func.id not in _BUFFER_CALLS
            or node.keywords
            or any(isinstance(a, ast.Starred) for a in node.args)
        ):
            return node
        if len(node.args) == 1 and self._on("str-buffer"):
            return self._helper(_CALL, [func, node.args[0]], node)
        if len(node.args) >= 2 and func.id != "memoryview" and self._on("bytes-encoding"):
            return self._helper(_BYTES, [func, *node.args], node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        row = _IMPLICIT.get(node.id)
        if row is not None and isinstance(node.ctx, ast.Load) and self._on(row[0]):
            self.implicit.add(node.id)
        return node

    def _module_for(self, name: str) -> str | None:
        row = _MODULES.get(name)
        return row[1] if row is not None and self._on(row[0]) else None

    def visit_Import(self, node: ast.Import) -> ast.Import:
        for alias in node.names:
            module = self._module_for(alias.name)
            if module is not None:
                alias.asname = alias.asname or alias.name
                alias.name = module
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        module = self._module_for(node.module or "") if node.level == 0 else None
        if module is not None:
            node.module = module
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


def _helper_import(body: list[ast.stmt], helpers: set[str], implicit: set[str]) -> None:
    """Insert the helpers' imports after the docstring and any ``from __future__`` imports."""
    index = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        index = 1 if isinstance(body[0].value.value, str) else 0
    while (
        index < len(body)
        and isinstance(body[index], ast.ImportFrom)
        and getattr(body[index], "module", None) == "__future__"
    ):
        index += 1
    by_module: dict[str, list[ast.alias]] = {}
    statements: list[ast.stmt] = []
    for name in sorted(helpers):
        module, attr = _HELPERS[name]
        by_module.setdefault(module, []).append(ast.alias(name=attr, asname=name))
    for name in sorted(implicit):
        _row, module, attr = _IMPLICIT[name]
        if attr:
            by_module.setdefault(module, []).append(ast.alias(name=attr, asname=name))
        else:
            statements.append(ast.Import(names=[ast.alias(name=module, asname=name)]))
    statements += [
        ast.ImportFrom(module=module, names=names, level=0) for module, names in by_module.items()
    ]
    anchor = body[min(index, len(body) - 1)] if body else None
    for statement in reversed(statements):
        if anchor is not None:
            ast.copy_location(statement, anchor)
        body.insert(index, statement)


def transform(tree: ast.Module | ast.Interactive, features: Collection[str] | None = None) -> bool:
    """Rewrite ``tree`` in place for the rows in ``features`` (default: the rows on now).

    True if anything changed (and the helpers were imported).
    """
    rewriter = _Rewriter(feature_table.on() if features is None else features)
    rewriter.visit(tree)
    if rewriter.changed:
        _helper_import(tree.body, rewriter.used, rewriter.implicit)
        ast.fix_missing_locations(tree)
    return rewriter.changed


def compile_source(
    source: str | bytes,
    filename: str,
    mode: str = "exec",
    features: Collection[str] | None = None,
) -> types.CodeType:
    """Compile ``source`` as the user's code, with the rows in ``features`` (default: on now).

    ``dont_inherit`` keeps this module's own ``__future__`` flags out of user code;
    the ``annotations`` row sets that one future flag deliberately.
    """
    features = feature_table.on() if features is None else features
    flags = __future__.annotations.compiler_flag if "annotations" in features else 0
    tree = compile(source, filename, mode, ast.PyCF_ONLY_AST | flags, dont_inherit=True)
    if not isinstance(tree, ast.Module | ast.Interactive):
        raise ValueError(f"compile_source: mode must be 'exec' or 'single', not {mode!r}")
    transform(tree, features)
    code = compile(tree, filename, mode, flags, dont_inherit=True)
    if "private-names" in features:
        code = _lang.unmangle(code)
    return code
