"""The README stays true: the tour's commands run as written after the demo."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    tour = text.split("## A tour of the CLI", 1)[1].split("###", 1)[0]
    return [re.sub(r"\s+#.*$", "", line.strip()) for line in tour.splitlines()
            if line.strip().startswith("vecstore ")]


def test_makefile_demo_and_test_targets_match_the_readme():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.slow
def test_tour_commands_work_as_written(tmp_path):
    commands = tour_commands()
    assert len(commands) >= 6, commands
    bindir = Path(sys.executable).parent
    env = {**os.environ, "VECSTORE_STORE": "demo-data/store", "PATH": f"{bindir}:{os.environ['PATH']}"}
    # what `make demo` runs
    demo = subprocess.run(["vecstore", "--store", "demo-data/store", "demo", "--out", "demo-data"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    assert "the whole pipeline per space" in demo.stdout
    assert (tmp_path / "demo-data" / "pseudo_labels.csv").exists()
    # the summary table quoted in the README is the one the demo prints
    printed = {" ".join(line.split()) for line in demo.stdout.splitlines()}
    readme = (REPO / "README.md").read_text().split("it prints:", 1)[1].split("\n\n", 2)[1]
    for line in readme.splitlines():
        assert " ".join(line.split()) in printed, f"README line not printed by the demo: {line}"
    for cmd in commands:
        r = subprocess.run(shlex.split(cmd), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r} failed: {r.stdout}\n{r.stderr}"
