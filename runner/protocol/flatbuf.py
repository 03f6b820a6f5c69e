"""The slice of the FlatBuffers wire format that A6 uses: bounded reads and a forward writer.

Why not the ``flatbuffers`` runtime: it is pure Python that walks every field through several
method calls, and its ``Builder`` writes back to front one scalar at a time. The A6 schema is a
dozen small tables, so a reader that unpacks straight from the buffer and a writer that lays
out whole tables with one ``struct.pack`` are several times faster (bench/codec_bench.py
prints the ratios; see codec.py for the figures measured).

Reading: positions are absolute offsets into the payload. A position can only go negative
through a vtable's signed offset, and that is checked; every other read is bounded by
``struct.unpack_from`` (which raises ``struct.error``, turned into ``ProtocolError`` by the
codec) or by an explicit length check before slicing, so no length read from the wire causes
an allocation larger than the payload itself.

Writing: the payload is laid out front to back, every table preceded by its vtable and
followed by its children. FlatBuffers offsets to children are unsigned (they point forward)
and the vtable offset is signed, so this order is valid, and each child is position
independent: a ``Child`` is a list of byte parts, its size and where its table starts within
it, joined once at the very end, so a large body is copied exactly once. Every part is a
multiple of 4 bytes long, which keeps all 4-byte fields aligned.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Union

from .framing import MAX_PAYLOAD, FrameTooLarge, ProtocolError
from .messages import Entry

Child = tuple[list[bytes], int, int]
"""An encoded object: (parts, total size, offset of the table or vector within it)."""

u32 = struct.Struct("<I").unpack_from
i32 = struct.Struct("<i").unpack_from
u16 = struct.Struct("<H").unpack_from
u8 = struct.Struct("<B").unpack_from
_VT_SLOTS = [struct.Struct(f"<{k}H") for k in range(16)]

_pack_u32 = struct.Struct("<I").pack
_pack_be32 = struct.Struct(">I").pack
_pack_entry = struct.Struct("<iIII").pack  # soffset, name uoffset, value uoffset, name length
_pack_entry_name_only = struct.Struct("<iII").pack  # soffset, name uoffset, name length
_STR_PAD = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0")  # NUL terminator + alignment, by len % 4
_BYTES_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_ENTRY_VTABLES = struct.pack("<4H3H2x", 8, 12, 4, 8, 6, 8, 4)  # [name, value], then [name]
_VT_BOTH = 0
_VT_NAME_ONLY = 8
_OFFSET_VECTORS = [struct.Struct(f"<{n + 1}I") for n in range(64)]  # count, then n offsets


# --- reading -------------------------------------------------------------------------------


def fields(buf: bytes, table: int, count: int, where: str) -> tuple[int, ...]:
    """Absolute positions of fields ``0..count-1`` of the table at ``table``; 0 when absent."""
    vtable = table - i32(buf, table)[0]
    if vtable < 0:
        raise ProtocolError(f"{where}: vtable of the table at {table} is at {vtable}, before the payload")
    have = (u16(buf, vtable)[0] - 4) >> 1
    if have >= count:
        offsets = _VT_SLOTS[count].unpack_from(buf, vtable + 4)
    elif have > 0:
        offsets = _VT_SLOTS[have].unpack_from(buf, vtable + 4) + (0,) * (count - have)
    else:
        return (0,) * count
    return tuple([table + o if o else 0 for o in offsets])


def root(buf: bytes) -> int:
    """Position of the root table."""
    pos: int = u32(buf, 0)[0]
    return pos


def table_at(buf: bytes, pos: int) -> int:
    """Follow the table reference stored at ``pos``."""
    target: int = pos + u32(buf, pos)[0]
    return target


def byte_span(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """``(start, end)`` of the string or byte vector referenced at ``pos``, checked in bounds."""
    vec = pos + u32(buf, pos)[0]
    start = vec + 4
    end = start + u32(buf, vec)[0]
    if end > len(buf):
        raise ProtocolError(f"{where}: {end - start} bytes at {start} run past the {len(buf)}-byte payload")
    return start, end


def read_str(buf: bytes, pos: int, where: str, errors: str = "strict") -> str:
    """The string referenced at ``pos``; invalid UTF-8 is a ``ProtocolError`` unless ``errors`` says."""
    start, end = byte_span(buf, pos, where)
    try:
        return buf[start:end].decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{where}: invalid UTF-8 at {start + exc.start}") from None


def read_bytes(buf: bytes, pos: int, where: str) -> bytes:
    """The ``[ubyte]`` vector referenced at ``pos``."""
    start, end = byte_span(buf, pos, where)
    return buf[start:end]


def read_entries(buf: bytes, pos: int, where: str, errors: str) -> list[Entry]:
    """The ``[TextEntry]`` vector referenced at ``pos``; a missing ``value`` reads as ``None``.

    The gateway shares one vtable between all entries, so vtables are parsed once per vector.
    """
    size = len(buf)
    vec = pos + u32(buf, pos)[0]
    count = u32(buf, vec)[0]
    first = vec + 4
    stop = first + 4 * count
    if stop > size:
        raise ProtocolError(f"{where}: vector of {count} entries at {vec} runs past the {size}-byte payload")
    out: list[Entry] = []
    append = out.append
    vtables: dict[int, tuple[int, int]] = {}
    for item in range(first, stop, 4):
        table = item + u32(buf, item)[0]
        vtable = table - i32(buf, table)[0]
        slots = vtables.get(vtable)
        if slots is None:
            name_at, value_at = fields(buf, table, 2, where)
            slots = vtables[vtable] = (name_at and name_at - table, value_at and value_at - table)
        name_off, value_off = slots
        if not name_off:
            raise ProtocolError(f"{where}[{(item - first) >> 2}]: entry without a name")
        field = table + name_off
        start = field + u32(buf, field)[0] + 4
        end = start + u32(buf, start - 4)[0]
        if end > size:
            raise ProtocolError(f"{where}[{(item - first) >> 2}].name: runs past the {size}-byte payload")
        try:
            name = buf[start:end].decode("utf-8", errors)
            if value_off:
                field = table + value_off
                start = field + u32(buf, field)[0] + 4
                end = start + u32(buf, start - 4)[0]
                if end > size:
                    raise ProtocolError(f"{where}[{(item - first) >> 2}].value: runs past the {size}-byte payload")
                append((name, buf[start:end].decode("utf-8", errors)))
            else:
                append((name, None))
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{where}[{(item - first) >> 2}]: invalid UTF-8 at {start + exc.start}") from None
    return out


# --- writing -------------------------------------------------------------------------------


def str_child(text: str) -> Child:
    """A string. ``surrogateescape`` gives back the raw bytes a lenient decode kept."""
    data = text.encode("utf-8", "surrogateescape")
    n = len(data)
    return [_pack_u32(n), data, _STR_PAD[n & 3]], 4 + ((n + 4) & ~3), 0


def bytes_child(data: bytes) -> Child:
    """A ``[ubyte]`` vector."""
    n = len(data)
    return [_pack_u32(n), data, _BYTES_PAD[n & 3]], 4 + ((n + 3) & ~3), 0


def entries_child(entries: Sequence[Entry]) -> Child:
    """A ``[TextEntry]`` vector: offsets, two shared vtables, then each entry with its strings."""
    count = len(entries)
    vtables = 4 + 4 * count
    pos = vtables + len(_ENTRY_VTABLES)
    offsets = [count]
    parts = [b"", _ENTRY_VTABLES]
    extend = parts.extend
    for index, (name, value) in enumerate(entries, 1):
        offsets.append(pos - 4 * index)
        name_data = name.encode("utf-8", "surrogateescape")
        name_len = len(name_data)
        name_size = 4 + ((name_len + 4) & ~3)
        if value is None:
            extend((_pack_entry_name_only(pos - vtables - _VT_NAME_ONLY, 4, name_len),
                    name_data, _STR_PAD[name_len & 3]))
            pos += 8 + name_size
        else:
            value_data = value.encode("utf-8", "surrogateescape")
            value_len = len(value_data)
            extend((_pack_entry(pos - vtables - _VT_BOTH, 8, 4 + name_size, name_len),
                    name_data, _STR_PAD[name_len & 3],
                    _pack_u32(value_len), value_data, _STR_PAD[value_len & 3]))
            pos += 16 + name_size + ((value_len + 4) & ~3)
    head = _OFFSET_VECTORS[count] if count < len(_OFFSET_VECTORS) else struct.Struct(f"<{count + 1}I")
    parts[0] = head.pack(*offsets)
    return parts, pos, 0


_SCALAR_SIZE = {"B": 1, "H": 2, "I": 4, "ref": 4}


class TableWriter:
    """The fixed layout of one table type, computed once: vtable, then inline fields.

    ``kinds[i]`` is field ``i``'s type: ``"B"``, ``"H"``, ``"I"`` (unsigned scalars) or
    ``"ref"`` (a string, vector or table, given as a ``Child``). Inline fields are ordered by
    size so that each is aligned without padding between them.
    """

    __slots__ = ("_order", "_slot", "_head", "_head_prefix", "_table", "_children")

    def __init__(self, *kinds: str) -> None:
        count = len(kinds)
        vtable_size = 4 + 2 * count
        self._table = vtable_size + (-vtable_size & 3)
        self._order = sorted(range(count), key=lambda i: -_SCALAR_SIZE[kinds[i]])
        self._slot = [0] * count
        offset = 4
        fmt = ""
        for i in self._order:
            self._slot[i] = offset
            offset += _SCALAR_SIZE[kinds[i]]
            fmt += "I" if kinds[i] == "ref" else kinds[i]
        table_size = (offset + 3) & ~3
        self._children = self._table + table_size
        pad = "x" * (self._table - vtable_size) + "i" + fmt + "x" * (table_size - offset)
        self._head = struct.Struct(f"<{2 + count}H{pad}")
        self._head_prefix = (vtable_size, table_size)

    def build(self, values: Sequence[Union[int, Child, None]]) -> Child:
        """Encode one table; ``values[i]`` is ``None`` for an absent field."""
        vtable = [0] * len(values)
        inline: list[int] = []
        parts = [b""]
        pos = self._children
        table = self._table
        slot = self._slot
        for i in self._order:
            value = values[i]
            if value is None:
                inline.append(0)
                continue
            vtable[i] = slot[i]
            if isinstance(value, int):
                inline.append(value)
            else:
                child_parts, child_size, inner = value
                inline.append(pos + inner - table - slot[i])
                parts += child_parts
                pos += child_size
        parts[0] = self._head.pack(*self._head_prefix, *vtable, table, *inline)
        return parts, pos, table


def frame(msg_type: int, root_table: Child) -> bytes:
    """The whole frame (header, root offset, payload) for a message whose root is ``root_table``."""
    parts, size, inner = root_table
    size += 4
    if size > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload of {size} bytes for message type {msg_type} is over {MAX_PAYLOAD}")
    return b"".join([_pack_be32((msg_type << 24) | size), _pack_u32(4 + inner), *parts])
