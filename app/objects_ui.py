"""Object views shared by the Small objects and Boundaries pages (detectors: COCO per-object records)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from fapn_core.metrics.detection_pair import annotation_arrays

GT_COLOUR = (40, 200, 60)
A_COLOUR = (30, 90, 230)
B_COLOUR = (230, 40, 40)


def records_frame(res) -> pd.DataFrame:
    """The per-object records of a :class:`DetectionComparison` as a table (one row per GT object)."""
    return pd.DataFrame([r.to_dict() for r in res.records])


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
    """A selectable table of records; the selected row (as a dict) or None."""
    event = st.dataframe(frame[columns].round(3), hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key=key)
    rows = event.selection.rows if event is not None else []
    return frame.iloc[rows[0]].to_dict() if rows else None


def fmt(v: Any, digits: int = 2) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if not np.isfinite(v) else f"{v:.{digits}f}"
