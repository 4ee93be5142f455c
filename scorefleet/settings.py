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

import base64
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scorefleet import images
from scorefleet.s3uri import S3Uri

PREFIX = "SCOREFLEET_"
#: SQS: a message's visibility cannot be extended past 12 hours from its receipt.
SQS_VISIBILITY_CAP = 43200

#: Kubernetes namespace / DNS-1123 label.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", re.ASCII)


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
        "name of the Celery task queue on SQS (new files); the later steps of files already "
        "running use <QUEUE>-steps beside it, so a burst of new files waits behind them",
    ),
    Variable(
        "QUEUE_URL",
        "",
        "full SQS URL of the task queue (the steps queue's is derived from it); set it in "
        "production so no ListQueues/CreateQueue permission is needed",
    ),
    Variable(
        "DEAD_LETTER_QUEUE",
        "",
        "name or URL of the task queue's dead-letter queue, for `scorefleet dlq` and Flower's "
        "Broker tab (default: <QUEUE>-dlq; a name is looked for beside QUEUE_URL when that is "
        "set)",
    ),
    Variable(
        "VISIBILITY_TIMEOUT",
        "300",
        "SQS visibility timeout in seconds; must match the queue's own setting. Running "
        "steps extend it as they go, so it only bounds how soon a dead worker's message "
        "comes back",
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
        "K8S_CLUSTERS",
        "",
        "kubernetes backend: the clusters a k8s_cluster tag may name, as JSON or a path to a "
        "JSON file (see docs/kubernetes.md); empty: DEFAULT_K8S_CLUSTER is the worker's own "
        "cluster (in-cluster config)",
    ),
    Variable(
        "K8S_NAMESPACES",
        "",
        "comma-separated namespaces a k8s_namespace tag may name on a cluster whose "
        "K8S_CLUSTERS entry lists none (and on the default cluster when K8S_CLUSTERS is "
        "empty); the reaper looks in the same ones. Empty: DEFAULT_K8S_NAMESPACE only",
    ),
    Variable(
        "K8S_RESOURCES",
        '{"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}',
        "kubernetes backend: resources of a model container as JSON, as in a pod spec "
        "(catalog key resources overrides it per image)",
    ),
    Variable(
        "K8S_NODE_SELECTOR",
        "",
        'kubernetes backend: nodeSelector of model pods as JSON, e.g. {"workload": "scoring"} '
        "(catalog key node_selector overrides it per image)",
    ),
    Variable(
        "K8S_TOLERATIONS",
        "",
        "kubernetes backend: tolerations of model pods as a JSON list, as in a pod spec "
        "(catalog key tolerations overrides it per image)",
    ),
    Variable(
        "K8S_IMAGE_PULL_SECRETS",
        "",
        "kubernetes backend: comma-separated Secret names for pulling model images (none "
        "needed for ECR with the nodes' IAM role; catalog key image_pull_secrets overrides it)",
    ),
    Variable(
        "K8S_SERVICE_ACCOUNT",
        "",
        "kubernetes backend: service account of model pods (default: the namespace's "
        "default); its token is never mounted",
    ),
    Variable(
        "K8S_ACTIVE_DEADLINE",
        "21600",
        "kubernetes backend: activeDeadlineSeconds of a model pod, the last-resort bound on "
        "its life",
    ),
    Variable(
        "K8S_UNSCHEDULABLE_TIMEOUT",
        "120",
        "kubernetes backend: seconds a model pod may stay unschedulable before its launch "
        "is retried later (counted as a transient failure)",
    ),
    Variable(
        "MAX_LIVE_MODELS",
        "0",
        "local backend: at most this many model processes on the machine at once (running or "
        "warm); a launch beyond it waits its turn in the queue. 0: no limit (kubernetes: use a "
        "ResourceQuota, which launches also wait for)",
    ),
    Variable(
        "WARM_IDLE_SECONDS",
        "0",
        "warm mode (opt-in): keep a model container alive this many seconds after its file "
        "and reuse it for the next file of the same image; 0: a fresh container per file",
    ),
    Variable(
        "WARM_MAX_PER_IMAGE",
        "4",
        "warm mode: at most this many idle containers kept per image (and cluster/namespace)",
    ),
    Variable(
        "MAX_PAYLOAD_MB",
        "1",
        "upper bound of one mini-batch sent to the model, in MB (like SageMaker's "
        "MaxPayloadInMB, which allows up to 100); small batches keep several in flight",
    ),
    Variable(
        "MAX_IN_FLIGHT",
        "4",
        "mini-batches sent to the model concurrently per file",
    ),
    Variable(
        "MODEL_TIMEOUT",
        "120",
        "seconds the model has to answer one mini-batch, in total (a model that sends its "
        "answer slowly is cut off when they are up)",
    ),
    Variable(
        "MAX_ANSWER_RATIO",
        "20",
        "a model's answer to a mini-batch may be at most this many times the size of the "
        "request (but always MAX_ANSWER_FLOOR_MB); a bigger answer is an error, so a model "
        "cannot exhaust the worker's memory",
    ),
    Variable(
        "MAX_ANSWER_FLOOR_MB",
        "1",
        "the smallest cap on a model's answer to one mini-batch, in MB (see MAX_ANSWER_RATIO)",
    ),
    Variable(
        "MAX_EXPANDED_GB",
        "50",
        "a compressed input file (gzip, bzip2, xz, zstd) is refused with an .error once it "
        "expands past this many GB",
    ),
    Variable(
        "MAX_EXPANSION_RATIO",
        "200",
        "a compressed input file is refused with an .error once it has expanded to more than "
        "16 MiB and more than this many times the compressed bytes read so far (real CSV "
        "compresses 3-100 times; a decompression bomb 1000 times and more)",
    ),
    Variable(
        "MAX_STEP_SECONDS",
        "42300",
        "a step that runs this long stops with an .error rather than run past what SQS can "
        "protect (a message's visibility cannot be extended past 12 hours from its receipt); "
        "MAX_STEP_SECONDS + MODEL_TIMEOUT must stay under 43200",
    ),
    Variable(
        "LAUNCH_TIMEOUT",
        "180",
        "seconds a model container may take to be ready (GET /ping for the sagemaker "
        "protocol; each protocol says what ready is: docs/models.md)",
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
    Variable(
        "EVENTS",
        "true",
        "workers send Celery events and answer remote control over SNS fanout, for Flower and "
        "celery events/inspect (docs/flower.md); false: no SNS is used",
    ),
    Variable(
        "MONITOR_IDLE",
        "900",
        "seconds after which the sweeper (beat) deletes an event, reply or control queue whose "
        "Flower, celery events/inspect or worker stopped refreshing it",
    ),
    Variable(
        "FLOWER_UNAUTHENTICATED",
        "false",
        "true lets Flower start without FLOWER_BASIC_AUTH (or OAuth), on a loopback address "
        "only: for the local stack, never in production",
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
    #: "csv" or "json" for a model whose Content-Type does not say (empty: it must)
    response_format: str = ""
    #: how the worker talks to the model (PROTOCOL_OPTION_KEYS), and that protocol's
    #: options (the catalog entry's object under the protocol's key)
    protocol: str = "sagemaker"
    protocol_options: Mapping[str, Any] = field(default_factory=dict)
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
    k8s_clusters: Mapping[str, Mapping[str, Any]]
    k8s_resources: Mapping[str, Any]
    k8s_node_selector: Mapping[str, str]
    k8s_tolerations: tuple[Mapping[str, Any], ...]
    k8s_image_pull_secrets: tuple[str, ...]
    k8s_service_account: str
    k8s_active_deadline: int
    k8s_unschedulable_timeout: float
    max_live_models: int
    warm_idle_seconds: float
    warm_max_per_image: int
    max_payload_bytes: int
    max_in_flight: int
    model_timeout: float
    launch_timeout: float
    max_answer_ratio: float
    max_answer_floor_bytes: int
    max_expanded_bytes: int
    max_expansion_ratio: float
    max_step_seconds: float
    csv_header: str
    retry_max: int
    retry_backoff: float
    retry_backoff_max: float
    model_log_lines: int
    reap_interval: float
    reap_max_age: float
    state_dir: Path
    log_level: str
    events: bool = True
    monitor_idle: int = 900
    flower_unauthenticated: bool = False
    k8s_namespaces: tuple[str, ...] = ()

    # ----------------------------------------------------------------- queries
    @property
    def steps_queue(self) -> str:
        """The queue of the steps after launch (score, upload, teardown): apart from
        new files, so a burst of new files cannot hold up files already running."""
        return f"{self.queue}-steps"

    @property
    def steps_queue_url(self) -> str:
        """Beside QUEUE_URL (same account and region), when that is set."""
        if not self.queue_url:
            return ""
        return self.queue_url.rstrip("/").rsplit("/", 1)[0] + "/" + self.steps_queue

    @property
    def dead_letter_queue_url(self) -> str:
        """DEAD_LETTER_QUEUE if it is a URL, else beside QUEUE_URL when that is set
        (as the template makes it), else ''. Known without GetQueueUrl."""
        dlq = self.dead_letter_queue
        if dlq.startswith(("https://", "http://")):
            return dlq
        if not self.queue_url or not dlq:
            return ""
        return self.queue_url.rstrip("/").rsplit("/", 1)[0] + "/" + dlq

    def image_allowed(self, image: str) -> bool:
        """Is ``image`` a valid reference under an allowed prefix (at a boundary)?"""
        return images.image_allowed(self.allowed_image_prefixes, image)

    def model_spec(self, image: str) -> ModelSpec:
        """Catalog entry for an image: exact name first, then the longest matching
        ``prefix*`` pattern, then ``*``; an image with no entry gets the defaults.
        A pattern's prefix matches at a boundary, as an allowed image prefix does
        (:func:`scorefleet.images.prefix_allows`): ``reg/iris*`` is ``reg/iris`` and its
        tags, digests and sub-paths, never ``reg/iris-evil``."""
        entry: Mapping[str, Any] = {}
        if image in self.model_catalog:
            entry = self.model_catalog[image]
        else:
            patterns = sorted(
                (
                    k
                    for k in self.model_catalog
                    if k.endswith("*") and images.prefix_allows(k[:-1] or images.ANY, image)
                ),
                key=len,
                reverse=True,
            )
            if patterns:
                entry = self.model_catalog[patterns[0]]
        protocol = str(entry.get("protocol", "sagemaker"))
        options_key = PROTOCOL_OPTION_KEYS.get(protocol)
        known = {"command", "send_header", "response_header", "port", "response_format"}
        known |= {"protocol", options_key} if options_key else {"protocol"}
        return ModelSpec(
            image=image,
            command=entry.get("command"),
            send_header=bool(entry.get("send_header", True)),
            response_header=bool(entry.get("response_header", False)),
            port=int(entry.get("port", 8080)),
            response_format=str(entry.get("response_format", "")),
            protocol=protocol,
            protocol_options=dict(entry.get(options_key) or {}) if options_key else {},
            extra={k: v for k, v in entry.items() if k not in known},
        )

    def namespaces_of(self, cluster: str) -> tuple[str, ...] | None:
        """The namespaces files may name on ``cluster`` (None: not a configured cluster)."""
        entry = self.k8s_clusters.get(cluster)
        return None if entry is None else tuple(entry.get("namespaces") or ())

    def ignored_prefixes(self) -> tuple[S3Uri, ...]:
        """Locations the pipeline writes to: events for them must never be scored."""
        return (self.output_uri, self.error_uri, self.state_uri)


#: The model protocols (catalog key ``protocol``, workers/protocols/) and the catalog
#: key that holds each one's options (checked in detail by the worker at start-up:
#: workers.protocols.check_catalog). Default: sagemaker.
PROTOCOL_OPTION_KEYS: dict[str, str | None] = {
    "sagemaker": None,
    "v2": "v2",
    "json": "json",
    "lambda": "lambda",
    "sas-executions": "sas",
}


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
        kind = "an integer" if integer else "a number"

        def parse(v: str) -> float:
            n = int(v) if integer else float(v)
            if not lo <= n <= hi:
                raise _OutOfRange(f"allowed range {lo:g}..{hi:g}")
            return n

        value = self.raw(name)
        try:
            return parse(value)
        except _OutOfRange as exc:
            self.problems.append(f"{PREFIX}{name}={value!r} is out of range ({exc})")
        except ValueError as exc:
            self.problems.append(f"{PREFIX}{name}={value!r} is not {kind} ({exc})")
        return None

    def uri(self, name: str, default: S3Uri | None = None) -> S3Uri | None:
        value = self.raw(name)
        if not value:
            return default
        try:
            return S3Uri.parse(value).as_prefix()
        except ValueError as exc:
            self.problems.append(f"{PREFIX}{name}={value!r}: {exc}")
            return None


def _mb(n: float | None) -> int | None:
    return None if n is None else int(n * 1024 * 1024)


def _gb(n: float | None) -> int | None:
    return None if n is None else int(n * 1e9)


class _OutOfRange(ValueError):
    pass


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


def parse_model_catalog(value: str) -> dict[str, dict[str, Any]]:
    """A model catalog (JSON, or the path of a JSON file), checked as at start-up;
    ValueError says what is wrong."""
    return _catalog(value)


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
                _check_model_env(entry["env"])
            except ValueError as exc:
                raise ValueError(f"{image}: env: {exc}") from None
        for key, check in _K8S_CATALOG_CHECKS.items():
            if key in entry:
                try:
                    check(entry[key])
                except ValueError as exc:
                    raise ValueError(f"{image}: {key}: {exc}") from None
    return data


# ------------------------------------------------------------------ kubernetes
#: A cluster name (K8S_CLUSTERS keys and the k8s_cluster tag).
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z", re.ASCII)
#: DNS-1123 subdomain: names of Secrets and ServiceAccounts.
DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z", re.ASCII
)
#: A Kubernetes resource quantity: 500m, 2Gi, 1.5, 1e3, ...
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?\Z", re.ASCII)
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+\Z", re.ASCII)
_LOOPBACK_HTTP = re.compile(
    r"^http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?/?\Z", re.ASCII
)
_CLUSTER_MODES = ("in_cluster", "kubeconfig", "endpoint")
_CLUSTER_KEYS = {
    "in_cluster": set(),
    "kubeconfig": {"context"},
    "endpoint": {"ca_data", "ca_file", "eks_cluster_name", "region"},
}


def _json_or_file(value: str) -> Any:
    text = value
    if not value.lstrip().startswith(("{", "[")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        text = path.read_text(encoding="utf-8")
    return json.loads(text)


def _k8s_clusters(value: str) -> dict[str, dict[str, Any]]:
    if not value:
        return {}
    data = _json_or_file(value)
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, dict) for v in data.values())
    ):
        raise ValueError('expected a JSON object {"<cluster name>": {...}, ...}')
    for name, entry in data.items():
        try:
            _check_cluster(entry)
        except ValueError as exc:
            raise ValueError(f"cluster {name!r}: {exc}") from None
        if not CLUSTER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid cluster name")
    return data


