"""The catalog key `protocol`: checked at start-up, default sagemaker, never a tag.

The protocols are listed once (workers/scoring/protocols/registry.py): the core takes
any name (the Lambda never speaks to a model), the worker's one catalog check
(workers/catalog.py) refuses one no protocol has."""

import json
import os
import subprocess
import sys

import pytest

from scorefleet.settings import ConfigError
from scorefleet.settings import load as load_core
from tests.helpers import REPO
from tests.unit.test_settings import BASE
from workers.catalog import check, problems
from workers.scoring.protocols import PROTOCOLS, protocol_for
from workers.settings import load


def test_the_registry_is_the_one_list_of_protocols():
    assert all(protocol_for(name).name == name for name in PROTOCOLS)
    # the core lists none: it takes a name it does not know (the worker refuses it)
    catalog = '{"reg/a:1": {"protocol": "grpc"}}'
    assert load_core({**BASE, "SCOREFLEET_MODEL_CATALOG": catalog}).models.spec("reg/a:1")
    with pytest.raises(ConfigError):
        load({**BASE, "SCOREFLEET_MODEL_CATALOG": catalog})


def test_the_default_protocol_is_sagemaker():
    s = load({**BASE, "SCOREFLEET_MODEL_CATALOG": '{"reg/a:1": {"port": 1}}'})
    assert protocol_for(s.models.spec("reg/a:1").protocol).name == "sagemaker"
    assert protocol_for(s.models.spec("reg/unlisted:1").protocol).name == "sagemaker"
    assert "protocol" not in s.models.spec("reg/a:1").extra


def test_an_unknown_protocol_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SCOREFLEET_MODEL_CATALOG": '{"reg/a:1": {"protocol": "grpc"}}'})
    text = str(err.value)
    assert "MODEL_CATALOG" in text and "reg/a:1: protocol must be one of sagemaker" in text
    with pytest.raises(ConfigError, match="did you mean 'sagemaker'"):
        load({**BASE, "SCOREFLEET_MODEL_CATALOG": '{"reg/a:1": {"protocol": "sagemkr"}}'})


def test_unknown_options_of_the_sagemaker_protocol_are_refused():
    check({"reg/a:1": {"protocol": "sagemaker"}, "reg/b:1": {}})
    with pytest.raises(
        ValueError, match="unknown option 'send_headers': did you mean 'send_header'"
    ):
        protocol_for("sagemaker").parse_options({"send_headers": False})


def test_a_worker_with_bad_protocol_options_does_not_start(tmp_path):
    """The worker app checks each protocol's options (workers.settings.load) before it
    consumes anything, and exits 2 naming the variable, the image and the option."""
    bad = {"reg/a:1": {"protocol": "v2", "v2": {"model_name": "iris", "layout": "rows"}}}
    env = {
        **os.environ,
        **BASE,
        "SCOREFLEET_BROKER_URL": "sqs://k:s@127.0.0.1:9",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(bad),
        "SCOREFLEET_STATE_DIR": str(tmp_path),
    }
    r = subprocess.run(
        [sys.executable, "-c", "import workers.app"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "SCOREFLEET_MODEL_CATALOG=" in r.stderr
    assert "is not a model catalog (reg/a:1: v2: layout must be one of tensor, columns" in (
        r.stderr
    )


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"protocol": "v2", "v2": {}}, "v2: model_name is required"),
        ({"protocol": "v2", "v2": {"model_name": "m", "datatype": "FP16"}}, "datatype must be"),
        ({"protocol": "v2", "v2": {"model_name": "m", "colour": 1}}, "unknown option 'colour'"),
        ({"protocol": "json", "json": {}}, "json: path is required"),
        ({"protocol": "json", "json": {"path": "/p", "request": "rows"}}, "request must be"),
        ({"protocol": "json", "json": {"path": "/p", "shape": "tree"}}, "shape must be"),
        ({"protocol": "lambda", "lambda": {"event": "sqs"}}, "event must be one of"),
        ({"protocol": "sas-executions", "sas": {"poll_initial": 0}}, "poll_initial"),
        ({"protocol": "sas-executions", "sas": {"file_name": "x.txt"}}, "ending .csv"),
        ({"protocol": "lambda", "v2": {"model_name": "m"}}, "options of the v2 protocol"),
    ],
)
def test_bad_protocol_options_name_the_image_and_the_option(entry, needle):
    load_core({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/a:1": entry})})  # core: ok
    (problem,) = problems({"reg/a:1": entry})
    assert problem.startswith("reg/a:1: ") and needle in problem


def test_the_example_catalog_is_valid_and_has_one_entry_per_protocol():
    from workers.localstack.stack import local_models

    path = REPO / "examples" / "catalog.json"
    catalog, _ = local_models({}, path)  # parsed and checked as `scorefleet up --catalog`
    entries = json.loads(path.read_text())
    assert {e.get("protocol", "sagemaker") for e in entries.values()} == set(PROTOCOLS)
    for image in entries:
        argv = catalog[image]["command"].split()
        scripts = [a for a in argv if a.endswith(".py")]
        assert all((REPO / s).is_file() for s in scripts), (image, scripts)
