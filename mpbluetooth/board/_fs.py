"""The board's filesystem: a folder of this machine, where ``/`` is the folder.

The board's code (what arrives on the serial line, and the files of the folder: boot.py,
main.py, /lib) sees MicroPython's ``os``: ``listdir``, ``ilistdir``, ``stat`` (the
10-tuple a littlefs board gives, mode 0x4000 or 0x8000), ``statvfs``, ``remove``,
``mkdir``, ``rmdir``, ``rename``, ``chdir``, ``getcwd``, and ``open``, all inside the
folder; errors are MicroPython's ``OSError(errno)`` (``[Errno 2] ENOENT``), which is what
mpremote reads back. The process's own code (the standard library, Bumble, mpbluetooth)
keeps the machine's paths: ``os`` and ``open`` are the same objects for both, so each
wrapper looks at who called it (the caller's code file) and translates only for the
board's code. ``sys.path`` shows the board's entries (``''``, ``.frozen``, ``/lib``), which
a path hook maps into the folder, ahead of the machine's own for the standard library.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import importlib.machinery
import os
import posixpath
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, Final

from .._errors import mp_oserror

#: The start of the board's ``sys.path``, as a board has it.
BOARD_PATH: Final = ("", ".frozen", "/lib")
_DIR: Final = 0x4000
_FILE: Final = 0x8000


class BoardFs:
    """The folder ``root`` as a board's filesystem (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._host_path: tuple[str, ...] = ()
        self._real: dict[str, Callable[..., Any]] = {}

    # --- paths ---------------------------------------------------------------------------
    def host(self, path: Any) -> str:
        """The machine's path for the board's ``path`` (relative to the board's cwd);
        ``..`` never leaves the folder."""
        text = os.fsdecode(path)
        if not text.startswith("/"):
            text = posixpath.join(self.board(self._getcwd()), text)
        text = "/" + posixpath.normpath(text).lstrip("/")
        return self.root if text == "/" else self.root + text.rstrip("/")

    def board(self, host: str) -> str:
        """The board's path for a path of the machine inside the folder."""
        relative = os.path.relpath(host, self.root)
        if relative == ".":
            return "/"
        if relative.startswith(".."):
            return "/"  # outside the folder (never reached through the board's calls)
        return "/" + relative.replace(os.sep, "/")

    def is_board_code(self, filename: str) -> bool:
        """Whether code compiled from ``filename`` is the board's: input from the serial
        line (``<stdin>``), or a file of the folder."""
        return _board_code(self.root, filename)

    def _getcwd(self) -> str:
        return self._real.get("getcwd", os.getcwd)()

    # --- installing -----------------------------------------------------------------------
    def install(self) -> None:
        """Wrap ``os`` and ``open`` for the board's code and add the path hook (once)."""
        if self._real:
            return
        self._host_path = tuple(sys.path[1:])  # sys.path[0] is the launcher's own
        wrappers = {
            "listdir": self._listdir,
            "stat": self._stat,
            "statvfs": self._statvfs,
            "remove": self._one_path("remove"),
            "unlink": self._one_path("unlink"),
            "mkdir": self._one_path("mkdir"),
            "rmdir": self._one_path("rmdir"),
            "chdir": self._one_path("chdir"),
            "rename": self._rename,
            "getcwd": self._getcwd_wrapper,
        }
        for name, wrapper in wrappers.items():
            self._real[name] = getattr(os, name)
            setattr(os, name, wrapper)
        os.ilistdir = self._ilistdir  # type: ignore[attr-defined]
        self._real["open"] = builtins.open
        builtins.open = self._open
        sys.modules.setdefault("vfs", _vfs_module())
        sys.path_hooks.insert(0, self._path_hook)
        sys.dont_write_bytecode = True  # no __pycache__ folders appearing on the board

    def reset_path(self) -> None:
        """The board's ``sys.path`` after a reset: its own entries, then the machine's."""
        sys.path[:] = [*BOARD_PATH, *self._host_path]
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        self._real.get("chdir", os.chdir)(self.root)

    def user_modules(self) -> list[str]:
        """The modules imported from the folder (a soft reset forgets them)."""
        prefix = self.root + os.sep
        found = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and os.path.realpath(path).startswith(prefix):
                found.append(name)
        return found

    def _path_hook(self, entry: str) -> importlib.machinery.FileFinder:
        if not entry.startswith("/") or entry in self._host_path or entry.startswith(self.root):
            raise ImportError("not a path of the board")
        host = self.host(entry)
        if entry != "/lib" and not os.path.isdir(host):
            raise ImportError("not a folder of the board")
        return importlib.machinery.FileFinder(host, *_LOADERS)

    # --- the wrappers -----------------------------------------------------------------------
    def _from_board(self) -> bool:
        # 0: this frame, 1: the wrapper, 2: its caller.
        return self.is_board_code(sys._getframe(2).f_code.co_filename)

    def _listdir(self, path: Any = None) -> list[Any]:
        listdir = self._real["listdir"]
        if not self._from_board():
            return listdir(path)
        with _mp_errors():
            return listdir(self.host("." if path is None else path))

    def _ilistdir(self, path: Any = ".") -> Iterator[tuple[Any, int, int, int]]:
        """MicroPython's ``os.ilistdir``: (name, type, inode, size) per entry (the board's
        code alone calls it: CPython has none)."""
        with _mp_errors():
            entries = list(os.scandir(self.host(path)))
        found = []
        for entry in entries:
            is_dir = entry.is_dir()
            size = 0 if is_dir else entry.stat().st_size
            name = os.fsencode(entry.name) if isinstance(path, bytes) else entry.name
            found.append((name, _DIR if is_dir else _FILE, 0, size))
        return iter(found)

    def _stat(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        stat = self._real["stat"]
        if not self._from_board() or args or kwargs:
            return stat(path, *args, **kwargs)
        with _mp_errors():
            result = stat(self.host(path))
        mode = _DIR if os.path.isdir(self.host(path)) else _FILE
        mtime = int(result.st_mtime)
        return (mode, 0, 0, 0, 0, 0, result.st_size, mtime, mtime, mtime)

    def _statvfs(self, path: Any) -> Any:
        statvfs = self._real["statvfs"]
        if not self._from_board():
            return statvfs(path)
        with _mp_errors():
            return tuple(statvfs(self.host(path)))

    def _one_path(self, name: str) -> Callable[..., Any]:
        def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
            real = self._real[name]
            if not self._from_board():
                return real(path, *args, **kwargs)
            with _mp_errors():
                return real(self.host(path), *args, **kwargs)

        return wrapper

    def _rename(self, old: Any, new: Any, *args: Any, **kwargs: Any) -> None:
        rename = self._real["rename"]
        if not self._from_board():
            rename(old, new, *args, **kwargs)
            return
        with _mp_errors():
            rename(self.host(old), self.host(new))

    def _getcwd_wrapper(self) -> str:
        if not self._from_board():
            return self._getcwd()
        return self.board(self._getcwd())

    def _open(self, file: Any, *args: Any, **kwargs: Any) -> Any:
        open_ = self._real["open"]
        if isinstance(file, int) or not self._from_board():
            return open_(file, *args, **kwargs)
        with _mp_errors():
            return open_(self.host(file), *args, **kwargs)


class _FolderVfs:
    """The one filesystem, mounted at ``/``, as ``vfs.mount()`` lists it."""

    def __repr__(self) -> str:
        return "<VfsPosix>"


def _vfs_module() -> types.ModuleType:
    """MicroPython's ``vfs``, as far as a folder has it: ``mount()`` lists the folder at
    ``/`` (what mpremote's ``df`` asks); mounting or unmounting anything is refused."""
    module = types.ModuleType("vfs", "MicroPython's vfs module: one filesystem, at /.")
    mounted = [(_FolderVfs(), "/")]

    def mount(*args: Any, **kwargs: Any) -> list[tuple[Any, str]] | None:
        if args or kwargs:
            raise mp_oserror(errno.EPERM)
        return list(mounted)

    def umount(*args: Any) -> None:
        raise mp_oserror(errno.EPERM)

    module.__dict__.update(mount=mount, umount=umount, VfsPosix=_FolderVfs)
    return module


#: The loaders of a standard path entry, for the folders the path hook serves.
_LOADERS: Final = (
    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
    (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
)


@functools.lru_cache(maxsize=1024)
def _board_code(root: str, filename: str) -> bool:
    if filename.startswith("<"):
        return not filename.startswith("<frozen")
    return os.path.realpath(filename).startswith(root + os.sep)


@contextlib.contextmanager
def _mp_errors() -> Iterator[None]:
    """CPython's ``FileNotFoundError(2, 'No such file...', '/the/machine/path')`` becomes
    the board's ``OSError: [Errno 2] ENOENT``, with no path of the machine in it."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise mp_oserror(exc.errno) from None
