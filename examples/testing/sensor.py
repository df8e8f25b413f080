# A temperature sensor (0x2A6E, sint16 in 0.01 degC) that a central reads and is notified of.
# Runs on a board as it is; examples/testing/test_sensor.py tests it on a simulated link.
import struct
import time

import bluetooth
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_ENV_SENSE = bluetooth.UUID(0x181A)
_TEMPERATURE = bluetooth.UUID(0x2A6E)
_SERVICE = (_ENV_SENSE, ((_TEMPERATURE, bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY),))
_ADV = b"\x02\x01\x06\x08\x09mpy-env"

ble = bluetooth.BLE()
ble.active(True)
((temperature_handle,),) = ble.gatts_register_services((_SERVICE,))
connections = set()


def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        connections.add(data[0])
        print("central connected")
    elif event == _IRQ_CENTRAL_DISCONNECT:
        connections.discard(data[0])
        ble.gap_advertise(100000, _ADV)


ble.irq(irq)
ble.gap_advertise(100000, _ADV)
print("advertising")
celsius = 21.5
while True:
    ble.gatts_write(temperature_handle, struct.pack("<h", int(celsius * 100)))
    for conn_handle in connections:
        ble.gatts_notify(conn_handle, temperature_handle)
    celsius += 0.25
    time.sleep_ms(200)
