"""The settings, by section: each variable declared once, on the field that holds it
(:func:`~scorefleet.settings.declare.var`: name, default, meaning, parser and range).

The order of the fields is the order of the reference table (docs/configuration.md)
and of the problems a bad configuration reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scorefleet import images
from scorefleet.s3uri import S3Uri
from scorefleet.settings.catalog import ModelSpec, RejectBudget, parse_model_catalog, spec_for
from scorefleet.settings.declare import Located, choice, flag, lower_name, var
from scorefleet.settings.declare import number as num

#: SQS: a message's visibility cannot be extended past 12 hours from its receipt.
SQS_VISIBILITY_CAP = 43200
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?\Z", re.ASCII)


# --------------------------------------------------------------------- parsers
def _s3_prefix(value: str) -> S3Uri | None:
    return S3Uri.parse(value).as_prefix() if value else None


S3_PREFIX = Located(_s3_prefix)


def _queue_name(value: str) -> str:
    if not _SQS_NAME.match(value):
        raise ValueError("letters, digits, '-' and '_' only, at most 80 characters")
    return value


def _log_level(value: str) -> str:
    return choice("debug", "info", "warning", "error")(value).upper()


MB = 1024 * 1024


# -------------------------------------------------------------------- sections
@dataclass(frozen=True)
class Storage:
    """Where files come from and where outcomes and run records go."""

    input_uri: S3Uri = var(
        "INPUT_URI",
        None,
        "S3 prefix that is watched for files to score, e.g. s3://data/in/",
        S3_PREFIX,
        required=True,
    )
    output_uri: S3Uri = var(
        "OUTPUT_URI",
        None,
        "S3 prefix where <relative path>.scoreout is published",
        S3_PREFIX,
        required=True,
    )
    error_uri: S3Uri = var(
        "ERROR_URI", "", "S3 prefix for <relative path>.error (default: OUTPUT_URI)", S3_PREFIX
    )
    state_uri: S3Uri = var(
        "STATE_URI",
        "",
        "S3 prefix for run records and staging (default: s3://<output bucket>/scorefleet-state/)",
        S3_PREFIX,
    )

    def ignored_prefixes(self) -> tuple[S3Uri, ...]:
        """Locations the pipeline writes to: events for them must never be scored."""
        return (self.output_uri, self.error_uri, self.state_uri)


@dataclass(frozen=True)
class Aws:
    region: str = var(
        "AWS_REGION",
        "",
        "AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1)",
    )


@dataclass(frozen=True)
class Broker:
    """The Celery broker: SQS queues."""

    url: str = var(
        "BROKER_URL",
        "sqs://",
        "Celery broker URL; sqs:// uses the AWS default credential chain (IRSA on EKS)",
    )
    tls: bool = var(
        "BROKER_TLS",
        "true",
        "use HTTPS to reach SQS (false only for a local emulator)",
        flag,
        expected="true or false",
    )
    queue: str = var(
        "QUEUE",
        "scorefleet",
        "name of the Celery task queue on SQS (new files); the later steps of files already "
        "running use <QUEUE>-steps beside it, so a burst of new files waits behind them",
        _queue_name,
        expected="a valid SQS queue name",
    )
    queue_url: str = var(
        "QUEUE_URL",
        "",
        "full SQS URL of the task queue (the steps queue's is derived from it); set it in "
        "production so no ListQueues/CreateQueue permission is needed",
    )
    dead_letter_queue: str = var(
        "DEAD_LETTER_QUEUE",
        "",
        "name or URL of the task queue's dead-letter queue, for `scorefleet dlq` and Flower's "
        "Broker tab (default: <QUEUE>-dlq; a name is looked for beside QUEUE_URL when that is "
        "set)",
    )
    visibility_timeout: int = var(
        "VISIBILITY_TIMEOUT",
        "300",
        "SQS visibility timeout in seconds; must match the queue's own setting. Running "
        "steps extend it as they go, so it only bounds how soon a dead worker's message "
        "comes back",
        num(5, 43200),
    )

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


@dataclass(frozen=True)
class Models:
    """Which model images may run, and how each is run (the catalog)."""

    default_image: str = var(
        "DEFAULT_MODEL_IMAGE",
        "",
        "model image used when a file has no model_image tag (empty: such files get an .error)",
    )
    allowed_image_prefixes: tuple[str, ...] = var(
        "ALLOWED_IMAGE_PREFIXES",
        None,
        "comma-separated image prefixes that may be run, e.g. "
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/ ('*' allows any image: "
        "not for production)",
        images.parse_prefixes,
        expected="a list of prefixes",
        required=True,
    )
    require_digest: bool = var(
        "REQUIRE_IMAGE_DIGEST",
        "false",
        "run model images by digest only (model_image=<repository>@sha256:<64 hex>): a file "
        "naming a tag gets an .error saying how to find its digest (docs/security.md)",
        flag,
        expected="true or false",
    )
    catalog: Mapping[str, Mapping[str, Any]] = var(
        "MODEL_CATALOG",
        "",
        "per-image settings as JSON, or a path to a JSON file (see docs/configuration.md)",
        parse_model_catalog,
        expected="a model catalog",
    )
    launch_timeout: float = var(
        "LAUNCH_TIMEOUT",
        "180",
        "seconds a model container may take to be ready (GET /ping for the sagemaker "
        "protocol; each protocol says what ready is: docs/models.md)",
        num(1, 3600, integer=False),
    )
    log_lines: int = var(
        "MODEL_LOG_LINES",
        "40",
        "how many of the model's last log lines go into an .error file",
        num(0, 1000),
    )

    def image_allowed(self, image: str) -> bool:
        """Is ``image`` a valid reference under an allowed prefix (at a boundary)?"""
        return images.image_allowed(self.allowed_image_prefixes, image)

    def spec(self, image: str) -> ModelSpec:
        """The catalog entry that applies to ``image`` (:func:`.catalog.spec_for`)."""
        return spec_for(self.catalog, image)


@dataclass(frozen=True)
class Launch:
    """How model containers are started, kept warm and reaped."""

    backend: str = var(
        "LAUNCH_BACKEND",
        "local",
        "how model containers are started: local (a process per file) or kubernetes "
        "(a pod per file)",
        # any name: which backends exist is the worker's registry's to say
        # (workers/backends/registry.py, checked by workers.settings.load)
        lower_name,
        expected="a backend",
    )
    warm_idle_seconds: float = var(
        "WARM_IDLE_SECONDS",
        "0",
        "warm mode (opt-in): keep a model container alive this many seconds after its file "
        "and reuse it for the next file of the same image; 0: a fresh container per file",
        num(0, 86400, integer=False),
    )
    warm_max_per_image: int = var(
        "WARM_MAX_PER_IMAGE",
        "4",
        "warm mode: at most this many idle containers kept per image (and cluster/namespace)",
        num(1, 100),
    )
    reap_interval: float = var(
        "REAP_INTERVAL",
        "300",
        "seconds between runs of the reaper (beat) that removes model containers left behind",
        num(10, 86400, integer=False),
    )
    reap_max_age: float = var(
        "REAP_MAX_AGE",
        "21600",
        "a model container older than this many seconds is removed by the reaper "
        "whatever its state",
        num(60, 7 * 86400, integer=False),
    )


@dataclass(frozen=True)
class Scoring:
    """The data path: mini-batches, the model's answers, input limits, step time."""

    max_payload_bytes: int = var(
        "MAX_PAYLOAD_MB",
        "1",
        "upper bound of one mini-batch sent to the model, in MB (like SageMaker's "
        "MaxPayloadInMB, which allows up to 100); small batches keep several in flight",
        num(0.01, 100, integer=False, scale=MB),
        key="max_payload_bytes",
    )
    max_in_flight: int = var(
        "MAX_IN_FLIGHT", "4", "mini-batches sent to the model concurrently per file", num(1, 64)
    )
    model_timeout: float = var(
        "MODEL_TIMEOUT",
        "120",
        "seconds the model has to answer one mini-batch, in total (a model that sends its "
        "answer slowly is cut off when they are up)",
        num(1, 3600, integer=False),
    )
    max_answer_ratio: float = var(
        "MAX_ANSWER_RATIO",
        "20",
        "a model's answer to a mini-batch may be at most this many times the size of the "
        "request (but always MAX_ANSWER_FLOOR_MB); a bigger answer is an error, so a model "
        "cannot exhaust the worker's memory",
        num(1, 10000, integer=False),
    )
    max_answer_floor_bytes: int = var(
        "MAX_ANSWER_FLOOR_MB",
        "1",
        "the smallest cap on a model's answer to one mini-batch, in MB (see MAX_ANSWER_RATIO)",
        num(0.01, 4096, integer=False, scale=MB),
        key="max_answer_floor_bytes",
    )
    max_expanded_bytes: int = var(
        "MAX_EXPANDED_GB",
        "50",
        "a compressed input file (gzip, bzip2, xz, zstd) is refused with an .error once it "
        "expands past this many GB",
        num(0.001, 100000, integer=False, scale=1e9),
        key="max_expanded_bytes",
    )
    max_expansion_ratio: float = var(
        "MAX_EXPANSION_RATIO",
        "200",
        "a compressed input file is refused with an .error once it has expanded to more than "
        "16 MiB and more than this many times the compressed bytes read so far (real CSV "
        "compresses 3-100 times; a decompression bomb 1000 times and more)",
        num(2, 1e9, integer=False),
    )
    max_step_seconds: float = var(
        "MAX_STEP_SECONDS",
        "42300",
        "a score step that runs this long hands its file to a continuation of itself, its "
        "output parts committed (SQS cannot keep a message hidden past 12 hours from its "
        "receipt): a file may take any number of steps; MAX_STEP_SECONDS + MODEL_TIMEOUT "
        "must stay under 43200",
        num(5, 43200, integer=False),
    )
    max_rejected_rows: RejectBudget = var(
        "MAX_REJECTED_ROWS",
        "0",
        "rows a model may refuse before the whole file fails: a count (e.g. 10) or a fraction "
        "of the file's rows (e.g. 0.001); refused rows go to <name>.rejected. Per image: the "
        "catalog's max_rejected_rows; per file: the max_rejected_rows tag",
        RejectBudget.parse,
        expected="a row count or a fraction",
    )
    max_row_group_bytes: int = var(
        "MAX_ROW_GROUP_MB",
        "128",
        "a Parquet row group larger than this many MB, uncompressed in the columns read, gets "
        "an .error saying how to rewrite the file (a worker holds one row group's pages at a "
        "time: raise it with the workers' memory)",
        num(1, 65536, integer=False, scale=MB),
        key="max_row_group_bytes",
    )
    csv_header: str = var(
        "CSV_HEADER",
        "auto",
        "whether CSV input files start with a header row: auto (the rule of docs/formats.md), "
        "present or absent; a file's csv_header tag or its image's catalog entry overrides it",
        choice("auto", "present", "absent"),
        expected="a header mode",
    )


