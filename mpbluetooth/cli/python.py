"""``mpbluetooth-python``: the ``python`` command, with MicroPython's runtime installed first.

A MicroPython BLE program runs unmodified: ``import bluetooth``, ``micropython``,
``machine``, ``time.ticks_ms`` and ``asyncio.ThreadSafeFlag`` work, and the user's
own code gets the str-as-buffer transform (``bytes + str``) unless switched off
with ``--no-str-buffer`` or ``MPBLUETOOTH_STR_BUFFER=0``. Arguments, ``sys.argv``,
``sys.path[0]``, ``__main__`` and exit statuses follow ``python``'s rules, so
test harnesses written for ``python`` or ``micropython`` can call this instead.
"""

from __future__ import annotations

import builtins
import code
import codeop
import importlib.machinery
import io
import os
import runpy
import sys
import textwrap
import threading
import types
import zipfile
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .. import boards, compat
from .._scheduler import scheduler
from .._views import set_strict
from ..compat import _board, features, strbuf
from . import _warm
from ._board import STAY_ON_ENV, STAY_ON_MARKER
from ._lifeline import watch_parent

__all__ = ["main"]

PROG: Final = "mpbluetooth-python"
USAGE: Final = f"usage: {PROG} [option] ... [-c cmd | -m mod | file | -] [arg] ..."
_STAY_ON_POLL_S: Final = 0.05
_ROWS: Final = textwrap.fill(
    ", ".join(features.FEATURES), width=96, initial_indent=" " * 18, subsequent_indent=" " * 18
).lstrip()
HELP: Final = f"""{USAGE}
Runs a MicroPython program on CPython with mpbluetooth's runtime installed.
Options:
-c cmd          : program passed in as string (terminates option list)
-m mod          : run library module as a script (terminates option list);
                  -m mip install PACKAGE installs from micropython-lib's index
-i              : inspect interactively after running the program
-u              : force the stdout and stderr streams to be unbuffered
-B              : accepted for compatibility (transformed code is never cached)
-h, --help      : print this help message and exit
-V, --version   : print the version numbers and exit
--no-ROW        : switch off one MicroPython behaviour (also MPBLUETOOTH_ROW=0); ROW is one of
                  {_ROWS}
--ROW           : switch it back on (every row is on by default)
--strict        : release event memoryviews when the IRQ handler returns (also
                  MPBLUETOOTH_STRICT=1); else a kept one stays readable, with a warning
file            : program read from script file
-               : program read from stdin (default; interactive mode if a tty)
arg ...         : arguments passed to program in sys.argv[1:]
"""


class _UsageError(Exception):
    """A command line ``python`` itself would refuse (exit status 2)."""


@dataclass
class _Options:
    mode: Literal["code", "module", "file", "stdin"] = "stdin"
    target: str = ""
    args: list[str] = field(default_factory=list)
    unbuffered: bool = False
    inspect: bool = False
    #: MicroPython rows switched off (``features``).
    off: set[str] = field(default_factory=set)
    strict: bool = False
    action: Literal["run", "help", "version"] = "run"


def _parse(argv: list[str]) -> _Options:
    """Parse ``python``-style options up to the program; the rest belongs to the program."""
    options = _Options(off=features.env_off())
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if arg.startswith("--no-") and arg[5:] in features.FEATURES:
            options.off.add(arg[5:])
        elif arg[2:] in features.FEATURES:
            options.off.discard(arg[2:])
        elif arg == "--strict":
            options.strict = True
        elif arg in ("--help", "--version"):
            options.action = "help" if arg == "--help" else "version"
            return options
        elif arg.startswith("--"):
            raise _UsageError(f"unknown option {arg}")
        elif not arg.startswith("-") or arg == "-":
            break
        else:
            for position, letter in enumerate(arg[1:], start=1):
                if letter in "cm":
                    attached = arg[position + 1 :]
                    rest = argv[index + 1 :]
                    if not attached and not rest:
                        raise _UsageError(f"Argument expected for the -{letter} option")
                    options.mode = "code" if letter == "c" else "module"
                    options.target = attached or rest.pop(0)
                    options.args = rest
                    return options
                if letter == "u":
                    options.unbuffered = True
                elif letter == "i":
                    options.inspect = True
                elif letter in "hV":
                    options.action = "help" if letter == "h" else "version"
                    return options
                elif letter != "B":
                    raise _UsageError(f"unknown option -{letter}")
        index += 1
    rest = argv[index:]
    if rest and rest[0] != "-":
        options.mode, options.target = "file", rest[0]
    else:
        options.target = rest[0] if rest else ""
    options.args = rest[1:]
    return options


