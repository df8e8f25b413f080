# Finds a temperature sensor by its advertised service, subscribes, prints a few
# notifications, reads the value once, then disconnects. Pair: sensor_peripheral.py.
import struct
import time

import bluetooth
from ble_advertising import name, services
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)

_ADV_IND = const(0)
_ENV_SENSE = bluetooth.UUID(0x181A)
_TEMPERATURE = bluetooth.UUID(0x2A6E)
_CCCD = bluetooth.UUID(0x2902)
_NOTIFICATIONS_WANTED = const(5)


class Central:
    def __init__(self, ble):
        self._ble = ble
        self._ble.irq(self._irq)
        self.addr = None
        self.conn = None
        self.range = None
        self.value_handle = None
        self.end_handle = None
        self.cccd = None
        self.notifications = 0
        self.finished = False

    def _irq(self, event, data):
        if event == _IRQ_SCAN_RESULT:
            addr_type, addr, adv_type, rssi, adv_data = data
            if self.addr is None and adv_type == _ADV_IND and _ENV_SENSE in services(adv_data):
                self.addr = (addr_type, bytes(addr))  # copy: addr is only valid in here
                print("found", name(adv_data))
                self._ble.gap_scan(None)
        elif event == _IRQ_SCAN_DONE:
            if self.addr:
                self._ble.gap_connect(*self.addr)
            else:
                print("no sensor found")
                self.finished = True
        elif event == _IRQ_PERIPHERAL_CONNECT:
            self.conn = data[0]
            print("connected")
            self._ble.gattc_discover_services(self.conn)
        elif event == _IRQ_GATTC_SERVICE_RESULT:
            conn, start, end, uuid = data
            if uuid == _ENV_SENSE:
                self.range = (start, end)
        elif event == _IRQ_GATTC_SERVICE_DONE:
            self._ble.gattc_discover_characteristics(self.conn, *self.range)
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            conn, end_handle, value_handle, properties, uuid = data
            if uuid == _TEMPERATURE:
                self.value_handle, self.end_handle = value_handle, end_handle
        elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
            self._ble.gattc_discover_descriptors(self.conn, self.value_handle, self.end_handle)
        elif event == _IRQ_GATTC_DESCRIPTOR_RESULT:
            conn, handle, uuid = data
            if uuid == _CCCD:
                self.cccd = handle
        elif event == _IRQ_GATTC_DESCRIPTOR_DONE:
            self._ble.gattc_write(self.conn, self.cccd, struct.pack("<H", 1), 1)
        elif event == _IRQ_GATTC_WRITE_DONE:
            print("subscribed, status", data[2])
        elif event == _IRQ_GATTC_NOTIFY:
            conn, handle, value = data
            if self.notifications < _NOTIFICATIONS_WANTED:
                self.notifications += 1
                print("notified: %.2f degC" % (struct.unpack("<h", value)[0] / 100))
                if self.notifications == _NOTIFICATIONS_WANTED:
                    self._ble.gattc_read(self.conn, self.value_handle)
        elif event == _IRQ_GATTC_READ_RESULT:
            print("read: %.2f degC" % (struct.unpack("<h", data[2])[0] / 100))
        elif event == _IRQ_GATTC_READ_DONE:
            self._ble.gap_disconnect(self.conn)
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            print("disconnected")
            self.finished = True


def main():
    ble = bluetooth.BLE()
    ble.active(True)
    central = Central(ble)
    ble.gap_scan(5000, 30000, 30000)
    deadline = time.ticks_add(time.ticks_ms(), 15000)
    while not central.finished and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        time.sleep_ms(20)
    print("notifications:", central.notifications)


if __name__ == "__main__":
    main()
