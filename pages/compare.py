"""Compare: the two predictions side by side — label maps, instances and panoptic segments — where they
disagree, and how each does against the ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import cache, guards, keys, sidebar, ui
from fapn_core.metrics.detection_pair import annotation_arrays, names_by_id
from fapn_core.viz import agreement_view, disagreement_view, draw_detections, draw_panoptic, overlay_labels


def semantic_section(ctx, pa, pb, name_a: str, name_b: str) -> None:
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key="cmp_alpha")
    show_gt = ctx.gt is not None and not ctx.gt_mismatch()
    cols = st.columns(3 if show_gt else 2)
    space = f"{ctx._space.key}|{ctx.image_key}|{ctx.amp}|{alpha}"
    for col, tag, h, pred, name in ((cols[0], "A", ctx.a, pa, name_a), (cols[1], "B", ctx.b, pb, name_b)):
        png, _ = ui.drawn(f"sem|{h.key}|{space}", lambda p=pred: overlay_labels(ctx.image, p.labels, ctx.palette,
                                                                               alpha=alpha))
        col.image(png, caption=f"{tag} · {name} · {pred.latency_ms:.0f} ms", width="stretch")
    if show_gt:
        png, _ = ui.drawn(f"gt|{keys.hash_array(ctx.gt)}|{space}",
                          lambda: overlay_labels(ctx.image, ctx.gt, ctx.palette, alpha=alpha))
        cols[2].image(png, caption="ground truth", width="stretch")
    ui.legend([pa.labels, pb.labels], ctx.palette, ctx.class_names)

    def disagreement():
        d = disagreement_view(ctx.image, pa.labels, pb.labels)
        return d.image, (d.pixels, d.fraction)

    png, (pixels, fraction) = ui.drawn(f"dis|{ctx.a.key}|{ctx.b.key}|{ctx.image_key}|{ctx.amp}", disagreement)
    st.subheader("Where A and B disagree")
    st.image(png, caption=f"{pixels:,} px ({100 * fraction:.2f} %) differ", width="stretch")
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
        m2.metric("mIoU B", f"{100 * res.b.miou:.2f} %", f"{100 * (res.b.miou - res.a.miou):+.2f}")
        m3.metric("pixel accuracy B", f"{100 * res.b.pixel_accuracy:.2f} %",
                  f"{100 * (res.b.pixel_accuracy - res.a.pixel_accuracy):+.2f}")
        st.dataframe(ui.per_class_table(ctx.class_names, res.a.iou, res.b.iou, "A", "B"), hide_index=True,
                     width="stretch")
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
    col.image(png,
              caption=f"{tag} · {name}: semantic prediction · {pred.latency_ms:.0f} ms", width="stretch")


def instance_section(ctx, pa, pb, name_a: str, name_b: str) -> None:
    st.subheader("Instances and panoptic segments")
    thresh = st.slider("Instance score threshold", 0.0, 1.0, 0.5, 0.05, key="cmp_score")
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
    cols = st.columns(3 if gt is not None else 2)
    for col, tag, handle, pred, name in ((cols[0], "A", ctx.a, pa, name_a), (cols[1], "B", ctx.b, pb, name_b)):
        det = pred.detections
        if det is None:
            col.caption(f"{tag} · {name}: a semantic model (no instances)")
            own_view(ctx, col, tag, handle, pred, name)
            continue
        names, pal = handle.semantic
        ids = np.asarray([c["id"] for c in handle.categories], np.int64)
        classes = ids[det.classes.numpy()] if len(det) else det.classes.numpy()
        key = f"{handle.key}|{ctx.image_key}|{ctx.amp}"
        png, _ = ui.drawn(f"det|{key}|{thresh}", lambda d=det, c=classes, n=names, p=pal: draw_detections(
            ctx.image, d.boxes, d.scores, c, d.masks, class_names=n, palette=ui.palette_array(p, len(n)),
            score_thresh=thresh))
        col.image(png, caption=f"{tag} · {name}: {int((det.scores >= thresh).sum())} of {len(det)} instances ≥ "
                          f"{thresh:.2f} · {pred.latency_ms:.0f} ms", width="stretch")
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
    if gt is not None:
        def ground_truth():
            boxes, gcats, masks, crowd = annotation_arrays(gt, ctx.image.shape[:2])
            gnames, keep = names_by_id(cats), ~crowd
            img = draw_detections(ctx.image, boxes[keep], np.ones(int(keep.sum())), gcats[keep],
                                  None if masks is None else masks[keep], class_names=gnames,
                                  palette=ui.palette_array(ctx.a.semantic[1], len(gnames)), score_thresh=0.0,
                                  show_scores=False)
            return img, (int(keep.sum()), int(crowd.sum()))

        key = f"gtobj|{keys.annotations_key(gt)}|{ctx.image_key}|{ctx.a.key}|{ctx.b.key}"
        png, (n_obj, n_crowd) = ui.drawn(key, ground_truth)
        cols[2].image(png, caption=f"ground truth: {n_obj} objects"
                                   + (f" (+{n_crowd} crowd regions not drawn)" if n_crowd else ""), width="stretch")
    if not ctx.instance_pair:
        return
    ra, rb = ctx.detection_results("a"), ctx.detection_results("b")
    agr = cache.agreement_cached(ctx.a.key, ctx.b.key, ctx.image_key, ctx.amp, float(thresh), ra, rb)
    da, db = pa.detections, pb.detections
    st.subheader("Where A and B disagree (objects)")
    masks = da.masks is not None and db.masks is not None
    png, _ = ui.drawn(f"agr|{ctx.a.key}|{ctx.b.key}|{ctx.image_key}|{ctx.amp}|{thresh}", lambda: agreement_view(
        ctx.image, da.boxes, da.masks if masks else None, db.boxes, db.masks if masks else None, agr.matched,
        agr.only_a, agr.only_b))
    st.image(png, caption=f"blue: only A ({len(agr.only_a)}), red: only B ({len(agr.only_b)}); "
                     f"{len(agr.matched)} objects both find (same class, {agr.iou_type} IoU ≥ {agr.iou_thresh}; "
                     + ("where their masks differ: blue = A's mask only, red = B's only" if masks else "grey boxes")
                     + f"), scores ≥ {thresh:.2f}", width="stretch")
    names = names_by_id(cats)
    rows = [{"model": tag, "det": i, "class": names[r["category_id"]] if r["category_id"] < len(names) else
             r["category_id"], "score": round(r["score"], 3), "box (x, y, w, h)": [round(v) for v in r["bbox"]]}
            for tag, idx, res in (("only A", agr.only_a, ra), ("only B", agr.only_b, rb)) for i in idx
            for r in [res[i]]]
    if agr.matched:
        ious = [m[2] for m in agr.matched]
        st.caption(f"Paired objects: median {agr.iou_type} IoU between A and B {np.median(ious):.2f}, "
                   f"{sum(v < 0.75 for v in ious)} below 0.75.")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
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
        st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
    found = {tag: sum(getattr(r, f"hit_{tag}") for r in res.records) for tag in ("a", "b")}
    c = st.columns(4)
    c[0].metric("objects", res.n_objects)
    c[1].metric("found by A", found["a"])
    c[2].metric("found by B", found["b"], f"{found['b'] - found['a']:+d}")
    c[3].metric("false positives A / B", f"{len(res.false_positives_a)} / {len(res.false_positives_b)}")
    st.caption("Found = COCO matched a detection of the object's class at IoU 0.5 (all scores, 100 detections). "
               "The Small objects and Boundaries pages list every object.")


ctx = sidebar.context()
st.title("Compare A and B")
if guards.require_ready(ctx):
    guards.status_line(ctx)
    ui.synthetic_domain_note(ctx)
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
