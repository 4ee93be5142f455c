"""JSON Lines in and out: one JSON object per line.

Reading: the (decompressed) stream is cut into line-aligned mini-batches of at
most ``max_bytes`` and each is parsed by pyarrow's JSON reader. The first
mini-batch fixes the file's columns (its keys, in the order they first appear) and
their types; later lines are read against that schema, so a key that changes type
between lines, or appears only after the first mini-batch, is an error naming the
line. A key missing from a line is null. When pyarrow refuses a mini-batch, its
lines are read again one by one to name the first bad line and say what is wrong
with it (not JSON, not an object, a type that changed).

Writing: one object per output row, keys in the output's column order, values
typed (numbers as numbers, null for a missing value or NaN).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from scorefleet.errors import BadInput
from workers.scoring.batches import Batch, Scores, span_of
from workers.scoring.formats.base import Piece, Reader, Writer, answer_table, joined, refuse_nested
from workers.scoring.formats.csvsplit import BOM, take
from workers.scoring.formats.kind import Format, ReadLimits
from workers.scoring.formats.magic import binary_problem
from workers.scoring.formats.select import Columns, plan
from workers.scoring.values import EXACT_IN_DOUBLE, binary_as_text, negative_zero

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _object(raw: bytes, n: int) -> tuple[Any, str | None]:
    """Line ``n`` read by the ``json`` module, and what is wrong with it (None: it is a
    JSON object pyarrow reads as the json module does)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        for k in keys:
            if keys.count(k) > 1:
                raise _Refused(f"line {n} has the key {k!r} twice; a key may appear once")
        return dict(items)

    def constant(name: str) -> Any:
        raise _Refused(
            f"line {n} holds {name}, which is not a JSON number: write null, or the "
            "value as a string"
        )

    try:
        value = json.loads(raw, object_pairs_hook=pairs, parse_constant=constant)
    except _Refused as exc:
        return None, str(exc)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        return None, f"line {n} is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return value, (
            f"line {n} is {_kind(value)}, not a JSON object: every line of a JSON Lines "
            'file must be one object, such as {"id": 1, "x": 2.5}'
        )
    return value, None


class _Refused(ValueError):
    pass


