"""All configuration, from environment variables, validated in one place.

Every component (the Lambda, the workers, the CLI) reads its settings through
:func:`load`. A bad value stops start-up with a message that names the variable;
all problems are reported at once. The table in ``docs/configuration.md`` is
generated from :data:`VARIABLES` (``scorefleet config --markdown``), so the docs
cannot drift from the code.

Kept dependency-free (no pydantic) on purpose: the Lambda imports this module on
every cold start and must stay small and fast to import.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.s3uri import S3Uri

PREFIX = "SCOREFLEET_"

#: Kubernetes namespace / DNS-1123 label.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """One or more configuration variables are missing or invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid scorefleet configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Variable:
    name: str  # without the SCOREFLEET_ prefix
    default: str | None
    help: str
    required: bool = False

    @property
    def env(self) -> str:
        return PREFIX + self.name


#: Every variable scorefleet reads, with its default and meaning (documentation source).
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "INPUT_URI",
        None,
        "S3 prefix that is watched for files to score, e.g. s3://data/in/",
        required=True,
    ),
    Variable(
        "OUTPUT_URI",
        None,
        "S3 prefix where <relative path>.scoreout is published",
        required=True,
    ),
    Variable(
        "ERROR_URI",
        "",
        "S3 prefix for <relative path>.error (default: OUTPUT_URI)",
    ),
    Variable(
        "STATE_URI",
        "",
        "S3 prefix for run records and staging (default: s3://<output bucket>/scorefleet-state/)",
    ),
    Variable(
        "BROKER_URL",
        "sqs://",
        "Celery broker URL; sqs:// uses the AWS default credential chain (IRSA on EKS)",
    ),
    Variable(
        "BROKER_TLS",
        "true",
        "use HTTPS to reach SQS (false only for a local emulator)",
    ),
    Variable(
        "AWS_REGION",
        "",
        "AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1)",
    ),
    Variable(
        "QUEUE",
        "scorefleet",
        "name of the Celery task queue on SQS",
    ),
    Variable(
        "QUEUE_URL",
        "",
        "full SQS URL of the task queue; set it in production so no "
        "ListQueues/CreateQueue permission is needed",
    ),
    Variable(
        "DEAD_LETTER_QUEUE",
        "",
        "name or URL of the task queue's dead-letter queue, for `scorefleet dlq` (default: "
        "<QUEUE>-dlq)",
    ),
    Variable(
        "VISIBILITY_TIMEOUT",
        "1800",
        "SQS visibility timeout in seconds; must match the queue's own setting",
    ),
    Variable(
        "DEFAULT_MODEL_IMAGE",
        "",
        "model image used when a file has no model_image tag (empty: such files get an .error)",
    ),
    Variable(
        "DEFAULT_K8S_CLUSTER",
        "default",
        "cluster used when a file has no k8s_cluster tag",
    ),
    Variable(
        "DEFAULT_K8S_NAMESPACE",
        "scoring",
        "namespace used when a file has no k8s_namespace tag",
    ),
    Variable(
        "ALLOWED_IMAGE_PREFIXES",
        None,
        "comma-separated image prefixes that may be run, e.g. "
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/ ('*' allows any image: "
        "not for production)",
        required=True,
    ),
    Variable(
        "LAUNCH_BACKEND",
        "local",
        "how model containers are started: local (a process per file) or kubernetes "
        "(a pod per file)",
    ),
    Variable(
        "MODEL_CATALOG",
        "",
        "per-image settings as JSON, or a path to a JSON file (see docs/configuration.md)",
    ),
    Variable(
        "MAX_PAYLOAD_MB",
        "6",
        "upper bound of one mini-batch sent to the model, in MB (SageMaker MaxPayloadInMB)",
    ),
    Variable(
        "MAX_IN_FLIGHT",
        "4",
        "mini-batches sent to the model concurrently per file",
    ),
    Variable(
        "MODEL_TIMEOUT",
        "120",
        "seconds to wait for the model to answer one mini-batch",
    ),
    Variable(
        "LAUNCH_TIMEOUT",
        "180",
        "seconds a model container may take to answer GET /ping",
    ),
    Variable(
        "CSV_HEADER",
        "auto",
        "whether input files start with a header row: auto, present or absent",
    ),
    Variable(
        "RETRY_MAX",
        "5",
        "retries of a step after a transient failure (connection error, 5xx, throttling)",
    ),
    Variable(
        "RETRY_BACKOFF",
        "2",
        "first retry delay in seconds; doubles each retry, with full jitter",
    ),
    Variable(
        "RETRY_BACKOFF_MAX",
        "300",
        "longest retry delay in seconds (at most 900: retries wait in SQS, not in the worker)",
    ),
    Variable(
        "MODEL_LOG_LINES",
        "40",
        "how many of the model's last log lines go into an .error file",
    ),
    Variable(
        "REAP_INTERVAL",
        "300",
        "seconds between runs of the reaper (beat) that removes model containers left behind",
    ),
    Variable(
        "REAP_MAX_AGE",
        "21600",
        "a model container older than this many seconds is removed by the reaper "
        "whatever its state",
    ),
    Variable(
        "STATE_DIR",
        "",
        "local backend: directory for model process records and logs (default: "
        "~/.local/state/scorefleet)",
    ),
    Variable(
        "LOG_LEVEL",
        "INFO",
        "log level of workers and the Lambda",
    ),
)

