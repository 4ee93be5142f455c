"""An outcome's provenance (scorefleet/provenance.py): its fields, the catalog entry's
identity, and S3's 2 KB limit on user metadata held in the worst case."""

from __future__ import annotations

import urllib.parse

from scorefleet import __version__
from scorefleet.provenance import METADATA_LIMIT, Provenance, fit, size
from scorefleet.settings.catalog import entry_id, spec_for
from scorefleet.storage import outcome
from tests.helpers import make_job


def test_the_fields_and_the_run_records_copy():
    p = Provenance("reg/iris:1", "reg/iris@sha256:" + "a" * 64, "v2", "sha256:" + "b" * 64)
    assert p.metadata() == {
        "model-image": "reg/iris:1",
        "model-image-id": "reg/iris@sha256:" + "a" * 64,
        "model-protocol": "v2",
        "catalog-entry": "sha256:" + "b" * 64,
        "scorefleet-version": __version__,
    }
    assert p.record()["model_image_id"] == p.metadata()["model-image-id"]
    assert "model-image-id" not in Provenance("reg/iris:1").metadata()


def test_the_catalog_entry_identity_is_its_canonical_json():
    a = {"command": "serve --port {port}", "env": {"K": "secret-value"}}
    b = {"env": {"K": "secret-value"}, "command": "serve --port {port}"}
    assert entry_id(a) == entry_id(b) and entry_id(a).startswith("sha256:")
    assert len(entry_id(a)) == len("sha256:") + 64
    assert entry_id({**a, "env": {"K": "other"}}) != entry_id(a)
    assert "secret-value" not in entry_id(a)
    catalog = {"reg/iris*": a}
    assert spec_for(catalog, "reg/iris:2").entry_id == entry_id(a)
    assert spec_for(catalog, "reg/other:1").entry_id == ""


def test_the_worst_case_fits_in_s3s_two_kilobytes():
    """A 1,024-byte key of non-ASCII characters (percent-encoded: capped at 1,024), the
    longest image scorefleet accepts (512) and a long image id: the metadata stays
    within 2 KB, the provenance whole, the source URI shortened from its start."""
    key = "in/" + "é" * 500 + ".csv"
    image = "r" * 500 + "/m:1"
    job = make_job(key=key, model_image=image, etag="e" * 32, version_id="v" * 32)
    prov = Provenance(
        image, image.split(":", maxsplit=1)[0] + "@sha256:" + "f" * 64, "sas-executions"
    )
    prov = Provenance(**{**prov.__dict__, "catalog_entry": "sha256:" + "c" * 64})
    meta = outcome._metadata(job, prov)
    assert size(meta) <= METADATA_LIMIT
    for k, v in prov.metadata().items():
        assert meta[k] == v
    assert meta["source-uri"].startswith("...%") and meta["source-uri"].endswith(".csv")
    assert meta["pipeline-id"] == job.pipeline_id and meta["source-version"] == "v" * 32


def test_an_ordinary_outcome_is_not_shortened():
    job = make_job(key="in/2026/q3.csv")
    meta = outcome._metadata(job, Provenance("reg/iris:1", protocol="sagemaker"))
    assert meta["source-uri"] == "s3://b/in/2026/q3.csv"
    assert fit(meta) == meta


def test_fit_drops_the_last_fields_only_when_shortening_is_not_enough():
    meta = {"a": "x" * 1000, "b": "y" * 1000, "c": "z" * 100}
    assert list(fit(meta)) == ["a", "b"] and size(fit(meta)) <= METADATA_LIMIT


def test_non_ascii_is_percent_encoded():
    p = Provenance("reg/m:1", model_image_id="reg/m@sha256:ü")
    assert p.metadata()["model-image-id"] == "reg/m@sha256:" + urllib.parse.quote("ü")
