"""Label Studio, both ways: the pseudo-label table as Label Studio tasks (each image a task,
its pseudo-label a prediction: model version the propagation run, score its confidence; an
expert label an annotation) with the labeling config they need; and the label rows of Label
Studio's exports (JSON, JSON-MIN, CSV) for ``labels import``.

Formats as Label Studio documents them (labelstud.io/guide/tasks, /guide/predictions,
/guide/export) and as its converter (label_studio_sdk.converter) writes them: a task is
``{"data": {...}, "predictions": [...], "annotations": [...]}``; a result of a Choices control
is ``{"from_name", "to_name", "type": "choices", "value": {"choices": [label]}}``. JSON-MIN and
CSV have one row per annotation: the task's data fields, ``id``, the control's name (here
``label``) holding the choice, and ``annotator``, ``annotation_id``, ``created_at``..."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ..errors import BadInput
from ..files import STDOUT, write_atomically

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FROM_NAME = "label"  # the Choices control of the labeling config: JSON-MIN and CSV's column
TO_NAME = "image"  # the Image object, fed by the task's data.image
SOURCE = "label-studio"  # the source recorded for the labels an import of its files writes
LOCAL_FILES = "/data/local-files/?d="  # Label Studio serves local files under this URL
# task data fields: Label Studio shows them and gives them back in every export format
DATA_FIELDS = ("path", "sha256", "image_id", "cluster", "needs_review", "review_reason")
# columns of Label Studio's JSON-MIN and CSV exports (one row per annotation) that no
# vecstore file has
ANNOTATION_COLUMNS = ("annotation_id", "annotator")


def label_config(classes: Iterable[str]) -> str:
    """The labeling config (XML) of the tasks: the image and one Choices control, a choice
    per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def document_root(paths: Iterable[str]) -> str:
    """The folder Label Studio must serve local files from: the images' deepest common
    folder (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."""
    folders = {os.path.dirname(p) for p in paths}
    return os.path.commonpath(list(folders)) if folders else os.sep


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def task_of(row: dict[str, Any], root: str, extra: Iterable[str] = ()) -> dict[str, Any]:
    """One image's task: its data (a URL Label Studio serves, DATA_FIELDS and the ``extra``
    columns), its expert label as an annotation or its pseudo-label as a prediction."""
    rel = posixpath.join(*Path(os.path.relpath(row["path"], root)).parts)
    data = {"image": LOCAL_FILES + quote(rel)}
    data.update({f: _plain(row[f]) for f in (*DATA_FIELDS, *extra)})
    task: dict[str, Any] = {"data": data}
    label = row["label"]
    if not isinstance(label, str) or not label:
        return task
    if row["source"] == "expert":
        task["annotations"] = [{"result": _choice(label), "ground_truth": False}]
    else:
        run = f"vecstore propagate run {row['run_id']}"
        score = float(row["confidence"])
        task["predictions"] = [{"model_version": run, "score": score, "result": _choice(label)}]
    return task


def _plain(value: Any) -> Any:
    """A cell as JSON has it: numpy numbers as numbers, missing values (NaN, NA) as null."""
    import pandas as pd

    if isinstance(value, (list, tuple, dict)):
        return value
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def write_tasks(
    df: pd.DataFrame, out: str | os.PathLike[str], classes: list[str], extra: Iterable[str] = ()
) -> tuple[str, str | None]:
    """Write the table's rows as Label Studio tasks to ``out`` (JSON) and the labeling config
    beside it (``<stem>.label-config.xml``; none for standard output); returns (document
    root, config path)."""
    extra = list(extra)
    taken = [c for c in extra if c in ("image", *DATA_FIELDS)]
    if taken:
        raise BadInput(
            f"metadata column {taken[0]!r} has the name of a task data field; name the "
            "other columns in --with-metadata, without it"
        )
    root = document_root(df["path"])
    tasks = [task_of(r, root, extra) for r in df.to_dict("records")]

    def write(f: IO[str]) -> None:
        json.dump(tasks, f, ensure_ascii=False, indent=1)
        f.write("\n")

    write_atomically(out, write)  # first: a tasks file that cannot be written leaves nothing
    if str(out) == STDOUT:
        return root, None
    config = Path(out).with_suffix(".label-config.xml")
    write_atomically(config, lambda f: f.write(label_config(classes)))
    return root, str(config)


