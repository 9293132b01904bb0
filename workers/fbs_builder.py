"""A ``flatbuffers.Builder`` whose hot paths are cheaper, with the same output.

The stock Python builder checks every value against its type's range in
Python (``enforce_number``), goes through two or three helper calls per
scalar and writes a vtable one 16-bit entry at a time. The generated
``...Start/Add.../End`` functions call those paths ~100 times per table, which
is most of the cost of building a worker request body.

``FastBuilder`` keeps the builder's algorithm and so its exact bytes
(alignment, field order, vtable deduplication): it packs with ``struct``
directly and writes each vtable in one ``pack_into``. Range checks happen in
``struct`` (in C); when it refuses a value, the stock check runs to raise the
same ``TypeError`` the stock builder would have raised.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.builder import IsNestedError, IsNotNestedError, OffsetArithmeticError

# flatbuffers ships no type information: its number-type flag classes (``N.Uint8Flags``...)
# are Any to mypy. A scalar slot value is an int, a float or a bool (``float`` covers all three).
Flags = Any

_UOFFSET = struct.Struct("<I")
_SOFFSET = struct.Struct("<i")


@cache
def _vtable_packer(fields: int) -> struct.Struct:
    """Packs a vtable: its size, the object's size, then one offset per field."""
    return struct.Struct(f"<{fields + 2}H")


