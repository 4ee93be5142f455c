"""Publishing a file's outcome: ``<name>.scoreout`` or ``<name>.error``, never both,
and ``<name>.rejected`` beside a ``.scoreout`` when the model refused rows the file
could lose (workers/scoring/rejects.py).

The latest run for a key wins: publishing one outcome removes the other, so a
file that failed and was fixed by a rerun does not keep its stale ``.error`` (nor a
``.rejected`` of an earlier run). An ``.error`` is written only once the earlier
``.scoreout`` is gone; a ``.scoreout``'s publication deletes the earlier ``.error`` in
the request that deletes its staging objects. An outcome S3 refuses to delete (a
role without ``s3:DeleteObject``) fails the step or the event, to be retried
(:class:`OutcomeNotRemoved`), instead of leaving both (issue 24).
"""

from __future__ import annotations

import logging
import time
import urllib.parse

from botocore.exceptions import ClientError

from scorefleet.errors import TransientError
from scorefleet.job import Failure, Job
from scorefleet.provenance import Provenance, before_any_model, fit
from scorefleet.s3uri import ERROR_SUFFIX, REJECTED_SUFFIX, SCOREOUT_SUFFIX, S3Uri, output_uri
from scorefleet.settings import Settings
from scorefleet.storage import errordoc
from scorefleet.storage.ledger import rejected_staging_key
from scorefleet.storage.s3io import (
    S3Client,
    delete_many,
    head,
    publish_copy,
    put_text,
    sanitize_tag_value,
)

log = logging.getLogger(__name__)


def scoreout_location(settings: Settings, source: S3Uri) -> S3Uri:
    return output_uri(
        settings.storage.input_uri, settings.storage.output_uri, source, SCOREOUT_SUFFIX
    )


def rejected_location(settings: Settings, source: S3Uri) -> S3Uri:
    return output_uri(
        settings.storage.input_uri, settings.storage.output_uri, source, REJECTED_SUFFIX
    )


def error_location(settings: Settings, source: S3Uri) -> S3Uri:
    return output_uri(settings.storage.input_uri, settings.storage.error_uri, source, ERROR_SUFFIX)


def error_location_or_none(settings: Settings, source: S3Uri) -> S3Uri | None:
    """Where a rejected file's ``.error`` goes; ``None`` when the file is not under
    the input prefix (then there is no sensible place: it is only logged)."""
    if not settings.storage.input_uri.contains(source):
        return None
    return error_location(settings, source)


def _common_tags(job: Job) -> dict[str, object]:
    tags: dict[str, object] = {
        "model_image": sanitize_tag_value(job.model_image or "none"),
        "k8s_cluster": sanitize_tag_value(job.k8s_cluster),
        "k8s_namespace": sanitize_tag_value(job.k8s_namespace),
        "pipeline_id": job.run_id,
    }
    start = job.model.started_at or job.enqueued_at
    tags["duration_ms"] = max(0, round((time.time() - start) * 1000))
    return tags


def _metadata(job: Job, provenance: Provenance) -> dict[str, str]:
    """The outcome's metadata: its source's identity, its provenance, its timings;
    within S3's 2 KB (:func:`scorefleet.provenance.fit`)."""
    meta = {
        # S3 metadata is ASCII only: the URI is percent-encoded (and shortened from its
        # start if the whole would not fit: scorefleet.provenance.fit)
        "source-uri": urllib.parse.quote(str(job.source), safe=":/"),
        "source-version": job.version_id or "",
        "source-etag": job.etag or "",
        "source-last-modified": _stamp(job.last_modified),
        "pipeline-id": job.pipeline_id,
        "run-id": job.run_id,
        **provenance.metadata(),
    }
    if job.model.start_ms is not None:
        meta["model-start-ms"] = str(job.model.start_ms)
    # time between steps: queue hops, and waiting for a free worker slot in a busy fleet
    meta["wait-ms"] = str(round(job.waited * 1000))
    meta["enqueued-at"] = f"{job.enqueued_at:.3f}"
    if job.output.seconds is not None:
        meta["score-ms"] = str(round(job.output.seconds * 1000))
    return fit({k: v for k, v in meta.items() if v})


def _stamp(last_modified: float | None) -> str:
    return "" if last_modified is None else f"{last_modified:.0f}"


def already_scored(settings: Settings, s3: S3Client, job: Job) -> bool:
    """Is there a ``.scoreout`` made from this very upload of the source? (Not just
    the same bytes: the same bytes uploaded again are a new upload, scored again.)"""
    meta = head(s3, scoreout_location(settings, job.source))
    if meta is None:
        return False
    m = meta.get("Metadata", {})
    if job.version_id:
        return bool(m.get("source-version") == job.version_id)
    return bool(
        job.etag
        and m.get("source-etag") == job.etag
        and m.get("source-last-modified", "") == _stamp(job.last_modified)
    )


def newer_source(s3: S3Client, job: Job) -> str | None:
    """If the source object has been replaced since this job was queued, say by what
    (its outcome is then the newer upload's to publish); ``None`` otherwise, also
    when the source has been deleted. Without versions, an upload of the same bytes
    (A -> B -> A) is told apart by its LastModified."""
    current = head(s3, job.source)
    if current is None:
        return None
    if job.version_id:
        version = current.get("VersionId")
        return None if version in (None, job.version_id) else f"version {version}"
    etag = str(current.get("ETag", "")).strip('"')
    if job.etag and etag != job.etag:
        return f"ETag {etag}"
    modified = current.get("LastModified")
    if (
        job.last_modified is not None
        and modified is not None
        and modified.timestamp() > job.last_modified + 0.5
    ):
        return f"an upload of the same bytes at {modified.isoformat()}"
    return None


