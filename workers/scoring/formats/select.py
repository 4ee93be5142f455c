"""Which input columns the model sees and which are kept, and the output's columns.

Output columns, in this order (stable, documented in docs/formats.md):

1. the kept input columns (``keep_columns``), in the order the tag or catalog
   lists them; ``*`` keeps them all in the file's order;
2. the model's answer columns, in the model's order, named as the model names
   them (a CSV header, JSON object keys, v2 output tensors) or ``score_0``,
   ``score_1``, ... when it names none. An answer column whose name is already a
   kept column's is written as ``score_<name>`` (again, until it is free).

Without ``keep_columns`` the output is the model's answer alone, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scorefleet.errors import BadInput

_LIST_AT_MOST = 40
ALL_COLUMNS = "*"


@dataclass(frozen=True)
class Columns:
    """Which input columns are kept beside the answer, and which the model sees."""

    keep: tuple[str, ...] = ()  # () keep nothing; ("*",) the whole input row
    model: tuple[str, ...] | None = None  # None: every column not dropped
    drop: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        """No join and no selection: the model sees the file's rows as they are."""
        return not self.keep and self.model is None and not self.drop


def _listing(columns: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:_LIST_AT_MOST])
    more = len(columns) - _LIST_AT_MOST
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class ColumnPlan:
    """The columns of one file, decided once its column names are known."""

    input: tuple[str, ...]  # the file's columns, in order
    model: tuple[str, ...]  # what the model is sent, in this order
    keep: tuple[str, ...]  # kept beside the answer, in output order

    @property
    def passthrough(self) -> bool:
        """The model sees every column, in the file's order, and nothing is kept."""
        return not self.keep and self.model == self.input

    @property
    def needed(self) -> tuple[str, ...]:
        """The columns to read (model and kept ones), in the file's order."""
        wanted = set(self.model) | set(self.keep)
        return tuple(c for c in self.input if c in wanted)

    def output_names(self, answer: Sequence[str]) -> tuple[str, ...]:
        """The output's column names: the kept ones, then the answer's; an answer name
        already taken (by a kept column or an earlier answer column) is prefixed with
        ``score_`` until it is free, so no column hides another."""
        taken = set(self.keep)
        names = list(self.keep)
        for answer_name in answer:
            name = answer_name
            while name in taken:
                name = f"score_{name}"
            taken.add(name)
            names.append(name)
        return tuple(names)


def plan(columns: Columns, input_columns: Sequence[str], *, named: bool = True) -> ColumnPlan:
    """The plan for a file with ``input_columns``; :class:`BadInput` naming what is
    not a column of the file (and listing the ones it has). ``named``: the file
    names its columns (a CSV without a header row does not)."""
    cols = tuple(input_columns)
    if columns.plain:
        return ColumnPlan(input=cols, model=cols, keep=())
    if not named:
        raise BadInput(
            "keep_columns, model_columns and drop_columns name columns, but this CSV file "
            "has no header row: add one (or tag the file csv_header=present if the first "
            "row is the header)"
        )
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise BadInput(
            f"the file has two columns named {dup!r}: columns can only be chosen by name "
            "when the names are unique"
        )

    def check(names: Sequence[str], setting: str) -> None:
        missing = [n for n in names if n not in cols]
        if missing:
            what = "is not a column" if len(missing) == 1 else "are not columns"
            raise BadInput(
                f"{setting} names {_listing(missing)}, which {what} of the file; "
                f"its columns are {_listing(cols)}"
            )

    keep: tuple[str, ...] = ()
    if columns.keep == (ALL_COLUMNS,):
        keep = cols
    elif columns.keep:
        check(columns.keep, "keep_columns")
        keep = columns.keep
    if columns.model is not None:
        check(columns.model, "model_columns")
        model = columns.model
    else:
        check(columns.drop, "drop_columns")
        model = tuple(c for c in cols if c not in columns.drop)
    if not model:
        raise BadInput(
            f"drop_columns leaves the model no column to score (the file has {_listing(cols)})"
        )
    return ColumnPlan(input=cols, model=model, keep=keep)
