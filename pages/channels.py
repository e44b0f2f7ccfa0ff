"""Channels: the FSM's per-channel importance vectors and the feature maps of the most important channels."""

from __future__ import annotations

import streamlit as st

from app import guards, sidebar, ui
from fapn_core.viz import NothingToShow, fsm_channel_grid, fsm_importance_figure


ctx = sidebar.context()
st.title("Channels (FSM)")
st.caption("The FSM weighs each channel of the detailed (lateral) feature by sigmoid(conv1×1(global average)) and "
           "keeps x + x·importance before reducing channels. Importances near 1 are emphasised.")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    name_a, name_b = ui.names(ctx)
    handles = {"A": (ctx.a, name_a, ctx.prediction("a")), "B": (ctx.b, name_b, ctx.prediction("b"))}
    with_fsm = {k: v for k, v in handles.items() if v[2].captures.has_fsm}
    for k, (_, name, pred) in handles.items():
        if not pred.captures.has_fsm:
            st.info(f"{k} · {name}: {pred.captures.explain_missing()}.")
    if not with_fsm:
        st.stop()
    cols = st.columns(len(with_fsm))
    for col, (k, (handle, name, pred)) in zip(cols, with_fsm.items()):
        with col:
            st.subheader(f"{k} · {name}")
            st.plotly_chart(fsm_importance_figure(pred.captures), key=f"fsm_bars_{k}")
    st.subheader("Most important channels")
    c1, c2, c3 = st.columns(3)
    slot = c1.selectbox("Model", list(with_fsm), key="fsm_slot")
    handle, name, pred = with_fsm[slot]
    level = c2.selectbox("Level", sorted(pred.captures.fsm, key=lambda lv: int(lv[1:])), key="fsm_level")
    k = c3.slider("top k", 4, 32, 16, 4, key="fsm_k")
    try:
        # the FSM input was captured in the same (cached) inference as everything else: no second forward pass
        grid = fsm_channel_grid(pred.captures.fsm[level].inputs, pred.captures, level, k=k)
        st.image(grid.image, caption=f"{name} {level}: channels {', '.join(map(str, grid.channels))} "
                 "(FSM input, most important first, each map normalised)", width="stretch")
    except NothingToShow as e:
        st.info(str(e))
