"""Label Studio both ways: `export --format label-studio` writes tasks that Label Studio's own
SDK validates against the labeling config written beside them (pseudo-labels as predictions:
model version the propagation run, score the confidence; expert labels as annotations), and
`labels import` reads Label Studio's JSON, JSON-MIN and CSV exports back: a reviewer's 3
changed labels change exactly those 3 labels, with the source `label-studio`.

The JSON-MIN and CSV files are made from the JSON export by the SDK's converter (what Label
Studio's export runs), in a separate virtualenv (.venv-labelstudio, built by `make test`):
label-studio-sdk pins numpy below the version vecstore runs with."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
READER = Path(__file__).with_name("label_studio_reader.py")
LS_PYTHON = Path(
    os.environ.get("VECSTORE_LABEL_STUDIO_PYTHON", ROOT / ".venv-labelstudio/bin/python")
)


def label_studio(*args: object) -> dict:
    """Run tests/label_studio_reader.py with Label Studio's SDK; its JSON answer."""
    if not LS_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{LS_PYTHON} missing: `make test` builds it (label-studio-sdk)")
        pytest.skip(f"{LS_PYTHON} missing: `make test` builds it (label-studio-sdk)")
    r = subprocess.run(
        [str(LS_PYTHON), str(READER), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def propagated(image_dir, cli, tmp_path):
    """A store of the 10 images (6 expert labels from the folders, 4 unlabeled), propagated;
    its CSV export read back."""
    assert cli("ingest", image_dir, "--space", "hog", "--labels-from-folders").exit_code == 0
    assert cli("propagate").exit_code == 0
    assert cli("export", "-o", tmp_path / "table.csv").exit_code == 0
    return pd.read_csv(tmp_path / "table.csv", keep_default_na=False)


def export_tasks(cli, out: Path) -> list[dict]:
    r = cli("export", "--format", "label-studio", "-o", out)
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def labels(db) -> dict[str, tuple[str, str, str]]:
    """path -> (label, source, chosen) of every expert label."""
    rows = db(
        "SELECT p.path, l.label, l.source, l.chosen FROM labels l "
        "JOIN image_paths p ON p.image_id = l.image_id"
    )
    return {p: (lab, src, ch) for p, lab, src, ch in rows}


def choice(label: str) -> list[dict]:
    value = {"choices": [label]}
    return [{"id": "r1", "type": "choices", "value": value, "origin": "manual",
             "from_name": "label", "to_name": "image"}]  # fmt: skip


def as_label_studio_exports(tasks: list[dict], review: dict[int, str]) -> list[dict]:
    """The tasks as Label Studio's JSON export gives them back after a review: task and
    annotation ids; the annotations imported with the tasks (the expert labels); a
    reviewer's annotation on each task of ``review`` (index -> label), replacing an imported
    one; one task a reviewer skipped (a cancelled annotation, which counts for nothing)."""
    out, ann_id = [], 100
    for i, task in enumerate(tasks):
        anns = [
            dict(a, id=(ann_id := ann_id + 1), completed_by=1) for a in task.get("annotations", [])
        ]
        if i in review:
            anns = [{"id": (ann_id := ann_id + 1), "completed_by": 2, "result": choice(review[i]),
                     "was_cancelled": False, "ground_truth": False, "lead_time": 4.2,
                     "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z",
                     "task": i + 1}]  # fmt: skip
        elif not anns and i % 2:  # a skipped task; the others nobody opened
            anns = [{"id": (ann_id := ann_id + 1), "completed_by": 2, "result": [],
                     "was_cancelled": True, "task": i + 1}]  # fmt: skip
        out.append({"id": i + 1, **task, "annotations": anns, "meta": {}, "inner_id": i + 1})
    return out


def three_changes(tasks: list[dict]) -> dict[int, str]:
    """A reviewer's corrections: the two first pseudo-labels and one expert label flipped."""
    flip = {"normal": "cancer", "cancer": "normal"}
    pseudo = [i for i, t in enumerate(tasks) if "predictions" in t][:2]
    expert = [i for i, t in enumerate(tasks) if "annotations" in t][:1]
    out = {}
    for i in pseudo:
        out[i] = flip[tasks[i]["predictions"][0]["result"][0]["value"]["choices"][0]]
    for i in expert:
        out[i] = flip[tasks[i]["annotations"][0]["result"][0]["value"]["choices"][0]]
    return out


def test_tasks_hold_pseudo_labels_as_predictions_and_expert_labels_as_annotations(
    propagated, cli, tmp_path
):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    run_id = int(propagated.run_id.iloc[0])
    by_sha = {t["data"]["sha256"]: t for t in tasks}
    assert len(tasks) == len(propagated) == 10
    for row in propagated.itertuples():
        task = by_sha[row.sha256]
        assert task["data"]["path"] == row.path and task["data"]["image_id"] == row.image_id
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        if row.source == "expert":
            assert "predictions" not in task
            assert task["annotations"][0]["result"][0]["value"] == {"choices": [row.label]}
        else:
            (pred,) = task["predictions"]
            assert pred["model_version"] == f"vecstore propagate run {run_id}"
            assert pred["score"] == pytest.approx(row.confidence, abs=1e-6)
            assert pred["result"][0]["value"] == {"choices": [row.label]}
    config = (tmp_path / "tasks.label-config.xml").read_text()
    assert '<Choice value="cancer"/>' in config and '<Choice value="normal"/>' in config


def test_the_local_files_url_is_the_path_under_the_document_root_the_export_names(
    propagated, cli, tmp_path, image_dir
):
    r = cli("export", "--format", "label-studio", "-o", tmp_path / "tasks.json")
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={image_dir}" in r.output, r.output
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    for t in tasks:
        rel = t["data"]["image"].removeprefix("/data/local-files/?d=")
        assert str(image_dir / rel) == t["data"]["path"]


def test_label_studio_validates_the_tasks_against_the_config(propagated, cli, tmp_path):
    export_tasks(cli, tmp_path / "tasks.json")
    answer = label_studio("validate", tmp_path / "tasks.json", tmp_path / "tasks.label-config.xml")
    assert answer == {"tasks": 10, "errors": []}


def test_label_studio_s_validator_catches_a_label_outside_the_config(propagated, cli, tmp_path):
    """The check above can fail: a prediction naming a class the config lacks is caught."""
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    pred = next(t for t in tasks if "predictions" in t)["predictions"][0]
    pred["result"][0]["value"]["choices"] = ["tumour"]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    answer = label_studio("validate", tmp_path / "tasks.json", tmp_path / "tasks.label-config.xml")
    assert len(answer["errors"]) == 1 and "tumour" in answer["errors"][0]


def test_a_review_in_label_studio_json_changes_exactly_the_three_labels_changed(
    propagated, cli, db, tmp_path
):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    review = three_changes(tasks)
    exported = as_label_studio_exports(tasks, review)
    (tmp_path / "project-1.json").write_text(json.dumps(exported))
    before = labels(db)
    r = cli("labels", "import", tmp_path / "project-1.json", "--replace")
    assert r.exit_code == 0, r.output
    assert "(label-studio): 2 added, 1 replaced, 5 unchanged" in r.output
    after = labels(db)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {tasks[i]["data"]["path"] for i in review}
    for i, label in review.items():
        assert after[tasks[i]["data"]["path"]] == (label, "label-studio", "review")
    batch = db("SELECT kind, source FROM label_batches ORDER BY id DESC LIMIT 1")
    assert batch == [("import", "label-studio:project-1.json")]


@pytest.mark.parametrize("fmt", ["json_min", "csv"])
def test_label_studio_s_json_min_and_csv_exports_give_the_same_three_changes(
    propagated, cli, db, tmp_path, fmt
):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    review = three_changes(tasks)
    (tmp_path / "project-1.json").write_text(json.dumps(as_label_studio_exports(tasks, review)))
    files = label_studio(
        "convert", tmp_path / "project-1.json", tmp_path / "tasks.label-config.xml", tmp_path / "ls"
    )
    before = labels(db)
    r = cli("labels", "import", files[fmt], "--replace")
    assert r.exit_code == 0, r.output
    assert "(label-studio): 2 added, 1 replaced, 5 unchanged" in r.output
    after = labels(db)
    assert {p for p in after if after[p] != before.get(p)} == {
        tasks[i]["data"]["path"] for i in review
    }
    assert {after[tasks[i]["data"]["path"]] for i in review} == {
        (lab, "label-studio", "review") for lab in review.values()
    }


def test_a_changed_expert_label_needs_replace_and_nothing_is_imported_without_it(
    propagated, cli, db, tmp_path
):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    (tmp_path / "ls.json").write_text(
        json.dumps(as_label_studio_exports(tasks, three_changes(tasks)))
    )
    before = labels(db)
    r = cli("labels", "import", tmp_path / "ls.json")
    assert r.exit_code != 0 and "pass --replace" in r.output and "Traceback" not in r.output
    assert labels(db) == before


def test_annotators_who_disagree_on_a_task_stop_the_import(propagated, cli, db, tmp_path):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    i = next(i for i, t in enumerate(tasks) if "predictions" in t)
    exported = as_label_studio_exports(tasks, {i: "normal"})
    other = dict(exported[i]["annotations"][0], id=999, result=choice("cancer"))
    exported[i]["annotations"].append(other)
    (tmp_path / "ls.json").write_text(json.dumps(exported))
    before = labels(db)
    r = cli("labels", "import", tmp_path / "ls.json")
    assert r.exit_code != 0, r.output
    assert f"task {i + 1} (annotation 999)" in r.output and "same image" in r.output
    assert labels(db) == before


def test_an_annotation_with_two_choices_or_none_is_a_bad_row(propagated, cli, db, tmp_path):
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    pseudo = [i for i, t in enumerate(tasks) if "predictions" in t]
    exported = as_label_studio_exports(tasks, {pseudo[0]: "normal", pseudo[1]: "normal"})
    exported[pseudo[0]]["annotations"][0]["result"][0]["value"]["choices"] = ["normal", "cancer"]
    exported[pseudo[1]]["annotations"][0]["result"] = []
    (tmp_path / "ls.json").write_text(json.dumps(exported))
    r = cli("labels", "import", tmp_path / "ls.json")
    assert r.exit_code != 0
    assert "several choices 'normal', 'cancer'" in r.output and "empty label" in r.output


def test_tasks_vecstore_did_not_write_are_refused_with_what_is_missing(cli, tmp_path, image_dir):
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    foreign = [{"id": 1, "data": {"image": "s3://bucket/x.png"}, "annotations": [
        {"id": 1, "result": choice("normal"), "was_cancelled": False}]}]  # fmt: skip
    (tmp_path / "ls.json").write_text(json.dumps(foreign))
    r = cli("labels", "import", tmp_path / "ls.json")
    assert r.exit_code != 0 and "neither a `sha256` nor a `path`" in r.output
    (tmp_path / "plain.json").write_text(json.dumps([{"path": "x.png", "label": "normal"}]))
    r = cli("labels", "import", tmp_path / "plain.json")
    assert r.exit_code != 0 and "neither Label Studio's JSON export" in r.output
    (tmp_path / "broken.json").write_text("[{")
    r = cli("labels", "import", tmp_path / "broken.json")
    assert r.exit_code != 0 and "cannot read labels JSON" in r.output
    assert "Traceback" not in r.output


def test_our_own_tasks_file_has_no_reviewed_label_to_import(propagated, cli, db, tmp_path):
    """The exported tasks themselves: the expert labels come back unchanged, and the
    predictions, vecstore's own guesses, are never read as labels."""
    export_tasks(cli, tmp_path / "tasks.json")
    before = labels(db)
    r = cli("labels", "import", tmp_path / "tasks.json")
    assert r.exit_code == 0, r.output
    assert "0 added, 0 replaced, 6 unchanged" in r.output and "4 tasks without" in r.output
    assert labels(db) == before


def test_metadata_asked_for_goes_into_the_task_data(cli, tmp_path, image_dir):
    meta = tmp_path / "meta.csv"
    rows = [f"{p},{'P1' if 'normal' in str(p) else 'P2'}" for p in sorted(image_dir.rglob("*.png"))]
    meta.write_text("path,PatientID\n" + "\n".join(rows) + "\n")
    args = ("--space", "hog", "--labels-from-folders", "--metadata", meta)
    assert cli("ingest", image_dir, *args).exit_code == 0
    assert cli("propagate").exit_code == 0
    tasks = export_tasks(cli, tmp_path / "plain.json")
    assert all("PatientID" not in t["data"] for t in tasks)
    r = cli(
        "export",
        "--format",
        "label-studio",
        "-o",
        tmp_path / "t.json",
        "--with-metadata",
        "PatientID",
    )
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert {t["data"]["PatientID"] for t in tasks} == {"P1", "P2"}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def one_task(data: dict, **annotation) -> list[dict]:
    return [{"id": 1, "data": data, "annotations": [{"id": 7, **annotation}]}]


@pytest.mark.parametrize(
    "tasks",
    [
        [{"id": 1, "data": {"sha256": "ab"}, "annotations": 5}],
        one_task({"sha256": "ab"}, result=5),
        one_task({"sha256": "ab"}, result=[{"from_name": "label", "value": ["x"]}]),
        one_task({"sha256": "ab"}, result=[{"from_name": "label", "value": {"choices": 5}}]),
        one_task({"sha256": "ab"}, result=[{"from_name": "label", "value": {"choices": {"a": 1}}}]),
        [{"id": 1, "data": {"sha256": "ab"}, "annotations": ["x"]}],
    ],
)
def test_a_malformed_label_studio_file_is_a_clear_error(cli, tmp_path, image_dir, tasks):
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    r = cli("labels", "import", write_json(tmp_path / "ls.json", tasks))
    assert r.exit_code == 1 and "Traceback" not in r.output and r.exception is not None
    assert isinstance(r.exception, SystemExit), r.exception
    assert "task 1" in r.output or "Label Studio" in r.output, r.output


def test_a_deeply_nested_json_file_is_a_clear_error(cli, tmp_path, image_dir):
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    (tmp_path / "deep.json").write_text("[" * 200_000)
    r = cli("labels", "import", tmp_path / "deep.json")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "cannot read labels JSON" in r.output


def test_tasks_keyed_some_by_sha256_some_by_path_are_a_clear_error(propagated, cli, tmp_path):
    a, b = propagated.sha256.iloc[0], propagated.path.iloc[1]
    tasks = one_task({"sha256": a, "path": ""}, result=choice("normal"))
    tasks += [
        {"id": 2, "data": {"path": b}, "annotations": [{"id": 8, "result": choice("normal")}]}
    ]
    r = cli("labels", "import", write_json(tmp_path / "ls.json", tasks))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "task 2" in r.output and "sha256" in r.output


def test_older_exports_single_tasks_and_skipped_annotations_are_read(propagated, cli, db, tmp_path):
    """`completions` (Label Studio before 1.0), one task object instead of a list, and a
    skipped annotation (which counts for nothing)."""
    row = propagated[propagated.source == "propagated"].iloc[0]
    flip = {"normal": "cancer", "cancer": "normal"}[row.label]
    done = [{"id": 1, "result": choice(flip)}]
    done.append({"id": 2, "result": choice(row.label), "skipped": True})
    task = {"id": 1, "data": {"sha256": row.sha256}, "completions": done}
    r = cli("labels", "import", write_json(tmp_path / "one.json", task))
    assert r.exit_code == 0, r.output
    assert labels(db)[row.path] == (flip, "label-studio", "review")


def test_json_min_choices_objects_and_csv_lists_are_read_as_their_choices(
    propagated, cli, db, tmp_path
):
    """JSON-MIN gives a control with several results as {"choices": [...]} or a list; the CSV
    holds its JSON text: one choice is a label, several a bad row."""
    rows = propagated[propagated.source == "propagated"]
    base = {"annotator": 1, "created_at": "", "updated_at": "", "lead_time": 1}
    records = [
        {"sha256": rows.sha256.iloc[0], "id": 1, "annotation_id": 1},
        {"sha256": rows.sha256.iloc[1], "id": 2, "annotation_id": 2, "label": ["cancer"]},
    ]
    records[0]["label"] = {"choices": ["normal"]}
    r = cli("labels", "import", write_json(tmp_path / "min.json", [{**base, **x} for x in records]))
    assert r.exit_code == 0, r.output
    got = labels(db)
    assert got[rows.path.iloc[0]][0] == "normal" and got[rows.path.iloc[1]][0] == "cancer"
    csv_text = (
        "annotation_id,annotator,id,label,sha256\n"
        f'3,1,3,"[""normal"", ""cancer""]",{rows.sha256.iloc[2]}\n'
        f"4,1,4,,{rows.sha256.iloc[3]}\n"
    )
    (tmp_path / "ls.csv").write_text(csv_text)
    r = cli("labels", "import", tmp_path / "ls.csv")
    assert r.exit_code == 1, r.output
    assert "line 2, task 3 (annotation 3): several choices 'normal', 'cancer'" in r.output
    assert "line 3, task 4 (annotation 4): empty label" in r.output


def test_truth_from_label_studio_with_several_choices_is_refused(propagated, cli, tmp_path):
    row = propagated.iloc[0]
    tasks = one_task({"sha256": row.sha256}, result=choice("normal"))
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["normal", "cancer"]
    r = cli("evaluate", "--truth", write_json(tmp_path / "truth.json", tasks))
    assert r.exit_code == 1 and "several choices" in r.output, r.output


def test_a_file_name_needing_quotes_gets_a_url_label_studio_decodes(cli, tmp_path):
    from urllib.parse import unquote

    from tests.conftest import make_image

    root = tmp_path / "scans"
    make_image(root / "normal" / "a b#1%.png", seed=1)
    make_image(root / "cancer" / "c?d&e+.png", seed=2)
    make_image(root / "x.png", seed=3)
    assert cli("ingest", root, "--space", "hog", "--labels-from-folders").exit_code == 0
    assert cli("propagate").exit_code == 0
    tasks = export_tasks(cli, tmp_path / "tasks.json")
    for t in tasks:
        url = t["data"]["image"].removeprefix("/data/local-files/?d=")
        assert "#" not in url and "?" not in url and " " not in url and "&" not in url
        assert str(root / unquote(url)) == t["data"]["path"]


def test_a_metadata_column_named_like_a_task_field_is_refused(cli, tmp_path, image_dir):
    meta = tmp_path / "meta.csv"
    paths = sorted(image_dir.rglob("*.png"))
    meta.write_text("path,image\n" + "\n".join(f"{p},scan" for p in paths) + "\n")
    args = ("--space", "hog", "--labels-from-folders", "--metadata", meta)
    assert cli("ingest", image_dir, *args).exit_code == 0
    assert cli("propagate").exit_code == 0
    out = tmp_path / "t.json"
    r = cli("export", "--format", "label-studio", "-o", out, "--with-metadata", "all")
    assert r.exit_code == 1 and "'image'" in r.output, r.output
    assert not out.exists() and not (tmp_path / "t.label-config.xml").exists()


def test_a_tasks_file_that_cannot_be_written_leaves_no_config(propagated, cli, tmp_path):
    (tmp_path / "taken").mkdir()
    r = cli("export", "--format", "label-studio", "-o", tmp_path / "taken")
    assert r.exit_code == 1 and "directory" in r.output, r.output
    assert not list(tmp_path.glob("*.xml"))


@pytest.mark.parametrize(
    "args, says",
    [
        (("--format", "imagefolder", "--with-metadata", "all"), "--with-metadata"),
        (("--format", "csv", "--media", "symlink"), "--media"),
        (("--format", "label-studio", "--media", "copy"), "--media"),
        (("--format", "imagefolder", "--media", "manifest"), "manifest"),
    ],
)
def test_options_a_format_has_no_use_for_are_refused(propagated, cli, tmp_path, args, says):
    out = tmp_path / "out"
    r = cli("export", "-o", out, *args)
    assert r.exit_code != 0 and says in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()
