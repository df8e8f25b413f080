"""Board profiles in one process: what a program gets under each (docs/boards.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mpbluetooth
from mpbluetooth import BLE, UUID, boards, sim
from mpbluetooth.constants import (
    FLAG_NOTIFY,
    FLAG_READ,
    IRQ_CENTRAL_CONNECT,
    IRQ_GATTC_NOTIFY,
    IRQ_GATTC_READ_DONE,
    IRQ_GATTC_READ_RESULT,
    IRQ_GATTC_SERVICE_DONE,
    IRQ_GATTC_SERVICE_RESULT,
    IRQ_MTU_EXCHANGED,
)
from mpbluetooth.testing import Recorder

from .conftest import connect

BATTERY = (UUID(0x180F), ((UUID(0x2A19), FLAG_READ | FLAG_NOTIFY),))
ONE_CHAR = (UUID(0x180F), ((UUID(0x2A19), FLAG_READ),))


@pytest.fixture
def link() -> Iterator[sim.Link]:
    with sim.Link("instant") as the_link:
        yield the_link


def active(link: sim.Link, board: str, name: str) -> tuple[BLE, Recorder]:
    ble = link.instance(name, board=board)
    recorder = Recorder()
    ble.irq(recorder)
    ble.active(True)
    return ble, recorder


@pytest.mark.parametrize(
    ("board", "first", "again"),
    [("unix", 21, 33), ("stm32", 21, 33), ("esp32", 16, 16), ("rp2", 9, 9)],
)
def test_first_user_handle_and_reregistration(link: sim.Link, board: str, first: int, again: int):
    """NimBLE's unix build gives 21, then numbers on by 12 (9 built-in + 3 user attributes)
    for each re-registration, and starts over at active(True); ESP-IDF's NimBLE and BTstack
    start over at every registration."""
    ble, _ = active(link, board, "p")
    handles = [ble.gatts_register_services([ONE_CHAR])[0][0] for _ in range(3)]
    step = again - first
    assert handles == [first, first + step, first + 2 * step]
    assert boards.get(board).first_user_value_handle() == first
    ble.active(False)
    ble.active(True)
    assert ble.gatts_register_services([ONE_CHAR])[0][0] == first


def test_sixty_registrations_number_on_to_729_on_nimble(link: sim.Link) -> None:
    ble, _ = active(link, "unix", "p")
    handles = [ble.gatts_register_services([ONE_CHAR])[0][0] for _ in range(60)]
    assert handles[:3] == [21, 33, 45] and handles[-1] == 729


@pytest.mark.parametrize(
    ("board", "services"),
    [
        ("unix", [(10, 14, 0x1800), (15, 18, 0x1801), (19, 22, 0x180F)]),
        ("stm32", [(10, 14, 0x1800), (15, 18, 0x1801), (19, 22, 0x180F)]),
        ("esp32", [(1, 5, 0x1800), (6, 13, 0x1801), (14, 17, 0x180F)]),
        ("rp2", [(1, 3, 0x1800), (4, 6, 0x1801), (7, 10, 0x180F)]),
    ],
)
def test_a_peer_discovers_the_boards_builtin_services(
    link: sim.Link, board: str, services: list[tuple[int, int, int]]
) -> None:
    peripheral, rp = active(link, board, "p")
    central, rc = active(link, "unix", "c")
    peripheral.gatts_register_services([BATTERY])
    conn, _ = connect(central, rc, peripheral, rp)
    central.gattc_discover_services(conn)
    rc.wait(IRQ_GATTC_SERVICE_DONE)
    found = [
        (start, end, int.from_bytes(bytes(uuid), "little"))
        for _, start, end, uuid in rc.of(IRQ_GATTC_SERVICE_RESULT)
    ]
    assert found == services


@pytest.mark.parametrize("board", list(boards.BOARDS))
def test_gap_name_is_the_boards_and_served_to_peers(link: sim.Link, board: str) -> None:
    peripheral, rp = active(link, board, "p")
    assert peripheral.config("gap_name") == boards.get(board).gap_name
    central, rc = active(link, "unix", "c")
    conn, _ = connect(central, rc, peripheral, rp)
    central.gattc_read(conn, 3)  # the Device Name value, third attribute on every board
    assert rc.wait(IRQ_GATTC_READ_RESULT)[2] == boards.get(board).gap_name


@pytest.mark.parametrize("board", list(boards.BOARDS))
def test_config_keys_exist_as_on_the_board(link: sim.Link, board: str) -> None:
    ble, _ = active(link, board, "p")
    keys = boards.get(board).config_keys
    for key in ("rxbuf", "bond", "mitm", "le_secure", "io"):
        if key in keys:
            ble.config(**{key: 1})
        else:
            with pytest.raises(ValueError, match="unknown config param"):
                ble.config(**{key: 1})
    with pytest.raises(ValueError, match="unknown config param"):
        ble.config("rxbuf")
    assert ("bond" in keys) is (board != "rp2")
    mpbluetooth.set_rxbuf(512, ble)  # the ring is there on every board
    assert mpbluetooth.irq_stats(ble).capacity == 512


@pytest.mark.parametrize("board", list(boards.BOARDS))
def test_compiled_out_methods_are_absent(link: sim.Link, board: str) -> None:
    ble = link.instance("p", board=board)
    profile = boards.get(board)
    for method in ("hci_cmd", "l2cap_listen", "l2cap_send", "gap_pair", "gap_passkey"):
        assert hasattr(ble, method) is (method not in profile.absent_methods), method
    for method in profile.absent_methods:
        with pytest.raises(AttributeError, match=f"'BLE' object has no attribute '{method}'"):
            getattr(ble, method)
    assert isinstance(ble, BLE) and type(ble).__name__ == "BLE"
    assert hasattr(ble, "gatts_notify") and hasattr(ble, "gap_connect")


def test_the_done_when_rows_esp32_has_no_l2cap_and_rp2_no_gap_pair(link: sim.Link) -> None:
    assert not hasattr(link.instance("e", board="esp32"), "l2cap_listen")
    assert not hasattr(link.instance("r", board="rp2"), "gap_pair")
    assert hasattr(link.instance("u"), "l2cap_listen")  # unix, the default


@pytest.mark.parametrize(("board", "first"), [("esp32", 0), ("unix", 1), ("stm32", 1), ("rp2", 1)])
def test_connection_handles_start_at_the_boards_first(link: sim.Link, board: str, first: int):
    a, ra = active(link, board, "a")
    b, rb = active(link, board, "b")
    conn_c, conn_p = connect(a, ra, b, rb)
    assert (conn_c, conn_p) == (first, first)


def test_an_esp32_server_notifying_handle_0_reaches_its_central(link: sim.Link) -> None:
    server, rs = active(link, "esp32", "server")
    ((value,),) = server.gatts_register_services([BATTERY])
    central, rc = active(link, "unix", "central")
    conn, _ = connect(central, rc, server, rs)
    assert rs.of(IRQ_CENTRAL_CONNECT)[0][0] == 0
    server.gatts_notify(0, value, b"\x42")  # the handle an ESP32 program hard-codes
    assert rc.wait(IRQ_GATTC_NOTIFY) == (conn, value, b"\x42")


def test_rp2_as_central_refuses_the_peripherals_mtu_exchange(link: sim.Link) -> None:
    """BTstack as central does not support a peripheral starting the exchange: neither
    side sees _IRQ_MTU_EXCHANGED; the central's own exchange works."""
    pico, rpico = active(link, "rp2", "pico")
    peripheral, rp = active(link, "unix", "p")
    peripheral.gatts_register_services([ONE_CHAR])
    conn, p_conn = connect(pico, rpico, peripheral, rp)
    peripheral.gattc_exchange_mtu(p_conn)
    # A read after it is answered after the refusal: then nothing was exchanged.
    pico.gattc_read(conn, 21)
    rpico.wait(IRQ_GATTC_READ_DONE)
    assert rpico.of(IRQ_MTU_EXCHANGED) == [] and rp.of(IRQ_MTU_EXCHANGED) == []
    pico.gattc_exchange_mtu(conn)
    assert rpico.wait(IRQ_MTU_EXCHANGED) == (conn, 256)
    assert rp.wait(IRQ_MTU_EXCHANGED) == (p_conn, 256)