class FastBuilder(flatbuffers.Builder):  # type: ignore[misc]  # flatbuffers is untyped (Any)
    """Same bytes as ``flatbuffers.Builder``, fewer interpreted steps per value."""

    # The stock builder's state (its __slots__), declared for the type checker only.
    Bytes: bytearray
    head: int
    minalign: int
    objectEnd: int
    nested: bool
    forceDefaults: bool
    current_vtable: list[int]  # None outside a table, as in the stock builder
    vtables: dict[tuple[int, ...], int]

    def _grow_until(self, needed: int) -> None:
        """Grow the buffer until ``head`` leaves ``needed`` free bytes in front."""
        while self.head < needed:
            old_size = len(self.Bytes)
            self.GrowByteBuffer()
            self.head += len(self.Bytes) - old_size

    def Prep(self, size: int, additionalBytes: int) -> None:
        if size > self.minalign:
            self.minalign = size
        align_size = (-(len(self.Bytes) - self.head + additionalBytes)) & (size - 1)
        needed = align_size + size + additionalBytes
        if self.head < needed:
            self._grow_until(needed)
        if align_size:
            head = self.head
            self.Bytes[head - align_size : head] = bytes(align_size)
            self.head = head - align_size

    def Place(self, x: float, flags: Flags) -> None:
        head = self.head - flags.bytewidth
        _pack_into(flags, self.Bytes, head, x)
        self.head = head

    def Prepend(self, flags: Flags, off: int) -> None:
        self.Prep(flags.bytewidth, 0)
        self.Place(off, flags)

    def PrependSlot(self, flags: Flags, o: int, x: float, d: float | None) -> None:
        if x != d or (self.forceDefaults and d is not None):
            if not self.nested:
                raise IsNotNestedError()
            self.Prep(flags.bytewidth, 0)
            head = self.head - flags.bytewidth
            _pack_into(flags, self.Bytes, head, x)
            self.head = head
            self.current_vtable[o] = len(self.Bytes) - head

    def PrependBoolSlot(self, o: int, x: float, d: float | None) -> None:
        if x.__class__ is not bool:  # struct packs any value as a bool; the stock builder refuses 2
            N.enforce_number(x, N.BoolFlags)
        self.PrependSlot(N.BoolFlags, o, x, d)

    def PrependByteSlot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Uint8Flags, o, x, d)

    def PrependUint8Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Uint8Flags, o, x, d)

    def PrependUint16Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Uint16Flags, o, x, d)

    def PrependUint32Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Uint32Flags, o, x, d)

    def PrependUint64Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Uint64Flags, o, x, d)

    def PrependInt8Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Int8Flags, o, x, d)

    def PrependInt16Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Int16Flags, o, x, d)

    def PrependInt32Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Int32Flags, o, x, d)

    def PrependInt64Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Int64Flags, o, x, d)

    def PrependFloat32Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Float32Flags, o, x, d)

    def PrependFloat64Slot(self, o: int, x: float, d: float | None) -> None:
        self.PrependSlot(N.Float64Flags, o, x, d)

    def PrependUOffsetTRelative(self, off: int) -> None:
        self.Prep(4, 0)
        offset = len(self.Bytes) - self.head
        if off > offset:
            raise OffsetArithmeticError("flatbuffers: Offset arithmetic error.")
        head = self.head - 4
        _UOFFSET.pack_into(self.Bytes, head, offset - off + 4)
        self.head = head

    def PrependUOffsetTRelativeSlot(self, o: int, x: int, d: int | None) -> None:
        if x != d or self.forceDefaults:
            if not self.nested:
                raise IsNotNestedError()
            self.PrependUOffsetTRelative(x)
            self.current_vtable[o] = len(self.Bytes) - self.head

    def Slot(self, slotnum: int) -> None:
        self.assertNested()
        self.current_vtable[slotnum] = len(self.Bytes) - self.head

    def PlaceUOffsetT(self, x: int) -> None:
        self.Place(x, N.UOffsetTFlags)

    def PlaceSOffsetT(self, x: int) -> None:
        self.Place(x, N.SOffsetTFlags)

    def PlaceVOffsetT(self, x: int) -> None:
        self.Place(x, N.VOffsetTFlags)

    def CreateString(self, s: str | bytes | bytearray, encoding: str = "utf-8", errors: str = "strict") -> int:
        if self.nested:
            raise IsNestedError()
        data: bytes | bytearray
        if isinstance(s, str):
            data = s.encode(encoding, errors)
        elif isinstance(s, (bytes, bytearray)):
            data = s
        else:
            raise TypeError("non-string passed to CreateString")
        length = len(data)
        self.Prep(4, length + 1)
        head = self.head - length - 1
        buf = self.Bytes
        buf[head : head + length] = data
        buf[head + length] = 0
        head -= 4
        _UOFFSET.pack_into(buf, head, length)
        self.head = head
        return len(buf) - head

    def WriteVtable(self) -> int:
        """The stock algorithm (same bytes, same deduplication), one ``pack_into`` per vtable."""
        self.Prep(4, 0)
        object_head = self.head - 4
        self.head = object_head
        buf_len = len(self.Bytes)
        object_offset = buf_len - object_head
        fields = self.current_vtable
        count = len(fields)
        while count and not fields[count - 1]:
            count -= 1
        offsets = [object_offset - field if field else 0 for field in fields[:count]]
        object_size = object_offset - self.objectEnd
        key = (*offsets[::-1], object_size)
        existing = self.vtables.get(key)
        if existing is None:
            vtable_bytes = 2 * (count + 2)
            if object_head < vtable_bytes:
                self._grow_until(vtable_bytes)
                buf_len = len(self.Bytes)
                object_head = buf_len - object_offset
            head = object_head - vtable_bytes
            _vtable_packer(count).pack_into(self.Bytes, head, vtable_bytes, object_size, *offsets)
            self.head = head
            _SOFFSET.pack_into(self.Bytes, object_head, vtable_bytes)
            self.vtables[key] = buf_len - head
        else:
            _SOFFSET.pack_into(self.Bytes, object_head, existing - object_offset)
        self.current_vtable = None  # type: ignore[assignment]  # out of the table, as the stock builder
        return object_offset


def _pack_into(flags: Flags, buf: bytearray, position: int, value: float) -> None:
    """``struct`` range-checks in C; a refused value gets the stock builder's error."""
    try:
        flags.packer_type.pack_into(buf, position, value)
    except struct.error:
        N.enforce_number(value, flags)  # raises the stock TypeError when out of range
        raise
