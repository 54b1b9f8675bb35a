"""Start-up of `vecstore ingest`: wall time from launching the command to the first CNN vector
stored, and where it goes, for a baseline git revision against the working tree.

Data: ``--n`` gray 512x512 PNGs (scikit-learn digits, ``write_resnet_images`` of
bench/ingest.py) and a random ResNet18 state dict (seed 0, ``write_random_weights``), made
once (kept and reused under ``--out``).

Trees: the working tree of the repository this script lives in, and ``--baseline REV``
checked out with ``git worktree add --detach`` in a temporary folder (removed at the end).
Each tree's code runs, not the installed package's: every subprocess starts with ``cwd`` and
``PYTHONPATH`` at the tree's root, drops the editable install's import hook and maps
``vecstore.cli`` and ``vecstore.migrations`` to the tree's ``cli/`` and ``migrations/`` (what
the installed ``vecstore`` command imports). One untimed round per tree first compiles its
bytecode and prints the files imported, as a check.

Then ``--repeat`` rounds, the two trees alternating within a round, each measure in a fresh
process; the tables give the median:

- python: Popen to exit of the interpreter with that bootstrap and nothing else;
- import cli: ``import vecstore.cli`` timed inside a process (interpreter start excluded);
- import torch: ``import torch, torchvision`` timed the same way;
- ingest: ``vecstore --store NEW ingest IMAGES --space resnet18 --weights FILE --device cpu``
  from Popen, while this process polls the store's SQLite file read-only every 10 ms for the
  first ``runs`` row (the ingest run recorded: store opened and migrated, the embedders built,
  so torch imported), the first ``images`` row (first
  chunk of the scan committed), ``--n`` rows in ``images`` (the scan is over; a tree that
  embeds apart from the scan begins then, one that embeds each chunk as it is scanned has
  vectors committed with their images) and the first ``resnet18`` row of ``vectors`` ("first
  vector": the first batch or chunk with vectors committed); "total" is Popen to exit.
  Milestones are late by up to one poll.

The last row of the tables is baseline / working tree (above 1: the working tree is faster).

    .venv/bin/python bench/startup.py                      # baseline main, 3 rounds
    .venv/bin/python bench/startup.py --baseline HEAD~3 --repeat 5 --record
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import BENCHMARKS_MD, machine_line, markdown_table, out_folder, record
from ingest import RESNET_SCALE, write_random_weights, write_resnet_images

SPACE = "resnet18"
POLL_S = 0.01
OUT_ENTRIES = ("stores", "logs")  # what a previous run left under --out and a run replaces

# Run first in every subprocess: the tree's own vecstore.cli / vecstore.migrations, not the
# editable install's (argv[1] is the tree's root; the rest is passed on).
BOOT = """\
import sys
from importlib.util import spec_from_file_location
ROOT = sys.argv.pop(1)
sys.meta_path[:] = [
    f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
]
class TreeFinder:
    SUBS = {"vecstore.cli": "cli", "vecstore.migrations": "migrations"}
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in cls.SUBS:
            return None
        d = f"{ROOT}/{cls.SUBS[name]}"
        return spec_from_file_location(name, f"{d}/__init__.py", submodule_search_locations=[d])
