"""Build the Lambda's deployment package: ``python -m lambda_enqueue.build``.

The zip holds only what ``lambda_enqueue.handler`` needs:

* our modules on an allow-list (``MODULES``): the handler and the parts of the core
  (``scorefleet/``) it loads. The build follows the handler's imports through the
  source (module level and inside functions) and fails unless they reach exactly the
  listed modules: a new import of ours into the Lambda is a reviewed change to the
  list, never a silent addition. That the list holds no worker, task or Kubernetes
  code is import-linter's to guarantee (``make lint``; the contracts in pyproject.toml);
* celery, kombu and boto3 with their runtime dependencies, copied file for file from
  the installed distributions (so the Lambda runs exactly the versions the test suite
  ran), minus celery's command-line-only dependencies (click's plug-ins, click-repl,
  prompt-toolkit, wcwidth; click itself stays: celery imports it). All are pure Python:
  one zip for x86_64 and arm64.
* **boto3 and botocore are bundled**, not taken from the Lambda runtime: the runtime's
  copy changes when AWS updates it, and the package must not depend on that. Only the
  service models the handler uses are kept (``BOTOCORE_SERVICES``: S3 and SQS).
* bytecode compiled for Python 3.11 with unchecked hashes: Lambda's code directory is
  read-only, so without it every cold start would compile every module again.

The zip is reproducible (sorted entries, fixed timestamps and modes). Options:
``--out DIR`` (default ``dist/lambda``), ``--measure N`` (cold imports of the handler
from the unzipped package in fresh interpreters; prints the median).
"""

from __future__ import annotations

import argparse
import ast
import compileall
import hashlib
import importlib.metadata as md
import json
import os
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
ENTRY = "lambda_enqueue.handler"
#: Our top-level packages: the handler's imports of these are followed through the source.
OWN = ("lambda_enqueue", "scorefleet", "tasks", "workers")
#: What of ours goes into the Lambda (packages with their ``__init__``): exactly what
#: the handler imports, directly or not. Adding a module here puts it in every cold
#: start; import-linter keeps worker, task and Kubernetes code out of all of them.
MODULES = (
    "lambda_enqueue",
    "lambda_enqueue.events",
    "lambda_enqueue.handler",
    "scorefleet",
    "scorefleet.aws",
    "scorefleet.celeryconf",
    "scorefleet.chain",
    "scorefleet.errors",
    "scorefleet.images",
    "scorefleet.intake",
    "scorefleet.job",
    "scorefleet.logctx",
    "scorefleet.provenance",
    "scorefleet.redact",
    "scorefleet.s3uri",
    "scorefleet.settings",
    "scorefleet.settings.catalog",
    "scorefleet.settings.declare",
    "scorefleet.settings.kubernetes",
    "scorefleet.settings.local",
    "scorefleet.settings.sections",
    "scorefleet.storage",
    "scorefleet.storage.errordoc",
    "scorefleet.storage.ledger",
    "scorefleet.storage.outcome",
    "scorefleet.storage.s3io",
    "scorefleet.submission",
)
#: Distributions the handler imports directly; their requirements come along.
ROOTS = ("celery", "kombu", "boto3")
#: Required by celery for its command line only (the handler never imports them).
SKIP_DISTRIBUTIONS = frozenset(
    {"click-didyoumean", "click-plugins", "click-repl", "prompt-toolkit", "wcwidth"}
)
#: botocore service models kept (the handler uses S3; kombu's SQS transport uses SQS).
BOTOCORE_SERVICES = ("s3", "sqs")
#: The Lambda runtime this is built for (python3.11, x86_64 or arm64).
TARGET: dict[str, str] = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
LAMBDA_TASK_ROOT = "/var/task"
ZIP_NAME = "scorefleet-lambda.zip"


class BuildError(RuntimeError):
    pass


