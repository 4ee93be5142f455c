"""All configuration, from environment variables, validated in one place.

Every component (the Lambda, the workers, the CLI) reads its settings through
:func:`load`. Each variable is declared once, on the field of the section that holds
it (:mod:`.sections`); :func:`load` walks the declarations and reports every problem
at once, each naming its variable. The reference table in ``docs/configuration.md``
is generated from the same declarations (``scorefleet config --markdown``), so the
docs cannot drift from the code.

What the Lambda loads at every cold start stays small: no pydantic, no Kubernetes
checks, and no knowledge of the extensions (protocols, formats, launch backends): the
core checks the catalog keys it reads itself (:func:`.catalog.catalog_problems`) and
takes any backend name. The worker's load (:func:`workers.settings.load`, which
workers, ``scorefleet config`` and the chart's tests run) hands this load the one
check of the whole catalog and adds each launch backend's own checks (for the
kubernetes backend: cluster entries, endpoints, CA data, pod resources, tolerations).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from scorefleet import images
from scorefleet.s3uri import S3Uri
from scorefleet.settings.catalog import (
    ModelSpec,
    RejectBudget,
    catalog_problems,
    parse_model_catalog,
)
from scorefleet.settings.declare import PREFIX, ConfigError, Reader, Variable, variables
from scorefleet.settings.kubernetes import CLUSTER_NAME, DNS1123_LABEL, Kubernetes
from scorefleet.settings.local import Local
from scorefleet.settings.sections import (
    SQS_VISIBILITY_CAP,
    Aws,
    Broker,
    Launch,
    Metrics,
    Models,
    Monitoring,
    Retries,
    Scoring,
    Storage,
    Sweep,
)

__all__ = [
    "CLUSTER_NAME",
    "DNS1123_LABEL",
    "PREFIX",
    "SECTIONS",
    "SQS_VISIBILITY_CAP",
    "VARIABLES",
    "CatalogCheck",
    "ConfigError",
    "ModelSpec",
    "RejectBudget",
    "Settings",
    "Variable",
    "catalog_problems",
    "describe_markdown",
    "load",
    "parse_model_catalog",
]

#: A check of a whole model catalog: every problem, each naming the image and the key.
CatalogCheck = Callable[[Mapping[str, Mapping[str, Any]]], list[str]]


@dataclass(frozen=True)
class Settings:
    """Every setting, by section (``settings.retries.max``, ``settings.broker.queue``)."""

    storage: Storage
    aws: Aws
    broker: Broker
    models: Models
    launch: Launch
    kubernetes: Kubernetes
    local: Local
    scoring: Scoring
    retries: Retries
    monitoring: Monitoring
    sweep: Sweep
    metrics: Metrics

    def shown(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of every setting, as ``scorefleet config`` lists them."""
        for section in fields(self):
            values = getattr(self, section.name)
            for name, variable in variables(type(values)):
                yield variable.shown_as, getattr(values, name)


#: {field of Settings: its section}, in the order of the reference table.
SECTIONS: dict[str, type] = get_type_hints(Settings)

#: Every variable scorefleet reads, with its default and meaning (documentation source).
VARIABLES: tuple[Variable, ...] = tuple(
    v for section in SECTIONS.values() for _, v in variables(section)
)


