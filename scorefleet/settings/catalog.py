"""The model catalog (``SCOREFLEET_MODEL_CATALOG``): per-image settings, and the
entry that applies to an image.

The core reads three keys of an entry and checks them here, for every process (the
Lambda too): ``protocol`` (a name), ``max_rejected_rows`` and ``env`` (whatever the
backend, a model never gets the worker's variables). Every other key belongs to an
extension and is checked by its owner -- the entry's protocol, the formats, the launch
backends -- in the one call :func:`workers.catalog.problems`, which the worker runs
at start-up (:func:`workers.settings.load` hands it to :func:`scorefleet.settings.load`),
as do ``scorefleet config``, ``scorefleet up`` and the chart's tests. The core names
no protocol, format or backend: docs/development.md, "What is validated where".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scorefleet import images
from scorefleet.settings.declare import PREFIX, json_or_file


@dataclass(frozen=True)
class RejectBudget:
    """How many rows a model may refuse before the file fails: a count, or a fraction
    of the file's rows (known only at the end: checked as rows come, against the
    rows read so far, and once more at the end)."""

    count: int = 0
    fraction: float | None = None

    @classmethod
    def parse(cls, value: Any) -> RejectBudget:
        """``10`` (rows), ``0.001`` or ``0.1%`` (of the file's rows)."""
        if isinstance(value, bool):
            raise ValueError("a row count or a fraction")
        text = str(value).strip()
        if text.endswith("%"):
            frac = float(text[:-1]) / 100
        elif isinstance(value, float) or any(c in text for c in ".eE"):
            frac = float(text)
        else:
            count = int(text or "0")
            if count < 0:
                raise ValueError("a count is at least 0")
            return cls(count=count)
        if not 0 <= frac < 1:
            raise ValueError("a fraction is at least 0 and below 1 (100%)")
        return cls(count=0, fraction=frac)

    @property
    def enabled(self) -> bool:
        return self.count > 0 or bool(self.fraction)

    def allows(self, rejected: int, rows_seen: int) -> bool:
        """May ``rejected`` refused rows stand after ``rows_seen`` rows of the file?"""
        if self.fraction is not None:
            return rejected <= self.fraction * rows_seen
        return rejected <= self.count

    def __str__(self) -> str:
        return f"{self.fraction:g} of the rows" if self.fraction is not None else f"{self.count}"


@dataclass(frozen=True)
class ModelSpec:
    """Per-image settings from the model catalog, as the core sees them."""

    image: str
    #: how the worker talks to the model: a protocol's name (workers/scoring/protocols/
    #: registry.py); empty: the default protocol
    protocol: str = ""
    #: rows this image's model may refuse per file (SCOREFLEET_MAX_REJECTED_ROWS otherwise)
    max_rejected_rows: RejectBudget | None = None
    #: the entry's other keys, read by their owners: the protocol's options, the
    #: formats' keys, the launch backends' keys (command, resources, ...), env
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the identity of the catalog entry as used (:func:`entry_id`; "" when the image
    #: has no entry): an output's provenance names it
    entry_id: str = ""


def entry_id(entry: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a catalog entry's canonical JSON (keys sorted, no spaces,
    UTF-8): the same entry gives the same identity wherever it is read, any change to
    it another one. Values (an ``env`` secret too) are only hashed, never shown."""
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


#: The keys of a catalog entry the core reads or checks itself.
CORE_KEYS = ("protocol", "max_rejected_rows", "env")


def spec_for(catalog: Mapping[str, Mapping[str, Any]], image: str) -> ModelSpec:
    """Catalog entry for an image: exact name first, then the longest matching
    ``prefix*`` pattern, then ``*``; an image with no entry gets the defaults.
    A pattern's prefix matches at a boundary, as an allowed image prefix does
    (:func:`scorefleet.images.prefix_allows`): ``reg/iris*`` is ``reg/iris`` and its
    tags, digests and sub-paths, never ``reg/iris-evil``."""
    entry: Mapping[str, Any] = {}
    if image in catalog:
        entry = catalog[image]
    else:
        patterns = sorted(
            (
                k
                for k in catalog
                if k.endswith("*") and images.prefix_allows(k[:-1] or images.ANY, image)
            ),
            key=len,
            reverse=True,
        )
        if patterns:
            entry = catalog[patterns[0]]
    return ModelSpec(
        image=image,
        protocol=str(entry.get("protocol") or ""),
        max_rejected_rows=(
            RejectBudget.parse(entry["max_rejected_rows"])
            if entry.get("max_rejected_rows") is not None
            else None
        ),
        extra={k: v for k, v in entry.items() if k not in ("protocol", "max_rejected_rows")},
        entry_id=entry_id(entry) if entry else "",
    )


def parse_model_catalog(value: str) -> dict[str, dict[str, Any]]:
    """A model catalog (JSON, or the path of a JSON file) of the right shape; its
    entries are checked by :func:`catalog_problems` (or the worker's one call).
    ValueError says what is wrong."""
    if not value:
        return {}
    data = json_or_file(value)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('expected a JSON object {"<image>": {...}, ...}')
    return data


def catalog_problems(catalog: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the core finds wrong in a catalog's entries, every problem at once, each
    naming the image and the key."""
    return [p for image, entry in catalog.items() for p in entry_problems(image, entry)]


def entry_problems(image: str, entry: Mapping[str, Any]) -> list[str]:
    """The core's checks of one entry: its image pattern and :data:`CORE_KEYS`."""
    found: list[str] = []
    if image.endswith("*") and image != images.ANY:
        try:
            images.check_prefix(image[:-1])
        except ValueError as exc:
            found.append(
                f"{image}: a '*' pattern matches at a boundary, as an allowed image "
                f"prefix does: {exc}"
            )
    protocol = entry.get("protocol")
    if protocol is not None and not (isinstance(protocol, str) and protocol):
        found.append(f"{image}: protocol must be the name of a protocol, not {protocol!r}")
    if entry.get("max_rejected_rows") is not None:
        try:
            RejectBudget.parse(entry["max_rejected_rows"])
        except ValueError as exc:
            found.append(f"{image}: max_rejected_rows must be a row count or a fraction: {exc}")
    if "env" in entry:
        try:
            check_model_env(entry["env"])
        except ValueError as exc:
            found.append(f"{image}: env: {exc}")
    return found


def check_model_env(obj: Any) -> dict[str, Any]:
    """A model's environment: names and scalar values; none of the worker's own
    credentials or settings (AWS_*, SCOREFLEET_*), whatever the backend."""
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str | int | float | bool) for k, v in obj.items()
    ):
        raise ValueError('expected an object of names and values, e.g. {"OMP_NUM_THREADS": "1"}')
    taken = sorted(k for k in obj if k.upper().startswith(("AWS_", PREFIX)))
    if taken:
        raise ValueError(
            f"{', '.join(taken)}: a model gets no AWS_* or {PREFIX}* variables (they would be "
            "the worker's credentials and settings; give the model its own under other names)"
        )
    return obj


#: The keys of SCOREFLEET_LOCAL_MODEL_AWS (what a local model whose catalog entry says
#: ``local_aws`` gets as its AWS_* variables).
MODEL_AWS_KEYS = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def parse_model_aws(value: str) -> dict[str, str]:
    """SCOREFLEET_LOCAL_MODEL_AWS: the AWS endpoint, region and credentials of the
    models themselves on a machine without IAM roles for them (the local stack). JSON
    or a file; every key of :data:`MODEL_AWS_KEYS`, each a non-empty string."""
    if not value:
        return {}
    data = json_or_file(value)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(data) - set(MODEL_AWS_KEYS))
    missing = sorted(set(MODEL_AWS_KEYS) - set(data))
    if unknown or missing:
        raise ValueError(
            f"expected the keys {', '.join(MODEL_AWS_KEYS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    if not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise ValueError("every value must be a non-empty string")
    if not data["endpoint_url"].startswith(("http://", "https://")):
        raise ValueError("endpoint_url must be an http:// or https:// URL")
    return {str(k): str(v) for k, v in data.items()}
