"""Score one file: read it in mini-batches, send each to the model, write in order.

Reading the input (any format: workers.scoring.formats), the model's work on up to
``max_in_flight`` mini-batches and uploading result parts all overlap; memory stays
bounded by a few batches and upload parts, whatever the file size. Each answer is
written beside the kept columns of its own rows, in the input's order: output row i
is the answer for input row i.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scorefleet.errors import ModelError
from workers.process import metrics
from workers.scoring.batches import Batch, Scores
from workers.scoring.formats import Format, Reader, Writer, make_writer
from workers.scoring.formats.base import Sink
from workers.scoring.rejects import Bisected, RowRejects

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 10.0


@dataclass
class ScoreStats:
    rows: int = 0
    batches: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    #: rows the model refused, written to the .rejected (workers/scoring/rejects.py)
    rejected: int = 0
    #: the file was not finished: it stopped to be handed over (Checkpoints.stop)
    stopped: bool = False


class Checkpoints(Protocol):
    """What a file that can be taken up again (issue 26) hears from the scoring loop:
    :mod:`workers.scoring.checkpoint` commits each output part there."""

    def restore(self, writer: Writer) -> None:
        """The output's writer was just made: take it up where an earlier one left it."""

    def written(self, writer: Writer, at: dict[str, Any], stats: ScoreStats) -> None:
        """A piece's answers were written; the input goes on from ``at``."""

    def stop(self) -> bool:
        """Stop reading here (the step hands the file over)?"""


def _timed(score: Callable[[Batch], Scores], batch: Batch) -> Scores:
    started = time.monotonic()
    scores = score(batch)
    metrics.BATCH_LATENCY.observe(time.monotonic() - started)
    return scores


def _whole(score: Callable[[Batch], Scores], batch: Batch) -> Bisected[Scores]:
    return Bisected([_timed(score, batch)])


def _kept_parts(
    kept: pa.Table | None, first_row: int, rows: int, result: Bisected[Scores]
) -> list[pa.Table | None]:
    """The kept input columns of each scored part: the batch's rows in order, less the
    refused ones (the parts cover exactly those, in order)."""
    if kept is None:
        return [None] * len(result.parts)
    if result.refused:
        refused = {r.row - first_row for r in result.refused}
        kept = kept.take([i for i in range(rows) if i not in refused])
    out: list[pa.Table | None] = []
    offset = 0
    for part in result.parts:
        out.append(kept.slice(offset, part.rows))
        offset += part.rows
    return out


def score_stream(
    reader: Reader,
    score: Callable[[Batch], Scores],
    sink: Sink,
    output: Format,
    *,
    max_in_flight: int,
    total_bytes: int | None = None,
    progress: Callable[[ScoreStats], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
    rejects: RowRejects | None = None,
    checkpoints: Checkpoints | None = None,
    before_first: Callable[[Batch], None] | None = None,
) -> ScoreStats:
    """``score``: the model protocol's call for one batch (in a pool thread).
    ``checkpoint`` is called after each mini-batch is written; it may raise to
    stop the file (the step's time is up). ``progress`` too (it throttles itself).
    ``rejects``: the file may lose some rows the model refuses (workers/scoring/rejects.py):
    a refused mini-batch is bisected, the refused rows go to its ``.rejected``.
    ``checkpoints``: told of each piece written, and asked whether to stop reading
    (the mini-batches in flight are written first; ``stats.stopped`` then, and the
    output is not closed).
    ``before_first`` sees the first mini-batch before it is sent (the model's
    contract: workers/scoring/preview.py); it may raise to stop the file."""
    started = time.monotonic()
    stats = ScoreStats(rejected=rejects.rejected if rejects is not None else 0)
    next_report = started + PROGRESS_EVERY_SECONDS
    writer: Writer | None = None

    def write(
        kept: pa.Table | None,
        first_row: int,
        batch_rows: int,
        span: str,
        result: Bisected[Scores],
        at: dict[str, Any] | None,
    ) -> None:
        nonlocal next_report, writer
        answered = sum(p.rows for p in result.parts) + len(result.refused)
        if answered != batch_rows:  # a protocol's own check, made once more here
            raise ModelError(
                f"the model answered {answered} result rows for {span} ({batch_rows} "
                "rows); every input row needs exactly one result row, in order"
            )
        if writer is None:
            assert reader.plan is not None
            writer = make_writer(output, sink, reader.plan)
            if checkpoints is not None:
                checkpoints.restore(writer)
        for part_kept, part in zip(
            _kept_parts(kept, first_row, batch_rows, result), result.parts, strict=True
        ):
            writer.write(part_kept, part)
        writer.end_batch()
        if result.refused and rejects is not None:
            rejects.keep(result.refused)
            stats.rejected = rejects.rejected
        stats.bytes_out = writer.bytes_out
        stats.rows = writer.rows
        stats.batches += 1
        if checkpoints is not None and at is not None:
            checkpoints.written(writer, at, stats)
        if checkpoint:
            checkpoint()
        if progress:
            progress(stats)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY_SECONDS
            log.info(
                "scored %d rows in %d mini-batches in %.0fs (%.1f MB read%s)",
                stats.rows,
                stats.batches,
                now - started,
                reader.bytes_in / 1e6,
                f" of {total_bytes / 1e6:.1f} MB" if total_bytes else "",
            )

    call: Callable[[Batch], Bisected[Scores]] = functools.partial(_whole, score)
    if rejects is not None and rejects.budget.enabled:
        call = rejects.wrap(functools.partial(_timed, score))
        rows_batched = 0
        rejects.rows_read = lambda: rows_batched
    pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="model-call")
    pending: deque[tuple[pa.Table | None, int, int, str, Future[Bisected[Scores]], Any]] = deque()
    pieces = iter(reader)
    try:
        while not (checkpoints is not None and checkpoints.stop()):
            piece = next(pieces, None)
            if piece is None:
                break
            # Only the batch goes to the pool; its rows are freed once sent.
            b = piece.batch
            if before_first is not None:
                before_first(b)
                before_first = None
            if rejects is not None:
                rows_batched = b.first_row + b.rows - 1
            fut = pool.submit(call, b)
            pending.append((piece.kept, b.first_row, b.rows, b.span, fut, piece.at))
            del piece, b
            if len(pending) >= max_in_flight:
                kept, first, rows, span, fut, at = pending.popleft()
                write(kept, first, rows, span, fut.result(), at)
        else:
            stats.stopped = True
        while pending:
            kept, first, rows, span, fut, at = pending.popleft()
            write(kept, first, rows, span, fut.result(), at)
        if rejects is not None and not stats.stopped:
            rejects.finish(stats.rows + stats.rejected)
    finally:
        for *_, f, _at in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    if stats.stopped:  # handed over: the output goes on in another step
        stats.seconds = time.monotonic() - started
        return stats
    if writer is None:  # no rows (an empty Parquet file, or none after a resume point)
        assert reader.plan is not None
        writer = make_writer(output, sink, reader.plan)
        if checkpoints is not None:
            checkpoints.restore(writer)
        writer.close(reader.kept_schema())
    else:
        writer.close()
    stats.rows = writer.rows
    stats.bytes_out = writer.bytes_out
    stats.seconds = time.monotonic() - started
    return stats


def no_model(batch: Batch) -> Scores:
    """The ``score`` of a file with no rows: never called."""
    raise AssertionError(f"a model call for {batch.span} of a file with no rows")


def reader_rows(reader: Reader) -> int | None:
    """The rows of the file if the reader knows them before reading (a footer)."""
    return reader.known_rows