def load(
    environ: Mapping[str, str] | None = None, *, check_catalog: CatalogCheck = catalog_problems
) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming every bad
    variable. ``check_catalog``: what checks the model catalog's entries (the core's
    own keys by default; the worker passes the check of every key,
    :func:`workers.catalog.problems`)."""
    env = os.environ if environ is None else environ
    r = Reader(env)
    raw = {name: r.values(section) for name, section in SECTIONS.items()}
    _catalog(raw["models"], r, check_catalog)
    _pinned_default(raw["models"], r)
    _storage(raw["storage"], r)
    aws = raw["aws"]
    aws["region"] = (
        aws["region"] or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    _broker(raw["broker"], r)
    scoring = raw["scoring"]
    step, model = scoring["max_step_seconds"], scoring["model_timeout"]
    if step is not None and model is not None and step + model >= SQS_VISIBILITY_CAP:
        r.problems.append(
            f"{PREFIX}MAX_STEP_SECONDS={step:g} plus {PREFIX}MODEL_TIMEOUT={model:g} must stay "
            f"under {SQS_VISIBILITY_CAP} s: SQS cannot keep a message invisible longer than "
            "12 hours, and a step checks its time between mini-batches"
        )
    _kubernetes(raw["kubernetes"], raw["launch"]["backend"], r.problems)
    model_key = (raw["local"].get("model_aws") or {}).get("access_key_id")
    if model_key and model_key == env.get("AWS_ACCESS_KEY_ID"):
        r.problems.append(
            f"{PREFIX}LOCAL_MODEL_AWS: its access_key_id is the worker's own (AWS_ACCESS_KEY_ID); "
            "give the models a credential of their own"
        )
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**{name: section(**raw[name]) for name, section in SECTIONS.items()})


def _storage(kw: dict[str, Any], r: Reader) -> None:
    """ERROR_URI and STATE_URI default from OUTPUT_URI; nothing scorefleet writes may
    lie under INPUT_URI (it would be scored again)."""
    input_uri, output_uri = kw["input_uri"], kw["output_uri"]
    given = {name: r.given(v) for name, v in variables(Storage)}
    if not given["error_uri"]:
        kw["error_uri"] = output_uri
    if not given["state_uri"]:
        kw["state_uri"] = S3Uri(output_uri.bucket, "scorefleet-state/") if output_uri else None
    if not (input_uri and output_uri):
        return
    output_overlaps = False
    for name in ("output_uri", "error_uri", "state_uri"):
        other = kw[name]
        if not other or not (input_uri.contains(other) or other.contains(input_uri)):
            continue
        if name == "output_uri":
            output_overlaps = True
        elif not given[name] and output_overlaps:
            continue  # its default comes from OUTPUT_URI, already reported
        default = "" if given[name] else " (its default, from OUTPUT_URI: set it)"
        r.problems.append(
            f"{PREFIX}{name.upper()}={other}{default} overlaps {PREFIX}INPUT_URI={input_uri}: "
            "outputs written there would be scored again"
        )


def _catalog(kw: dict[str, Any], r: Reader, check: CatalogCheck) -> None:
    """Every problem of the catalog's entries, each on its own line, worded as a bad
    value of ``SCOREFLEET_MODEL_CATALOG`` is."""
    if kw["catalog"] is None:
        return  # not JSON, or not an object of objects: already reported
    variable = dict(variables(Models))["catalog"]
    for problem in check(kw["catalog"]):
        r.problems.append(
            variable.parser.problem(variable.env, r.raw(variable), ValueError(problem))
        )


def _pinned_default(kw: dict[str, Any], r: Reader) -> None:
    """Images by digest only: the default image too (or files without a tag would all
    get an .error)."""
    image = kw["default_image"]
    if kw["require_digest"] and image and not images.is_pinned(image):
        r.problems.append(
            f"{PREFIX}DEFAULT_MODEL_IMAGE={image!r} is not pinned by digest, and "
            f"{PREFIX}REQUIRE_IMAGE_DIGEST is on: give it as <repository>@sha256:<64 hex>"
        )


def _broker(kw: dict[str, Any], r: Reader) -> None:
    if not kw["dead_letter_queue"] and kw["queue"]:
        kw["dead_letter_queue"] = kw["queue"] + "-dlq"
    queue_url = kw["queue_url"]
    if queue_url and not queue_url.startswith(("https://", "http://")):
        r.problems.append(f"{PREFIX}QUEUE_URL must be an http(s) SQS queue URL")
    elif queue_url and queue_url.rstrip("/").rsplit("/", 1)[-1] != kw["queue"]:
        # the steps queue's URL is derived from this one with the name <QUEUE>-steps
        r.problems.append(
            f"{PREFIX}QUEUE_URL={queue_url} does not end in the queue name "
            f"{PREFIX}QUEUE={kw['queue']}; set both to the same queue"
        )


def _kubernetes(kw: dict[str, Any], backend: str | None, problems: list[str]) -> None:
    """No K8S_CLUSTERS: the default cluster is the worker's own. Every cluster gets its
    list of namespaces: its own, else K8S_NAMESPACES, else the default namespace only
    (so a k8s_namespace tag can never name kube-system by default, and the reaper
    looks wherever pods may run). With the kubernetes backend, the default cluster
    (and namespace) must be among the configured ones."""
    if isinstance(kw["tolerations"], list):
        kw["tolerations"] = tuple(kw["tolerations"])
    clusters, cluster = kw["clusters"], kw["default_cluster"]
    listed, namespace = kw["namespaces"], kw["default_namespace"]
    if clusters is None or cluster is None or listed is None or namespace is None:
        return
    if listed and namespace not in listed:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_NAMESPACE={namespace!r} is not one of "
            f"{PREFIX}K8S_NAMESPACES ({', '.join(listed)})"
        )
    fallback = list(listed or (namespace,))
    if not clusters:
        kw["clusters"] = {cluster: {"in_cluster": True, "namespaces": fallback}}
        return
    kw["clusters"] = clusters = {
        name: {**entry, "namespaces": entry.get("namespaces") or fallback}
        for name, entry in clusters.items()
    }
    if backend != "kubernetes":
        return
    if cluster not in clusters:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_CLUSTER={cluster!r} is not one of the clusters in "
            f"{PREFIX}K8S_CLUSTERS ({', '.join(sorted(clusters))})"
        )
        return
    namespaces = clusters[cluster].get("namespaces")
    if namespaces and namespace not in namespaces:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_NAMESPACE={namespace!r} is not among the namespaces of "
            f"cluster {cluster!r} in {PREFIX}K8S_CLUSTERS ({', '.join(namespaces)})"
        )


def describe_markdown() -> str:
    """The configuration reference as a Markdown table (docs/configuration.md)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        default = "*(required)*" if v.required else (f"`{v.default}`" if v.default else "")
        rows.append(f"| `{v.env}` | {default} | {v.help} |")
    return "\n".join(rows) + "\n"
