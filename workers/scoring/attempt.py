"""One scoring attempt of a file: its staging upload, the rows its model refuses, and
its commits (issue 26), around the scoring loop.

The score step (tasks/score.py) opens the input, finds the model and, when it can,
the resume plan (:mod:`workers.scoring.resume`); an :class:`Attempt` then scores the
file into its staging object and ends in one of four ways:

* ``done``: the output is complete (and its ``.rejected`` staged beside it);
* ``handed_over``: the step reached SCOREFLEET_MAX_STEP_SECONDS; everything written
  is committed for a continuation of the step (:meth:`Checkpointer.hand_over`);
* ``taken_over``: another delivery took this attempt's upload over (this one was
  thought dead); it stops and leaves the upload to it;
* ``superseded``: a newer run of the file took over; the upload is aborted.

A failure that will be retried leaves the upload for the retry to take up when
something is committed (its writer's lease ended at once); any other failure aborts
it, as before.
"""

from __future__ import annotations

import enum
import logging
import tempfile
from collections.abc import Callable
from typing import Any

from scorefleet.errors import is_transient
from scorefleet.job import Job
from scorefleet.s3uri import S3Uri
from scorefleet.settings import RejectBudget
from scorefleet.storage import commits
from scorefleet.storage.commits import Committed
from scorefleet.storage.ledger import Ledger, rejected_staging_key
from scorefleet.storage.multipart import MultipartWriter
from workers.scoring.batches import Batch, Scores
from workers.scoring.checkpoint import Checkpointer
from workers.scoring.engine import ScoreStats, score_stream
from workers.scoring.formats import Reader
from workers.scoring.formats.source import Described
from workers.scoring.progress import RunProgress
from workers.scoring.rejects import RowRejects
from workers.scoring.resume import Plan

log = logging.getLogger(__name__)


class Ending(enum.Enum):
    DONE = "done"
    HANDED_OVER = "handed over"
    TAKEN_OVER = "taken over"
    SUPERSEDED = "superseded"


class Attempt:
    """One scoring attempt (see the module docstring)."""

    def __init__(
        self,
        s3: Any,
        ledger: Ledger,
        job: Job,
        staging: S3Uri,
        *,
        described: Described,
        budget: RejectBudget,
        progress: RunProgress,
        lease_seconds: float,
        token: str,
        options: str,
        source: dict[str, Any],
        plan: Plan | None,
        stop: Callable[[], bool],
    ) -> None:
        self.s3, self.ledger, self.job, self.staging = s3, ledger, job, staging
        self.described, self.progress, self.plan = described, progress, plan
        self.output = described.options.output
        self.spool: Any = None
        self.rejects: RowRejects | None = None
        if budget.enabled:
            self.spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed by close()
            self.rejects = RowRejects(
                budget,
                self.spool,
                fraction_read=progress.fraction_read,
                parquet=described.options.input.rejected_as_table,
            )
            if plan is not None and plan.entry.rejects_state is not None:
                self.rejects.restore(plan.entry.rejects_state, plan.rejects_sides)
        formats = described.options
        #: commits only where both formats can be taken up again
        self.checkpointer: Checkpointer | None = None
        if formats.input.resumes and formats.output.resumes:
            self.checkpointer = Checkpointer(
                ledger,
                s3,
                job,
                staging,
                token,
                options=options,
                source=source,
                rejects=self.rejects,
                progress=progress.fields,
                on_commit=progress.committed,
                stop=stop,
                base=plan.base if plan is not None else None,
            )
        self.sink = MultipartWriter(
            s3,
            staging,
            content_type=self.output.media_type,
            # registered (with a lease the heartbeat renews) before its multipart
            # upload exists; an output of one part is a single PUT, which no
            # redelivery can find half done: a small file registers nothing
            on_start=lambda: ledger.register_writer(job, staging.key, lease_seconds),
            cut_at_marks=self.checkpointer is not None,
            on_part=self.checkpointer.on_part if self.checkpointer is not None else None,
            continued=plan.continued if plan is not None else None,
        )
        if self.checkpointer is not None:
            self.checkpointer.sink = self.sink
        self.handed: Committed | None = None

    def run(
        self,
        reader: Reader,
        score: Callable[[Batch], Scores],
        *,
        max_in_flight: int,
        checkpoint: Callable[[], None],
        superseded: Callable[[], bool],
        before_first: Callable[[Batch], None] | None = None,
    ) -> tuple[Ending, ScoreStats]:
        try:
            stats = score_stream(
                reader,
                score,
                self.sink,
                self.output,
                max_in_flight=max_in_flight,
                total_bytes=self.described.size,
                checkpoint=checkpoint,
                progress=self.progress.update,
                rejects=self.rejects,
                checkpoints=self.checkpointer,
                before_first=before_first,
            )
            cp = self.checkpointer
            if superseded() or (cp is not None and cp.superseded):
                self.sink.abort()
                return Ending.SUPERSEDED, stats
            if cp is not None and cp.taken_over:
                self.sink.leave()
                return Ending.TAKEN_OVER, stats
            if stats.stopped:
                assert cp is not None
                self.handed = cp.hand_over(stats)
                return Ending.HANDED_OVER, stats
            if self.spool is not None and stats.rejected:
                self.spool.seek(0)
                self.s3.upload_fileobj(
                    self.spool, self.staging.bucket, rejected_staging_key(self.staging.key)
                )
            self.sink.complete()
            return Ending.DONE, stats
        except BaseException as exc:
            self._failed(exc)
            raise

    @property
    def progressed(self) -> int:
        """Parts this attempt committed."""
        return self.checkpointer.commits if self.checkpointer is not None else 0

    def _failed(self, exc: BaseException) -> None:
        """A retry takes the upload up from its last commit; anything else aborts it."""
        cp = self.checkpointer
        committed = cp is not None and (cp.commits or cp.base.entry is not None)
        if cp is not None and committed and not cp.taken_over and is_transient(exc):
            self.sink.leave()
            try:
                commits.hand_back(self.ledger, self.job, self.staging.key)
                log.info("the upload is left for the retry to take up from its last commit")
            except Exception as err:  # its lease expires anyway
                log.warning("could not hand the upload back (%s): its lease has to expire", err)
            return
        self.sink.abort()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
