"""The import hook that applies the str-as-buffer transform to the user's own modules.

Only files outside the standard library, site-packages and mpbluetooth itself are
rewritten: library code was written for CPython and must keep CPython semantics.
Transformed code is never written to ``__pycache__``, so a later plain ``python``
run cannot pick up bytecode that imports our helpers.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import os
import site
import sys
import sysconfig
import threading
import types
from collections.abc import Sequence
from pathlib import Path

from . import strbuf

logger = logging.getLogger(__name__)

_LIBRARY_DIR_NAMES = frozenset({"site-packages", "dist-packages"})
_lock = threading.Lock()
# Set while this thread is inside ``find_spec``: imports made by our own checks
# (``sysconfig`` loads ``_sysconfigdata_*`` lazily on 3.13) must not come back here.
_busy = threading.local()


def _normalise(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Directories whose modules are not the user's: stdlib, site-packages, mpbluetooth."""
    roots = {Path(__file__).resolve().parents[1].as_posix()}
    for scheme_vars in (None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        roots.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    if hasattr(site, "getsitepackages"):
        roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(_normalise(root).rstrip(os.sep) + os.sep for root in roots)


def is_user_file(path: str) -> bool:
    """True if ``path`` is the user's code, i.e. neither library nor mpbluetooth."""
    real = _normalise(path)
    if _LIBRARY_DIR_NAMES.intersection(Path(real).parts):
        return False
    return not real.startswith(_library_roots())


class _StrBufferLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles through the transform and never caches bytecode."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return strbuf.compile_source(self.get_data(path), path)


class StrBufferFinder(importlib.abc.MetaPathFinder):
    """Sits just before ``PathFinder``; hands user source files to ``_StrBufferLoader``."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if getattr(_busy, "active", False):
            return None  # re-entered by our own checks: let PathFinder do it untransformed
        _busy.active = True
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
            if (
                spec is not None
                and type(spec.loader) is importlib.machinery.SourceFileLoader
                and spec.origin is not None
                and is_user_file(spec.origin)
            ):
                logger.debug("MicroPython transform for %s (%s)", fullname, spec.origin)
                spec.loader = _StrBufferLoader(fullname, spec.origin)
            return spec
        finally:
            _busy.active = False


def install() -> None:
    """Insert the finder before ``PathFinder`` (idempotent).

    The library roots are computed first, while ``sysconfig`` can still import its
    data module through the plain ``PathFinder``: on Python 3.13 ``get_paths()``
    imports ``_sysconfigdata_*`` lazily, and doing that from inside our own
    ``find_spec`` re-entered a half-initialised ``sysconfig``.
    """
    _library_roots()
    with _lock:
        if is_installed():
            return
        try:
            index = sys.meta_path.index(importlib.machinery.PathFinder)
        except ValueError:
            index = len(sys.meta_path)
        sys.meta_path.insert(index, StrBufferFinder())


def is_installed() -> bool:
    """Whether user modules imported from now on are transformed."""
    return any(isinstance(finder, StrBufferFinder) for finder in sys.meta_path)


def remove() -> None:
    """Take the finder out again (for tests and embedders); modules already imported stay."""
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, StrBufferFinder)]