_BY_NAME = {v.name: v for v in VARIABLES}


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
    #: everything else (backend specific: resources, node selector, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    input_uri: S3Uri
    output_uri: S3Uri
    error_uri: S3Uri
    state_uri: S3Uri
    broker_url: str
    broker_tls: bool
    aws_region: str
    queue: str
    queue_url: str
    dead_letter_queue: str
    visibility_timeout: int
    default_model_image: str
    default_k8s_cluster: str
    default_k8s_namespace: str
    allowed_image_prefixes: tuple[str, ...]
    launch_backend: str
    model_catalog: Mapping[str, Mapping[str, Any]]
    max_payload_bytes: int
    max_in_flight: int
    model_timeout: float
    launch_timeout: float
    csv_header: str
    retry_max: int
    retry_backoff: float
    retry_backoff_max: float
    model_log_lines: int
    reap_interval: float
    reap_max_age: float
    state_dir: Path
    log_level: str

    # ----------------------------------------------------------------- queries
    def image_allowed(self, image: str) -> bool:
        return any(p == "*" or image.startswith(p) for p in self.allowed_image_prefixes)

    def model_spec(self, image: str) -> ModelSpec:
        """Catalog entry for an image: exact name first, then the longest matching
        ``prefix*`` pattern, then ``*``; an image with no entry gets the defaults."""
        entry: Mapping[str, Any] = {}
        if image in self.model_catalog:
            entry = self.model_catalog[image]
        else:
            patterns = sorted(
                (k for k in self.model_catalog if k.endswith("*") and image.startswith(k[:-1])),
                key=len,
                reverse=True,
            )
            if patterns:
                entry = self.model_catalog[patterns[0]]
        known = {"command", "send_header", "response_header", "port"}
        return ModelSpec(
            image=image,
            command=entry.get("command"),
            send_header=bool(entry.get("send_header", True)),
            response_header=bool(entry.get("response_header", False)),
            port=int(entry.get("port", 8080)),
            extra={k: v for k, v in entry.items() if k not in known},
        )

    def ignored_prefixes(self) -> tuple[S3Uri, ...]:
        """Locations the pipeline writes to: events for them must never be scored."""
        return (self.output_uri, self.error_uri, self.state_uri)


