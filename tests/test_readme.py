"""The README stays true: the tour's commands run as written after the demo."""

from __future__ import annotations

import json
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
    return [
        re.sub(r"\s+#.*$", "", line.strip())
        for line in tour.splitlines()
        if line.strip().startswith("vecstore ")
    ]


# Largest difference allowed between a figure of the README's demo table and the one the demo
# prints. FAISS picks SIMD kernels by CPU, so ties among neighbours (many in the `histogram`
# space) and k-means iterations can come out differently: on an AMD EPYC the histogram row
# reads 0.1656 0.0782 0.0746 where an Intel Xeon gives 0.1654 0.0765 0.0722.
DEMO_TOLERANCE = 0.01


def readme_demo_table() -> list[list[str]]:
    """The rows of cells of the demo table quoted in the README (header first)."""
    text = (REPO / "README.md").read_text().split("it prints:", 1)[1].split("\n\n", 2)[1]
    return [line.split() for line in text.splitlines()]


def demo_table(stdout: str, header: list[str]) -> list[list[str]]:
    """The rows of cells of the table the demo printed, found by its header row."""
    lines = [line.split() for line in stdout.splitlines()]
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def assert_same_table(quoted: list[list[str]], printed: list[list[str]]) -> None:
    """Same shape, same text cells, numbers within DEMO_TOLERANCE."""
    assert len(quoted) == len(printed), f"README table has {len(quoted)} rows, demo {len(printed)}"
    for want, got in zip(quoted, printed):
        assert len(want) == len(got), f"README row {want} has another shape than {got}"
        for a, b in zip(want, got):
            x, y = _number(a), _number(b)
            if x is None or y is None:
                assert a == b, f"README row {want} differs from the demo's {got}"
            else:
                # the cells are decimals: 0.14 - 0.13 is one step of 0.01, not 0.010000000000000009
                close = abs(x - y) <= DEMO_TOLERANCE + 1e-9
                assert close, f"README row {want}, demo {got}: {a} vs {b}"


def test_demo_table_comparison_allows_cpu_noise_and_nothing_else():
    quoted = [["space", "p@10", "acc"], ["---", "---", "---"], ["pixels", "0.9628", "-"]]
    assert_same_table(
        quoted, [["space", "p@10", "acc"], ["---", "---", "---"], ["pixels", "0.9650", "-"]]
    )
    share = [["space", "flagged"], ["---", "---"], ["hog", "0.14"]]
    for step in ("0.13", "0.15"):  # one step of the tolerance, either way
        assert_same_table(share, [["space", "flagged"], ["---", "---"], ["hog", step]])
    for wrong in (
        [["space", "p@10", "acc"], ["---", "---", "---"], ["pixels", "0.9800", "-"]],
        [["space", "p@10", "acc"], ["---", "---", "---"], ["hog", "0.9628", "-"]],
        [["space", "p@10", "acc"], ["---", "---", "---"], ["pixels", "0.9628", "0.5"]],
        [["space", "p@10", "acc"], ["---", "---", "---"]],
    ):
        with pytest.raises(AssertionError):
            assert_same_table(quoted, wrong)


def python_example() -> str:
    """The README's Python API example (its one python code block)."""
    text = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_makefile_demo_and_test_targets_match_the_readme():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def service_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    part = text.split("### The review service", 1)[1].split("\n\n", 2)[1]
    return [line.strip() for line in part.splitlines() if line.strip().startswith("vecstore ")]


def _run_as_written(cmd: str, cwd: Path, env: dict) -> None:
    """A command of the service section: `vecstore serve ...` must answer on the port it
    says (8000 unless --port) until stopped; any other runs to completion."""
    args = shlex.split(re.sub(r"\s+#.*$", "", cmd))
    if "serve" not in args:
        r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r} failed: {r.stdout}\n{r.stderr}"
        return
    port = args[args.index("--port") + 1] if "--port" in args else "8000"
    with subprocess.Popen(args, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True) as server:
        try:
            answer = _poll(f"http://127.0.0.1:{port}/api/summary", server)
        finally:
            server.terminate()
        assert answer["images"] == 1797 and answer["propagation"] is not None, answer


