"""Attribution: captum maps for a pixel/box and class, for A and B side by side."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import guards, sidebar, ui
from fapn_core.attribution import AttributionInterrupted, Target, attribute, normalize_map
from fapn_core.viz import apply_colormap, greyed, region_outline

METHODS = {"Integrated Gradients (input)": "integrated_gradients", "LayerGradCAM (neck level)": "gradcam",
           "Occlusion": "occlusion"}

ctx = sidebar.context()
st.title("Attribution")
st.caption("Which input pixels (or neck locations) drive the score of a class in a region: the sum of that class's "
           "logits over the region. Integrated Gradients integrates input gradients from a baseline image; "
           "LayerGradCAM weighs a neck level's activations by their pooled gradients; Occlusion greys out "
           "windows and records the score drop.")
if guards.require_ready(ctx) and not ctx.semantic_only:
    st.info(f"Attribution takes a semantic model's class logits over a region; A is {ui.a_task(ctx.a.task)} and B "
            f"{ui.a_task(ctx.b.task)}. Detectors output boxes and masks per object (a Panoptic FPN adds a semantic "
            "head), which this page does not attribute yet. Pick two semantic models as A and B.")
elif ctx.ready:
    guards.status_line(ctx)
    name_a, name_b = ui.names(ctx)
    h, w = ctx.image.shape[:2]
    c1, c2, c3 = st.columns(3)
    method_label = c1.selectbox("Method", list(METHODS), key="att_method")
    method = METHODS[method_label]
    pred_b = ctx.prediction("b").labels
    default_class = int(np.bincount(pred_b.ravel(), minlength=ctx.num_classes).argmax())
    class_id = c2.selectbox("Class", list(range(ctx.num_classes)), index=default_class,
                            format_func=lambda i: f"{i}: {ctx.class_names[i]}", key="att_class")
    kind = c3.radio("Target", ["box", "pixel"], horizontal=True, key="att_kind")
    if kind == "pixel":
        p1, p2 = st.columns(2)
        y = p1.number_input("y", 0, h - 1, h // 2, key="att_y")
        x = p2.number_input("x", 0, w - 1, w // 2, key="att_x")
        target = Target(class_id, pixel=(int(y), int(x)))
    else:
        b = st.columns(4)
        y0 = b[0].number_input("y0", 0, h - 1, h // 4, key="att_y0")
        x0 = b[1].number_input("x0", 0, w - 1, w // 4, key="att_x0")
        y1 = b[2].number_input("y1 (exclusive)", 1, h, max(int(y0) + 1, 3 * h // 4), key="att_y1")
        x1 = b[3].number_input("x1 (exclusive)", 1, w, max(int(x0) + 1, 3 * w // 4), key="att_x1")
        target = Target(class_id, box=(int(y0), int(x0), int(y1), int(x1)))
    opts = {}
    o = st.columns(3)
    if method == "integrated_gradients":
        opts["n_steps"] = o[0].slider("steps", 8, 64, 16, 8, key="att_steps")
        opts["baseline"] = o[1].selectbox("baseline", ["black", "blur", "mean"], key="att_baseline")
    elif method == "gradcam":
        opts["level"] = o[0].selectbox("neck level", ["p2", "p3", "p4", "p5"], key="att_level")
    else:
        opts["window"] = o[0].select_slider("window", [16, 32, 64, 128], value=64, key="att_window")
        opts["stride"] = o[1].select_slider("stride", [8, 16, 32, 64], value=32, key="att_stride")
        n_win = (-(-h // opts["stride"])) * (-(-w // opts["stride"]))
        st.caption(f"about {n_win} forward passes per model; larger windows/strides are faster")
    deadline = o[2].number_input("time limit (s)", 5, 1200, 180, key="att_deadline")
    try:
        region = target.region(h, w, ctx.num_classes)
    except ValueError as e:
        st.error(str(e))
        st.stop()
    st.image(region_outline(ctx.image, region), caption="target region (yellow outline; the image inside is "
             "what the models see)", width="stretch")
    run_key = (ctx.a.key, ctx.b.key, ctx.image_key, method, repr(target.pixel), repr(target.box), class_id,
               tuple(sorted(opts.items())))
    if st.button("Compute for A and B", type="primary", key="att_run"):
        results = {}
        bar = st.progress(0.0, text="starting …")
        for i, (slot, handle) in enumerate((("A", ctx.a), ("B", ctx.b))):
            def report(f: float, i=i, slot=slot) -> None:
                bar.progress(min(1.0, (i + f) / 2), text=f"{slot}: {100 * f:.0f} %")
            try:
                with handle.lock:
                    results[slot] = attribute(handle.model, ctx.image, target, method, progress=report,
                                              deadline_s=float(deadline), **opts)
            except AttributionInterrupted as e:
                st.warning(f"{slot}: stopped — {e}")
            except ValueError as e:
                st.error(f"{slot}: {e}")
        bar.progress(1.0, text="done")
        st.session_state["attribution"] = (run_key, results)
    stored = st.session_state.get("attribution")
    if stored and stored[0] == run_key:
        cols = st.columns(2)
        for col, slot, name in ((cols[0], "A", name_a), (cols[1], "B", name_b)):
            res = stored[1].get(slot)
            if res is None:
                continue
            signed = method != "gradcam"
            m = normalize_map(res.map, signed=signed)
            heat = ui.diverging(m) if signed else apply_colormap(m, 0.0, 1.0, "inferno")
            shown = (0.45 * greyed(ctx.image) + 0.55 * heat).astype(np.uint8)
            extra = ""
            if res.delta is not None:
                gap = abs(res.extra.get("score", 0.0) - res.extra.get("baseline_score", 0.0))
                rel = abs(res.delta) / gap if gap > 0 else float("nan")
                extra = f" · completeness error {100 * rel:.1f} % (raise steps to lower it)"
            col.image(shown, caption=f"{slot} · {name} · {res.seconds:.1f} s{extra}", width="stretch")
