"""Parquet out (pyarrow): :class:`ParquetWriter` buffers answers into row groups of
``ROW_GROUP_ROWS`` rows and streams each into the sink (the multipart staging
upload) as it fills, the footer at the end (:mod:`.parquet_footer`: the bytes
pyarrow's own writer makes); the first row group fixes the schema, later ones are
cast to it. The reader is :mod:`.parquet`.
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING, Any

from scorefleet.errors import BadInput
from workers.scoring.batches import Scores
from workers.scoring.formats import parquet_footer as footer
from workers.scoring.formats.base import Sink, Writer, answer_table, joined
from workers.scoring.formats.select import ColumnPlan
from workers.scoring.values import EXACT_IN_DOUBLE, json_text

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: Rows per row group written (also what is buffered before a write).
ROW_GROUP_ROWS = 64 * 1024


class ParquetWriter(Writer):
    """Buffers answers into row groups of ``ROW_GROUP_ROWS`` rows, written at the
    end of the mini-batch that fills them (each by its own pyarrow writer:
    :mod:`.parquet_footer`), and the
    footer at the end, from the row groups' metadata. So the output can be cut and
    committed after any row group, and taken up there by another process (issue 26):
    :meth:`side` is the metadata of the row groups written since it was last asked,
    :meth:`held` the rows buffered."""

    def __init__(self, sink: Sink, plan: ColumnPlan) -> None:
        super().__init__(sink, plan)
        self._schema: pa.Schema | None = None
        self._template: footer.Struct | None = None  # the first row group's footer
        self._template_kept = False
        self._groups: list[footer.Struct] = []  # every row group, for the footer
        self._new: list[footer.Struct] = []  # those written since side()
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        #: answer columns the first rows made text: later ones are the model's text too
        self._text: list[int] | None = None

    def write(self, kept: pa.Table | None, scores: Scores) -> None:
        import pyarrow as pa

        answer = self.answer_names(scores)
        if self.names is None:
            self.names = self.plan.output_names(answer)
        typed = answer_table(scores, answer, text=False)
        if self._text is None:
            self._text = [i for i, c in enumerate(typed.columns) if pa.types.is_string(c.type)]
        elif any(not pa.types.is_string(typed.column(i).type) for i in self._text):
            # numbers here in a column the first rows made text: the model's own text
            # (a CSV answer's; a JSON answer's JSON text), not pyarrow's ("-0.0" is not "-0")
            text = answer_table(scores, answer, text=True) if scores.csv is not None else None
            typed = pa.Table.from_arrays(
                [
                    c
                    if i not in self._text
                    else (text.column(i) if text is not None else json_text(c))
                    for i, c in enumerate(typed.columns)
                ],
                names=typed.column_names,
            )
        self._buffer.append(joined(kept, typed, self.names))
        self._buffered += scores.rows
        self.rows += scores.rows

    def end_batch(self) -> None:
        # at a mini-batch's end, never inside one: the output can then be cut and
        # committed right after (settled), and taken up at the next mini-batch
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush()

    @property
    def settled(self) -> bool:
        return not self._buffer

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._buffer:
            return
        first = self.rows - self._buffered + 1  # of the buffered rows
        if self._schema is not None:
            schema = self._schema
        else:  # the first rows decide each column's type (all null so far: a later one)
            schema = (
                pa.unify_schemas([t.schema for t in self._buffer], promote_options="permissive")
                if self._same_kinds()
                else self._buffer[0].schema
            )
        parts = []
        for part in self._buffer:
            parts.append(part if part.schema == schema else self._cast(part, schema, first))
            first += part.num_rows
        # one chunk: the pages of a column chunk do not depend on how the rows came
        table = pa.concat_tables(parts).combine_chunks()
        self._buffer, self._buffered = [], 0
        if self._schema is None:
            self._schema = table.schema
        for offset in range(0, table.num_rows, ROW_GROUP_ROWS):
            self._write_group(table.slice(offset, ROW_GROUP_ROWS))

    def _write_group(self, table: pa.Table) -> None:
        one = footer.split(footer.one_group_file(table, self._schema))
        if self.bytes_out == 0:
            self._emit(footer.MAGIC)
        if self._template is None:
            self._template = one.meta
        group = footer.moved(one.row_group, self.bytes_out - len(footer.MAGIC), len(self._groups))
        self._emit(one.body)
        self._groups.append(group)
        self._new.append(group)

    def _same_kinds(self) -> bool:
        """The buffered tables' schemas unify (nulls and integer widths aside)."""
        import pyarrow as pa

        try:
            pa.unify_schemas([t.schema for t in self._buffer], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return False
        return True

    @staticmethod
    def _cast(table: pa.Table, schema: pa.Schema, first: int) -> pa.Table:
        """``table`` (data rows ``first`` on) in the types of ``schema``, which the
        first rows fixed; BadInput naming the first column that cannot be cast."""
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = []
        for field, column in zip(schema, table.columns, strict=True):
            try:
                if pa.types.is_integer(column.type) and pa.types.is_floating(field.type):
                    biggest = pc.max(pc.abs(column)).as_py()
                    if biggest is not None and biggest > EXACT_IN_DOUBLE:
                        raise pa.ArrowInvalid(
                            f"the integer {biggest} beside fractions, which a double would round"
                        )
                columns.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                last = first + table.num_rows - 1
                raise BadInput(
                    f"the output column {field.name!r} changed type in data rows "
                    f"{first:,d}-{last:,d} ({column.type} where the first rows had "
                    f"{field.type}: {exc}); Parquet output needs one type per column (the "
                    "first rows decide it): write JSON Lines or CSV (output_format=jsonl|csv)"
                ) from exc
        return pa.Table.from_arrays(columns, schema=schema)

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush()
        if self._template is None:  # no rows: the kept columns' schema, no row
            schema = empty_schema if empty_schema is not None else pa.schema([])
            out = io.BytesIO()
            writer = pq.ParquetWriter(out, schema)
            writer.write_table(schema.empty_table())
            writer.close()
            self._emit(out.getvalue())
            return
        self._emit(footer.footer(self._template, self._groups))

    # ------------------------------------------- taken up again (issue 26)
    def state(self) -> dict[str, Any]:
        schema = self._schema
        encoded = base64.b64encode(schema.serialize().to_pybytes()).decode() if schema else None
        return {**super().state(), "schema": encoded}

    def side(self) -> bytes:
        template = b""
        if self._template is not None and not self._template_kept:
            template, self._template_kept = footer.template_bytes(self._template), True
        new, self._new = self._new, []
        if not (template or new):
            return b""
        head = json.dumps({"template": len(template)}).encode()
        return head + b"\n" + template + footer.pack(new)

    def held(self) -> bytes:
        import pyarrow as pa

        if not self._buffer:
            return b""
        table = pa.concat_tables(self._buffer, promote_options="permissive")
        out = pa.BufferOutputStream()
        with pa.ipc.new_stream(out, table.schema) as ipc:
            ipc.write_table(table)
        return bytes(out.getvalue().to_pybytes())

    def restore(self, state: dict[str, Any], sides: list[bytes], held: bytes) -> None:
        import pyarrow as pa

        super().restore(state, sides, held)
        if state.get("schema"):
            self._schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(state["schema"])))
        for side in sides:
            if not side:
                continue
            head, _, rest = side.partition(b"\n")
            n = int(json.loads(head)["template"])
            if n:
                self._template = footer.template_from(rest[:n])
                self._template_kept = True
            self._groups += footer.unpack(rest[n:])
        if held:
            table = pa.ipc.open_stream(pa.py_buffer(held)).read_all()
            self._buffer, self._buffered = [table], table.num_rows
