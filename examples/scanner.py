# An observer: scan for two seconds and list what was heard, once per device.
# Pair: beacon.py.
import struct
import time

import bluetooth
from ble_advertising import manufacturer, name
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_ADV_TYPES = ("ADV_IND", "ADV_DIRECT_IND", "ADV_SCAN_IND", "ADV_NONCONN_IND", "SCAN_RSP")

seen = {}
done = False


def irq(event, data):
    global done
    if event == _IRQ_SCAN_RESULT:
        addr_type, addr, adv_type, rssi, adv_data = data
        key = bytes(addr)  # the memoryview is only valid inside the handler
        if key not in seen:
            seen[key] = (name(adv_data), _ADV_TYPES[adv_type], rssi, manufacturer(adv_data))
    elif event == _IRQ_SCAN_DONE:
        done = True


ble = bluetooth.BLE()
ble.irq(irq)
ble.active(True)
time.sleep_ms(300)  # let the beacon start
ble.gap_scan(2000, 30000, 30000)
while not done:
    time.sleep_ms(20)
for device_name, adv_type, rssi, maker in seen.values():
    counter = struct.unpack("<HH", maker)[1] if maker and len(maker) == 4 else None
    print("found", device_name or "?", adv_type, "rssi", rssi, "counter", counter)
print("scan done:", len(seen), "device(s)")
ble.active(False)