def _check_cluster(entry: dict[str, Any]) -> None:
    modes = [m for m in _CLUSTER_MODES if entry.get(m)]
    if len(modes) != 1:
        raise ValueError('give exactly one of "in_cluster": true, "kubeconfig" or "endpoint"')
    mode = modes[0]
    allowed = {mode, "namespaces", *_CLUSTER_KEYS[mode]}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"unexpected keys {unknown} with {mode!r} (allowed: {sorted(allowed)})")
    if mode == "in_cluster" and entry["in_cluster"] is not True:
        raise ValueError('"in_cluster" must be true')
    if mode == "kubeconfig":
        path = Path(str(entry["kubeconfig"])).expanduser()
        if not path.is_file():
            raise ValueError(f"kubeconfig: no such file: {path}")
        if not isinstance(entry.get("context", ""), str):
            raise ValueError("context must be a string")
    if mode == "endpoint":
        _check_endpoint(entry)
    namespaces = entry.get("namespaces")
    if namespaces is not None and (
        not isinstance(namespaces, list)
        or not namespaces
        or not all(isinstance(n, str) and DNS1123_LABEL.match(n) for n in namespaces)
    ):
        raise ValueError("namespaces must be a non-empty list of namespace names")


def _check_endpoint(entry: dict[str, Any]) -> None:
    endpoint = entry["endpoint"]
    if not isinstance(endpoint, str) or not (
        endpoint.startswith("https://") or _LOOPBACK_HTTP.match(endpoint)
    ):
        raise ValueError("endpoint must be an https:// URL (http:// only for a loopback emulator)")
    if not isinstance(entry.get("eks_cluster_name"), str) or not entry["eks_cluster_name"]:
        raise ValueError("eks_cluster_name is required with endpoint (the token is made for it)")
    if "ca_data" in entry and "ca_file" in entry:
        raise ValueError("give ca_data or ca_file, not both")
    if endpoint.startswith("https://") and not (entry.get("ca_data") or entry.get("ca_file")):
        raise ValueError("ca_data or ca_file is required with an https endpoint")
    if "ca_data" in entry:
        try:
            pem = base64.b64decode(str(entry["ca_data"]), validate=True)
        except ValueError:
            pem = b""
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError(
                "ca_data must be a base64-encoded PEM certificate (as in a kubeconfig)"
            )
    if "ca_file" in entry and not Path(str(entry["ca_file"])).expanduser().is_file():
        raise ValueError(f"ca_file: no such file: {entry['ca_file']}")
    region = entry.get("region")
    if region is not None and not (isinstance(region, str) and _AWS_REGION.match(region)):
        raise ValueError(f"region {region!r} is not an AWS region")


