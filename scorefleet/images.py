"""Container image references and the allowlist of image prefixes.

An image reference is ``[registry[:port]/]path[:tag][@sha256:<digest>]``, checked in
ASCII to the very end of the string (``re.fullmatch`` with ``re.ASCII``: ``$`` would
accept a trailing newline and ``\\w`` non-ASCII letters).

An allowed prefix matches an image only at a boundary, so that
``123.dkr.ecr.eu-west-1.amazonaws.com`` does not allow
``123.dkr.ecr.eu-west-1.amazonaws.com.evil.example/x`` (another registry) and
``…/models`` does not allow ``…/models-evil/x``:

* a prefix ending in ``/``, ``:`` or ``@`` allows what follows it;
* a repository path (``reg/models``, ``reg.example``) allows itself, what lies
  below it (``/``), its tags (``:``) and its digests (``@``);
* a prefix with a tag (``reg/models/iris:1``) allows itself and its digests only.

A prefix that would be ambiguous is refused at start-up (:func:`check_prefix`):
one that ends inside a name component (``…/models-``), has characters no image can
have, or is one path segment with a colon (``localhost:5000``: a registry's port,
or a tag? write ``localhost:5000/``).

The same grammar is in the chart's ``values.schema.json`` and in
``deploy/aws.yaml``'s ``AllowedImagePrefixes``: :data:`PREFIX_PATTERN` is the
regular expression both use (tests/unit/test_images.py checks they agree).

Images by digest only (``SCOREFLEET_REQUIRE_IMAGE_DIGEST``): a tag can be moved to
other bytes by whoever may push to the registry, a digest cannot. With the option on,
a reference must end in ``@sha256:<64 hex>`` (:func:`is_pinned`; a tag before it is
allowed and ignored by the runtime), and :func:`unpinned` says how to find the digest
of the tag that was given. The Lambda, the sweep, ``tasks.rescore`` and every step
refuse alike (:func:`scorefleet.submission.validate`).
"""

from __future__ import annotations

import re

#: One path component: lowercase letters and digits, with ``.``, ``_``, ``__`` or
#: dashes between them (the distribution reference grammar).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: The first component may be a registry host with a port.
_FIRST = rf"{_COMPONENT}(?::[0-9]{{1,5}})?"
_NAME = rf"{_FIRST}(?:/{_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"

IMAGE_REF = re.compile(rf"{_NAME}(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)

#: An allowed prefix (without anchors: the schema and CloudFormation add theirs).
PREFIX_PATTERN = (
    rf"{_FIRST}(?:/{_COMPONENT})*/"  # a registry or a folder of repositories
    rf"|{_FIRST}(?:/{_COMPONENT})+(?::|@|:{_TAG}@?|(?::{_TAG})?@{_DIGEST})?"  # a repository
    rf"|{_COMPONENT}@?"  # one segment without a colon: a registry host or a repository
)
_PREFIX = re.compile(PREFIX_PATTERN, re.ASCII)
ANY = "*"
MAX_IMAGE_LENGTH = 512
_PINNED = re.compile(rf"@{_DIGEST}\Z", re.ASCII)
#: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:<tag>]
_ECR = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com"
    r"/(?P<repository>[^:@]+)(?::[^@]+)?\Z",
    re.ASCII,
)


def is_image_ref(image: str) -> bool:
    """Is ``image`` a container image reference (ASCII, nothing after it)?"""
    return len(image) <= MAX_IMAGE_LENGTH and IMAGE_REF.fullmatch(image) is not None


def is_pinned(image: str) -> bool:
    """Is ``image`` a valid reference that names its bytes (``…@sha256:<64 hex>``)?"""
    return is_image_ref(image) and _PINNED.search(image) is not None


def unpinned(image: str) -> str:
    """Why ``image`` is refused when images run by digest only, and how to find the
    digest of its tag (for ECR, the exact ``aws ecr`` command)."""
    repository, tag = image, "latest"
    if ":" in image.rsplit("/", 1)[-1]:
        repository, tag = image.rsplit(":", 1)
    ecr = _ECR.match(image)
    if ecr:
        how = (
            f"aws ecr describe-images --region {ecr['region']} --registry-id {ecr['account']} "
            f"--repository-name {ecr['repository']} --image-ids imageTag={tag} "
            "--query 'imageDetails[0].imageDigest' --output text"
        )
    else:
        how = f"crane digest {repository}:{tag}"
    return (
        f"model image {image!r} is not pinned by digest, and this deployment runs images "
        "by digest only (SCOREFLEET_REQUIRE_IMAGE_DIGEST): tag the file with "
        f"model_image={repository}@sha256:<64 hex>. The digest of the tag: `{how}` "
        f"(or `docker buildx imagetools inspect {repository}:{tag}`); make sure it is "
        "the image that was reviewed"
    )


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is an unambiguous allowed prefix (or ``*``); ValueError saying
    why not otherwise."""
    if prefix == ANY:
        return prefix
    if _PREFIX.fullmatch(prefix):
        return prefix
    if not prefix.isascii() or re.search(r"\s", prefix):
        why = "has characters no image reference can have (spaces, non-ASCII)"
    elif ANY in prefix:
        why = "'*' is only allowed on its own (any image)"
    elif "/" not in prefix.rstrip("/") and ":" in prefix:
        why = (
            "is ambiguous: one path segment with a colon is a registry port or a tag; "
            "write 'host:port/' for a registry, or the repository path before ':<tag>'"
        )
    elif re.search(r"[._-]$", prefix):
        why = "ends inside a name component; end it with '/', or with the whole name"
    else:
        why = (
            "is not the start of an image reference at a boundary (lowercase "
            "registry/path, ending in '/', a whole name, ':', '@', or a tag)"
        )
    raise ValueError(f"{prefix!r} {why}")


def parse_prefixes(value: str) -> tuple[str, ...]:
    """``SCOREFLEET_ALLOWED_IMAGE_PREFIXES``: comma-separated, each checked."""
    items = tuple(check_prefix(p.strip()) for p in value.split(",") if p.strip())
    if not items:
        raise ValueError("give at least one prefix")
    return items


def prefix_allows(prefix: str, image: str) -> bool:
    """Does the allowed ``prefix`` match the (valid) ``image`` at a boundary?"""
    if prefix == ANY:
        return True
    if not image.startswith(prefix):
        return False
    rest = image[len(prefix) :]
    if not rest or prefix[-1] in "/:@":
        return True
    last = prefix.rsplit("/", 1)[-1]
    tagged = "@" in prefix or ("/" in prefix and ":" in last)
    return rest[0] == "@" if tagged else rest[0] in "/:@"


def image_allowed(prefixes: tuple[str, ...], image: str) -> bool:
    return is_image_ref(image) and any(prefix_allows(p, image) for p in prefixes)