# ---- reading Label Studio's exports ---------------------------------------------------------


def is_label_studio_csv(columns: Iterable[str]) -> bool:
    """Is a CSV with these columns one of Label Studio's exports (one row per annotation)?"""
    return all(c in set(columns) for c in ANNOTATION_COLUMNS)


def read_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a Label Studio JSON or JSON-MIN export (a list of objects; one object:
    one task), or BadInput saying why not."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BadInput(f"labels file not found: {path}") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise BadInput(f"cannot read labels JSON {path}: {why}") from None
    data = [data] if isinstance(data, dict) else data
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise BadInput(f"labels JSON {path} is not a Label Studio export (a list of tasks)")
    return data


def json_rows(records: list[dict[str, Any]], path: str) -> tuple[list[dict[str, Any]], int]:
    """(one row per submitted annotation: at, key fields, label; tasks without one) of a
    Label Studio JSON (full: tasks with their annotations) or JSON-MIN export."""
    if records and all("annotation_id" in r for r in records):
        return _min_rows(records)
    if records and not all(isinstance(r.get("data"), dict) for r in records):
        raise BadInput(
            f"labels JSON {path} is neither Label Studio's JSON export (tasks: `data` and "
            "`annotations`) nor its JSON-MIN export (rows with `annotation_id`)"
        )
    rows, unannotated = [], 0
    for n, task in enumerate(records, 1):
        name = f"task {task.get('id', f'#{n}')}"
        anns = [a for a in _annotations(task, name) if not _cancelled(a)]
        unannotated += not anns
        for a in anns:
            at = f"{name} (annotation {a.get('id', '?')})"
            rows.append({"at": at, **_keys(task["data"]), "label": _label_of(a.get("result"), at)})
    return rows, unannotated


def _annotations(task: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A task's annotations (`completions` before Label Studio 1.0)."""
    anns = task.get("annotations", task.get("completions")) or []
    if not isinstance(anns, list):
        raise BadInput(f"{name}: its `annotations` are not a list")
    return [a for a in anns if isinstance(a, dict)]


def _cancelled(annotation: dict[str, Any]) -> bool:
    return bool(annotation.get("was_cancelled") or annotation.get("skipped"))


def _min_rows(
    records: list[dict[str, Any]], first_line: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The rows of a JSON-MIN export (or of a CSV export, its lines from ``first_line``):
    the rows of tasks nobody annotated are counted."""
    rows, unannotated = [], 0
    for n, r in enumerate(records, 1):
        if r.get("annotation_id") in (None, ""):
            unannotated += 1
            continue
        at = f"task {r.get('id', f'#{n}')} (annotation {r['annotation_id']})"
        if first_line is not None:
            at = f"line {first_line + n - 1}, {at}"
        rows.append({"at": at, **_keys(r), "label": _min_label(r.get(FROM_NAME), at)})
    return rows, unannotated


def _keys(data: dict[str, Any]) -> dict[str, str]:
    return {k: str(data[k]).strip() for k in ("sha256", "path") if data.get(k) not in (None, "")}


def _label_of(result: Any, at: str) -> list[str]:
    """The choices of the ``label`` control in an annotation's result."""
    if not isinstance(result, list):
        raise BadInput(f"{at}: its `result` is not a list")
    for r in result:
        if isinstance(r, dict) and r.get("from_name") == FROM_NAME:
            value = r.get("value")
            if not isinstance(value, dict):
                raise BadInput(f"{at}: the value of its `{FROM_NAME}` result is not an object")
            return _choices(value.get("choices"), at)
    return []


def _choices(value: Any, at: str) -> list[str]:
    """A list of choices as the export holds it (a list, one text, none)."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise BadInput(f"{at}: its choices {value!r} are not a list of labels")


def _min_label(value: Any, at: str) -> list[str]:
    """A JSON-MIN or CSV cell of the ``label`` control: the choice, or {"choices": [...]} or
    a list (several results; the CSV holds their JSON text)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [value]
    if isinstance(value, dict):
        value = value.get("choices")
    return [c for c in _choices(value, at) if c.strip()]


def csv_rows(df: pd.DataFrame) -> tuple[list[dict[str, Any]], int]:
    """The rows of a Label Studio CSV export (read as strings), as JSON-MIN's."""
    return _min_rows(df.to_dict("records"), first_line=2)