def _check_resources(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) - {"requests", "limits"}:
        raise ValueError('expected {"requests": {...}, "limits": {...}}')
    for part, quantities in obj.items():
        if not isinstance(quantities, dict):
            raise ValueError(f"{part} must be an object")
        for resource, q in quantities.items():
            if isinstance(q, bool) or not isinstance(q, str | int | float):
                raise ValueError(f"{part}.{resource}: {q!r} is not a quantity")
            if not _QUANTITY.match(str(q)):
                raise ValueError(f"{part}.{resource}: {q!r} is not a quantity (e.g. 500m, 2Gi)")
    return obj


def _check_string_map(obj: Any) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ValueError('expected an object of strings, e.g. {"workload": "scoring"}')
    return obj


def _check_tolerations(obj: Any) -> list[dict[str, Any]]:
    keys = {"key", "operator", "value", "effect", "tolerationSeconds"}
    if not isinstance(obj, list) or not all(isinstance(t, dict) for t in obj):
        raise ValueError("expected a list of tolerations")
    for t in obj:
        if set(t) - keys:
            raise ValueError(f"unexpected keys {sorted(set(t) - keys)} (allowed: {sorted(keys)})")
        if t.get("operator", "Equal") not in {"Equal", "Exists"}:
            raise ValueError("operator must be Equal or Exists")
        if t.get("effect", "") not in {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}:
            raise ValueError("effect must be NoSchedule, PreferNoSchedule or NoExecute")
    return obj


