"""The docs stay true without running what cannot run here (issue 23: the README's
sections moved to docs/, and every command in every one of those pages stays runnable
as written).

tests/e2e/test_readme.py runs the local stack's commands against a stack. Here, every
command of README.md, docs/local-stack.md, docs/deploy-aws.md and docs/development.md
(in ```sh blocks and inline) is checked against what it names: valid bash; a
`scorefleet` command line that the CLI parses; a `celery` subcommand, its options and
task names; a module for `python -m` with the options it takes; make targets, pytest
markers, extras, the tools of .venv/bin; `aws` commands and options that the AWS CLI
knows; the CloudFormation parameters and outputs a deployment command uses; the chart
values the deployment writes, against the chart's schema; every repository path;
every model image the local stack is asked for. Also: every relative link and anchor
in README.md and docs/ resolves, and docs/development.md's layout and import
contracts are the repository's."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import re
import subprocess
import sys
import tomllib
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from tests.helpers import REPO
from tests.helpers.cloudformation import template
from tests.helpers.docs import COMMAND_DOCS, blocks, commands, heredoc, inline_commands, text
from workers.localstack.models import iris_catalog

CHART = REPO / "helm" / "scorefleet"

#: Commands of other tools that the docs show and this machine cannot check beyond
#: the repository paths they name (no Docker, Kubernetes, helm release or AWS here).
EXTERNAL = {"docker", "eksctl", "helm", "kubectl", "git", "openssl", "sha256sum", "cut", "sed"}
EXTERNAL |= {"head", "cat", "source", "export"}
#: AWS CLI v2 commands that the v1 CLI of the `local` extra does not have.
AWS_V2_ONLY = {("logs", "tail")}
#: Files that a command in the docs makes, by the module or page that makes them.
MADE = {
    "dist/lambda/scorefleet-lambda.zip": REPO / "lambda_enqueue" / "build.py",
}


def all_commands(doc: str) -> list[list[str]]:
    """Every simple command of `doc`: its ```sh blocks, then its inline commands."""
    found = [c for block in blocks(doc) for c in commands(block)]
    return found + [c for inline in inline_commands(doc) for c in commands(inline)]


def test_every_page_shows_commands():
    for doc in COMMAND_DOCS:
        assert blocks(doc), f"{doc} has no ```sh block"
    assert ["make", "up"] in all_commands("README.md")
    assert ["make", "test"] in all_commands("README.md")


@pytest.mark.parametrize("doc", COMMAND_DOCS)
def test_every_block_is_valid_bash(doc):
    for block in blocks(doc):
        check = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert check.returncode == 0, f"{doc}:\n{block}\n{check.stderr}"


# ------------------------------------------------------------- what commands name
@cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def parse_scorefleet(args: list[str]) -> None:
    """Parse a `scorefleet` command line as the CLI does, without running it."""
    from workers.cli.commands import main

    command: click.Command = main
    try:
        ctx = main.make_context("scorefleet", list(args))
        while isinstance(command, click.Group):
            with warnings.catch_warnings():  # Click 8.2: protected_args holds the verb
                warnings.simplefilter("ignore", DeprecationWarning)
                words = [*ctx.protected_args, *ctx.args]
            name, sub, rest = command.resolve_command(ctx, words)
            assert sub is not None and name is not None
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
    except click.exceptions.Exit as done:  # --help
        assert done.exit_code == 0


