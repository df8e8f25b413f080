# L2CAP file transfer, sending end: connects to "mpy-files", opens a channel and sends a
# length-prefixed file, waiting for _IRQ_L2CAP_SEND_READY whenever a send stalls.
# Pair: l2cap_receiver.py.
import struct
import time

import bluetooth
from ble_advertising import name
from l2cap_receiver import MTU, PSM, checksum
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_L2CAP_CONNECT = const(23)
_IRQ_L2CAP_DISCONNECT = const(24)
_IRQ_L2CAP_RECV = const(25)
_IRQ_L2CAP_SEND_READY = const(26)

FILE_SIZE = const(20000)


class Sender:
    def __init__(self, ble):
        self._ble = ble
        self.addr = self.conn = self.cid = None
        self.peer_mtu = 0
        self.ready = True
        self.stalls = 0
        self.reply = None
        self.finished = False
        self._buf = bytearray(64)
        ble.irq(self._irq)

    def _irq(self, event, data):
        if event == _IRQ_SCAN_RESULT:
            if self.addr is None and name(data[4]) == "mpy-files":
                self.addr = (data[0], bytes(data[1]))
                self._ble.gap_scan(None)
        elif event == _IRQ_SCAN_DONE and self.addr:
            self._ble.gap_connect(*self.addr)
        elif event == _IRQ_PERIPHERAL_CONNECT:
            self.conn = data[0]
            self._ble.l2cap_connect(self.conn, PSM, MTU)
        elif event == _IRQ_L2CAP_CONNECT:
            self.cid, self.peer_mtu = data[1], data[4]
        elif event == _IRQ_L2CAP_SEND_READY:
            self.ready = True
        elif event == _IRQ_L2CAP_RECV:
            n = self._ble.l2cap_recvinto(data[0], data[1], self._buf)
            self.reply = bytes(self._buf[:n]).decode()
        elif event in (_IRQ_L2CAP_DISCONNECT, _IRQ_PERIPHERAL_DISCONNECT):
            self.finished = True

    def send(self, chunk):
        if not wait(lambda: self.ready or self.finished, 5000):
            raise OSError("no _IRQ_L2CAP_SEND_READY")
        # Clear the flag before sending: SEND_READY may arrive before l2cap_send returns.
        self.ready = False
        if self._ble.l2cap_send(self.conn, self.cid, chunk):
            self.ready = True
        else:
            self.stalls += 1  # sent, but out of credits: SEND_READY will follow


def wait(condition, ms):
    deadline = time.ticks_add(time.ticks_ms(), ms)
    while not condition() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        time.sleep_ms(5)
    return condition()


def main():
    ble = bluetooth.BLE()
    ble.active(True)
    sender = Sender(ble)
    ble.gap_scan(5000, 30000, 30000)
    if not wait(lambda: sender.cid is not None, 10000):
        print("no channel")
        return
    data = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(FILE_SIZE))
    message = struct.pack("<I", len(data)) + data
    start = time.ticks_ms()
    for offset in range(0, len(message), sender.peer_mtu):
        sender.send(message[offset : offset + sender.peer_mtu])
    wait(lambda: sender.reply is not None, 10000)
    took = max(time.ticks_diff(time.ticks_ms(), start), 1)
    print(
        "sent",
        len(data),
        "bytes in",
        (len(message) + sender.peer_mtu - 1) // sender.peer_mtu,
        "SDUs,",
        sender.stalls,
        "stalls",
    )
    print("receiver says:", sender.reply)
    print("checksum matches:", sender.reply == "ok %d %04x" % (len(data), checksum(data)))
    print("throughput: %d bytes/s" % (len(data) * 1000 // took))
    ble.gap_disconnect(sender.conn)
    wait(lambda: sender.finished, 5000)


if __name__ == "__main__":
    main()
