"""Label Studio's own code, run by tests/test_label_studio.py in a separate virtualenv
(label-studio-sdk pins numpy below the version vecstore runs with; `make test` builds that
environment). Two commands, answers as JSON on standard output:

    validate TASKS.json CONFIG.xml   each task's data, predictions and annotations against the
                                     labeling config (the SDK's LabelInterface)
    convert EXPORT.json CONFIG.xml DIR   Label Studio's JSON export to its JSON-MIN and CSV
                                     exports (the SDK's converter, which Label Studio's export
                                     runs): DIR/min/result.json, DIR/result.csv
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def validate(tasks_path: str, config_path: str) -> dict:
    from label_studio_sdk.label_interface import LabelInterface

    li = LabelInterface(Path(config_path).read_text())
    tasks = json.loads(Path(tasks_path).read_text())
    errors = []
    for n, task in enumerate(tasks):
        # validate_task(task) with predictions calls validate_prediction() without its
        # argument in SDK 2.1; the data is checked alone, the regions one by one
        if not li.validate_task({"data": task["data"]}):
            errors.append(f"task {n}: data does not fit the config")
        # an annotation is checked as a prediction is (both are regions: _validate_object)
        for kind in ("predictions", "annotations"):
            for p in task.get(kind, []):
                errors += [f"task {n} {kind}: {e}" for e in li.validate_prediction(p, True)]
    return {"tasks": len(tasks), "errors": errors}


def convert(export_path: str, config_path: str, out: str) -> dict:
    from label_studio_sdk.converter import Converter

    c = Converter(Path(config_path).read_text(), project_dir=None, download_resources=False)
    c.convert_to_json_min(export_path, str(Path(out) / "min"), is_dir=False)
    c.convert_to_csv(export_path, str(Path(out) / "result.csv"), is_dir=False, sep=",")
    return {
        "json_min": str(Path(out) / "min" / "result.json"),
        "csv": str(Path(out) / "result.csv"),
    }


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    command, *args = sys.argv[1:]
    answer = {"validate": validate, "convert": convert}[command](*args)
    print(json.dumps(answer))
