"""The catalog key `protocol`: checked at start-up, default sagemaker, never a tag."""

import json
import os
import subprocess
import sys

import pytest

from scorefleet.settings import PROTOCOL_OPTION_KEYS, ConfigError, load
from tests.helpers import REPO
from tests.unit.test_settings import BASE
from workers.scoring.protocols import PROTOCOLS, check_catalog, protocol_for


def test_the_registry_and_the_settings_name_the_same_protocols():
    assert set(PROTOCOLS) == set(PROTOCOL_OPTION_KEYS)
    assert all(protocol_for(name).name == name for name in PROTOCOLS)


def test_the_default_protocol_is_sagemaker():
    s = load({**BASE, "SCOREFLEET_MODEL_CATALOG": '{"reg/a:1": {"port": 1}}'})
    assert s.models.spec("reg/a:1").protocol == "sagemaker"
    assert s.models.spec("reg/unlisted:1").protocol == "sagemaker"
    assert "protocol" not in s.models.spec("reg/a:1").extra


def test_an_unknown_protocol_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SCOREFLEET_MODEL_CATALOG": '{"reg/a:1": {"protocol": "grpc"}}'})
    text = str(err.value)
    assert "MODEL_CATALOG" in text and "reg/a:1: protocol must be one of sagemaker" in text


def test_options_of_the_sagemaker_protocol_are_refused():
    check_catalog({"reg/a:1": {"protocol": "sagemaker"}, "reg/b:1": {}})
    with pytest.raises(ValueError, match="takes no options"):
        protocol_for("sagemaker").parse_options({"x": 1})


def test_a_worker_with_bad_protocol_options_does_not_start(tmp_path):
    """The settings check the key's shape; the worker app checks each protocol's
    options before it consumes anything, and exits 2 naming the variable."""
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
    assert "SCOREFLEET_MODEL_CATALOG: reg/a:1: v2: layout must be one of tensor, columns" in (
        r.stderr
    )


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"protocol": "v2", "v2": {}}, "v2: model_name is required"),
        ({"protocol": "v2", "v2": {"model_name": "m", "datatype": "FP16"}}, "datatype must be"),
        ({"protocol": "v2", "v2": {"model_name": "m", "colour": 1}}, "unknown option colour"),
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
    load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/a:1": entry})})  # shape ok
    with pytest.raises(ValueError, match=r"^reg/a:1: ") as err:
        check_catalog({"reg/a:1": entry})
    assert needle in str(err.value)


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
