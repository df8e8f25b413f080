# A non-connectable beacon: a name and a counter in manufacturer data, for a few seconds.
# Pair: scanner.py.  Run both: mpbluetooth run examples/beacon.py examples/scanner.py
import struct
import time

import bluetooth
from ble_advertising import payload

NAME = "mpy-beacon"
COMPANY = 0xFFFF  # "no company": for tests and demos
SECONDS = 4

ble = bluetooth.BLE()
ble.active(True)
start = time.ticks_ms()
count = 0
print("beacon", NAME, "advertising for", SECONDS, "s")
while time.ticks_diff(time.ticks_ms(), start) < SECONDS * 1000:
    data = struct.pack("<HH", COMPANY, count)
    ble.gap_advertise(100000, payload(name=NAME, manufacturer=data), connectable=False)
    count += 1
    time.sleep_ms(500)
ble.gap_advertise(None)
print("beacon done after", count, "updates")
ble.active(False)