def _published_by(s3: S3Client, dest: S3Uri, job: Job) -> bool:
    """Did this very run already publish ``dest`` (a redelivered upload)?"""
    meta = head(s3, dest)
    return meta is not None and meta.get("Metadata", {}).get("run-id") == job.run_id


def publish_scoreout(
    settings: Settings,
    s3: S3Client,
    job: Job,
    staging: S3Uri,
    *,
    maybe_done: bool = True,
    then_delete: tuple[S3Uri, ...] = (),
    provenance: Provenance | None = None,
) -> S3Uri:
    """``maybe_done``: this publication may have happened already (a redelivered or
    retried upload): look before copying. ``then_delete``: objects to delete once it
    is published (the run's staging objects), in the same request as the other
    outcomes of the file (issue 17: one DeleteObjects instead of three requests).
    ``provenance``: the model that made it (:mod:`scorefleet.provenance`)."""
    out = job.output
    prov = provenance or before_any_model(settings, job)
    dest = scoreout_location(settings, job.source)
    rejected = rejected_location(settings, job.source)
    if out.rejected_rows:
        # first: whoever sees the .scoreout finds its .rejected there already
        part = S3Uri(staging.bucket, rejected_staging_key(staging.key))
        _copy_once(
            s3,
            job,
            part,
            rejected,
            {"rows": out.rejected_rows},
            out.rejected_media_type,
            None,
            maybe_done,
            prov,
        )
    tags: dict[str, object] = {"rows": out.rows or 0}
    if out.rejected_rows:
        tags["rejected_rows"] = out.rejected_rows
    _copy_once(s3, job, staging, dest, tags, out.media_type, out.size, maybe_done, prov)
    stale = [error_location(settings, job.source)]
    if not out.rejected_rows:
        stale.append(rejected)  # an earlier run's
    # in the same request as the staging objects; a stale .error that stays is an error
    # of this step (retried: a retry finds the .scoreout published and deletes again)
    remove_stale(s3, stale, also=then_delete)
    return dest


def remove_stale(s3: S3Client, stale: list[S3Uri], also: tuple[S3Uri, ...] = ()) -> None:
    """Delete an earlier run's outcomes (``stale``; ``also``: objects deleted in the
    same request, whose failure is only logged). A file never keeps a ``.scoreout``
    beside an ``.error``: :class:`OutcomeNotRemoved` (transient, the step or the event
    is retried) when S3 refused to delete one of ``stale``, as it does for a role
    without ``s3:DeleteObject`` there (DeleteObjects answers 200 with the refusals)."""
    try:
        failed = delete_many(s3, [*stale, *also])
    except ClientError as exc:
        raise OutcomeNotRemoved(
            f"could not delete {', '.join(map(str, stale))}: {exc}; retrying"
        ) from exc
    left = [u for u in failed if u in stale]
    if left:
        raise OutcomeNotRemoved(
            f"could not delete {', '.join(map(str, left))}, an earlier outcome of this file: "
            "a file never keeps a .scoreout beside an .error. The role writing outcomes "
            "needs s3:DeleteObject on the output (and error) prefix (deploy/aws.yaml)"
        )


class OutcomeNotRemoved(TransientError):
    """An earlier outcome of the file could not be deleted (its step is retried)."""

    kind = "OutcomeNotRemoved"


def _copy_once(
    s3: S3Client,
    job: Job,
    part: S3Uri,
    dest: S3Uri,
    tags: dict[str, object],
    content_type: str | None,
    size: int | None,
    maybe_done: bool,
    provenance: Provenance,
) -> None:
    """Publish the staged ``part`` at ``dest`` with the run's tags, unless this run
    published it already (``maybe_done``: a redelivered or retried upload)."""
    if maybe_done and _published_by(s3, dest, job):
        log.info("%s was already published by this run", dest)
        return
    publish_copy(
        s3,
        part,
        dest,
        tags={**_common_tags(job), **tags},
        metadata=_metadata(job, provenance),
        content_type=content_type or "text/csv",
        size=size,
    )


def publish_error(
    settings: Settings,
    s3: S3Client,
    job: Job,
    failure: Failure,
    *,
    maybe_done: bool = True,
    provenance: Provenance | None = None,
) -> S3Uri | None:
    """``provenance``: the model that ran, if one did (else what would have run:
    :func:`scorefleet.provenance.before_any_model`)."""
    dest = error_location_or_none(settings, job.source)
    if dest is None:
        log.error(
            "not scoring %s: %s (no .error written: outside the input prefix)",
            job.source,
            failure.message,
        )
        return None
    text = errordoc.render(
        source=job.source,
        version=job.version_id,
        model_image=job.model_image,
        k8s_cluster=job.k8s_cluster,
        k8s_namespace=job.k8s_namespace,
        pipeline_id=job.run_id,
        failure=failure,
    )
    # the earlier .scoreout first: if it cannot go, no .error beside it (the event or
    # the step is retried, and the file has neither for that while, never both)
    remove_stale(
        s3, [scoreout_location(settings, job.source), rejected_location(settings, job.source)]
    )
    if maybe_done and _published_by(s3, dest, job):
        log.info("%s was already published by this run", dest)
    else:
        tags = _common_tags(job)
        tags["error_step"] = failure.step
        prov = provenance or before_any_model(settings, job)
        put_text(s3, dest, text, tags=tags, metadata=_metadata(job, prov))
    return dest