def check_celery(args: list[str]) -> None:
    from celery.bin.celery import celery

    if args[0] == "-A":  # prose may name a command alone: `celery events`
        assert args[1] == "workers.app", args
        assert importlib.util.find_spec(args[1]) is not None
        args = args[2:]
    sub, rest = args[0], args[1:]
    assert sub in celery.commands, f"celery has no {sub!r} command"
    options = {o for p in celery.commands[sub].params for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=", 1)[0] in options, f"celery {sub} has no {word}"
    if sub == "call":
        name = rest[0]
        tasks_source = "".join(p.read_text() for p in (REPO / "tasks").glob("*.py"))
        assert f'name="{name}"' in tasks_source, f"no task is named {name}"


def check_python_module(args: list[str]) -> None:
    assert args[0] == "-m", args
    spec = importlib.util.find_spec(args[1])
    assert spec is not None and spec.origin, f"no module {args[1]}"
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        origin = origin.with_name("__main__.py")
    source = origin.read_text()
    for word in args[2:]:
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            assert f'"{option}"' in source, f"python -m {args[1]} takes no {option}"


def check_pytest(args: list[str]) -> None:
    markers = {m.split(":", 1)[0] for m in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    for option, value in itertools.pairwise(args):
        if option == "-m":
            named = set(re.findall(r"\w+", value)) - {"and", "or", "not"}
            assert named <= markers, f"pytest -m {value!r}: unknown markers"


def check_pip(args: list[str]) -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    for word in args:
        m = re.fullmatch(r"\.\[([\w,-]+)\]", word)
        if m:
            assert set(m.group(1).split(",")) <= set(extras), word


@cache
def aws_commands() -> dict[str, Any]:
    from awscli.clidriver import create_clidriver

    driver = create_clidriver()
    return {"table": driver._get_command_table(), "global": set(driver._get_argument_table())}


def check_aws(args: list[str]) -> None:
    service, operation = args[0], args[1]
    aws = aws_commands()
    if (service, operation) in AWS_V2_ONLY:
        return
    assert service in aws["table"], f"aws has no {service}"
    command = aws["table"][service]
    table = getattr(command, "subcommand_table", None) or command._get_command_table()
    assert operation in table, f"aws {service} has no {operation}"
    options = set(table[operation].arg_table) | aws["global"]
    for word in args[2:]:
        if word.startswith("--"):
            assert word[2:] in options, f"aws {service} {operation} has no {word}"
    if (service, operation) == ("cloudformation", "deploy"):
        parameters = template()["Parameters"]
        overrides = args[args.index("--parameter-overrides") + 1 :]
        for word in overrides:
            if word.startswith("--"):
                break
            name = word.split("=", 1)[0]
            assert name in parameters, f"deploy/aws.yaml has no parameter {name}"


def check_command(words: list[str], functions: set[str]) -> None:
    head, args = words[0], words[1:]
    if head in {"scorefleet", ".venv/bin/scorefleet"}:
        parse_scorefleet(args)
    elif head == "celery":
        check_celery(args)
    elif head == "make":
        assert set(args) <= make_targets(), f"make {args}: no such target"
    elif head == ".venv/bin/python":
        check_python_module(args)
    elif head == ".venv/bin/pytest":
        check_pytest(args)
    elif head == ".venv/bin/pip":
        check_pip(args)
    elif head.startswith(".venv/bin/"):
        tool = head.removeprefix(".venv/bin/")
        assert (Path(sys.prefix) / "bin" / tool).exists(), f"{tool} is not in the venv"
    elif head == "aws":
        check_aws(args)
    elif head == "out" and args:  # docs/deploy-aws.md's: an output of the stack
        assert args[0] in template()["Outputs"], f"deploy/aws.yaml has no output {args[0]}"
    else:
        assert head in EXTERNAL | functions, f"a command this test does not know: {words}"


@cache
def tracked_top_level() -> set[str]:
    return {p.name for p in REPO.iterdir()} - {".venv", ".scorefleet", "dist", ".git"}


def check_paths(words: list[str]) -> None:
    """Every word that is a path inside the repository names something that is there
    (or that a command of the docs makes)."""
    for word in words:
        if "$" in word or ":" in word or word.startswith("-") or "/" not in word:
            continue
        if word.split("/", 1)[0] not in tracked_top_level() and not word.startswith("dist/"):
            continue
        if word in MADE:
            maker = MADE[word].read_text()
            for part in word.split("/"):
                assert f'"{part}"' in maker, f"{MADE[word]} no longer makes {word}"
        else:
            assert (REPO / word).exists(), f"{word} is not in the repository"


@cache
def local_images() -> set[str]:
    """The images the local stack can run: the examples and the docs' own catalogs."""
    images = set(iris_catalog()) | set(json.loads((REPO / "examples" / "catalog.json").read_text()))
    for doc in COMMAND_DOCS:
        for catalog in blocks(doc, "json"):
            images |= set(json.loads(catalog))
    return images


def check_images(words: list[str]) -> None:
    named = [b for a, b in itertools.pairwise(words) if a == "--model-image"]
    named += [m for w in words for m in re.findall(r"model_image=([^&\s'\"]+)", w)]
    for image in named:
        if "$" not in image:
            assert image in local_images(), f"the local stack has no model {image}"


@pytest.mark.parametrize("doc", COMMAND_DOCS)
def test_every_command_names_what_exists(doc, tmp_path, monkeypatch):
    # where a user runs them: a checkout, with the files the pages make
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for block in blocks("docs/local-stack.md", "json"):
        (tmp_path / "my-models.json").write_text(block)
    monkeypatch.chdir(tmp_path)
    functions = set(re.findall(r"^(\w+)\(\)\s*\{", text(doc), re.M))
    checked = all_commands(doc)
    assert checked
    for words in checked:
        try:
            check_command(words, functions)
            check_paths(words)
            check_images(words)
        except (AssertionError, click.ClickException) as e:
            pytest.fail(f"{doc}: {' '.join(words)}\n{e}")


def test_the_commands_are_read_as_a_user_types_them():
    """The reading the checks above rely on: lists, pipes, substitutions, functions,
    continuation lines, comments, heredocs and quotes over several lines."""
    block = (
        "export A=1 B=2\n"
        "KEY=x/$(sha256sum dist/f.zip | cut -c1-12).zip  # a comment\n"
        "out() { aws cloudformation describe-stacks --stack-name $STACK; }\n"
        "cat > v.yaml <<END\nnot: a command\nEND\n"
        "aws s3 cp a \\\n  b && make up\n"
        "aws s3api put-object --tagging 'a=1&\n  b=2' --bucket b\n"
    )
    assert commands(block) == [
        ["export", "A=1", "B=2"],
        ["sha256sum", "dist/f.zip"],
        ["cut", "-c1-12"],
        ["out"],
        ["aws", "cloudformation", "describe-stacks", "--stack-name", "$STACK"],
        ["cat"],
        ["aws", "s3", "cp", "a", "b"],
        ["make", "up"],
        ["aws", "s3api", "put-object", "--tagging", "a=1&\n  b=2", "--bucket", "b"],
    ]


def test_a_wrong_command_is_caught(monkeypatch):
    monkeypatch.chdir(REPO)
    wrong = [
        ["scorefleet", "submit", "examples/iris.csv", "--model-imag", "x"],
        ["scorefleet", "stauts", "s3://b/k"],
        ["celery", "-A", "workers.app", "call", "tasks.rescor"],
        ["make", "tests"],
        [".venv/bin/python", "-m", "bench.no_such_bench"],
        [".venv/bin/python", "-m", "bench.first_score", "--run", "3"],
        [".venv/bin/pytest", "-m", "not slw"],
        ["aws", "s3api", "put-objet"],
        ["aws", "cloudformation", "deploy", "--parameter-overrides", "NoSuchParameter=1"],
        ["terraform", "apply"],
    ]
    for words in wrong:
        with pytest.raises((AssertionError, click.ClickException)):
            check_command(words, set())
    with pytest.raises(AssertionError):
        check_paths(["helm/scorefleet/no-such-file.yaml"])
    with pytest.raises(AssertionError):
        check_images(["--model-image", "scorefleet-examples/iris:2.0"])


# ---------------------------------------------------------------- deploy-aws.md
def deployment_values() -> dict[str, Any]:
    """The chart values docs/deploy-aws.md writes, with the stack's outputs and the
    shell's variables filled in as a deployment would."""
    block = next(b for b in blocks("docs/deploy-aws.md") if "<<VALUES" in b)
    body = heredoc(block, "VALUES")
    outputs = template()["Outputs"]

    def output(m: re.Match[str]) -> str:
        name = m.group(1)
        assert name in outputs, f"deploy/aws.yaml has no output {name}"
        if name.endswith("Arn"):
            return f"arn:aws:iam::123456789012:role/scorefleet-{name}"
        if name.endswith("Url"):
            return "https://sqs.eu-west-1.amazonaws.com/123456789012/scorefleet"
        if name.endswith("Uri"):
            return f"s3://scorefleet-bucket/{name.lower()}/"
        if name == "VisibilityTimeout":
            return "3600"
        return "scorefleet"

    body = re.sub(r"\$\(out (\w+)\)", output, body)
    variables = {"REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "TAG": "abc1234"}
    variables |= {"AWS_REGION": "eu-west-1", "CLUSTER": "prod"}
    body = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], body)
    return yaml.safe_load(body)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_the_deployments_chart_values_pass_the_charts_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = deployment_values()
    assert values["queue"]["visibilityTimeout"] == 3600
    jsonschema.Draft7Validator(schema).validate(merged(defaults, values))


def test_every_output_and_chart_value_deploy_aws_md_names_exists():
    doc = text("docs/deploy-aws.md")
    outputs, parameters = template()["Outputs"], template()["Parameters"]
    for name in re.findall(r"\$\(out (\w+)\)", doc):
        assert name in outputs, name
    for name in re.findall(r"`([A-Z]\w+)=", doc):
        assert name in parameters, name
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    dotted = re.findall(r"(?<![\w./-])([a-z]\w*(?:\.[a-zA-Z]\w*)+)(?:=|`|:)", doc)
    for path in {d for d in dotted if d.split(".")[0] in defaults}:
        node: Any = defaults
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"values.yaml has no {path}"
            node = node[part]


# ------------------------------------------------------------------------ links
def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    heading = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose = re.sub(r"^```.*?^```$", "", path.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}


MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    prose = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"


def test_the_readme_stays_short_and_opens_with_its_two_commands():
    readme = text("README.md")
    assert len(readme.encode()) <= 8 * 1024, len(readme.encode())
    first = blocks("README.md")[0]
    assert [c[:2] for c in commands(first)] == [["make", "up"], ["make", "test"]]


# --------------------------------------------------------------- development.md
def layout() -> set[str]:
    """The paths docs/development.md's layout lists (two spaces a level)."""
    section = text("docs/development.md").split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    (tree,) = [b for kind, b in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S)]
    listed: set[str] = set()
    parents: list[str] = []
    for line in tree.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m or line.startswith(" " * 26):  # a continuation of the description
            continue
        depth = len(m.group(1)) // 2
        parents = [*parents[:depth], m.group(2).rstrip("/")]
        listed.add("/".join(parents))
    return listed


