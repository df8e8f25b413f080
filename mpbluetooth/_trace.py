"""HCI traces (``MPBLUETOOTH_SNOOP``): which file each instance writes, and writing it.

The per-instance file naming lives here alone: ``mpbluetooth run`` gives each script its
own trace with :func:`instance_spec`, and an instance whose file another instance of the
same process already writes gets its own name the same way, so both traces stay whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from ._errors import mp_oserror
from .constants import EINVAL

logger = logging.getLogger(__name__)

ENV_SNOOP = "MPBLUETOOTH_SNOOP"

#: Trace specs being written by instances of this process.
_OPEN: set[str] = set()


def snoop_spec() -> str | None:
    """The HCI trace to write, from ``MPBLUETOOTH_SNOOP``, as a Bumble snooper spec.

    A plain path means a btsnoop file (what Wireshark opens); ``btsnoop:...`` and
    ``pcapsnoop:...`` specs pass through. ``{pid}`` (the process) and ``{instance}`` (the
    instance's name, see :meth:`Trace.start`) in the path keep traces apart.
    """
    value = os.environ.get(ENV_SNOOP, "").strip()
    if not value:
        return None
    if value.startswith(("btsnoop:", "pcapsnoop:")):
        return value
    return f"btsnoop:file:{value}"


def instance_spec(spec: str, label: str) -> str:
    """``spec`` (a path or a snooper spec) made particular to ``label``: ``trace.log`` ->
    ``trace-LABEL.log``; a name without an extension gets ``-LABEL`` appended."""
    head, dot, tail = spec.rpartition(".")
    return f"{head}-{label}.{tail}" if dot and "/" not in tail else f"{spec}-{label}"


class Trace:
    """The trace one instance writes while it is active (none without ``MPBLUETOOTH_SNOOP``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._files: contextlib.ExitStack | None = None
        self._spec = ""

    def start(self, host: Any) -> None:
        """Attach a snooper to a new Bumble host (before it is powered on)."""
        spec = snoop_spec()
        if spec is None:
            return
        from bumble.snoop import create_snooper

        # Bumble would put its own counter for ``{instance}``: the instance's name is what
        # the user knows it by (``sim.Link.instance("alpha")``).
        spec = spec.replace("{instance}", self.name)
        if spec in _OPEN:
            spec = instance_spec(spec, self.name)
        files = contextlib.ExitStack()
        try:
            host.snooper = files.enter_context(create_snooper(spec))
        except Exception as exc:
            raise mp_oserror(EINVAL, f"cannot write the HCI trace {spec!r}: {exc}") from None
        self._files = files
        self._spec = spec
        _OPEN.add(spec)
        logger.info("%s: HCI trace to %s", self.name, spec)

    def stop(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
            _OPEN.discard(self._spec)


__all__ = ["Trace", "instance_spec", "snoop_spec", "ENV_SNOOP"]