def diagnose(data: bytes, first_line: int, seen: dict[str, tuple[str, int]]) -> str | None:
    """What is wrong with the first bad line of ``data`` (lines numbered from
    ``first_line``); ``seen``: each key's kind and the line it was first seen on."""
    for n, raw in enumerate(data.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        value, problem = _object(raw, n)
        if problem:
            return problem
        for key, v in value.items():
            kind = _kind(v)
            if kind == "null":
                continue
            if key in seen and seen[key][0] != kind:
                was, line = seen[key]
                return (
                    f"line {n}: the key {key!r} is {kind} here but {was} on line {line}; "
                    "a key must keep its type on every line"
                )
            seen.setdefault(key, (kind, n))
    return _arrow_refuses(data, first_line)


def _arrow_refuses(data: bytes, first_line: int) -> str | None:
    """The first line pyarrow cannot read on its own (a number too big for a double,
    a string that is no text), named with pyarrow's words."""
    import pyarrow as pa
    import pyarrow.json as pajson

    for n, raw in enumerate(data.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        try:
            pajson.read_json(io.BytesIO(raw))
        except pa.ArrowInvalid as exc:
            why = str(exc).removeprefix("JSON parse error: ").removesuffix(" in row 0")
            return f"line {n} cannot be read: {why}"
    return None


def _read(block: bytes, schema: pa.Schema | None) -> pa.Table:
    import pyarrow.json as pajson

    return pajson.read_json(
        io.BytesIO(block),
        read_options=pajson.ReadOptions(block_size=max(1 << 20, len(block) + 1)),
        parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer"
        ),
    )


def _same_kinds(read: pa.Schema, before: pa.Schema) -> None:
    """An integer column read again (as it comes) is still numbers: ArrowInvalid (for
    :func:`diagnose` to name the line) when a later line made it text or booleans."""
    import pyarrow as pa

    for f in before:
        if pa.types.is_integer(f.type) and f.name in read.names:
            t = read.field(f.name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
                raise pa.ArrowInvalid(f"the key {f.name!r} changed type")


def _not_finite(table: pa.Table) -> bool:
    """Whether a number column read a NaN or an infinity (JSON has neither)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return any(
        pa.types.is_floating(c.type) and not pc.all(pc.is_finite(c)).as_py() for c in table.columns
    )


def _constants(block: bytes, first_line: int) -> str | None:
    """The first line holding NaN or Infinity outside a string (the json module and
    pyarrow take them; JSON has no such numbers, and an output could not keep them)."""
    for n, raw in enumerate(block.split(b"\n"), start=first_line):
        if b"NaN" in raw or b"Infinity" in raw:
            _, problem = _object(raw, n)
            if problem:
                return problem
    return None


def _text_types(t: pa.DataType) -> pa.DataType:
    """``t`` with every date or time in it a string (pyarrow's reader takes strings
    that look like dates for timestamps; JSON has no dates: they stay strings)."""
    import pyarrow as pa

    if pa.types.is_temporal(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_text_types(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_text_types(t.value_type)))
    return t


def _rounded(table: pa.Table, block: bytes, first_line: int) -> str | None:
    """An integer of the text that pyarrow read as a double, from 2**53 on (beside a
    fraction, beyond 64 bits, or -2**63, which pyarrow's reader takes for one): a
    double cannot be trusted to be it, and its text would be a float's; None when
    every such number is the ``json`` module's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lines: list[tuple[int, bytes]] | None = None
    for name in table.column_names:
        column = table.column(name)
        if not pa.types.is_floating(column.type):
            continue
        biggest = pc.max(pc.abs(column)).as_py()
        if biggest is None or not biggest >= EXACT_IN_DOUBLE:
            continue  # the usual case: nothing from 2**53 on, no row to look at
        big = pc.and_(
            pc.greater_equal(pc.abs(column), float(EXACT_IN_DOUBLE)),
            pc.equal(pc.floor(column), column),
        )
        for i in pc.indices_nonzero(pc.fill_null(big, False)).to_pylist():
            if lines is None:
                lines = [
                    (n, raw)
                    for n, raw in enumerate(block.split(b"\n"), start=first_line)
                    if raw.strip()
                ]
            n, raw = lines[i]
            read = json.loads(raw).get(name)
            if isinstance(read, int) and not isinstance(read, bool):
                return (
                    f"line {n}: the key {name!r} holds the integer {read}, which a number "
                    "column that also holds fractions, or beyond 64-bit integers, can only "
                    f"hold as a double ({column[i].as_py()!r}): write such ids as strings "
                    f'("{name}": "{read}")'
                )
    return None


class JsonlReader(Reader):
    """``start``: a resume point (a piece's ``at``): ``chunks`` are then the file's
    bytes from ``start["offset"]`` on, read with the columns, types and line
    numbers the file had reached there."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        max_bytes: int,
        *,
        columns: Columns,
        start: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self.max_bytes = max_bytes
        self.columns = columns
        self._buf = bytearray()
        self._eof = False
        self.lines = 0
        self.schema: pa.Schema | None = None
        self._seen: dict[str, tuple[str, int]] = {}
        self.start = start
        self._base = 0  # the file's offset of the first byte of ``chunks``
        self._encoded: tuple[Any, str] | None = None  # (schema, its serialized form)
        if start is not None:
            import pyarrow as pa

            self._base = int(start["offset"])
            self.bytes_in = self._base
            self.rows, self.lines = int(start["rows"]), int(start["lines"])
            self.schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(start["schema"])))
            self.plan = plan(self.columns, self.schema.names)
            self._seen = {k: (str(v[0]), int(v[1])) for k, v in start["seen"].items()}

    def _position(self) -> dict[str, Any]:
        """Where the file goes on after the block just taken."""
        assert self.schema is not None
        if self._encoded is None or self._encoded[0] is not self.schema:
            data = base64.b64encode(self.schema.serialize().to_pybytes()).decode()
            self._encoded = (self.schema, data)
        return {
            "offset": self.bytes_in - len(self._buf),
            "head": 0,
            "rows": self.rows,
            "lines": self.lines,
            "schema": self._encoded[1],
            "seen": {k: list(v) for k, v in self._seen.items()},
        }

    def _fill(self, want: int) -> None:
        while len(self._buf) < want and not self._eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
                return
            self._buf += chunk
            self.bytes_in += len(chunk)

    def _next_block(self) -> bytes | None:
        self._fill(self.max_bytes + 1)
        if not self._buf:
            return None
        cut = self._buf.rfind(b"\n", 0, self.max_bytes) + 1
        if cut == 0:
            if self._eof and len(self._buf) <= self.max_bytes:
                cut = len(self._buf)
            else:
                mb = self.max_bytes / (1024 * 1024)
                raise BadInput(
                    f"line {self.lines + 1} is longer than the largest mini-batch "
                    f"({mb:g} MB, SCOREFLEET_MAX_PAYLOAD_MB)"
                )
        return take(self._buf, cut)

    def __iter__(self) -> Iterator[Piece]:
        self._fill(64 * 1024)
        if self.start is None:  # (a file taken up again was looked at from its start)
            problem = binary_problem(bytes(self._buf[:4096]), "JSON Lines")
            if problem:
                raise BadInput(problem)
            if self._buf.startswith(BOM):
                del self._buf[: len(BOM)]
        while (block := self._next_block()) is not None:
            first_line = self.lines + 1
            self.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if not block.strip():
                continue
            table = self._parse(block, first_line)
            if table.num_rows == 0:
                continue
            first_row = self.rows + 1
            self.rows += table.num_rows
            lines = self.lines - first_line + 1
            span = span_of(
                first_row, table.num_rows, first_line if lines == table.num_rows else None
            )
            assert self.plan is not None
            yield Piece(
                Batch(
                    first_row=first_row,
                    rows=table.num_rows,
                    span=span,
                    columns=self.plan.model,
                    table=table.select(list(self.plan.model)),
                ),
                table.select(list(self.plan.keep)) if self.plan.keep else None,
                at=self._position(),
            )
        if self.rows == 0:
            raise BadInput("the file is empty" if self.lines == 0 else "the file has no data rows")

    def _parse(self, block: bytes, first_line: int) -> pa.Table:
        import pyarrow as pa

        known = None
        if self.schema is not None:
            # the types so far, less the integers: read as they come, so that a 64-bit
            # id stays exact and a later 2.5 is a number (_as_before)
            known = pa.schema(
                [
                    f
                    for f in self.schema
                    if not pa.types.is_null(f.type) and not pa.types.is_integer(f.type)
                ]
            )
        try:
            table = _read(block, known)
            texts = pa.schema([f.with_type(_text_types(f.type)) for f in table.schema])
            if texts != table.schema:
                table = _read(block, texts)
            if self.schema is not None:
                _same_kinds(table.schema, self.schema)
                table = _as_before(table, self.schema)
            lost = _rounded(table, block, first_line)
            if lost is None and _not_finite(table):  # NaN, Infinity: find the line
                lost = _constants(block, first_line)
        except pa.ArrowInvalid as exc:
            why = diagnose(block, first_line, self._seen)
            raise BadInput(why or f"lines {first_line}-{self.lines} cannot be read: {exc}") from exc
        if lost:
            raise BadInput(lost)
        if self.schema is None:
            self.schema = table.schema
            self.plan = plan(self.columns, table.column_names)
            refuse_nested(table.schema, self.plan.model)
            diagnose(block[: 64 * 1024], first_line, self._seen)  # kinds, for messages
            return table
        new = [n for n in table.column_names if n not in self.schema.names]
        if new:
            line = _first_line_with(block, new[0], first_line)
            raise BadInput(
                f"line {line} has the key {new[0]!r}, which the lines before it do not have: "
                "the first lines of a JSON Lines file fix its columns (a key missing from "
                "a line is null, a new one cannot be added)"
            )
        # null-typed columns (all null so far) take this batch's type from now on
        fields = [
            table.schema.field(f.name) if pa.types.is_null(f.type) else f for f in self.schema
        ]
        self.schema = pa.schema(fields)
        return table.select(self.schema.names)

    def kept_schema(self) -> pa.Schema | None:
        return None


def _as_before(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the integer columns of ``schema`` integers again where they hold
    whole numbers only; where a number has a fraction (2.5 after 1, 2, 3), that
    mini-batch keeps the column as floating point (a Parquet output, whose first
    row group fixed an integer type, then says so)."""
    import pyarrow as pa

    columns = []
    for name in table.column_names:
        column = table.column(name)
        if (
            name in schema.names
            and pa.types.is_integer(schema.field(name).type)
            and not negative_zero(column)  # -0.0 is no integer: cast, it would lose its sign
        ):
            with contextlib.suppress(pa.ArrowInvalid):  # 2.5 does not cast: kept as is
                column = column.cast(schema.field(name).type)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _first_line_with(block: bytes, key: str, first_line: int) -> int:
    for n, raw in enumerate(block.split(b"\n"), start=first_line):
        if raw.strip() and key in json.loads(raw):
            return n
    return first_line


def _finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """NaN and infinities as null (JSON has no such numbers)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_floating(column.type):
        return column
    return pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))


class JsonlWriter(Writer):
    def write(self, kept: pa.Table | None, scores: Scores) -> None:
        answer = self.answer_names(scores)
        if self.names is None:
            self.names = self.plan.output_names(answer)
        table = joined(kept, answer_table(scores, answer, text=False), self.names)
        try:
            table = binary_as_text(table, self.rows + 1)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        names = self.names
        columns = [_finite(c).to_pylist() for c in table.columns]
        dumps = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False).encode
        lines = [dumps(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]
        self._emit(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
        self.rows += scores.rows


def read(
    chunks: Iterable[bytes],
    columns: Columns,
    lim: ReadLimits,
    start: Mapping[str, Any] | None = None,
) -> JsonlReader:
    return JsonlReader(chunks, lim.max_bytes, columns=columns, start=start)


def check_head(head: bytes, complete: bool, columns: Columns, lim: ReadLimits) -> None:
    """The launch preflight of a JSON Lines file: its lines hold no newline, so its
    first complete lines are read as the scoring step reads them."""
    if not complete:
        head = head[: head.rfind(b"\n") + 1]
    if head.strip():
        for _piece in read([head], columns, lim):
            if not complete:
                break
    elif complete:
        raise BadInput("the file is empty")


def rows_end(data: bytes) -> int:
    """Where the last whole line of ``data`` ends (a JSON line holds no newline)."""
    return data.rfind(b"\n") + 1


FORMAT = Format(
    name="jsonl",
    label="JSON Lines",
    media_type="application/x-ndjson",
    suffixes=(".jsonl", ".ndjson"),
    aliases=(
        "ndjson",
        "jsonlines",
        "json-lines",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-lines",
        "application/ndjson",
    ),
    stream=read,
    writer=JsonlWriter,
    check_head=check_head,
    rows_end=rows_end,
    resumes=True,
)
