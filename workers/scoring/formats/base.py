"""The two halves of an input format: a reader of model input, a writer of output.

A :class:`Reader` yields :class:`Piece` objects: a :class:`~workers.scoring.batches.Batch`
of model input rows (only the columns the model sees) and, when columns are kept
beside the answer, the same rows' kept columns. A :class:`Writer` takes each
piece's kept columns with the model's :class:`~workers.scoring.batches.Scores` and streams
the output's bytes into a sink (the multipart staging upload), in order.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scorefleet.errors import BadInput
from workers.scoring.batches import Batch, Scores, table_csv
from workers.scoring.formats.csvsplit import BOM, keep_bom
from workers.scoring.formats.select import ColumnPlan
from workers.scoring.values import typed_text

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Piece:
    """One mini-batch as read: what the model is sent, and what is kept beside it."""

    batch: Batch
    kept: pa.Table | None = None  # the kept input columns of the same rows
    #: where the input goes on after this piece (its format's resume point, JSON);
    #: None from a format that cannot be taken up again mid-file
    at: dict[str, Any] | None = None


class Reader(ABC):
    """Iterate over :class:`Piece` objects, in file order, memory bounded."""

    def __init__(self) -> None:
        #: known once the file's columns are (after the first piece, or at open)
        self.plan: ColumnPlan | None = None
        self.rows = 0
        #: bytes of the (decompressed) input consumed so far
        self.bytes_in = 0

    @abstractmethod
    def __iter__(self) -> Iterator[Piece]: ...

    def kept_schema(self) -> pa.Schema | None:
        """The kept columns' schema, for the output of a file with no rows."""
        return None

    @property
    def known_rows(self) -> int | None:
        """The file's rows, if the reader knows them before reading (a footer says)."""
        return None

    def footer_schema(self) -> tuple[pa.Schema, dict[str, int]] | None:
        """The model columns' types and how many empty values each holds, if the reader
        knows them before reading rows (a footer says; the counts when its statistics
        have them)."""
        return None


class Writer(ABC):
    """Streams the output of one file into ``sink``; :meth:`close` ends it."""

    def __init__(self, sink: Sink, plan: ColumnPlan) -> None:
        self.sink = sink
        self.plan = plan
        self.rows = 0
        self.bytes_out = 0
        self.names: tuple[str, ...] | None = None  # the output's columns, once known

    def _emit(self, data: bytes) -> None:
        if data:
            self.sink.write(data)
            self.bytes_out += len(data)

    def answer_names(self, scores: Scores) -> tuple[str, ...]:
        """The answer's column names: the model's, else ``score_0``, ``score_1``..."""
        if scores.header:
            return tuple(scores.header)
        if scores.csv_header:
            text = scores.csv_header.decode("utf-8", errors="replace").rstrip("\r\n")
            return tuple(next(csv.reader([text]), []))
        if scores.table is not None:
            return tuple(scores.table.column_names)
        width = answer_width(scores)
        return tuple(f"score_{i}" for i in range(width))

    @abstractmethod
    def write(self, kept: pa.Table | None, scores: Scores) -> None: ...

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        """End the output (``empty_schema``: the kept columns of a file with no rows)."""
        del empty_schema

    def end_batch(self) -> None:  # noqa: B027 - most writers hold nothing back
        """A mini-batch's answers are all written (the place to write what was held
        for it: a Parquet row group)."""

    # ------------------------------------------- taken up again (issue 26)
    @property
    def settled(self) -> bool:
        """Is everything written so far in the sink (nothing held back)? Only then
        may the output be cut and committed here."""
        return True

    def state(self) -> dict[str, Any]:
        """What a writer that takes this output up from here needs (JSON)."""
        return {
            "rows": self.rows,
            "bytes": self.bytes_out,
            "names": list(self.names) if self.names else None,
        }

    def side(self) -> bytes:
        """What the bytes written since the last call need kept beside them (a
        Parquet file's row groups' metadata, for its footer); b"" for nothing."""
        return b""

    def held(self) -> bytes:
        """What the writer holds and has not written (Parquet: buffered rows), for a
        hand-over between steps; b"" for nothing."""
        return b""

    def restore(self, state: dict[str, Any], sides: list[bytes], held: bytes) -> None:
        """Take the output up where a writer of the same output left it: its
        :meth:`state`, the :meth:`side` of every committed part, and what it
        :meth:`held`."""
        del sides, held
        self.rows, self.bytes_out = int(state["rows"]), int(state["bytes"])
        self.names = tuple(state["names"]) if state.get("names") else None


