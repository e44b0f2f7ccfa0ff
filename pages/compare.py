"""Compare: the two predictions side by side — label maps, instances and panoptic segments — where they
disagree, and how each does against the ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import objects_ui as ou
from app import cache, guards, keys, sidebar, ui
from fapn_core.metrics.detection_pair import annotation_arrays, names_by_id, select_detections
from fapn_core.viz import (
    AGREEMENT_KEY, agreement_view, disagreement_view, draw_detections, draw_panoptic, key_figure, overlay_labels,
)


def semantic_section(ctx, pa, pb, name_a: str, name_b: str) -> None:
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key="cmp_alpha")
    show_gt = ctx.gt is not None and not ctx.gt_mismatch()
    cols = st.columns(3 if show_gt else 2)
    space = f"{ctx._space.key}|{ctx.image_key}|{ctx.amp}|{alpha}"
    for col, tag, h, pred, name in ((cols[0], "A", ctx.a, pa, name_a), (cols[1], "B", ctx.b, pb, name_b)):
        png, _ = ui.drawn(f"sem|{h.key}|{space}", lambda p=pred: overlay_labels(ctx.image, p.labels, ctx.palette,
                                                                               alpha=alpha))
        col.image(png, caption=f"{tag} · {name}", width="stretch")
    if show_gt:
        png, _ = ui.drawn(f"gt|{keys.hash_array(ctx.gt)}|{space}",
                          lambda: overlay_labels(ctx.image, ctx.gt, ctx.palette, alpha=alpha))
        cols[2].image(png, caption="ground truth", width="stretch")
    ui.legend([pa.labels, pb.labels] + ([ctx.gt] if show_gt else []), ctx.palette, ctx.class_names)
    st.caption("Legend: every class in the maps above" + (" (A, B and the ground truth)" if show_gt else "")
               + ", with its share of their labelled pixels.")

    def disagreement():
        d = disagreement_view(ctx.image, pa.labels, pb.labels)
        return d.image, (d.pixels, d.fraction)

    png, (pixels, fraction) = ui.drawn(f"dis|{ctx.a.key}|{ctx.b.key}|{ctx.image_key}|{ctx.amp}", disagreement)
    st.subheader("Where A and B disagree")
    st.image(png, caption=f"{pixels:,} px ({100 * fraction:.2f} %) differ", width=ui.full_width(ctx.image.shape[:2]))
    d1, d2 = st.columns(2)
    d1.download_button("Prediction A (class ids PNG)", ui.label_png(pa.labels),
                       file_name=f"{ctx.image_name}_A_{name_a}.png", mime="image/png", key="dl_a")
    d2.download_button("Prediction B (class ids PNG)", ui.label_png(pb.labels),
                       file_name=f"{ctx.image_name}_B_{name_b}.png", mime="image/png", key="dl_b")
    res = ctx.comparison()
    if res is not None:
        st.subheader("Against the ground truth (label maps)")
        m1, m2, m3 = st.columns(3)
        m1.metric("mIoU A", f"{100 * res.a.miou:.2f} %")
        m2.metric("mIoU B", f"{100 * res.b.miou:.2f} %", ui.delta(100 * (res.b.miou - res.a.miou), unit=" vs A"))
        m3.metric("pixel accuracy B", f"{100 * res.b.pixel_accuracy:.2f} %",
                  ui.delta(100 * (res.b.pixel_accuracy - res.a.pixel_accuracy), unit=" vs A"))
        ui.table(ui.per_class_table(ctx.class_names, res.a.iou, res.b.iou, "A", "B"))
        st.caption("—: the IoU is undefined because the class is in neither the ground truth nor that model's "
                   "prediction (0 means the model predicted it where the ground truth has none, or missed it); Δ is "
                   "— when either side is.")
    elif ctx.gt_mismatch():
        st.caption(f"No per-class IoU: {ctx.gt_mismatch()}.")
    else:
        st.caption("Add ground truth in the sidebar (or pick a synthetic sample) for per-class IoU.")


def own_view(ctx, col, tag: str, handle, pred, name: str, alpha: float = 0.55) -> None:
    """A model's semantic prediction on its own (when the pair cannot be compared as label maps)."""
    if pred.labels is None:
        return
    names, pal = handle.semantic
    png, _ = ui.drawn(f"own|{handle.key}|{ctx.image_key}|{ctx.amp}|{alpha}",
                      lambda: overlay_labels(ctx.image, pred.labels, ui.palette_array(pal, len(names)), alpha=alpha))
    col.image(png, caption=f"{tag} · {name}: semantic prediction", width="stretch")


