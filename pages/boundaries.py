"""Boundaries: band mIoU at 3/5/8/12 px (the seed's table), Boundary IoU/F, error vs distance, heatmaps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state, ui
from fapn_core.viz import error_heatmap, error_profile_figure, fix_break_view

ctx = state.context()
st.title("Boundaries")
st.caption("FaPN's claim: aligned features put context where it belongs, so errors near object boundaries drop. "
           "The band of width w holds the pixels closer than w px to a ground-truth label boundary.")
if state.require_ready(ctx):
    state.status_line(ctx)
    res = state.require_comparison(ctx, "Boundary metrics")
    name_a, name_b = ui.names(ctx)
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