class _StdinReader(io.RawIOBase):
    """The program's stdin, read through the scheduler's idle point: on a board the
    scheduler runs while the program waits for input (``sys.stdin.readline()``,
    ``input()`` on a pipe), so its IRQ handlers do too. The buffered reader above it
    calls ``readinto`` only when it has nothing left, which is exactly when a read
    would block."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: Any) -> int:
        scheduler().wait_readable(self._fd)
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_stdin_through_the_scheduler() -> None:
    """Replace a piped ``sys.stdin`` by one that waits in the scheduler (see
    :class:`_StdinReader`). A terminal keeps CPython's own line editing."""
    stdin = sys.stdin
    if stdin is None or not scheduler().enabled:
        return
    try:
        fd = stdin.fileno()
        if os.isatty(fd):
            return
    except (OSError, ValueError):
        return
    wrapper = io.TextIOWrapper(
        io.BufferedReader(_StdinReader(fd)),
        encoding=stdin.encoding,
        errors=stdin.errors,
        line_buffering=bool(stdin.line_buffering),
    )
    sys.stdin = wrapper


def _unbuffer() -> None:
    """What ``python -u`` does: text streams written straight through to unbuffered files."""
    newline = None if os.name == "nt" else "\n"
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            continue
        stream.flush()
        raw = io.FileIO(stream.fileno(), "w", closefd=False)
        wrapper = io.TextIOWrapper(
            raw, encoding=stream.encoding, errors=stream.errors, newline=newline,
            write_through=True,
        )  # fmt: skip
        setattr(sys, name, wrapper)
        setattr(sys, f"__{name}__", wrapper)


def _install_hooks(str_buffer: bool) -> None:
    """Uncaught exceptions (main program and threads) get the MicroPython hints (str as a
    buffer, and the rows switched off) and lose the transform helpers' frames."""
    previous_hook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def prepare(exc: BaseException | None) -> None:
        if exc is not None:
            strbuf.strip_helper_frames(exc)
            strbuf.add_hint(exc, transform_on=str_buffer)

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        prepare(exc)
        previous_hook(kind, exc, exc.__traceback__)

    def thread_excepthook(args: Any) -> None:
        prepare(args.exc_value)
        previous_thread_hook(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def _set_path0(entry: str | None) -> None:
    """Replace the launcher's own ``sys.path[0]`` with the one ``python`` would give the program."""
    if sys.flags.safe_path or sys.flags.isolated or not sys.path:
        return
    if entry is None:
        del sys.path[0]
    else:
        sys.path[0] = entry


def _fresh_main(**attrs: Any) -> dict[str, Any]:
    """A new ``__main__`` module, as ``python`` sets it up, so the program's globals are its own."""
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __builtins__=builtins, __annotations__={}, __package__=None, __spec__=None,
        __loader__=importlib.machinery.BuiltinImporter,
    )  # fmt: skip
    module.__dict__.update(attrs)
    sys.modules["__main__"] = module
    return module.__dict__


def _compile(source: str | bytes, filename: str) -> types.CodeType:
    """The program's code, with the compiler-level rows that are on (``features``)."""
    return strbuf.compile_source(source, filename)


class _TransformingCompiler(codeop.CommandCompiler):
    """The interactive console's compiler, with the str-as-buffer transform."""

    def __call__(self, source: str, filename: str = "<input>", symbol: str = "single") -> Any:
        if super().__call__(source, filename, symbol) is None:
            return None  # incomplete input: ask for more lines
        return strbuf.compile_source(source, filename, symbol)


