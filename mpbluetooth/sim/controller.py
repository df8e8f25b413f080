"""The virtual controller used for simulation.

Built on Bumble's ``Controller``. Its behaviour fixes (scan responses, advertising types,
connection cancel, parameters) are the GAP issue's work; what is here already is the
piece the foundation needs: one controller per instance with a stable public address.
"""

from __future__ import annotations

from bumble.controller import Controller


class SimController(Controller):
    """A Bumble virtual controller joined to a simulated link."""