# --------------------------------------------------------------------- parsing
class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str:
        var = _BY_NAME[name]
        value = self.environ.get(var.env, "").strip()
        if not value:
            if var.required:
                self.problems.append(f"{var.env} is required: {var.help}")
            return var.default or ""
        return value

    def convert(self, name: str, fn: Callable[[str], Any], expected: str) -> Any:
        value = self.raw(name)
        try:
            return fn(value)
        except (ValueError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            self.problems.append(f"{PREFIX}{name}={value!r} is not {expected}{detail}")
            return None

    def number(self, name: str, lo: float, hi: float, *, integer: bool = True) -> Any:
        def parse(v: str) -> float:
            n = int(v) if integer else float(v)
            if not lo <= n <= hi:
                raise ValueError(f"allowed range {lo:g}..{hi:g}")
            return n

        return self.convert(name, parse, "an integer" if integer else "a number")

    def uri(self, name: str, default: S3Uri | None = None) -> S3Uri | None:
        value = self.raw(name)
        if not value:
            return default
        try:
            return S3Uri.parse(value).as_prefix()
        except ValueError as exc:
            self.problems.append(f"{PREFIX}{name}={value!r}: {exc}")
            return None


def _bool(value: str) -> bool:
    v = value.lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise ValueError("use true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return value.lower()

    return parse


def _catalog(value: str) -> dict[str, dict[str, Any]]:
    if not value:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('expected a JSON object {"<image>": {...}, ...}')
    for image, entry in data.items():
        cmd = entry.get("command")
        if cmd is not None and (not isinstance(cmd, str) or "{port}" not in cmd):
            raise ValueError(f"{image}: command must be a string with a {{port}} placeholder")
    return data


def _prefixes(value: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in value.split(",") if p.strip())
    if not items:
        raise ValueError("give at least one prefix")
    return items


def _name(value: str) -> str:
    if not DNS1123_LABEL.match(value):
        raise ValueError("must be a DNS-1123 label (lowercase letters, digits, '-')")
    return value


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming every bad variable."""
    env = os.environ if environ is None else environ
    r = _Reader(env)

    input_uri = r.uri("INPUT_URI")
    output_uri = r.uri("OUTPUT_URI")
    error_uri = r.uri("ERROR_URI", output_uri)
    state_default = S3Uri(output_uri.bucket, "scorefleet-state/") if output_uri else None
    state_uri = r.uri("STATE_URI", state_default)
    region = (
        r.raw("AWS_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    state_dir_raw = r.raw("STATE_DIR")
    state_dir = (
        Path(state_dir_raw).expanduser()
        if state_dir_raw
        else Path.home() / ".local" / "state" / "scorefleet"
    )

    settings_kwargs: dict[str, Any] = dict(
        input_uri=input_uri,
        output_uri=output_uri,
        error_uri=error_uri,
        state_uri=state_uri,
        broker_url=r.raw("BROKER_URL"),
        broker_tls=r.convert("BROKER_TLS", _bool, "true or false"),
        aws_region=region,
        queue=r.convert("QUEUE", _queue_name, "a valid SQS queue name"),
        queue_url=r.raw("QUEUE_URL"),
        dead_letter_queue=r.raw("DEAD_LETTER_QUEUE"),
        visibility_timeout=r.number("VISIBILITY_TIMEOUT", 5, 43200),
        default_model_image=r.raw("DEFAULT_MODEL_IMAGE"),
        default_k8s_cluster=r.convert("DEFAULT_K8S_CLUSTER", _name, "a cluster name"),
        default_k8s_namespace=r.convert("DEFAULT_K8S_NAMESPACE", _name, "a namespace name"),
        allowed_image_prefixes=r.convert("ALLOWED_IMAGE_PREFIXES", _prefixes, "a list of prefixes"),
        launch_backend=r.convert("LAUNCH_BACKEND", _choice("local", "kubernetes"), "a backend"),
        model_catalog=r.convert("MODEL_CATALOG", _catalog, "a model catalog"),
        max_payload_bytes=None,
        max_in_flight=r.number("MAX_IN_FLIGHT", 1, 64),
        model_timeout=r.number("MODEL_TIMEOUT", 1, 3600, integer=False),
        launch_timeout=r.number("LAUNCH_TIMEOUT", 1, 3600, integer=False),
        csv_header=r.convert("CSV_HEADER", _choice("auto", "present", "absent"), "a header mode"),
        retry_max=r.number("RETRY_MAX", 0, 50),
        retry_backoff=r.number("RETRY_BACKOFF", 0, 900, integer=False),
        retry_backoff_max=r.number("RETRY_BACKOFF_MAX", 0, 900, integer=False),
        model_log_lines=r.number("MODEL_LOG_LINES", 0, 1000),
        reap_interval=r.number("REAP_INTERVAL", 10, 86400, integer=False),
        reap_max_age=r.number("REAP_MAX_AGE", 60, 7 * 86400, integer=False),
        state_dir=state_dir,
        log_level=r.convert("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "a level"),
    )
    payload_mb = r.number("MAX_PAYLOAD_MB", 0.01, 100, integer=False)
    if payload_mb is not None:
        settings_kwargs["max_payload_bytes"] = int(payload_mb * 1024 * 1024)
    if settings_kwargs["log_level"]:
        settings_kwargs["log_level"] = settings_kwargs["log_level"].upper()

    if not settings_kwargs["dead_letter_queue"] and settings_kwargs["queue"]:
        settings_kwargs["dead_letter_queue"] = settings_kwargs["queue"] + "-dlq"
    queue_url = settings_kwargs["queue_url"]
    if queue_url and not queue_url.startswith(("https://", "http://")):
        r.problems.append(f"{PREFIX}QUEUE_URL must be an http(s) SQS queue URL")
    if input_uri and output_uri:
        written = (("OUTPUT_URI", output_uri), ("ERROR_URI", error_uri), ("STATE_URI", state_uri))
        for name, other in written:
            if other and (input_uri.contains(other) or other.contains(input_uri)):
                r.problems.append(
                    f"{PREFIX}{name}={other} overlaps {PREFIX}INPUT_URI={input_uri}: "
                    "outputs written there would be scored again"
                )

    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**settings_kwargs)


_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$")


def _queue_name(value: str) -> str:
    if not _SQS_NAME.match(value):
        raise ValueError("letters, digits, '-' and '_' only, at most 80 characters")
    return value


def describe_markdown() -> str:
    """The configuration reference as a Markdown table (docs/configuration.md)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        default = "*(required)*" if v.required else (f"`{v.default}`" if v.default else "")
        rows.append(f"| `{v.env}` | {default} | {v.help} |")
    return "\n".join(rows) + "\n"
