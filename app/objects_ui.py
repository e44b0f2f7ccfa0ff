"""Object views shared by the Compare, Small objects and Boundaries pages (detectors: COCO per-object records,
one vocabulary for who found an object, the drawings' class legend)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from fapn_core.metrics.detection_pair import annotation_arrays

GT_COLOUR = (40, 200, 60)
A_COLOUR = (30, 90, 230)
B_COLOUR = (230, 40, 40)
#: one vocabulary for "who found the object" in every object table (the library's outcome words → the app's)
FOUND_BY = {"recovered": "only B", "lost": "only A", "both_hit": "both", "both_missed": "neither"}
OUTCOMES = list(FOUND_BY.values())
NO_VALUE = ("—: no value — for IoU/score, no detection of the object's class overlaps it (its IoU is 0, there is "
            "no mask to compare); for Boundary IoU, no such detection or no mask")


def records_frame(res) -> pd.DataFrame:
    """The per-object records of a :class:`DetectionComparison` (or a label-map comparison's ``objects``) as a
    table, one row per GT object, its ``outcome`` in the app's words (:data:`FOUND_BY`)."""
    records = getattr(res, "records", None)
    frame = pd.DataFrame([r.to_dict() for r in (records if records is not None else res.objects)])
    if not frame.empty:
        frame["outcome"] = frame["outcome"].map(FOUND_BY)
    return frame


def size_summary(summary: dict[str, Any]) -> pd.DataFrame:
    """``summarize_objects`` as the by-size table both object sections show (same columns, same words)."""
    return pd.DataFrame([
        {"size": k, "objects": s.n_objects, "found A (%)": 100 * s.hit_rate_a, "found B (%)": 100 * s.hit_rate_b,
         "mean IoU A (%)": 100 * s.mean_iou_a, "mean IoU B (%)": 100 * s.mean_iou_b,
         "only B": s.recovered_by_b, "only A": s.lost_by_b} for k, s in summary.items()]).round(2)


def class_count_legend(names: list[str], palette: np.ndarray, counts: dict[str, dict[int, int]]):
    """A legend of the classes drawn (category id → colour) with each drawing's count, ``car: A 3, B 4, ground
    truth 5``; None when nothing is drawn."""
    from fapn_core.viz import LegendEntry, legend_figure
    from fapn_core.viz._common import hex_color

    ids = sorted({i for c in counts.values() for i in c})
    if not ids:
        return None
    entries, texts = [], []
    for i in ids:
        colour = tuple(int(v) for v in palette[i % len(palette)])
        name = names[i] if i < len(names) else str(i)
        entries.append(LegendEntry(i, name, colour, hex_color(colour), 0, 0.0))
        texts.append(f"{name}: " + ", ".join(f"{k} {v.get(i, 0)}" for k, v in counts.items()))
    return legend_figure(entries, ncols=2, texts=texts)


@st.cache_data(max_entries=8, show_spinner=False)
def gt_masks(gt_key: str, _gt: list[dict[str, Any]], image_hw: tuple[int, int]) -> np.ndarray | None:
    """Decoded ground-truth masks (N, H, W) in annotation order (None when an annotation has no mask)."""
    return annotation_arrays(_gt, image_hw)[2]


def _box_mask(box_xyxy, hw: tuple[int, int]) -> np.ndarray:
    m = np.zeros(hw, bool)
    x0, y0, x1, y1 = (int(round(float(v))) for v in box_xyxy)
    m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return m


def object_masks(ctx, res, rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(GT mask, A's mask, B's mask) of one record; boxes as filled rectangles for box-only models/GT."""
    hw = tuple(ctx.image.shape[:2])
    k = next(i for i, a in enumerate(res.gt) if int(a["id"]) == int(rec["object_id"]))
    from app.keys import annotations_key

    masks = gt_masks(f"{ctx.image_key}|{annotations_key(res.gt)}", res.gt, hw)
    if masks is not None:
        g = masks[k]
    else:
        x, y, w, h = res.gt[k]["bbox"]
        g = _box_mask((x, y, x + w, y + h), hw)
    out = [g]
    for tag in ("a", "b"):
        d = rec[f"det_{tag}"]
        det = ctx.prediction(tag).detections
        if d is None or (isinstance(d, float) and np.isnan(d)):
            out.append(None)
        elif det.masks is not None and res.iou_type == "segm":
            out.append(det.masks[int(d)].numpy())
        else:
            out.append(_box_mask(det.boxes[int(d)].tolist(), hw))
    return out[0], out[1], out[2]


def select_record(frame: pd.DataFrame, columns: list[str], key: str) -> dict[str, Any] | None:
    """A selectable table of records ("—" where a value is missing); the selected row (as a dict) or None."""
    from app.ui import table

    event = table(frame[columns].round(3), digits=3, on_select="rerun", selection_mode="single-row", key=key)
    rows = event.selection.rows if event is not None else []
    return frame.iloc[rows[0]].to_dict() if rows else None


def fmt(v: Any, digits: int = 2) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if not np.isfinite(v) else f"{v:.{digits}f}"
