"""Bad input to every ``BLE`` method and to ``UUID``: MicroPython's exception for each,
and the instance still works after it.

One table row per call: wrong types, wrong arity, out-of-range values, unknown or stale
handles, closed connections, an inactive radio. Each row names the exception type and
its message (MicroPython's words, arity included) or errno; every OSError must be a plain
``OSError`` whose ``str()`` is exactly a board's (``[Errno 22] EINVAL``, or ``-530`` for
a code NimBLE passes through). The rows of issue #17 are what a real MicroPython (unix
port, NimBLE) answered to the same calls. After every row a GATT read crosses the stack
between two connected instances (a module-wide rig, so the table stays fast).
Property-based tests then throw random UUID inputs, service definitions and advertising
payloads at the same rig.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mpbluetooth
from mpbluetooth import sim
from mpbluetooth.ble import BLE, set_l2cap_multichannel
from mpbluetooth.constants import (
    IRQ_CENTRAL_DISCONNECT,
    IRQ_ENCRYPTION_UPDATE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_WRITE_DONE,
    IRQ_L2CAP_CONNECT,
    IRQ_L2CAP_DISCONNECT,
    IRQ_PERIPHERAL_DISCONNECT,
    IRQ_SCAN_DONE,
    IRQ_SCAN_RESULT,
)
from mpbluetooth.testing import Recorder
from mpbluetooth.uuid import UUID

from .conftest import connect
from .gatt_setup import SERVICES, Gatt, Server

PSM = 0x80
BUFFER_REQUIRED = "object with buffer protocol required"
EXTRA_SERVICE = (UUID(0xFEED), ((UUID(0xFEE1), 0x02),))
FLOOD_OF_CHARACTERISTICS = [(UUID(0xFEED), [(UUID(0xFEE1), 0x02)] * 33_000)]


@dataclass
class Rig:
    """Two connected instances with a GATT server, an open L2CAP channel, stale handles,
    an active instance with no links (``spare``) and one never activated (``off``)."""

    gatt: Gatt
    cid: int  # client side of the open channel
    stale_conn: int  # the server's handle of a link that has closed
    stale_cid: int  # a channel of the live link that has closed
    stale_value: int  # a value handle of a database that was replaced
    spare: BLE
    spare_rec: Recorder
    off: BLE
    reads: int = 0

    @property
    def server(self) -> BLE:
        return self.gatt.server

    @property
    def client(self) -> BLE:
        return self.gatt.client

    @property
    def value(self) -> int:
        return self.gatt.hr

    def round_trip(self) -> None:
        """Prove the instances still work: a fresh value read across the link."""
        self.reads += 1
        fresh = b"round trip %d" % self.reads
        self.server.gatts_write(self.value, fresh)
        done = self.gatt.read(self.value)
        assert done == (self.gatt.c_conn, self.value, 0)
        assert self.gatt.rc.of(IRQ_GATTC_READ_RESULT)[-1] == (self.gatt.c_conn, self.value, fresh)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with sim.Link() as link:
        server, client = link.instance("server"), link.instance("client")
        rs, rc = Server(), Recorder()
        server.irq(rs)
        client.irq(rc)
        server.active(True)
        client.active(True)
        # A value handle that existed in an earlier database and is gone now.
        stale_value = server.gatts_register_services(SERVICES + (EXTRA_SERVICE,))[-1][0]
        handles = server.gatts_register_services(SERVICES)
        # NimBLE numbers the new database on from the old one's end: nothing is there now.
        assert stale_value < min(h for service in handles for h in service) - 9
        gatt = Gatt(server, rs, client, rc, handles)
        gatt.c_conn, gatt.s_conn = connect(client, rc, server, rs)
        # A link that has come and gone: its handle on the server is stale (and, made
        # after the live one, it is not reused by it).
        visitor, rv = link.instance("visitor"), Recorder()
        visitor.irq(rv)
        visitor.active(True)
        _, stale_conn = connect(visitor, rv, server, rs)
        visitor.active(False)
        rs.wait(IRQ_CENTRAL_DISCONNECT)
        assert stale_conn != gatt.s_conn
        # An L2CAP channel left open, and a later one that has closed: two channels,
        # so the client has the desktop-only switch on (the server keeps a board's
        # single slot, which its listen holds).
        set_l2cap_multichannel(True, client)
        server.l2cap_listen(PSM, 256)
        client.l2cap_connect(gatt.c_conn, PSM, 256)
        cid = rc.wait(IRQ_L2CAP_CONNECT)[1]
        client.l2cap_connect(gatt.c_conn, PSM, 256)
        stale_cid = rc.wait(IRQ_L2CAP_CONNECT, count=2)[1]
        client.l2cap_disconnect(gatt.c_conn, stale_cid)
        rc.wait(IRQ_L2CAP_DISCONNECT)
        assert stale_cid != cid
        spare, spare_rec = link.instance("spare"), Recorder()
        spare.irq(spare_rec)
        spare.active(True)
        off = link.instance("off")
        yield Rig(gatt, cid, stale_conn, stale_cid, stale_value, spare, spare_rec, off)


# --- expectations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Raises:
    """The call raises ``kind``; with ``message``, exactly that text (MicroPython's)."""

    kind: type[BaseException]
    message: str | None = None


@dataclass(frozen=True)
class Errno:
    """The call raises a plain ``OSError`` with MicroPython's errno ``code`` (negative: a
    NimBLE code passed through) and nothing else in its text."""

    code: int


@dataclass(frozen=True)
class Returns:
    """The call is accepted (MicroPython accepts it too) and returns ``value``."""

    value: Any


NO_KEYWORDS = Raises(TypeError, "function doesn't take keyword arguments")
OVERFLOW = Raises(OverflowError, "overflow converting long int to machine word")
HCI_INVALID_PARAMETERS = Errno(-(0x200 + 0x12))  # NimBLE's BLE_HS_HCI_ERR(0x12), negated


def takes(count: int, given: int) -> Raises:
    """MicroPython's arity error for a fixed count (``self`` counted, as it counts it)."""
    return Raises(TypeError, f"function takes {count} positional arguments but {given} were given")


def missing(count: int) -> Raises:
    return Raises(TypeError, f"function missing {count} required positional arguments")


def at_most(count: int, given: int) -> Raises:
    return Raises(TypeError, f"function expected at most {count} arguments, got {given}")


def expect(outcome: Raises | Errno | Returns, call: Callable[[], Any]) -> None:
    if isinstance(outcome, Returns):
        assert call() == outcome.value
        return
    kind = OSError if isinstance(outcome, Errno) else outcome.kind
    with pytest.raises(BaseException) as info:
        call()
    # Exactly the class: never CPython's errno subclasses (BlockingIOError...).
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    if isinstance(outcome, Errno):
        code = outcome.code
        assert info.value.errno == code and info.value.args == (code,), repr(info.value)
        text = f"[Errno {code}] {errno.errorcode[code]}" if code > 0 else str(code)
        assert str(info.value) == text
        # docs/compat.md: what failed, in words, is in the notes a traceback shows.
        assert getattr(info.value, "__notes__", None), f"{info.value!r} has no notes"
    elif outcome.message is not None:
        assert str(info.value) == outcome.message


Row = tuple[str, Callable[[Rig], Any], Raises | Errno | Returns]


def rows() -> list[Row]:
    s, c = "server", "client"  # for readability of the ids only
    del s, c
    return [
        # --- active / irq / config ------------------------------------------------------
        ("active: two arguments", lambda r: r.server.active(True, False), at_most(2, 3)),
        ("active: keyword", lambda r: r.server.active(active=True), NO_KEYWORDS),
        ("irq: no handler", lambda r: r.server.irq(), takes(2, 1)),
        ("irq: not callable", lambda r: r.server.irq(5), Raises(ValueError, "invalid handler")),
        ("irq: two arguments", lambda r: r.server.irq(None, None), takes(2, 3)),
        ("config: nothing", lambda r: r.server.config(), Raises(TypeError, "must query one param")),
        (
            "config: two names",
            lambda r: r.server.config("mac", "mtu"),
            Raises(TypeError, "must query one param"),
        ),
        (
            "config: name not a str",
            lambda r: r.server.config(1),
            Raises(TypeError, "can't convert 'int' object to str implicitly"),
        ),
        (
            "config: unknown name",
            lambda r: r.server.config("nope"),
            Raises(ValueError, "unknown config param"),
        ),
        (
            "config: set-only key queried",
            lambda r: r.server.config("bond"),
            Raises(ValueError, "unknown config param"),
        ),
        (
            "config: positional and keyword",
            lambda r: r.server.config("mac", mtu=100),
            Raises(TypeError, "can't specify pos and kw args"),
        ),
        (
            "config: unknown key",
            lambda r: r.server.config(nope=1),
            Raises(ValueError, "unknown config param"),
        ),
        (
            "config: get-only key set",
            lambda r: r.server.config(mac=b"123456"),
            Raises(ValueError, "unknown config param"),
        ),
        (
            "config: mtu not an int",
            lambda r: r.server.config(mtu="big"),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("config: mtu 22", lambda r: r.server.config(mtu=22), Errno(errno.EINVAL)),
        ("config: mtu 528", lambda r: r.server.config(mtu=528), Errno(errno.EINVAL)),
        # rxbuf exists on no board profile (synchronous events); the ring's size is
        # mpbluetooth.set_rxbuf's, with the range MicroPython's config(rxbuf=) checks.
        (
            "config: rxbuf",
            lambda r: r.spare.config(rxbuf=100),
            Raises(ValueError, "unknown config param"),
        ),
        ("set_rxbuf 15", lambda r: mpbluetooth.set_rxbuf(15, r.spare), Raises(ValueError, "")),
        (
            "set_rxbuf 65536",
            lambda r: mpbluetooth.set_rxbuf(65536, r.spare),
            Raises(ValueError, ""),
        ),
        (
            "set_rxbuf a float",
            lambda r: mpbluetooth.set_rxbuf(1.5, r.spare),  # type: ignore[arg-type]
            Raises(TypeError, "can't convert float to int"),
        ),
        (
            "config: gap_name not a buffer",
            lambda r: r.server.config(gap_name=5),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "config: gap_name of 32 bytes",
            lambda r: r.server.config(gap_name=b"n" * 32),
            Errno(errno.EINVAL),
        ),
        (
            "config: addr_mode not an int",
            lambda r: r.spare.config(addr_mode="rpa"),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("config: addr_mode 7 is ignored", lambda r: r.spare.config(addr_mode=7), Returns(None)),
        (
            "config: io not an int",
            lambda r: r.spare.config(io=None),
            Raises(TypeError, "can't convert NoneType to int"),
        ),
        # --- gap_advertise ----------------------------------------------------------------
        (
            "advertise: interval a str",
            lambda r: r.spare.gap_advertise("fast"),
            Raises(TypeError, "can't convert str to int"),
        ),
        (
            "advertise: interval too long",
            lambda r: r.spare.gap_advertise(10**9),
            HCI_INVALID_PARAMETERS,
        ),
        (
            "advertise: interval -1 is 0 units, NimBLE's default",
            lambda r: (r.spare.gap_advertise(-1), r.spare.gap_advertise(None))[0],
            Returns(None),
        ),
        (
            "advertise: interval -625 wraps to 0xffff units",
            lambda r: r.spare.gap_advertise(-625),
            HCI_INVALID_PARAMETERS,
        ),
        (
            "advertise: interval 19.375 ms",
            lambda r: r.spare.gap_advertise(19_999),
            HCI_INVALID_PARAMETERS,
        ),
        (
            "advertise: data not a buffer",
            lambda r: r.spare.gap_advertise(100_000, 5),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "advertise: 32 bytes of data",
            lambda r: r.spare.gap_advertise(100_000, b"a" * 32),
            Errno(-18),
        ),
        (
            "advertise: 32 bytes of response",
            lambda r: r.spare.gap_advertise(100_000, b"", resp_data=b"r" * 32),
            Errno(-18),
        ),
        (
            "advertise: unknown keyword",
            lambda r: r.spare.gap_advertise(100_000, foo=1),
            Raises(TypeError, "extra keyword arguments given"),
        ),
        (
            "advertise: third positional",
            lambda r: r.spare.gap_advertise(1, b"", b""),
            Raises(TypeError, "extra positional arguments given"),
        ),
        (
            "advertise: stop when not advertising",
            lambda r: r.spare.gap_advertise(None),
            Returns(None),
        ),
        # --- gap_scan ---------------------------------------------------------------------
        (
            "scan: duration a str",
            lambda r: r.spare.gap_scan("long"),
            Raises(TypeError, "can't convert str to int"),
        ),
        (
            "scan: window longer than interval",
            lambda r: r.spare.gap_scan(10, 30_000, 60_000),
            Errno(errno.EINVAL),
        ),
        ("scan: five arguments", lambda r: r.spare.gap_scan(1, 2, 3, 4, 5), at_most(5, 6)),
        ("scan: keyword", lambda r: r.spare.gap_scan(duration_ms=10), NO_KEYWORDS),
        ("scan: stop when not scanning", lambda r: r.spare.gap_scan(None), Returns(None)),
        # --- gap_connect / gap_disconnect -------------------------------------------------
        ("connect: no arguments", lambda r: r.spare.gap_connect(), missing(1)),
        (
            "connect: six arguments",
            lambda r: r.spare.gap_connect(0, bytes(6), 1, 2, 3, 4),
            at_most(6, 7),
        ),
        (
            "connect: one non-None",
            lambda r: r.spare.gap_connect(1),
            Raises(TypeError, "invalid addr"),
        ),
        (
            "connect: short address",
            lambda r: r.spare.gap_connect(0, b"12345"),
            Raises(ValueError, "invalid addr"),
        ),
        (
            "connect: address not a buffer",
            lambda r: r.spare.gap_connect(0, 123456),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "connect: type not an int",
            lambda r: r.spare.gap_connect("public", bytes(6)),
            Raises(TypeError, "can't convert str to int"),
        ),
        (
            "connect: cancel with nothing pending",
            lambda r: r.spare.gap_connect(None),
            Errno(errno.EALREADY),
        ),
        (
            "connect: a peer already connected",
            lambda r: r.client.gap_connect(*r.server.config("mac")),
            Errno(errno.EIO),
        ),
        ("disconnect: unknown handle", lambda r: r.server.gap_disconnect(999), Returns(False)),
        (
            "disconnect: stale handle",
            lambda r: r.server.gap_disconnect(r.stale_conn),
            Returns(False),
        ),
        (
            "disconnect: handle a float",
            lambda r: r.server.gap_disconnect(1.0),
            Raises(TypeError, "can't convert float to int"),
        ),
        ("disconnect: no handle", lambda r: r.server.gap_disconnect(), takes(2, 1)),
        # --- gap_pair / gap_passkey -------------------------------------------------------
        ("pair: stale handle", lambda r: r.server.gap_pair(r.stale_conn), Errno(errno.ENOTCONN)),
        ("pair: unknown handle", lambda r: r.client.gap_pair(999), Errno(errno.ENOTCONN)),
        ("pair: no handle", lambda r: r.client.gap_pair(), takes(2, 1)),
        (
            "passkey: action 1",
            lambda r: r.server.gap_passkey(r.gatt.s_conn, 1, 0),
            Errno(errno.EINVAL),
        ),
        (
            "passkey: nothing asked",
            lambda r: r.server.gap_passkey(r.gatt.s_conn, 2, 123456),
            Errno(errno.ENOENT),
        ),
        (
            "passkey: stale handle",
            lambda r: r.server.gap_passkey(r.stale_conn, 3, 0),
            Errno(errno.ENOENT),
        ),
        (
            "passkey: passkey a str",
            lambda r: r.server.gap_passkey(r.gatt.s_conn, 2, "123456"),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("passkey: two arguments", lambda r: r.server.gap_passkey(1, 2), takes(4, 3)),
        # --- gatts_register_services (on the spare: no links, so no EBUSY) ----------------
        (
            "register: busy with links",
            lambda r: r.server.gatts_register_services(SERVICES),
            Errno(errno.EBUSY),
        ),
        ("register: no argument", lambda r: r.spare.gatts_register_services(), takes(2, 1)),
        (
            "register: a generator",
            lambda r: r.spare.gatts_register_services(s for s in SERVICES),
            Raises(TypeError),
        ),
        ("register: an int", lambda r: r.spare.gatts_register_services(5), Raises(TypeError)),
        (
            "register: service not a tuple",
            lambda r: r.spare.gatts_register_services([5]),
            Raises(TypeError, "object 'int' isn't a tuple or list"),
        ),
        (
            "register: service of 3 items",
            lambda r: r.spare.gatts_register_services([(UUID(1), (), ())]),
            Raises(ValueError, "requested length 2 but object has length 3"),
        ),
        (
            "register: service UUID an int",
            lambda r: r.spare.gatts_register_services([(0x180D, ())]),
            Raises(ValueError, "invalid service UUID"),
        ),
        (
            "register: characteristics not sized",
            lambda r: r.spare.gatts_register_services([(UUID(1), 5)]),
            Raises(TypeError),
        ),
        (
            "register: characteristic of 1 item",
            lambda r: r.spare.gatts_register_services([(UUID(1), [(UUID(2),)])]),
            Raises(ValueError, "invalid characteristic tuple"),
        ),
        (
            "register: characteristic UUID a str",
            lambda r: r.spare.gatts_register_services([(UUID(1), [("2a37", 2)])]),
            Raises(ValueError, "invalid characteristic UUID"),
        ),
        (
            "register: flags a str",
            lambda r: r.spare.gatts_register_services([(UUID(1), [(UUID(2), "read")])]),
            Raises(TypeError, "can't convert str to int"),
        ),
        (
            "register: descriptor UUID None",
            lambda r: r.spare.gatts_register_services([(UUID(1), [(UUID(2), 2, [(None, 2)])])]),
            Raises(ValueError, "invalid descriptor UUID"),
        ),
        (
            "register: descriptor of 3 items",
            lambda r: r.spare.gatts_register_services(
                [(UUID(1), [(UUID(2), 2, [(UUID(3), 2, 0)])])]
            ),
            Raises(ValueError, "requested length 2 but object has length 3"),
        ),
        (
            "register: nine services",
            lambda r: r.spare.gatts_register_services([EXTRA_SERVICE] * 9),
            Errno(errno.E2BIG),
        ),
        (
            "register: more attributes than handles",
            lambda r: r.spare.gatts_register_services(FLOOD_OF_CHARACTERISTICS),
            Errno(errno.ENOMEM),
        ),
        ("register: nothing", lambda r: r.spare.gatts_register_services([]), Returns(())),
        # --- gatts_read / gatts_write / gatts_set_buffer ----------------------------------
        ("read: unknown handle", lambda r: r.server.gatts_read(999), Returns(b"")),
        ("read: stale handle", lambda r: r.server.gatts_read(r.stale_value), Returns(b"")),
        (
            "read: handle a str",
            lambda r: r.server.gatts_read("16"),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("read: keyword", lambda r: r.server.gatts_read(value_handle=1), NO_KEYWORDS),
        ("write: unknown handle", lambda r: r.server.gatts_write(999, b"x"), Errno(errno.EINVAL)),
        (
            "write: stale handle",
            lambda r: r.server.gatts_write(r.stale_value, b"x"),
            Errno(errno.EINVAL),
        ),
        (
            "write: data an int",
            lambda r: r.server.gatts_write(r.value, 5),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "write: data None",
            lambda r: r.server.gatts_write(r.value, None),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        ("write: one argument", lambda r: r.server.gatts_write(r.value), missing(1)),
        (
            "write: four arguments",
            lambda r: r.server.gatts_write(r.value, b"", 0, 0),
            at_most(4, 5),
        ),
        (
            "write: handle narrowed to 16 bits",
            lambda r: r.server.gatts_write(0x10000 + r.value, "str counts"),
            Returns(10),
        ),
        (
            "set_buffer: unknown handle",
            lambda r: r.server.gatts_set_buffer(999, 10),
            Errno(errno.EINVAL),
        ),
        (
            "set_buffer: negative size is taken",
            lambda r: (
                r.server.gatts_set_buffer(r.gatt.rx, -1),
                r.server.gatts_set_buffer(r.gatt.rx, 20),
            )[0],
            Returns(None),
        ),
        (
            "set_buffer: size 0",
            lambda r: r.server.gatts_set_buffer(r.gatt.rx, 0),
            Errno(errno.ENOMEM),
        ),
        (
            "set_buffer: size 2**40",
            lambda r: r.server.gatts_set_buffer(r.gatt.rx, 2**40),
            Errno(errno.ENOMEM),
        ),
        (
            "set_buffer: size a str",
            lambda r: r.server.gatts_set_buffer(r.gatt.rx, "big"),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("set_buffer: one argument", lambda r: r.server.gatts_set_buffer(r.gatt.rx), missing(1)),
        # --- gatts_notify / gatts_indicate ------------------------------------------------
        (
            "notify: stale link",
            lambda r: r.server.gatts_notify(r.stale_conn, r.value),
            Errno(errno.ENOTCONN),
        ),
        (
            "notify: unknown link",
            lambda r: r.server.gatts_notify(999, r.value, b"x"),
            Errno(errno.ENOTCONN),
        ),
        (
            "notify: unknown value, stored data",
            lambda r: r.server.gatts_notify(r.gatt.s_conn, 999),
            Errno(-9),
        ),
        (
            "notify: data an int",
            lambda r: r.server.gatts_notify(r.gatt.s_conn, r.value, 5),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        ("notify: one argument", lambda r: r.server.gatts_notify(r.gatt.s_conn), missing(1)),
        (
            "indicate: stale link",
            lambda r: r.server.gatts_indicate(r.stale_conn, r.value),
            Errno(errno.ENOTCONN),
        ),
        (
            "indicate: unknown value, stored data",
            lambda r: r.server.gatts_indicate(r.gatt.s_conn, r.stale_value),
            Errno(-9),
        ),
        (
            "indicate: four arguments",
            lambda r: r.server.gatts_indicate(1, 2, b"", 4),
            at_most(4, 5),
        ),
        # --- GATT client --------------------------------------------------------------------
        (
            "discover services: unknown link",
            lambda r: r.client.gattc_discover_services(999),
            Errno(errno.ENOTCONN),
        ),
        (
            "discover services: uuid an int",
            lambda r: r.client.gattc_discover_services(r.gatt.c_conn, 0x180D),
            Raises(TypeError, "UUID"),
        ),
        ("discover services: no link", lambda r: r.client.gattc_discover_services(), missing(1)),
        (
            "discover characteristics: start 0",
            lambda r: r.client.gattc_discover_characteristics(r.gatt.c_conn, 0, 10),
            Errno(errno.EINVAL),
        ),
        (
            "discover characteristics: start after end",
            lambda r: r.client.gattc_discover_characteristics(r.gatt.c_conn, 10, 1),
            Errno(errno.EINVAL),
        ),
        (
            "discover characteristics: uuid bytes",
            lambda r: r.client.gattc_discover_characteristics(r.gatt.c_conn, 1, 10, b"\x37\x2a"),
            Raises(TypeError, "UUID"),
        ),
        (
            "discover characteristics: two arguments",
            lambda r: r.client.gattc_discover_characteristics(r.gatt.c_conn, 1),
            missing(1),
        ),
        (
            "discover descriptors: empty range",
            lambda r: r.client.gattc_discover_descriptors(r.gatt.c_conn, 5, 5),
            Errno(errno.EINVAL),
        ),
        (
            "discover descriptors: stale link",
            lambda r: r.server.gattc_discover_descriptors(r.stale_conn, 1, 5),
            Errno(errno.ENOTCONN),
        ),
        ("read: stale link", lambda r: r.server.gattc_read(r.stale_conn, 3), Errno(errno.ENOTCONN)),
        (
            "read: handle None",
            lambda r: r.client.gattc_read(r.gatt.c_conn, None),
            Raises(TypeError, "can't convert NoneType to int"),
        ),
        ("gattc_read: one argument", lambda r: r.client.gattc_read(r.gatt.c_conn), takes(3, 2)),
        (
            "gattc_write: mode 2",
            lambda r: r.client.gattc_write(r.gatt.c_conn, r.gatt.rx, b"x", 2),
            Errno(errno.EINVAL),
        ),
        (
            "gattc_write: mode a str",
            lambda r: r.client.gattc_write(r.gatt.c_conn, r.gatt.rx, b"x", "1"),
            Raises(TypeError, "can't convert str to int"),
        ),
        (
            "gattc_write: data a list",
            lambda r: r.client.gattc_write(r.gatt.c_conn, r.gatt.rx, [1, 2]),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "gattc_write: stale link",
            lambda r: r.server.gattc_write(r.stale_conn, 3, b"x"),
            Errno(errno.ENOTCONN),
        ),
        (
            "gattc_write: five arguments",
            lambda r: r.client.gattc_write(1, 2, b"", 0, 0),
            at_most(5, 6),
        ),
        (
            "exchange_mtu: stale link",
            lambda r: r.server.gattc_exchange_mtu(r.stale_conn),
            Errno(errno.ENOTCONN),
        ),
        ("exchange_mtu: no link", lambda r: r.client.gattc_exchange_mtu(), takes(2, 1)),
        # --- L2CAP --------------------------------------------------------------------------
        (
            "listen: again on the PSM",
            lambda r: r.server.l2cap_listen(PSM, 100),
            Errno(errno.EALREADY),
        ),
        (
            "listen: psm a str",
            lambda r: r.server.l2cap_listen("psm", 100),
            Raises(TypeError, "can't convert str to int"),
        ),
        ("listen: one argument", lambda r: r.server.l2cap_listen(PSM), takes(3, 2)),
        (
            "l2cap_connect: stale link (switch on)",
            lambda r: r.client.l2cap_connect(999, PSM, 100),
            Errno(errno.ENOTCONN),
        ),
        (
            "l2cap_connect: two arguments",
            lambda r: r.client.l2cap_connect(r.gatt.c_conn, PSM),
            takes(4, 3),
        ),
        (
            "l2cap_disconnect: stale channel",
            lambda r: r.client.l2cap_disconnect(r.gatt.c_conn, r.stale_cid),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_disconnect: stale link",
            lambda r: r.server.l2cap_disconnect(r.stale_conn, r.cid),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_send: stale channel",
            lambda r: r.client.l2cap_send(r.gatt.c_conn, r.stale_cid, b"x"),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_send: larger than the peer's MTU",
            lambda r: r.client.l2cap_send(r.gatt.c_conn, r.cid, b"x" * 257),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_send: data an int",
            lambda r: r.client.l2cap_send(r.gatt.c_conn, r.cid, 5),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "l2cap_send: two arguments",
            lambda r: r.client.l2cap_send(r.gatt.c_conn, r.cid),
            takes(4, 3),
        ),
        (
            "l2cap_recvinto: stale channel",
            lambda r: r.client.l2cap_recvinto(r.gatt.c_conn, r.stale_cid, bytearray(8)),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_recvinto: read-only buffer",
            lambda r: r.client.l2cap_recvinto(r.gatt.c_conn, r.cid, b"12345678"),
            Raises(TypeError, BUFFER_REQUIRED),
        ),
        (
            "l2cap_recvinto: nothing pending",
            lambda r: r.client.l2cap_recvinto(r.gatt.c_conn, r.cid, bytearray(8)),
            Returns(0),
        ),
        (
            "l2cap_recvinto: two arguments",
            lambda r: r.client.l2cap_recvinto(r.gatt.c_conn, r.cid),
            takes(4, 3),
        ),
        # --- hci_cmd (compiled out on every board: MICROPY_PY_BLUETOOTH_ENABLE_HCI_CMD) ------
        (
            "hci_cmd: absent",
            lambda r: r.server.hci_cmd(0x04, 0x01, b"", bytearray(8)),
            Raises(AttributeError, "'BLE' object has no attribute 'hci_cmd'"),
        ),
        # --- close (desktop only, not on a board) -----------------------------------------
        ("close: an argument", lambda r: r.server.close(True), Raises(TypeError)),
        # --- an inactive radio --------------------------------------------------------------
        ("off: config mac", lambda r: r.off.config("mac"), Errno(errno.ENODEV)),
        ("off: config mtu", lambda r: r.off.config("mtu"), Errno(errno.ENODEV)),
        ("off: set mtu", lambda r: r.off.config(mtu=100), Errno(errno.ENODEV)),
        ("off: set addr_mode", lambda r: r.off.config(addr_mode=1), Errno(errno.ENODEV)),
        ("off: rxbuf", lambda r: r.off.config("rxbuf"), Raises(ValueError, "unknown config param")),
        ("off: gap_name", lambda r: r.off.config("gap_name"), Returns(b"MPY NIMBLE")),
        ("off: advertise", lambda r: r.off.gap_advertise(100_000), Errno(errno.ENODEV)),
        ("off: stop advertising", lambda r: r.off.gap_advertise(None), Returns(None)),
        ("off: scan", lambda r: r.off.gap_scan(10), Errno(errno.ENODEV)),
        ("off: stop scan", lambda r: r.off.gap_scan(None), Errno(errno.ENODEV)),
        ("off: connect", lambda r: r.off.gap_connect(0, bytes(6)), Errno(errno.ENODEV)),
        ("off: cancel connect", lambda r: r.off.gap_connect(None), Errno(errno.ENODEV)),
        ("off: disconnect", lambda r: r.off.gap_disconnect(1), Errno(errno.ENODEV)),
        ("off: pair", lambda r: r.off.gap_pair(1), Errno(errno.ENOTCONN)),
        ("off: passkey", lambda r: r.off.gap_passkey(1, 2, 0), Errno(errno.ENOENT)),
        ("off: register", lambda r: r.off.gatts_register_services(SERVICES), Errno(errno.ENODEV)),
        ("off: gatts_read", lambda r: r.off.gatts_read(16), Returns(b"")),
        ("off: gatts_write", lambda r: r.off.gatts_write(16, b"x"), Errno(errno.ENODEV)),
        ("off: set_buffer", lambda r: r.off.gatts_set_buffer(16, 10), Errno(errno.ENODEV)),
        ("off: notify", lambda r: r.off.gatts_notify(1, 16, b"x"), Errno(errno.ENODEV)),
        ("off: indicate", lambda r: r.off.gatts_indicate(1, 16, b"x"), Errno(errno.ENODEV)),
        ("off: discover", lambda r: r.off.gattc_discover_services(1), Errno(errno.ENODEV)),
        ("off: gattc_read", lambda r: r.off.gattc_read(1, 3), Errno(errno.ENODEV)),
        ("off: gattc_write", lambda r: r.off.gattc_write(1, 3, b"x", 1), Errno(errno.ENODEV)),
        (
            "off: exchange_mtu (no active check)",
            lambda r: r.off.gattc_exchange_mtu(1),
            Errno(errno.ENOMEM),
        ),
        ("off: listen", lambda r: r.off.l2cap_listen(PSM, 100), Errno(errno.ENODEV)),
        ("off: l2cap_connect", lambda r: r.off.l2cap_connect(1, PSM, 100), Errno(errno.ENODEV)),
        ("off: l2cap_send", lambda r: r.off.l2cap_send(1, 64, b"x"), Errno(errno.ENODEV)),
        ("off: l2cap_recvinto", lambda r: r.off.l2cap_recvinto(1, 64, None), Errno(errno.ENODEV)),
        ("off: l2cap_disconnect", lambda r: r.off.l2cap_disconnect(1, 64), Errno(errno.ENODEV)),
        # --- issue #17: what a board (MicroPython, NimBLE) answered ----------------------
        ("UUID: bool", lambda r: bool(UUID(0x180D)), Returns(True)),
        ("UUID: or", lambda r: UUID(0x180D) or None, Returns(UUID(0x180D))),
        (
            "UUID: ordered against bytes",
            lambda r: UUID(0x180D) <= b"\x0d\x18",
            Raises(TypeError, "unsupported types for __le__: 'UUID', 'bytes'"),
        ),
        ("UUID: -2**63", lambda r: UUID(-(2**63)), OVERFLOW),
        ("UUID: 2**64", lambda r: UUID(2**64), OVERFLOW),
        ("scan: -1 ends at once", lambda r: scan_done_at_once(r, -1), Returns(True)),
        ("scan: 2**31 ends at once", lambda r: scan_done_at_once(r, 2**31), Returns(True)),
        (
            "connect: address type 4",
            lambda r: r.spare.gap_connect(4, bytes(6)),
            Errno(errno.EINVAL),
        ),
        (
            "connect: address type -1",
            lambda r: r.spare.gap_connect(-1, bytes(6)),
            Errno(errno.EINVAL),
        ),
        (
            "connect: scan duration -1 times out at once",
            lambda r: connect_times_out_at_once(r),
            Returns((0xFFFF, 255, bytes(6))),
        ),
        (
            "connect: interval beyond HCI",
            lambda r: r.spare.gap_connect(0, bytes(6), 2000, 10**9, 10**9),
            HCI_INVALID_PARAMETERS,
        ),
        (
            "gattc_read: handle 0",
            lambda r: r.client.gattc_read(r.gatt.c_conn, 0),
            Errno(errno.EINVAL),
        ),
        (
            "gattc_read: handle 0, unknown link",
            lambda r: r.client.gattc_read(999, 0),
            Errno(errno.EINVAL),
        ),
        (
            "notify: handle 0",
            lambda r: r.server.gatts_notify(r.gatt.s_conn, 0, b"x"),
            Errno(errno.EINVAL),
        ),
        (
            "indicate: handle 0",
            lambda r: r.server.gatts_indicate(r.gatt.s_conn, 0, b"x"),
            Errno(errno.EINVAL),
        ),
        (
            "discover characteristics: bad range, unknown link",
            lambda r: r.client.gattc_discover_characteristics(999, 0, 10),
            Errno(errno.EINVAL),
        ),
        (
            "discover descriptors: bad range, unknown link",
            lambda r: r.client.gattc_discover_descriptors(999, 5, 5),
            Errno(errno.EINVAL),
        ),
        (
            "l2cap_connect: while listening (one slot)",
            lambda r: r.server.l2cap_connect(r.gatt.s_conn, PSM, 100),
            Errno(errno.EALREADY),
        ),
        (
            "listen: a second PSM (one slot)",
            lambda r: r.server.l2cap_listen(PSM + 2, 100),
            Errno(errno.EALREADY),
        ),
        (
            "config: gap_name with a NUL reads back cut",
            lambda r: (r.server.config(gap_name=b"a\x00b"), r.server.config("gap_name"))[1],
            Returns(b"a"),
        ),
        ("config: addr_mode 256 wraps to 0", lambda r: addr_mode_wraps(r), Returns(0)),
        (
            "passkey: action 258 wraps to 2",
            lambda r: r.server.gap_passkey(r.gatt.s_conn, 258, 0),
            Errno(errno.ENOENT),
        ),
        ("off: gap_pair", lambda r: r.off.gap_pair(0), Errno(errno.ENOTCONN)),
        ("off: gap_passkey", lambda r: r.off.gap_passkey(0, 2, 0), Errno(errno.ENOENT)),
        ("off: gattc_exchange_mtu", lambda r: r.off.gattc_exchange_mtu(0), Errno(errno.ENOMEM)),
        # 2**64 wherever MicroPython converts to a machine word
        ("overflow: gatts_read", lambda r: r.server.gatts_read(2**64), OVERFLOW),
        ("overflow: gap_disconnect", lambda r: r.server.gap_disconnect(2**64), OVERFLOW),
        ("overflow: gap_scan", lambda r: r.spare.gap_scan(2**64), OVERFLOW),
        ("overflow: advertise", lambda r: r.spare.gap_advertise(2**64), OVERFLOW),
        ("overflow: config mtu", lambda r: r.server.config(mtu=2**64), OVERFLOW),
        ("overflow: set_buffer", lambda r: r.server.gatts_set_buffer(r.gatt.rx, 2**64), OVERFLOW),
        ("overflow: l2cap_send", lambda r: r.client.l2cap_send(2**64, r.cid, b"x"), OVERFLOW),
        ("overflow: passkey", lambda r: r.server.gap_passkey(r.gatt.s_conn, 2, -(2**63)), OVERFLOW),
        # --- UUID -----------------------------------------------------------------------------
        (
            "UUID: nothing",
            lambda r: UUID(),
            Raises(TypeError, "function takes 1 positional arguments but 0 were given"),
        ),
        (
            "UUID: two arguments",
            lambda r: UUID(1, 2),
            Raises(TypeError, "function takes 1 positional arguments but 2 were given"),
        ),
        ("UUID: keyword", lambda r: UUID(value=1), NO_KEYWORDS),
        ("UUID: a float", lambda r: UUID(1.5), Raises(TypeError, BUFFER_REQUIRED)),
        ("UUID: None", lambda r: UUID(None), Raises(TypeError, BUFFER_REQUIRED)),
        ("UUID: a bool", lambda r: UUID(True), Raises(TypeError, BUFFER_REQUIRED)),
        ("UUID: above 16 bits", lambda r: UUID(0x10000), Raises(ValueError, "invalid UUID")),
        ("UUID: negative wraps", lambda r: UUID(-1), Returns(UUID(0xFFFF))),
        (
            "UUID: a bad char",
            lambda r: UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9G"),
            Raises(ValueError, "invalid char in UUID"),
        ),
        (
            "UUID: too short",
            lambda r: UUID("6E400001-B5A3-F393-E0A9"),
            Raises(ValueError, "UUID too short"),
        ),
        (
            "UUID: too long",
            lambda r: UUID("6E400001B5A3F393E0A9E50E24DCCA9E00"),
            Raises(ValueError, "UUID too long"),
        ),
        (
            "UUID: 3 bytes",
            lambda r: UUID(b"\x01\x02\x03"),
            Raises(ValueError, "invalid char in UUID"),
        ),
        (
            "UUID: 4-char str is raw bytes",
            lambda r: repr(UUID("AB12")),
            Returns("UUID(0x32314241)"),
        ),
    ]


def scan_done_at_once(r: Rig, duration: int) -> bool:
    """A negative duration (2**31 is one in NimBLE's int32_t) has expired already: the
    scan ends at once with SCAN_DONE, so a program waiting for it does not hang."""
    before = len(r.spare_rec.of(IRQ_SCAN_DONE))
    r.spare.gap_scan(duration)
    r.spare_rec.wait(IRQ_SCAN_DONE, count=before + 1, timeout=1)
    r.spare.gap_scan(10)  # not scanning any more: a new scan starts
    r.spare_rec.wait(IRQ_SCAN_DONE, count=before + 2, timeout=2)
    return True


def connect_times_out_at_once(r: Rig) -> tuple[Any, ...]:
    before = len(r.spare_rec.of(IRQ_PERIPHERAL_DISCONNECT))
    r.spare.gap_connect(0, bytes(6), -1)
    return r.spare_rec.wait(IRQ_PERIPHERAL_DISCONNECT, count=before + 1, timeout=0.3)


def addr_mode_wraps(r: Rig) -> int:
    """``addr_mode`` is a uint8_t in NimBLE: 256 is 0, public."""
    r.spare.config(addr_mode=1)
    assert r.spare.config("mac")[0] == 1
    r.spare.config(addr_mode=256)
    return int(r.spare.config("mac")[0])


ROWS = rows()


@pytest.mark.parametrize(("name", "call", "outcome"), ROWS, ids=[row[0] for row in ROWS])
def test_bad_input(rig: Rig, name: str, call: Callable[[Rig], Any], outcome: Any) -> None:
    expect(outcome, lambda: call(rig))
    rig.round_trip()
    assert rig.spare.active() and rig.off.active() is False


def test_every_public_method_is_in_the_table() -> None:
    names = {name.split(":")[0] for name, _, _ in ROWS}
    covered = " ".join(sorted(names))
    desktop_only = {"close"}  # not MicroPython's: no board answer to compare with
    methods = [m for m in dir(BLE) if not m.startswith("_") and m not in desktop_only]
    aliases = {
        "gap_advertise": "advertise",
        "gap_scan": "scan",
        "gap_connect": "connect",
        "gap_disconnect": "disconnect",
        "gap_pair": "pair",
        "gap_passkey": "passkey",
        "gatts_register_services": "register",
        "gatts_read": "read",
        "gatts_write": "write",
        "gatts_set_buffer": "set_buffer",
        "gatts_notify": "notify",
        "gatts_indicate": "indicate",
        "gattc_discover_services": "discover services",
        "gattc_discover_characteristics": "discover characteristics",
        "gattc_discover_descriptors": "discover descriptors",
        "gattc_exchange_mtu": "exchange_mtu",
        "l2cap_listen": "listen",
    }
    missing = [m for m in methods if aliases.get(m, m) not in names]
    assert missing == [], covered


# --- bad input whose outcome is an event ---------------------------------------------------
def test_second_gap_pair_while_pairing_is_ealready(link: sim.Link, no_errors: None) -> None:
    """NimBLE refuses to start security twice on a link; two concurrent pairings confused
    Bumble's SMP session (loop errors, sometimes a dropped link)."""
    from .gatt_setup import make_gatt

    gatt = make_gatt(link)
    gatt.client.gap_pair(gatt.c_conn)
    with pytest.raises(OSError) as info:
        gatt.client.gap_pair(gatt.c_conn)
    assert info.value.errno == errno.EALREADY
    assert gatt.rc.wait(IRQ_ENCRYPTION_UPDATE) == (gatt.c_conn, 1, 0, 0, 16)
    assert gatt.rs.wait(IRQ_ENCRYPTION_UPDATE) == (gatt.s_conn, 1, 0, 0, 16)
    assert gatt.read(gatt.battery)[2] == 0
    assert len(gatt.rc.of(IRQ_ENCRYPTION_UPDATE)) == 1
    assert gatt.rc.of(IRQ_PERIPHERAL_DISCONNECT) == []


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_pairing_with_an_io_capability_smp_does_not_know_fails_cleanly(
    link: sim.Link, side: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``config(io=99)`` is accepted (as MicroPython accepts it); a pairing then fails with
    ENCRYPTION_UPDATE reporting the unencrypted link, instead of never reporting at all."""
    from .gatt_setup import make_gatt

    gatt = make_gatt(link)
    (gatt.client if side == "initiator" else gatt.server).config(io=99)
    gatt.client.gap_pair(gatt.c_conn)
    assert gatt.rc.wait(IRQ_ENCRYPTION_UPDATE, timeout=2) == (gatt.c_conn, 0, 0, 0, 0)
    if side == "responder":
        assert gatt.rs.wait(IRQ_ENCRYPTION_UPDATE, timeout=2) == (gatt.s_conn, 0, 0, 0, 0)
    assert gatt.read(gatt.battery)[2] == 0  # the link is fine
    # With a valid capability again, the same link pairs.
    (gatt.client if side == "initiator" else gatt.server).config(io=3)
    gatt.client.gap_pair(gatt.c_conn)
    assert gatt.rc.wait(IRQ_ENCRYPTION_UPDATE, lambda d: d[1] == 1, timeout=2)[0] == gatt.c_conn


def test_reads_and_writes_of_unknown_remote_handles_report_att_errors(rig: Rig) -> None:
    """Bad handles on the remote side are not exceptions: the DONE event carries
    0x100 + the ATT error (0x01 invalid handle), and the link goes on."""
    gatt = rig.gatt
    assert gatt.read(0x0999) == (gatt.c_conn, 0x0999, 0x101)
    assert gatt.write(0x0999, b"x") == (gatt.c_conn, 0x0999, 0x101)
    assert gatt.write(rig.stale_value, b"x")[2] == 0x101
    gatt.client.gattc_write(gatt.c_conn, 0x0999, b"x", 0)  # no response exists: no event
    before = len(gatt.rc.of(IRQ_GATTC_WRITE_DONE))
    rig.round_trip()
    assert len(gatt.rc.of(IRQ_GATTC_WRITE_DONE)) == before


# --- property-based ------------------------------------------------------------------------
HEX_TEXT = st.from_regex(r"[0-9a-fA-F-]{28,40}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-(2**20), max_value=2**20),
        st.text(max_size=40),
        HEX_TEXT,
        st.binary(max_size=40),
        st.binary(max_size=40).map(bytearray),
        st.binary(max_size=40).map(memoryview),
        st.none(),
        st.floats(),
        st.lists(st.integers(0, 255), max_size=4),
    )
)
def test_uuid_parsing_gives_a_uuid_or_a_value_or_type_error(value: Any) -> None:
    try:
        uuid = UUID(value)
    except (ValueError, TypeError):
        return
    size = len(bytes(uuid))
    assert size in (2, 4, 16)
    text = repr(uuid)
    assert text == str(uuid) and text.startswith("UUID(") and text[5:] == text[5:].lower()
    # The repr round-trips: 16- and 128-bit forms through eval, every form through bytes.
    if size != 4:
        assert eval(text, {"UUID": UUID}) == uuid
    again = UUID(bytes(uuid))
    assert again == uuid and repr(again) == text and hash(again) == hash(uuid)


def _uuids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(0, 0xFFFF).map(UUID),
        st.binary(min_size=16, max_size=16).map(UUID),
        st.integers(-1, 0x10000),
        st.text(max_size=4),
        st.none(),
    )


def _flags() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(-1, 0x1FFFF), st.sampled_from([0x02, 0x0A, 0x12, 0x3E]), st.none())


def _shape(element: st.SearchStrategy[Any], *sizes: int) -> st.SearchStrategy[Any]:
    """Mostly the right arity in a tuple or list, sometimes not, sometimes not a sequence."""
    return st.one_of(
        st.lists(element, min_size=min(sizes), max_size=max(sizes)).map(tuple),
        st.lists(element, min_size=min(sizes), max_size=max(sizes)),
        st.lists(element, max_size=4).map(tuple),
        element,
    )


def _definitions() -> st.SearchStrategy[Any]:
    descriptor = st.one_of(st.tuples(_uuids(), _flags()), _shape(st.one_of(_uuids(), _flags()), 2))
    characteristic = st.one_of(
        st.tuples(_uuids(), _flags()),
        st.tuples(_uuids(), _flags(), st.lists(descriptor, max_size=3)),
        _shape(st.one_of(_uuids(), _flags(), st.lists(descriptor, max_size=2)), 2, 3),
    )
    service = st.one_of(
        st.tuples(_uuids(), st.lists(characteristic, max_size=4)),
        _shape(st.one_of(_uuids(), st.lists(characteristic, max_size=3)), 2),
    )
    return st.one_of(
        st.lists(service, max_size=10),
        st.lists(service, max_size=3).map(tuple),
        _uuids(),
        st.integers(),
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_definitions())
def test_random_service_definitions_register_or_raise_and_the_instance_works(
    rig: Rig, definition: Any
) -> None:
    spare = rig.spare
    try:
        handles = spare.gatts_register_services(definition)
    except (TypeError, ValueError, OSError):
        handles = None
    if handles is not None:
        assert type(handles) is tuple and all(type(h) is tuple for h in handles)
        flat = [h for service in handles for h in service]
        assert all(type(h) is int for h in flat) and len(set(flat)) == len(flat)
        for handle in flat:
            assert spare.gatts_write(handle, b"v") == 1 and spare.gatts_read(handle) == b"v"
    # Whatever happened, a good definition registers and serves values.
    (good,) = spare.gatts_register_services([EXTRA_SERVICE])
    assert spare.gatts_write(good[0], b"ok") == 2 and spare.gatts_read(good[0]) == b"ok"


@pytest.fixture(scope="module")
def scanning(rig: Rig) -> Iterator[tuple[Rig, Recorder]]:
    """The client scans (passively, without end) for the spare's adverts."""
    recorder = rig.gatt.rc
    rig.client.gap_scan(0, 20000, 20000)
    yield rig, recorder
    rig.client.gap_scan(None)
    rig.spare.gap_advertise(None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=40))
def test_advertising_payloads_are_seen_exactly_or_refused(
    scanning: tuple[Rig, Recorder], payload: bytes
) -> None:
    rig, recorder = scanning
    spare = rig.spare
    if len(payload) > 31:
        with pytest.raises(OSError) as info:
            spare.gap_advertise(20000, payload)
        assert info.value.errno == -18  # NimBLE's own answer, as a board gives
        return
    addr_type, addr = spare.config("mac")
    spare.gap_advertise(20000, payload, connectable=False)
    seen = recorder.wait(IRQ_SCAN_RESULT, lambda d: d[1] == addr and d[4] == payload, timeout=3)
    assert seen == (addr_type, addr, 2, -50, payload)


def test_pairing_again_on_the_same_link_after_a_wrong_passkey_or_a_success(
    link: sim.Link, no_errors: None
) -> None:
    """A wrong passkey is bad input a user retries; Bumble kept the finished SMP session
    and handed it the retry, which then never completed."""
    from .test_security import DISPLAY_ONLY, KEYBOARD_ONLY, PASSKEY, setup

    a, ra, ca, b, rb, cb = setup(
        link, dict(io=KEYBOARD_ONLY, mitm=True), dict(io=DISPLAY_ONLY, mitm=True)
    )
    typed = [PASSKEY + 1, PASSKEY, PASSKEY]
    rb.on_passkey = lambda conn, action, _: b.gap_passkey(conn, action, PASSKEY)
    ra.on_passkey = lambda conn, action, _: a.gap_passkey(conn, action, typed.pop(0))
    for attempt, expected in enumerate([(0, 0, 0, 0), (1, 1, 0, 16), (1, 1, 0, 16)], 1):
        a.gap_pair(ca)
        assert ra.wait(IRQ_ENCRYPTION_UPDATE, count=attempt, timeout=3)[1:] == expected
        assert rb.wait(IRQ_ENCRYPTION_UPDATE, count=attempt, timeout=3)[1:] == expected
