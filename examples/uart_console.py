# The console end of uart_peripheral.py: finds the UART service, subscribes to TX, sends
# commands on RX and prints the answers. Pair: uart_peripheral.py.
import struct
import time

import bluetooth
from ble_advertising import services
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
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)

_UART = bluetooth.UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
_TX = bluetooth.UUID("6E400003-B5A3-F393-E0A9-E50E24DCCA9E")
_RX = bluetooth.UUID("6E400002-B5A3-F393-E0A9-E50E24DCCA9E")
_CCCD = bluetooth.UUID(0x2902)
COMMANDS = ("hello", "add 2 40", "bye")


class Console:
    def __init__(self, ble):
        self._ble = ble
        ble.irq(self._irq)
        self.addr = self.conn = self.range = None
        self.handles = {}
        self.cccd = None
        self.ready = False
        self.answers = []
        self.finished = False
        self._inbox = b""

    def _irq(self, event, data):
        if event == _IRQ_SCAN_RESULT:
            addr_type, addr, adv_type, rssi, adv_data = data
            if self.addr is None and _UART in services(adv_data):  # in the scan response
                self.addr = (addr_type, bytes(addr))
                self._ble.gap_scan(None)
        elif event == _IRQ_SCAN_DONE:
            if self.addr:
                self._ble.gap_connect(*self.addr)
            else:
                self.finished = True
        elif event == _IRQ_PERIPHERAL_CONNECT:
            self.conn = data[0]
            self._ble.gattc_discover_services(self.conn)
        elif event == _IRQ_GATTC_SERVICE_RESULT and data[3] == _UART:
            self.range = (data[1], data[2])
        elif event == _IRQ_GATTC_SERVICE_DONE:
            self._ble.gattc_discover_characteristics(self.conn, *self.range)
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            conn, end, value, properties, uuid = data
            self.handles[bluetooth.UUID(uuid)] = (value, end)
        elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
            self._ble.gattc_discover_descriptors(self.conn, *self.handles[_TX])
        elif event == _IRQ_GATTC_DESCRIPTOR_RESULT and data[2] == _CCCD and self.cccd is None:
            self.cccd = data[1]
        elif event == _IRQ_GATTC_DESCRIPTOR_DONE:
            self._ble.gattc_write(self.conn, self.cccd, struct.pack("<H", 1), 1)
        elif event == _IRQ_GATTC_WRITE_DONE:
            self.ready = True
        elif event == _IRQ_GATTC_NOTIFY:
            self._inbox += bytes(data[2])
            while b"\n" in self._inbox:
                line, self._inbox = self._inbox.split(b"\n", 1)
                self.answers.append(line.decode())
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            self.finished = True

    def send(self, line):
        self._ble.gattc_write(self.conn, self.handles[_RX][0], line + "\n", 0)


def main():
    ble = bluetooth.BLE()
    ble.active(True)
    console = Console(ble)
    ble.gap_scan(5000, 30000, 30000, True)  # active: the service is in the scan response
    deadline = time.ticks_add(time.ticks_ms(), 15000)

    def waiting(condition):
        return (
            not condition()
            and not console.finished
            and time.ticks_diff(deadline, time.ticks_ms()) > 0
        )

    while waiting(lambda: console.ready):
        time.sleep_ms(10)
    for command in COMMANDS:
        print(">", command)
        console.send(command)
        while waiting(lambda: console.answers):
            time.sleep_ms(10)
        if console.answers:
            print("<", console.answers.pop(0))
    while not console.finished and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        time.sleep_ms(10)
    print("console closed")


if __name__ == "__main__":
    main()
