"""Compare: the two predictions side by side, their difference, per-class IoU with ground truth."""

from __future__ import annotations

import streamlit as st

from app import state, ui
from fapn_core.data.palettes import generic_palette
from fapn_core.viz import disagreement_view, draw_detections, draw_panoptic, overlay_labels

ctx = state.context()
st.title("Compare A and B")
if state.require_ready(ctx):
    state.status_line(ctx)
    ui.synthetic_domain_note(ctx)
    name_a, name_b = ui.names(ctx)
    pa, pb = ctx.prediction("a"), ctx.prediction("b")
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key="cmp_alpha")
    cols = st.columns(3 if ctx.gt is not None else 2)
    over_a = overlay_labels(ctx.image, pa.labels, ctx.palette, alpha=alpha)
    over_b = overlay_labels(ctx.image, pb.labels, ctx.palette, alpha=alpha)
    cols[0].image(over_a, caption=f"A · {name_a} · {pa.latency_ms:.0f} ms", width="stretch")
    cols[1].image(over_b, caption=f"B · {name_b} · {pb.latency_ms:.0f} ms", width="stretch")
    if ctx.gt is not None:
        cols[2].image(overlay_labels(ctx.image, ctx.gt, ctx.palette, alpha=alpha), caption="ground truth",
                      width="stretch")
    ui.legend([pa.labels, pb.labels], ctx.palette, ctx.class_names)
    diff = disagreement_view(ctx.image, pa.labels, pb.labels)
    st.subheader("Where A and B disagree")
    st.image(diff.image, caption=f"{diff.pixels:,} px ({100 * diff.fraction:.2f} %) differ", width="stretch")
    if pa.detections is not None or pb.detections is not None:
        st.subheader("Instances and panoptic segments")
        thresh = st.slider("Instance score threshold", 0.0, 1.0, 0.5, 0.05, key="cmp_score")
        cols = st.columns(2)
        for col, tag, handle, pred, name in ((cols[0], "A", ctx.a, pa, name_a), (cols[1], "B", ctx.b, pb, name_b)):
            det = pred.detections
            if det is None:
                col.caption(f"{tag} · {name}: a semantic model (no instances)")
                continue
            card = handle.card
            things = card.get("palette") or generic_palette(max(len(card.get("classes", [])), 1)).tolist()
            stuff = card.get("stuff_palette") or generic_palette(max(len(card.get("stuff_classes", [])), 1)).tolist()
            col.image(draw_detections(ctx.image, det.boxes, det.scores, det.classes, det.masks,
                                      class_names=card.get("classes"), palette=things, score_thresh=thresh),
                      caption=f"{tag} · {name}: {int((det.scores >= thresh).sum())} of {len(det)} instances ≥ "
                              f"{thresh:.2f}", width="stretch")
            if det.panoptic_seg is not None:
                col.image(draw_panoptic(ctx.image, det.panoptic_seg, det.segments_info, thing_palette=things,
                                        stuff_palette=stuff),
                          caption=f"{tag} · panoptic: {sum(s['isthing'] for s in det.segments_info)} things, "
                                  f"{sum(not s['isthing'] for s in det.segments_info)} stuff segments (white: "
                                  "segment borders)", width="stretch")
    d1, d2 = st.columns(2)
    with d1:
        st.download_button("Prediction A (class ids PNG)", ui.label_png(pa.labels),
                           file_name=f"{ctx.image_name}_A_{name_a}.png", mime="image/png", key="dl_a")
    with d2:
        st.download_button("Prediction B (class ids PNG)", ui.label_png(pb.labels),
                           file_name=f"{ctx.image_name}_B_{name_b}.png", mime="image/png", key="dl_b")
    if ctx.gt is not None:
        res = ctx.comparison()
        st.subheader("Against the ground truth")
        m1, m2, m3 = st.columns(3)
        m1.metric("mIoU A", f"{100 * res.a.miou:.2f} %")
        m2.metric("mIoU B", f"{100 * res.b.miou:.2f} %", f"{100 * (res.b.miou - res.a.miou):+.2f}")
        m3.metric("pixel accuracy B", f"{100 * res.b.pixel_accuracy:.2f} %",
                  f"{100 * (res.b.pixel_accuracy - res.a.pixel_accuracy):+.2f}")
        st.dataframe(ui.per_class_table(ctx.class_names, res.a.iou, res.b.iou, "A", "B"), hide_index=True,
                     width="stretch")
    else:
        st.caption("Add ground truth in the sidebar (or pick a synthetic sample) for per-class IoU.")
