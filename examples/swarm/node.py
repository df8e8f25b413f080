# One node of examples/swarm/swarm.py: NODE_ROLE=peripheral serves a greeting named
# node-NODE_INDEX; NODE_ROLE=central finds the peripheral of the same index, reads the
# greeting and disconnects. A MicroPython program: it runs on a board as well.
import os
import time

import bluetooth
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_READ_RESULT = const(15)

_SERVICE = bluetooth.UUID("6e400001-0000-4000-8000-00805f9b5353")
_GREETING = bluetooth.UUID("6e400002-0000-4000-8000-00805f9b5353")

role = os.getenv("NODE_ROLE")
index = int(os.getenv("NODE_INDEX"))
name = b"node-%d" % index
state = {}

ble = bluetooth.BLE()


def adv_name(adv):
    i = 0
    while i + 1 < len(adv):
        if adv[i + 1] == 0x09:
            return bytes(adv[i + 2 : i + 1 + adv[i]])
        i += 1 + adv[i]
    return None


def irq(event, data):
    if event == _IRQ_SCAN_RESULT and "peer" not in state:
        addr_type, addr, _, _, adv = data
        if adv_name(adv) == name:
            state["peer"] = (addr_type, bytes(addr))
            ble.gap_scan(None)
    elif event == _IRQ_SCAN_DONE:
        state["scan_done"] = True
    elif event in (_IRQ_PERIPHERAL_CONNECT, _IRQ_CENTRAL_CONNECT):
        state["conn"] = data[0]
    elif event in (_IRQ_PERIPHERAL_DISCONNECT, _IRQ_CENTRAL_DISCONNECT):
        state["gone"] = True
    elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
        state["handle"] = data[2]
    elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
        state["discovered"] = True
    elif event == _IRQ_GATTC_READ_RESULT:
        state["value"] = bytes(data[2])


def wait_for(key, timeout_ms=20000):
    start = time.ticks_ms()
    while key not in state:
        if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
            raise SystemExit("%s: no %s within %d ms" % (name.decode(), key, timeout_ms))
        time.sleep_ms(5)
    return state[key]


ble.irq(irq)
ble.active(True)
if role == "peripheral":
    ((handle,),) = ble.gatts_register_services(((_SERVICE, ((_GREETING, bluetooth.FLAG_READ),)),))
    ble.gatts_write(handle, b"hello from " + name)
    ble.gap_advertise(50000, b"\x02\x01\x06" + bytes((len(name) + 1, 0x09)) + name)
    wait_for("conn", 60000)
    wait_for("gone", 60000)
    print(name.decode(), "served its greeting")
else:
    ble.gap_scan(20000, 30000, 30000)
    addr_type, addr = wait_for("peer")
    wait_for("scan_done")
    ble.gap_connect(addr_type, addr)
    conn = wait_for("conn")
    ble.gattc_discover_characteristics(conn, 1, 0xFFFF, _GREETING)
    wait_for("discovered")
    ble.gattc_read(conn, state["handle"])
    print("central %d read %r" % (index, wait_for("value")))
    ble.gap_disconnect(conn)
    wait_for("gone")
ble.active(False)
