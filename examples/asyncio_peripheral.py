# asyncio on both ends: the IRQ handler only records events and sets a ThreadSafeFlag;
# coroutines wait on the flags. This device counts, notifying every 50 ms.
# Pair: asyncio_central.py.
import asyncio
import struct

import bluetooth
from ble_advertising import payload
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)

_COUNTER_SERVICE = bluetooth.UUID("9a3a0001-9d2c-4c5d-8a2b-6d1f7d6b1a01")
_COUNTER = (
    bluetooth.UUID("9a3a0002-9d2c-4c5d-8a2b-6d1f7d6b1a01"),
    bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY,
)
_COUNT_TO = const(10)

ble = bluetooth.BLE()
connected = asyncio.ThreadSafeFlag()
disconnected = asyncio.ThreadSafeFlag()
conn_handle = None


def irq(event, data):
    global conn_handle
    if event == _IRQ_CENTRAL_CONNECT:
        conn_handle = data[0]
        connected.set()
    elif event == _IRQ_CENTRAL_DISCONNECT:
        conn_handle = None
        disconnected.set()


async def main():
    ble.irq(irq)
    ble.active(True)
    ((counter,),) = ble.gatts_register_services(((_COUNTER_SERVICE, (_COUNTER,)),))
    ble.gap_advertise(50000, payload(name="count", services=[_COUNTER_SERVICE]))
    print("advertising")
    await asyncio.wait_for_ms(connected.wait(), 20000)
    print("connected")
    for n in range(1, _COUNT_TO + 1):
        if conn_handle is None:
            break
        ble.gatts_write(counter, struct.pack("<I", n))
        ble.gatts_notify(conn_handle, counter)  # no data: sends the stored value
        await asyncio.sleep_ms(50)
    await asyncio.wait_for_ms(disconnected.wait(), 10000)
    print("disconnected after counting to", n)


asyncio.run(main())
