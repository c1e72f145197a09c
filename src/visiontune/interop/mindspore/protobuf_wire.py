"""A minimal protobuf wire-format decoder and encoder (no protobuf dependency).

Only what MindSpore checkpoints need: varints, length-delimited fields, and skipping of fixed-width
fields. Messages are read straight from a ``bytes``/``memoryview``/``mmap`` buffer by offset, so a
multi-gigabyte file is never copied to be parsed. See https://protobuf.dev/programming-guides/encoding/.

Wire types (the low three bits of a field's tag):

====  ===============  ==========================================
id    name             payload
====  ===============  ==========================================
0     VARINT           base-128 varint, 1 to 10 bytes
1     I64              8 bytes, little-endian
2     LEN              varint length, then that many bytes
5     I32              4 bytes, little-endian
====  ===============  ==========================================

Wire types 3 and 4 (deprecated groups), 6 and 7 (undefined) are rejected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

Buffer = bytes | bytearray | memoryview

WIRE_TYPE_VARINT = 0
WIRE_TYPE_FIXED64 = 1
WIRE_TYPE_LENGTH_DELIMITED = 2
WIRE_TYPE_FIXED32 = 5

_FIXED_WIDTH_BYTES = {WIRE_TYPE_FIXED64: 8, WIRE_TYPE_FIXED32: 4}
_MAX_VARINT_BYTES = 10
_UINT64_MASK = (1 << 64) - 1
_MAX_FIELD_NUMBER = (1 << 29) - 1


class WireFormatError(ValueError):
    """The bytes do not follow the protobuf wire format.

    Attributes:
        offset: byte offset (from the start of the buffer) where decoding failed.
        truncated: True when the data ended in the middle of a field (as opposed to invalid data).
    """

    def __init__(self, message: str, *, offset: int, truncated: bool = False) -> None:
        super().__init__(f"{message} at byte offset {offset}")
        self.offset = offset
        self.truncated = truncated


@dataclass(frozen=True)
class WireField:
    """One decoded field of a protobuf message.

    Attributes:
        number: field number from the ``.proto`` file (>= 1).
        wire_type: one of the ``WIRE_TYPE_*`` constants.
        offset: byte offset of the field's tag in the buffer.
        value: the integer for VARINT fields; the payload length for LEN fields; the raw little-endian
            integer for I64/I32 fields.
        payload_start: byte offset where the payload starts (after tag and, for LEN fields, the length).
        payload_end: byte offset just past the payload; the next field starts here.
    """

    number: int
    wire_type: int
    offset: int
    value: int
    payload_start: int
    payload_end: int


def decode_varint(buffer: Buffer, offset: int, end: int) -> tuple[int, int]:
    """Decode one base-128 varint.

    Args:
        buffer: the encoded bytes.
        offset: byte offset of the varint's first byte.
        end: the varint must finish before this offset (the end of the enclosing message).

    Returns:
        ``(value, next_offset)``: the unsigned value (< 2**64) and the offset just past the varint.

    Raises:
        WireFormatError: the data ends inside the varint, or the varint is longer than 10 bytes.
    """
    value = 0
    shift = 0
    position = offset
    while True:
        if position >= end:
            raise WireFormatError("data ends inside a varint", offset=offset, truncated=True)
        if position - offset >= _MAX_VARINT_BYTES:
            raise WireFormatError("varint longer than 10 bytes", offset=offset)
        byte = buffer[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value & _UINT64_MASK, position
        shift += 7


def to_signed_int64(value: int) -> int:
    """Reinterpret an unsigned 64-bit varint value as a two's-complement ``int64``."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_field(buffer: Buffer, offset: int, end: int) -> WireField:
    """Decode the field whose tag starts at ``offset``.

    Args:
        buffer: the encoded bytes.
        offset: byte offset of the field tag.
        end: end offset of the enclosing message; the field must fit before it.

    Returns:
        The decoded field. LEN payloads are not copied: use ``payload_start``/``payload_end``.

    Raises:
        WireFormatError: invalid tag, unsupported wire type, or a field running past ``end``.
    """
    tag, position = decode_varint(buffer, offset, end)
    number, wire_type = tag >> 3, tag & 0x7
    if number == 0 or number > _MAX_FIELD_NUMBER:
        raise WireFormatError(f"invalid field number {number}", offset=offset)
    if wire_type == WIRE_TYPE_VARINT:
        value, payload_end = decode_varint(buffer, position, end)
        return WireField(number, wire_type, offset, value, position, payload_end)
    if wire_type == WIRE_TYPE_LENGTH_DELIMITED:
        length, payload_start = decode_varint(buffer, position, end)
        payload_end = payload_start + length
        if payload_end > end:
            raise WireFormatError(
                f"field {number} declares {length} bytes but only {end - payload_start} remain",
                offset=offset,
                truncated=True,
            )
        return WireField(number, wire_type, offset, length, payload_start, payload_end)
    if wire_type in _FIXED_WIDTH_BYTES:
        payload_end = position + _FIXED_WIDTH_BYTES[wire_type]
        if payload_end > end:
            raise WireFormatError(f"data ends inside fixed-width field {number}", offset=offset, truncated=True)
        value = int.from_bytes(bytes(buffer[position:payload_end]), "little")
        return WireField(number, wire_type, offset, value, position, payload_end)
    raise WireFormatError(f"unsupported wire type {wire_type} (field {number})", offset=offset)


def iter_fields(buffer: Buffer, start: int, end: int) -> Iterator[WireField]:
    """Iterate over the fields of the message stored in ``buffer[start:end]``.

    Args:
        buffer: the encoded bytes.
        start: offset of the message's first field.
        end: offset just past the message.

    Yields:
        Each field in file order; offsets are relative to the start of ``buffer``.

    Raises:
        WireFormatError: as raised by :func:`read_field`.
    """
    offset = start
    while offset < end:
        field = read_field(buffer, offset, end)
        yield field
        offset = field.payload_end


def decode_packed_varints(buffer: Buffer, start: int, end: int) -> list[int]:
    """Decode a packed repeated varint field's payload ``buffer[start:end]`` into unsigned values."""
    values = []
    offset = start
    while offset < end:
        value, offset = decode_varint(buffer, offset, end)
        values.append(value)
    return values


def encode_varint(value: int) -> bytes:
    """Encode an integer as a varint; negative values use the 10-byte two's-complement ``int64`` form.

    Raises:
        ValueError: the value does not fit in 64 bits.
    """
    if not -(1 << 63) <= value < (1 << 64):
        raise ValueError(f"{value} does not fit in a 64-bit varint")
    value &= _UINT64_MASK
    encoded = bytearray()
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def encode_tag(number: int, wire_type: int) -> bytes:
    """Encode a field tag (field number and wire type)."""
    if not 1 <= number <= _MAX_FIELD_NUMBER:
        raise ValueError(f"field number must be in [1, {_MAX_FIELD_NUMBER}], got {number}")
    return encode_varint((number << 3) | wire_type)


def encode_varint_field(number: int, value: int) -> bytes:
    """Encode a complete VARINT field (tag and value)."""
    return encode_tag(number, WIRE_TYPE_VARINT) + encode_varint(value)


def encode_length_delimited_header(number: int, length: int) -> bytes:
    """Encode the tag and length of a LEN field; the caller writes the ``length`` payload bytes next."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return encode_tag(number, WIRE_TYPE_LENGTH_DELIMITED) + encode_varint(length)


def encode_length_delimited_field(number: int, payload: bytes) -> bytes:
    """Encode a complete LEN field (tag, length and payload)."""
    return encode_length_delimited_header(number, len(payload)) + payload
