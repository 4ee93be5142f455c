"""The sweep: files whose S3 notification never came are scored anyway.

Notifications can go missing for good (a notification configuration changed, a
Lambda throttled past its retries, an events DLQ nobody drained, files that were
there before the stack). The sweep (``tasks.sweep`` on beat, ``scorefleet sweep``)
lists the input prefix and queues every file that has no outcome, no run in
progress and is older than the grace period, through the path a notification
takes (scorefleet.intake: tags, fallbacks, validation; the run record decides
duplicates).

Bounded cost on a prefix of millions of objects:

* no request per already-scored file: the outcome prefixes are listed alongside
  the input (both listings are sorted; ``<rel>.scoreout`` sorts next to ``<rel>``),
  and a file whose ``.scoreout`` or ``.error`` is listed, newer than the file, is
  done without a HEAD;
* at most ``max_keys`` input keys per run, from a checkpoint kept in S3 under the
  state prefix (``sweep/checkpoint.json``): the next run goes on from there, and
  once the listing has reached the end the one after starts over;
* at most ``max_enqueue`` files queued per run; only those (the files without an
  outcome) cost a few requests each: the notification path's HEAD and tag read,
  and a GET of the run record (a run in progress is left alone).

One sweep of N already-scored files listed costs ceil(N/1000) input LISTs, about
as many outcome LISTs, and one GET and one PUT of the checkpoint per run
(bench/sweep_cost.py counts them).
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from scorefleet.intake import Intake, not_an_input, take_in
from scorefleet.job import Job
from scorefleet.s3uri import ERROR_SUFFIX, SCOREOUT_SUFFIX, S3Uri
from scorefleet.settings import Settings
from scorefleet.storage import s3io
from scorefleet.storage.ledger import Ledger
from scorefleet.storage.outcome import error_location, scoreout_location

log = logging.getLogger(__name__)

PAGE = 1000  # keys per LIST request (S3's most)
_OUTCOME_SUFFIXES = (SCOREOUT_SUFFIX, ERROR_SUFFIX)


class Finding(enum.Enum):
    ENQUEUED = "enqueued"  # no outcome, no run: queued now
    REJECTED = "rejected"  # refused like a notification would be: its .error is written
    SCORED = "has its outcome"  # its .scoreout or .error is there, newer than the file
    FINISHED = "finished"  # its run record says it is over (the outcome was removed since)
    IN_PROGRESS = "in progress"  # queued recently, or a worker holds its live lease
    YOUNG = "younger than the grace period"  # its notification may still be on its way
    GONE = "gone"  # replaced or deleted while the sweep looked
    OVER_CAP = "left for the next run"  # beyond max_enqueue


#: findings whose words change with their count ("2 have their outcome")
_PLURALS = {Finding.SCORED: "have their outcome"}


@dataclass(frozen=True)
class SweepLimits:
    grace_seconds: float = 900.0
    max_keys: int = 100_000
    max_enqueue: int = 1000
    #: a run record still "queued" after this long counts as lost: queued again
    requeue_after: float = 3600.0

    @classmethod
    def from_settings(cls, s: Settings) -> SweepLimits:
        return cls(s.sweep.grace, s.sweep.max_keys, s.sweep.max_enqueue, s.sweep.requeue_after)


@dataclass
class SweepReport:
    prefix: str
    started_after: str
    next_after: str
    listed: int = 0
    #: the listing reached the end of the prefix (the next run starts over)
    complete: bool = False
    dry_run: bool = False
    findings: collections.Counter[Finding] = field(default_factory=collections.Counter)
    queued: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(
            f"{n} {_PLURALS.get(f, f.value) if n != 1 else f.value}"
            for f, n in sorted(self.findings.items(), key=str)
        )
        where = "to the end" if self.complete else f"up to {self.next_after!r}"
        verb = "would queue" if self.dry_run else "queued"
        return f"swept {self.listed} keys of {self.prefix} {where}: {verb} {len(self.queued)}" + (
            f" ({counts})" if counts else ""
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "started_after": self.started_after,
            "next_after": self.next_after,
            "listed": self.listed,
            "complete": self.complete,
            "dry_run": self.dry_run,
            "findings": {f.value: n for f, n in self.findings.items()},
            "queued": self.queued,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class Listed:
    key: str
    etag: str
    size: int
    modified: float


def checkpoint_location(settings: Settings) -> S3Uri:
    return settings.storage.state_uri.join("sweep/checkpoint.json")


def in_progress(record: dict[str, Any] | None, now: float, requeue_after: float) -> str | None:
    """Why the sweep leaves a file with this run record alone (``None``: queue it).
    A lost chain (a record queued long ago) or a dead worker's run (a lease that has
    expired) is queued again: the run record lets one of the two deliveries run."""
    if record is None:
        return None
    state = record.get("state")
    if state in {"published", "failed", "superseded"}:
        return Finding.FINISHED.value
    if state == "running" and float(record.get("lease_until", 0)) > now:
        return Finding.IN_PROGRESS.value
    queued = float(record.get("queued_at") or record.get("updated") or 0)
    if state == "queued" and now - queued < requeue_after:
        return Finding.IN_PROGRESS.value
    return None


class Sweep:
    def __init__(
        self,
        settings: Settings,
        s3: s3io.S3Client,
        app: Celery | None,
        limits: SweepLimits,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.app = app
        self.limits = limits
        self.clock = clock
        self.ledger = Ledger(settings, s3)

    # ------------------------------------------------------------ checkpoint
    def _load_checkpoint(self) -> tuple[str, str | None]:
        """(start after this key, the checkpoint's ETag or None if there is none)."""
        loc = checkpoint_location(self.settings)
        try:
            found = s3io.get_json(self.s3, loc)
        except ValueError:  # not JSON: written by hand? start over, and write it anew
            log.warning("sweep checkpoint %s is unreadable: starting over", loc)
            return "", self._etag(loc)
        if found is None:
            return "", None
        data, etag = found
        after = data.get("after", "") if isinstance(data, dict) else ""
        return str(after), etag

    def _etag(self, loc: S3Uri) -> str | None:
        head = s3io.head(self.s3, loc)
        return str(head["ETag"]) if head else None

    def _save_checkpoint(self, report: SweepReport, etag: str | None) -> bool:
        """Written only if nobody moved it since this run read it (two sweeps at once:
        the other one's position stands; what this one queued is harmless)."""
        loc = checkpoint_location(self.settings)
        body = {
            "after": report.next_after,
            "prefix": report.prefix,
            "swept_at": self.clock(),
            "listed": report.listed,
            "findings": {f.value: n for f, n in report.findings.items()},
        }
        if not s3io.put_json(self.s3, loc, body, if_match=etag):
            log.warning("another sweep moved the checkpoint meanwhile; keeping its position")
            return False
        return True

    # --------------------------------------------------------------- listing
    def _list(self, prefix: S3Uri, after: str, limit: int | None) -> Iterator[Listed]:
        args: dict[str, Any] = {"Bucket": prefix.bucket, "Prefix": prefix.key}
        if after:
            args["StartAfter"] = after
        config: Any = {"PageSize": PAGE}
        if limit is not None:
            config["MaxItems"] = limit
        pages = self.s3.get_paginator("list_objects_v2").paginate(**args, PaginationConfig=config)
        for page in pages:
            for o in page.get("Contents", []):
                yield Listed(
                    str(o["Key"]),
                    str(o.get("ETag", "")).strip('"'),
                    int(o.get("Size", 0)),
                    o["LastModified"].timestamp(),
                )

    def _outcomes(self, first_rel: str, bound: str) -> dict[S3Uri, Listed]:
        """Outcome objects of the inputs listed after ``first_rel`` (the checkpoint),
        by key. Listed from ``first_rel`` on (``r > first_rel`` implies ``r + suffix >
        first_rel``) up to ``bound``, the greatest outcome key of the window's inputs
        (``<rel>.scoreout`` need not sort as ``<rel>`` does: ``a`` < ``a-1`` but
        ``a-1.scoreout`` < ``a.scoreout``). The shortened name of a very long key
        (scorefleet.s3uri.output_uri) may fall outside: such a file is looked up in
        its run record instead."""
        found: dict[S3Uri, Listed] = {}
        prefixes = {self.settings.storage.output_uri.key: self.settings.storage.output_uri}
        prefixes.setdefault(self.settings.storage.error_uri.key, self.settings.storage.error_uri)
        for out in prefixes.values():
            start = out.key + first_rel if first_rel else ""
            for o in self._list(out, start, None):
                if o.key[len(out.key) :] > bound:
                    break
                if o.key.endswith(_OUTCOME_SUFFIXES):
                    found[S3Uri(out.bucket, o.key)] = o
        return found

    def _done(self, source: S3Uri, item: Listed, outcomes: dict[S3Uri, Listed]) -> bool:
        """Whether the file's ``.scoreout`` or ``.error`` is this upload's. Newer than
        the file: yes. Of the same second (S3 keeps LastModified to the second), the
        listing cannot tell a re-upload in that second from the upload it scored: the
        outcome's own record of its source (its metadata, one HEAD) decides."""
        s = self.settings
        found = [
            (where, outcomes[where])
            for where in (scoreout_location(s, source), error_location(s, source))
            if where in outcomes
        ]
        if any(o.modified > item.modified for _, o in found):
            return True
        return any(
            o.modified == item.modified and self._made_from(where, source, item)
            for where, o in found
        )

    def _made_from(self, outcome: S3Uri, source: S3Uri, item: Listed) -> bool:
        """The outcome's metadata names this upload of the source."""
        meta = s3io.head(self.s3, outcome)
        if meta is None:
            return False
        m = meta.get("Metadata", {})
        if m.get("source-version"):
            current = s3io.head(self.s3, source)
            return current is not None and current.get("VersionId") == m["source-version"]
        if m.get("source-etag"):
            return bool(m["source-etag"] == item.etag)
        return True  # not written by scorefleet: nothing better to go by than its time

    # ------------------------------------------------------------------ run
    def run(self, prefix: S3Uri | None = None, *, dry_run: bool = False) -> SweepReport:
        """One sweep. Without ``prefix``: the input prefix from the checkpoint on (and
        the checkpoint moved, unless ``dry_run``); with it: that part of the input
        prefix from its start, the checkpoint neither read nor moved."""
        s = self.settings
        where = prefix or s.storage.input_uri
        if not s.storage.input_uri.contains(where) and where != s.storage.input_uri:
            raise ValueError(f"{where} is not under the input location {s.storage.input_uri}")
        use_checkpoint = prefix is None
        after, etag = self._load_checkpoint() if use_checkpoint else ("", None)
        report = SweepReport(str(where), after, after, dry_run=dry_run)
        listed = list(self._list(where, after, self.limits.max_keys))
        report.listed = len(listed)
        report.complete = len(listed) < self.limits.max_keys
        report.next_after = "" if report.complete else listed[-1].key
        if listed:
            self._sweep(listed, after, report)
        if use_checkpoint and not dry_run:
            self._save_checkpoint(report, etag)
        log.info("%s", report.summary())
        return report

    def _sweep(self, listed: list[Listed], after: str, report: SweepReport) -> None:
        s = self.settings
        rel_of = s.storage.input_uri.key
        first_rel = after[len(rel_of) :] if after.startswith(rel_of) else ""
        last = max(_OUTCOME_SUFFIXES)  # of one input's outcomes, the one that sorts last
        bound = max(item.key[len(rel_of) :] + last for item in listed)
        outcomes = self._outcomes(first_rel, bound)
        now = self.clock()
        for item in listed:
            source = S3Uri(s.storage.input_uri.bucket, item.key)
            if not_an_input(s, source) is not None:
                continue  # the pipeline's own objects, "folders"
            if self._done(source, item, outcomes):
                report.findings[Finding.SCORED] += 1
            elif now - item.modified < self.limits.grace_seconds:
                report.findings[Finding.YOUNG] += 1
            elif len(report.queued) >= self.limits.max_enqueue:
                report.findings[Finding.OVER_CAP] += 1
            else:
                self._take(source, item, report, now)

    def _take(self, source: S3Uri, item: Listed, report: SweepReport, now: float) -> None:
        skipped: dict[str, Finding] = {}

        def skip(job: Job) -> str | None:
            rec = self.ledger.get(job.pipeline_id)
            why = in_progress(rec.data if rec else None, now, self.limits.requeue_after)
            if why is not None:
                skipped["why"] = Finding(why)
            return why

        try:
            done = take_in(
                self.settings,
                self.s3,
                self.app,
                source,
                etag=item.etag,
                size=item.size,
                skip=skip,
                dry_run=report.dry_run,
            )
        except Exception as exc:  # the next sweep tries again; one file never stops the rest
            log.warning("sweep could not queue %s: %s", source, exc)
            report.problems.append(f"{source}: {exc}")
            return
        if done.verdict is Intake.ENQUEUED:
            report.findings[Finding.ENQUEUED] += 1
            report.queued.append(str(source))
            log.info("sweep: %s had no outcome and no run: queued", source)
        elif done.verdict is Intake.REJECTED:
            report.findings[Finding.REJECTED] += 1
        elif done.verdict is Intake.GONE:
            report.findings[Finding.GONE] += 1
        else:
            report.findings[skipped.get("why", Finding.IN_PROGRESS)] += 1