sys.meta_path.insert(0, TreeFinder)
"""
TIMED_IMPORT = BOOT + (
    "import json, time\nt0 = time.perf_counter()\nimport MODULES\n"
    "print(json.dumps(time.perf_counter() - t0))\n"
)
CHECK = BOOT + (
    "import json, vecstore, vecstore.cli, vecstore.migrations\n"
    "print(json.dumps([m.__file__ for m in (vecstore, vecstore.cli, vecstore.migrations)]))\n"
)
RUN_CLI = BOOT + "sys.argv[0] = 'vecstore'\nfrom vecstore.cli import main\nmain()\n"

MILESTONES = {  # name -> a query that returns a row once it is reached ({n}: the images)
    "run recorded": "SELECT 1 FROM runs WHERE kind = 'ingest' LIMIT 1",
    "first image": "SELECT 1 FROM images LIMIT 1",
    "all images": "SELECT 1 WHERE (SELECT count(*) FROM images) >= {n}",
    "first vector": "SELECT 1 FROM vectors JOIN spaces ON spaces.id = vectors.space_id "
    f"WHERE spaces.name = '{SPACE}' LIMIT 1",
}
VECTORS_SQL = (
    MILESTONES["first vector"].replace("SELECT 1", "SELECT count(*)").replace(" LIMIT 1", "")
)
COLUMNS = ["python", "import cli", "import torch", *MILESTONES, "total"]


@dataclass
class Tree:
    label: str
    root: Path
    slug: str  # names its stores and logs
    runs: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    error: str | None = None

    def median(self, column: str) -> float | None:
        values = self.runs[column]
        return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------
# the trees
# --------------------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def working_tree(repo: Path) -> Tree:
    changed = git("status", "--porcelain", "--untracked-files=no", cwd=repo).splitlines()
    sha = git("rev-parse", "--short", "HEAD", cwd=repo)
    return Tree(f"working tree ({sha} + {len(changed)} changed files)", repo, "work")


def baseline_tree(stack: contextlib.ExitStack, repo: Path, rev: str) -> Tree:
    """``rev`` checked out in a temporary worktree, removed when ``stack`` closes."""
    sha = git("rev-parse", "--short", f"{rev}^{{commit}}", cwd=repo)
    path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vecstore-base-")))
    path = path / "tree"
    git("worktree", "add", "--detach", str(path), sha, cwd=repo)
    stack.callback(git, "worktree", "remove", "--force", str(path), cwd=repo)
    return Tree(f"baseline {rev} ({sha})", path, "base")


def python(tree: Tree, code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, str(tree.root), *args]


def tree_env(tree: Tree) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VECSTORE_STORE"}
    return {**env, "PYTHONPATH": str(tree.root)}


def run_json(tree: Tree, code: str) -> object:
    proc = subprocess.run(
        python(tree, code), cwd=tree.root, env=tree_env(tree), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(tree: Tree) -> None:
    """Compile the tree's bytecode and check which files it imports (untimed)."""
    dirs = [str(tree.root / d) for d in ("vecstore", "cli", "migrations")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], capture_output=True)
    try:
        files = run_json(tree, CHECK)
    except RuntimeError as exc:
        tree.error = str(exc)
        print(f"{tree.label} FAILED to import:\n{exc}", file=sys.stderr)
        return
    print(f"{tree.label}: imports " + ", ".join(map(str, files)), file=sys.stderr)
    if not all(str(f).startswith(str(tree.root)) for f in files):
        raise SystemExit(f"{tree.label} imports code from outside {tree.root}: {files}")


# --------------------------------------------------------------------------------------------
# the measures
# --------------------------------------------------------------------------------------------


def time_python(tree: Tree) -> float:
    t0 = time.perf_counter()
    subprocess.run(python(tree, BOOT), cwd=tree.root, env=tree_env(tree), check=True)
    return time.perf_counter() - t0


def time_import(tree: Tree, modules: str) -> float:
    return float(run_json(tree, TIMED_IMPORT.replace("MODULES", modules)))  # type: ignore[arg-type]


def reached(conn: sqlite3.Connection, sql: str) -> bool:
    try:
        return conn.execute(sql).fetchone() is not None
    except sqlite3.OperationalError:  # no such table yet, or a schema change under way
        return False


def connect(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0)
    except sqlite3.OperationalError:
        return None


def poll(conn: sqlite3.Connection | None, db: Path, n: int, seen: dict[str, float], t0: float):
    """One poll: record the milestones reached since the last; the connection to use next."""
    conn = conn or connect(db)
    if conn is not None:
        now = time.perf_counter() - t0
        for name, sql in MILESTONES.items():
            if name not in seen and reached(conn, sql.replace("{n}", str(n))):
                seen[name] = now
    return conn


def watch_ingest(cmd: list[str], tree: Tree, db: Path, n: int, log: Path) -> dict[str, float]:
    """Run ``cmd`` (an ingest of ``n`` images), polling ``db``; seconds from Popen to each
    milestone and to exit, and the vectors stored."""
    seen: dict[str, float] = {}
    conn = None
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree.root, env=tree_env(tree), stdout=out, stderr=out)
        while proc.poll() is None:
            conn = poll(conn, db, n, seen, t0)
            time.sleep(POLL_S)
        seen["total"] = time.perf_counter() - t0
    conn = poll(conn, db, n, seen, t0)  # milestones first seen after exit count at exit
    vectors = conn.execute(VECTORS_SQL).fetchone()[0] if conn and "first vector" in seen else 0
    if conn:
        conn.close()
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}:\n" + log.read_text()[-3000:])
    return {**seen, "vectors": vectors}


def time_ingest(tree: Tree, args: argparse.Namespace, out: Path, name: str) -> dict[str, float]:
    store = out / "stores" / name
    cli = ["--store", str(store), "ingest", str(out / "images"), "--space", SPACE]
    cli += ["--weights", str(out / "weights.pth"), "--device", "cpu"]
    result = watch_ingest(
        python(tree, RUN_CLI, *cli),
        tree,
        store / "vecstore.db",
        args.n,
        out / "logs" / f"{name}.log",
    )
    if result["vectors"] != args.n:
        raise RuntimeError(f"{result['vectors']} {SPACE} vectors stored of {args.n} images")
    return result


