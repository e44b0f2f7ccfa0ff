"""Boundaries: band mIoU at 3/5/8/12 px (the seed's table), Boundary IoU/F, error vs distance, heatmaps; for
detectors the mask Boundary IoU of A and B per matched object and the errors in the band around it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import objects_ui as ou
from app import guards, sidebar
from fapn_core.metrics.detection_pair import band_errors
from fapn_core.viz import error_heatmap, error_profile_figure, fix_break_view, object_zoom


def detector_boundaries(ctx, name_a: str, name_b: str) -> None:
    st.header("Object masks at their boundaries (detections)")
    res, why = guards.detection_comparison_or_reason(ctx)
    if res is None:
        st.info(why + ".")
        return
    if res.iou_type != "segm":
        st.info("Mask Boundary IoU needs masks from A, B and the ground truth (a Faster R-CNN predicts boxes only).")
        return
    h, w = ctx.image.shape[:2]
    d = max(1, int(round(0.02 * np.hypot(h, w))))
    st.caption(f"Boundary IoU (Cheng et al. 2021) of each object's mask with A's and B's detection of it (COCO's "
               f"match, else the best-overlapping one of its class): IoU of the mask contours widened to d = {d} px "
               "(2 % of the image diagonal). It weighs the boundary, where FaPN's alignment should show, rather "
               "than the interior.")
    frame = ou.records_frame(res)
    if frame.empty:
        st.info("No ground-truth objects in this image.")
        return
    frame["Δ (B−A)"] = frame["boundary_iou_b"] - frame["boundary_iou_a"]
    both = frame[frame["hit_a"] & frame["hit_b"]]
    rows = []
    for size in ("small", "medium", "large", "all"):
        part = both if size == "all" else both[both["size"] == size]
        rows.append({"size": size, "objects found by both": len(part),
                     "Boundary IoU A (%)": 100 * part["boundary_iou_a"].mean() if len(part) else None,
                     "Boundary IoU B (%)": 100 * part["boundary_iou_b"].mean() if len(part) else None,
                     "mask IoU A (%)": 100 * part["iou_a"].mean() if len(part) else None,
                     "mask IoU B (%)": 100 * part["iou_b"].mean() if len(part) else None})
    st.subheader("Mean over the objects both find")
    st.dataframe(pd.DataFrame(rows).round(2), hide_index=True, width="stretch")
    st.subheader("Per object")
    cols = ["object_id", "class_name", "size", "area", "boundary_iou_a", "boundary_iou_b", "Δ (B−A)", "iou_a",
            "iou_b", "hit_a", "hit_b"]
    rec = ou.select_record(frame.sort_values("Δ (B−A)", na_position="last").reset_index(drop=True), cols,
                           "bnd_det_table")
    if rec is None:
        st.caption("Select a row to see the errors in the band around that object.")
        return
    width = st.select_slider("Band half-width (px)", [1, 2, 3, 5, 8, 12], value=min([1, 2, 3, 5, 8, 12],
                             key=lambda v: abs(v - d)), key="bnd_det_width")
    g, ma, mb = ou.object_masks(ctx, res, rec)
    st.subheader(f"Object {rec['object_id']}: {rec['class_name']} ({rec['size']}, {rec['area']} px)")
    shown = [object_zoom(ctx.image, rec["bbox"], [(g, ou.GT_COLOUR)])[0]]
    caps = ["ground-truth mask (green)"]
    for tag, m, colour in (("A", ma, ou.A_COLOUR), ("B", mb, ou.B_COLOUR)):
        e = band_errors(g, m, width)
        shown.append(object_zoom(ctx.image, rec["bbox"], [(e["band"], (160, 160, 160)), (e["missed"], (255, 170, 0)),
                                                          (e["extra"], (200, 0, 200))], alpha=0.7, outline=False)[0])
        caps.append(f"{tag}: band ±{width} px (grey), missed (orange), extra (magenta) · "
                    f"{100 * e['error_rate']:.1f} % of the band wrong · Boundary IoU "
                    f"{ou.fmt(rec[f'boundary_iou_{tag.lower()}'])}")
    for col, img, cap in zip(st.columns(3), shown, caps):
        col.image(img, caption=cap, width="stretch")


def semantic_boundaries(ctx, name_a: str, name_b: str, titled: bool) -> None:
    if titled:
        st.header("Label maps around boundaries")
    st.caption("The band of width w holds the pixels closer than w px to a ground-truth label boundary.")
    res = ctx.comparison()
    if res is None:
        st.info(f"Boundary metrics: {ctx.gt_mismatch()}." if ctx.gt_mismatch() else
                "Boundary metrics need ground truth: pick a synthetic sample or upload a label PNG in the sidebar.")
        return
    rows = []
    for tag, name, r in (("A", name_a, res.a), ("B", name_b, res.b)):
        row = {"method": f"{tag} · {name}"}
        row.update({f"{w}px": 100 * m for w, m in zip(r.band.widths, r.band.miou)})
        row["mean"] = 100 * r.band.mean_miou
        row["Boundary IoU"] = 100 * r.boundary_iou.mean
        row[f"Boundary F ({r.boundary_f.tolerance}px)"] = 100 * r.boundary_f.mean_f
        rows.append(row)
    table = pd.DataFrame(rows)
    delta = {"method": "improvement (B − A)"}
    delta.update({c: table[c].iloc[1] - table[c].iloc[0] for c in table.columns[1:]})
    table = pd.concat([table, pd.DataFrame([delta])], ignore_index=True).round(2)
    st.subheader("Segmentation performance around boundaries (mIoU %, this image)")
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"Boundary IoU uses d = {res.a.boundary_iou.dilation} px (2 % of the image diagonal), Cheng et al. 2021.")
    st.plotly_chart(error_profile_figure({f"A · {name_a}": res.a.error_profile, f"B · {name_b}": res.b.error_profile}),
                    key="err_profile")
    mode = st.radio("Error view", ["density", "pixels"], horizontal=True, key="err_mode")
    c1, c2 = st.columns(2)
    c1.image(error_heatmap(ctx.image, res.a.error_map, mode=mode), caption=f"errors of A · {name_a}",
             width="stretch")
    c2.image(error_heatmap(ctx.image, res.b.error_map, mode=mode), caption=f"errors of B · {name_b}",
             width="stretch")
    fb = fix_break_view(ctx.image, res.fix_break)
    st.subheader("Fixed by B (green) / broken by B (red)")
    st.image(fb.image, caption=fb.caption(name_b), width="stretch")


ctx = sidebar.context()
st.title("Boundaries")
st.caption("FaPN's claim: aligned features put context where it belongs, so errors near object boundaries drop.")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    guards.object_and_label_map_sections(ctx, detector_boundaries, semantic_boundaries)
