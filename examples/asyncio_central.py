# asyncio central: each step waits on a ThreadSafeFlag that the IRQ handler sets, with a
# timeout, as aioble does. Pair: asyncio_peripheral.py.
import asyncio
import struct

import bluetooth
from ble_advertising import services
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_NOTIFY = const(18)

_COUNTER_SERVICE = bluetooth.UUID("9a3a0001-9d2c-4c5d-8a2b-6d1f7d6b1a01")
_COUNTER = bluetooth.UUID("9a3a0002-9d2c-4c5d-8a2b-6d1f7d6b1a01")

ble = bluetooth.BLE()
step = asyncio.ThreadSafeFlag()
notified = asyncio.ThreadSafeFlag()
state = {"addr": None, "conn": None, "value": None, "counts": [], "gone": False}


def irq(event, data):
    if event == _IRQ_SCAN_RESULT:
        if state["addr"] is None and _COUNTER_SERVICE in services(data[4]):
            state["addr"] = (data[0], bytes(data[1]))
            ble.gap_scan(None)
    elif event == _IRQ_SCAN_DONE:
        step.set()
    elif event == _IRQ_PERIPHERAL_CONNECT:
        state["conn"] = data[0]
        step.set()
    elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
        state["value"] = data[2]
    elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
        step.set()
    elif event == _IRQ_GATTC_NOTIFY:
        state["counts"].append(struct.unpack("<I", data[2])[0])
        notified.set()
    elif event == _IRQ_PERIPHERAL_DISCONNECT:
        state["gone"] = True
        notified.set()


async def main():
    ble.irq(irq)
    ble.active(True)
    ble.gap_scan(5000, 30000, 30000)
    await asyncio.wait_for_ms(step.wait(), 6000)
    ble.gap_connect(*state["addr"])
    await asyncio.wait_for_ms(step.wait(), 5000)
    print("connected")
    ble.gattc_discover_characteristics(state["conn"], 1, 0xFFFF, _COUNTER)
    await asyncio.wait_for_ms(step.wait(), 5000)
    print("counter at handle", state["value"])
    while len(state["counts"]) < 10 and not state["gone"]:
        await asyncio.wait_for_ms(notified.wait(), 2000)
    print("counts:", state["counts"])
    ble.gap_disconnect(state["conn"])
    await asyncio.sleep_ms(100)


asyncio.run(main())