# --------------------------------------------------------------- our own modules
def module_path(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> set[str]:
    """Absolute names imported anywhere in the module (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imported_modules(entry: str = ENTRY) -> dict[str, Path]:
    """Our modules reachable from ``entry`` (with their parent packages)."""
    todo, seen = [entry], {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        if path is None:
            continue  # "from scorefleet import logctx" also names the attribute scorefleet.logctx
        seen[name] = path
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(m for m in _imports(path, name) if m.split(".")[0] in OWN)
    return seen


def own_modules(entry: str = ENTRY, allowed: tuple[str, ...] = MODULES) -> dict[str, Path]:
    """The allow-listed modules, checked against what ``entry`` really imports."""
    reached = imported_modules(entry)
    unlisted = sorted(set(reached) - set(allowed))
    if unlisted:
        raise BuildError(
            f"the handler imports {', '.join(unlisted)}, not in lambda_enqueue/build.py "
            "MODULES: add what belongs in every cold start there (make lint checks that "
            "it holds no worker code), or drop the import"
        )
    stale = sorted(set(allowed) - set(reached))
    if stale:
        raise BuildError(
            f"lambda_enqueue/build.py MODULES lists {', '.join(stale)}, which the handler "
            "no longer imports: remove it from the list"
        )
    return {name: reached[name] for name in allowed}


# ---------------------------------------------------------- third-party packages
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(roots: tuple[str, ...] = ROOTS) -> dict[str, md.Distribution]:
    """The installed distributions the roots need at run time (no extras)."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(TARGET, extra="")
    todo, seen = list(roots), {}
    while todo:
        name = _canonical(todo.pop())
        if name in seen or name in SKIP_DISTRIBUTIONS:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise BuildError(f"{name} is not installed; run from the project's venv") from exc
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return seen


_DIST_INFO_DROP = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _wanted(rel: str) -> bool:
    parts = rel.split("/")
    if "__pycache__" in parts or rel.endswith((".pyc", ".pyi")) or rel.startswith(".."):
        return False
    if parts[0].endswith(".dist-info") and parts[-1] in _DIST_INFO_DROP:
        return False
    if parts[0] == "bin":
        return False
    if parts[:2] == ["botocore", "data"] and len(parts) > 3:
        return parts[2] in BOTOCORE_SERVICES
    return True


# ------------------------------------------------------------------------- build
def stage(dest: Path) -> dict[str, str]:
    """Lay the package out in ``dest``; returns {distribution: version}."""
    for name, path in sorted(own_modules().items()):
        rel = Path(*name.split("."))
        target = dest / (
            rel / "__init__.py" if path.name == "__init__.py" else rel.with_suffix(".py")
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    versions: dict[str, str] = {}
    for name, dist in sorted(distributions().items()):
        versions[name] = dist.version
        root = Path(str(dist.locate_file("")))
        for file in dist.files or []:
            posix = file.as_posix()
            if not _wanted(posix):
                continue
            src = root / posix
            if src.is_file():
                target = dest / posix
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
    return versions


def compile_bytecode(dest: Path) -> bool:
    """Compile for the target Python; False (and no .pyc) on another interpreter."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != TARGET["python_version"]:
        return False
    ok = compileall.compile_dir(
        str(dest),
        quiet=2,
        workers=1,
        # tracebacks name /var/task/..., where Lambda unpacks the code; no build path
        stripdir=str(dest),
        prependdir=LAMBDA_TASK_ROOT,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise BuildError("some modules do not compile")
    return True


def write_zip(src: Path, target: Path) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(src).as_posix(), date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=9)


def build(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    target = out / ZIP_NAME
    with tempfile.TemporaryDirectory(prefix="scorefleet-lambda-") as tmp:
        staging = Path(tmp)
        versions = stage(staging)
        compiled = compile_bytecode(staging)
        unzipped = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        write_zip(staging, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    manifest: dict[str, Any] = {
        "zip": str(target),
        "sha256": digest,
        "bytes": target.stat().st_size,
        "unzipped_bytes": unzipped,
        "handler": f"{ENTRY}.handler",
        "runtime": f"python{TARGET['python_version']}",
        "bytecode": compiled,
        "modules": sorted(own_modules()),
        "distributions": versions,
        "botocore_services": list(BOTOCORE_SERVICES),
    }
    (out / "scorefleet-lambda.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ----------------------------------------------------------------------- measure
COLD = (
    "import sys, time; sys.path.insert(0, {pkg!r}); t = time.perf_counter(); "
    "import lambda_enqueue.handler; print(time.perf_counter() - t)"
)


def measure(zip_path: Path, runs: int) -> list[float]:
    """Cold imports of the handler from the unzipped package: fresh interpreters with
    nothing but the standard library and the package on sys.path (-I -S), writing no
    bytecode (-B), as on Lambda's read-only code directory."""
    with tempfile.TemporaryDirectory(prefix="scorefleet-lambda-run-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        times = []
        for _ in range(runs):
            proc = subprocess.run(
                [sys.executable, "-I", "-S", "-B", "-c", COLD.format(pkg=tmp)],
                capture_output=True,
                text=True,
                check=True,
                env={"PATH": os.environ.get("PATH", "")},
            )
            times.append(float(proc.stdout.strip().splitlines()[-1]))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lambda_enqueue.build", description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "dist" / "lambda")
    ap.add_argument("--measure", type=int, default=0, metavar="N", help="cold imports to time")
    args = ap.parse_args(argv)
    try:
        manifest = build(args.out)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    mib = manifest["bytes"] / 2**20
    unzipped = manifest["unzipped_bytes"] / 2**20
    print(f"{manifest['zip']}: {mib:.1f} MiB ({unzipped:.1f} MiB unzipped)")
    print(f"sha256 {manifest['sha256']}")
    print("bundled: " + ", ".join(f"{k} {v}" for k, v in manifest["distributions"].items()))
    if not manifest["bytecode"]:
        print(f"note: no bytecode (this is Python {sys.version.split()[0]}, not 3.11)")
    if args.measure:
        times = measure(Path(manifest["zip"]), args.measure)
        print(
            f"cold import of {ENTRY}, median of {len(times)}: "
            f"{statistics.median(times) * 1000:.0f} ms "
            f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
