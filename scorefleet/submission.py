"""From an S3 object to a validated :class:`~scorefleet.job.Job` (shared by the Lambda,
``tasks.rescore`` and the CLI): read tags, apply fallbacks, refuse what must not run."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scorefleet import images
from scorefleet.errors import Rejected
from scorefleet.job import Job, Ticket, pipeline_id
from scorefleet.s3uri import S3Uri
from scorefleet.settings import CLUSTER_NAME, DNS1123_LABEL, RejectBudget, Settings
from scorefleet.storage.s3io import TAG_ALIASES, S3Client, error_code, read_tags

#: The tags a worker resolves against the image's catalog entry, carried in the job's
#: ``data_tags``: its formats and columns (workers.scoring.formats.options) and the
#: model replicas it asks for (workers.backends.replicas).
DATA_TAGS = (
    "content_type",
    "output_format",
    "keep_columns",
    "model_columns",
    "drop_columns",
    "csv_header",
    "replicas",
)
#: The tags the pipeline reads (read_tags maps the older names onto these): the one
#: list of them (the misnamed-tag rule, ``scorefleet submit --tag`` and the docs' table
#: follow it).
USED_TAGS = ("model_image", "k8s_cluster", "k8s_namespace", "max_rejected_rows", *DATA_TAGS)

#: Under "scorefleet": the Lambda's own log configuration covers it.
log = logging.getLogger("scorefleet.submission")


def unused_tags(tags: Mapping[str, str]) -> list[str]:
    """Names of the tags scorefleet does not use (the older tool's
    ``k8singressurl``, a team's own labels)."""
    return sorted(k for k in tags if k not in USED_TAGS)


# ------------------------------------------------------------ misnamed tags
def _folded(name: str) -> str:
    """A tag name as the rule compares it: lower case, ``-``, ``.`` and spaces as ``_``."""
    return re.sub(r"[-. ]", "_", name.strip().casefold())


def edits(a: str, b: str) -> int:
    """Edits (a character added, dropped or changed, or two neighbours swapped) that
    turn ``a`` into ``b``: the optimal string alignment distance."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[len(b)]


def meant_tag(name: str) -> str | None:
    """The tag scorefleet reads that ``name`` is a near miss of, if it is one; None
    for a tag scorefleet reads and for a name of the user's own.

    The rule (docs/tags.md): compared in lower case with ``-``, ``.`` and
    spaces read as ``_``, a name that is a tag scorefleet reads (or one of their older
    names), or within one edit of one, or two edits of one of 13 characters or more
    (a letter added, dropped, changed, or two swapped), is taken for that tag."""
    if name in USED_TAGS or name in TAG_ALIASES:
        return None
    folded = _folded(name)
    best: tuple[int, str] | None = None
    for known in (*USED_TAGS, *TAG_ALIASES):
        n = edits(folded, known)
        if n <= (2 if len(known) >= 13 else 1) and (best is None or n < best[0]):
            best = (n, TAG_ALIASES.get(known, known))
    return best[1] if best else None


def misnamed_tags(tags: Mapping[str, str], meant_given: Iterable[str] = ()) -> dict[str, str]:
    """The file's tags that are near misses of tags scorefleet reads: name -> the tag
    meant. ``meant_given``: tags a rerun sets itself (their near misses are moot)."""
    given = set(meant_given)
    found = {name: meant_tag(name) for name in tags}
    return {name: meant for name, meant in sorted(found.items()) if meant and meant not in given}


class MisnamedTag(Rejected):
    """The file carries a tag whose name is a near miss of one scorefleet reads: it
    is refused, so that a typo never falls back silently (``job``: the file's job as
    its tags make it, for its ``.error``)."""

    def __init__(self, job: Job, misnamed: Mapping[str, str]) -> None:
        names = ", ".join(f"{name!r} (did you mean {meant!r}?)" for name, meant in misnamed.items())
        plural = len(misnamed) > 1
        super().__init__(
            f"tag{'s' if plural else ''} {names} {'are' if plural else 'is'} not "
            f"{'tags' if plural else 'a tag'} scorefleet reads, and so close to one that "
            "it is taken for a typo: the file is not scored with a fallback instead. Fix "
            "the tag's name (scorefleet submit --tag NAME=VALUE, or aws s3api "
            "put-object-tagging) and upload or rerun the file. Tags of your own are "
            "welcome when their names are not this close to one scorefleet reads "
            f"({', '.join(USED_TAGS)})"
        )
        self.job = job
        self.misnamed = dict(misnamed)


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
    """Read the upload's tags and build its job (overrides win over tags).

    Raises :class:`MisnamedTag` (a :class:`Rejected`, with the job) when a tag's name
    is a near miss of one scorefleet reads (:func:`meant_tag`), unless an override
    sets the tag it meant."""
    tags = read_tags(s3, source.bucket, source.key, identity.version_id)
    misnamed = misnamed_tags(tags, [k for k, v in (overrides or {}).items() if v])
    ignored = [k for k in unused_tags(tags) if k not in misnamed]
    if ignored:
        log.info(
            "ignoring tag%s %s of %s: not used by scorefleet (it reads %s)",
            "s" if len(ignored) > 1 else "",
            ", ".join(ignored),
            source,
            ", ".join(USED_TAGS),
        )
    tags.update({k: v for k, v in (overrides or {}).items() if v})
    job = build_job(
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
    if misnamed:
        raise MisnamedTag(job, misnamed)
    return job
