"""Tests of the protobuf wire-format decoder/encoder with hand-encoded bytes (examples from protobuf.dev)."""

from __future__ import annotations

import pytest

from visiontune.interop.mindspore.protobuf_wire import (
    WIRE_TYPE_FIXED32,
    WIRE_TYPE_FIXED64,
    WIRE_TYPE_LENGTH_DELIMITED,
    WIRE_TYPE_VARINT,
    WireFormatError,
    decode_packed_varints,
    decode_varint,
    encode_length_delimited_field,
    encode_length_delimited_header,
    encode_tag,
    encode_varint,
    encode_varint_field,
    iter_fields,
    read_field,
    to_signed_int64,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (150, b"\x96\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
        (-1, b"\xff" * 9 + b"\x01"),  # int64 -1 is the 10-byte two's complement
    ],
)
def test_varint_encoding_matches_hand_computed_bytes(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    decoded, next_offset = decode_varint(b"\x55" + encoded + b"\x00", 1, len(encoded) + 2)
    assert decoded == value & (2**64 - 1)
    assert next_offset == 1 + len(encoded)


def test_signed_int64_interpretation() -> None:
    assert to_signed_int64(2**64 - 1) == -1
    assert to_signed_int64(2**63) == -(2**63)
    assert to_signed_int64(2**63 - 1) == 2**63 - 1
    assert to_signed_int64(5) == 5


def test_encode_varint_rejects_values_outside_64_bits() -> None:
    with pytest.raises(ValueError, match="does not fit in a 64-bit varint"):
        encode_varint(2**64)
    with pytest.raises(ValueError, match="does not fit"):
        encode_varint(-(2**63) - 1)


def test_truncated_varint_reports_its_offset() -> None:
    with pytest.raises(WireFormatError, match="data ends inside a varint at byte offset 2") as excinfo:
        decode_varint(b"\x00\x00\x80\x80", 2, 4)
    assert excinfo.value.offset == 2
    assert excinfo.value.truncated


def test_overlong_varint_is_invalid_not_truncated() -> None:
    with pytest.raises(WireFormatError, match="varint longer than 10 bytes at byte offset 0") as excinfo:
        decode_varint(b"\x80" * 11 + b"\x01", 0, 12)
    assert not excinfo.value.truncated


def test_fields_of_the_protobuf_documentation_examples() -> None:
    # field 1 = varint 150, field 2 = string "testing" (https://protobuf.dev/programming-guides/encoding/)
    message = b"\x08\x96\x01" + b"\x12\x07testing"
    fields = list(iter_fields(message, 0, len(message)))
    assert [(field.number, field.wire_type) for field in fields] == [
        (1, WIRE_TYPE_VARINT),
        (2, WIRE_TYPE_LENGTH_DELIMITED),
    ]
    assert fields[0].value == 150 and fields[0].offset == 0 and fields[0].payload_end == 3
    assert fields[1].value == 7 and fields[1].offset == 3
    assert message[fields[1].payload_start : fields[1].payload_end] == b"testing"


def test_fixed_width_fields_are_decoded_little_endian() -> None:
    message = b"\x1d\x01\x02\x03\x04" + b"\x21" + bytes(range(8))  # field 3 (I32), field 4 (I64)
    fixed32, fixed64 = iter_fields(message, 0, len(message))
    assert (fixed32.number, fixed32.wire_type, fixed32.value) == (3, WIRE_TYPE_FIXED32, 0x04030201)
    assert (fixed64.number, fixed64.wire_type) == (4, WIRE_TYPE_FIXED64)
    assert fixed64.value == int.from_bytes(bytes(range(8)), "little")
    assert fixed64.payload_end == len(message)


def test_length_delimited_field_past_the_end_is_truncation_at_the_tag_offset() -> None:
    message = b"\x08\x01" + b"\x12\x07tes"
    with pytest.raises(WireFormatError, match="field 2 declares 7 bytes but only 3 remain at byte offset 2") as excinfo:
        list(iter_fields(message, 0, len(message)))
    assert excinfo.value.truncated
    assert excinfo.value.offset == 2


def test_fixed_width_field_past_the_end_is_truncation() -> None:
    with pytest.raises(WireFormatError, match="data ends inside fixed-width field 3 at byte offset 0"):
        read_field(b"\x1d\x01\x02", 0, 3)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x0b\x00", "unsupported wire type 3 \\(field 1\\) at byte offset 0"),  # start group
        (b"\x0e\x00", "unsupported wire type 6"),
        (b"\x00\x00", "invalid field number 0 at byte offset 0"),
    ],
)
def test_invalid_tags_are_rejected(message: bytes, error: str) -> None:
    with pytest.raises(WireFormatError, match=error) as excinfo:
        read_field(message, 0, len(message))
    assert not excinfo.value.truncated


def test_packed_varints() -> None:
    payload = encode_varint(3) + encode_varint(270) + encode_varint(86942)
    assert payload == b"\x03\x8e\x02\x9e\xa7\x05"  # the protobuf.dev packed example
    assert decode_packed_varints(payload, 0, len(payload)) == [3, 270, 86942]


def test_encoders_build_the_documented_bytes() -> None:
    assert encode_varint_field(1, 150) == b"\x08\x96\x01"
    assert encode_length_delimited_field(2, b"testing") == b"\x12\x07testing"
    assert encode_length_delimited_header(1, 300) == b"\x0a\xac\x02"
    assert encode_tag(3, WIRE_TYPE_LENGTH_DELIMITED) == b"\x1a"
    with pytest.raises(ValueError, match="field number must be in"):
        encode_tag(0, WIRE_TYPE_VARINT)
    with pytest.raises(ValueError, match="length must be >= 0"):
        encode_length_delimited_header(1, -1)
