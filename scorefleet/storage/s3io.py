"""All S3 I/O: clients, tags, streaming reads, atomic publishing (a multipart upload
written as a stream: scorefleet.storage.multipart, which the Lambda does not load).

Endpoints come from boto3's own configuration (``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` point it at the local emulator), credentials from the
default chain (IRSA on EKS). Nothing here holds a whole object in memory.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from scorefleet import aws
from scorefleet.errors import BadInput
from scorefleet.s3uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as S3Client  # noqa: PLC0414 - re-export
else:
    S3Client = Any

log = logging.getLogger(__name__)

#: Objects up to this size are published with a single CopyObject (atomic with tags).
SINGLE_COPY_LIMIT = 5 * 1024**3

#: Old tag names still accepted on input objects, mapped to the current ones.
TAG_ALIASES = {
    "modelimagename": "model_image",
    "k8scluster": "k8s_cluster",
    "k8snamespace": "k8s_namespace",
}


def client(region: str | None = None) -> S3Client:
    """One thread-safe S3 client per process (and region, and endpoint: boto3 reads
    ``AWS_ENDPOINT_URL`` when a client is made, so a process whose environment points
    elsewhere later, a test's, gets a client of the new endpoint)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _client(region, endpoint)


@functools.cache
def _client(region: str | None, endpoint: str | None) -> S3Client:
    cfg = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    s3: S3Client = aws.client("s3", config=cfg)
    return s3


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def version_args(version_id: str | None) -> dict[str, Any]:
    return {"VersionId": version_id} if version_id else {}


def is_precondition_failure(exc: ClientError) -> bool:
    return error_code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def get_json(s3: S3Client, uri: S3Uri) -> tuple[Any, str] | None:
    """(the JSON document at ``uri``, its ETag); ``None`` when there is none."""
    try:
        resp = s3.get_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "404"}:
            return None
        raise
    return json.loads(resp["Body"].read()), str(resp["ETag"])


def put_json(s3: S3Client, uri: S3Uri, data: Any, *, if_match: str | None) -> bool:
    """Write a small JSON document only if it is still the version ``if_match`` names
    (``None``: only if there is none yet); False if someone else wrote first."""
    cond: dict[str, Any] = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
    try:
        s3.put_object(
            Bucket=uri.bucket,
            Key=uri.key,
            Body=json.dumps(data).encode(),
            ContentType="application/json",
            **cond,
        )
    except ClientError as exc:
        if is_precondition_failure(exc):
            return False
        raise
    return True


# ------------------------------------------------------------------------ tags
def encode_tags(tags: Mapping[str, object]) -> str:
    """URL-encoded ``k=v&k=v`` form used by PutObject/CopyObject ``Tagging``."""
    return urllib.parse.urlencode({k: str(v) for k, v in tags.items()})


def sanitize_tag_value(value: str) -> str:
    """S3 tag values allow letters, digits, spaces and ``+ - = . _ : / @`` (max 256)."""
    allowed = set("+-=._:/@ ")
    return "".join(c if c.isalnum() or c in allowed else "_" for c in value)[:256]


