"""The commands of the README and of the docs its sections moved to, read as a user
reads them: the ```sh blocks, the commands inside them, and the commands shown inline.

Used by tests/e2e/test_readme.py (the blocks run as written against a stack) and
tests/unit/test_docs.py (what cannot run here, checked against what it names)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

#: The README and the pages its sections moved to (issue 23): every command in them
#: stays runnable as written.
COMMAND_DOCS = ("README.md", "docs/local-stack.md", "docs/deploy-aws.md", "docs/development.md")

#: What a block says before the commands a user types into a second shell.
ANOTHER_SHELL = "# in another shell:\n"

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.M | re.S)


def text(doc: str) -> str:
    return (REPO / doc).read_text()


def blocks(doc: str, lang: str = "sh") -> list[str]:
    """The fenced code blocks of `doc` in `lang`, in order."""
    return [body for kind, body in _FENCE.findall(text(doc)) if kind == lang]


def block_starting(doc: str, first_line: str) -> str:
    """The one ```sh block of `doc` whose first line is `first_line`."""
    found = [b for b in blocks(doc) if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"{doc}: {len(found)} ```sh blocks start with {first_line!r}"
    return found[0]


def block_with(doc: str, needle: str) -> str:
    """The one ```sh block of `doc` that contains `needle`."""
    found = [b for b in blocks(doc) if needle in b]
    assert len(found) == 1, f"{doc}: {len(found)} ```sh blocks contain {needle!r}"
    return found[0]


def another_shell(block: str) -> str:
    """The part of a block a user types into a second shell, once the first runs the stack."""
    assert ANOTHER_SHELL in block, block
    return block.split(ANOTHER_SHELL, 1)[1]


def inline_commands(doc: str) -> list[str]:
    """Commands shown inline (`...`) outside the code blocks, as a user would type them:
    `<placeholder>` becomes a word and an optional `[--flag]` is left out. Notation that
    is not a command (`ping|active|stats`, `…`) is skipped."""
    prose = _FENCE.sub("", text(doc))
    starts = ("make ", "scorefleet ", ".venv/bin/", "celery ", "aws ", "helm ", "kubectl ")
    out = []
    for span in re.findall(r"`([^`]+)`", prose, re.S):
        command = " ".join(span.split())
        if not command.startswith(starts) or "|" in command or "…" in command:
            continue
        command = re.sub(r"\s\[-[^\]]*\]", "", command)
        out.append(re.sub(r"<[^>]+>", "PLACEHOLDER", command))
    return out


_SEPARATORS = {"|", "||", "&&", ";", "(", ")", "()", "&", "{", "}", ";;"}
_REDIRECTS = {">", ">>", "<", "2>", "&>"}


def commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block, as words: continuation lines joined,
    comments and heredoc bodies left out, pipelines, lists, `$( )` and `{ }` split
    into their commands (a substitution's output is the word `SUBSTITUTED`), leading
    `VAR=value` assignments and redirections dropped."""
    lines: list[str] = []
    heredoc_end = None
    for line in block.replace("\\\n", " ").splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if m:
            heredoc_end = m.group(1)
            line = line[: m.start()]
        if lines and _open_quote(lines[-1]):  # a quoted string goes on
            lines[-1] += "\n" + line
        else:
            lines.append(line)
    unnested: list[str] = []
    for line in lines:
        # `$( )`: its command is one of the block's, its output a word of the outer one
        while m := re.search(r"\$\(([^()]*)\)", line):
            unnested.append(m.group(1))
            line = line[: m.start()] + "SUBSTITUTED" + line[m.end() :]
        unnested.append(line)
    out: list[list[str]] = []
    for line in unnested:
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        words: list[str] = []
        skip_next = False
        for token in lex:
            if skip_next:
                skip_next = False
            elif token in _REDIRECTS:
                skip_next = True
            elif token in _SEPARATORS:
                out.append(words)
                words = []
            else:
                words.append(token)
        out.append(words)
    result = []
    for words in out:
        while words and re.match(r"^\w+=", words[0]):
            words = words[1:]
        if words:
            result.append(words)
    return result


def _open_quote(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:
        return True
    return False


def heredoc(block: str, end: str) -> str:
    """The body of the heredoc `<<end` in a block."""
    return block.split(f"<<{end}\n", 1)[1].split(f"\n{end}\n", 1)[0] + "\n"


def run_in_a_fresh_shell(
    script: str, checkout: Path, home: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`script` as a new user runs it: bash with `set -euo pipefail`, in `checkout`,
    with nothing on PATH but the system's (PYTHONPATH is kept when the test run has
    one, so a worktree's code is the code the commands run)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def checkout_for(state_dir: Path, tmp_path: Path) -> Path:
    """A directory laid out like this repository for the commands of the docs: its
    `examples/` and `.venv` are this checkout's and its `.scorefleet/` is `state_dir`
    (so that a test never touches a developer's own `.scorefleet/`)."""
    checkout = tmp_path / "scorefleet"
    checkout.mkdir()
    (checkout / "examples").symlink_to(REPO / "examples")
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    (checkout / ".scorefleet").symlink_to(state_dir)
    return checkout