def _check_names(obj: Any) -> list[str]:
    if not isinstance(obj, list) or not all(
        isinstance(n, str) and DNS1123_SUBDOMAIN.match(n) for n in obj
    ):
        raise ValueError("expected a list of Secret names")
    return obj


def _check_name(obj: Any) -> str:
    if not isinstance(obj, str) or not (obj == "" or DNS1123_SUBDOMAIN.match(obj)):
        raise ValueError("must be a DNS-1123 name (lowercase letters, digits, '-', '.')")
    return obj


def _check_model_env(obj: Any) -> dict[str, Any]:
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


def _check_args(obj: Any) -> list[str]:
    if not isinstance(obj, list) or not all(isinstance(a, str) for a in obj):
        raise ValueError('expected a list of strings, e.g. ["serve"]')
    return obj


def _check_uid(obj: Any) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or not 1 <= obj <= 2**31 - 1:
        raise ValueError("expected a non-root user id (a positive integer)")
    return obj


#: Per-image kubernetes settings a model catalog entry may carry.
_K8S_CATALOG_CHECKS: dict[str, Callable[[Any], Any]] = {
    "resources": _check_resources,
    "node_selector": _check_string_map,
    "tolerations": _check_tolerations,
    "image_pull_secrets": _check_names,
    "service_account": _check_name,
    "args": _check_args,
    "run_as_user": _check_uid,
}


