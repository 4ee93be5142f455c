"""The model catalog is checked in one call (workers/catalog.py), by every key's owner:
the worker at start-up, `scorefleet config`, `scorefleet up` and the chart refuse the
same catalogs with the same words, every problem at once, each naming the image and
the option; a key nobody reads is refused, naming the nearest known one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from scorefleet.settings import ConfigError, ModelSpec
from scorefleet.settings import load as load_core
from scorefleet.settings.catalog import CORE_KEYS
from tests.helpers import REPO
from tests.unit.test_config_golden import problems as listed_problems
from tests.unit.test_settings import BASE
from workers import catalog
from workers.backends import registry as backends
from workers.backends.base import BackendKind
from workers.catalog import CatalogError
from workers.scoring.contract import CATALOG_KEYS as CONTRACT_KEYS
from workers.scoring.contract.spec import COLUMN_OPTIONS, INPUT_OPTIONS
from workers.scoring.formats import registry as formats
from workers.scoring.formats.options import CATALOG_KEYS as FORMAT_KEYS
from workers.scoring.formats.options import resolve
from workers.scoring.protocols import PROTOCOLS, HttpCheck, ModelProtocol, PortCheck, Readiness
from workers.scoring.protocols import registry as protocols
from workers.settings import load

V2 = {"protocol": "v2"}
JSON = {"protocol": "json"}
LAMBDA = {"protocol": "lambda"}
SAS = {"protocol": "sas-executions"}

#: (what is bad, the entry, a word of its one problem). One per option of every
#: protocol, format and backend, and per core key: test_every_option_has_a_bad_case
#: keeps it so when an option is added.
BAD: list[tuple[str, dict[str, Any], str]] = [
    # --- the core's keys (the Lambda checks them too)
    ("protocol", {"protocol": 5}, "protocol must be the name of a protocol"),
    ("max_rejected_rows", {"max_rejected_rows": -1}, "max_rejected_rows must be a row count"),
    ("env", {"env": {"AWS_PROFILE": "x"}}, "env: AWS_PROFILE: a model gets no AWS_"),
    # --- the protocols: which one, and each option of each
    ("protocol name", {"protocol": "grpc"}, "protocol must be one of sagemaker"),
    ("sagemaker.send_header", {"send_header": "false"}, "send_header must be a bool"),
    ("sagemaker.response_header", {"response_header": 1}, "response_header must be a bool"),
    (
        "sagemaker.response_format",
        {"sagemaker": {"response_format": "xml"}},
        "sagemaker: response_format must be csv or json",
    ),
    ("v2.model_name", {**V2, "v2": {"model_name": 5}}, "v2: model_name must be a str"),
    (
        "v2.model_version",
        {**V2, "v2": {"model_name": "m", "model_version": 3}},
        "v2: model_version must be a str",
    ),
    ("v2.layout", {**V2, "v2": {"model_name": "m", "layout": "rows"}}, "v2: layout must be"),
    ("v2.datatype", {**V2, "v2": {"model_name": "m", "datatype": "FP16"}}, "v2: datatype must"),
    (
        "v2.datatypes",
        {**V2, "v2": {"model_name": "m", "datatypes": {"a": "X"}}},
        "v2: datatypes.a must be",
    ),
    (
        "v2.input_name",
        {**V2, "v2": {"model_name": "m", "input_name": 1}},
        "v2: input_name must be a str",
    ),
    ("v2.outputs", {**V2, "v2": {"model_name": "m", "outputs": [1]}}, "v2: outputs must be"),
    (
        "v2.parameters",
        {**V2, "v2": {"model_name": "m", "parameters": []}},
        "v2: parameters must be a dict",
    ),
    ("json.path", {**JSON, "json": {"path": "predict"}}, "json: path is required"),
    (
        "json.ready_path",
        {**JSON, "json": {"path": "/p", "ready_path": "health"}},
        "json: ready_path must start with '/'",
    ),
    (
        "json.ready_method",
        {**JSON, "json": {"path": "/p", "ready_method": "PUT"}},
        "json: ready_method must be",
    ),
    (
        "json.ready_contains",
        {**JSON, "json": {"path": "/p", "ready_contains": 5}},
        "json: ready_contains must be a str",
    ),
    ("json.request", {**JSON, "json": {"path": "/p", "request": "rows"}}, "json: request must"),
    (
        "json.instances_as",
        {**JSON, "json": {"path": "/p", "instances_as": "tuples"}},
        "json: instances_as must be",
    ),
    (
        "json.response",
        {**JSON, "json": {"path": "/p", "response": 5}},
        "json: response must be a str",
    ),
    ("json.shape", {**JSON, "json": {"path": "/p", "shape": "tree"}}, "json: shape must be"),
    (
        "json.columns",
        {**JSON, "json": {"path": "/p", "columns": "x"}},
        "json: columns must be a list",
    ),
    ("json.names", {**JSON, "json": {"path": "/p", "names": [1]}}, "json: names must be a list"),
    ("lambda.event", {**LAMBDA, "lambda": {"event": "sqs"}}, "lambda: event must be one of"),
    ("lambda.response", {**LAMBDA, "lambda": {"response": 5}}, "lambda: response must be"),
    ("lambda.shape", {**LAMBDA, "lambda": {"shape": "tree"}}, "lambda: shape must be"),
    ("lambda.columns", {**LAMBDA, "lambda": {"columns": 5}}, "lambda: columns must be a list"),
    ("lambda.names", {**LAMBDA, "lambda": {"names": 5}}, "lambda: names must be a list"),
    ("sas.columns", {**SAS, "sas": {"columns": [1]}}, "sas: columns must be a list"),
    ("sas.header", {**SAS, "sas": {"header": "yes"}}, "sas: header must be a bool"),
    ("sas.file_name", {**SAS, "sas": {"file_name": "x.txt"}}, "sas: file_name must be"),
    ("sas.poll_initial", {**SAS, "sas": {"poll_initial": 0}}, "sas: expected 0 < poll_initial"),
    ("sas.poll_max", {**SAS, "sas": {"poll_max": 100}}, "sas: expected 0 < poll_initial"),
    ("sas.log_lines", {**SAS, "sas": {"log_lines": 5000}}, "sas: log_lines must be between"),
    # --- the formats' keys
    ("content_type", {"content_type": "excel"}, "content_type 'excel' is not a format"),
    ("output_format", {"output_format": 5}, "output_format must be a string"),
    ("keep_columns", {"keep_columns": []}, "keep_columns names no column"),
    ("model_columns", {"model_columns": [""]}, "model_columns must be a list of column names"),
    ("drop_columns", {"drop_columns": ["a", "a"]}, "drop_columns names the column 'a' twice"),
    ("csv_header", {"csv_header": "sometimes"}, "csv_header must be one of auto, present, absent"),
    # --- the model's declared contract (workers/scoring/contract/spec.py)
    ("inputs", {"inputs": ["a"]}, "inputs: expected an object"),
    ("inputs.columns", {"inputs": {"columns": []}}, "inputs: columns must be a list"),
    ("inputs.mlflow", {"inputs": {"mlflow": ""}}, "inputs: mlflow must be where"),
    (
        "inputs.columns and inputs.mlflow",
        {"inputs": {"columns": ["a"], "mlflow": "m"}},
        "inputs: give either columns",
    ),
    ("inputs.closed", {"inputs": {"columns": ["a"], "closed": 1}}, "inputs: closed must be"),
    ("inputs.ordered", {"inputs": {"columns": ["a"], "ordered": "y"}}, "inputs: ordered must"),
    (
        "inputs.columns[].name",
        {"inputs": {"columns": [{"type": "number"}]}},
        "inputs: columns[0]: name is required",
    ),
    (
        "inputs.columns[].type",
        {"inputs": {"columns": [{"name": "a", "type": "float128"}]}},
        "inputs: columns[0].type must be one of any, number",
    ),
    (
        "inputs.columns[].required",
        {"inputs": {"columns": [{"name": "a", "required": "no"}]}},
        "inputs: columns[0].required must be true or false",
    ),
    (
        "inputs.columns[].nullable",
        {"inputs": {"columns": [{"name": "a", "nullable": 0}]}},
        "inputs: columns[0].nullable must be true or false",
    ),
    (
        "a typo in a column of inputs",
        {"inputs": {"columns": [{"name": "a", "typ": "number"}]}},
        "inputs: columns[0]: unknown option 'typ': did you mean 'type'?",
    ),
    (
        "a column named twice",
        {"inputs": {"columns": ["a", {"name": "a"}]}},
        "inputs: columns names 'a' twice",
    ),
    # --- the backends' keys
    ("command", {"command": "serve --port 80"}, "command: expected a string with a {port}"),
    ("cwd", {"cwd": ""}, "cwd: expected the path of a directory"),
    ("launch_timeout", {"launch_timeout": -1}, "launch_timeout: expected seconds"),
    ("replicas", {"replicas": 0}, "replicas: expected a whole number from 1 to 64"),
    ("local_aws", {"local_aws": "yes"}, "local_aws: expected true or false"),
    ("min_mb_per_replica", {"min_mb_per_replica": "1"}, "min_mb_per_replica: expected megabytes"),
    ("port", {"port": 0}, "port: expected a port number"),
    ("resources", {"resources": {"requests": {"cpu": "lots"}}}, "resources: requests.cpu"),
    ("node_selector", {"node_selector": {"gpu": 1}}, "node_selector: expected an object"),
    ("tolerations", {"tolerations": [{"operator": "In"}]}, "tolerations: operator must be"),
    ("image_pull_secrets", {"image_pull_secrets": ["Reg_Cred"]}, "image_pull_secrets: expected"),
    ("service_account", {"service_account": "Not Valid"}, "service_account: must be a DNS-1123"),
    ("args", {"args": "serve"}, "args: expected a list of strings"),
    ("run_as_user", {"run_as_user": 0}, "run_as_user: expected a non-root user id"),
    # --- keys nobody reads
    ("a typo", {"comand": "x --port {port}"}, "unknown key 'comand': did you mean 'command'?"),
    ("a key of nobody", {"typo_key": 1}, "unknown key 'typo_key' (the nearest is"),
    (
        "a typo in a protocol's options",
        {**V2, "v2": {"model_name": "m", "model_nam": "m"}},
        "v2: unknown option 'model_nam': did you mean 'model_name'?",
    ),
    (
        "another protocol's options",
        {**LAMBDA, "v2": {"model_name": "m"}},
        "'v2' holds options of the v2 protocol, but the entry's protocol is 'lambda'",
    ),
    (
        "a sagemaker option with another protocol",
        {**JSON, "json": {"path": "/p"}, "send_header": False},
        "'send_header' is an option of the sagemaker protocol, but the entry's protocol is 'json'",
    ),
    (
        "a sagemaker option given twice",
        {"send_header": False, "sagemaker": {"send_header": True}},
        "send_header is given twice",
    ),
]
IDS = [what for what, _, _ in BAD]
#: Options whose every JSON value is good: the event the Lambda probe sends is the
#: handler's business.
NO_BAD_VALUE = {"lambda.probe_event"}


def images() -> dict[str, dict[str, Any]]:
    """Every bad entry under an image of its own."""
    return {f"reg/bad-{i}:1": entry for i, (_, entry, _) in enumerate(BAD)}


def test_every_option_has_a_bad_case():
    """Every option of every protocol, format and backend, and every core key: a new
    one without a case here fails this test."""
    options = {f"{p.options_key}.{o}" for p in PROTOCOLS.values() for o in p.option_names}
    cased = set(IDS)
    missing = sorted(options - cased - NO_BAD_VALUE)
    missing += sorted(set(CORE_KEYS) - cased)
    missing += sorted(set(FORMAT_KEYS) - cased)
    missing += sorted(set(CONTRACT_KEYS) - cased)
    missing += sorted({f"inputs.{o}" for o in INPUT_OPTIONS} - cased)
    missing += sorted({f"inputs.columns[].{o}" for o in COLUMN_OPTIONS} - cased)
    missing += sorted(set(backends.catalog_options()) - cased)
    assert not missing, f"no bad catalog for {missing}"


@pytest.mark.parametrize(("what", "entry", "needle"), BAD, ids=IDS)
def test_a_bad_option_is_one_problem_naming_the_image_and_the_option(what, entry, needle):
    found = catalog.problems({"reg/m:1": entry})
    assert len(found) == 1, found
    assert found[0].startswith("reg/m:1: ") and needle in found[0], found[0]
    # the worker's load reports it as a bad SCOREFLEET_MODEL_CATALOG, in those words
    env = {**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/m:1": entry})}
    with pytest.raises(ConfigError) as err:
        load(env)
    (problem,) = err.value.problems
    assert problem.startswith("SCOREFLEET_MODEL_CATALOG=") and f"({found[0]})" in problem


def test_scorefleet_config_refuses_every_catalog_the_worker_refuses():
    """One catalog holding every bad entry: the worker exits 2 at start-up, and
    `scorefleet config` refuses it, both listing the same problems, one per entry,
    all at once; `scorefleet up` (workers.localstack.models) refuses each entry with
    the same words."""
    bad = images()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/nonexistent-home",
        **BASE,
        "SCOREFLEET_BROKER_URL": "sqs://k:s@127.0.0.1:9",
        "SCOREFLEET_STATE_DIR": "/nonexistent-state",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(bad),
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    worker, config = run("-c", "import workers.app"), run("-m", "workers.cli", "config")
    assert worker.returncode == 2, worker.stderr
    assert config.returncode != 0, config.stdout
    refused = listed_problems(worker.stderr)
    assert refused == listed_problems(config.stderr)
    assert len(refused) == len(bad)
    expected = catalog.problems(bad)
    for image, line, problem in zip(bad, refused, expected, strict=True):
        assert f"({problem})" in line and problem.startswith(f"{image}: ")
    # scorefleet up: the same problems, from the same call
    from workers.localstack.models import local_models

    with pytest.raises(ValueError, match="SCOREFLEET_MODEL_CATALOG: not a model catalog"):
        local_models({"SCOREFLEET_MODEL_CATALOG": json.dumps(bad)})
    with pytest.raises(CatalogError) as err:
        catalog.check(bad)
    assert err.value.problems == expected


def test_every_problem_of_an_entry_is_reported_at_once():
    entry = {
        "protocol": "v2",
        "v2": {"layout": "rows"},
        "resources": 5,
        "content_type": "excel",
        "typo_key": 1,
        "max_rejected_rows": "lots",
    }
    found = catalog.problems({"reg/m:1": entry, "reg/ok:1": {"port": 9000}})
    keys = ["max_rejected_rows", "v2: ", "content_type", "resources", "typo_key"]
    assert len(found) == len(keys), found
    assert all(k in p for k, p in zip(keys, found, strict=True)), found


def test_the_core_checks_only_its_own_keys():
    """What the Lambda loads (scorefleet.settings) names no protocol, format or backend:
    it refuses a bad value of its own keys, and takes any other key as it comes."""
    lenient = {"reg/a:1": {"protocol": "grpc", "typo_key": 1, "command": "x", "content_type": "x"}}
    core = load_core({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps(lenient)})
    assert core.models.spec("reg/a:1").protocol == "grpc"
    for key, value in (("max_rejected_rows", -1), ("env", {"AWS_X": "1"}), ("protocol", 5)):
        with pytest.raises(ConfigError, match=f"reg/a:1: {key}"):
            load_core({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/a:1": {key: value}})})
    assert catalog.problems(lenient)  # ... and the worker refuses all four


# ------------------------------------------------------------ sagemaker's options
@pytest.mark.parametrize(
    "entry",
    [
        {"send_header": False, "response_header": True, "response_format": "json"},
        {"sagemaker": {"send_header": False, "response_header": True, "response_format": "json"}},
        {"protocol": "sagemaker", "send_header": False, "sagemaker": {"response_header": True}},
    ],
    ids=["top level (as catalogs always had them)", "in their object", "both places"],
)
def test_the_sagemaker_options_live_with_the_protocol(entry):
    assert catalog.problems({"reg/m:1": entry}) == []
    spec = load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/m:1": entry})}).models.spec(
        "reg/m:1"
    )
    cls = protocols.protocol_for(spec.protocol)
    options = cls.options_of(spec)
    assert options.send_header is False and options.response_header is True
    assert cls.sends_header(spec) is False
    assert not hasattr(spec, "send_header")  # not a field of the core's ModelSpec


# ------------------------------------------- one module + one registry line
class EchoProtocol(ModelProtocol):
    """A protocol the product does not have: its module and its registry line."""

    name: ClassVar[str] = "echo"
    options_key: ClassVar[str | None] = "echo"
    option_names: ClassVar[frozenset[str]] = frozenset({"greeting"})

    @classmethod
    def parse_options(cls, raw: Any) -> Any:
        from workers.scoring.protocols.answers import check_keys

        check_keys(raw, cls.option_names)
        return dict(raw)

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        return Readiness((PortCheck(), HttpCheck("/hello"), HttpCheck("/run", "POST")))

    def score(self, batch: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError


def test_a_new_protocol_is_a_module_and_a_registry_line(monkeypatch):
    monkeypatch.setitem(protocols.PROTOCOLS, "echo", EchoProtocol)
    good = {"reg/e:1": {"protocol": "echo", "echo": {"greeting": "hi"}}}
    assert catalog.problems(good) == []
    assert load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps(good)})
    (problem,) = catalog.problems({"reg/e:1": {"protocol": "echo", "echo": {"greting": "x"}}})
    assert "echo: unknown option 'greting': did you mean 'greeting'?" in problem
    (problem,) = catalog.problems({"reg/v:1": {"protocol": "lambda", "echo": {}}})
    assert "holds options of the echo protocol" in problem
    # and the kubernetes backend makes its pod's probe from what it says ready is
    from workers.backends.kubernetes.manifest import probe_handler

    spec = ModelSpec(image="reg/e:1", protocol="echo")
    assert probe_handler(EchoProtocol.readiness(spec), 8080) == {
        "httpGet": {"path": "/hello", "port": 8080}
    }
    assert EchoProtocol.describe_readiness(spec) == (
        "a connection to its port and GET /hello and POST /run"
    )


def test_a_readiness_without_a_get_is_a_tcp_probe():
    from workers.backends.kubernetes.manifest import probe_handler

    for checks in [(PortCheck(),), (HttpCheck("/x", "POST"),), (HttpCheck("/x", "HEAD"),)]:
        assert probe_handler(Readiness(checks), 9000) == {"tcpSocket": {"port": 9000}}


def test_a_new_backend_is_a_module_and_a_registry_line(monkeypatch):
    def check_datacenter(value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError("expected a datacenter name")

    nomad = BackendKind(
        name="nomad",
        make=lambda settings: object(),  # type: ignore[arg-type,return-value]
        catalog_options={"datacenter": check_datacenter},
    )
    monkeypatch.setitem(backends.BACKENDS, "nomad", nomad)
    env = {
        **BASE,
        "SCOREFLEET_LAUNCH_BACKEND": "nomad",
        "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/n:1": {"datacenter": "eu"}}),
    }
    assert load(env).launch.backend == "nomad"
    (problem,) = catalog.problems({"reg/n:1": {"datacenter": 5}})
    assert problem == "reg/n:1: datacenter: expected a datacenter name"


def test_a_new_format_is_a_module_and_a_registry_line(monkeypatch):
    csv = formats.FORMATS["csv"]
    tsv = formats.Format(
        name="tsv",
        label="TSV",
        media_type="text/tab-separated-values",
        suffixes=(".tsv",),
        writer=csv.writer,
        stream=csv.stream,
    )
    monkeypatch.setitem(formats.FORMATS, "tsv", tsv)
    assert resolve("in/a.tsv.gz", "", {}, {}).input is tsv
    assert resolve("in/a", "text/tab-separated-values", {}, {}).input is tsv
    assert resolve("in/a.csv", "", {"output_format": "tsv"}, {}).output is tsv
    assert catalog.problems({"reg/t:1": {"content_type": "tsv"}}) == []


def test_the_settings_checks_load_no_kubernetes_client():
    """What the worker's settings load imports (the backends' registry, the
    kubernetes backend's checks) loads no kubernetes client: `scorefleet config` and
    a local worker never pay for it."""
    code = (
        "import sys, workers.backends.kubernetes.config, workers.settings, workers.catalog; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.stdout.strip() == "[]", r.stdout


def test_every_extension_and_catalog_key_is_documented():
    """Each protocol has its section in docs/models.md, each format in docs/formats.md,
    and every catalog key a row of the catalog table of docs/configuration.md."""
    docs = REPO / "docs"
    models = (docs / "models.md").read_text()
    assert all(f"## `{name}`" in models for name in PROTOCOLS), "docs/models.md"
    formats_doc = (docs / "formats.md").read_text()
    assert all(f"**{f.label}.**" in formats_doc for f in formats.FORMATS.values())
    rows = [
        line.split("|")[1]
        for line in (docs / "configuration.md").read_text().splitlines()
        if line.startswith("| `") and not line.startswith("| `SCOREFLEET_")
    ]
    table = {key.strip("` ") for row in rows for key in row.split(",")}
    assert not catalog.known_keys() - table, sorted(catalog.known_keys() - table)
