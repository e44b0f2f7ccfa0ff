"""Offsets: the FAM's learned displacement fields over the image, magnitudes, masks, features before/after, and
whether the FAM aligns (estimated misalignment vs learned offsets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import guards, sidebar, ui
from fapn_core.viz import (
    NothingToShow, alignment_pca, apply_colormap, offset_histogram, offset_magnitude_figure, offset_quiver,
    pca_pair_figure,
)

ctx = sidebar.context()
st.title("Offsets (FAM)")
st.caption("Each FAM resamples the upsampled coarse feature with a deformable 3×3 conv (8 groups × 9 kernel points). "
           "Arrows show where a cell samples from, relative to the regular grid, in input-image pixels "
           "(feature pixels × the level's stride).")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    name_a, name_b = ui.names(ctx)
    which = st.radio("Model", [f"B · {name_b}", f"A · {name_a}"], horizontal=True, key="off_model")
    pred = ctx.prediction("b" if which.startswith("B") else "a")
    caps = pred.captures
    if not caps.has_fam:
        st.info(f"Nothing to show: {caps.explain_missing()}. Pick a model with a FAM (fapn, fam, fam_se, "
                "fam_noref_fsm) as A or B.")
        st.stop()
    levels = sorted(caps.fam, key=lambda lv: int(lv[1:]))
    c = st.columns(6)
    level = c[0].selectbox("Level", levels, key="off_level")
    group = c[1].selectbox("Group", ["mean"] + list(range(8)), key="off_group")
    point = c[2].selectbox("Kernel point", ["mean"] + list(range(9)), key="off_point",
                           help="row-major over the 3×3 window; 4 is the centre")
    weighted = c[3].checkbox("mask-weighted", value=True, key="off_weighted",
                             help="weight each kernel point's offset by its modulation mask")
    max_arrows = c[4].select_slider("Arrows", [200, 500, 1000, 2000, 4000, 8000], value=1000, key="off_density")
    scale = c[5].select_slider("Arrow scale", [0.25, 0.5, 1.0, 2.0, 4.0], value=1.0, key="off_scale")
    g = None if group == "mean" else int(group)
    p = None if point == "mean" else int(point)
    fam = caps.fam[level]
    mag = fam.magnitude(g, p, weighted=weighted)
    m1, m2, m3 = st.columns(3)
    m1.metric("mean |offset|", f"{mag.mean():.2f} px", help="image pixels")
    m2.metric("95th percentile", f"{np.percentile(mag, 95):.2f} px")
    m3.metric("in feature pixels", f"{mag.mean() / fam.stride:.2f}", help=f"stride {fam.stride}")
    fig, arrows = offset_quiver(ctx.image, caps, level, group=g, point=p, weighted=weighted, max_arrows=max_arrows,
                                scale=scale)
    st.plotly_chart(fig, key="quiver")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(offset_magnitude_figure(caps, level, image=ctx.image, group=g, point=p, weighted=weighted),
                        key="off_mag")
    with c2:
        st.plotly_chart(offset_histogram(caps, group=g, point=p, weighted=weighted), key="off_hist")
    st.subheader("Modulation mask")
    sel = fam.mask if g is None else fam.mask[g:g + 1]
    sel = sel if p is None else sel[:, p:p + 1]
    mask = sel.mean(axis=(0, 1))
    st.image(apply_colormap(mask, 0.0, 1.0, "viridis"), caption=f"mean mask at {level} (0 = point switched off, 1 = "
             "fully used); feature resolution", width="stretch", clamp=True)
    st.subheader("Features before and after alignment")
    try:
        pair = alignment_pca(caps, level, size=ctx.image.shape[:2])
        st.plotly_chart(pca_pair_figure(pair), key="pca")
        st.caption("One PCA fitted on both tensors, the same projection and colour range for both, as in the "
                   "paper's figure of the FAM's input and output.")
    except NothingToShow as e:
        st.info(str(e))
    st.subheader("Does the FAM align?")
    st.caption("A local correlation between the upsampled coarse feature and the lateral (FSM) feature estimates "
               "where the upsampled one would have to be sampled to match (sub-pixel; flat cells are unmeasurable). "
               "A match counts as confident only when its peak beats what unrelated features reach (the source "
               "rolled far beyond the search radius): the share of confident cells is shown beside that null's, "
               "and when they are alike there is no measurable signal. If the FAM aligns, its learned offsets "
               "point the same way and its output is closer to the lateral feature than its input. Feature pixels "
               "of the level (fapn_core/alignment.py).")
    radius = st.select_slider("Search radius (feature px)", [1, 2, 3, 4, 5], value=3, key="off_radius")
    la = ctx.alignment("b" if which.startswith("B") else "a", level, radius)
    st.info(la.verdict())
    d = la.displacement
    est = float(np.median(d.magnitude[d.valid])) if d.valid.any() else float("nan")
    a1, a2, a3, a4, a5 = st.columns(5)
    a1.metric("confident cells", f"{d.confident_share:.0%}", delta=f"null {d.null_share:.0%}", delta_color="off",
              help="share of measurable cells with a confident match; 'null': the same for unrelated features "
                   "(the false-positive level). Alike: no measurable signal")
    a2.metric("estimated shift", f"{est:.2f} px", help="median |d| over confident cells, feature pixels")
    a3.metric("learned offset", f"{np.median(np.hypot(*la.learned)):.2f} px", help="median |mask-weighted mean offset|")
    a4.metric("endpoint error", f"{la.overall['epe']:.2f} px", help="learned vs estimated, confident cells")
    a5.metric("cosine", f"{la.overall['cosine']:.2f}", help="1 = same direction, 0 = unrelated, −1 = opposite")
    h, w = ctx.image.shape[:2]
    s1, s2 = st.columns(2)
    mag = np.where(d.valid, d.magnitude, np.nan)
    vmax = float(max(np.nanmax(mag) if d.valid.any() else 1.0, np.hypot(*la.learned).max(), 1e-3))
    s1.image(apply_colormap(mag, 0.0, vmax), caption="estimated |shift| (black: no confident match)",
             width="stretch", clamp=True)
    s2.image(apply_colormap(np.hypot(*la.learned), 0.0, vmax), caption="learned |mean offset|, same scale",
             width="stretch", clamp=True)
    t1, t2 = st.columns(2)
    t1.image(ui.diverging(la.similarity_before), caption=f"cosine to the lateral feature before the FAM "
             f"(mean {la.mean_similarity['before']:.2f}; red +1, blue −1)", width="stretch", clamp=True)
    if la.similarity_after is not None:
        t2.image(ui.diverging(la.similarity_after), caption="after the FAM, relu(DCN(up)) "
                 f"(mean {la.mean_similarity['after']:.2f})", width="stretch", clamp=True)
    rows = [{"where": "all confident", **la.overall}]
    if la.near_boundary is not None:
        rows += [{"where": "within 8 px of a GT boundary", **la.near_boundary},
                 {"where": "away from boundaries", **la.away}]
    rows.append({"where": f"best group ({la.best_group})", **la.best_group_stats})
    st.dataframe(pd.DataFrame(rows).round(3), hide_index=True)