@dataclass(frozen=True)
class Retries:
    """Retries of a step after a transient failure."""

    max: int = var(
        "RETRY_MAX",
        "5",
        "retries of a step after a transient failure (connection error, 5xx, throttling)",
        num(0, 50),
    )
    backoff: float = var(
        "RETRY_BACKOFF",
        "2",
        "first retry delay in seconds; doubles each retry, with full jitter",
        num(0, 900, integer=False),
    )
    backoff_max: float = var(
        "RETRY_BACKOFF_MAX",
        "300",
        "longest retry delay in seconds (at most 900: retries wait in SQS, not in the worker)",
        num(0, 900, integer=False),
    )


@dataclass(frozen=True)
class Monitoring:
    """Logs, Celery events for Flower, and Flower itself."""

    log_level: str = var(
        "LOG_LEVEL",
        "INFO",
        "log level of workers and the Lambda",
        _log_level,
        expected="a level",
    )
    events: bool = var(
        "EVENTS",
        "true",
        "workers send Celery events and answer remote control over SNS fanout, for Flower and "
        "celery events/inspect (docs/flower.md); false: no SNS is used",
        flag,
        expected="true or false",
    )
    event_flush: float = var(
        "EVENT_FLUSH_SECONDS",
        "1",
        "a worker gathers its task events for this long and publishes them as one SNS message "
        "(Flower shows a step at most this much later); 0: one publish per turn of its event "
        "loop, Celery's own",
        num(0, 10, integer=False),
    )
    idle: int = var(
        "MONITOR_IDLE",
        "900",
        "seconds after which the sweeper (beat) deletes an event, reply or control queue whose "
        "Flower, celery events/inspect or worker stopped refreshing it",
        num(60, 7 * 86400),
    )
    flower_unauthenticated: bool = var(
        "FLOWER_UNAUTHENTICATED",
        "false",
        "true lets Flower start without FLOWER_BASIC_AUTH (or OAuth), on a loopback address "
        "only: for the local stack, never in production",
        flag,
        expected="true or false",
    )


