"""Rejected rows: one bad row does not cost the whole file.

When the model refuses a mini-batch (:class:`~scorefleet.errors.RowsRefused`: a 4xx
answer, a wrong row count), and the file has a budget of rows it may lose
(``SCOREFLEET_MAX_REJECTED_ROWS``, the catalog's ``max_rejected_rows``, the file's
``max_rejected_rows`` tag), the mini-batch is bisected to find the rows the model
refuses; the rest is scored and written in order, the refused rows go to
``<name>.rejected`` with their row number and the model's message.

Bisection, bounded: a refused range is split in two; the left half is sent; if it
scores, the right half must hold the refusal and is split in turn *without* being
sent whole (one call saved per level); if the left half is refused too, the right
half is sent on its own. A single row is always sent alone, so every rejected row
carries the model's own message about it (a single row that scores after all: the
refusal was about the rows together, and they are written as scored). One bad row in
a mini-batch of ``n`` rows costs at most ``2 ceil(log2 n)`` extra calls (two per
level when it sits in the left half, where the right half must be sent to be known
clean; ``ceil(log2 n) + 1`` when it sits in the right half), ``k`` of them at most
``k`` times that; and the file never spends more than
:func:`extra_call_bound` in all: over its budget it stops and fails as it would
without one, its ``.error`` listing the first refused rows found.

Transient failures (:class:`~scorefleet.errors.ModelUnavailable`) are never rejections:
they propagate (the step retries), whichever level of the bisection they hit.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from scorefleet.errors import RowsRefused
from scorefleet.redact import redact
from scorefleet.settings import RejectBudget

#: rows the .error of a file over its budget lists
ERROR_ROWS_SHOWN = 10


class Sliceable(Protocol):
    first_row: int
    rows: int

    def slice(self, offset: int, length: int) -> Any: ...


B = TypeVar("B", bound=Sliceable)
S = TypeVar("S")


@dataclass(frozen=True)
class Refusal:
    """One row the model refused: the batch of that one row, its 1-based data row
    number, and the model's message about it."""

    row: int
    batch: Any
    message: str


@dataclass
class Bisected(Generic[S]):
    """What a mini-batch came to: the scored parts in order, and the refused rows."""

    parts: list[S]
    refused: list[Refusal] = field(default_factory=list)
    calls: int = 1  # model calls it took, the first one included

    @property
    def extra_calls(self) -> int:
        return self.calls - 1


