"""About: what FPN, FAM and FSM are, why alignment matters (on the current image), the paper's tables, the official
checkpoints that load, and this server's settings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import models, releases, sidebar
from fapn_core.io import DEFAULT_MAX_PIXELS
from fapn_core.viz import DEFAULT_SCALES, motivation_figure

ctx = sidebar.context()
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
st.subheader("Why alignment matters, on the current image")
st.markdown("""
A pyramid level at stride *s* holds the image as if it were shrunk *s* times; the top-down path enlarges it again.
What that round trip loses, `|image − up(down(image, s))|` (the paper's motivation figure), sits on edges and thin
structures: exactly where an upsampled coarse feature without a location reference lands in the wrong place, and
what the FAM's offsets are meant to correct.
""")
strides = sorted(st.multiselect("Strides (rescale factors)", [2, 4, 8, 16, 32, 64], default=list(DEFAULT_SCALES),
                                key="about_strides", help="the image is resized down by each factor and back up"))
if ctx.image is None:
    st.info("Pick a sample or upload an image in the sidebar to see this for that image.")
elif not strides:
    st.info("Choose at least one stride.")
else:
    st.plotly_chart(motivation_figure(ctx.image, strides, ncols=2 if len(strides) >= 4 else len(strides)),
                    key="motivation")
    st.caption(f"{ctx.image_name}: bilinear down to ⌈H/s⌉ × ⌈W/s⌉ and back, mean over RGB, one colour range for "
               "all strides (`fapn_core.viz.motivation_figure`).")
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
st.subheader("Official checkpoints that load")
D, RELEASES = releases.D2, releases.RELEASES


def _row(task, source, release, name, params):
    ckpt = "model_final_<id>.pkl" if source == D else "model_final.pth"
    views = {"semantic": "yes: label-map views" + (", Queries" if "maskformer" in name else ""),
             "detection": "yes: boxes, objects, neck views", "instance": "yes: boxes, masks, objects, neck views",
             "panoptic": "yes: every view"}[task]
    return {"task": f"{task} · {releases.dataset_of(release, task)}", "release (config)": release,
            "source": source, "native model": f"`{name}`", "parameters": f"{params:,}", "in the app": views,
            "convert": f"`fapn convert {ckpt} {name}.safetensors [--config config.yaml]`"}


rows = [_row(*r) for r in RELEASES]
st.table(pd.DataFrame(rows), hide_index=True)
st.markdown("""
PointRend semantic releases are Cityscapes (19 classes), MaskFormer's ADE20K (150) or COCO-Stuff-10K (171); the
R-CNN family and PanopticFCN are COCO (80 thing classes, and 53 stuff classes for Panoptic FPN / PanopticFCN). All
13 FaPN-full releases load, each beside its plain counterpart. Every parameter count equals the official state-dict manifest, key for key. `--config` is the
release's detectron2 config dump (optional: without it the architecture and head are inferred from the keys); then
`fapn info <name>.safetensors` shows the card. The detectron2 zoo has no R50 PointRend semantic release: the paper's
R50 FPN baseline is its R101 config at depth 50, so that row is for a checkpoint you train with that config.

**In the app:** every release in the table loads directly (`.pth`, `.pkl` or converted `.safetensors`) with
*Upload checkpoint* in the sidebar, as A or B. Semantic models and Panoptic FPN get the label-map views (a Panoptic
FPN in the dataset's classes: stuff from its semantic head, things from its instances); detectors, instance
models and Panoptic FPN get the object views (boxes and masks, objects found and lost, mask Boundary IoU, COCO AP
and PQ on the Dataset page); every FaPN neck gets Offsets and Channels. For the object views of a COCO model,
upload the image's COCO instances JSON as ground truth.

Nothing is unpickled with code execution: `.pth` files are read with `torch.load(weights_only=True)`, `.pkl`
files with an unpickler that admits numpy arrays only. A checkpoint that does not match the architecture is
refused with the list of missing, unexpected and mis-shaped keys. Nothing is ever downloaded.
""")
st.subheader("This server")
paths = models.server_paths()
where = f"Listening on **{paths.address or 'all interfaces'}**: " + (
    "a private (loopback) server." if paths.private else "a shared server.")
st.markdown(f"""
- {where}
- Uploads: checkpoints up to {models.MAX_UPLOAD_MB} MiB (`FAPN_MAX_UPLOAD_MB`), images up to
  {DEFAULT_MAX_PIXELS / 1e6:.0f} MP.
- {paths.summary()}

The settings for a shared server (`FAPN_ALLOW_LOCAL_PATHS`, `FAPN_MODEL_ROOTS`, `FAPN_DATA_ROOTS`) are in
`docs/reliability.md`.
""")
if paths.refused_summary():
    st.warning(paths.refused_summary())