def read_tags(s3: S3Client, bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    """Object tags with the old names mapped to the new ones (new names win)."""
    resp = s3.get_object_tagging(Bucket=bucket, Key=key, **version_args(version_id))
    raw = {t["Key"].strip(): t["Value"].strip() for t in resp.get("TagSet", [])}
    tags: dict[str, str] = {}
    for old, new in TAG_ALIASES.items():
        if raw.get(old):
            tags[new] = raw[old]
    tags.update({k: v for k, v in raw.items() if k not in TAG_ALIASES and v})
    return tags


# ----------------------------------------------------------------------- reads
def head(s3: S3Client, uri: S3Uri, version_id: str | None = None) -> dict[str, Any] | None:
    try:
        return dict(s3.head_object(Bucket=uri.bucket, Key=uri.key, **version_args(version_id)))
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


@dataclass
class SourceStream:
    chunks: Iterator[bytes]
    content_length: int
    content_encoding: str
    content_type: str = ""
    close: Callable[[], None] = lambda: None
    etag: str = ""


def open_source(
    s3: S3Client,
    uri: S3Uri,
    version_id: str | None,
    etag: str | None,
    last_modified: float | None = None,
    chunk_size: int = 1024 * 1024,
    start: int = 0,
) -> SourceStream:
    """Stream one exact upload of the input: by version id, else by ETag and (when
    known) LastModified, so the same bytes uploaded again later are not taken for it.
    ``start``: from that byte on (a ranged GET)."""
    kwargs: dict[str, Any] = version_args(version_id)
    if start:
        kwargs["Range"] = f"bytes={start}-"
    if not version_id and etag:
        kwargs["IfMatch"] = etag if etag.startswith('"') else f'"{etag}"'
        if last_modified is not None:
            kwargs["IfUnmodifiedSince"] = datetime.fromtimestamp(last_modified, UTC)
    try:
        resp = s3.get_object(Bucket=uri.bucket, Key=uri.key, **kwargs)
    except ClientError as exc:
        code = error_code(exc)
        if code in {"NoSuchKey", "NoSuchVersion", "404"}:
            raise BadInput(f"{uri} no longer exists (deleted before it could be scored)") from exc
        if code in {"PreconditionFailed", "412"}:
            raise BadInput(
                f"{uri} was overwritten after it was queued; the newer version is scored on its own"
            ) from exc
        raise
    body = resp["Body"]
    return SourceStream(
        chunks=body.iter_chunks(chunk_size),
        content_length=int(resp.get("ContentLength", 0)),
        content_encoding=str(resp.get("ContentEncoding", "") or ""),
        content_type=str(resp.get("ContentType", "") or ""),
        close=body.close,
        etag=str(resp.get("ETag", "") or "").strip('"'),
    )


# ---------------------------------------------------------------------- writes
def abort_dead_uploads(
    s3: S3Client,
    prefix: S3Uri,
    writers: Callable[[], Mapping[str, float]],
    unregistered_after: float,
) -> int:
    """Abort the unfinished multipart uploads under ``prefix`` whose writer is dead;
    returns how many.

    ``writers()`` gives the registered writers (staging key -> lease, epoch seconds).
    It is read *after* the uploads are listed: a writer registers before it starts
    its upload, so every upload listed is in what it returns if its writer is of
    this kind. An upload whose writer's lease has expired is aborted; a live one is
    never, however long it has run. One of no registered writer (written before
    writers were recorded) is aborted once older than ``unregistered_after`` s.
    """
    uploads = s3.list_multipart_uploads(Bucket=prefix.bucket, Prefix=prefix.key).get("Uploads", [])
    if not uploads:
        return 0
    leases = writers()
    now = time.time()
    n = 0
    for up in uploads:
        lease = leases.get(up["Key"])
        dead = (
            lease < now
            if lease is not None
            else up["Initiated"].timestamp() < now - (unregistered_after)
        )
        if dead:
            s3.abort_multipart_upload(Bucket=prefix.bucket, Key=up["Key"], UploadId=up["UploadId"])
            n += 1
    return n


def list_prefix(s3: S3Client, prefix: S3Uri) -> list[S3Uri]:
    """Every object under ``prefix`` (a run's staging objects)."""
    return [
        S3Uri(prefix.bucket, o["Key"])
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=prefix.bucket, Prefix=prefix.key
        )
        for o in page.get("Contents", [])
    ]


def delete_prefix(s3: S3Client, prefix: S3Uri) -> int:
    """Delete every object under ``prefix`` (a run's staging objects); returns how many."""
    found = list_prefix(s3, prefix)
    delete_many(s3, found)
    return len(found)


def delete_many(s3: S3Client, uris: list[S3Uri]) -> list[S3Uri]:
    """Delete these objects in as few requests as S3 allows: one DeleteObjects per
    bucket (and per 1,000 keys). A failed request raises; returns the objects S3
    said it could not delete (logged), which a later run or the lifecycle rule removes."""
    by_bucket: dict[str, list[str]] = {}
    for uri in uris:
        by_bucket.setdefault(uri.bucket, []).append(uri.key)
    failed: list[S3Uri] = []
    for bucket, keys in by_bucket.items():
        for i in range(0, len(keys), 1000):
            objects: list[Any] = [{"Key": k} for k in keys[i : i + 1000]]
            resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
            for err in resp.get("Errors", []):
                log.warning("could not delete s3://%s/%s: %s", bucket, err.get("Key"), err)
                failed.append(S3Uri(bucket, str(err.get("Key"))))
    return failed


def publish_copy(
    s3: S3Client,
    staging: S3Uri,
    dest: S3Uri,
    *,
    tags: Mapping[str, object],
    metadata: Mapping[str, str],
    content_type: str = "text/csv",
    size: int | None = None,
) -> None:
    """Make ``dest`` appear in one step, already tagged: a server-side copy of the
    completed staging object. Up to 5 GiB that is a single atomic CopyObject (made
    directly when the caller knows the size: the managed copy would HEAD it first)."""
    extra: dict[str, Any] = {
        "Tagging": encode_tags(tags),
        "TaggingDirective": "REPLACE",
        "Metadata": dict(metadata),
        "MetadataDirective": "REPLACE",
        "ContentType": content_type,
    }
    if size is not None and size < SINGLE_COPY_LIMIT:
        s3.copy_object(
            CopySource={"Bucket": staging.bucket, "Key": staging.key},
            Bucket=dest.bucket,
            Key=dest.key,
            **extra,
        )
        return
    s3.copy(
        {"Bucket": staging.bucket, "Key": staging.key},
        dest.bucket,
        dest.key,
        ExtraArgs=extra,
        Config=TransferConfig(multipart_threshold=SINGLE_COPY_LIMIT, max_concurrency=4),
    )


def put_text(
    s3: S3Client,
    dest: S3Uri,
    text: str,
    *,
    tags: Mapping[str, object],
    metadata: Mapping[str, str] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    """A small object written in one PUT (atomic), with its tags."""
    s3.put_object(
        Bucket=dest.bucket,
        Key=dest.key,
        Body=text.encode("utf-8"),
        ContentType=content_type,
        Tagging=encode_tags(tags),
        Metadata=dict(metadata or {}),
    )


def delete_quietly(s3: S3Client, uri: S3Uri) -> None:
    try:
        s3.delete_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as exc:
        log.warning("could not delete %s: %s", uri, exc)