class OverBudget(RowsRefused):
    """More rows refused than the file's budget allows: the file fails as it would
    without a budget, naming the first refused rows found."""

    def __init__(
        self,
        budget: RejectBudget,
        refused: Sequence[Refusal],
        rows_seen: int,
        count: int | None = None,
    ) -> None:
        """``count``: the rows refused in all, when ``refused`` are not all of them
        (a file taken up again keeps only the first few it had refused)."""
        count = len(refused) if count is None else count
        shown = sorted(refused, key=lambda r: r.row)[:ERROR_ROWS_SHOWN]
        lines = "\n".join(f"  data row {r.row}: {redact(first_line(r.message))}" for r in shown)
        more = count - len(shown)
        super().__init__(
            f"the model refused {count} row(s) so far, more than this file may lose "
            f"(max_rejected_rows={budget}; {rows_seen} rows read); the first refused:\n{lines}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
        self.refused = list(refused)


def first_line(message: str, limit: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return line[:limit]


def bisect_calls_per_row(batch_rows: int) -> int:
    """Extra calls one refused row costs at most in a mini-batch of ``batch_rows``."""
    return 2 * math.ceil(math.log2(max(2, batch_rows)))


def extra_call_bound(allowed_rejects: int, batch_rows: int) -> int:
    """Extra model calls a file spends on bisection at most: one more refused row
    than it may lose (the one that puts it over), each at its bound."""
    return (allowed_rejects + 1) * bisect_calls_per_row(batch_rows)


class Bisector(Generic[B, S]):
    """Wraps ``score`` (a protocol's ``score(batch) -> scores``); thread-safe (the
    scoring loop calls it from its pool). ``rows_expected`` estimates the file's rows
    so far (for a fractional budget, checked as rows come)."""

    def __init__(
        self,
        score: Callable[[B], S],
        budget: RejectBudget,
        rows_expected: Callable[[], int],
    ) -> None:
        self.score = score
        self.budget = budget
        self.rows_expected = rows_expected
        self.refused: list[Refusal] = []
        #: refused before this file was taken up again, beside the few kept in ``refused``
        self.earlier = 0
        self.extra_calls = 0
        self._lock = threading.Lock()

    def __call__(self, batch: B) -> Bisected[S]:
        try:
            return Bisected([self.score(batch)])
        except RowsRefused as exc:
            if not self.budget.enabled:
                raise
            out: Bisected[S] = Bisected([])
            self._split(batch, str(exc), out, known_refused=True)
            return out

    # ------------------------------------------------------------------ bisect
    def _call(self, batch: B, out: Bisected[S]) -> tuple[S | None, str]:
        out.calls += 1
        with self._lock:
            self.extra_calls += 1
        try:
            return self.score(batch), ""
        except RowsRefused as exc:
            return None, str(exc)

    def _split(self, batch: B, message: str, out: Bisected[S], *, known_refused: bool) -> None:
        """``batch`` is refused (``known_refused``: sent whole and refused with
        ``message``) or inferred to hold the refusal (its sibling scored)."""
        if batch.rows == 1:
            if not known_refused:
                scored, message = self._call(batch, out)
                if scored is not None:  # refused only together with its sibling
                    out.parts.append(scored)
                    return
            self._refuse(Refusal(batch.first_row, batch, message), out)
            return
        half = batch.rows // 2
        left, right = batch.slice(0, half), batch.slice(half, batch.rows - half)
        scored, why = self._call(left, out)
        if scored is not None:
            out.parts.append(scored)
            self._split(right, message, out, known_refused=False)
            return
        self._split(left, why, out, known_refused=True)
        scored, why = self._call(right, out)
        if scored is not None:
            out.parts.append(scored)
        else:
            self._split(right, why, out, known_refused=True)

    def _refuse(self, refusal: Refusal, out: Bisected[S]) -> None:
        out.refused.append(refusal)
        with self._lock:
            self.refused.append(refusal)
            count = self.earlier + len(self.refused)
            refused = list(self.refused)
        seen = max(self.rows_expected(), refusal.row)
        if not self.budget.allows(count, seen):
            raise OverBudget(self.budget, refused, seen, count)

    def check_final(self, rows: int) -> None:
        """At the end of the file, against its real row count."""
        count = self.earlier + len(self.refused)
        if count and not self.budget.allows(count, rows):
            raise OverBudget(self.budget, self.refused, rows, count)


# ------------------------------------------------------------------ .rejected
ROW_COLUMN = "scorefleet_row"
MESSAGE_COLUMN = "scorefleet_message"


class RejectedWriter:
    """Writes refused rows to ``<name>.rejected`` (through ``sink``), in the input's
    format: for CSV, the input's own columns (its header line first, when it has one)
    between the row's 1-based number and the model's message, the row's bytes as the
    file had them; for JSON Lines, one JSON object per row:
    ``{"scorefleet_row": n, <the row's columns>, "scorefleet_message": "..."}``; for
    Parquet (``parquet=True``), the same columns in a Parquet file, the row's columns
    with the input's types, written by :meth:`close` (the refused rows are held until
    then: at most the file's budget of them)."""

    def __init__(self, sink: Any, *, parquet: bool = False) -> None:
        self.sink = sink
        self.parquet = parquet
        self.rows = 0
        self._started = False
        self._tables: list[Any] = []  # Parquet: one Arrow table per refused row
        #: what was written (or held) since :meth:`side` was last asked
        self._new = bytearray()
        self._new_tables = 0

    def write(self, refusals: Sequence[Refusal]) -> None:
        for r in sorted(refusals, key=lambda r: r.row):
            self._write_one(r)

    def _write_one(self, r: Refusal) -> None:
        import csv
        import io
        import json

        batch = r.batch
        message = redact(first_line(r.message, 2000))  # the model's words: masked
        if getattr(batch, "csv", None) is not None:
            if not self._started:
                header = getattr(batch, "csv_header", None)
                if header is not None:
                    names = header.rstrip(b"\r\n")
                    head = f"{ROW_COLUMN},".encode() + names + f",{MESSAGE_COLUMN}\n".encode()
                    self.sink.write(head)
                    self._new += head
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow([message])
            line = f"{r.row},".encode() + batch.csv.rstrip(b"\r\n") + b"," + out.getvalue().encode()
        elif self.parquet:
            import pyarrow as pa

            table = batch.as_table()
            table = table.add_column(0, ROW_COLUMN, pa.array([r.row], pa.int64()))
            self._tables.append(table.append_column(MESSAGE_COLUMN, pa.array([message])))
            self._new_tables += 1
            self.rows += 1
            return
        else:
            (record,) = batch.as_records()
            obj = {ROW_COLUMN: r.row, **record, MESSAGE_COLUMN: message}
            line = (json.dumps(obj, default=str, ensure_ascii=False) + "\n").encode()
        self._started = True
        self.sink.write(line)
        self._new += line
        self.rows += 1

    # --------------------------------------------- taken up again (issue 26)
    def side(self) -> bytes:
        """The refused rows since the last call, as a committed part keeps them: the
        lines written (CSV, JSON Lines), or the rows held (Parquet: Arrow IPC)."""
        if self._new_tables:
            import pyarrow as pa

            tables, self._new_tables = self._tables[-self._new_tables :], 0
            table = pa.concat_tables(tables, promote_options="permissive")
            out = pa.BufferOutputStream()
            with pa.ipc.new_stream(out, table.schema) as ipc:
                ipc.write_table(table)
            return b"T" + bytes(out.getvalue().to_pybytes())
        lines, self._new = bytes(self._new), bytearray()
        return b"L" + lines if lines else b""

    def restore(self, sides: Sequence[bytes], rows: int) -> None:
        """Take the ``.rejected`` up where a writer of it left it (its committed
        parts' :meth:`side`, and the ``rows`` it had written)."""
        import pyarrow as pa

        for side in sides:
            if side.startswith(b"L"):
                self.sink.write(side[1:])
                self._started = True
            elif side.startswith(b"T"):
                self._tables.append(pa.ipc.open_stream(pa.py_buffer(side[1:])).read_all())
        self.rows = rows

    def close(self) -> None:
        """Write what is held (Parquet); nothing to do for the line formats."""
        if not self._tables:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        # a column that is null in one row and typed in another: the types unified
        table = pa.concat_tables(self._tables, promote_options="permissive")
        self._tables = []
        pq.write_table(table, self.sink)


def budget_for(default: RejectBudget, image: RejectBudget | None, tag: str | None) -> RejectBudget:
    """The file's budget: its ``max_rejected_rows`` tag, else its image's catalog entry,
    else ``SCOREFLEET_MAX_REJECTED_ROWS`` (the tag was validated when the file was
    queued: scorefleet.submission)."""
    if tag is not None:
        return RejectBudget.parse(tag)
    return image if image is not None else default


class RowRejects:
    """What the scoring loop (workers/scoring/engine.py) needs for one file: the bisection
    around its protocol's ``score``, the ``.rejected`` writer, the count.

    ``fraction_read`` (0..1, the share of the input read so far) lets a fractional
    budget be checked as rows come: the file's rows are estimated as the rows batched
    so far over that share (never below them), and checked exactly at the end."""

    def __init__(
        self,
        budget: RejectBudget,
        sink: Any,
        *,
        fraction_read: Callable[[], float] | None = None,
        parquet: bool = False,
    ) -> None:
        self.budget = budget
        self.writer = RejectedWriter(sink, parquet=parquet)
        self.fraction_read = fraction_read
        #: rows the batcher has produced so far (the scoring loop sets it)
        self.rows_read: Callable[[], int] = lambda: 0
        self.bisector: Bisector[Any, Any] | None = None

    @property
    def rejected(self) -> int:
        return self.writer.rows

    @property
    def extra_calls(self) -> int:
        return self.bisector.extra_calls if self.bisector is not None else 0

    def rows_expected(self) -> int:
        rows = self.rows_read()
        share = self.fraction_read() if self.fraction_read is not None else 1.0
        return rows if share <= 0 else max(rows, int(rows / min(1.0, share)))

    def wrap(self, score: Callable[[B], S]) -> Callable[[B], Bisected[S]]:
        self.bisector = Bisector(score, self.budget, self.rows_expected)
        if self._restored is not None:
            shown = self._restored["shown"]
            self.bisector.refused = [Refusal(int(row), None, str(msg)) for row, msg in shown]
            self.bisector.earlier = int(self._restored["rejected"]) - len(shown)
        return self.bisector

    # --------------------------------------------- taken up again (issue 26)
    _restored: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """What a file taken up again needs to go on counting: the rows refused so far
        and the first few of them (what an .error over the budget lists)."""
        refused = self.bisector.refused if self.bisector is not None else []
        shown = sorted(refused, key=lambda r: r.row)[:ERROR_ROWS_SHOWN]
        return {
            "rejected": self.rejected,
            "shown": [[r.row, first_line(redact(r.message))] for r in shown],
        }

    def side(self) -> bytes:
        return self.writer.side()

    def restore(self, state: dict[str, Any], sides: Sequence[bytes]) -> None:
        self.writer.restore(sides, int(state["rejected"]))
        self._restored = dict(state)

    def keep(self, refused: Sequence[Refusal]) -> None:
        self.writer.write(refused)

    def finish(self, rows: int) -> None:
        if self.bisector is not None:
            self.bisector.check_final(rows)
        self.writer.close()
