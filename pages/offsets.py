"""Offsets: the FAM's learned displacement fields over the image, magnitudes, masks, features before/after."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state, ui
from fapn_core.viz import (
    NothingToShow, alignment_pca, apply_colormap, offset_histogram, offset_magnitude_figure, offset_quiver,
    pca_pair_figure,
)

ctx = state.context()
st.title("Offsets (FAM)")
st.caption("Each FAM resamples the upsampled coarse feature with a deformable 3×3 conv (8 groups × 9 kernel points). "
           "Arrows show where a cell samples from, relative to the regular grid, in input-image pixels "
           "(feature pixels × the level's stride).")
if state.require_ready(ctx):
    state.status_line(ctx)
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