def measure(tree: Tree, args: argparse.Namespace, out: Path, round_: int) -> None:
    """One round of every measure for ``tree``; a failure is kept in ``tree.error``."""
    if tree.error:
        return
    try:
        results = {
            "python": time_python(tree),
            "import cli": time_import(tree, "vecstore.cli"),
            "import torch": time_import(tree, "torch, torchvision"),
            **time_ingest(tree, args, out, f"{tree.slug}-{round_}"),
        }
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        tree.error = str(exc)
        print(f"{tree.label} FAILED in round {round_}:\n{exc}", file=sys.stderr)
        return
    for column in COLUMNS:
        if column in results:
            tree.runs[column].append(results[column])
    shutil.rmtree(out / "stores" / f"{tree.slug}-{round_}", ignore_errors=True)


# --------------------------------------------------------------------------------------------
# data, report
# --------------------------------------------------------------------------------------------


def make_data(out: Path, n: int) -> None:
    """The images and weights, reused when a previous run under --out left them."""
    images = out / "images"
    if len(list(images.glob("*.png"))) != n:
        shutil.rmtree(images, ignore_errors=True)
        print(f"writing {n} images under {images}", file=sys.stderr)
        write_resnet_images(images, n)
    if not (out / "weights.pth").exists():
        write_random_weights(out / "weights.pth")
    for sub in OUT_ENTRIES:
        (out / sub).mkdir(exist_ok=True)


def cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_rows(base: Tree, work: Tree) -> list[list[str]]:
    rows = []
    for tree in (base, work):
        note = "FAILED (see stderr)" if tree.error else str(len(tree.runs["total"]))
        rows.append([tree.label, *(cell(tree.median(c)) for c in COLUMNS), note])
    ratios = []
    for c in COLUMNS:
        b, w = base.median(c), work.median(c)
        ratios.append(f"{b / w:.2f}x" if b and w else "")
    rows.append(["baseline / working tree", *ratios, ""])
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def notes(args: argparse.Namespace, load: float) -> list[str]:
    import torch

    side = 8 * RESNET_SCALE
    return [
        machine_line(load),
        f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()} "
        f"(default); Python {sys.version.split()[0]}",
        f"{args.n} gray {side}x{side} PNGs (digits), random ResNet18 weights file; "
        f"`vecstore --store NEW ingest IMAGES --space {SPACE} --weights FILE --device cpu`, "
        "each tree's code (PYTHONPATH and cwd at its root, its own cli/ and migrations/)",
        f"seconds, median of {args.repeat} round(s), trees alternating, each measure in a "
        "fresh process; milestones from Popen, polled read-only in the store's SQLite file "
        f"every {POLL_S * 1000:.0f} ms: runs row (run recorded), first images row, "
        f"{args.n} images rows (all images), first {SPACE} vector; total: Popen to exit; "
        "import cli / torch: the import statement alone, timed in its process",
    ]


def report(args: argparse.Namespace, base: Tree, work: Tree, load: float) -> None:
    header = ["tree", *(f"{c} s" for c in COLUMNS), "runs"]
    rows = table_rows(base, work)
    lines = notes(args, load)
    print("\n".join(lines), "", text_table(header, rows), sep="\n")
    if args.record:
        command = shlex.join(["python", "bench/startup.py", *sys.argv[1:]])
        aligns = [":--", *["--:"] * len(COLUMNS), ":--"]
        path = record("ingest start-up", lines, command, markdown_table(header, rows, aligns))
        print(f"\nrecorded in {path}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="main", help="git revision compared (default main)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians reported")
    ap.add_argument("--n", type=int, default=128, help="images ingested (default 128)")
    ap.add_argument("--out", type=Path, help="folder kept for the data (default: temporary)")
    ap.add_argument("--record", action="store_true", help=f"append to {BENCHMARKS_MD.name}")
    args = ap.parse_args()
    if args.repeat < 1 or args.n < 1:
        ap.error("--repeat and --n must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    load = os.getloadavg()[0]
    repo = Path(git("rev-parse", "--show-toplevel", cwd=Path(__file__).resolve().parent))
    with contextlib.ExitStack() as stack:
        out = out_folder(stack, args.out, "vecstore-startup-", OUT_ENTRIES)
        make_data(out, args.n)
        trees = [baseline_tree(stack, repo, args.baseline), working_tree(repo)]
        for tree in trees:
            prepare(tree)
        for round_ in range(1, args.repeat + 1):
            print(f"round {round_}/{args.repeat}", file=sys.stderr)
            for tree in trees:
                measure(tree, args, out, round_)
        report(args, *trees, load)
    return 1 if any(t.error for t in trees) else 0


if __name__ == "__main__":
    sys.exit(main())