def _filters(cats: list[dict]) -> dict:
    """The drawing controls: score threshold, at most N per model, classes and sizes."""
    c = st.columns([3, 2, 3, 3])
    thresh = c[0].slider("Instance score threshold", 0.0, 1.0, 0.5, 0.05, key="cmp_score")
    top = c[1].number_input("Draw at most (per model)", 1, 100, 25, key="cmp_top",
                            help="the highest-scoring detections that pass the other filters")
    names = {c["id"]: c["name"] for c in cats}
    chosen = c[2].multiselect("Classes", list(names), default=list(names), format_func=lambda i: names[i],
                              key="cmp_classes")
    sizes = c[3].multiselect("Sizes (COCO)", ["small", "medium", "large"], default=["small", "medium", "large"],
                             key="cmp_sizes", help="small < 32², medium < 96² px (mask area, else box area)")
    return {"score_thresh": float(thresh), "top_n": int(top), "category_ids": chosen, "sizes": sizes}


def _class_legend(ctx, counts: dict[str, dict[int, int]]) -> None:
    """The class colours of the drawings, with how many of each class every drawing shows."""
    names, pal = ctx.a.semantic if ctx.a.has_instances else ctx.b.semantic
    fig = ou.class_count_legend(names, ui.palette_array(pal, len(names)), counts)
    if fig is None:
        st.caption("No detection passes the filters.")
        return
    st.plotly_chart(fig, config={"displayModeBar": False}, key="det_legend")
    st.caption("Class colours, and how many of each class every drawing shows.")


