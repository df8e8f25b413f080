"""The simulated radio medium: Bumble's ``LocalLink`` with its routing fixed.

Bumble's link stamps every LE data packet with the sender's *random* address, so the
receiver cannot find the connection when the link was made with a public address (our
simulated controllers have one, SPEC D6) and the data is dropped. Here the source is the
address the sender's connection actually uses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bumble import core
from bumble.link import LocalLink


class SimLink(LocalLink):
    """A ``LocalLink`` whose LE data carries the right source address."""

    def send_acl_data(
        self,
        sender_controller: Any,
        destination_address: Any,
        transport: core.PhysicalTransport,
        data: bytes,
    ) -> None:
        if transport != core.PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        connection = sender_controller.le_connections.get(destination_address)
        source = connection.self_address if connection else sender_controller.random_address
        destination = self.find_le_controller(destination_address)
        if destination is not None:
            asyncio.get_running_loop().call_soon(
                destination.on_link_acl_data, source, transport, data
            )
