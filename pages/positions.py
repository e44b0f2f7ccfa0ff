"""Positions (PanopticFCN): centre heatmaps with the kept peaks and stuff region maps per level, the peaks only one
model keeps, and which candidates' kernels became which instances (a misaligned pyramid moves, splits or merges
peaks)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import cache, guards, sidebar, ui
from fapn_core.viz import key_figure
from fapn_core.viz.detections import ONLY_A, ONLY_B, PAIRED
from fapn_core.viz.positions import (
    centre_view, fusion_table, level_rows, peak_agreement_view, peak_rule, region_view, stuff_rule,
)

ALL_CLASSES = "maximum over classes"

ctx = sidebar.context()
st.title("Positions (PanopticFCN)")
st.caption("PanopticFCN finds each thing as a peak of its class's centre heatmap on one of p3–p7 and each stuff "
           "class as a region map; a kept peak's kernel is fused with similar ones and becomes an instance mask. "
           "A misaligned pyramid moves, splits or merges peaks: here A's and B's heatmaps, region maps and peaks "
           "side by side.")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    with_maps = guards.models_with(
        ctx, lambda pred: pred.captures.positions is not None,
        lambda k, handle, name, _: f"{k} · {name} is {ui.a_task(handle.task)} ({handle.kind}) without centre heatmaps "
                                   "or kernel fusion (this view needs a PanopticFCN).")
    first = next(iter(with_maps.values()))[2].captures.positions
    thing_names = sorted({str(c) for h, _, _ in with_maps.values() for c in h.card.get("classes") or []})
    c1, c2, c3 = st.columns([2, 2, 2])
    level = c1.radio("Level", list(first.levels), index=1 if len(first.levels) > 1 else 0, horizontal=True,
                     key="pos_level", help="p3 (stride 8) … p7 (stride 128): PanopticFCN looks for small things "
                                           "on fine levels and large ones on coarse levels")
    shown = c2.selectbox("Centre heatmap", [ALL_CLASSES] + thing_names, key="pos_class")
    cells = c3.select_slider("Match tolerance (cells of the coarser level)", [0.5, 1.0, 1.5, 2.0], value=1.0,
                             key="pos_cells", disabled=len(with_maps) < 2,
                             help="two peaks are the same thing when they have the same class and lie at most "
                                  "this many cells of the coarser of their levels apart")

    # one colour scale for both models at this level: 0 to the higher of their maxima (at least 2 × the threshold)
    vmax = max([float(v[2].captures.positions.levels[level].centres.max(initial=0.0)) for v in with_maps.values()]
               + [2 * float(v[0].model.options.center_thresh) for v in with_maps.values()])
    vmax = min(1.0, vmax)
    cols = st.columns(len(with_maps))
    for col, (k, (handle, name, pred)) in zip(cols, with_maps.items()):
        maps = pred.captures.positions
        opts = handle.model.options
        things = [str(c) for c in handle.card.get("classes") or []]
        thing_pal = ui.palette_array(handle.card.get("palette"), len(things))
        stuff = [str(c) for c in handle.card.get("stuff_classes") or []]
        stuff_pal = ui.palette_array(handle.card.get("stuff_palette"), len(stuff))
        rows = level_rows(maps)
        lv = maps.levels[level]
        cid = things.index(shown) if shown in things else None
        with col:
            st.subheader(f"{k} · {name}")
            st.metric(f"peaks kept by {k}", sum(r.peaks for r in rows), help="over all levels, " + peak_rule(opts))
            if not any(r.peaks for r in rows):
                best = max(rows, key=lambda r: r.best_score)
                st.info(f"{k} keeps no peaks on this image: no centre score passes its thing threshold "
                        f"{opts.center_thresh:g} on any level (the highest is {best.best_score:.3f}, at "
                        f"{best.level}), so it finds no things; its stuff regions are still shown.")
            png, _ = ui.drawn(f"pos_centre|{handle.key}|{ctx.image_key}|{ctx.amp}|{level}|{cid}|{vmax:.4f}",
                              lambda lv=lv, cid=cid, pal=thing_pal, t=opts.center_thresh, v=vmax:
                              centre_view(ctx.image, lv, class_id=cid, palette=pal, threshold=t, vmax=v))
            h, w = lv.centres.shape[-2:]
            n_here = sum(1 for p in lv.peaks if cid is None or int(p[0]) == cid)
            what = ALL_CLASSES if cid is None else f"class {things[cid]}"
            if shown != ALL_CLASSES and cid is None:
                what += f" ({k} has no class {shown})"
            st.image(png, width="stretch",
                     caption=f"centre heatmap at {level} (stride {lv.stride}, {h}×{w} cells), {what}, colours "
                             f"0 → {vmax:.2f} (the same scale for A and B); cyan outline: cells above the threshold "
                             f"{opts.center_thresh:g}; rings: the {n_here} peak{'s' if n_here != 1 else ''} kept "
                             f"here (colour = class). Rule: {peak_rule(opts, level)}.")
            found = sorted({int(p[0]) for r in maps.levels.values() for p in r.peaks})
            if found:  # the ring colours of the classes it keeps peaks of
                st.plotly_chart(key_figure([(tuple(int(v) for v in thing_pal[i]), "outline",
                                             things[i] if i < len(things) else f"class_{i}") for i in found], ncols=4),
                                config={"displayModeBar": False}, key=f"pos_key_{k}")
            png, _ = ui.drawn(f"pos_regions|{handle.key}|{ctx.image_key}|{ctx.amp}|{level}",
                              lambda lv=lv, pal=stuff_pal: region_view(ctx.image, lv, pal))
            kept = ", ".join(f"{stuff[int(c)] if int(c) < len(stuff) else int(c)} {s:.2f}" for c, s in lv.stuff)
            st.image(png, width="stretch",
                     caption=f"region map at {level}: each cell in the colour of its most likely channel (grey: "
                             f"things), stronger where surer. Stuff kept here: {kept or 'none'}. Rule: "
                             f"{stuff_rule(opts)}.")
            ui.table(pd.DataFrame([{"level": r.level, "stride": r.stride, "cells": f"{r.cells[0]}×{r.cells[1]}",
                                    "peaks kept": r.peaks, "best centre score": round(r.best_score, 3),
                                    "stuff kept": r.stuff} for r in rows]))

    classes = [str(c) for c in ctx.a.card.get("classes") or []]
    if len(with_maps) == 2 and classes != [str(c) for c in ctx.b.card.get("classes") or []]:
        st.subheader("Peaks only one model keeps")
        st.info("A and B have different thing classes, so their peaks cannot be matched class by class.")
    elif len(with_maps) == 2:
        maps_a, maps_b = (v[2].captures.positions for v in with_maps.values())
        st.subheader("Peaks only one model keeps")
        match = cache.peak_match_cached(ctx.a.key, ctx.b.key, ctx.image_key, ctx.amp, float(cells), maps_a, maps_b)
        m1, m2, m3 = st.columns(3)
        m1.metric("matched peaks", len(match.matched), help="kept by both: " + match.rule())
        m2.metric("peaks only A keeps", len(match.only_a))
        m3.metric("peaks only B keeps", len(match.only_b))
        png, _ = ui.drawn(f"pos_agree|{ctx.a.key}|{ctx.b.key}|{ctx.image_key}|{ctx.amp}|{cells}",
                          lambda m=match: peak_agreement_view(ctx.image, m))
        st.image(png, width="stretch", caption=f"every kept peak of A and B on all levels (ring size: half a cell "
                                               f"of its level). Matched: {match.rule()}.")
        agree_key = [(PAIRED, "outline", "peak both keep (line: A ↔ B)"), (ONLY_A, "outline", "peak only A keeps"),
                     (ONLY_B, "outline", "peak only B keeps")]
        st.plotly_chart(key_figure(agree_key), config={"displayModeBar": False}, key="pos_agree_key")

        def _peak(prefix: str, p) -> dict:
            if p is None:
                return {f"{prefix} level": None, f"{prefix} x": None, f"{prefix} y": None, f"{prefix} score": None}
            x, y = p.image_xy
            return {f"{prefix} level": p.level, f"{prefix} x": x, f"{prefix} y": y, f"{prefix} score": p.score}

        table = [{"peak": "both", "class": classes[p.a.class_id] if p.a.class_id < len(classes) else p.a.class_id,
                  **_peak("A", p.a), **_peak("B", p.b), "distance (px)": p.distance} for p in match.matched]
        table += [{"peak": "only A", "class": classes[p.class_id] if p.class_id < len(classes) else p.class_id,
                   **_peak("A", p), **_peak("B", None), "distance (px)": None} for p in match.only_a]
        table += [{"peak": "only B", "class": classes[p.class_id] if p.class_id < len(classes) else p.class_id,
                   **_peak("A", None), **_peak("B", p), "distance (px)": None} for p in match.only_b]
        if table:
            ui.table(pd.DataFrame(table).astype({"class": str}), digits=3, height=260)
            st.caption("positions in image pixels (the centre of the peak's cell); — : the other model keeps no "
                       "peak there.")

    st.subheader("Which kernels became which instances")
    st.caption("Every kept peak is a candidate with a kernel. Candidates are sorted by centre score over all levels; "
               "a candidate whose kernel is similar (cosine ≥ the model's similarity threshold, same class) to an "
               "earlier one's is averaged into that kernel. Each fused kernel's mask rescores it (score × the mean "
               "mask probability inside its mask); kernels scoring ≥ 0.05 become the model's instances, best first.")
    tabs = st.tabs([f"{k} · {name}" for k, (_, name, _) in with_maps.items()])
    for tab, (k, (handle, name, pred)) in zip(tabs, with_maps.items()):
        maps = pred.captures.positions
        opts = handle.model.options
        rows = fusion_table(maps, [str(c) for c in handle.card.get("classes") or []], top_num=opts.center_top_num)
        with tab:
            if not rows:
                st.info(f"{k} keeps no peaks on this image, so it has no thing candidates: nothing to fuse and no "
                        "instances.")
                continue
            kernels = len({r.kernel for r in rows if r.kernel is not None})
            instances = len({r.instance for r in rows if r.instance is not None})
            st.caption(f"{len(rows)} candidates → {kernels} fused kernels (similarity ≥ {opts.similar_thresh:g}"
                       f"{', same class' if opts.class_specific else ''}) → {instances} instances.")
            ui.table(pd.DataFrame([{
                "candidate": r.candidate, "level": r.level, "class": r.class_name, "x": r.x, "y": r.y,
                "centre score": r.score, "kernel": r.kernel, "kernel of candidate": r.kernel_candidate,
                "candidates in kernel": r.kernel_size, "instance": r.instance, "instance class": r.instance_class,
                "score after rescoring": r.rescored, "instance level": r.instance_level,
                "instance x": None if r.instance_xy is None else r.instance_xy[0],
                "instance y": None if r.instance_xy is None else r.instance_xy[1], "outcome": r.outcome,
            } for r in rows]), digits=3, height=320)
            st.caption("x, y: image pixels (the centre of the peak's cell); — : dropped (its first similar kernel "
                       "was itself merged away) or no instance (its score after rescoring is below 0.05).")
