"""Score one file: stream it in mini-batches to the model, results out in order.

Reading the input, the model's work on up to ``max_in_flight`` mini-batches and
uploading result parts all overlap; memory stays bounded by a few batches and
upload parts, whatever the file size.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from workers import csvbatch, metrics
from workers.batches import Batch, Scores
from workers.csvbatch import CsvBatcher
from workers.protocols.base import ModelProtocol
from workers.rejects import Bisected, RowRejects

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 10.0


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


@dataclass
class ScoreStats:
    rows: int = 0
    batches: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    #: rows the model refused, written to the .rejected (workers/rejects.py)
    rejected: int = 0


def _timed_score(protocol: ModelProtocol, batch: Batch) -> Scores:
    started = time.monotonic()
    scores = protocol.score(batch)
    metrics.BATCH_LATENCY.observe(time.monotonic() - started)
    return scores


def _whole(protocol: ModelProtocol, batch: Batch) -> Bisected[Scores]:
    return Bisected([_timed_score(protocol, batch)])


def score_stream(
    chunks: Iterable[bytes],
    protocol: ModelProtocol,
    sink: Sink,
    *,
    max_bytes: int,
    max_in_flight: int,
    header_mode: str,
    send_header: bool,
    total_bytes: int | None = None,
    progress: Callable[[ScoreStats], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
    rejects: RowRejects | None = None,
) -> ScoreStats:
    """``checkpoint`` is called after each mini-batch is written; it may raise to
    stop the file (the step's time is up). ``progress`` too (it throttles itself).
    ``rejects``: the file may lose some rows the model refuses (workers/rejects.py):
    a refused mini-batch is bisected, the refused rows go to its ``.rejected``."""
    started = time.monotonic()
    stats = ScoreStats()
    batcher = CsvBatcher(chunks, max_bytes, header_mode=header_mode, send_header=send_header)
    wrote_header = False
    next_report = started + PROGRESS_EVERY_SECONDS

    def write_part(answer: Scores) -> None:
        nonlocal wrote_header
        header = answer.header_line() if not wrote_header else None
        if header is not None:
            sink.write(header)
            stats.bytes_out += len(header)
        wrote_header = True  # the header, if any, is the first line of the output only
        data = answer.as_csv()
        sink.write(data)
        stats.bytes_out += len(data)
        stats.rows += answer.rows

    def write(result: Bisected[Scores]) -> None:
        nonlocal next_report
        for part in result.parts:
            write_part(part)
        if result.refused and rejects is not None:
            rejects.keep(result.refused)
            stats.rejected = rejects.rejected
        stats.batches += 1
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
                batcher.bytes_in / 1e6,
                f" of {total_bytes / 1e6:.1f} MB" if total_bytes else "",
            )

    call: Callable[[Batch], Bisected[Scores]] = functools.partial(_whole, protocol)
    if rejects is not None and rejects.budget.enabled:
        call = rejects.wrap(functools.partial(_timed_score, protocol))
        rejects.rows_read = lambda: batcher.rows
    pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="model-call")
    pending: deque[Future[Bisected[Scores]]] = deque()
    columns: tuple[str, ...] | None = None
    try:
        for raw in batcher:
            if columns is None:
                columns = _columns(batcher.header, raw.data)
            batch = Batch(
                first_row=raw.first_row,
                rows=raw.rows,
                span=raw.span,
                columns=columns,
                csv=raw.data,
                csv_header=batcher.header,
            )
            del raw
            # the batch's bytes are freed once its call is done
            pending.append(pool.submit(call, batch))
            del batch
            if len(pending) >= max_in_flight:
                write(pending.popleft().result())
        while pending:
            write(pending.popleft().result())
        if rejects is not None:
            rejects.finish(stats.rows + stats.rejected)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    stats.seconds = time.monotonic() - started
    return stats


def _columns(header: bytes | None, first_rows: bytes) -> tuple[str, ...]:
    """The model columns' names: the header's, or "" for each field of the first row."""
    if header is not None:
        return tuple(csvbatch.csv_fields(header))
    first = first_rows[: first_rows.find(b"\n") + 1] if b"\n" in first_rows else first_rows
    return ("",) * len(csvbatch.csv_fields(first))