@pytest.mark.parametrize("board", ["unix", "esp32", "stm32"])
def test_nimble_as_central_lets_the_peripheral_start_the_mtu_exchange(
    link: sim.Link, board: str
) -> None:
    central, rc = active(link, board, "c")
    peripheral, rp = active(link, "rp2", "p")
    conn, p_conn = connect(central, rc, peripheral, rp)
    peripheral.gattc_exchange_mtu(p_conn)
    assert rc.wait(IRQ_MTU_EXCHANGED) == (conn, 256)


def test_unknown_board_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown board 'esp8266': choose one of unix, esp32"):
        mpbluetooth.open(board="esp8266")


def test_the_environment_chooses_the_default_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(boards.ENV_BOARD, "rp2")
    with mpbluetooth.open() as ble:
        assert ble.config("gap_name") == b"MPY BTSTACK"
    monkeypatch.delenv(boards.ENV_BOARD)
    assert boards.current().name == "unix"


@pytest.mark.mpbluetooth_board("esp32")
def test_the_pytest_marker_sets_the_board(sim_instances) -> None:  # type: ignore[no-untyped-def]
    ((ble, _),) = sim_instances(1)
    assert ble.config("gap_name") == b"MPY ESP32" and not hasattr(ble, "l2cap_connect")


def test_the_pytest_plugin_runs_strict(sim_instances) -> None:  # type: ignore[no-untyped-def]
    from mpbluetooth import _views

    assert _views.strict()


