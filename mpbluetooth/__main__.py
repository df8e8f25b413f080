"""``python -m mpbluetooth``: the same as the ``mpbluetooth`` command."""

import sys

from .cli import main

sys.exit(main())
