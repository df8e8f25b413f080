# L2CAP file transfer, receiving end: listens on a PSM, takes a length-prefixed file over
# a credit-based channel and answers with its size and checksum.
# Pair: l2cap_sender.py.  mpbluetooth run examples/l2cap_receiver.py examples/l2cap_sender.py
import struct
import time

import bluetooth
from ble_advertising import payload
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_L2CAP_ACCEPT = const(22)
_IRQ_L2CAP_CONNECT = const(23)
_IRQ_L2CAP_DISCONNECT = const(24)
_IRQ_L2CAP_RECV = const(25)

PSM = const(0x80)
MTU = const(512)


def checksum(data, total=0):
    # Fletcher-16: cheap enough for a board, good enough to catch a lost or reordered block.
    a, b = total & 0xFF, total >> 8
    for byte in data:
        a = (a + byte) % 255
        b = (b + a) % 255
    return (b << 8) | a


class Receiver:
    def __init__(self, ble):
        self._ble = ble
        self.channel = None
        self.expected = None
        self.received = 0
        self.total = 0
        self.header = b""
        self.done = False
        self._buf = bytearray(MTU)
        ble.irq(self._irq)

    def _irq(self, event, data):
        if event == _IRQ_L2CAP_ACCEPT:
            conn, cid, psm, our_mtu, peer_mtu = data
            print("accepting a channel on psm", psm)
            return 0  # accept
        elif event == _IRQ_L2CAP_CONNECT:
            self.channel = (data[0], data[1])
            print("channel open, mtu", data[3], "peer mtu", data[4])
        elif event == _IRQ_L2CAP_RECV:
            self._drain(*data)
        elif event == _IRQ_L2CAP_DISCONNECT:
            self.channel = None
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self.done = True

    def _drain(self, conn, cid):
        # Credits go back to the sender only once everything pending has been read.
        while True:
            n = self._ble.l2cap_recvinto(conn, cid, self._buf)
            if n == 0:
                break
            chunk = memoryview(self._buf)[:n]
            if self.expected is None:
                self.header += bytes(chunk)
                if len(self.header) < 4:
                    continue
                (self.expected,) = struct.unpack("<I", self.header[:4])
                chunk = memoryview(self.header)[4:]
            self.received += len(chunk)
            self.total = checksum(chunk, self.total)
        if self.expected is not None and self.received >= self.expected:
            print("received", self.received, "bytes, checksum", hex(self.total))
            reply = "ok %d %04x" % (self.received, self.total)
            self._ble.l2cap_send(conn, cid, reply)


def main():
    ble = bluetooth.BLE()
    ble.active(True)
    receiver = Receiver(ble)
    ble.l2cap_listen(PSM, MTU)
    ble.gap_advertise(50000, payload(name="mpy-files"))
    print("listening on psm", PSM)
    deadline = time.ticks_add(time.ticks_ms(), 30000)
    while not receiver.done and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        time.sleep_ms(20)
    print("done")


if __name__ == "__main__":
    main()