def instance_section(ctx, pa, pb, name_a: str, name_b: str) -> None:
    st.subheader("Instances and panoptic segments")
    gt, cats = None, []
    if ctx.instance_pair:
        try:
            cats = ctx.categories
        except ValueError as e:
            st.warning(str(e))
            return
        try:
            gt = ctx.detection_gt()
        except ValueError as e:
            st.caption(f"No ground-truth objects: {e}.")
    else:
        cats = (ctx.a if ctx.a.has_instances else ctx.b).categories
    flt = _filters(cats)
    fkey = f"{flt['score_thresh']}|{flt['top_n']}|{flt['category_ids']}|{flt['sizes']}"
    cols = st.columns(2)
    counts: dict[str, dict[int, int]] = {}
    chosen: dict[str, list[int]] = {}
    for col, tag, handle, pred, name in ((cols[0], "A", ctx.a, pa, name_a), (cols[1], "B", ctx.b, pb, name_b)):
        det = pred.detections
        if det is None:
            col.caption(f"{tag} · {name}: a semantic model (no instances)")
            own_view(ctx, col, tag, handle, pred, name)
            continue
        names, pal = handle.semantic
        ids = np.asarray([c["id"] for c in handle.categories], np.int64)
        classes = ids[det.classes.numpy()] if len(det) else det.classes.numpy()
        keep = select_detections(ctx.detection_results(tag.lower()), **flt)
        chosen[tag] = keep
        counts[tag] = {int(k): int(v) for k, v in zip(*np.unique(classes[keep], return_counts=True))} if keep else {}
        key = f"{handle.key}|{ctx.image_key}|{ctx.amp}"
        png, _ = ui.drawn(f"det|{key}|{fkey}", lambda d=det, c=classes, n=names, p=pal, k=keep: draw_detections(
            ctx.image, d.boxes[k], d.scores[k], c[k], None if d.masks is None else d.masks[k], class_names=n,
            palette=ui.palette_array(p, len(n)), score_thresh=0.0))
        n_thresh = int((det.scores >= flt["score_thresh"]).sum())
        col.image(png, caption=f"{tag} · {name}: {len(keep)} drawn — {n_thresh} of {len(det)} detections score ≥ "
                          f"{flt['score_thresh']:.2f}, then the chosen classes and sizes, at most {flt['top_n']}",
                  width="stretch")
        if det.panoptic_seg is not None:
            card = handle.card
            things = card.get("palette") or ui.palette_array(None, len(card.get("classes", []))).tolist()
            stuff = card.get("stuff_palette") or ui.palette_array(None, len(card.get("stuff_classes", []))).tolist()
            png, _ = ui.drawn(f"pan|{key}", lambda d=det, t=things, s=stuff: draw_panoptic(
                ctx.image, d.panoptic_seg, d.segments_info, thing_palette=t, stuff_palette=s))
            col.image(png, caption=f"{tag} · panoptic: {sum(s['isthing'] for s in det.segments_info)} things, "
                              f"{sum(not s['isthing'] for s in det.segments_info)} stuff segments (white: "
                              "segment borders)", width="stretch")
        if pred.labels is not None and not ctx.semantic_pair:
            own_view(ctx, col, tag, handle, pred, name)
    g1, g2 = st.columns(2) if gt is not None else (None, st.container())
    if gt is not None:
        def ground_truth():
            boxes, gcats, masks, crowd = annotation_arrays(gt, ctx.image.shape[:2])
            gnames, keep = names_by_id(cats), ~crowd
            img = draw_detections(ctx.image, boxes[keep], np.ones(int(keep.sum())), gcats[keep],
                                  None if masks is None else masks[keep], class_names=gnames,
                                  palette=ui.palette_array(ctx.a.semantic[1], len(gnames)), score_thresh=0.0,
                                  show_scores=False)
            per_class = {int(k): int(v) for k, v in zip(*np.unique(gcats[keep], return_counts=True))}
            return img, (int(keep.sum()), int(crowd.sum()), per_class)

        key = f"gtobj|{keys.annotations_key(gt)}|{ctx.image_key}|{ctx.a.key}|{ctx.b.key}"
        png, (n_obj, n_crowd, counts["ground truth"]) = ui.drawn(key, ground_truth)
        g1.image(png, caption=f"ground truth: {n_obj} objects, all drawn"
                              + (f" (+{n_crowd} crowd regions not drawn)" if n_crowd else ""), width="stretch")
    with g2:
        _class_legend(ctx, counts)
    if not ctx.instance_pair:
        return
    disagreement_section(ctx, pa, pb, cats, flt, chosen)
    truth_section(ctx, name_a, name_b, flt["score_thresh"])


