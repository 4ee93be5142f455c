"""A Parquet file written one row group at a time, whose footer is built from the
row groups' own metadata, so that a file can be written by several processes in
turn (issue 26: a scoring step taken up again from its last committed part).

pyarrow writes a whole file with one writer and refuses to start one at an offset
(``Appending to file not implemented``), and its metadata objects cannot be edited.
So each row group is written by a writer of its own into memory (a one-row-group
file: ``PAR1``, the row group, its footer); its bytes go to the output and its
footer's row group, with its offsets moved to where its bytes really are, is kept.
The file's footer is the first one-row-group footer with every row group kept
(:func:`footer`). The result is the file one pyarrow writer makes of the same row
groups, byte for byte (tests/unit/test_parquet_footer.py).

The footer is Thrift (compact protocol). :func:`decode` and :func:`encode` read and
write it generically, without the Parquet IDL: every field is kept as it was (a
field this module does not know, a newer pyarrow's, survives a round trip); only
the offsets and the row group's ordinal are changed (:func:`moved`). The IDL
compiled by a Thrift library (thriftpy2) would do the same with 1,300 lines of
parquet.thrift vendored, and lose any field that IDL does not know.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"PAR1"

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

#: A struct: its fields in order, each (field id, compact type, value).
Struct = list[tuple[int, int, Any]]


@dataclass
class _Seq:
    """A list or set: its element type and elements."""

    etype: int
    items: list[Any]


@dataclass
class _Map:
    ktype: int
    vtype: int
    items: list[tuple[Any, Any]]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, ctype: int) -> Any:
        if ctype in (_TRUE, _FALSE):  # a bool inside a list: one byte of its own
            return self.byte()
        if ctype == _BYTE:
            return self.byte()
        if ctype in (_I16, _I32, _I64):
            return self.zigzag()
        if ctype == _DOUBLE:
            raw = self.data[self.pos : self.pos + 8]
            self.pos += 8
            return raw
        if ctype == _BINARY:
            n = self.varint()
            raw = self.data[self.pos : self.pos + n]
            self.pos += n
            return raw
        if ctype in (_LIST, _SET):
            head = self.byte()
            size, etype = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return _Seq(etype, [self.value(etype) for _ in range(size)])
        if ctype == _MAP:
            size = self.varint()
            if not size:
                return _Map(0, 0, [])
            kv = self.byte()
            kt, vt = kv >> 4, kv & 0x0F
            return _Map(kt, vt, [(self.value(kt), self.value(vt)) for _ in range(size)])
        if ctype == _STRUCT:
            return self.struct()
        raise ValueError(f"not a Thrift compact type: {ctype}")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            delta, ctype = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            value = ctype == _TRUE if ctype in (_TRUE, _FALSE) else self.value(ctype)
            fields.append((fid, ctype, value))
            last = fid


def decode(data: bytes) -> Struct:
    """A Thrift struct in the compact protocol, as a :data:`Struct`."""
    return _Reader(data).struct()


def _varint(out: bytearray, n: int) -> None:
    while True:
        if n < 0x80:
            out.append(n)
            return
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) ^ (n >> 63))


def _value(out: bytearray, ctype: int, value: Any) -> None:
    if ctype in (_TRUE, _FALSE, _BYTE):
        out.append(value)
    elif ctype in (_I16, _I32, _I64):
        _zigzag(out, value)
    elif ctype == _DOUBLE:
        out += value
    elif ctype == _BINARY:
        _varint(out, len(value))
        out += value
    elif ctype in (_LIST, _SET):
        size = len(value.items)
        if size < 15:
            out.append(size << 4 | value.etype)
        else:
            out.append(0xF0 | value.etype)
            _varint(out, size)
        for item in value.items:
            _value(out, value.etype, item)
    elif ctype == _MAP:
        _varint(out, len(value.items))
        if value.items:
            out.append(value.ktype << 4 | value.vtype)
            for k, v in value.items:
                _value(out, value.ktype, k)
                _value(out, value.vtype, v)
    elif ctype == _STRUCT:
        _struct(out, value)
    else:
        raise ValueError(f"not a Thrift compact type: {ctype}")


def _struct(out: bytearray, fields: Struct) -> None:
    last = 0
    for fid, given, value in fields:
        ctype = (_TRUE if value else _FALSE) if given in (_TRUE, _FALSE) else given
        if 0 < fid - last <= 15:
            out.append((fid - last) << 4 | ctype)
        else:
            out.append(ctype)
            _zigzag(out, fid)
        if ctype not in (_TRUE, _FALSE):
            _value(out, ctype, value)
        last = fid
    out.append(0)


def encode(fields: Struct) -> bytes:
    """A :data:`Struct` in the compact protocol (what :func:`decode` read, the same)."""
    out = bytearray()
    _struct(out, fields)
    return bytes(out)


def _get(fields: Struct, fid: int) -> Any:
    return next((v for f, _, v in fields if f == fid), None)


def _set(fields: Struct, fid: int, ctype: int, value: Any) -> Struct:
    """``fields`` with field ``fid`` set (replaced in place, or added in id order)."""
    out = [(f, t, value) if f == fid else (f, t, v) for f, t, v in fields]
    if all(f != fid for f, _, _ in fields):
        out.append((fid, ctype, value))
        out.sort(key=lambda x: x[0])
    return out


# FileMetaData: num_rows, row_groups; RowGroup: columns, file_offset, ordinal;
# ColumnChunk: file_offset, meta_data, offset_index_offset, column_index_offset;
# ColumnMetaData: data_page_offset, index_page_offset, dictionary_page_offset,
# bloom_filter_offset (parquet.thrift's field ids)
_FILE_ROWS, _FILE_GROUPS = 3, 4
_RG_COLUMNS, _RG_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_CM_OFFSETS = (9, 10, 11, 14)


def _shift(fields: Struct, ids: tuple[int, ...], by: int) -> Struct:
    # 0 or absent: not written (a deprecated ColumnChunk.file_offset is 0)
    return [(f, t, v + by if f in ids and v else v) for f, t, v in fields]


def moved(row_group: Struct, by: int, ordinal: int) -> Struct:
    """A row group's metadata with every offset moved ``by`` bytes, and its ordinal."""
    columns = _get(row_group, _RG_COLUMNS)
    chunks = []
    for given in columns.items:
        chunk = _shift(given, (_CC_OFFSET, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX), by)
        meta = _get(chunk, _CC_META)
        if meta is not None:
            chunk = _set(chunk, _CC_META, _STRUCT, _shift(meta, _CM_OFFSETS, by))
        chunks.append(chunk)
    out = _set(_shift(row_group, (_RG_OFFSET,), by), _RG_COLUMNS, _LIST, _Seq(_STRUCT, chunks))
    if _get(out, _RG_ORDINAL) is not None:
        out = _set(out, _RG_ORDINAL, _I16, ordinal)
    return out


