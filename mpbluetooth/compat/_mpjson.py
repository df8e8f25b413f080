"""MicroPython's ``json`` for the user's code: ``import json`` there gives this module.

Differences from CPython's ``json`` that MicroPython programs rely on:

* ``bytes`` are written as a JSON string of their characters (aioble's
  ``security.py`` saves its bond keys this way at every start). Bytes that are not
  valid UTF-8 are written as the characters U+0080..U+00FF; MicroPython writes
  the raw bytes, which no JSON reader accepts.
* Non-ASCII text is written as itself, not as ``\\uXXXX`` escapes.
* ``dump`` encodes the whole document before it writes, so an unserialisable value
  raises before the file is touched and a secrets file is never left half written.

The rest (``loads``, ``load``, ``JSONDecodeError``...) is CPython's own.
"""

from __future__ import annotations

import json as _json
import logging as _logging
from json import JSONDecodeError, JSONDecoder, JSONEncoder, load, loads
from typing import IO as _IO
from typing import Any as _Any

__all__ = ["JSONDecodeError", "JSONDecoder", "JSONEncoder", "dump", "dumps", "load", "loads"]

_logger = _logging.getLogger("mpbluetooth.compat.json")


class _MicroPythonEncoder(_json.JSONEncoder):
    """CPython's encoder, with bytes as strings, as MicroPython's printer writes them."""

    def default(self, o: _Any) -> _Any:
        if isinstance(o, bytes):
            try:
                return o.decode()
            except UnicodeDecodeError:
                return o.decode("latin-1")
        return super().default(o)


def dumps(obj: _Any, separators: tuple[str, str] | None = None, **kwargs: _Any) -> str:
    """``obj`` as JSON text; MicroPython's only option is ``separators``."""
    kwargs.setdefault("ensure_ascii", False)
    return _json.dumps(obj, separators=separators, cls=_MicroPythonEncoder, **kwargs)


def dump(
    obj: _Any, stream: _IO[str], separators: tuple[str, str] | None = None, **kwargs: _Any
) -> None:
    """Write ``obj`` as JSON to ``stream`` in one write, after it is fully encoded."""
    text = dumps(obj, separators=separators, **kwargs)
    _logger.debug("json.dump: %d characters to %r", len(text), stream)
    stream.write(text)
