"""What a file shows of its columns before it is scored (:class:`FileSample`): built
from the mini-batches the model would be sent (the launch preflight's first bytes,
or the score step's first mini-batch), or from a Parquet file's footer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.scoring.batches import Batch

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


@dataclass(frozen=True)
class FileSample:
    """What a file shows of its columns before it is scored."""

    #: the file's columns, in order ("" names: a CSV without a header row)
    columns: tuple[str, ...]
    #: the columns the model is sent, in that order
    model: tuple[str, ...]
    named: bool = True
    #: per model column (in :attr:`model`'s order), the values of the sampled rows as
    #: (data row, value), typed as the data path types them (batches.py: what a model
    #: of any protocol is sent)
    values: tuple[Sequence[tuple[int, Any]], ...] = ()
    #: the values are CSV text (a number is text the model reads as one)
    text: bool = False
    #: without values: each model column's type from the file's own schema (Parquet),
    #: and how many of its values are empty (the footer's statistics, when it has them)
    types: tuple[str, ...] = ()
    nulls: tuple[int, ...] = ()
    #: how many data rows were looked at
    rows: int = 0

    @property
    def left_out(self) -> tuple[str, ...]:
        """Columns of the file the model is not sent (model_columns / drop_columns)."""
        return tuple(c for c in self.columns if c not in self.model)


def sample_of(
    columns: Sequence[str], model: Sequence[str], batches: Iterable[Batch], *, named: bool = True
) -> FileSample:
    """A sample from mini-batches as the model would be sent them."""
    values: list[list[tuple[int, Any]]] = [[] for _ in model]
    rows, text = 0, False
    for batch in batches:
        text = text or batch.csv is not None
        for i, row in enumerate(batch.as_rows()):
            for at, value in enumerate(row[: len(values)]):
                values[at].append((batch.first_row + i, value))
        rows += batch.rows
    return FileSample(
        columns=tuple(columns),
        model=tuple(model),
        named=named,
        values=tuple(tuple(v) for v in values),
        text=text,
        rows=rows,
    )


def arrow_type(t: pa.DataType) -> str:
    """The contract type an Arrow type holds ("" for nested values)."""
    import pyarrow as pa

    checks = (
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "number"),
        (pa.types.is_decimal, "number"),
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_timestamp, "datetime"),
        (pa.types.is_date, "datetime"),
        (pa.types.is_binary, "binary"),
        (pa.types.is_large_binary, "binary"),
        (pa.types.is_null, "any"),
    )
    return next((name for check, name in checks if check(t)), "")


def sample_of_schema(
    columns: Sequence[str],
    model: Sequence[str],
    schema: pa.Schema,
    nulls: Mapping[str, int],
    rows: int = 0,
) -> FileSample:
    """A sample from a file's own schema (Parquet's footer), no values."""
    return FileSample(
        columns=tuple(columns),
        model=tuple(model),
        types=tuple(arrow_type(schema.field(n).type) for n in model),
        nulls=tuple(int(nulls.get(n, 0)) for n in model),
        rows=rows,
    )
