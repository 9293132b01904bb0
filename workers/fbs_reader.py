"""Direct reads of worker messages on the hot paths, without the generated classes.

The generated Python accessors cost several interpreted calls per field (each
``Offset`` goes through range-checked helpers), and the object API
(``...T.InitFromObj``) builds a whole tree of objects that ``to_dict`` then
walks again. For the responses read on every call of a hot operation (the
channel's own ``Message``/``Response`` headers, a WebRtcTransport's dump and
stats, the consume response) this module reads the buffer with ``struct``:
one ``unpack_from`` for a table's vtable, one per field.

A table is described by a schema: ``(json_name, slot, read, default)`` per
field, where ``read(buf, position)`` decodes the field stored at
``position`` and ``default`` stands for an absent field. Schemas give the same
values the object API + ``fbs_utils.to_dict`` give: absent scalars are their
schema default, absent strings, tables and vectors ``None``, strings ``str``,
enums the names ``fbs_utils`` maps them to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Reader = Callable[[bytes, int], Any]
Schema = tuple[tuple[str, int, Reader, Any], ...]

# Bound ``unpack_from``s, annotated with what they return (typeshed says tuple[Any, ...]).
_IntUnpacker = Callable[[bytes, int], tuple[int]]
_I32: _IntUnpacker = struct.Struct("<i").unpack_from
_U32: _IntUnpacker = struct.Struct("<I").unpack_from
_U16: _IntUnpacker = struct.Struct("<H").unpack_from
_U64: _IntUnpacker = struct.Struct("<Q").unpack_from
_F64: Callable[[bytes, int], tuple[float]] = struct.Struct("<d").unpack_from
_VTABLE_UNPACKERS: dict[int, Callable[..., Any]] = {}


def field_offsets(buf: bytes, table: int) -> tuple[int, ...]:
    """The vtable of the table at ``table``: each field's offset in it (0: absent)."""
    vtable = table - _I32(buf, table)[0]
    size = _U16(buf, vtable)[0]
    unpack = _VTABLE_UNPACKERS.get(size)
    if unpack is None:
        unpack = _VTABLE_UNPACKERS[size] = struct.Struct(f"<{(size - 4) // 2}H").unpack_from
    return unpack(buf, vtable + 4)


def decode(buf: bytes, table: int, schema: Schema) -> dict[str, Any]:
    """The fields of the table at ``table``, as a dict in schema order."""
    offsets = field_offsets(buf, table)
    count = len(offsets)
    result = {}
    for name, slot, read, default in schema:
        offset = offsets[slot] if slot < count else 0
        result[name] = read(buf, table + offset) if offset else default
    return result


def scalar(buf: bytes, table: int, slot: int, read: Reader, default: Any) -> Any:
    """One field of a table (e.g. the only field of a small response)."""
    offsets = field_offsets(buf, table)
    offset = offsets[slot] if slot < len(offsets) else 0
    return read(buf, table + offset) if offset else default


def deref(buf: bytes, position: int) -> int:
    """Where the uoffset stored at ``position`` points."""
    return position + _U32(buf, position)[0]


# -- field readers: ``read(buf, position)`` ---------------------------------------------


def u8(buf: bytes, position: int) -> int:
    return buf[position]


def boolean(buf: bytes, position: int) -> bool:
    return buf[position] != 0


def u16(buf: bytes, position: int) -> int:
    return _U16(buf, position)[0]


def u32(buf: bytes, position: int) -> int:
    return _U32(buf, position)[0]


def u64(buf: bytes, position: int) -> int:
    return _U64(buf, position)[0]


def f64(buf: bytes, position: int) -> float:
    return _F64(buf, position)[0]


def string(buf: bytes, position: int) -> str:
    position += _U32(buf, position)[0]
    start = position + 4
    return buf[start : start + _U32(buf, position)[0]].decode("utf-8", "replace")


def u8_vector(buf: bytes, position: int) -> list[int]:
    position += _U32(buf, position)[0]
    start = position + 4
    return list(buf[start : start + _U32(buf, position)[0]])


def enum(names: dict[int, str]) -> Reader:
    """A uint8 enum as its name (an unknown value stays a number, as in ``to_dict``)."""

    def read(buf: bytes, position: int) -> Any:
        value = buf[position]
        return names.get(value, value)

    return read


def table(schema: Schema, convert: Callable[[dict[str, Any]], Any] | None = None) -> Reader:
    """A sub-table as a dict (``convert``, if given, reshapes it)."""

    def read(buf: bytes, position: int) -> Any:
        result = decode(buf, position + _U32(buf, position)[0], schema)
        return convert(result) if convert else result

    return read


def vector(read_item: Reader) -> Reader:
    """A vector of strings or tables (``read_item`` reads one reference)."""

    def read(buf: bytes, position: int) -> list[Any]:
        position += _U32(buf, position)[0]
        first = position + 4
        return [read_item(buf, first + 4 * index) for index in range(_U32(buf, position)[0])]

    return read
