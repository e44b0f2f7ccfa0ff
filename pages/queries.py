"""Queries (MaskFormer): which query wins each pixel, the top queries' masks, and where A's and B's query segments
end differently (the FaPN pixel decoder changes only the mask features)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import cache, guards, sidebar, ui
from fapn_core.viz.queries import owner_view, query_masks, query_table

ctx = sidebar.context()
st.title("Queries (MaskFormer)")
st.caption("MaskFormer classifies masks: each of its queries predicts a class distribution and a mask, and a pixel "
           "belongs to the query with the highest class probability × mask probability. FaPN's pixel decoder "
           "changes only the mask features the queries' masks are read from, so A and B differ in where their "
           "query segments end.")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    with_queries = guards.models_with(
        ctx, lambda pred: pred.captures.queries is not None,
        lambda k, handle, name, _: f"{k} · {name} is {ui.a_task(handle.task)} ({handle.kind}) without mask queries "
                                   "(this view needs a MaskFormer).")
    top_k = st.slider("Queries shown per model", 2, 12, 6, key="q_topk")
    cols = st.columns(len(with_queries))
    for col, (k, (handle, name, pred)) in zip(cols, with_queries.items()):
        q = pred.captures.queries
        names, pal = handle.semantic
        palette = ui.palette_array(pal, len(names))
        rows = query_table(q, names)
        with col:
            st.subheader(f"{k} · {name}")
            png, _ = ui.drawn(f"owners|{handle.key}|{ctx.image_key}|{ctx.amp}",
                              lambda q=q, palette=palette: owner_view(ctx.image, q, palette))
            st.image(png, caption=f"which query owns each pixel ({len(rows)} of {q.num_queries} queries own "
                     "some; tinted by the query's class, white: borders between queries)", width="stretch")
            st.dataframe(pd.DataFrame([{"query": r.query, "class": r.class_name, "p(class)": round(r.probability, 3),
                                        "pixels %": round(100 * r.pixel_share, 2)} for r in rows]),
                         hide_index=True, height=220)
            shown = [r.query for r in rows[:top_k]]
            masks = query_masks(q, shown, ctx.image.shape[:2])
            grid = st.columns(3)
            for i, (r, m) in enumerate(zip(rows[:top_k], masks)):
                grid[i % 3].image((m * 255).astype("uint8"), width="stretch", clamp=True,
                                  caption=f"q{r.query} · {r.class_name} · p {r.probability:.2f} · "
                                          f"{100 * r.pixel_share:.1f} % of pixels")
    if len(with_queries) == 2:
        st.subheader("Where A's and B's query segments end differently")
        cmp_ = cache.query_borders_cached(ctx.a.key, ctx.b.key, ctx.image_key, ctx.amp,
                                          with_queries["A"][2].captures.queries, with_queries["B"][2].captures.queries,
                                          ctx.image)
        st.image(cmp_.view, width="stretch",
                 caption="borders between queries at the masks' resolution (stride 4): blue only A, orange only B, "
                         "white both (within one cell)")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("border cells only A", f"{cmp_.only_a:,}")
        m2.metric("border cells only B", f"{cmp_.only_b:,}")
        m3.metric("border cells in both", f"{cmp_.both:,}")
        m4.metric("owner class differs", f"{100 * cmp_.class_disagreement:.1f} %",
                  help="share of mask cells whose owning queries predict different classes in A and B")
