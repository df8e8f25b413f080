# A UART-style service (the Nordic UART Service layout): the central writes lines to RX,
# this device answers on TX by notification. Lines: "hello", "add A B", "bye".
# Pair: uart_console.py.
import time

import bluetooth
from ble_advertising import payload
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)

_UART = bluetooth.UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
_TX = (bluetooth.UUID("6E400003-B5A3-F393-E0A9-E50E24DCCA9E"), bluetooth.FLAG_NOTIFY)
_RX = (
    bluetooth.UUID("6E400002-B5A3-F393-E0A9-E50E24DCCA9E"),
    bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE,
)
_SERVICE = (_UART, (_TX, _RX))


class Uart:
    def __init__(self, ble, name="mpy-uart", rxbuf=100):
        self._ble = ble
        self._ble.active(True)
        self._ble.irq(self._irq)
        ((self._tx, self._rx),) = self._ble.gatts_register_services((_SERVICE,))
        # Append mode: back-to-back writes accumulate until we read them.
        self._ble.gatts_set_buffer(self._rx, rxbuf, True)
        self._connections = set()
        self._pending = b""
        self.lines = []
        self.served = False
        self._ble.gap_advertise(
            100000, adv_data=payload(name=name), resp_data=payload(services=[_UART])
        )

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self._connections.add(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self._connections.discard(data[0])
            self.served = True
        elif event == _IRQ_GATTS_WRITE and data[1] == self._rx:
            self._pending += self._ble.gatts_read(self._rx)
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                self.lines.append(line.decode())

    def write(self, text):
        for conn in list(self._connections):  # the IRQ may change the set meanwhile
            self._ble.gatts_notify(conn, self._tx, text + "\n")

    def close(self):
        for conn in list(self._connections):  # the IRQ may change the set meanwhile
            self._ble.gap_disconnect(conn)


def answer(line):
    words = line.split()
    if not words:
        return "?"
    if words[0] == "hello":
        return "hello from the uart"
    if words[0] == "add" and len(words) == 3:
        return str(int(words[1]) + int(words[2]))
    if words[0] == "bye":
        return "bye"
    return "unknown: " + line


def main():
    uart = Uart(bluetooth.BLE())
    print("waiting for a console")
    deadline = time.ticks_add(time.ticks_ms(), 20000)
    while not uart.served and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        while uart.lines:
            line = uart.lines.pop(0)
            print("got:", line)
            uart.write(answer(line))
            if line == "bye":
                time.sleep_ms(100)
                uart.close()
        time.sleep_ms(10)
    print("done")


if __name__ == "__main__":
    main()
