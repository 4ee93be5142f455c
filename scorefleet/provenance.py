"""Where an outcome comes from: what every ``.scoreout``, ``.error`` and ``.rejected``
carries beside its source's identity (``source-version``, ``source-etag``,
``pipeline-id``), so an output can be traced to the exact model that made it.

* ``model-image``: the image as run (the file's ``model_image`` tag, or the fallback);
* ``model-image-id``: what the launch backend knows of the bytes it ran: on
  Kubernetes the pod's ``status.containerStatuses[].imageID`` (the digest the kubelet
  pulled, ``<repo>@sha256:...``); on the local backend, where an "image" is a command
  of the model catalog, the identity of that catalog entry (as ``catalog-entry``);
  absent when no model ran (a file refused before its model started);
* ``model-protocol``: the protocol the worker spoke to it;
* ``catalog-entry``: ``sha256:`` of the model catalog's entry as used (its canonical
  JSON: :func:`scorefleet.settings.catalog.entry_id`); absent when the image has none;
* ``scorefleet-version``: the scorefleet that published it.

All of it is written by the request that writes the outcome (its PUT or copy) and by
the run record's last write, which happen anyway: no request is added. User metadata
of an S3 object holds at most 2 KB (keys and values, UTF-8): :func:`fit` keeps a
document within it, shortening the longest field that can be rebuilt (the source URI,
which the outcome's own key and ``pipeline-id`` also say) before any other.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from scorefleet import __version__
from scorefleet.job import Job
from scorefleet.settings import Settings

#: The provenance fields of an outcome's metadata, in the order they are written.
FIELDS = ("model-image", "model-image-id", "model-protocol", "catalog-entry", "scorefleet-version")
#: S3's limit on an object's user-defined metadata, keys and values together.
METADATA_LIMIT = 2048
#: The field shortened first when the limit is near, and how it is marked.
SHORTENED_FIRST = "source-uri"
ELLIPSIS = "..."


def _ascii(value: str) -> str:
    """S3 metadata is ASCII: anything else percent-encoded."""
    return urllib.parse.quote(value, safe=":/@+=-_.,;~ ")


@dataclass(frozen=True)
class Provenance:
    model_image: str
    model_image_id: str = ""
    protocol: str = ""
    catalog_entry: str = ""
    scorefleet_version: str = __version__

    def metadata(self) -> dict[str, str]:
        """The outcome's metadata fields (the empty ones left out)."""
        values = (
            self.model_image,
            self.model_image_id,
            self.protocol,
            self.catalog_entry,
            self.scorefleet_version,
        )
        return {k: _ascii(v)[:512] for k, v in zip(FIELDS, values, strict=True) if v}

    def record(self) -> dict[str, str]:
        """The same, for the run record (``scorefleet status``)."""
        return {k.replace("-", "_"): v for k, v in self.metadata().items()}


def before_any_model(settings: Settings, job: Job) -> Provenance:
    """The provenance of an outcome no model made (a file refused before its model
    started: the Lambda's, a rerun's): the image and catalog entry it would have run
    with, no image id; the protocol when the entry names one (the core does not know
    which protocol is the default)."""
    spec = settings.models.spec(job.model_image) if job.model_image else None
    return Provenance(
        model_image=job.model_image,
        protocol=spec.protocol if spec else "",
        catalog_entry=spec.entry_id if spec else "",
    )


def size(metadata: Mapping[str, str]) -> int:
    """What S3 counts of user metadata: the UTF-8 bytes of every key and value."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def fit(metadata: Mapping[str, str], limit: int = METADATA_LIMIT) -> dict[str, str]:
    """``metadata`` within ``limit`` bytes: the source URI shortened first (its end
    kept: the file's name), then, if need be, fields dropped from the last."""
    out = dict(metadata)
    over = size(out) - limit
    value = out.get(SHORTENED_FIRST, "")
    if over > 0 and value:
        start = min(len(value), over + len(ELLIPSIS))
        while start < len(value) and "%" in value[max(0, start - 2) : start]:
            start += 1  # not inside a percent-escape
        out[SHORTENED_FIRST] = ELLIPSIS + value[start:]
    for key in reversed(list(out)):
        if size(out) <= limit:
            break
        del out[key]
    return out
