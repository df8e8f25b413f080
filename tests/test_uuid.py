"""bluetooth.UUID: every constructor form, equality, ordering, hashing, repr, buffer."""

from __future__ import annotations

import pytest

from mpbluetooth import UUID


@pytest.mark.parametrize(
    ("value", "text", "raw"),
    [
        (0x180D, "UUID(0x180d)", b"\x0d\x18"),
        (0x2A00, "UUID(0x2a00)", b"\x00\x2a"),
        (0, "UUID(0x0000)", b"\x00\x00"),
        (-1, "UUID(0xffff)", b"\xff\xff"),  # MicroPython does not check negatives
        (b"\x0d\x18", "UUID(0x180d)", b"\x0d\x18"),
        (bytearray(b"\x41\x42\x31\x32"), "UUID(0x32314241)", b"AB12"),
        ("AB12", "UUID(0x32314241)", b"AB12"),  # a 4-char str is raw bytes, not hex
        (
            "6E400001-B5A3-F393-E0A9-E50E24DCCA9E",
            "UUID('6e400001-b5a3-f393-e0a9-e50e24dcca9e')",
            bytes.fromhex("6e400001b5a3f393e0a9e50e24dcca9e")[::-1],
        ),
        (
            "6e400001b5a3f393e0a9e50e24dcca9e",
            "UUID('6e400001-b5a3-f393-e0a9-e50e24dcca9e')",
            bytes.fromhex("6e400001b5a3f393e0a9e50e24dcca9e")[::-1],
        ),
        (
            b"6E40-0001B5A3F393E0A9E50E24DC-CA9E",
            "UUID('6e400001-b5a3-f393-e0a9-e50e24dcca9e')",
            bytes.fromhex("6e400001b5a3f393e0a9e50e24dcca9e")[::-1],
        ),
        (bytes(range(16)), "UUID('0f0e0d0c-0b0a-0908-0706-050403020100')", bytes(range(16))),
    ],
)
def test_constructor_forms(value: object, text: str, raw: bytes) -> None:
    uuid = UUID(value)
    assert repr(uuid) == text
    assert str(uuid) == text
    assert bytes(uuid) == raw
    assert memoryview(uuid).tobytes() == raw
    assert memoryview(uuid).readonly


def test_copy_and_memoryview_slice() -> None:
    adv = memoryview(b"\x03\x03\x0d\x18")
    assert UUID(adv[2:4]) == UUID(0x180D)
    assert UUID(UUID(0x2902)) == UUID(0x2902)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0x10000, ValueError, "invalid UUID"),
        ("6E400001-B5A3-F393-E0A9-E50E24DCCA9", ValueError, "UUID too short"),
        ("6E400001-B5A3-F393-E0A9-E50E24DCCA9E0", ValueError, "UUID too long"),
        ("6E400001-B5A3-F393-E0A9-E50E24DCCA9G", ValueError, "invalid char in UUID"),
        ("xyz", ValueError, "invalid char in UUID"),
        ("", ValueError, "UUID too short"),
        (True, TypeError, "object with buffer protocol required"),
        (1.5, TypeError, "object with buffer protocol required"),
        (None, TypeError, "object with buffer protocol required"),
        ([1, 2], TypeError, "object with buffer protocol required"),
    ],
)
def test_bad_input(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        UUID(value)
    assert str(info.value) == message


def test_arity() -> None:
    with pytest.raises(TypeError):
        UUID()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        UUID(1, 2)  # type: ignore[call-arg]


def test_equality_never_coerces_or_normalises() -> None:
    assert UUID(0x180D) == UUID(b"\x0d\x18")
    assert UUID(0x180D) != UUID("0000180d-0000-1000-8000-00805f9b34fb")
    assert UUID(0x2902) != 0x2902
    assert UUID(0x180D) != b"\x0d\x18"
    assert b"\x0d\x18" != UUID(0x180D)
    assert UUID(0x180D) != "\x0d\x18"


def test_ordering_by_size_then_little_endian_bytes() -> None:
    assert UUID(0x0100) < UUID(0x0001)
    assert UUID(0xFFFF) < UUID("AB12") < UUID(bytes(16))
    mixed = [UUID("6e400001-b5a3-f393-e0a9-e50e24dcca9e"), UUID(0x2902), UUID("AB12")]
    assert sorted(mixed) == [mixed[1], mixed[2], mixed[0]]
    assert UUID(1) <= UUID(1) and UUID(1) >= UUID(1) and UUID(0x0001) > UUID(0x0100)


def test_hash_and_dict_keys() -> None:
    table = {(3, UUID(0x2A00)): "name"}
    assert table[(3, UUID(b"\x00\x2a"))] == "name"
    assert len({UUID(0x180D), UUID(b"\x0d\x18")}) == 1


def test_repr_in_containers() -> None:
    assert repr([UUID(0x180F), UUID(0x181A)]) == "[UUID(0x180f), UUID(0x181a)]"


def test_no_sequence_behaviour() -> None:
    uuid = UUID(0x180D)
    with pytest.raises(TypeError):
        len(uuid)
    with pytest.raises(TypeError):
        uuid[0]
    assert len(bytes(uuid)) == 2  # what aioble does
