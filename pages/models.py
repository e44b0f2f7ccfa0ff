"""Models & speed: each family's parts (e.g. backbone / pixel decoder / transformer decoder; backbone / neck / RPN /
box head / mask head; PanopticFCN's position and kernel heads) with parameters, FLOPs and measured latency, per
module parameters, the latency of A and B measured side by side on this device, the ratios."""

from __future__ import annotations

import statistics

import pandas as pd
import streamlit as st
import torch

from app import guards, sidebar, ui
from fapn_core.bench import count_part_flops
from fapn_core.bench_stages import part_times
from fapn_core.models.parts import model_parts, part_parameters, rest_label
from fapn_core.models.zoo import count_parameters


@st.cache_data(max_entries=32, show_spinner="Counting FLOPs …")
def flops_of(key: str, hw: tuple[int, int], _model) -> dict[str, int]:
    return count_part_flops(_model, hw, model_parts(_model))


def part_table(handle, flops: dict[str, int], latency: dict[str, float] | None) -> pd.DataFrame:
    """One row per part (and "rest": work outside the parts' modules): params, GFLOPs, measured ms."""
    parts = model_parts(handle.model)
    rows = [{"part": label, "params (M)": part_parameters(handle.model, paths) / 1e6, "GFLOPs": flops[label] / 1e9}
            for label, paths in parts.items()]
    rows.append({"part": rest_label(handle.model), "params (M)": 0.0, "GFLOPs": flops["rest"] / 1e9})
    if latency is not None:
        for row, key in zip(rows, [*parts, "rest"]):
            row["latency ms"] = latency[key]
    return pd.DataFrame(rows)


def module_table(handle) -> pd.DataFrame:
    model = handle.model
    rows = []
    for label, paths in model_parts(model).items():
        for path in paths:
            for name, child in model.get_submodule(path).named_children():
                n = sum(p.numel() for p in child.parameters())
                if n:
                    rows.append({"part": label, "module": f"{path}.{name}", "params (M)": n / 1e6})
    return pd.DataFrame(rows)


ctx = sidebar.context()
st.title("Models & speed")
if ctx.a is None or ctx.b is None:
    guards.require_ready(ctx)
    st.stop()
guards.domain_note(ctx)
name_a, name_b = ui.names(ctx)
hw = tuple(ctx.image.shape[:2]) if ctx.image is not None else (512, 1024)
tables = st.container()  # drawn after the latency controls below, so a measurement shows in them at once
st.subheader(f"Latency on {ctx.device} at {hw[1]}×{hw[0]}")
repeats = st.slider("repeats", 1, 10, 3, key="lat_repeats")
if st.button("Measure latency (A and B interleaved)", key="measure"):
    x = torch.randint(0, 256, (1, 3, *hw), dtype=torch.float32, device=ctx.a.device)
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    bar = st.progress(0.0, text="Timing A and B, alternately …")
    for r in range(repeats):  # round-robin: machine load affects A and B alike
        for tag, handle in (("A", ctx.a), ("B", ctx.b)):
            with handle.lock:
                runs[tag].append(part_times(handle.model, x, warmup=r == 0))
        bar.progress((r + 1) / repeats, text=f"Timing A and B, round {r + 1} of {repeats}")
    bar.empty()
    per_part = {t: {k: statistics.median(d[k] for d in v) for k in v[0]} for t, v in runs.items()}
    st.session_state["latency"] = ((hw, ctx.a.key, ctx.b.key), per_part)
measured = st.session_state.get("latency")
measured = measured[1] if measured is not None and measured[0] == (hw, ctx.a.key, ctx.b.key) else None
with tables:
    cols = st.columns(2)
    fl = {}
    for col, tag, handle, name in ((cols[0], "A", ctx.a, name_a), (cols[1], "B", ctx.b, name_b)):
        with col:
            st.subheader(f"{tag} · {name}")
            fl[tag] = flops_of(handle.key, hw, handle.model)
            total = count_parameters(handle.model)
            st.metric("parameters", f"{total / 1e6:.2f} M")
            st.metric(f"GFLOPs at {hw[1]}×{hw[0]}", f"{fl[tag]['total'] / 1e9:.1f}")
            st.dataframe(part_table(handle, fl[tag], None if measured is None else measured[tag]).round(3),
                         hide_index=True, width="stretch")
            with st.expander("parameters per module"):
                st.dataframe(module_table(handle).round(4), hide_index=True, width="stretch")
    st.caption("Parts are the family's own (a MaskFormer's pixel decoder and transformer decoder, a PanopticFCN's "
               "position and kernel heads, a PointRend's coarse + point head); \"rest\" is the work outside their "
               "modules: box decoding and NMS, mask paste, PanopticFCN's peak selection and kernel fusion, panoptic "
               "combine, pre- and post-processing. Latency per part appears after a measurement below.")
    if ctx.a.has_instances or ctx.b.has_instances:
        st.caption("Detectors: FLOPs of one forward on a blank image of this size. The RPN and box head work on up to "
                   "1000 proposals whatever the image; the mask head's share grows with the number of detections, so "
                   "real images cost somewhat more (`fapn bench rcnn` times fixed work per stage).")
st.caption("The wall times in the other pages' status line are one pass each, on whatever else the machine was "
           "doing; compare speed here, where A and B run alternately on the same input.")
if measured is not None:
    lat = {t: measured[t]["total"] / 1000 for t in ("A", "B")}
    c = st.columns(4)
    c[0].metric("A latency", f"{1000 * lat['A']:.0f} ms")
    c[1].metric("B latency", f"{1000 * lat['B']:.0f} ms")
    c[2].metric("latency ratio B/A", f"{lat['B'] / lat['A']:.2f}×")
    c[3].metric("FLOPs ratio B/A", f"{fl['B']['total'] / fl['A']['total']:.2f}×")
    necks = {ctx.a.neck: "A", ctx.b.neck: "B"}
    if set(necks) == {"fapn", "fpn"}:
        fa, fp = necks["fapn"], necks["fpn"]
        st.metric(f"FaPN / FPN latency (measured side by side: {fa} / {fp})", f"{lat[fa] / lat[fp]:.2f}×",
                  help="the FaPN model's median over the FPN model's, interleaved runs on the same input")
    st.caption("Medians of interleaved runs in this server process; other users' work on the same machine adds noise.")
