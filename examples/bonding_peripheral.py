# A peripheral that bonds (LE Secure Connections, Just Works) and keeps its keys in a
# JSON file, so a central it bonded with gets an encrypted link again after both restart,
# without pairing again. Pair: bonding_central.py (run the pair twice to see it).
import time

import bluetooth
from ble_advertising import payload
from bond_store import BondStore
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IO_CAPABILITY_NO_INPUT_OUTPUT = const(3)

store = BondStore("bonding_peripheral_secrets.json")
state = {"done": False}


def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        print("central connected")
    elif event == _IRQ_ENCRYPTION_UPDATE:
        conn, encrypted, authenticated, bonded, key_size = data
        print("encryption update:", encrypted, authenticated, bonded, key_size)
    elif event == _IRQ_CENTRAL_DISCONNECT:
        state["done"] = True
    elif event == _IRQ_GET_SECRET:
        return store.get(*data)
    elif event == _IRQ_SET_SECRET:
        return store.set(*data)


ble = bluetooth.BLE()
ble.config(bond=True, le_secure=True, mitm=False, io=_IO_CAPABILITY_NO_INPUT_OUTPUT)
ble.irq(irq)
ble.active(True)
ble.config(addr_mode=2)  # a resolvable private address, resolved by bonded peers
print("secrets loaded:", store.loaded)
ble.gap_advertise(50000, payload(name="mpy-bond"))
deadline = time.ticks_add(time.ticks_ms(), 20000)
while not state["done"] and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(20)
print("secrets stored this run:", store.stored)
