"""The files vecstore writes (`export`, `suggest`, `report` with -o): CSV cells a spreadsheet
will not run and every CSV reader splits the same way, targets that are not regular files
(a symlink, a device, a FIFO, standard output) written through and not replaced, and write
errors that are one clean message."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import threading
from pathlib import Path

import pandas as pd
import pytest

from vecstore import Store
from vecstore.errors import BadInput
from vecstore.params import ExportOptions

from .conftest import make_image

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# file names that break a CSV written without quoting them: a bare CR, a LF, a comma, quotes
ODD_NAMES = ["cr\rname.png", "lf\nname.png", 'comma, "quoted".png', "=HYPERLINK(1).png"]
# labels that a spreadsheet would run as formulas (and one with a comma and quotes)
HOSTILE_LABELS = ["=cmd|'/C calc'!A0", "@SUM(1+1)*cmd|'/C calc'!A0", '-2+3, "x"']


def _hostile_store(root: Path, cli) -> None:
    """Images with odd names, expert labels that look like formulas, and a propagation."""
    for i, name in enumerate(ODD_NAMES):
        make_image(root / name, seed=i)
    for i in range(9):
        make_image(root / f"plain{i}.png", seed=50 + i)
    assert cli("ingest", root, "--space", "pixels").exit_code == 0
    for i, label in enumerate(HOSTILE_LABELS):
        for target in (root / ODD_NAMES[i], root / f"plain{i}.png"):
            r = cli("labels", "set", "--new-class", target, "--", label)
            assert r.exit_code == 0, r.output
    r = cli("propagate", "--space", "pixels", "-k", "3")
    assert r.exit_code == 0, r.output


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _no_cell_starts_a_formula(rows: list[list[str]]) -> None:
    """No cell a spreadsheet would run: text never starts with = + - @ tab or CR."""
    for row in rows:
        for cell in row:
            assert _is_number(cell) or not cell.startswith(TRIGGERS), (cell, row)


def test_export_and_suggest_csv_are_safe_in_a_spreadsheet_and_parse_the_same(
    tmp_path, cli, store_path
):
    from vecstore.files import unneutralise

    _hostile_store(tmp_path / "scans", cli)
    out = tmp_path / "pseudo.csv"
    r = cli("export", "-o", out)
    assert r.exit_code == 0, r.output
    with Store.open(store_path) as store:
        expected = store.export_table(ExportOptions())
        paths = set(store.image_paths().values())
    raw = _cells(out)
    _no_cell_starts_a_formula(raw)
    assert len(raw) == len(expected) + 1 and {len(row) for row in raw} == {16}  # 3 p_ columns
    df = pd.read_csv(out)  # no options: same rows, same columns, same values
    assert list(df.columns) == list(expected.columns) and len(df) == len(expected)
    assert set(df["path"]) == paths and set(df["path"]) >= {
        str(tmp_path / "scans" / n) for n in ODD_NAMES
    }
    for col in ("image_id", "run_id"):
        assert df[col].dtype.kind == "i" and df[col].tolist() == expected[col].tolist()
    for col in ("confidence", "margin", "cluster"):
        assert df[col].dtype.kind in "fi", col
    assert df["confidence"].tolist() == expected["confidence"].tolist()
    assert df["needs_review"].dtype == bool
    assert df["needs_review"].tolist() == expected["needs_review"].tolist()
    for col in ("label", "second_label", "source", "sha256", "review_reason"):
        got = [None if pd.isna(v) else unneutralise(v) for v in df[col]]
        want = [None if pd.isna(v) or v == "" else v for v in expected[col]]
        assert got == want, col
    labels = set(df["label"].dropna())
    assert {"'" + lab for lab in HOSTILE_LABELS} == labels  # each neutralised by one quote

    picks = tmp_path / "to_label.csv"
    r = cli("suggest", "-n", "5", "-o", picks)
    assert r.exit_code == 0, r.output
    raw = _cells(picks)
    _no_cell_starts_a_formula(raw)
    sug = pd.read_csv(picks)
    assert len(sug) == 5 and len(raw) == 6 and {len(row) for row in raw} == {9}
    assert set(sug["path"]) <= paths and sug["image_id"].dtype.kind == "i"
    assert sug["confidence"].dtype.kind == "f" and sug["margin"].dtype.kind == "f"
    assert {unneutralise(v) for v in sug["pseudo_label"]} <= set(HOSTILE_LABELS)


def test_write_csv_quotes_and_neutralises_text_cells_only(tmp_path):
    from vecstore.files import unneutralise, write_csv

    frame = pd.DataFrame(
        {
            "n": [1, -2, 3],
            "x": [-0.5, float("nan"), 1e-7],
            "text": ["\tTAB", "\rCR at start", "a\rb"],
            "more": ["+1", "'=quoted already", None],
            "flag": [True, False, True],
        }
    )
    out = write_csv(tmp_path / "t.csv", frame)
    assert out == tmp_path / "t.csv"
    raw = _cells(out)
    _no_cell_starts_a_formula(raw)
    assert raw[0] == ["n", "x", "text", "more", "flag"]
    assert [row[0] for row in raw[1:]] == ["1", "-2", "3"]  # numbers stay numbers
    back = pd.read_csv(out)
    assert back["n"].tolist() == [1, -2, 3] and back["flag"].tolist() == [True, False, True]
    assert back["x"].iloc[0] == -0.5 and pd.isna(back["x"].iloc[1]) and back["x"].iloc[2] == 1e-7
    assert [unneutralise(v) for v in back["text"]] == ["\tTAB", "\rCR at start", "a\rb"]
    assert unneutralise(back["more"].iloc[0]) == "+1"
    assert unneutralise(back["more"].iloc[1]) == "'=quoted already" and pd.isna(back["more"][2])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "'",
        "plain",
        "'plain",
        "=1+1",
        "+1",
        "-1",
        "@a",
        "\tx",
        "\rx",
        "'=x",
        "''=x",
        "'''",
        "=",
        "a=b",
    ],
)
def test_unneutralise_undoes_the_quote_prefix(text):
    from vecstore.files import neutralise, unneutralise

    safe = neutralise(text)
    assert not safe.startswith(TRIGGERS)
    assert unneutralise(safe) == text
    if text.startswith(TRIGGERS):
        assert safe == "'" + text
    elif not text.startswith("'"):
        assert safe == text and unneutralise(text) == text


def test_unneutralise_examples():
    from vecstore.files import unneutralise

    assert unneutralise("'=cmd|'/C calc'!A0") == "=cmd|'/C calc'!A0"
    assert unneutralise("'-2") == "-2" and unneutralise("'\tx") == "\tx"
    assert (
        unneutralise("'@x") == "@x"
        and unneutralise("'+x") == "+x"
        and unneutralise("'\rx") == "\rx"
    )
    assert unneutralise("'quoted'") == "'quoted'" and unneutralise("don't") == "don't"
    assert unneutralise("=x") == "=x" and unneutralise("") == "" and unneutralise("'") == "'"


# ---- where the files go ----------------------------------------------------------------------


@pytest.fixture
def propagated(tmp_path, cli):
    root = tmp_path / "scans"
    for i in range(12):
        make_image(root / f"a{i}.png", seed=i)
    assert cli("ingest", root, "--space", "pixels").exit_code == 0
    for i, label in enumerate(["normal", "cancer", "normal", "cancer"]):
        assert cli("labels", "set", root / f"a{i}.png", label, "--new-class").exit_code == 0
    assert cli("propagate", "-k", "3").exit_code == 0
    return root


def _device(tmp_path: Path, name: str) -> Path:
    """A character device like /dev/<name>: as root, a node of our own in tmp_path (so that a
    regression replaces that one and not the machine's); else the machine's (not writable)."""
    if os.geteuid() != 0:
        return Path("/dev") / name
    minor = {"null": 3, "full": 7}[name]
    node = tmp_path / f"dev-{name}"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        os.close(os.open(node, os.O_WRONLY))
    except OSError as exc:  # pragma: no cover - a container without mknod or a nodev mount
        pytest.skip(f"cannot make a device node here: {exc}")
    return node


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", ["export", "suggest", "report"])
def test_a_symlink_is_kept_and_its_target_replaced(propagated, tmp_path, cli, command):
    real = tmp_path / "real" / "out.txt"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    r = cli(command, "-o", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    text = real.read_text()
    assert text != "old\n" and (text.startswith("<!DOCTYPE html>") or "path" in text)
    assert _leftovers(tmp_path) == [] and _leftovers(real.parent) == []
    # a dangling link: the file is created where it points
    gone = tmp_path / "real" / "new.txt"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(gone)
    assert cli(command, "-o", dangling).exit_code == 0
    assert dangling.is_symlink() and gone.is_file() and gone.stat().st_size > 0


@pytest.mark.parametrize("command", ["export", "suggest", "report"])
def test_a_fifo_is_written_into(propagated, tmp_path, cli, command):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read():
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    r = cli(command, "-o", fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    if not got and reader.is_alive():  # nothing opened the FIFO: unblock the reader
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(10)
    assert r.exit_code == 0, r.output
    assert got and len(got[0]) > 100
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["export", "suggest", "report"])
def test_a_character_device_is_written_into(propagated, tmp_path, cli, command):
    null = _device(tmp_path, "null")
    r = cli(command, "-o", null)
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["export", "suggest", "report"])
def test_dash_writes_to_standard_output(propagated, tmp_path, cli, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli(command, "-o", "-", *(["-n", "5"] if command == "suggest" else []))
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "-").exists()
    assert r.stderr.startswith("wrote ")  # the summary line, not in the data
    if command == "report":
        assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.rstrip().endswith("</html>")
    else:
        df = pd.read_csv(io.StringIO(r.stdout))
        assert len(df) == (12 if command == "export" else 5)
        assert "wrote" not in r.stdout


@pytest.mark.parametrize("command", ["export", "suggest", "report"])
def test_write_errors_are_one_clean_line(propagated, tmp_path, cli, command):
    full = _device(tmp_path, "full")
    for target in (full, Path("/proc/version"), tmp_path / "afile" / "under.csv"):
        (tmp_path / "afile").write_text("a file, not a folder\n")
        r = cli(command, "-o", target)
        assert r.exit_code == 1, (target, r.output)
        assert isinstance(r.exception, SystemExit), r.exception
        assert "Traceback" not in r.output
        assert re.fullmatch(rf"Error: cannot write {re.escape(str(target))}: .+\n", r.stderr), (
            r.stderr
        )
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert _leftovers(tmp_path) == [] and _leftovers(Path("/proc")) == []
    assert Path("/proc/version").read_text().startswith("Linux")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_no_permission_is_a_clean_error(propagated, tmp_path, cli):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.csv").write_text("old\n")
    locked.chmod(0o555)
    try:
        r = cli("export", "-o", locked / "old.csv")
    finally:
        locked.chmod(0o755)
    assert r.exit_code == 1 and "Error: cannot write" in r.stderr and "Traceback" not in r.output
    assert (locked / "old.csv").read_text() == "old\n" and _leftovers(locked) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    propagated, tmp_path, cli, monkeypatch
):
    import vecstore.files

    out = tmp_path / "pseudo.csv"
    out.write_text("old\n")

    def fail(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vecstore.files.os, "replace", fail)
    r = cli("export", "-o", out)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "No space left on device" in r.stderr
    assert out.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_a_directory_is_refused(propagated, tmp_path, cli, store_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for command in ("export", "suggest", "report"):
        r = cli(command, "-o", folder)
        assert r.exit_code != 0 and "is a directory" in r.output, r.output
        assert list(folder.iterdir()) == []
    with Store.open(store_path) as store:
        with pytest.raises(BadInput, match="is a directory"):
            store.export(folder)
        link = tmp_path / "to-folder"
        link.symlink_to(folder)
        with pytest.raises(BadInput, match="is a directory"):
            store.report(link)
    assert list(folder.iterdir()) == [] and link.is_symlink()


# ---- the HTML report -------------------------------------------------------------------------

HOSTILE_HTML = [
    "<!--<script>",
    "<img src=x onerror=alert(1)>",
    '<a href="http://evil">x</a>',
    '"><script>alert(2)</script>',
]


def _data_block(page: str) -> str:
    return re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1]


def test_report_data_block_escapes_markup(propagated, tmp_path, cli):
    for i, label in enumerate(HOSTILE_HTML):
        r = cli("labels", "set", "--new-class", "--replace", propagated / f"a{i}.png", label)
        assert r.exit_code == 0, r.output
    assert cli("propagate", "-k", "3").exit_code == 0
    out = tmp_path / "r.html"
    assert cli("report", "-o", out).exit_code == 0
    page = out.read_text()
    block = _data_block(page)
    assert not set("<>&") & set(block)
    data = json.loads(block)
    assert {p["expert"] for p in data["points"]} >= set(HOSTILE_HTML)
    # three script elements: plotly.js, the data, the page's own
    assert len(re.findall(r"<script\b", page[page.index("</head>") :])) == 2


def test_labels_written_by_export_and_suggest_import_back_as_they_were(tmp_path, cli, db):
    """vecstore reads its own neutralised cells back: the quote it added is dropped."""
    _hostile_store(tmp_path / "scans", cli)
    out = tmp_path / "pseudo.csv"
    assert cli("export", "-o", out).exit_code == 0
    experts = pd.read_csv(out).query("source == 'expert'")
    # saved again as a spreadsheet would (quoting every cell: pandas leaves a lone CR bare)
    experts.to_csv(tmp_path / "experts.csv", index=False, quoting=csv.QUOTE_ALL)
    r = cli("labels", "import", tmp_path / "experts.csv")
    assert r.exit_code == 0 and "0 added, 0 replaced, 6 unchanged" in r.output, r.output
    assert sorted(lab for (lab,) in db("SELECT DISTINCT label FROM labels")) == sorted(
        HOSTILE_LABELS
    )
    picks = tmp_path / "to_label.csv"
    assert cli("suggest", "-n", "2", "-o", picks).exit_code == 0
    filled = pd.read_csv(picks)
    filled["label"] = '\'=HYPERLINK("x")'  # neutralised, as vecstore writes such a label
    filled.to_csv(picks, index=False)
    r = cli("labels", "import", picks, "--new-class")
    assert r.exit_code == 0, r.output
    assert db("SELECT COUNT(*) FROM labels WHERE label = '=HYPERLINK(\"x\")'") == [(2,)]
