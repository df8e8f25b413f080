# An environmental sensor: temperature (0x2A6E, sint16, 0.01 degC) readable and notified.
# Pair: sensor_central.py.  mpbluetooth run examples/sensor_peripheral.py examples/sensor_central.py
import struct
import time

import bluetooth
from ble_advertising import payload
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)

_ENV_SENSE = bluetooth.UUID(0x181A)
_TEMPERATURE = (bluetooth.UUID(0x2A6E), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY)
_SERVICE = (_ENV_SENSE, (_TEMPERATURE,))
_APPEARANCE_THERMOMETER = const(768)


class Sensor:
    def __init__(self, ble, name="mpy-temp"):
        self._ble = ble
        self._ble.active(True)
        self._ble.irq(self._irq)
        ((self._handle,),) = self._ble.gatts_register_services((_SERVICE,))
        self._connections = set()
        self._served = False
        self._payload = payload(
            name=name, services=[_ENV_SENSE], appearance=_APPEARANCE_THERMOMETER
        )
        self._advertise()

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            conn_handle, _, _ = data
            self._connections.add(conn_handle)
            print("central connected")
        elif event == _IRQ_CENTRAL_DISCONNECT:
            conn_handle, _, _ = data
            self._connections.discard(conn_handle)
            self._served = True
            print("central disconnected")

    def _advertise(self, interval_us=100000):
        self._ble.gap_advertise(interval_us, adv_data=self._payload)

    def set_temperature(self, celsius, notify=False):
        # Subscribed centrals get a notification (send_update obeys each link's CCCD).
        self._ble.gatts_write(self._handle, struct.pack("<h", int(celsius * 100)), notify)

    def is_connected(self):
        return len(self._connections) > 0

    def served(self):
        return self._served and not self._connections


def main():
    sensor = Sensor(bluetooth.BLE())
    temperature = 21.5
    sensor.set_temperature(temperature)
    print("advertising")
    deadline = time.ticks_add(time.ticks_ms(), 20000)
    while not sensor.served() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        if sensor.is_connected():
            temperature += 0.25
            sensor.set_temperature(temperature, notify=True)
        time.sleep_ms(100)
    print("done")


if __name__ == "__main__":
    main()
