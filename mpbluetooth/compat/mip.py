"""MicroPython's package installer for CPython: ``mpbluetooth-python -m mip install PACKAGE``.

It reads micropython-lib's package index, as MicroPython's own ``mip`` does, and
installs into the first ``.../lib`` directory on ``sys.path`` (the launcher puts
``~/.micropython/lib``, or the ``MICROPYPATH`` entries, there), so ``import aioble``
works afterwards with no ``PYTHONPATH``.

The index layout (facts from micropython-lib's ``mip``): a package's description
is ``INDEX/package/py/NAME/VERSION.json`` (``VERSION`` defaults to ``latest``;
``py`` asks for source files, which is what CPython can run). It lists
``"hashes"`` (target path, short sha256; content at ``INDEX/file/HH/HASH``),
``"urls"`` (target path, URL, relative ones against the description's folder)
and ``"deps"`` (name, version), installed in turn. A package given as a URL or
``github:org/repo[/path]`` names a ``package.json`` (or one ``.py`` file) directly.

Beyond MicroPython's: ``--index`` and package URLs may also be a local folder or a
``file://`` URL (tests build an index in a temporary folder), and a downloaded
file whose sha256 does not start with its listed hash is refused.

Progress goes to stdout, as MicroPython's ``mip`` prints it: that output is the
command's interface.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final

__all__ = ["DEFAULT_INDEX", "install", "main"]

logger = logging.getLogger("mpbluetooth.compat.mip")

DEFAULT_INDEX: Final = "https://micropython.org/pi/v2"
_HOSTS: Final = {
    "github:": "https://raw.githubusercontent.com/{org}/{repo}/{branch}/{path}",
    "gitlab:": "https://gitlab.com/{org}/{repo}/-/raw/{branch}/{path}",
    "codeberg:": "https://codeberg.org/api/v1/repos/{org}/{repo}/raw/{path}?ref={branch}",
}
_URL_PREFIXES: Final = ("http://", "https://", "file://", *_HOSTS)
_TIMEOUT_S: Final = 30


class MipError(Exception):
    """A package or one of its files could not be installed."""


class Unreachable(MipError):
    """The index (or a file's host) did not answer at all: said as such, not as a
    package that does not exist."""


def _say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def _expand(url: str, version: str | None) -> str:
    """``github:org/repo/path`` -> the raw file URL at ``version`` (default ``HEAD``)."""
    for prefix, template in _HOSTS.items():
        if url.startswith(prefix):
            org, repo, *path = url[len(prefix) :].split("/")
            branch = version or "HEAD"
            return template.format(org=org, repo=repo, branch=branch, path="/".join(path))
    return url


def _fetch(url: str) -> bytes:
    """The bytes at ``url``: http(s), ``file://`` or a local path."""
    logger.debug("mip: fetching %s", url)
    if not url.startswith(_URL_PREFIXES):
        try:
            return Path(url).read_bytes()
        except OSError as exc:
            raise MipError(f"not found: {url}") from exc
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:  # the index answered: it has no such file
        raise MipError(f"not found: {url} ({exc})") from exc
    except (urllib.error.URLError, OSError) as exc:
        # No answer at all (offline, DNS, refused, timed out): not the package's fault.
        reason = getattr(exc, "reason", exc)
        parts = urllib.parse.urlsplit(url)
        raise Unreachable(
            f"cannot reach the package index at {parts.scheme}://{parts.netloc} ({reason}): "
            "offline, or a wrong --index / $MPBLUETOOTH_MIP_INDEX?"
        ) from exc


def _join(base: str, relative: str) -> str:
    if base.startswith(_URL_PREFIXES):
        return f"{base}/{relative}"
    return os.path.join(base, relative)


def _write(target: str, relative: str, data: bytes) -> None:
    destination = Path(target, relative)
    if not destination.resolve().is_relative_to(Path(target).resolve()):
        raise MipError(f"refusing to write outside the target: {relative}")
    _say("Copying:", destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".mip-tmp")
    temporary.write_bytes(data)
    os.replace(temporary, destination)


def _matches(data: bytes, short_hash: str) -> bool:
    return hashlib.sha256(data).hexdigest().startswith(short_hash)


def _install_json(url: str, index: str, target: str, version: str | None, seen: set[str]) -> None:
    try:
        description: dict[str, Any] = json.loads(_fetch(_expand(url, version)))
    except Unreachable:
        raise
    except MipError:
        raise MipError(f"Package not found: {url}") from None
    for relative, short_hash in description.get("hashes", ()):
        existing = Path(target, relative)
        if existing.is_file() and _matches(existing.read_bytes(), short_hash):
            _say("Exists:", existing)
            continue
        data = _fetch(_join(index, f"file/{short_hash[:2]}/{short_hash}"))
        if not _matches(data, short_hash):
            raise MipError(f"File {relative}: content does not match hash {short_hash}")
        _write(target, relative, data)
    base = url.rpartition("/")[0] if url.startswith(_URL_PREFIXES) else os.path.dirname(url)
    for relative, file_url in description.get("urls", ()):
        if not file_url.startswith(_URL_PREFIXES) and not os.path.isabs(file_url):
            file_url = _join(base, file_url)
        _write(target, relative, _fetch(_expand(file_url, version)))
    for dep, dep_version in description.get("deps", ()):
        _install_package(dep, index, target, dep_version or None, seen)


def _install_package(
    package: str, index: str, target: str, version: str | None, seen: set[str]
) -> None:
    if package in seen:
        return  # a dependency shared by two packages, or a cycle
    seen.add(package)
    if package.startswith(_URL_PREFIXES):
        if package.endswith((".py", ".mpy")):
            _say(f"Downloading {package} to {target}")
            name = package.rsplit("/", 1)[-1]
            _write(target, name, _fetch(_expand(package, version)))
            return
        if not package.endswith(".json"):
            package = package.rstrip("/") + "/package.json"
        _say(f"Installing {package} to {target}")
        _install_json(package, index, target, version, seen)
        return
    version = version or "latest"
    _say(f"Installing {package} ({version}) from {index} to {target}")
    _install_json(_join(index, f"package/py/{package}/{version}.json"), index, target, version,
                  seen)  # fmt: skip


def default_target() -> str | None:
    """The first ``sys.path`` entry ending in ``/lib``, as MicroPython's ``mip`` chooses."""
    for entry in sys.path:
        if entry.rstrip("/").endswith("/lib") and not entry.startswith("/rom"):
            return entry
    return None


def install(
    package: str,
    index: str | None = None,
    target: str | None = None,
    version: str | None = None,
    mpy: bool = True,
) -> bool:
    """Install ``package`` (and its dependencies) into ``target``; True on success.

    ``mpy`` is accepted for MicroPython's signature: CPython always gets source files.
    """
    target = target or default_target()
    if target is None:
        _say("Unable to find lib dir in sys.path")
        return False
    index = (index or os.environ.get("MPBLUETOOTH_MIP_INDEX") or DEFAULT_INDEX).rstrip("/")
    try:
        _install_package(package, index, target, version, set())
    except MipError as exc:
        _say(exc)
        _say("Package may be partially installed")
        return False
    _say("Done")
    return True


def main(argv: list[str] | None = None) -> int:
    """``mip install [--target DIR] [--index URL] PACKAGE[@VERSION]...``; exit status."""
    parser = argparse.ArgumentParser(prog="mip", description="MicroPython's package installer")
    commands = parser.add_subparsers(dest="command", required=True)
    installer = commands.add_parser("install", help="install packages from the index")
    installer.add_argument("-t", "--target", help="directory to install into")
    installer.add_argument("-i", "--index", help=f"package index (default {DEFAULT_INDEX})")
    installer.add_argument("--mpy", action="store_true", help="accepted; source is installed")
    installer.add_argument("--no-mpy", action="store_true", help="install source (always)")
    installer.add_argument("packages", nargs="+", metavar="PACKAGE[@VERSION]")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    ok = True
    for spec in args.packages:
        package, _, version = spec.partition("@")
        ok = install(package, args.index, args.target, version or None) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