def answer_width(scores: Scores) -> int:
    """How many columns a CSV answer has (by its first row)."""
    if scores.table is not None:
        return int(scores.table.num_columns)
    data = scores.csv or b""
    if not data:
        return 0
    first = data.split(b"\n", 1)[0] if b'"' not in data else data
    reader = csv.reader(io.StringIO(first.decode("utf-8", errors="replace"), newline=""))
    return len(next(reader, []))


def answer_table(scores: Scores, names: Sequence[str], *, text: bool) -> pa.Table:
    """The answer as Arrow columns named ``names``; ``text``: every column as text (a
    CSV answer exactly as the model wrote it), else typed: a CSV answer's columns by
    :func:`workers.scoring.values.typed_text` (JSON numbers as numbers, the rest as
    the text it is), a JSON answer's as the model's values."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if scores.table is not None:
        table = scores.table.rename_columns(list(names))
        if text:
            table = pa.table(
                {n: c.cast(pa.string()) for n, c in zip(names, table.columns, strict=True)}
            )
        return table
    data = scores.csv or b""
    try:
        table = pacsv.read_csv(
            io.BytesIO(keep_bom(data)),
            read_options=pacsv.ReadOptions(
                column_names=list(names),
                skip_rows=int(data.startswith(BOM)),
                use_threads=False,
                block_size=max(1 << 16, len(data) + 2),
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        from scorefleet.errors import ModelError

        raise ModelError(f"the model's answer is not CSV scorefleet can read: {exc}") from exc
    if table.num_rows != scores.rows:
        raise BadInput(
            f"the model's answer holds {table.num_rows} rows where {scores.rows} were expected"
        )
    if not text:
        table = pa.Table.from_arrays(
            [typed_text(c) for c in table.columns], names=table.column_names
        )
    return table


def joined(kept: pa.Table | None, answer: pa.Table, names: Sequence[str]) -> pa.Table:
    """The kept columns and the answer side by side, named ``names``."""
    import pyarrow as pa

    columns = list(kept.columns if kept is not None else []) + list(answer.columns)
    return pa.Table.from_arrays(columns, names=list(names))


def refuse_nested(schema: pa.Schema, model: Sequence[str]) -> None:
    """A nested column (struct, list, map) among those sent to the model: BadInput
    that says how to leave it out (it can still be kept beside the answer)."""
    import pyarrow as pa

    for name in model:
        t = schema.field(name).type
        if pa.types.is_nested(t):
            raise BadInput(
                f"the column {name!r} is nested ({t}), which the model cannot take: leave "
                f"it out with drop_columns={name} (or name the model's columns with "
                "model_columns); it can still be kept with keep_columns"
            )


def csv_bytes(table: pa.Table, *, header: bool = False) -> bytes:
    """``table`` as CSV: values unquoted unless they must be (pyarrow quotes every
    string when asked for 'needed' quoting, which would change what models see)."""
    import pyarrow as pa

    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if nested:
        raise BadInput(
            f"column {nested[0]!r} holds nested values ({table.schema.field(nested[0]).type}), "
            "which CSV cannot hold: keep it out (keep_columns/model_columns) or write "
            "JSON Lines or Parquet (output_format=jsonl|parquet)"
        )
    return table_csv(table, header=header)
