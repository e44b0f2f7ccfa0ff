"""About: what FPN, FAM and FSM are, the paper's tables, how to load official checkpoints, and this server's
settings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state

st.title("About FaPN Lab")
st.markdown("""
**FPN** fuses a coarse, upsampled top-down feature with a detailed lateral one. Upsampling has no location
reference, so context lands in the wrong place — worst at object boundaries and on small objects.

**FaPN** (Huang et al., *FaPN: Feature-aligned Pyramid Network for Dense Image Prediction*, ICCV 2021) adds two
modules to every top-down step:

- **FSM** (feature selection): global-average-pool → 1×1 conv → sigmoid gives a per-channel importance vector;
  the lateral output is `conv1x1(x + x·att)`.
- **FAM** (feature alignment): offsets are predicted from `conv1x1(cat[FSM(lateral), 2·up])`; a modulated
  deformable 3×3 conv with 8 groups resamples the upsampled feature (its zero-initialised 3×3 offset conv gives
  216 channels: dy/dx and a mask for 8 groups × 9 kernel points); output `relu(DCN(up)) + FSM(lateral)`.

This app runs two models on the same image and shows where they differ: the **Offsets** page draws the FAM's
learned displacement fields (in image pixels), **Channels** the FSM importances, **Boundaries** and **Small
objects** the metrics where FaPN claims its gains.
""")
st.subheader("The paper's ablation (Cityscapes val)")
st.dataframe(pd.DataFrame([
    ("FPN", "R50", 28.6, 77.4), ("FPN + extra 3×3 conv", "R50", 33.4, 77.5), ("FPN", "R101", 47.6, 78.9),
    ("FPN + FAM", "R50", 31.7, 79.7), ("FPN + FAM + SE", "R50", 33.1, 78.8),
    ("FPN + FAM + FSM (FaPN)", "R50", 33.1, 80.0), ("FPN + deconv + FSM", "R50", 32.7, 76.7),
    ("FPN + FAM† + FSM", "R50", 32.7, 79.3)], columns=["method", "backbone", "#params (M)", "mIoU (%)"]),
    hide_index=True)
st.subheader("The paper's boundary analysis (mIoU % in bands around boundaries)")
st.dataframe(pd.DataFrame([
    ("FPN (PointRend)", "R50", 46.9, 53.6, 59.3, 63.8, 55.9), ("FaPN", "R50", 49.2, 56.2, 62.0, 66.4, 58.5),
    ("FPN (PointRend)", "R101", 47.8, 54.6, 60.5, 64.9, 57.0), ("FaPN", "R101", 50.1, 57.1, 62.9, 67.2, 59.3)],
    columns=["method", "backbone", "3px", "5px", "8px", "12px", "mean"]), hide_index=True)
st.subheader("Loading official checkpoints")
st.markdown("""
Official FaPN-full and detectron2 checkpoints (`model_final.pth`, or detectron2 `.pkl`) load directly: choose
*Upload checkpoint* in the sidebar, or convert once on the command line (the architecture is inferred from the
keys, or read from the detectron2 config dump with `--config`):

```bash
fapn convert model_final.pth fapn_r50_cityscapes.safetensors --config config.yaml
```

Nothing is unpickled with code execution: `.pth` files are read with `torch.load(weights_only=True)`, `.pkl`
files with an unpickler that admits numpy arrays only. A checkpoint that does not match the architecture is
refused with the list of missing, unexpected and mis-shaped keys. Nothing is ever downloaded.
""")
st.subheader("This server")
paths = state.server_paths()
where = f"Listening on **{paths.address or 'all interfaces'}**: " + (
    "a private (loopback) server." if paths.private else "a shared server.")
st.markdown(f"""
- {where}
- Uploads: checkpoints up to {state.MAX_UPLOAD_MB} MiB (`FAPN_MAX_UPLOAD_MB`), images up to
  {state.DEFAULT_MAX_PIXELS / 1e6:.0f} MP.
- {paths.summary()}

The settings for a shared server (`FAPN_ALLOW_LOCAL_PATHS`, `FAPN_MODEL_ROOTS`, `FAPN_DATA_ROOTS`) are in
`docs/reliability.md`.
""")
