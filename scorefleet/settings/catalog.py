"""The model catalog (``SCOREFLEET_MODEL_CATALOG``): per-image settings, and the
entry that applies to an image.

What the core checks here holds for every backend (patterns, command, answer format,
the model's environment). The per-image Kubernetes keys (resources, tolerations,
...) are checked by the kubernetes backend (:mod:`workers.backends.kubernetes.config`) at
worker start-up: the Lambda never reads them.
"""

from __future__ import annotations

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
    """Per-image settings from the model catalog (the part common to all backends)."""

    image: str
    #: local backend: command with a {port} placeholder ({python} = this interpreter)
    command: str | None = None
    #: send the input's header row with every mini-batch
    send_header: bool = True
    #: the model's CSV answer starts with a header row (kept once in the .scoreout)
    response_header: bool = False
    #: container port (kubernetes backend)
    port: int = 8080
    #: "csv" or "json" for a model whose Content-Type does not say (empty: it must)
    response_format: str = ""
    #: how the worker talks to the model (PROTOCOL_OPTION_KEYS), and that protocol's
    #: options (the catalog entry's object under the protocol's key)
    protocol: str = "sagemaker"
    protocol_options: Mapping[str, Any] = field(default_factory=dict)
    #: rows this image's model may refuse per file (SCOREFLEET_MAX_REJECTED_ROWS otherwise)
    max_rejected_rows: RejectBudget | None = None
    #: everything else (backend specific: resources, node selector, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)


#: The model protocols (catalog key ``protocol``, workers/scoring/protocols/) and the catalog
#: key that holds each one's options (checked in detail by the worker at start-up:
#: workers.scoring.protocols.check_catalog). Default: sagemaker.
PROTOCOL_OPTION_KEYS: dict[str, str | None] = {
    "sagemaker": None,
    "v2": "v2",
    "json": "json",
    "lambda": "lambda",
    "sas-executions": "sas",
}
_KNOWN = {
    "command",
    "send_header",
    "response_header",
    "port",
    "response_format",
    "max_rejected_rows",
}


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
    protocol = str(entry.get("protocol", "sagemaker"))
    options_key = PROTOCOL_OPTION_KEYS.get(protocol)
    known = _KNOWN | ({"protocol", options_key} if options_key else {"protocol"})
    return ModelSpec(
        image=image,
        command=entry.get("command"),
        send_header=bool(entry.get("send_header", True)),
        response_header=bool(entry.get("response_header", False)),
        port=int(entry.get("port", 8080)),
        response_format=str(entry.get("response_format", "")),
        protocol=protocol,
        protocol_options=dict(entry.get(options_key) or {}) if options_key else {},
        max_rejected_rows=(
            RejectBudget.parse(entry["max_rejected_rows"])
            if entry.get("max_rejected_rows") is not None
            else None
        ),
        extra={k: v for k, v in entry.items() if k not in known},
    )


def parse_model_catalog(value: str) -> dict[str, dict[str, Any]]:
    """A model catalog (JSON, or the path of a JSON file), checked as at start-up by
    every process; ValueError says what is wrong."""
    if not value:
        return {}
    data = json_or_file(value)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('expected a JSON object {"<image>": {...}, ...}')
    for image, entry in data.items():
        if image.endswith("*") and image != images.ANY:
            try:
                images.check_prefix(image[:-1])
            except ValueError as exc:
                raise ValueError(
                    f"{image}: a '*' pattern matches at a boundary, as an allowed image "
                    f"prefix does: {exc}"
                ) from None
        cmd = entry.get("command")
        if cmd is not None and (not isinstance(cmd, str) or "{port}" not in cmd):
            raise ValueError(f"{image}: command must be a string with a {{port}} placeholder")
        if entry.get("response_format", "csv") not in ("csv", "json"):
            raise ValueError(f"{image}: response_format must be csv or json")
        if entry.get("max_rejected_rows") is not None:
            try:
                RejectBudget.parse(entry["max_rejected_rows"])
            except ValueError as exc:
                raise ValueError(
                    f"{image}: max_rejected_rows must be a row count or a fraction: {exc}"
                ) from None
        protocol = entry.get("protocol", "sagemaker")
        if protocol not in PROTOCOL_OPTION_KEYS:
            raise ValueError(
                f"{image}: protocol must be one of {', '.join(PROTOCOL_OPTION_KEYS)}, "
                f"not {protocol!r}"
            )
        options_key = PROTOCOL_OPTION_KEYS[protocol]
        if options_key and not isinstance(entry.get(options_key, {}), dict):
            raise ValueError(f"{image}: {options_key}: expected a JSON object of options")
        if "env" in entry:
            try:
                check_model_env(entry["env"])
            except ValueError as exc:
                raise ValueError(f"{image}: env: {exc}") from None
    return data


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