def _poll(url: str, server: subprocess.Popen, limit: float = 60) -> dict:
    import json
    import time
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        try:
            with direct.open(url, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {limit} s")


def dicom_commands() -> list[str]:
    """The command lines of the README's DICOM example (its first indented block)."""
    part = (REPO / "README.md").read_text().split("### DICOM files and metadata", 1)[1]
    block = part.split("\n- ", 1)[0]
    return [line.strip() for line in block.splitlines() if line.startswith("    ")]


@pytest.mark.slow
def test_dicom_commands_work_as_written(tmp_path):
    """Each line as a shell runs it (the example copies pydicom's samples with mkdir and
    python -c), from an empty folder, the project's environment first on PATH."""
    commands = dicom_commands()
    assert [c.split()[0] for c in commands] == ["mkdir", "python", *["vecstore"] * 4]
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("VECSTORE_STORE", None)
    outputs = []
    for cmd in commands:
        r = subprocess.run(
            ["bash", "-c", re.sub(r"\s+#.*$", "", cmd)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, f"{cmd!r} failed: {r.stdout}\n{r.stderr}"
        outputs.append(r.stdout)
    assert "metadata columns:" in outputs[3] and "Modality" in outputs[3]
    assert "P2/IM-0001.dcm" in outputs[4] and "P2/IM-0002" not in outputs[4]  # RGB is OT
    assert "P2/IM-0001.dcm" in outputs[5]


@pytest.mark.slow
def test_tour_commands_work_as_written(tmp_path):
    commands = tour_commands()
    assert len(commands) >= 6, commands
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "VECSTORE_STORE": "demo-data/store",
        "PATH": f"{bindir}:{os.environ['PATH']}",
    }
    # what `make demo` runs
    demo = subprocess.run(
        ["vecstore", "--store", "demo-data/store", "demo", "--out", "demo-data"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr
    assert "the whole pipeline per space" in demo.stdout
    assert (tmp_path / "demo-data" / "pseudo_labels.csv").exists()
    # the summary table quoted in the README is the one the demo prints, figure for figure
    # within DEMO_TOLERANCE (other CPUs take other SIMD paths in FAISS)
    quoted = readme_demo_table()
    printed = demo_table(demo.stdout, header=quoted[0])
    assert_same_table(quoted, printed)
    for cmd in commands:
        r = subprocess.run(shlex.split(cmd), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r} failed: {r.stdout}\n{r.stderr}"
    # the Python API example, as written, on the same demo store
    api = subprocess.run(
        [sys.executable, "-c", python_example()], cwd=tmp_path, capture_output=True, text=True
    )
    assert api.returncode == 0, api.stderr
    lines = api.stdout.splitlines()
    assert lines[0] == "0 new images, 1797 in the store", api.stdout
    assert "AMI against the expert labels:" in api.stdout
    assert "20 expert labels spread to 1777 images" in api.stdout
    assert "needs_review" in api.stdout
    # the review service's commands (after the example: one of them adds a label)
    for cmd in service_commands():
        _run_as_written(cmd, tmp_path, env)
    _formats_work_as_written(tmp_path, env)


def formats_commands() -> list[str]:
    """The command lines of the README's formats example (its first indented block)."""
    part = (REPO / "README.md").read_text().split("### Formats for other tools", 1)[1]
    block = part.split("\n- ", 1)[0]
    return [line.strip() for line in block.splitlines() if line.startswith("    ")]


def _formats_work_as_written(cwd: Path, env: dict) -> None:
    """The formats example on the demo store: each line runs, and writes what it says."""
    outputs = []
    for cmd in formats_commands():
        args = shlex.split(re.sub(r"\s+#.*$", "", cmd))
        r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r} failed: {r.stdout}\n{r.stderr}"
        outputs.append(r.stdout + r.stderr)
    tasks = json.loads((cwd / "demo-data/ls/tasks.json").read_text())
    assert len(tasks) == 1797 and (cwd / "demo-data/ls/tasks.label-config.xml").exists()
    experts = sum("annotations" in t for t in tasks)
    assert f"0 added, 0 replaced, {experts} unchanged" in outputs[1], outputs[1]
    fiftyone = json.loads((cwd / "demo-data/fiftyone/labels.json").read_text())
    assert len(fiftyone["labels"]) == len(tasks) and len(fiftyone["classes"]) == 10
    folders = sorted(p.name for p in (cwd / "demo-data/imagefolder").iterdir())
    assert folders == fiftyone["classes"]


def test_every_guarantee_names_a_test_that_exists():
    """The tests the README's "What vecstore guarantees" cites are tests of this suite."""
    section = (REPO / "README.md").read_text().split("## What vecstore guarantees", 1)[1]
    section = section.split("\n## ", 1)[0]
    cited = set(re.findall(r"`(test_\w+)`", section))
    pattern = re.compile(r"^(?:def (test_\w+)|(test_\w+) = )", re.M)
    defined = {
        name
        for f in (REPO / "tests").glob("test_*.py")
        for pair in pattern.findall(f.read_text())
        for name in pair
        if name
    }
    assert len(cited) >= 20, cited
    assert cited <= defined, cited - defined
