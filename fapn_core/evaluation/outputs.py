"""The files an evaluation leaves in its folder: one CSV per table, ``summary.json`` and ``tables.md``."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..metrics._serialize import to_jsonable
from .reports import DetectionReport, EvaluationReport
from .runner import atomic_write_text
from .tables import (
    SEMANTIC_TITLES, TABLE_TITLES, markdown_table, per_class_scores, prediction_rows, table_file,
)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (columns: every key in first-seen order; lists as JSON); an empty file for no rows."""
    with open(path, "w", newline="") as f:
        if rows:
            cols = list(dict.fromkeys(k for r in rows for k in r))
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])


def write_outputs(report: EvaluationReport, out: Path) -> None:
    """A label-map evaluation's CSV per table, ``summary.json`` (with per-class scores) and ``tables.md``."""
    out.mkdir(parents=True, exist_ok=True)
    tables = report.tables
    for name, rows in tables.items():
        write_csv(out / f"{name}.csv", rows)
    summary = {
        "models": report.labels, "n_images": report.n_images, "skipped": report.skipped,
        "params": report.params, "seconds": round(report.seconds, 1), "tables": tables,
        "thing_classes": report.thing_classes, "avg_instance_size": report.avg_instance_size,
        "comparisons": {k: {"summary": v.summary(), "fix_break": {
            "fixed": v.fix_break.fixed, "broken": v.fix_break.broken, "net": v.fix_break.net},
            "objects_recovered": len(v.recovered_objects()), "objects_lost": len(v.lost_objects())}
            for k, v in report.comparisons.items()},
        "per_class": {label: per_class_scores(report, label) for label in report.labels},
    }
    if report.predictions:
        summary["predictions"] = report.predictions
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    md = [f"# Evaluation: {', '.join(report.labels)}", "",
          f"{report.n_images} images, {len(report.skipped)} skipped, {report.seconds:.0f} s.", ""]
    for key, title in SEMANTIC_TITLES.items():
        md += [f"## {title}", "", markdown_table(tables[key]), ""]
    if report.predictions:
        md += ["## Prediction files", "", markdown_table(prediction_rows(report.predictions)), ""]
    if tables.get("alignment"):
        md += ["## Does the FAM align? (feature px; means over images, fapn_core/alignment.py)", "",
               markdown_table(tables["alignment"]), ""]
    atomic_write_text(out / "tables.md", "\n".join(md))


def write_detection_outputs(report: DetectionReport, out: Path) -> None:
    """CSV per table (:func:`~.tables.table_file`), ``objects.csv`` / ``false_positives.csv`` (one row per object /
    detection), ``summary.json``, ``tables.md``."""
    for name, rows in report.tables.items():
        write_csv(out / table_file(name), rows)
    write_csv(out / "objects.csv", [dict(pair=k, **to_jsonable(r)) for k, rs in report.objects.items() for r in rs])
    write_csv(out / "false_positives.csv", [to_jsonable(r) for rs in report.false_positives.values() for r in rs])
    summary = {
        "models": report.labels, "tasks": report.tasks, "n_images": report.n_images, "skipped": report.skipped,
        "params": report.params, "seconds": round(report.seconds, 1), "timing": report.timing,
        "tables": report.tables,
        "coco": {lab: {t: to_jsonable(s) for t, s in v.items()} for lab, v in report.coco.items()},
        "panoptic": {lab: to_jsonable(replace(s, counts=None)) for lab, s in report.panoptic.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    md = [f"# Evaluation: {', '.join(report.labels)}", "",
          f"{report.n_images} images, {len(report.skipped)} skipped, {report.seconds:.0f} s "
          f"(inference {report.timing.get('inference_s', 0):.0f} s, metrics {report.timing.get('metrics_s', 0):.0f} s).",
          ""]
    for key, rows in report.tables.items():
        md += [f"## {TABLE_TITLES.get(key, key)}", "", markdown_table(rows), ""]
    atomic_write_text(out / "tables.md", "\n".join(md))
