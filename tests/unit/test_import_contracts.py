"""The import-linter contracts of pyproject.toml (run by ``make lint``) cannot pass
silently: on a copy of the packages, each planted bad import breaks the contract that
forbids it, and the clean copy keeps them all (so a failure below is the plant's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("scorefleet", "lambda_enqueue", "workers", "tasks")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

LAYERS = "Layers: tasks over workers; workers and the Lambda side by side over the core"
LAMBDA = "The Lambda imports no worker, task or Kubernetes code"
CORE = "The core imports no Kubernetes, worker, task or Lambda code"
RUNTIME = "Runtime code imports neither the CLI nor the local stack"
FORMATS_PROTOCOLS = "Formats and protocols are independent of each other"
BACKENDS = "The launch backends are independent of each other"
ACYCLIC = "No import cycles between the modules of a package"
ALL = (LAYERS, LAMBDA, CORE, RUNTIME, FORMATS_PROTOCOLS, BACKENDS, ACYCLIC)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copyfile(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def lint(root: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        # the copy first on the path: the editable install points at the repository
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_the_repository_keeps_every_contract():
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ALL:
        assert f"{name} KEPT" in proc.stdout


def test_the_clean_copy_keeps_every_contract(copy):
    rc, out = lint(copy)
    assert rc == 0, out
    assert f"Contracts: {len(ALL)} kept, 0 broken." in out


PLANTS = [
    # (file, code appended, contracts it must break)
    pytest.param(
        "lambda_enqueue/events.py", "import workers.runtime", {LAMBDA, LAYERS}, id="lambda-workers"
    ),
    pytest.param(
        "lambda_enqueue/events.py",
        "def _late():\n    from tasks import steps",
        {LAMBDA, LAYERS},
        id="lambda-tasks-in-a-function",
    ),
    pytest.param(
        "lambda_enqueue/handler.py", "import kubernetes.client", {LAMBDA}, id="lambda-kubernetes"
    ),
    pytest.param(
        # indirect: the handler imports the core, which now imports the kubernetes client
        "scorefleet/job.py",
        "import kubernetes",
        {CORE, LAMBDA},
        id="core-kubernetes-reaches-the-lambda",
    ),
    pytest.param(
        "scorefleet/s3uri.py",
        "def _late():\n    from workers import runtime",
        # everything imports the core: through it, formats reach protocols, and one
        # backend the other
        {CORE, LAYERS, LAMBDA, FORMATS_PROTOCOLS, BACKENDS},
        id="core-workers",
    ),
    pytest.param(
        "scorefleet/errors.py", "import lambda_enqueue.events", {CORE, LAYERS}, id="core-lambda"
    ),
    pytest.param("workers/cli/commands.py", "import tasks.launch", {LAYERS}, id="workers-tasks"),
    pytest.param(
        # only the local stack's bridge may call the handler
        "workers/cli/commands.py",
        "from lambda_enqueue import handler",
        {LAYERS},
        id="workers-lambda-outside-the-bridge",
    ),
    pytest.param(
        "workers/scoring/engine.py",
        "def _late():\n    from workers.localstack import stack",
        {RUNTIME, ACYCLIC},  # the local stack runs the engine: a cycle as well
        id="scoring-localstack",
    ),
    pytest.param(
        "workers/backends/kubernetes/manifest.py",
        "from workers.cli import runs",
        # the CLI reads run records the backends write; and it loads the worker's
        # settings, whose registry imports every backend: the other one too
        {RUNTIME, ACYCLIC, BACKENDS},
        id="backend-cli",
    ),
    pytest.param("tasks/score.py", "import workers.cli.commands", {RUNTIME}, id="tasks-cli"),
    pytest.param(
        "workers/scoring/formats/csv.py",
        "from workers.scoring.protocols import answers",
        {FORMATS_PROTOCOLS},
        id="format-protocol",
    ),
    pytest.param(
        "workers/scoring/protocols/v2.py",
        "def _late():\n    from workers.scoring.formats import options",
        {FORMATS_PROTOCOLS},
        id="protocol-format",
    ),
    pytest.param(
        "workers/backends/local/backend.py",
        "def _late():\n    from workers.backends.kubernetes import manifest",
        {BACKENDS},
        id="local-kubernetes",
    ),
    pytest.param(
        "workers/backends/kubernetes/warm.py",
        "from workers.backends.local import processes",
        {BACKENDS},
        id="kubernetes-local",
    ),
    pytest.param(
        # the registry names the protocols; a protocol importing it is a cycle
        "workers/scoring/protocols/sagemaker.py",
        "def _late():\n    from workers.scoring.protocols import registry",
        {ACYCLIC},
        id="protocol-registry-cycle",
    ),
    pytest.param(
        "workers/scoring/formats/magic.py",
        "def _late():\n    from workers.scoring.formats import csvsplit",
        {ACYCLIC},
        id="formats-cycle",
    ),
]


@pytest.mark.parametrize(("path", "code", "broken"), PLANTS)
def test_a_planted_import_breaks_its_contract(copy, path, code, broken):
    target = copy / path
    original = target.read_text(encoding="utf-8")
    target.write_text(f"{original}\n\n{code}\n", encoding="utf-8")
    try:
        rc, out = lint(copy)
    finally:
        target.write_text(original, encoding="utf-8")
    assert rc != 0, out
    for name in ALL:
        assert f"{name} {'BROKEN' if name in broken else 'KEPT'}" in out, (name, out)


#: the layout's size rule (docs/development.md): a module that grows past it is split
MAX_MODULE_LINES = 500


def test_no_module_of_the_packages_is_over_500_lines():
    """parquet.py reached 528 lines after issue 24's merge and went unnoticed: the rule
    is checked, not remembered."""
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
    }
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"split these modules (the rule: at most {MAX_MODULE_LINES} lines): {over}"
