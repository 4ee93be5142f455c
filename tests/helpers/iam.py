"""The IAM actions and resources of S3 requests recorded by moto (tests/deploy/
test_iam_in_use.py): what an S3 request needs of a role, as the S3 documentation's
"Actions, resources, and condition keys for Amazon S3" and its per-operation
permission notes list it (CopyObject reads its source, PutObject with tags needs
PutObjectTagging, DeleteObjects needs DeleteObject on each key, a multipart upload
is PutObject and its abort AbortMultipartUpload)."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def credential(entry: dict[str, Any]) -> str:
    """The access key id that signed a recorded request ('' when unsigned)."""
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    found = re.search(r"Credential=([A-Z0-9]+)/", headers.get("authorization", ""))
    return found.group(1) if found else ""


def is_s3(entry: dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    return "/s3/aws4_request" in headers.get("authorization", "")


def s3_calls(entry: dict[str, Any]) -> set[tuple[str, str]]:
    """(IAM action, resource ARN) pairs a recorded path-style S3 request needs."""
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    url = urlsplit(str(entry.get("url")))
    bucket, _, key = url.path.lstrip("/").partition("/")
    key = unquote(key)
    query = parse_qs(url.query, keep_blank_values=True)
    method = str(entry.get("method"))
    obj = f"arn:aws:s3:::{bucket}/{key}"
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method == "POST" and "delete" in query:
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode("utf-8", "replace")
            keys = re.findall(r"<Key>(.*?)</Key>", body)
            return {("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{unquote(k)}") for k in keys}
        if method == "GET" and "uploads" in query:
            return {("s3:ListBucketMultipartUploads", bucket_arn)}
        if method in ("GET", "HEAD") and "location" in query:
            return {("s3:GetBucketLocation", bucket_arn)}
        if method in ("GET", "HEAD"):
            return {("s3:ListBucket", bucket_arn)}
        return {(f"s3:{method}Bucket?", bucket_arn)}  # never allowed: flagged
    version = "versionId" in query
    if "tagging" in query:
        if method == "GET":
            return {("s3:GetObjectVersionTagging" if version else "s3:GetObjectTagging", obj)}
        if method == "PUT":
            return {("s3:PutObjectTagging", obj)}
        return {("s3:DeleteObjectTagging", obj)}
    if method in ("GET", "HEAD"):
        return {("s3:GetObjectVersion" if version else "s3:GetObject", obj)}
    if method == "DELETE":
        if "uploadId" in query:
            return {("s3:AbortMultipartUpload", obj)}
        return {("s3:DeleteObjectVersion" if version else "s3:DeleteObject", obj)}
    if method in ("PUT", "POST"):  # PutObject, UploadPart, Create/CompleteMultipartUpload
        needs = {("s3:PutObject", obj)}
        if headers.get("x-amz-tagging") or headers.get("x-amz-tagging-directive") == "REPLACE":
            needs.add(("s3:PutObjectTagging", obj))
        source = headers.get("x-amz-copy-source")
        if source:
            src = unquote(source.split("?", 1)[0]).lstrip("/")
            action = "s3:GetObjectVersion" if "versionId=" in source else "s3:GetObject"
            needs.add((action, f"arn:aws:s3:::{src}"))
            if headers.get("x-amz-tagging-directive", "COPY") == "COPY":
                needs.add(("s3:GetObjectTagging", f"arn:aws:s3:::{src}"))
        return needs
    return {(f"s3:{method}?", obj)}
