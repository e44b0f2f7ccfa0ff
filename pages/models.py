"""Models & speed: parameters and FLOPs per part (backbone / neck / RPN / ROI heads / semantic head) and per
module, measured latency of A and B on this device, the ratio."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from app import guards, sidebar, ui
from fapn_core.bench import count_flops, interleaved_medians
from fapn_core.models.zoo import count_parameters


@st.cache_data(max_entries=32, show_spinner="Counting FLOPs …")
def flops_of(key: str, hw: tuple[int, int], _model) -> dict[str, int]:
    return count_flops(_model, hw)


PARTS = {"backbone": "backbone", "neck": "neck", "proposal_generator": "RPN", "roi_heads": "ROI heads",
         "head": "semantic head"}


def module_table(handle) -> pd.DataFrame:
    model = handle.model
    rows = []
    for part in PARTS:
        module = getattr(model, part, None)
        if module is None:
            continue
        for name, child in module.named_children():
            n = sum(p.numel() for p in child.parameters())
            if n:
                rows.append({"part": part, "module": name, "params (M)": n / 1e6})
    return pd.DataFrame(rows)


ctx = sidebar.context()
st.title("Models & speed")
if ctx.a is None or ctx.b is None:
    guards.require_ready(ctx)
    st.stop()
guards.domain_note(ctx)
name_a, name_b = ui.names(ctx)
hw = tuple(ctx.image.shape[:2]) if ctx.image is not None else (512, 1024)
cols = st.columns(2)
fl = {}
for col, tag, handle, name in ((cols[0], "A", ctx.a, name_a), (cols[1], "B", ctx.b, name_b)):
    with col:
        st.subheader(f"{tag} · {name}")
        fl[tag] = flops_of(handle.key, hw, handle.model)
        total = count_parameters(handle.model)
        st.metric("parameters", f"{total / 1e6:.2f} M")
        st.metric(f"GFLOPs at {hw[1]}×{hw[0]}", f"{fl[tag]['total'] / 1e9:.1f}")
        parts = [p for p in PARTS if getattr(handle.model, p, None) is not None]
        st.dataframe(pd.DataFrame([{"part": PARTS[p], "params (M)": count_parameters(handle.model, p + ".") / 1e6,
                                    "GFLOPs": fl[tag].get(p, 0) / 1e9} for p in parts]).round(3),
                     hide_index=True, width="stretch")
        with st.expander("parameters per module"):
            st.dataframe(module_table(handle).round(4), hide_index=True, width="stretch")
if ctx.a.has_instances or ctx.b.has_instances:
    st.caption("Detectors: FLOPs of one forward on a blank image of this size. The RPN and box head work on up to "
               "1000 proposals whatever the image; the mask head's share grows with the number of detections, so "
               "real images cost somewhat more (`fapn bench rcnn` times fixed work per stage).")
st.subheader(f"Latency on {ctx.device} at {hw[1]}×{hw[0]}")
repeats = st.slider("repeats", 1, 10, 3, key="lat_repeats")
if st.button("Measure latency (A and B interleaved)", key="measure"):
    x = torch.randint(0, 256, (1, 3, *hw), dtype=torch.float32, device=ctx.a.device)
    with st.spinner("Timing …"):
        def run(handle):
            def go():
                with handle.lock, torch.inference_mode():
                    handle.model(x)
            return go
        lat = interleaved_medians({"A": run(ctx.a), "B": run(ctx.b)}, repeats,
                                  device=torch.device(ctx.a.device))
    st.session_state["latency"] = (hw, lat)
st.caption("The wall times in the other pages' status line are one pass each, on whatever else the machine was "
           "doing; compare speed here, where A and B run alternately on the same input.")
if "latency" in st.session_state and st.session_state["latency"][0] == hw:
    lat = st.session_state["latency"][1]
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
