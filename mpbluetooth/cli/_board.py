"""What ``mpbluetooth run`` and the launcher it starts agree on for a board that stays on.

Kept apart from both so that importing ``mpbluetooth.cli`` (which imports ``run``)
does not import the launcher before ``python -m mpbluetooth.cli.python`` runs it.
"""

from __future__ import annotations

from typing import Final

#: Set by ``mpbluetooth run``: a program that returns with its radio on stays on.
STAY_ON_ENV: Final = "MPBLUETOOTH_STAY_ON"
#: The line that tells ``mpbluetooth run`` this board stays on (never shown to the user).
STAY_ON_MARKER: Final = "\x00mpbluetooth:stay-on"
