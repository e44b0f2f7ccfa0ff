"""The tables every evaluation writes, as lists of rows (one dict per method), and their Markdown form.

Label-map models: the seed's ablation (params + mIoU), boundary (3/5/8/12 px + mean) and small-object tables.
Detectors: box / mask / Boundary AP, PQ, objects by size, and their semantic heads' tables. A new metric adds a
column here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics.objects import summarize_objects
from .reports import DetectionReport, EvaluationReport

AP_COLUMNS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100")
SIZES = ("small", "medium", "large", "all")

SEMANTIC_TITLES = {"ablation": "Ablation (params + mIoU, %)", "boundary": "Boundary band mIoU (%)",
                   "small_objects": "Small objects (hit rate and mean IoU by COCO size bin, %)"}
TABLE_TITLES = {"box_ap": "Box AP (COCO, %)", "mask_ap": "Mask AP (COCO, %)",
                "boundary_ap": "Boundary AP (Cheng et al. 2021, dilation 0.02, %)",
                "panoptic": "Panoptic quality (PQ/SQ/RQ, things/stuff, %)",
                "objects": "Objects by COCO size: found = COCO match at IoU 0.5 (%), mean IoU of the matched (else "
                           "best) detection (%); only_B / only_A: found by B (A) alone",
                "semantic_ablation": "Semantic head (stuff + 'things'): mIoU (%)",
                "semantic_boundary": "Semantic head: boundary band mIoU (%)",
                "semantic_small_objects": "Semantic head: thing pixels by object size (%)"}


def pct(x: float | None) -> float | None:
    """A fraction as a percentage rounded to 0.01 (None for missing or non-finite values)."""
    return None if x is None or not np.isfinite(x) else round(100.0 * float(x), 2)


def params_m(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 2)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ label-map models
def build_tables(report: EvaluationReport) -> dict[str, list[dict[str, Any]]]:
    """The seed's ablation (params + mIoU), boundary (3/5/8/12 px + mean) and small-object tables."""
    ablation, boundary, objects = [], [], []
    for label in report.labels:
        r = report.model_result(label)
        ablation.append({"method": label, "params_M": params_m(report.params[label]),
                         "mIoU": pct(r.miou), "pixel_acc": pct(r.pixel_accuracy), "iIoU": pct(r.iiou.mean),
                         "boundary_IoU": pct(r.boundary_iou.mean), "boundary_F": pct(r.boundary_f.mean_f)})
        row = {"method": label}
        for w, m in zip(r.band.widths, r.band.miou):
            row[f"{w}px"] = pct(m)
        row["mean"] = pct(r.band.mean_miou)
        boundary.append(row)
        comp, side = report.comparison_of(label)
        orow: dict[str, Any] = {"method": label}
        for size in SIZES:
            s = comp.object_summary.get(size)
            if s is None:
                continue
            orow[f"{size}_n"] = s.n_objects
            orow[f"{size}_hit"] = pct(getattr(s, f"hit_rate_{side}"))
            orow[f"{size}_IoU"] = pct(getattr(s, f"mean_iou_{side}"))
        orow["iIoU"] = pct(r.iiou.mean)
        objects.append(orow)
    return {"ablation": ablation, "boundary": boundary, "small_objects": objects}


def per_class_scores(report: EvaluationReport, label: str) -> dict[str, dict[str, float | None]]:
    """Full-precision class IoU and class iIoU (evaluated thing classes only) of one model, by class name."""
    r = report.model_result(label)
    first = next(iter(report.comparisons.values()))
    names = first.class_names or [str(i) for i in range(first.num_classes)]

    def value(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"iou": {n: value(v) for n, v in zip(names, r.iou)},
            "iiou": {names[c]: value(r.iiou.iiou[c]) for c in r.iiou.classes}}


def prediction_rows(predictions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prediction set: folder, id format and the count of each kind of problem."""
    keys = ("matched", "missing", "ambiguous", "extra", "unreadable", "size", "values")
    return [{"method": k, "dir": r["dir"], "ids": r["ids"], **{c: r[c] for c in keys}} for k, r in predictions.items()]


# ------------------------------------------------------------------------------------------------- detectors
def object_summary_rows(report: DetectionReport) -> list[dict[str, Any]]:
    """Per model: objects found (COCO match at IoU 0.5, %) and mean IoU of the match, by COCO size bin."""
    rows = []
    first = report.labels[0]
    for k, recs in report.objects.items():
        a, b = k.split("__vs__")
        summ = summarize_objects(recs)
        for lab, side in ((a, "a"), (b, "b")):
            if lab == first and rows:
                continue
            row: dict[str, Any] = {"method": lab}
            for size in SIZES:
                s = summ[size]
                row[f"{size}_n"] = s.n_objects
                row[f"{size}_found"] = pct(getattr(s, f"hit_rate_{side}"))
                row[f"{size}_IoU"] = pct(getattr(s, f"mean_iou_{side}"))
            base = lab == first and len(report.labels) > 1
            row["only_B"] = None if base else summ["all"].recovered_by_b
            row["only_A"] = None if base else summ["all"].lost_by_b
            row["false_positives"] = len(report.false_positives[lab])
            rows.append(row)
    return rows


def detection_tables(report: DetectionReport) -> dict[str, list[dict[str, Any]]]:
    """Box AP, mask AP, Boundary AP (AP_S/M/L), PQ/SQ/RQ with things/stuff, objects by size; semantic tables."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for key, t in (("box_ap", "bbox"), ("mask_ap", "segm"), ("boundary_ap", "boundary")):
        rows = []
        for lab in report.labels:
            s = report.coco[lab].get(t)
            if s is None:
                continue
            rows.append({"method": lab, "params_M": params_m(report.params[lab]),
                         **{c: pct(s.stats[c]) for c in AP_COLUMNS}})
        if rows:
            tables[key] = rows
    if report.panoptic:
        tables["panoptic"] = [{"method": lab, **{k: pct(v) for k, v in s.row().items()}}
                              for lab, s in report.panoptic.items()]
    tables["objects"] = object_summary_rows(report)
    if report.semantic is not None:
        for k, rows in report.semantic.tables.items():
            tables[f"semantic_{k}"] = rows
    return tables


def table_file(key: str) -> str:
    """The CSV file of table ``key`` (the by-size objects table is ``objects_by_size.csv``: ``objects.csv`` holds
    one row per object)."""
    return "objects_by_size.csv" if key == "objects" else f"{key}.csv"
