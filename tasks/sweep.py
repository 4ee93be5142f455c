"""``tasks.sweep`` (beat, every ``SCOREFLEET_SWEEP_INTERVAL`` seconds): queue the files
whose notification never came (workers/ops/sweep.py)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery import Task, shared_task

from scorefleet.s3uri import S3Uri
from workers import runtime
from workers.ops.sweep import Sweep, SweepLimits
from workers.process import metrics

log = logging.getLogger(__name__)


@shared_task(name="tasks.sweep", bind=True, ignore_result=True)
def sweep(
    self: Task,
    prefix: str | None = None,
    grace_seconds: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """One sweep from the checkpoint on (a failure: the next beat tries again). By
    hand: ``celery -A workers.app call tasks.sweep --kwargs '{"prefix": "s3://b/in/2026/"}'``
    sweeps that part of the input prefix from its start (the checkpoint untouched)."""
    rt = runtime.current()
    s = rt.settings
    limits = SweepLimits.from_settings(s)
    if grace_seconds is not None:
        limits = dataclasses.replace(limits, grace_seconds=float(grace_seconds))
    where = S3Uri.parse(prefix).as_prefix() if prefix else None
    report = Sweep(s, rt.s3, self.app, limits).run(where, dry_run=dry_run)
    for finding, n in report.findings.items():
        metrics.SWEEP_FINDINGS.labels(finding.value).inc(n)
    return report.to_json()