def _json_setting(check: Callable[[Any], Any], empty: Any) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        return check(json.loads(value)) if value else empty

    return parse


def _name_list(value: str) -> tuple[str, ...]:
    return tuple(_check_names([n.strip() for n in value.split(",") if n.strip()]))


def _namespace_list(value: str) -> tuple[str, ...]:
    items = tuple(n.strip() for n in value.split(",") if n.strip())
    bad = [n for n in items if not DNS1123_LABEL.match(n)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: not a namespace name (DNS-1123 label)")
    return items


def _prefixes(value: str) -> tuple[str, ...]:
    items = tuple(images.check_prefix(p.strip()) for p in value.split(",") if p.strip())
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
        k8s_clusters=r.convert("K8S_CLUSTERS", _k8s_clusters, "a cluster map"),
        k8s_namespaces=r.convert("K8S_NAMESPACES", _namespace_list, "a list of namespaces"),
        k8s_resources=r.convert(
            "K8S_RESOURCES", _json_setting(_check_resources, {}), "a resources object"
        ),
        k8s_node_selector=r.convert(
            "K8S_NODE_SELECTOR", _json_setting(_check_string_map, {}), "a node selector"
        ),
        k8s_tolerations=r.convert(
            "K8S_TOLERATIONS", _json_setting(_check_tolerations, []), "a list of tolerations"
        ),
        k8s_image_pull_secrets=r.convert("K8S_IMAGE_PULL_SECRETS", _name_list, "a list of names"),
        k8s_service_account=r.convert("K8S_SERVICE_ACCOUNT", _check_name, "a service account"),
        k8s_active_deadline=r.number("K8S_ACTIVE_DEADLINE", 60, 7 * 86400),
        k8s_unschedulable_timeout=r.number("K8S_UNSCHEDULABLE_TIMEOUT", 1, 3600, integer=False),
        max_payload_bytes=None,
        max_live_models=r.number("MAX_LIVE_MODELS", 0, 10000),
        warm_idle_seconds=r.number("WARM_IDLE_SECONDS", 0, 86400, integer=False),
        warm_max_per_image=r.number("WARM_MAX_PER_IMAGE", 1, 100),
        max_in_flight=r.number("MAX_IN_FLIGHT", 1, 64),
        model_timeout=r.number("MODEL_TIMEOUT", 1, 3600, integer=False),
        launch_timeout=r.number("LAUNCH_TIMEOUT", 1, 3600, integer=False),
        max_answer_ratio=r.number("MAX_ANSWER_RATIO", 1, 10000, integer=False),
        max_answer_floor_bytes=_mb(r.number("MAX_ANSWER_FLOOR_MB", 0.01, 4096, integer=False)),
        max_expanded_bytes=_gb(r.number("MAX_EXPANDED_GB", 0.001, 100000, integer=False)),
        max_expansion_ratio=r.number("MAX_EXPANSION_RATIO", 2, 1e9, integer=False),
        max_step_seconds=r.number("MAX_STEP_SECONDS", 5, 43200, integer=False),
        csv_header=r.convert("CSV_HEADER", _choice("auto", "present", "absent"), "a header mode"),
        retry_max=r.number("RETRY_MAX", 0, 50),
        retry_backoff=r.number("RETRY_BACKOFF", 0, 900, integer=False),
        retry_backoff_max=r.number("RETRY_BACKOFF_MAX", 0, 900, integer=False),
        model_log_lines=r.number("MODEL_LOG_LINES", 0, 1000),
        reap_interval=r.number("REAP_INTERVAL", 10, 86400, integer=False),
        reap_max_age=r.number("REAP_MAX_AGE", 60, 7 * 86400, integer=False),
        state_dir=state_dir,
        log_level=r.convert("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "a level"),
        events=r.convert("EVENTS", _bool, "true or false"),
        monitor_idle=r.number("MONITOR_IDLE", 60, 7 * 86400),
        flower_unauthenticated=r.convert("FLOWER_UNAUTHENTICATED", _bool, "true or false"),
    )
    payload_mb = r.number("MAX_PAYLOAD_MB", 0.01, 100, integer=False)
    if payload_mb is not None:
        settings_kwargs["max_payload_bytes"] = int(payload_mb * 1024 * 1024)
    step, model = settings_kwargs["max_step_seconds"], settings_kwargs["model_timeout"]
    if step is not None and model is not None and step + model >= SQS_VISIBILITY_CAP:
        r.problems.append(
            f"{PREFIX}MAX_STEP_SECONDS={step:g} plus {PREFIX}MODEL_TIMEOUT={model:g} must stay "
            f"under {SQS_VISIBILITY_CAP} s: SQS cannot keep a message invisible longer than "
            "12 hours, and a step checks its time between mini-batches"
        )
    if settings_kwargs["log_level"]:
        settings_kwargs["log_level"] = settings_kwargs["log_level"].upper()

    if not settings_kwargs["dead_letter_queue"] and settings_kwargs["queue"]:
        settings_kwargs["dead_letter_queue"] = settings_kwargs["queue"] + "-dlq"
    queue_url = settings_kwargs["queue_url"]
    if queue_url and not queue_url.startswith(("https://", "http://")):
        r.problems.append(f"{PREFIX}QUEUE_URL must be an http(s) SQS queue URL")
    elif queue_url and queue_url.rstrip("/").rsplit("/", 1)[-1] != settings_kwargs["queue"]:
        # the steps queue's URL is derived from this one with the name <QUEUE>-steps
        r.problems.append(
            f"{PREFIX}QUEUE_URL={queue_url} does not end in the queue name "
            f"{PREFIX}QUEUE={settings_kwargs['queue']}; set both to the same queue"
        )
    if input_uri and output_uri:
        written = (("OUTPUT_URI", output_uri), ("ERROR_URI", error_uri), ("STATE_URI", state_uri))
        output_overlaps = False
        for name, other in written:
            if not other or not (input_uri.contains(other) or other.contains(input_uri)):
                continue
            given = bool(env.get(PREFIX + name, "").strip())
            if name == "OUTPUT_URI":
                output_overlaps = True
            elif not given and output_overlaps:
                continue  # its default comes from OUTPUT_URI, already reported
            default = "" if given else " (its default, from OUTPUT_URI: set it)"
            r.problems.append(
                f"{PREFIX}{name}={other}{default} overlaps {PREFIX}INPUT_URI={input_uri}: "
                "outputs written there would be scored again"
            )

    if settings_kwargs["k8s_tolerations"] is not None:
        settings_kwargs["k8s_tolerations"] = tuple(settings_kwargs["k8s_tolerations"])
    _check_k8s_defaults(settings_kwargs, r.problems)

    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**settings_kwargs)