def tracked_dirs() -> set[str]:
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return {str(Path(f).parent) for f in files} - {"."}


def test_the_layout_lists_every_folder_and_only_folders_that_exist():
    listed = layout()
    covered = listed | {str(p) for x in listed for p in Path(x).parents}
    missing = {d for d in tracked_dirs() if d.count("/") < 3 and d not in covered}
    assert not missing, f"docs/development.md's layout does not list {sorted(missing)}"
    gone = {x for x in listed if not (REPO / x).exists()}
    assert not gone, f"docs/development.md's layout lists what is not there: {sorted(gone)}"


def test_every_import_contract_is_explained():
    section = text("docs/development.md").split("\n## Import contracts\n", 1)[1]
    documented = set(re.findall(r"^\| `([\w-]+)` \|", section, re.M))
    contracts = {c["id"] for c in pyproject()["tool"]["importlinter"]["contracts"]}
    assert documented == contracts


# --------------------------------------------------------------------- tags.md
def test_the_tags_page_lists_every_tag_scorefleet_reads_and_only_those():
    """docs/tags.md's table is the one list (scorefleet.submission.USED_TAGS) with
    the older names (TAG_ALIASES): a tag added to the code needs its row."""
    from scorefleet.storage.s3io import TAG_ALIASES
    from scorefleet.submission import USED_TAGS

    rows = re.findall(r"^\| `(\w+)` \| (?:`(\w+)`)? *\|", text("docs/tags.md"), re.M)
    assert [tag for tag, _ in rows] == list(USED_TAGS)
    assert {old: tag for tag, old in rows if old} == TAG_ALIASES
