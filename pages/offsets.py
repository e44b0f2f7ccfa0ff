"""Offsets: the FAM's learned displacement fields over the image, magnitudes, masks, features before/after, and
whether the FAM aligns (estimated misalignment vs learned offsets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import guards, sidebar, ui
from fapn_core.viz import (
    NothingToShow, alignment_pca, offset_histogram, offset_magnitude_figure, offset_quiver, pca_pair_figure,
    scalar_map_figure,
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
    m1.metric("mean |offset| (image px)", f"{mag.mean():.2f}", help="in pixels of the input image")
    m2.metric("95th percentile (image px)", f"{np.percentile(mag, 95):.2f}")
    m3.metric("mean |offset| (feature px)", f"{mag.mean() / fam.stride:.2f}",
              help=f"image px ÷ the level's stride ({fam.stride})")
    fig, arrows = offset_quiver(ctx.image, caps, level, group=g, point=p, weighted=weighted, max_arrows=max_arrows,
                                scale=scale)
    st.plotly_chart(fig, key="quiver")
    st.plotly_chart(offset_magnitude_figure(caps, level, image=ctx.image, group=g, point=p, weighted=weighted),
                    key="off_mag")
    st.plotly_chart(offset_histogram(caps, group=g, point=p, weighted=weighted), key="off_hist")
    st.subheader("Modulation mask")
    sel = fam.mask if g is None else fam.mask[g:g + 1]
    sel = sel if p is None else sel[:, p:p + 1]
    st.plotly_chart(scalar_map_figure(sel.mean(axis=(0, 1)), zmin=0.0, zmax=1.0, colorbar_title="mask",
                                      title=f"mean modulation mask at {level} (feature resolution)",
                                      base_width=900), key="off_mask", width="content")
    st.caption("0 = the kernel point is switched off, 1 = fully used.")
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
              delta_arrow="off",
              help="share of measurable cells with a confident match; 'null': the same for unrelated features "
                   "(the false-positive level). Alike: no measurable signal")
    a2.metric("estimated shift (feature px)", f"{est:.2f}", help="median |d| over confident cells")
    a3.metric("learned offset (feature px)", f"{np.median(np.hypot(*la.learned)):.2f}",
              help="median |mask-weighted mean offset|")
    a4.metric("endpoint error (feature px)", f"{la.overall['epe']:.2f}", help="learned vs estimated, confident cells")
    a5.metric("cosine", f"{la.overall['cosine']:.2f}", help="1 = same direction, 0 = unrelated, −1 = opposite")
    st.caption(f"This section is in feature pixels of {level}: one feature px = {fam.stride} image px (the top of the "
               "page is in image px).")
    mag = np.where(d.valid, d.magnitude, np.nan)
    vmax = float(max(np.nanmax(mag) if d.valid.any() else 1.0, np.hypot(*la.learned).max(), 1e-3))
    shift = dict(zmin=0.0, zmax=vmax, colorscale="Inferno", unit="feature px", colorbar_title="feature px")
    cosine = dict(zmin=-1.0, zmax=1.0, colorscale="RdBu_r", colorbar_title="cosine")
    maps = [(mag, shift, "estimated |shift| (black: no confident match)", "off_est"),
            (np.hypot(*la.learned), shift, "learned |mean offset|, same scale", "off_learned"),
            (la.similarity_before, cosine, "cosine to the lateral feature before the FAM (mean "
             f"{la.mean_similarity['before']:.2f})", "off_cos_before")]
    if la.similarity_after is not None:
        maps.append((la.similarity_after, cosine, "after the FAM, relu(DCN(up)) (mean "
                     f"{la.mean_similarity['after']:.2f})", "off_cos_after"))
    for row in range(0, len(maps), 2):
        for col, (values, scale, title, key) in zip(st.columns(2), maps[row:row + 2]):
            col.plotly_chart(scalar_map_figure(values, title=title, **scale), key=key, width="content")
    rows = [{"where": "all confident", **la.overall}]
    if la.near_boundary is not None:
        rows += [{"where": "within 8 image px of a GT boundary", **la.near_boundary},
                 {"where": "away from boundaries", **la.away}]
    rows.append({"where": f"best group ({la.best_group})", **la.best_group_stats})
    ui.table(pd.DataFrame(rows).round(3), digits=3, width="content")
    st.caption("epe: endpoint error in feature px; cosine: direction agreement of learned and estimated shifts.")
