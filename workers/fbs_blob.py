"""A small FlatBuffers writer for position-independent fragments ("blobs").

Why not ``flatbuffers.Builder``: the Python builder spends ~100 interpreted
calls per table (alignment, range checks, vtable search), which made the
worker requests on the hot paths (RTP parameters, the channel's own
``Message``/``Request`` wrapper) cost many times what Node spends. A blob is
written parent first: each table type has a layout (vtable bytes and a
``struct`` format) computed once per set of present fields, references are
written as 0 and patched once their target exists (always forward), and
every reference is relative, so a blob can be copied anywhere 8-aligned: into
a builder (``splice``), into another blob (``Blob.fragment``) or after the
channel's frame header. The result is ordinary FlatBuffers that the generated
readers, and the worker, read like any other.

``builder_fragment`` goes the other way: what a builder built becomes a
fragment, so the channel can put a body built with the generated
``...Start/Add.../End`` functions after a frame header it writes itself.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import flatbuffers
from flatbuffers import number_types as N

U32 = struct.Struct("<I")
PADDING = [bytes(size) for size in range(8)]
# kind -> (size, struct code). "ref" is a uoffset to a string/vector/table.
SCALARS = {
    "u8": (1, "B"),
    "bool": (1, "?"),
    "u16": (2, "H"),
    "u32": (4, "I"),
    "i32": (4, "i"),
    "u64": (8, "Q"),
    "f64": (8, "d"),
    "ref": (4, "I"),
}

#: A fragment: bytes written from an 8-aligned start, and its root's position in them.
Fragment = tuple[bytes, int]


class TableLayout:
    """How one table type is laid out for a given set of present fields.

    The table is written right after its vtable: ``[vtable][soffset][fields]``,
    fields in the order given (each aligned to its size; the table start is
    aligned to 8 when a field needs it). Values are packed in that order,
    references as 0 to be patched once their target exists.
    """

    __slots__ = ("alignment", "field_positions", "packer", "ref_positions", "vtable", "vtable_size")

    def __init__(self, fields: tuple[tuple[int, str], ...]) -> None:
        self.alignment = 8 if any(SCALARS[kind][0] == 8 for _, kind in fields) else 4
        fmt, position = "<i", 4  # the soffset to the vtable
        slot_positions = [0] * (max((slot for slot, _ in fields), default=-1) + 1)
        ref_positions = []
        for slot, kind in fields:
            size, code = SCALARS[kind]
            padding = -position % size
            fmt += "x" * padding + code
            position += padding
            slot_positions[slot] = position
            if kind == "ref":
                ref_positions.append(position)
            position += size
        self.vtable_size = 4 + 2 * len(slot_positions)
        self.vtable = struct.pack(f"<HH{len(slot_positions)}H", self.vtable_size, position, *slot_positions)
        self.packer = struct.Struct(fmt)
        self.ref_positions = tuple(ref_positions)
        self.field_positions = tuple(slot_positions)  # per slot, from the table start (0: absent)


table_layout = lru_cache(maxsize=None)(TableLayout)


@lru_cache(maxsize=1024)
def encoded_string(text: str) -> bytes:
    """A FlatBuffers string (length, UTF-8, NUL); codec, URI and key names repeat."""
    data = text.encode()
    return U32.pack(len(data)) + data + b"\0"


class Blob:
    """A position-independent FlatBuffers fragment, written parent first."""

    __slots__ = ("data",)

    def __init__(self, data: bytearray | None = None) -> None:
        self.data = bytearray() if data is None else data

    def table(self, layout: TableLayout, values: tuple[Any, ...]) -> int:
        """Append a table (references left 0); returns its position."""
        data = self.data
        padding = -(len(data) + layout.vtable_size) % layout.alignment
        if padding:
            data += PADDING[padding]
        data += layout.vtable
        position = len(data)
        data += layout.packer.pack(layout.vtable_size, *values)
        return position

    def string(self, text: str) -> int:
        data = self.data
        padding = -len(data) % 4
        if padding:
            data += PADDING[padding]
        position = len(data)
        data += encoded_string(text)
        return position

    def utf8_string(self, data: bytes) -> int:
        """Append a string given as UTF-8 bytes (one not worth caching, e.g. an id)."""
        buf = self.data
        padding = -len(buf) % 4
        if padding:
            buf += PADDING[padding]
        position = len(buf)
        buf += U32.pack(len(data))
        buf += data
        buf += b"\0"
        return position

    def ref_vector(self, length: int) -> int:
        """Append a vector of ``length`` references (to patch); returns its position."""
        data = self.data
        padding = -len(data) % 4
        if padding:
            data += PADDING[padding]
        position = len(data)
        data += U32.pack(length)
        data += bytes(4 * length)
        return position

    def int32_vector(self, values: Sequence[int]) -> int:
        data = self.data
        padding = -len(data) % 4
        if padding:
            data += PADDING[padding]
        position = len(data)
        data += struct.pack(f"<I{len(values)}i", len(values), *values)
        return position

    def fragment(self, fragment: Fragment) -> int:
        """Append a fragment (see ``Fragment``); returns its root's position here."""
        data = self.data
        padding = -len(data) % 8
        if padding:
            data += PADDING[padding]
        start = len(data)
        data += fragment[0]
        return start + fragment[1]

    def patch(self, ref_position: int, target: int) -> None:
        """Point the reference at ``ref_position`` to ``target`` (always forward)."""
        U32.pack_into(self.data, ref_position, target - ref_position)

    def patch_vector(self, vector: int, index: int, target: int) -> None:
        self.patch(vector + 4 + 4 * index, target)

    def as_fragment(self, root: int) -> Fragment:
        """This blob as a fragment rooted at ``root`` (padded to a multiple of 8)."""
        data = self.data
        data += PADDING[-len(data) % 8]
        return bytes(data), root


