"""Score one file: stream it in mini-batches to the model, results out in order.

Reading the input, the model's work on up to ``max_in_flight`` mini-batches and
uploading result parts all overlap; memory stays bounded by a few batches and
upload parts, whatever the file size.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from workers.csvbatch import CsvBatcher
from workers.protocol import Answer, InvocationsClient

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


def score_stream(
    chunks: Iterable[bytes],
    client: InvocationsClient,
    sink: Sink,
    *,
    max_bytes: int,
    max_in_flight: int,
    header_mode: str,
    send_header: bool,
    total_bytes: int | None = None,
    progress: Callable[[ScoreStats], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> ScoreStats:
    """``checkpoint`` is called after each mini-batch is written; it may raise to
    stop the file (the step's time is up)."""
    started = time.monotonic()
    stats = ScoreStats()
    batcher = CsvBatcher(chunks, max_bytes, header_mode=header_mode, send_header=send_header)
    wrote_header = False
    next_report = started + PROGRESS_EVERY_SECONDS

    def write(answer: Answer) -> None:
        nonlocal wrote_header, next_report
        if answer.header is not None and not wrote_header:
            sink.write(answer.header)
            stats.bytes_out += len(answer.header)
        wrote_header = True  # the header, if any, is the first line of the output only
        sink.write(answer.data)
        stats.bytes_out += len(answer.data)
        stats.rows += answer.rows
        stats.batches += 1
        if checkpoint:
            checkpoint()
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
            if progress:
                progress(stats)

    pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="model-call")
    pending: deque[Future[Answer]] = deque()
    try:
        for batch in batcher:
            # Only the payload goes to the pool; the batch's bytes are freed once sent.
            pending.append(
                pool.submit(
                    client.invoke,
                    batcher.payload(batch),
                    batch.first_row,
                    batch.rows,
                    batch.span,
                )
            )
            del batch
            if len(pending) >= max_in_flight:
                write(pending.popleft().result())
        while pending:
            write(pending.popleft().result())
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    stats.seconds = time.monotonic() - started
    return stats
