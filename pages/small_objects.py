"""Small objects (and every object): detectors' objects found and lost (COCO matching) with per-image AP by
size, and the label maps' per-object table (hits, IoU), each with filters and a zoom on one object."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import objects_ui as ou
from app import guards, sidebar, ui
from fapn_core.metrics import summarize_objects
from fapn_core.viz import object_zoom, overlay_labels


def area_iou_figure(records: pd.DataFrame, name_a: str, name_b: str) -> go.Figure:
    fig = go.Figure()
    for tag, col, color in (("A", "iou_a", "#1f77b4"), ("B", "iou_b", "#d62728")):
        fig.add_trace(go.Scatter(x=records["area"], y=records[col], mode="markers", name=f"{tag} · "
                                 f"{name_a if tag == 'A' else name_b}", marker=dict(color=color, size=7, opacity=0.7),
                                 text=records["class_name"], customdata=records["object_id"],
                                 hovertemplate="object %{customdata} (%{text}), area %{x} px: IoU %{y:.2f}<extra></extra>"))
    fig.update_layout(xaxis=dict(type="log", title="object area (px)"), yaxis=dict(title="IoU", range=[-0.02, 1.02]),
                      height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    for edge in (32 ** 2, 96 ** 2):
        fig.add_vline(x=edge, line_dash="dot", line_color="grey")
    return fig


def detector_objects(ctx, name_a: str, name_b: str) -> None:
    st.header("Objects found and lost (detections, COCO matching)")
    st.caption("Each ground-truth object against A's and B's detections as COCO matches them (IoU 0.5, 100 "
               "detections, mask IoU when all have masks, else box IoU, in the object's own size range). IoU and "
               "score are those of the matched detection, or of the best-overlapping one of its class when "
               "unmatched. Sizes are COCO's: small < 32², medium < 96² px (mask area).")
    res, why = guards.detection_comparison_or_reason(ctx)
    if res is None:
        st.info(why + ".")
        return
    rows = []
    for tag, name in (("a", name_a), ("b", name_b)):
        for t, ap in res.ap[tag].items():
            rows.append({"model": f"{tag.upper()} · {name}", "IoU": "box" if t == "bbox" else "mask",
                         **{k: None if not np.isfinite(v) else round(100 * v, 1) for k, v in ap.items()}})
    st.subheader("AP on this image by size (COCO, %)")
    if rows:
        ui.table(pd.DataFrame(rows), digits=1)
        st.caption("One image's AP is noisy; the Dataset page evaluates a whole dataset. —: no object of that "
                   "size here.")
    st.subheader("Found by size")
    ui.table(ou.size_summary(summarize_objects(res.records)))
    st.caption("—: no object of that size. only B / only A: objects one model finds and the other misses.")
    frame = ou.records_frame(res)
    if frame.empty:
        st.info("No ground-truth objects in this image.")
        return
    c1, c2, c3 = st.columns(3)
    outcomes = c1.multiselect("Found by", ou.OUTCOMES, default=ou.OUTCOMES, key="det_outcome")
    sizes = c2.multiselect("Size", ["small", "medium", "large"], default=["small", "medium", "large"],
                           key="det_size")
    classes = sorted(frame["class_name"].unique())
    chosen = c3.multiselect("Class", classes, default=classes, key="det_class")
    shown = frame[frame["outcome"].isin(outcomes) & frame["size"].isin(sizes) & frame["class_name"].isin(chosen)]
    st.subheader(f"Objects ({len(shown)} of {len(frame)})")
    cols = ["object_id", "class_name", "size", "area", "iou_a", "iou_b", "score_a", "score_b", "outcome"]
    rec = ou.select_record(shown.reset_index(drop=True), cols, "det_table")
    st.caption(f"object_id: the ground truth's own id (the instance id of the instance PNG, or the COCO JSON's "
               f"annotation id), the same in every table. outcome: who found it. {ou.NO_VALUE}.")
    st.plotly_chart(area_iou_figure(frame, name_a, name_b), key="det_scatter")
    with st.expander(f"False positives: A {len(res.false_positives_a)}, B {len(res.false_positives_b)} "
                     "(detections COCO matched to no object)"):
        fps = pd.DataFrame([dict(f.to_dict(), model=tag) for tag, fs in (("A", res.false_positives_a),
                            ("B", res.false_positives_b)) for f in fs])
        if not fps.empty:
            ui.table(fps[["model", "class_name", "score", "size", "best_iou", "bbox"]].round(3), digits=3)
    if rec is None:
        st.caption("Select a row to zoom on that object.")
        return
    g, ma, mb = ou.object_masks(ctx, res, rec)
    st.subheader(f"Object {rec['object_id']}: {rec['class_name']}, {rec['area']} px ({rec['size']}) — "
                 f"{rec['outcome']}")
    crops = [object_zoom(ctx.image, rec["bbox"], [])[0],
             object_zoom(ctx.image, rec["bbox"], [(g, ou.GT_COLOUR)])[0],
             object_zoom(ctx.image, rec["bbox"], [(g, ou.GT_COLOUR), (ma, ou.A_COLOUR)], alpha=0.35)[0],
             object_zoom(ctx.image, rec["bbox"], [(g, ou.GT_COLOUR), (mb, ou.B_COLOUR)], alpha=0.35)[0]]
    caps = ["image", "ground truth (green)",
            f"A (blue) · IoU {ou.fmt(rec['iou_a'])} · score {ou.fmt(rec['score_a'])}"
            + ("" if rec["hit_a"] else " · not found"),
            f"B (red) · IoU {ou.fmt(rec['iou_b'])} · score {ou.fmt(rec['score_b'])}"
            + ("" if rec["hit_b"] else " · not found")]
    for col, img, cap in zip(st.columns(4), crops, caps):
        col.image(img, caption=cap, width="stretch")


def label_map_objects(ctx, name_a: str, name_b: str, titled: bool) -> None:
    if titled:
        st.header("Objects in the label maps")
    st.caption("Ground-truth objects of the thing classes (instance ids where the data has them, else connected "
               "components per class; every class when the model card names no thing classes), each scored "
               "against A's and B's label maps. Found (a hit) means at least half of the object's pixels got its "
               "class. Size bins are COCO's: small < 32², medium < 96², large.")
    res = ctx.comparison()
    if res is None:
        st.info(f"Object metrics: {ctx.gt_mismatch()}." if ctx.gt_mismatch() else
                "Object metrics need ground truth: pick a synthetic sample or upload a label PNG in the sidebar.")
        return
    st.subheader("By size")
    ui.table(ou.size_summary(res.object_summary))
    st.caption("found: at least half of the object's pixels got its class. —: no object of that size. "
               "only B / only A: objects one model finds and the other misses.")
    records = ou.records_frame(res)
    if records.empty:
        st.info("No ground-truth objects in this image.")
        return
    only = st.multiselect("Found by", ou.OUTCOMES, default=ou.OUTCOMES, key="obj_outcome")
    shown = records[records["outcome"].isin(only)]
    cols = ["object_id", "class_name", "size", "area", "iou_a", "iou_b", "hit_a", "hit_b", "outcome"]
    st.subheader(f"Objects ({len(shown)} of {len(records)})")
    event = ui.table(shown[cols].round(3), digits=3, on_select="rerun", selection_mode="single-row",
                     key="obj_table")
    st.caption("object_id: the instance id of the ground truth's instance map (else a connected component's "
               "number), the same id the detections' table uses. outcome: who found it.")
    st.plotly_chart(area_iou_figure(records, name_a, name_b), key="obj_scatter")
    selected = event.selection.rows if event is not None else []
    if selected:
        rec = shown.iloc[selected[0]]
        x, y, w, h = rec["bbox"]
        pad = max(8, int(0.5 * max(w, h)))
        y0, y1 = max(0, y - pad), min(ctx.image.shape[0], y + h + pad)
        x0, x1 = max(0, x - pad), min(ctx.image.shape[1], x + w + pad)
        pa, pb = ctx.prediction("a").labels, ctx.prediction("b").labels
        crops = [ctx.image[y0:y1, x0:x1], overlay_labels(ctx.image, ctx.gt, ctx.palette, alpha=0.6)[y0:y1, x0:x1],
                 overlay_labels(ctx.image, pa, ctx.palette, alpha=0.6)[y0:y1, x0:x1],
                 overlay_labels(ctx.image, pb, ctx.palette, alpha=0.6)[y0:y1, x0:x1]]
        scale = max(1, int(256 / max(1, max(y1 - y0, x1 - x0))))
        crops = [np.kron(c, np.ones((scale, scale, 1), np.uint8)) for c in crops]
        st.subheader(f"Object {rec['object_id']}: {rec['class_name']}, {rec['area']} px ({rec['size']}) — "
                     f"{rec['outcome']}")
        c = st.columns(4)
        for col, img, cap in zip(c, crops, ["image", "ground truth", f"A · IoU {rec['iou_a']:.2f}",
                                            f"B · IoU {rec['iou_b']:.2f}"]):
            col.image(img, caption=cap, width="stretch")
    else:
        st.caption("Select a row to zoom on that object.")


ctx = sidebar.context()
st.title("Small objects")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    guards.object_and_label_map_sections(ctx, detector_objects, label_map_objects)