_FLAGS = {"u8": N.Uint8Flags, "u16": N.Uint16Flags, "u32": N.Uint32Flags, "bool": N.BoolFlags}


def checked(value: Any, kind: str) -> Any:
    """``value`` for a field of ``kind``, refused with the ``TypeError`` the builder raises.

    For values a caller gave (``paused``, a delay...): the generated builder
    functions range-check them, and a request written as a blob must refuse
    the same ones the same way.
    """
    N.enforce_number(value, _FLAGS[kind])
    return value


def _string_table_head() -> tuple[bytes, int]:
    """The bytes of a one-string table up to its string's length, and the table's position."""
    layout = table_layout(((0, "ref"),))
    blob = Blob()
    position = blob.table(layout, (0,))
    string = blob.utf8_string(b"")
    blob.patch(position + layout.ref_positions[0], string)
    return bytes(blob.data[:string]), position


_STRING_TABLE_HEAD, _STRING_TABLE_ROOT = _string_table_head()


def string_table(text: str) -> Fragment:
    """A table whose only field (slot 0) is the string ``text``.

    That is the body of every request naming one entity (``CreateRouterRequest``,
    ``CloseTransportRequest``, ``CloseProducerRequest``...), sent on every
    create and close: only the string differs, so the rest is a template.
    """
    data = text.encode()
    fragment = b"".join((_STRING_TABLE_HEAD, U32.pack(len(data)), data, b"\0"))
    return fragment + PADDING[-len(fragment) % 8], _STRING_TABLE_ROOT


def splice(builder: flatbuffers.Builder, blob: Blob, root: int) -> int:
    """Copy a blob into ``builder``; returns the builder offset of its ``root``.

    Alignment inside the blob is relative to its start, so the blob is padded
    to a multiple of 8 and placed where the builder is 8-aligned.
    """
    builder.assertNotNested()
    data = blob.data
    data += PADDING[-len(data) % 8]
    size = len(data)
    builder.Prep(8, size)
    head = builder.head - size
    builder.Bytes[head : builder.head] = data
    builder.head = head
    offset: int = builder.Offset() - root
    return offset


def builder_fragment(builder: flatbuffers.Builder, root_offset: int) -> Fragment:
    """What ``builder`` holds, as a fragment rooted at the table ``root_offset``.

    A builder aligns relative to the end of its buffer; front padding to a
    multiple of 8 makes that the same as aligning relative to the start.
    """
    used = builder.Bytes[builder.head :]
    padding = -len(used) % 8
    return PADDING[padding] + used, padding + len(used) - root_offset