def _interact(namespace: dict[str, Any] | None = None) -> None:
    """The interactive prompt, in a fresh ``__main__`` or (``-i``) in the program's."""
    console = code.InteractiveConsole(_fresh_main() if namespace is None else namespace, "<stdin>")
    console.compile = _TransformingCompiler()
    banner = (
        ""
        if namespace is not None
        else f"{PROG} (Python {sys.version.split()[0]}): MicroPython's runtime is installed"
    )
    console.interact(banner=banner, exitmsg="")


def _micropython_path() -> list[str]:
    """The unix port's module path: ``MICROPYPATH`` (``os.pathsep``-separated) when set,
    else ``~/.micropython/lib``; MicroPython's ``.frozen`` entry has no meaning here."""
    value = os.environ.get("MICROPYPATH")
    entries = value.split(os.pathsep) if value is not None else ["~/.micropython/lib"]
    return [os.path.expanduser(e) for e in entries if e and e != ".frozen"]


def _add_micropython_path() -> None:
    """Put the MicroPython module path right after the program's own ``sys.path[0]``:
    the unix port's path (where ``mip`` installs), then the program folder's ``lib/``
    (what ``mpremote cp -r lib :`` puts in a board's ``/lib``, on every board's path)."""
    position = 0 if sys.flags.safe_path or sys.flags.isolated else 1
    folder = sys.path[0] if position and sys.path and sys.path[0] else os.getcwd()
    lib = os.path.join(folder, "lib")
    for offset, entry in enumerate([*_micropython_path(), lib]):
        if entry not in sys.path:
            sys.path.insert(min(position + offset, len(sys.path)), entry)


def _module_target(name: str) -> str:
    """``-m mip`` is MicroPython's installer (ours) unless the program's path has a ``mip``."""
    if name == "mip" and importlib.machinery.PathFinder.find_spec("mip") is None:
        return "mpbluetooth.compat.mip"
    return name


def _run(options: _Options) -> int:
    if options.mode == "code":
        sys.argv = ["-c", *options.args]
        _set_path0("")
        _add_micropython_path()
        exec(_compile(options.target, "<string>"), _fresh_main())
    elif options.mode == "module":
        sys.argv = ["-m", *options.args]
        _set_path0(os.getcwd())
        _add_micropython_path()
        _fresh_main()
        target = _module_target(options.target)
        run_as_main = getattr(runpy, "_run_module_as_main", None)
        if run_as_main is not None:
            run_as_main(target, alter_argv=True)
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif options.mode == "file":
        return _run_file(options)
    else:
        sys.argv = [options.target, *options.args]
        _set_path0("")
        _add_micropython_path()
        if not options.target and sys.stdin is not None and sys.stdin.isatty():
            _interact()
        else:
            source = sys.stdin.buffer.read() if sys.stdin is not None else b""
            exec(_compile(source, "<stdin>"), _fresh_main())
    return 0


def _run_file(options: _Options) -> int:
    path = os.path.abspath(options.target)
    sys.argv = [options.target, *options.args]
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        _set_path0(None)  # run_path puts the directory or archive there itself
        _add_micropython_path()
        runpy.run_path(path, run_name="__main__")
        return 0
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as exc:
        print(
            f"{PROG}: can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}", file=sys.stderr
        )
        return 2
    _set_path0(os.path.dirname(os.path.realpath(path)))
    _add_micropython_path()
    loader = importlib.machinery.SourceFileLoader("__main__", path)
    namespace = _fresh_main(__file__=path, __cached__=None, __loader__=loader)
    exec(_compile(source, path), namespace)
    return 0


def _report(exc: BaseException) -> None:
    """Print an uncaught exception through ``sys.excepthook``, minus the launcher's frames.

    A controller that cannot be opened (``TransportError``) is not a bug in the program: it
    gets one line naming the program's line, the transport, the cause and the hint,
    instead of a traceback through the stack's internals."""
    from .._errors import TransportError

    own_files = {
        __file__,
        runpy.__file__,
        getattr(runpy.__spec__, "origin", None),
        "<frozen runpy>",
    }
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in own_files:
        tb = tb.tb_next
    exc.__traceback__ = tb
    if isinstance(exc, TransportError):
        print(f"{PROG}: {_program_line(tb)}{_one_line(exc)}", file=sys.stderr)
        return
    sys.excepthook(type(exc), exc, tb)


