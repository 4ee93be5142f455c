"""`make up` on a fresh machine says what it is doing while it installs (issue 28,
item 6: 153 s of silence, then everything at once).

The Makefile runs here as written, in a copy of the repository's layout whose
`.venv/bin/pip` is a stand-in: it prints what pip prints, then waits until the test
has seen its first line. Output held back until the install ends (pip's stdout to
a pipe is block-buffered; --quiet prints nothing) never reaches the test, which then
fails at its deadline instead of waiting forever."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO

FAKE_PIP = """#!{python}
import os, sys, time
print("Collecting boto3")
print("  Downloading boto3-1.0-py3-none-any.whl (1 kB)")
print("Collecting celery")
deadline = time.monotonic() + 30
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.05)
print("Successfully installed boto3 celery")
sys.exit(int(os.environ.get("FAKE_PIP_EXIT", "0")))
"""


def fake_checkout(tmp_path: Path) -> Path:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (
        ("pip", FAKE_PIP.format(python=shutil.which("python3") or "/usr/bin/python3")),
        ("python", f'#!/bin/sh\nexec {sys.executable} "$@"\n'),
        ("scorefleet", '#!/bin/sh\necho "scorefleet $*"\n'),
    ):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return tmp_path


#: make's own variables of a make that runs this test (``make test``): a make started
#: under them is a sub-make and says "Entering directory" around its output
_MAKES = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")


def clean_env(**env: str) -> dict[str, str]:
    """This test's environment, as a user's shell has it (not a sub-make's)."""
    return {**{k: v for k, v in os.environ.items() if k not in _MAKES}, **env}


def make_up(cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "up"],
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_make_up_says_what_it_installs_as_it_goes(tmp_path):
    cwd = fake_checkout(tmp_path)
    proc = make_up(cwd)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:  # while the stand-in pip still runs
            seen.append(line.rstrip("\n"))
            if line.startswith("  collecting celery"):
                break
        (cwd / "go").touch()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(timeout=30) == 0
    finally:
        (cwd / "go").touch()
        proc.kill()
        proc.wait()
    assert seen == [
        "make: installing the local stack into .venv (once; a few minutes on a fresh machine) ...",
        "  collecting boto3",
        "  collecting celery",
    ]
    assert rest[0] == "make: installed; starting the local stack ..."
    assert rest[-1] == "scorefleet up --demo"


def test_a_failed_install_fails_make_up(tmp_path):
    cwd = fake_checkout(tmp_path)
    (cwd / "go").touch()
    proc = make_up(cwd, FAKE_PIP_EXIT="1")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0, out
    assert "starting the local stack" not in out and "scorefleet up" not in out
    assert not (cwd / ".venv" / ".installed-local").exists()


def test_a_second_make_up_installs_nothing(tmp_path):
    cwd = fake_checkout(tmp_path)
    (cwd / "go").touch()
    time.sleep(0.01)  # the stamp is newer than pyproject.toml
    (cwd / ".venv" / ".installed-local").touch()
    out = subprocess.run(
        ["make", "up"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out.splitlines() == [".venv/bin/scorefleet up --demo", "scorefleet up --demo"]
