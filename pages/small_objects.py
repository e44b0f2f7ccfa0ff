"""Small objects: per-object table, size-bin summary, area vs IoU, zoom on one object."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state, ui
from fapn_core.viz import overlay_labels

ctx = state.context()
st.title("Small objects")
st.caption("Ground-truth objects of the thing classes (instance ids where the data has them, else connected components "
           "per class; every class when the model card names no thing classes), each "
           "scored against A and B. A hit means at least half of the object's pixels got its class. Size bins are "
           "COCO's: small < 32², medium < 96², large.")
if state.require_ready(ctx):
    state.status_line(ctx)
    res = state.require_comparison(ctx, "Object metrics")
    name_a, name_b = ui.names(ctx)
    summary = pd.DataFrame([
        {"size": k, "objects": s.n_objects, "hit rate A (%)": 100 * s.hit_rate_a, "hit rate B (%)": 100 * s.hit_rate_b,
         "mean IoU A (%)": 100 * s.mean_iou_a, "mean IoU B (%)": 100 * s.mean_iou_b,
         "recovered by B": s.recovered_by_b, "lost by B": s.lost_by_b}
        for k, s in res.object_summary.items()
    ]).round(2)
    st.subheader("By size")
    st.dataframe(summary, hide_index=True, width="stretch")
    records = pd.DataFrame([r.to_dict() for r in res.objects])
    if records.empty:
        st.info("No ground-truth objects in this image.")
        st.stop()
    only = st.multiselect("Outcome", ["recovered", "lost", "both_hit", "both_missed"],
                          default=["recovered", "lost", "both_hit", "both_missed"], key="obj_outcome")
    shown = records[records["outcome"].isin(only)]
    cols = ["object_id", "class_name", "area", "size", "iou_a", "iou_b", "hit_a", "hit_b", "outcome"]
    st.subheader(f"Objects ({len(shown)} of {len(records)})")
    event = st.dataframe(shown[cols].round(3), hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key="obj_table")
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
    st.plotly_chart(fig, key="obj_scatter")
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
        st.subheader(f"Object {rec['object_id']}: {rec['class_name']}, {rec['area']} px — {rec['outcome']}")
        c = st.columns(4)
        for col, img, cap in zip(c, crops, ["image", "ground truth", f"A · IoU {rec['iou_a']:.2f}",
                                            f"B · IoU {rec['iou_b']:.2f}"]):
            col.image(img, caption=cap, width="stretch")
    else:
        st.caption("Select a row to zoom on that object.")
