# Connects to "mpy-bond" and asks for security: the first run pairs and bonds (keys saved
# to a JSON file); later runs re-encrypt from the saved keys. Pair: bonding_peripheral.py.
import time

import bluetooth
from ble_advertising import name
from bond_store import BondStore
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

store = BondStore("bonding_central_secrets.json")
state = {"addr": None, "conn": None, "encrypted": None, "done": False}


def irq(event, data):
    if event == _IRQ_SCAN_RESULT:
        if state["addr"] is None and name(data[4]) == "mpy-bond":
            state["addr"] = (data[0], bytes(data[1]))
            ble.gap_scan(None)
    elif event == _IRQ_SCAN_DONE and state["addr"]:
        ble.gap_connect(*state["addr"])
    elif event == _IRQ_PERIPHERAL_CONNECT:
        state["conn"] = data[0]
        ble.gap_pair(data[0])
    elif event == _IRQ_ENCRYPTION_UPDATE:
        conn, encrypted, authenticated, bonded, key_size = data
        state["encrypted"] = (encrypted, authenticated, bonded, key_size)
        print("encryption update:", encrypted, authenticated, bonded, key_size)
    elif event == _IRQ_PERIPHERAL_DISCONNECT:
        state["done"] = True
    elif event == _IRQ_GET_SECRET:
        return store.get(*data)
    elif event == _IRQ_SET_SECRET:
        return store.set(*data)


ble = bluetooth.BLE()
ble.config(bond=True, le_secure=True, mitm=False, io=3)
ble.irq(irq)
ble.active(True)
print("secrets loaded:", store.loaded)
ble.gap_scan(5000, 30000, 30000)
deadline = time.ticks_add(time.ticks_ms(), 15000)
while state["encrypted"] is None and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(20)
if state["conn"] is not None:
    ble.gap_disconnect(state["conn"])
while not state["done"] and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(20)
print("secrets stored this run:", store.stored)
