"""Numbers of MicroPython's ``bluetooth`` contract: IRQ codes, flags, errno values.

Only ``FLAG_READ``, ``FLAG_WRITE``, ``FLAG_NOTIFY``, ``FLAG_INDICATE`` and
``FLAG_WRITE_NO_RESPONSE`` are re-exported by ``bluetooth`` itself (as on MicroPython);
the rest are here so our own code never spells a magic number.
"""

from __future__ import annotations

from typing import Final

# --- IRQ event codes (MicroPython's _IRQ_*) -------------------------------------------
IRQ_CENTRAL_CONNECT: Final = 1
IRQ_CENTRAL_DISCONNECT: Final = 2
IRQ_GATTS_WRITE: Final = 3
IRQ_GATTS_READ_REQUEST: Final = 4
IRQ_SCAN_RESULT: Final = 5
IRQ_SCAN_DONE: Final = 6
IRQ_PERIPHERAL_CONNECT: Final = 7
IRQ_PERIPHERAL_DISCONNECT: Final = 8
IRQ_GATTC_SERVICE_RESULT: Final = 9
IRQ_GATTC_SERVICE_DONE: Final = 10
IRQ_GATTC_CHARACTERISTIC_RESULT: Final = 11
IRQ_GATTC_CHARACTERISTIC_DONE: Final = 12
IRQ_GATTC_DESCRIPTOR_RESULT: Final = 13
IRQ_GATTC_DESCRIPTOR_DONE: Final = 14
IRQ_GATTC_READ_RESULT: Final = 15
IRQ_GATTC_READ_DONE: Final = 16
IRQ_GATTC_WRITE_DONE: Final = 17
IRQ_GATTC_NOTIFY: Final = 18
IRQ_GATTC_INDICATE: Final = 19
IRQ_GATTS_INDICATE_DONE: Final = 20
IRQ_MTU_EXCHANGED: Final = 21
IRQ_L2CAP_ACCEPT: Final = 22
IRQ_L2CAP_CONNECT: Final = 23
IRQ_L2CAP_DISCONNECT: Final = 24
IRQ_L2CAP_RECV: Final = 25
IRQ_L2CAP_SEND_READY: Final = 26
IRQ_CONNECTION_UPDATE: Final = 27
IRQ_ENCRYPTION_UPDATE: Final = 28
IRQ_GET_SECRET: Final = 29
IRQ_SET_SECRET: Final = 30
IRQ_PASSKEY_ACTION: Final = 31

# --- characteristic / descriptor flags -------------------------------------------------
FLAG_BROADCAST: Final = 0x0001
FLAG_READ: Final = 0x0002
FLAG_WRITE_NO_RESPONSE: Final = 0x0004
FLAG_WRITE: Final = 0x0008
FLAG_NOTIFY: Final = 0x0010
FLAG_INDICATE: Final = 0x0020
FLAG_AUTHENTICATED_SIGNED_WRITE: Final = 0x0040
FLAG_AUX_WRITE: Final = 0x0100
FLAG_READ_ENCRYPTED: Final = 0x0200
FLAG_READ_AUTHENTICATED: Final = 0x0400
FLAG_READ_AUTHORIZED: Final = 0x0800
FLAG_WRITE_ENCRYPTED: Final = 0x1000
FLAG_WRITE_AUTHENTICATED: Final = 0x2000
FLAG_WRITE_AUTHORIZED: Final = 0x4000

# --- GATTS read-request answers (ATT error codes) --------------------------------------
GATTS_NO_ERROR: Final = 0x00
GATTS_ERROR_READ_NOT_PERMITTED: Final = 0x02
GATTS_ERROR_WRITE_NOT_PERMITTED: Final = 0x03
GATTS_ERROR_INSUFFICIENT_AUTHENTICATION: Final = 0x05
GATTS_ERROR_INSUFFICIENT_AUTHORIZATION: Final = 0x08
GATTS_ERROR_INSUFFICIENT_ENCRYPTION: Final = 0x0F

# --- pairing --------------------------------------------------------------------------
IO_CAPABILITY_DISPLAY_ONLY: Final = 0
IO_CAPABILITY_DISPLAY_YESNO: Final = 1
IO_CAPABILITY_KEYBOARD_ONLY: Final = 2
IO_CAPABILITY_NO_INPUT_OUTPUT: Final = 3
IO_CAPABILITY_KEYBOARD_DISPLAY: Final = 4

PASSKEY_ACTION_NONE: Final = 0
PASSKEY_ACTION_INPUT: Final = 2
PASSKEY_ACTION_DISPLAY: Final = 3
PASSKEY_ACTION_NUMERIC_COMPARISON: Final = 4

# --- address modes for config(addr_mode=) ----------------------------------------------
ADDR_MODE_PUBLIC: Final = 0
ADDR_MODE_RANDOM_STATIC: Final = 1
ADDR_MODE_RPA: Final = 2
ADDR_MODE_NRPA: Final = 3

# --- MicroPython errno numbers (the Linux values) --------------------------------------
ENOENT: Final = 2
EIO: Final = 5
E2BIG: Final = 7
EAGAIN: Final = 11
ENOMEM: Final = 12
EBUSY: Final = 16
ENODEV: Final = 19
EINVAL: Final = 22
EOPNOTSUPP: Final = 95
ENOTCONN: Final = 107
ETIMEDOUT: Final = 110
EALREADY: Final = 114

# Connection handle MicroPython reports for "no connection" (connect timeout / cancel).
CONN_HANDLE_NONE: Final = 0xFFFF
