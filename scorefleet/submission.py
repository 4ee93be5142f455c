"""From an S3 object to a validated :class:`~scorefleet.job.Job` (shared by the Lambda,
``tasks.rescore`` and the CLI): read tags, apply fallbacks, refuse what must not run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scorefleet import images
from scorefleet.errors import Rejected
from scorefleet.job import Job, Ticket, pipeline_id
from scorefleet.s3uri import S3Uri
from scorefleet.settings import CLUSTER_NAME, DNS1123_LABEL, RejectBudget, Settings
from scorefleet.storage.s3io import S3Client, error_code, read_tags

#: The tags of a file's formats and columns (read by workers.scoring.formats.options).
DATA_TAGS = ("content_type", "output_format", "keep_columns", "model_columns", "drop_columns")
#: The tags the pipeline reads (read_tags maps the older names onto these).
USED_TAGS = ("model_image", "k8s_cluster", "k8s_namespace", "max_rejected_rows", *DATA_TAGS)

#: Under "scorefleet": the Lambda's own log configuration covers it.
log = logging.getLogger("scorefleet.submission")


def unused_tags(tags: Mapping[str, str]) -> list[str]:
    """Names of the tags scorefleet does not use (the older tool's
    ``k8singressurl``, a team's own labels)."""
    return sorted(k for k in tags if k not in USED_TAGS)


@dataclass(frozen=True)
class Identity:
    """What pins one upload of an object: its version id, or its ETag and
    LastModified on a bucket without versioning."""

    version_id: str | None
    etag: str | None
    last_modified: float | None
    size: int | None


def identify(
    s3: S3Client,
    source: S3Uri,
    *,
    version_id: str | None = None,
    etag: str | None = None,
    size: int | None = None,
) -> Identity | None:
    """The identity of the upload an event (or a rerun, or a sweep) is about.

    An event's ``versionId`` says it all. Without one (an unversioned bucket, or an
    event that lacks it), a HEAD *conditional on the event's ETag* gives the version
    id or the LastModified of exactly the upload with those bytes: it cannot pick up
    a different upload that came in since, as a plain HEAD could. ``None`` when that
    upload is gone (replaced by other bytes, or deleted): the newer upload has a
    notification of its own. Without an ETag (a rerun), the object's current upload.
    """
    if version_id:
        return Identity(version_id, etag.strip('"') if etag else None, None, size)
    cond: dict[str, Any] = {"IfMatch": f'"{etag.strip(chr(34))}"'} if etag else {}
    try:
        head = s3.head_object(Bucket=source.bucket, Key=source.key, **cond)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound", "412", "PreconditionFailed"}:
            return None
        raise
    return identity_of(head)


def identity_of(head: Mapping[str, Any], version_id: str | None = None) -> Identity:
    """The identity of an object from its HEAD (or GET) response."""
    version = head.get("VersionId") or version_id
    if version == "null":
        version = None
    modified = head.get("LastModified")
    return Identity(
        version_id=str(version) if version else None,
        etag=str(head.get("ETag", "")).strip('"') or None,
        last_modified=None if version or modified is None else modified.timestamp(),
        size=int(head["ContentLength"]) if head.get("ContentLength") is not None else None,
    )


def build_job(
    settings: Settings,
    source: S3Uri,
    tags: Mapping[str, str],
    *,
    version_id: str | None,
    etag: str | None,
    size: int | None,
    sequencer: str | None = None,
    last_modified: float | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> Job:
    """A job from the object's identity and tags, with the configured fallbacks
    for missing tags: its ticket, nothing learned yet. Not validated: see :func:`validate`."""
    pid = pipeline_id(source.bucket, source.key, version_id, etag, last_modified)
    ticket = Ticket(
        pipeline_id=pid,
        run_id=run_id or pid,
        bucket=source.bucket,
        key=source.key,
        version_id=version_id,
        etag=etag.strip('"') if etag else None,
        size=size,
        sequencer=sequencer,
        last_modified=last_modified if not version_id else None,
        model_image=tags.get("model_image") or settings.models.default_image,
        k8s_cluster=tags.get("k8s_cluster") or settings.kubernetes.default_cluster,
        k8s_namespace=tags.get("k8s_namespace") or settings.kubernetes.default_namespace,
        max_rejected_rows=tags.get("max_rejected_rows") or None,
        data_tags={k: tags[k] for k in DATA_TAGS if tags.get(k)},
        force=force,
    )
    return Job(ticket)


def validate(settings: Settings, job: Job) -> None:
    """Raise :class:`Rejected` with a message a data modeller can act on."""
    if not settings.storage.input_uri.contains(job.source):
        raise Rejected(f"{job.source} is not under the input location {settings.storage.input_uri}")
    image = job.model_image
    if not image:
        raise Rejected(
            "no model image: tag the file with model_image=<image> "
            "(or ask the operators to set SCOREFLEET_DEFAULT_MODEL_IMAGE)"
        )
    if not images.is_image_ref(image):
        raise Rejected(f"model_image {image!r} is not a valid container image reference")
    if not settings.models.image_allowed(image):
        allowed = ", ".join(settings.models.allowed_image_prefixes)
        raise Rejected(f"model image {image!r} is not allowed here (allowed prefixes: {allowed})")
    if settings.models.require_digest and not images.is_pinned(image):
        raise Rejected(images.unpinned(image))
    if not DNS1123_LABEL.match(job.k8s_namespace):
        raise Rejected(
            f"k8s_namespace {job.k8s_namespace!r} is not a valid namespace name "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    if not CLUSTER_NAME.match(job.k8s_cluster):
        raise Rejected(f"k8s_cluster {job.k8s_cluster!r} is not a valid cluster name")
    if job.max_rejected_rows is not None:
        try:
            RejectBudget.parse(job.max_rejected_rows)
        except ValueError as exc:
            raise Rejected(
                f"max_rejected_rows {job.max_rejected_rows!r} is not a row count (e.g. 10) "
                f"or a fraction of the file's rows (e.g. 0.001 or 0.1%): {exc}"
            ) from None
    # A cluster this process does not know (the Lambda knows the default one) is
    # refused by the workers' backend, which knows them all.
    namespaces = settings.kubernetes.namespaces_of(job.k8s_cluster)
    if namespaces is not None and job.k8s_namespace not in namespaces:
        raise Rejected(
            f"k8s_namespace {job.k8s_namespace!r} is not enabled for cluster "
            f"{job.k8s_cluster!r} (namespaces: {', '.join(namespaces)}); fix the file's "
            "k8s_namespace tag, or ask the operators to add the namespace "
            "(SCOREFLEET_K8S_NAMESPACES or the cluster's namespaces in SCOREFLEET_K8S_CLUSTERS)"
        )


def job_for_object(
    settings: Settings,
    s3: S3Client,
    source: S3Uri,
    identity: Identity,
    *,
    sequencer: str | None = None,
    overrides: Mapping[str, str | None] | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> Job:
    """Read the upload's tags and build its job (overrides win over tags)."""
    tags = read_tags(s3, source.bucket, source.key, identity.version_id)
    ignored = unused_tags(tags)
    if ignored:
        log.info(
            "ignoring tag%s %s of %s: not used by scorefleet (it reads %s)",
            "s" if len(ignored) > 1 else "",
            ", ".join(ignored),
            source,
            ", ".join(USED_TAGS),
        )
    tags.update({k: v for k, v in (overrides or {}).items() if v})
    return build_job(
        settings,
        source,
        tags,
        version_id=identity.version_id,
        etag=identity.etag,
        size=identity.size,
        sequencer=sequencer,
        last_modified=identity.last_modified,
        run_id=run_id,
        force=force,
    )
