"""Boundaries: band mIoU at 3/5/8/12 px (the seed's table), Boundary IoU/F, error vs distance, heatmaps; for
detectors the mask Boundary IoU of A and B per object and, for one object, the boundary bands it counts at a
width chosen from the object's size."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import objects_ui as ou
from app import guards, sidebar, ui
from fapn_core.metrics.boundary import boundary_dilation
from fapn_core.metrics.detection_pair import object_band_width, object_boundary_iou
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
    d = boundary_dilation(ctx.image.shape[:2])
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
    ui.table(pd.DataFrame(rows).round(2))
    st.caption("—: no object of that size that both find.")
    st.subheader("Per object")
    cols = ["object_id", "class_name", "size", "area", "boundary_iou_a", "boundary_iou_b", "Δ (B−A)", "iou_a",
            "iou_b", "hit_a", "hit_b"]
    rec = ou.select_record(frame.sort_values("Δ (B−A)", na_position="last").reset_index(drop=True), cols,
                           "bnd_det_table")
    st.caption(f"object_id: the ground truth's own id, as on Small objects. {ou.NO_VALUE}; Δ is — when either "
               "side is.")
    if rec is None:
        st.caption("Select a row to see that object's boundary bands and what Boundary IoU counts.")
        return
    object_zoom_view(ctx, res, rec, d)


def object_zoom_view(ctx, res, rec: dict, d_image: int) -> None:
    """One object's boundary bands at a width chosen from its size: what Boundary IoU counts, for A and B."""
    x, y, bw, bh = rec["bbox"]
    d_obj = object_band_width(rec["bbox"], max_d=d_image)
    options = sorted({1, 2, 3, 5, 8, 12, d_obj, d_image})
    width = st.select_slider("Boundary width d (px)", options, value=d_obj, key=f"bnd_det_width_{rec['object_id']}",
                             format_func=lambda v: f"{v} (this object)" if v == d_obj else
                             (f"{v} (the table's)" if v == d_image else str(v)))
    g, ma, mb = ou.object_masks(ctx, res, rec)
    st.subheader(f"Object {rec['object_id']}: {rec['class_name']} ({rec['size']}, {rec['area']} px)")
    st.caption(f"d = {d_obj} px is 2 % of this object's box diagonal ({bw:.0f}×{bh:.0f} px), the width at which "
               f"its own boundary shows; the table's Boundary IoU uses d = {d_image} px (2 % of the image diagonal), "
               f"which on an object this size can cover most of it. Boundary IoU = grey / (grey + orange + magenta): "
               "the mask pixels within d of each mask's contour, both bands (grey), only the ground truth's (orange), "
               "only the detection's (magenta).")
    shown = [object_zoom(ctx.image, rec["bbox"], [(g, ou.GT_COLOUR)])[0]]
    caps = ["ground-truth mask (green)"]
    for tag, m in (("A", ma), ("B", mb)):
        bi = object_boundary_iou(g, m, width)
        bands = [(bi["both"], (150, 150, 150)), (bi["gt_only"], (255, 150, 0)), (bi["pred_only"], (220, 0, 200))]
        shown.append(object_zoom(ctx.image, rec["bbox"], bands, alpha=0.8, outline=False)[0])
        table = ou.fmt(rec[f"boundary_iou_{tag.lower()}"])
        caps.append(f"{tag}: Boundary IoU at d = {width} px: {ou.fmt(bi['iou'])}"
                    + ("" if width == d_image else f" (the table's, d = {d_image} px: {table})")
                    + ("" if m is not None else " · no detection of its class overlaps it"))
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
    ui.table(table)
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
