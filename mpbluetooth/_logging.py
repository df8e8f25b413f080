"""The ``MPBLUETOOTH_LOG`` switch: logging is silent unless asked for (like bleak's).

``MPBLUETOOTH_LOG=debug|info|warning|error`` sends the ``mpbluetooth.*`` loggers to
stderr at that level; adding ``,bumble`` (``MPBLUETOOTH_LOG=debug,bumble``) does the same
for Bumble's own loggers.

Bumble's loggers never propagate to the root logger: a board prints nothing of its host
stack, and Bumble itself configures the root logger as a side effect (a module-level
``logging.debug`` call, see ``_overrides.route_bumble_module_logging``), after which its
warnings (a failed pairing, a malformed CCCD write) would reach the program's stderr.
Asked for, they go to our handler only (not twice).
"""

from __future__ import annotations

import logging
import os

ENV_LOG = "MPBLUETOOTH_LOG"
_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
#: The loggers given our stderr handler so far (once each, however often this runs: the
#: CLI applies its options after importing mpbluetooth applied the environment).
_configured: set[str] = set()
#: Unknown values already said (once each).
_said: set[str] = set()


def configure_from_env(default: str = "", *, said: bool = False) -> None:
    """Apply ``MPBLUETOOTH_LOG`` (or ``default``): each logger it names gets one stderr
    handler, at the level it gives. ``said``: an unknown value was already said on the
    same stderr (by the launcher of a warm start), so it is not said again."""
    logging.getLogger("bumble").propagate = False
    words = [w.strip().lower() for w in os.environ.get(ENV_LOG, default).split(",") if w.strip()]
    levels = [w for w in words if w != "bumble"]
    if not levels:
        return
    named = getattr(logging, levels[0].upper(), None)
    unknown = not isinstance(named, int) or len(levels) > 1
    # Said, not ignored: the user asked for logs on stderr and would otherwise see nothing
    # and not know why. Warnings still reach stderr.
    level = named if isinstance(named, int) and not unknown else logging.WARNING
    names = ["mpbluetooth"] + (["bumble"] if "bumble" in words else [])
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if name not in _configured:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(handler)
            _configured.add(name)
    value = os.environ.get(ENV_LOG, default)
    if unknown and not said and value not in _said:
        _said.add(value)
        logging.getLogger(__name__).warning(
            "%s=%s: expected one of debug, info, warning, error, critical (optionally with "
            "',bumble'); showing warnings only",
            ENV_LOG,
            value,
        )