@pytest.mark.parametrize("board", list(boards.BOARDS))
def test_info_rows_name_every_fact(board: str) -> None:
    rows = dict(boards.get(board).describe())
    for fact in (
        "built-in services", "first user handle", "first connection handle", "gap_name",
        "config keys", "methods compiled out", "MTU exchange", "sys.platform", "os.uname()",
        "port modules", "sys.path",
    ):  # fmt: skip
        assert rows[fact], fact


def test_handle_0_works_for_every_link_operation(link: sim.Link) -> None:
    """An ESP32's links are numbered from 0, and 0 is a handle like any other: reads,
    indications, pairing, disconnection and a reconnection that gets 0 again."""
    from mpbluetooth.constants import (
        IRQ_CENTRAL_DISCONNECT,
        IRQ_ENCRYPTION_UPDATE,
        IRQ_GATTC_INDICATE,
        IRQ_GATTS_INDICATE_DONE,
        IRQ_PERIPHERAL_DISCONNECT,
    )

    server, rs = active(link, "esp32", "server")
    ((value,),) = server.gatts_register_services([BATTERY])
    server.gatts_write(value, b"\x07")
    central, rc = active(link, "esp32", "central")
    assert connect(central, rc, server, rs) == (0, 0)
    central.gattc_read(0, value)
    assert rc.wait(IRQ_GATTC_READ_RESULT) == (0, value, b"\x07")
    server.gatts_indicate(0, value, b"\x08")
    assert rc.wait(IRQ_GATTC_INDICATE) == (0, value, b"\x08")
    assert rs.wait(IRQ_GATTS_INDICATE_DONE) == (0, value, 0)
    central.gap_pair(0)
    assert rc.wait(IRQ_ENCRYPTION_UPDATE)[:2] == (0, 1)
    assert central.gap_disconnect(0) is True
    rc.wait(IRQ_PERIPHERAL_DISCONNECT)
    rs.wait(IRQ_CENTRAL_DISCONNECT)
    assert connect(central, rc, server, rs) == (0, 0)