def disagreement_section(ctx, pa, pb, cats: list[dict], flt: dict, chosen: dict[str, list[int]]) -> None:
    """Objects only one model finds and, for those both find, where their masks differ: two encodings, a key."""
    ra, rb = ctx.detection_results("a"), ctx.detection_results("b")
    thresh = flt["score_thresh"]
    agr = cache.agreement_cached(ctx.a.key, ctx.b.key, ctx.image_key, ctx.amp, thresh, ra, rb)
    da, db = pa.detections, pb.detections
    st.subheader("Where A and B disagree (objects)")
    in_a, in_b = set(chosen.get("A", [])), set(chosen.get("B", []))
    only_a = [i for i in agr.only_a if i in in_a]
    only_b = [i for i in agr.only_b if i in in_b]
    matched = [m for m in agr.matched if m[0] in in_a or m[1] in in_b]
    masks = da.masks is not None and db.masks is not None
    names = names_by_id(cats)

    def tags(results):
        return [f"{names[r['category_id']] if r['category_id'] < len(names) else r['category_id']} {r['score']:.2f}"
                for r in results]

    fkey = f"{flt['top_n']}|{flt['category_ids']}|{flt['sizes']}"
    png, _ = ui.drawn(f"agr|{ctx.a.key}|{ctx.b.key}|{ctx.image_key}|{ctx.amp}|{thresh}|{fkey}", lambda: agreement_view(
        ctx.image, da.boxes, da.masks if masks else None, db.boxes, db.masks if masks else None, matched,
        only_a, only_b, tags_a=tags(ra), tags_b=tags(rb)))
    key = [k for k in AGREEMENT_KEY if masks or k[1] == "outline"]
    st.plotly_chart(key_figure(key), config={"displayModeBar": False}, key="agr_key")
    st.image(png, caption=f"{len(only_a)} of {len(agr.only_a)} objects only A finds and {len(only_b)} of "
                          f"{len(agr.only_b)} only B finds drawn (the filters above), {len(matched)} of "
                          f"{len(agr.matched)} both find (same class, {agr.iou_type} IoU ≥ {agr.iou_thresh}); "
                          f"scores ≥ {thresh:.2f}", width=ui.full_width(ctx.image.shape[:2]))
    rows = [{"model": tag, "det": i, "class": names[r["category_id"]] if r["category_id"] < len(names) else
             r["category_id"], "score": round(r["score"], 3), "box (x, y, w, h)": [round(v) for v in r["bbox"]]}
            for tag, idx, res in (("only A", only_a, ra), ("only B", only_b, rb)) for i in idx for r in [res[i]]]
    if agr.matched:
        ious = [m[2] for m in agr.matched]
        st.caption(f"Paired objects (all {len(ious)} at scores ≥ {thresh:.2f}): median {agr.iou_type} IoU between A "
                   f"and B {np.median(ious):.2f}, {sum(v < 0.75 for v in ious)} below 0.75.")
    if rows:
        ui.table(pd.DataFrame(rows), digits=3)


def truth_section(ctx, name_a: str, name_b: str, thresh: float) -> None:
    """A and B against the ground-truth objects: COCO AP (every detection) and counts at the slider's threshold."""
    res, why = guards.detection_comparison_or_reason(ctx)
    if res is None:
        st.caption(why + ".")
        return
    st.subheader("Against the ground-truth objects (this image, COCO)")
    table = []
    for tag, name in (("a", name_a), ("b", name_b)):
        for t, ap in res.ap[tag].items():
            table.append({"model": f"{tag.upper()} · {name}", "IoU": "box" if t == "bbox" else "mask",
                          **{k: None if not np.isfinite(v) else round(100 * v, 1) for k, v in ap.items()}})
    if table:
        ui.table(pd.DataFrame(table), digits=1)
        st.caption("AP (%) uses every detection (COCO: up to 100 per image, all scores); —: no object of that size.")
    at, every = res.counts_at(thresh), res.counts_at(0.0)
    c = st.columns(4)
    c[0].metric("objects", res.n_objects)
    c[1].metric(f"found by A (score ≥ {thresh:.2f})", at["found_a"])
    c[2].metric(f"found by B (score ≥ {thresh:.2f})", at["found_b"],
                ui.delta(at["found_b"] - at["found_a"], 0, " vs A"))
    c[3].metric(f"false positives A / B (score ≥ {thresh:.2f})", f"{at['fp_a']} / {at['fp_b']}")
    st.caption(f"Counts at the slider's score threshold ({thresh:.2f}), as drawn. Found = COCO matched a detection "
               "of the object's class at IoU 0.5; a false positive is a detection matched to no object. At every "
               f"score, as AP counts them: found by A {every['found_a']}, by B {every['found_b']}; false positives "
               f"{every['fp_a']} / {every['fp_b']}. The Small objects and Boundaries pages list every object.")


ctx = sidebar.context()
st.title("Compare A and B")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    name_a, name_b = ui.names(ctx)
    pa, pb = ctx.prediction("a"), ctx.prediction("b")
    if ctx.semantic_pair:
        semantic_section(ctx, pa, pb, name_a, name_b)
    else:
        st.info(ctx.why_not_semantic() + ".")
    if pa.detections is not None or pb.detections is not None:
        if not ctx.instance_pair:
            st.info(ctx.why_not_instances() + ".")
        instance_section(ctx, pa, pb, name_a, name_b)