def _program_line(tb: types.TracebackType | None) -> str:
    """``a.py, line 3: `` for the program's last frame before mpbluetooth's own."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if os.path.abspath(filename).startswith(package + os.sep):
            break
        where = f"{filename}, line {tb.tb_lineno}: "
        tb = tb.tb_next
    return where


def _one_line(exc: BaseException) -> str:
    from ._app import one_line

    return one_line(exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mpbluetooth-python``; returns the process exit status."""
    watch_parent()
    try:
        options = _parse(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        print(f"{exc}\n{USAGE}\nTry `{PROG} -h' for more information.", file=sys.stderr)
        return 2
    if options.action == "help":
        print(HELP, end="")
        return 0
    if options.action == "version":
        print(f"{PROG} (mpbluetooth {_version()}) Python {sys.version.split()[0]}")
        return 0
    if options.unbuffered:
        _unbuffer()
    str_buffer = "str-buffer" not in options.off
    compat.install(str_buffer=str_buffer, off=options.off - {"str-buffer"})
    try:
        board = boards.current()
    except ValueError as exc:
        print(f"{PROG}: {exc} (MPBLUETOOTH_BOARD)", file=sys.stderr)
        return 2
    _board.apply(board)
    if options.strict:
        set_strict(True)
    _install_hooks(str_buffer)
    _read_stdin_through_the_scheduler()
    inspect = options.inspect or bool(os.environ.get("PYTHONINSPECT"))
    try:
        status = _run(options)
    except SystemExit:
        if not inspect:
            raise
        status = 0
    except KeyboardInterrupt as exc:
        _report(exc)
        status = 130
    except BaseException as exc:  # the program's uncaught exception: print it, status 1
        _report(exc)
        status = 1
    if status == 0 and os.environ.get(STAY_ON_ENV) == "1" and _radio_on():
        _stay_on()
    if inspect and options.mode != "stdin":
        # As ``python -i``: the program's globals, and its radio, stay for the prompt.
        _interact(sys.modules["__main__"].__dict__)
        return 0
    return status


def _radio_on() -> bool:
    """Whether the program left ``bluetooth.BLE()`` active (without creating one)."""
    ble_module = sys.modules.get("mpbluetooth.ble")
    singleton = getattr(getattr(ble_module, "BLE", None), "_singleton", None)
    return bool(singleton is not None and singleton.active())


def _stay_on() -> None:
    """Keep the board on after the program returned, as a board at its REPL does.

    BLE IRQs keep being delivered; this ends when the radio is switched off (by a
    handler), on SIGTERM from ``mpbluetooth run`` when the other boards end, or Ctrl-C.
    """
    import signal
    import time

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (from ``run``) ends the wait like Ctrl-C, so the process exits normally:
    # atexit handlers close the radio and flush an HCI trace (--snoop).
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        # Inside the try: ``run`` may stop this board as soon as the marker is out, which
        # can be before ``print`` has returned.
        print(STAY_ON_MARKER, flush=True)
        while _radio_on():
            time.sleep(_STAY_ON_POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mpbluetooth")
    except PackageNotFoundError:
        return "unknown"


def entry() -> int:
    """``mpbluetooth-python`` and ``python -m mpbluetooth.cli.python``: the program in a
    warm server's fork when it can (``_warm``), else in this process."""
    argv = sys.argv[1:]
    if argv[:1] == [_warm.SERVER_ARG]:
        return _serve_warm(*argv[1:4])
    status = _warm.launch(argv)
    return main(argv) if status is None else status


def _serve_warm(path: str, lock_fd: str, idle: str) -> int:
    """A warm server's life; in each forked child, that child's program."""
    from . import _warm_server

    request = _warm_server.serve(path, int(lock_fd), float(idle))
    if request is None:
        return 0
    _warm_server.become(request)
    if request.get("entry", "python") == "python":
        return main(request["argv"][1:])  # this module's own, running as __main__
    run: Any = _warm_server.entry_point(request)
    status: int = run(request["argv"][1:])
    return status


if __name__ == "__main__":
    sys.exit(entry())