@dataclass
class OneGroup:
    """A one-row-group Parquet file split into what it holds."""

    body: bytes  # the row group's bytes (after the leading magic)
    meta: Struct  # its FileMetaData
    row_group: Struct  # its one row group (offsets as in the one-row-group file)


def split(data: bytes) -> OneGroup:
    """A one-row-group file written by pyarrow, as its parts."""
    if not (data.startswith(MAGIC) and data.endswith(MAGIC)):
        raise ValueError("not a Parquet file")
    (length,) = struct.unpack("<I", data[-8:-4])
    meta = decode(data[-8 - length : -8])
    (group,) = _get(meta, _FILE_GROUPS).items
    return OneGroup(data[len(MAGIC) : -8 - length], meta, group)


def footer(template: Struct, row_groups: list[Struct]) -> bytes:
    """The file's footer (its FileMetaData, length and magic): ``template``'s
    (a one-row-group file's) with ``row_groups``, and their rows."""
    rows = sum(int(_get(g, 3)) for g in row_groups)
    meta = _set(template, _FILE_ROWS, _I64, rows)
    meta = _set(meta, _FILE_GROUPS, _LIST, _Seq(_STRUCT, row_groups))
    encoded = encode(meta)
    return encoded + struct.pack("<I", len(encoded)) + MAGIC


def pack(groups: list[Struct]) -> bytes:
    """Row groups' metadata as bytes (a Thrift list; what a committed part keeps)."""
    out = bytearray()
    _value(out, _LIST, _Seq(_STRUCT, groups))
    return bytes(out)


def unpack(data: bytes) -> list[Struct]:
    """What :func:`pack` made."""
    if not data:
        return []
    seq = _Reader(data).value(_LIST)
    return list(seq.items)


def template_bytes(meta: Struct) -> bytes:
    return encode(meta)


def template_from(data: bytes) -> Struct:
    return decode(data)


def one_group_file(table: Any, schema: Any) -> bytes:
    """``table`` as a one-row-group Parquet file (pyarrow, the writer's defaults)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    writer = pq.ParquetWriter(buf, schema)
    writer.write_table(table, row_group_size=max(1, table.num_rows))
    writer.close()
    return buf.getvalue()
