"""The ``MPBLUETOOTH_LOG`` switch: logging is silent unless asked for (like bleak's).

``MPBLUETOOTH_LOG=debug|info|warning|error`` sends the ``mpbluetooth.*`` loggers to
stderr at that level; adding ``,bumble`` (``MPBLUETOOTH_LOG=debug,bumble``) does the same
for Bumble's own loggers.
"""

from __future__ import annotations

import logging
import os

ENV_LOG = "MPBLUETOOTH_LOG"
_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_configured = False


def configure_from_env(default: str = "") -> None:
    """Apply ``MPBLUETOOTH_LOG`` (or ``default``) once per process."""
    global _configured
    if _configured:
        return
    words = [w.strip().lower() for w in os.environ.get(ENV_LOG, default).split(",") if w.strip()]
    levels = [w for w in words if w != "bumble"]
    if not levels:
        return
    named = getattr(logging, levels[0].upper(), None)
    unknown = not isinstance(named, int) or len(levels) > 1
    # Said, not ignored: the user asked for logs on stderr and would otherwise see nothing
    # and not know why. Warnings still reach stderr.
    level = named if isinstance(named, int) and not unknown else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    names = ["mpbluetooth"] + (["bumble"] if "bumble" in words else [])
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
    _configured = True
    if unknown:
        logging.getLogger(__name__).warning(
            "%s=%s: expected one of debug, info, warning, error, critical (optionally with "
            "',bumble'); showing warnings only",
            ENV_LOG,
            os.environ.get(ENV_LOG, default),
        )
