"""The models of the local stack: the examples' catalog (each under its exact image
name), merged with the user's (``scorefleet up --catalog``, SCOREFLEET_MODEL_CATALOG),
and the image prefixes that may run on this machine."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_PREFIX = "scorefleet-examples/"
IRIS_IMAGE = f"{EXAMPLES_PREFIX}iris:1.0"


def iris_catalog() -> dict[str, Any]:
    """The example models, each under its exact image name: an image that has no
    entry of its own (``scorefleet-examples/iris:2.0``) gets an ``.error`` saying
    what to add, rather than being scored by another model."""
    serve = REPO / "examples" / "iris" / "serve.py"
    if not serve.exists():
        raise FileNotFoundError(
            f"{serve} not found: the local stack runs from a source checkout (pip install -e .)"
        )
    return {
        IRIS_IMAGE: {
            "command": f"{{python}} {shlex.quote(str(serve))} --host {{host}} --port {{port}}",
            "response_header": True,
            # its four features, by position: a file that does not fit gets its .error
            # before the model starts (the MLflow signature beside the model)
            "inputs": {"mlflow": str(serve.with_name("MLmodel")), "closed": True, "ordered": True},
            "env": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        }
    }


def local_models(
    environ: Mapping[str, str], catalog_file: Path | None = None
) -> tuple[dict[str, Any], str]:
    """The local stack's model catalog and allowed image prefixes: the examples,
    then the entries of ``SCOREFLEET_MODEL_CATALOG`` in ``environ`` (JSON or a
    file), then those of ``catalog_file`` (later entries win); allowed are the
    examples' prefix, ``SCOREFLEET_ALLOWED_IMAGE_PREFIXES`` and every image the
    catalog names (on this machine the catalog says what may run). Raises
    ValueError naming the source of a bad catalog, with every problem the worker
    would find (:func:`workers.catalog.check`, the one check of a catalog)."""
    from scorefleet.images import prefix_allows
    from scorefleet.settings import parse_model_catalog
    from workers.catalog import check

    catalog = iris_catalog()
    sources = [
        ("SCOREFLEET_MODEL_CATALOG", environ.get("SCOREFLEET_MODEL_CATALOG", "").strip()),
        (f"--catalog {catalog_file}", str(catalog_file) if catalog_file else ""),
    ]
    for name, value in sources:
        if value:
            try:
                entries = parse_model_catalog(value)
                check(entries)
                catalog.update(entries)
            except ValueError as exc:
                raise ValueError(f"{name}: not a model catalog: {exc}") from None
    prefixes = [EXAMPLES_PREFIX]
    given = environ.get("SCOREFLEET_ALLOWED_IMAGE_PREFIXES", "")
    for raw in [*given.split(","), *(k.removesuffix("*") for k in catalog)]:
        prefix = raw.strip()
        # left out only if a prefix already there allows it (at a boundary, as it is
        # matched): "my/iris" does not cover "my/iris-2:1"
        if prefix and not any(p == prefix or prefix_allows(p, prefix) for p in prefixes):
            prefixes.append(prefix)
    return catalog, ",".join(prefixes)
