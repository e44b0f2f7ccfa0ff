"""Points (PointRend): for one object, where PointRend's mask head re-predicted its mask at each subdivision step
and which pixels that refinement changed, A | B."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import cache, guards, sidebar, ui
from fapn_core.metrics.detection_pair import detector_category_ids
from fapn_core.viz import key_figure
from fapn_core.viz.points import (
    REFINEMENT_KEY, crop_around, match_instance, points_key, points_view, refinement_view, refinements,
)

MATCHED, OWN = "the one best matching A's (mask IoU)", "picked separately"


def why_hidden(handle, pred) -> str:
    """Why a model has nothing for this view, in words."""
    det = pred.detections
    if getattr(getattr(handle.model, "config", None), "head", "") == "pointrend":
        return ("a semantic PointRend: its points refine a label map, not object masks (this view shows PointRend's "
                "instance mask head)")
    if det is None:
        return f"{ui.a_task(handle.task)} ({handle.kind}): no objects, so no masks to refine"
    if det.masks is None:
        return f"{ui.a_task(handle.task)} ({handle.kind}): boxes only, no masks"
    if hasattr(handle.model, "position_head"):
        return (f"{ui.a_task(handle.task)} ({handle.kind}) whose masks come in one pass from kernels applied to its "
                "stride-4 features: there are no subdivision points")
    return (f"{ui.a_task(handle.task)} ({handle.kind}) whose mask head predicts each mask in one pass on a fixed "
            "grid: there are no subdivision points")


def class_name(det, names: list[str], ids: list[int], i: int) -> str:
    c = ids[int(det.classes[i])]
    return names[c] if c < len(names) else f"class_{c}"


def label(det, names: list[str], ids: list[int], i: int) -> str:
    return f"#{i} · {class_name(det, names, ids, i)} · score {float(det.scores[i]):.2f}"


ctx = sidebar.context()
st.title("Points (PointRend)")
st.caption("PointRend's instance head first predicts each mask on a regular grid (28×28 in detectron2's configs), "
           "then at every step doubles the map and re-predicts only the most uncertain cells: the points. The coarse "
           "mask is that first grid pasted into the box exactly as the final mask is (probability ≥ 0.5), so the "
           "two differ only by what the refinement steps changed.")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    shown = guards.models_with(
        ctx, lambda pred: pred.detections is not None and pred.detections.point_rend is not None,
        lambda k, handle, name, pred: f"{k} · {name} is hidden here: it is {why_hidden(handle, pred)}. This view "
                                      "needs a PointRend instance model (`<neck>_<backbone>_pointrend_rcnn`).")
    c = st.columns([3, 3, 3])
    thresh = c[0].slider("Instance score threshold", 0.0, 1.0, 0.5, 0.05, key="pts_score",
                         help="the objects you can pick (as on Compare: detections scoring at least this)")
    sides = max((v[2].detections.point_rend.grid_sides for v in shown.values()), key=len)
    step = c[1].selectbox("Points shown", ["all"] + list(range(len(sides))), key="pts_step",
                          format_func=lambda s: "every step" if s == "all" else
                          f"step {s}: the {sides[s]}² grid" if s == 0 else f"step {s} ({sides[s]}² map)")
    steps = None if step == "all" else [int(step)]
    paired = len(shown) == 2 and c[2].radio(
        "B's object", [MATCHED, OWN], key="pts_pair",
        help="matched: the B detection (score ≥ threshold, any class) whose final mask overlaps A's chosen object "
             "most, both drawn in the same crop") == MATCHED
    chosen: dict[str, int | None] = {}
    notes: dict[str, str] = {}
    cols = dict(zip(shown, st.columns(len(shown))))
    for k, (handle, name, pred) in shown.items():
        det = pred.detections
        names, ids = handle.semantic[0], detector_category_ids(handle.card)
        keep = [i for i in range(len(det)) if float(det.scores[i]) >= thresh]
        col = cols[k]
        col.subheader(f"{k} · {name}")
        chosen[k] = None
        if len(det) == 0:
            col.info(f"{k} found no objects in this image, so there is no mask to refine.")
            continue
        if not keep:
            col.info(f"No detection of {k} scores ≥ {thresh:.2f} (its best: {float(det.scores.max()):.2f}): lower "
                     "the score threshold.")
            continue
        if k == "B" and paired and chosen.get("A") is not None:
            det_a = shown["A"][2].detections
            j, iou = match_instance(det_a.masks[chosen["A"]].numpy(), det.masks.numpy(), keep)
            if j is not None:
                chosen[k] = j
                notes[k] = f"{iou:.2f}"
                col.caption(f"B's object: {label(det, names, ids, j)}, the B detection at score ≥ {thresh:.2f} whose "
                            f"mask overlaps A's #{chosen['A']} most (mask IoU {iou:.2f}).")
                continue
            col.caption(f"No B detection at score ≥ {thresh:.2f} overlaps A's #{chosen['A']}: pick B's object.")
        chosen[k] = col.selectbox(f"{k}'s object", keep, key=f"pts_obj_{k.lower()}",
                                  format_func=lambda i, d=det, n=names, c_=ids: label(d, n, c_, i),
                                  help="detections scoring at least the threshold, best first")
    picked = {k: i for k, i in chosen.items() if i is not None}
    hw = tuple(ctx.image.shape[:2])
    shared = None
    if "B" in notes:  # matched: one crop around both objects, so the two drawings line up
        shared = crop_around([shown[k][2].detections.boxes[i].tolist() for k, i in picked.items()], hw)
    rows, step_rows, results = [], [], {}
    for k, i in picked.items():
        handle, name, pred = shown[k]
        det = pred.detections
        r = refinements(det, [i], crops=None if shared is None else [shared])[0]
        results[k] = r
        key = f"{handle.key}|{ctx.image_key}|{ctx.amp}|{i}|{r.crop}"
        with cols[k]:
            png, _ = ui.drawn(f"pts_change|{key}", lambda r=r: refinement_view(ctx.image, r))
            st.image(png, width="stretch",
                     caption=f"what refinement changed: {r.added:,} px added ({100 * r.added_share:.1f} % of the "
                             f"final mask), {r.removed:,} px removed ({100 * r.removed_share:.1f} % of the coarse "
                             "mask)")
            png, _ = ui.drawn(f"pts_points|{key}|{steps}", lambda r=r: points_view(ctx.image, r, steps))
            counts = " · ".join(f"step {s}: {n:,}" for s, n in enumerate(r.points_per_step)
                                if steps is None or s in steps)
            st.image(png, width="stretch", caption=f"points evaluated ({counts}) over the final mask (white tint), "
                                                    "with the coarse mask's outline (cyan)")
        names, ids = handle.semantic[0], detector_category_ids(handle.card)
        rows.append({"model": f"{k} · {name}", "object": f"#{i}", "class": class_name(det, names, ids, i),
                     "score": round(float(det.scores[i]), 3), "coarse mask (px)": r.coarse_area,
                     "final mask (px)": r.final_area, "added (px)": r.added, "removed (px)": r.removed,
                     "added (% of final)": round(100 * r.added_share, 2),
                     "removed (% of coarse)": round(100 * r.removed_share, 2),
                     "points per step": " / ".join(str(n) for n in r.points_per_step)})
        for s, n in enumerate(r.points_per_step):
            cw, ch = r.cell_px(s)
            step_rows.append({"model": f"{k} · {name}", "step": s, "map side": r.grid_sides[s], "points": n,
                              "cell (px)": f"{cw:.1f} × {ch:.1f}"})
    if results:
        k1, k2 = st.columns(2)
        k1.plotly_chart(key_figure(REFINEMENT_KEY, ncols=1), config={"displayModeBar": False}, key="pts_key_change")
        k2.plotly_chart(key_figure(points_key(sides, steps), ncols=1), config={"displayModeBar": False},
                        key="pts_key_points")
        st.subheader("The chosen objects")
        ui.table(pd.DataFrame(rows), digits=2)
        st.caption("Coarse mask: the initial grid's probabilities pasted into the box (≥ 0.5); final mask: the "
                   "model's mask. Added: in the final mask only; removed: in the coarse mask only. Step 0 evaluates "
                   "every cell of the grid; each later step re-predicts the most uncertain cells of a map twice as fine"
                   + (f"; B's object matches A's at mask IoU {notes['B']}" if "B" in notes else "") + ".")
        ui.table(pd.DataFrame(step_rows))
        st.caption("Per step: the side of the map it writes over the box, the points it evaluated, and one cell of "
                   "that map in image pixels (box width × height / side).")
    with st.expander(f"Every object at score ≥ {thresh:.2f}: what refinement changed"):
        for k, (handle, name, pred) in shown.items():
            det = pred.detections
            keep = [i for i in range(len(det)) if float(det.scores[i]) >= thresh]
            if not keep:
                st.caption(f"{k} · {name}: no object at this threshold.")
                continue
            names, ids = handle.semantic[0], detector_category_ids(handle.card)
            ui.table(pd.DataFrame([{
                "model": k, "object": f"#{r.index}", "class": class_name(det, names, ids, r.index),
                "score": round(float(det.scores[r.index]), 3), "final mask (px)": r.final_area,
                "added (px)": r.added, "removed (px)": r.removed, "added (% of final)": round(100 * r.added_share, 2),
                "removed (% of coarse)": round(100 * r.removed_share, 2)}
                for r in cache.refinements_cached(handle.key, ctx.image_key, ctx.amp, tuple(keep), det)]))
