"""A plain (non-editable) `pip install .` ships the CLI and the migrations and runs anywhere."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


BUILD_LEFTOVERS = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "demo-data",
    ".pytest_cache",
    ".ruff_cache",
)


def _build_wheel(out: Path) -> Path:
    """`pip install .` builds exactly this wheel (setuptools backend) and installs it; from a
    copy of the source tree without build leftovers, whose stale modules setuptools would
    otherwise pack (its build/lib is reused between builds)."""
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob("vecstore-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_contains_cli_and_migrations(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in [
        "vecstore/cli/__init__.py",
        "vecstore/migrations/env.py",
        "vecstore/migrations/versions/0001_initial_schema.py",
        "vecstore/migrations/script.py.mako",
        "vecstore/store.py",
        "vecstore/embedders/resnet.py",
        "vecstore/report.html",
        "vecstore/web/static/index.html",  # the review UI ships in the package (no CDN)
        "vecstore/web/static/app.js",
        "vecstore/web/static/app.css",
        *(
            f"{package.relative_to(REPO)}/__init__.py"
            for package in sorted((REPO / "vecstore").glob("*/"))
            if (package / "__init__.py").exists()
        ),
    ]:
        assert needed in names, f"{needed} missing from the wheel"
    shipped = {n for n in names if n.startswith("vecstore/") and n.endswith(".py")}
    source = {
        f"vecstore/{p.relative_to(REPO / 'vecstore')}" for p in (REPO / "vecstore").rglob("*.py")
    }
    packed_apart = ("vecstore/cli/", "vecstore/migrations/")  # from cli/ and migrations/
    stale = sorted(n for n in shipped - source if not n.startswith(packed_apart))
    assert not stale, f"the wheel ships modules the source tree no longer has: {stale}"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vecstore = vecstore.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_plain_install_into_a_fresh_venv_runs_from_any_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Dependencies come from this environment's site-packages through a .pth file (they are
    # several GB); a .pth-added folder does not run the editable-install hooks found there, so
    # `vecstore` can only come from the plain install below.
    target_site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    deps = [
        p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()
    ]
    (target_site / "zz_vecstore_test_deps.pth").write_text("\n".join(deps) + "\n")
    wheel = _build_wheel(tmp_path / "dist")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    where = subprocess.check_output(
        [
            str(py),
            "-c",
            "import vecstore, vecstore.cli, vecstore.migrations; print(vecstore.__file__)",
        ],
        cwd=tmp_path,
        text=True,
    ).strip()
    assert where.startswith(str(venv)), f"vecstore imported from {where}, not the fresh install"
    exe = venv / "bin" / "vecstore"
    out = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "ingest" in out.stdout and "query" in out.stdout
    # the migrations shipped inside the package create a store
    (tmp_path / "imgs").mkdir()
    from .conftest import make_image

    make_image(tmp_path / "imgs" / "a.png", seed=1)
    out = subprocess.run(
        [str(exe), "--store", "s", "ingest", "imgs", "--space", "hog"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    info = subprocess.run(
        [str(exe), "--store", "s", "info"], cwd=tmp_path, capture_output=True, text=True
    )
    from vecstore.db import head_revision

    assert info.returncode == 0 and f"schema {head_revision()}" in info.stdout


def test_help_is_instant_it_imports_no_heavy_library():
    """`vecstore --help` (and the CLI's import) loads neither torch nor the numeric and
    database stacks: those are imported by the commands that use them."""
    heavy = ["torch", "numpy", "scipy", "sklearn", "faiss", "sqlalchemy", "pandas", "PIL"]
    code = (
        "import sys; from click.testing import CliRunner; from vecstore.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"
