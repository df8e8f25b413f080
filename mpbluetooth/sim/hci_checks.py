"""The HCI command parameter checks a real controller makes, for the simulated one.

Bumble's virtual controller takes whatever the host sends: an advertising interval of
19 ms, a scan window longer than its interval, a supervision timeout shorter than two
connection intervals. A real controller refuses those with Invalid HCI Command Parameters
(0x12), and a program on a board sees that refusal (NimBLE reports it as
``OSError(-530)``), so a program tested on the simulator must see it too.

:func:`invalid_parameters` names the first rule a command breaks (Core v5.4, Vol 4,
Part E, section 7.8 for each LE command), or None. Only the commands a host uses for
advertising, scanning, connecting, the connection's parameters, addresses, data length
and PHYs are checked; the rest pass. The values are those decoded from the command's
bytes, as a controller sees them.

RootCanal (1.10) makes most of the same checks, but answers a single value out of its
range with Unsupported Feature or Parameter Value (0x11) and keeps 0x12 for values that
contradict each other; it does not check the type, own address type and filter policy
fields, the supervision timeout against the interval, the CE lengths, nor a legacy
advertising set's data length (docs/compat.md lists the differences).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bumble import hci

#: Advertising interval, 0.625 ms units: legacy command (7.8.5) and extended (7.8.53).
ADV_INTERVAL = (0x0020, 0x4000)
EXT_ADV_INTERVAL = (0x000020, 0xFFFFFF)
#: Scan interval and window, 0.625 ms units: legacy (7.8.10, 7.8.12), extended (7.8.64).
SCAN_INTERVAL = (0x0004, 0x4000)
EXT_SCAN_INTERVAL = (0x0004, 0xFFFF)
#: Connection interval (1.25 ms units), peripheral latency (events), supervision timeout
#: (10 ms units): 7.8.12.
CONN_INTERVAL = (0x0006, 0x0C80)
MAX_LATENCY = 0x01F3
SUPERVISION_TIMEOUT = (0x000A, 0x0C80)
#: Largest connection handle (Vol 4, Part E, 5.4.2).
MAX_HANDLE = 0x0EFF
#: Legacy advertising and scan response data (7.8.7, 7.8.8).
MAX_LEGACY_DATA = 31
#: Data length extension: octets and microseconds (7.8.33, 7.8.35).
TX_OCTETS = (0x001B, 0x00FB)
TX_TIME = (0x0148, 0x4290)
#: Own address type 0..3, peer (identity) address types, filter policies.
MAX_OWN_ADDRESS_TYPE = 3
#: Advertising channel map: channels 37, 38, 39 (bits 0-2), at least one.
CHANNELS = 0x07
#: PHY bit masks: LE 1M, 2M, Coded (Set PHY, extended create connection), 1M and Coded
#: (extended scanning: 2M is not a primary PHY).
PHYS = 0x07
SCAN_PHYS = 0x05
#: Advertising event properties allowed with legacy PDUs (7.8.53, table): ADV_IND,
#: ADV_DIRECT_IND (low and high duty cycle), ADV_SCAN_IND, ADV_NONCONN_IND.
LEGACY_PROPERTIES = {0x13, 0x15, 0x1D, 0x12, 0x10}
_LEGACY_PDUS = 0x10
_HIGH_DUTY_DIRECTED = 0x08
_ANONYMOUS = 0x20

Check = Callable[[Any], "str | None"]


def _outside(value: int, bounds: tuple[int, int]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


def _range(name: str, value: int, bounds: tuple[int, int]) -> str | None:
    if _outside(value, bounds):
        return f"{name} {value:#x} outside {bounds[0]:#x}..{bounds[1]:#x}"
    return None


def _most(name: str, value: int, largest: int) -> str | None:
    return f"{name} {value:#x} above {largest:#x}" if value > largest else None


def _ordered(name: str, low: int, high: int) -> str | None:
    return f"{name}: minimum {low:#x} above maximum {high:#x}" if low > high else None


def _scan_timing(interval: int, window: int, bounds: tuple[int, int]) -> str | None:
    return _first(
        _range("scan interval", interval, bounds),
        _range("scan window", window, bounds),
        None if window <= interval else f"scan window {window:#x} above interval {interval:#x}",
    )


def _connection(
    interval_min: int,
    interval_max: int,
    latency: int,
    timeout: int,
    ce_min: int,
    ce_max: int,
) -> str | None:
    """Connection parameters (7.8.12, 7.8.18): besides each range, the supervision
    timeout must be longer than (1 + latency) * interval_max * 2, i.e. in their units
    ``timeout * 10 ms > (1 + latency) * interval_max * 1.25 ms * 2``."""
    return _first(
        _range("connection interval min", interval_min, CONN_INTERVAL),
        _range("connection interval max", interval_max, CONN_INTERVAL),
        _ordered("connection interval", interval_min, interval_max),
        _most("max latency", latency, MAX_LATENCY),
        _range("supervision timeout", timeout, SUPERVISION_TIMEOUT),
        None
        if timeout * 4 > (1 + latency) * interval_max
        else f"supervision timeout {timeout:#x} too short for interval {interval_max:#x}, "
        f"latency {latency}",
        _ordered("CE length", ce_min, ce_max),
    )


def _connection_of(c: Any) -> str | None:
    """:func:`_connection` for LE Create Connection and LE Connection Update."""
    return _connection(
        c.connection_interval_min,
        c.connection_interval_max,
        c.max_latency,
        c.supervision_timeout,
        c.min_ce_length,
        c.max_ce_length,
    )


def _phys(name: str, all_phys: int, tx: int, rx: int) -> str | None:
    """Set Default PHY / Set PHY (7.8.48, 7.8.49): a direction with a preference names
    at least one PHY, and only the three that exist."""
    return _first(
        _most(f"{name} all_phys", all_phys, 0x03),
        None if all_phys & 1 or tx and not tx & ~PHYS else f"{name} tx_phys {tx:#x}",
        None if all_phys & 2 or rx and not rx & ~PHYS else f"{name} rx_phys {rx:#x}",
    )


def _per_phy(phys: int, mask: int, lists: Sequence[Sequence[int]]) -> str | None:
    if not phys or phys & ~mask:
        return f"PHYs {phys:#x} not a non-empty subset of {mask:#x}"
    count = bin(phys).count("1")
    if any(len(values) != count for values in lists):
        return "one parameter set per PHY"
    return None


# --- advertising ----------------------------------------------------------------------------
def _advertising_parameters(c: Any) -> str | None:
    directed_high_duty = c.advertising_type == 1
    return _first(
        _most("advertising type", c.advertising_type, 4),
        None
        if directed_high_duty
        else _first(
            _range("advertising interval min", c.advertising_interval_min, ADV_INTERVAL),
            _range("advertising interval max", c.advertising_interval_max, ADV_INTERVAL),
            _ordered(
                "advertising interval", c.advertising_interval_min, c.advertising_interval_max
            ),
        ),
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _most("peer address type", c.peer_address_type, 1),
        _channel_map(c.advertising_channel_map),
        _most("advertising filter policy", c.advertising_filter_policy, 3),
    )


def _channel_map(channels: int) -> str | None:
    if not channels or channels & ~CHANNELS:
        return f"channel map {channels:#x}"
    return None


def _legacy_data(name: str) -> Check:
    def check(c: Any) -> str | None:
        return _most(f"{name} length", len(getattr(c, name)), MAX_LEGACY_DATA)

    return check


def _extended_advertising_parameters(c: Any) -> str | None:
    properties = int(c.advertising_event_properties)
    if properties & _LEGACY_PDUS:
        kind = None if properties in LEGACY_PROPERTIES else f"legacy properties {properties:#x}"
    else:
        both = properties & 0x03 == 0x03 or (properties & _ANONYMOUS and properties & 0x01)
        kind = f"extended properties {properties:#x}" if both else None
    return _first(
        _most("advertising handle", c.advertising_handle, 0xEF),
        kind,
        None
        if properties & _HIGH_DUTY_DIRECTED
        else _first(
            _range(
                "advertising interval min", c.primary_advertising_interval_min, EXT_ADV_INTERVAL
            ),
            _range(
                "advertising interval max", c.primary_advertising_interval_max, EXT_ADV_INTERVAL
            ),
            _ordered(
                "advertising interval",
                c.primary_advertising_interval_min,
                c.primary_advertising_interval_max,
            ),
        ),
        _channel_map(c.primary_advertising_channel_map),
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _most("peer address type", c.peer_address_type, 1),
        _most("advertising filter policy", c.advertising_filter_policy, 3),
        None if c.primary_advertising_phy in (1, 3) else "primary PHY",
        _range("secondary PHY", c.secondary_advertising_phy, (1, 3)),
        _most("advertising SID", c.advertising_sid, 0x0F),
        _most("scan request notification", c.scan_request_notification_enable, 1),
    )


def _extended_data(c: Any) -> str | None:
    return _first(
        _most("advertising handle", c.advertising_handle, 0xEF),
        _most("operation", c.operation, 4),
        _most("fragment preference", c.fragment_preference, 1),
    )


# --- scanning ---------------------------------------------------------------------------------
def _scan_parameters(c: Any) -> str | None:
    return _first(
        _most("scan type", c.le_scan_type, 1),
        _scan_timing(c.le_scan_interval, c.le_scan_window, SCAN_INTERVAL),
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _most("scanning filter policy", c.scanning_filter_policy, 3),
    )


def _extended_scan_parameters(c: Any) -> str | None:
    lists = (c.scan_types, c.scan_intervals, c.scan_windows)
    per_phy = _per_phy(c.scanning_phys, SCAN_PHYS, lists)
    if per_phy is not None:
        return per_phy
    return _first(
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _most("scanning filter policy", c.scanning_filter_policy, 3),
        *(_most("scan type", kind, 1) for kind in c.scan_types),
        *(
            _scan_timing(interval, window, EXT_SCAN_INTERVAL)
            for interval, window in zip(c.scan_intervals, c.scan_windows, strict=True)
        ),
    )


# --- connecting ---------------------------------------------------------------------------
def _create_connection(c: Any) -> str | None:
    return _first(
        _scan_timing(c.le_scan_interval, c.le_scan_window, SCAN_INTERVAL),
        _most("initiator filter policy", c.initiator_filter_policy, 1),
        _most("peer address type", c.peer_address_type, 3),
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _connection_of(c),
    )


def _extended_create_connection(c: Any) -> str | None:
    lists = (
        c.scan_intervals,
        c.scan_windows,
        c.connection_interval_mins,
        c.connection_interval_maxs,
        c.max_latencies,
        c.supervision_timeouts,
        c.min_ce_lengths,
        c.max_ce_lengths,
    )
    per_phy = _per_phy(c.initiating_phys, PHYS, lists)
    if per_phy is not None:
        return per_phy
    return _first(
        _most("initiator filter policy", c.initiator_filter_policy, 1),
        _most("own address type", c.own_address_type, MAX_OWN_ADDRESS_TYPE),
        _most("peer address type", c.peer_address_type, 3),
        *(
            _first(
                _scan_timing(values[0], values[1], EXT_SCAN_INTERVAL),
                _connection(*values[2:]),
            )
            for values in zip(*lists, strict=True)
        ),
    )


def _connection_update(c: Any) -> str | None:
    return _first(
        _most("connection handle", c.connection_handle, MAX_HANDLE),
        _connection_of(c),
    )


# --- addresses, data length, PHYs -------------------------------------------------------
def _random_address(c: Any) -> str | None:
    """All zeros or all ones is no random address of any kind (Vol 6, Part B, 1.3.2: the
    random part of a static or non-resolvable address is never all 0s or all 1s)."""
    raw = bytes(c.random_address)
    return "random address all 0s or all 1s" if raw in (bytes(6), b"\xff" * 6) else None


def _data_length(c: Any) -> str | None:
    return _first(
        _most("connection handle", c.connection_handle, MAX_HANDLE),
        _range("TX octets", c.tx_octets, TX_OCTETS),
        _range("TX time", c.tx_time, TX_TIME),
    )


def _suggested_data_length(c: Any) -> str | None:
    return _first(
        _range("suggested TX octets", c.suggested_max_tx_octets, TX_OCTETS),
        _range("suggested TX time", c.suggested_max_tx_time, TX_TIME),
    )


def _default_phy(c: Any) -> str | None:
    return _phys("default PHY", c.all_phys, c.tx_phys, c.rx_phys)


def _set_phy(c: Any) -> str | None:
    return _first(
        _most("connection handle", c.connection_handle, MAX_HANDLE),
        _phys("PHY", c.all_phys, c.tx_phys, c.rx_phys),
        _most("PHY options", c.phy_options, 2),
    )


def _enable(field: str, largest: int = 1) -> Check:
    def check(c: Any) -> str | None:
        return _most(field, int(getattr(c, field)), largest)

    return check


def _scan_enable(c: Any) -> str | None:
    return _first(
        _most("scan enable", c.le_scan_enable, 1), _most("duplicates", c.filter_duplicates, 1)
    )


def _extended_scan_enable(c: Any) -> str | None:
    return _first(_most("scan enable", c.enable, 1), _most("duplicates", c.filter_duplicates, 2))


_CHECKS: dict[type[hci.HCI_Command], Check] = {
    hci.HCI_LE_Set_Advertising_Parameters_Command: _advertising_parameters,
    hci.HCI_LE_Set_Advertising_Data_Command: _legacy_data("advertising_data"),
    hci.HCI_LE_Set_Scan_Response_Data_Command: _legacy_data("scan_response_data"),
    hci.HCI_LE_Set_Advertising_Enable_Command: _enable("advertising_enable"),
    hci.HCI_LE_Set_Extended_Advertising_Parameters_Command: _extended_advertising_parameters,
    hci.HCI_LE_Set_Extended_Advertising_Data_Command: _extended_data,
    hci.HCI_LE_Set_Extended_Scan_Response_Data_Command: _extended_data,
    hci.HCI_LE_Set_Extended_Advertising_Enable_Command: _enable("enable"),
    hci.HCI_LE_Set_Scan_Parameters_Command: _scan_parameters,
    hci.HCI_LE_Set_Scan_Enable_Command: _scan_enable,
    hci.HCI_LE_Set_Extended_Scan_Parameters_Command: _extended_scan_parameters,
    hci.HCI_LE_Set_Extended_Scan_Enable_Command: _extended_scan_enable,
    hci.HCI_LE_Create_Connection_Command: _create_connection,
    hci.HCI_LE_Extended_Create_Connection_Command: _extended_create_connection,
    hci.HCI_LE_Connection_Update_Command: _connection_update,
    hci.HCI_LE_Set_Random_Address_Command: _random_address,
    hci.HCI_LE_Set_Data_Length_Command: _data_length,
    hci.HCI_LE_Write_Suggested_Default_Data_Length_Command: _suggested_data_length,
    hci.HCI_LE_Set_Default_PHY_Command: _default_phy,
    hci.HCI_LE_Set_PHY_Command: _set_phy,
}


def invalid_parameters(command: hci.HCI_Command) -> str | None:
    """What is wrong with ``command``'s parameters for a controller, or None."""
    check = _CHECKS.get(type(command))
    return None if check is None else check(command)