@dataclass(frozen=True)
class Sweep:
    """The sweep: files whose notification never came are queued anyway."""

    interval: float = var(
        "SWEEP_INTERVAL",
        "600",
        "seconds between sweeps (beat: tasks.sweep) that queue files whose notification never "
        "came (docs/reliability.md); 0 turns the periodic sweep off",
        num(0, 86400, integer=False),
    )
    grace: float = var(
        "SWEEP_GRACE_SECONDS",
        "900",
        "the sweep leaves files younger than this alone: their notification may still be on "
        "its way",
        num(0, 7 * 86400, integer=False),
    )
    max_keys: int = var(
        "SWEEP_MAX_KEYS",
        "100000",
        "input keys one sweep lists at most; the next goes on from its checkpoint",
        num(1, 100_000_000),
    )
    max_enqueue: int = var(
        "SWEEP_MAX_ENQUEUE",
        "1000",
        "files one sweep queues at most (the rest: the next sweep)",
        num(0, 1_000_000),
    )
    requeue_after: float = var(
        "SWEEP_REQUEUE_AFTER",
        "3600",
        "a file whose run record has said queued for this many seconds is queued again by the "
        "sweep (its chain was lost; the run record keeps it scored once)",
        num(60, 30 * 86400, integer=False),
    )


@dataclass(frozen=True)
class Metrics:
    """Prometheus metrics served by the workers (docs/metrics.md)."""

    port: int = var(
        "METRICS_PORT",
        "9100",
        "workers serve Prometheus metrics on this port at /metrics (docs/metrics.md); 0: none",
        num(0, 65535),
    )
    address: str = var(
        "METRICS_ADDRESS",
        "0.0.0.0",  # noqa: S104 - scraped from the pod network
        "address the workers' metrics server listens on (the pod's, for Prometheus to scrape)",
    )
