"""The virtual controller used for simulation.

Built on Bumble's ``Controller``. Bumble's stock controller never completes an LE Create
Connection Cancel, so a ``gap_connect`` that times out would wedge the controller (every
later connect is refused); that is fixed here. The remaining fidelity fixes (scan
responses, advertising types, connection parameters) belong to the GAP issue.
"""

from __future__ import annotations

import asyncio

from bumble import hci
from bumble.controller import Controller


class SimController(Controller):
    """A Bumble virtual controller joined to a simulated link."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        if self.pending_le_connection is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # Core spec 7.8.13: the Command Complete comes first, then the Connection Complete
        # with "Unknown Connection Identifier".
        asyncio.get_running_loop().call_soon(self._send_connect_cancelled)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _send_connect_cancelled(self) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=0,
                peer_address=hci.Address.ANY,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )
