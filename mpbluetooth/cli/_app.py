"""The ``mpbluetooth`` command group: how subcommands register, the global options, errors.

A subcommand is a module of this package whose function is decorated with :func:`command`;
importing the module registers it (``cli.main`` imports them all). Modules import only
``click`` and the standard library at the top: Bumble, the hub and anything POSIX-only are
imported when a command runs, so ``--help`` is quick and every command that can work on
Windows or macOS imports there.

Every failure is one line on stderr, ``mpbluetooth COMMAND: what went wrong``, with exit
status 2 for a bad command line and 1 for a failure while running.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import re
import signal
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any, Final

import click

from .. import __version__
from .._logging import ENV_LOG, configure_from_env
from ._lifeline import watch_parent
from ._options import ENVIRONMENT, received

PROG: Final = "mpbluetooth"
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


class Failure(click.ClickException):
    """A command failed for a reason the user can act on: one line, exit status 1.

    The line starts with the command's path (``mpbluetooth scan: ...``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        ctx = click.get_current_context(silent=True)
        self.where = ctx.command_path if ctx is not None else PROG

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure for an exception that ends a command (a transport that will not
        open, a hub that does not answer), with its errno said once."""
        return cls(one_line(exc))


def one_line(exc: BaseException) -> str:
    """``exc`` as one line, its errno said once, in front, as Python prints an OSError.

    A transport error wraps its cause's text, which itself often wraps an ``OSError``:
    ``[Errno 2] cannot open ...: [Errno 2] could not open port ...: [Errno 2] No such file``
    becomes ``[Errno 2] cannot open ...: could not open port ...: No such file``.
    """
    code = exc.errno if isinstance(exc, OSError) else None
    text = re.sub(r"\[Errno -?\d+\] ", "", str(exc) or type(exc).__name__)
    text = " ".join(text.split())
    if isinstance(code, int) and code > 0:
        return f"[Errno {code}] {text}"
    return text


def _check_level(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    words = [w.strip().lower() for w in value.split(",") if w.strip()]
    levels = [w for w in words if w != "bumble"]
    if len(levels) != 1 or levels[0] not in _LEVELS:
        if _from_env(ctx, param):
            return None  # importing mpbluetooth said so, as in every program that uses it
        raise click.BadParameter(
            f"{value!r}: expected one of {', '.join(_LEVELS)}, optionally with ',bumble'",
            param_hint="--log-level",
        )
    return ",".join(words)


def _from_env(ctx: click.Context, param: click.Parameter) -> bool:
    source = ctx.get_parameter_source(param.name or "")
    return source is click.core.ParameterSource.ENVIRONMENT


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    try:
        bumble = metadata.version("bumble")
    except metadata.PackageNotFoundError:
        bumble = "not installed"
    click.echo(f"{PROG} {__version__} (Bumble {bumble}, Python {platform.python_version()})")
    ctx.exit(0)


def _environment_epilog() -> str:
    # "\b" keeps click from re-wrapping the block into one paragraph.
    width = max(len(name) for name, _ in ENVIRONMENT)
    lines = [f"  {name:<{width}}  {text}" for name, text in ENVIRONMENT]
    return (
        "\b\nEnvironment (read by any program using mpbluetooth, not only by this command;\n"
        "the README's 'Environment variables', also the package's PyPI page, says more):\n"
        + "\n".join(lines)
        + "\n\n"
        "\b\nExamples:\n"
        "  mpbluetooth demo\n"
        "  mpbluetooth run examples/sensor_peripheral.py examples/sensor_central.py\n"
        "  mpbluetooth -v scan --transport usb:0 --duration 10"
    )


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_environment_epilog(),
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the versions of mpbluetooth, Bumble and Python, then exit.",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more on stderr: -v the info level, -vv debug (for the scripts of `run` too).",
)
@click.option(
    "--log-level",
    envvar=ENV_LOG,
    show_envvar=True,
    metavar="LEVEL[,bumble]",
    callback=_check_level,
    help=f"Log the mpbluetooth.* loggers at LEVEL ({', '.join(_LEVELS)}); ',bumble' adds "
    "Bumble's. Wins over -v when given on the command line.",
)
@click.pass_context
def group(ctx: click.Context, verbose: int, log_level: str | None) -> int:
    """MicroPython's bluetooth module on CPython, over the Bumble host stack.

    Run MicroPython BLE programs as simulated boards, host a simulated link for other
    processes, or look at a real controller. `mpbluetooth-python` (a separate command)
    is `python` with MicroPython's runtime installed.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        return 2
    _configure_logging(ctx, verbose, log_level)
    return 0


def _configure_logging(ctx: click.Context, verbose: int, log_level: str | None) -> None:
    """--log-level on the command line, else -v, else $MPBLUETOOTH_LOG, else the command's
    own default. The choice goes into the environment, so the processes a command starts
    (the scripts of ``run``) log alike."""
    from_line = log_level is not None and not _from_env(ctx, _param(ctx, "log_level"))
    if from_line or not verbose:
        chosen = log_level
    else:
        chosen = "debug" if verbose > 1 else "info"
    if chosen is None:
        command = group.commands.get(ctx.invoked_subcommand or "")
        chosen = getattr(command, "log_default", "") or None
    if chosen is None:
        return
    os.environ[ENV_LOG] = chosen
    configure_from_env()
    # Importing mpbluetooth already applied an earlier $MPBLUETOOTH_LOG: set the level again.
    level = getattr(logging, chosen.split(",")[0].upper())
    logging.getLogger("mpbluetooth").setLevel(level)
    if "bumble" in chosen.split(","):
        logging.getLogger("bumble").setLevel(level)


def _param(ctx: click.Context, name: str) -> click.Parameter:
    return next(p for p in ctx.command.params if p.name == name)


def command(
    name: str, *, log_default: str = "", **settings: Any
) -> Callable[[Callable[..., Any]], click.Command]:
    """Register the decorated function as ``mpbluetooth NAME`` (``cls=click.Group`` for a
    command with subcommands of its own). The function returns the exit status.

    ``log_default``: the log level when neither an option nor ``$MPBLUETOOTH_LOG`` gives one
    (a server says what it does)."""

    def register(function: Callable[..., Any]) -> click.Command:
        made = group.command(name, **settings)(function)
        made.log_default = log_default  # type: ignore[attr-defined]
        return made

    return register


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    watch_parent()
    received.clear()  # a command run in-process again starts uninterrupted
    args = list(sys.argv[1:] if argv is None else argv)
    where = _command_path(args)
    try:
        # click's own ``main`` would print an empty line on Ctrl-C: its parts, without.
        with group.make_context(PROG, args) as ctx:
            status = group.invoke(ctx)
    except KeyboardInterrupt:
        return _interrupted(where)
    except Failure as exc:
        click.echo(f"{exc.where}: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        message = exc.format_message().rstrip(".")
        click.echo(f"{where}: {message} (see '{where} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"{PROG}: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return _interrupted(where)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `mpbluetooth scan | head`
            return 1
        raise
    if signal.SIGINT in received:
        return _interrupted(where)
    return status if isinstance(status, int) else 0


def _command_path(args: list[str]) -> str:
    """``mpbluetooth COMMAND`` for the command line ``args``, as an interruption names it."""
    name = next((word for word in args if word in group.commands), None)
    return f"{PROG} {name}" if name is not None else PROG


def _interrupted(where: str) -> int:
    """Ctrl-C: one quiet line and the shell's status for SIGINT, 128 + 2."""
    click.echo(f"{where}: interrupted", err=True)
    return 130