def _check_k8s_defaults(kw: dict[str, Any], problems: list[str]) -> None:
    """No K8S_CLUSTERS: the default cluster is the worker's own. Every cluster gets its
    list of namespaces: its own, else K8S_NAMESPACES, else the default namespace only
    (so a k8s_namespace tag can never name kube-system by default, and the reaper
    looks wherever pods may run). With the kubernetes backend, the default cluster
    (and namespace) must be among the configured ones."""
    clusters, cluster = kw["k8s_clusters"], kw["default_k8s_cluster"]
    listed, namespace = kw["k8s_namespaces"], kw["default_k8s_namespace"]
    if clusters is None or cluster is None or listed is None or namespace is None:
        return
    if listed and namespace not in listed:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_NAMESPACE={namespace!r} is not one of "
            f"{PREFIX}K8S_NAMESPACES ({', '.join(listed)})"
        )
    fallback = list(listed or (namespace,))
    if not clusters:
        kw["k8s_clusters"] = {cluster: {"in_cluster": True, "namespaces": fallback}}
        return
    kw["k8s_clusters"] = clusters = {
        name: {**entry, "namespaces": entry.get("namespaces") or fallback}
        for name, entry in clusters.items()
    }
    if kw["launch_backend"] != "kubernetes":
        return
    if cluster not in clusters:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_CLUSTER={cluster!r} is not one of the clusters in "
            f"{PREFIX}K8S_CLUSTERS ({', '.join(sorted(clusters))})"
        )
        return
    namespaces = clusters[cluster].get("namespaces")
    namespace = kw["default_k8s_namespace"]
    if namespaces and namespace and namespace not in namespaces:
        problems.append(
            f"{PREFIX}DEFAULT_K8S_NAMESPACE={namespace!r} is not among the namespaces of "
            f"cluster {cluster!r} in {PREFIX}K8S_CLUSTERS ({', '.join(namespaces)})"
        )


_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?\Z", re.ASCII)


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
