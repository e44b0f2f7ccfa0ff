"""Dataset: evaluate A and B over a dataset (resumable), with the seed's tables and downloads; detectors get
COCO box/mask/Boundary AP, PQ and the objects found by size, with the COCO JSON of their predictions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from app import guards, models, sidebar, ui
from fapn_core.data import open_dataset
from fapn_core.evaluation import EvaluationInterrupted, ModelEntry, evaluate

RUNS = Path(__file__).resolve().parents[1] / "runs" / "app_eval"

ctx = sidebar.context()
st.title("Dataset evaluation")
st.caption("Every metric over a dataset, A as the baseline. Counts are summed over images (never per-image means). "
           "Results are written per image as they come; an interrupted run continues where it stopped.")
if ctx.a is None or ctx.b is None:
    guards.require_ready(ctx)
    st.stop()
paths = models.server_paths()
kinds = ["Synthetic test split (seed 2, held out)"]
if paths.enabled:
    kinds += ["Folder (images/ + labels/)", "Cityscapes root", "ADE20K root"]
else:
    st.caption(f"Folders, Cityscapes and ADE20K need server paths. {paths.summary()}")
kind = st.selectbox("Dataset", kinds, key="ds_kind")
limit = st.number_input("Images (first N)", 1, 100000, 20, key="ds_limit")
root = None
if kind.startswith("Synthetic"):
    spec = f"synthetic:n={int(limit)},seed=2,size=256x512"
else:
    text = st.text_input("Root folder on the server", key="ds_root",
                         help="A folder under: " + ", ".join(str(r) for r in paths.data_roots)
                              + " (absolute, or relative to one of these folders).")
    split = ""
    if kind.startswith("Cityscapes"):
        split = ":" + st.selectbox("split", ["val", "train", "test"], key="ds_split_cs")
    elif kind.startswith("ADE20K"):
        split = ":" + st.selectbox("split", ["validation", "training"], key="ds_split_ade")
    prefix = {"F": "folder", "C": "cityscapes", "A": "ade20k"}[kind[0]]
    if text:
        try:
            root = paths.dataset_folder(text)  # resolved and confined before anything under it is read
        except ValueError as e:
            st.error(str(e))
            st.stop()
    spec = f"{prefix}:{root}{split}" if root else ""
deadline = st.number_input("Time limit per run (s)", 10, 3600, 300, key="ds_deadline")
name_a, name_b = ui.names(ctx)
run_id = hashlib.sha256(f"{ctx.a.key}|{ctx.b.key}|{spec}|{int(limit)}".encode()).hexdigest()[:12]
out = RUNS / run_id
detectors = ctx.a.has_instances and ctx.b.has_instances
if not ctx.semantic_only and not detectors:
    st.info(f"A is {ui.a_task(ctx.a.task)} and B {ui.a_task(ctx.b.task)}: one evaluation takes semantic models "
            "or detectors (Faster/Mask R-CNN, Panoptic FPN), not both. Pick two of one kind.")
    st.stop()
if detectors:
    st.caption("Detectors: COCO box, mask and Boundary AP (faster-coco-eval), PQ for Panoptic FPN, and the objects "
               "each finds by COCO size, all from one COCO evaluation over every image.")
if spec and st.button("Run evaluation", type="primary", key="ds_run"):
    try:
        dataset = open_dataset(spec)
    except (ValueError, FileNotFoundError) as e:
        st.error(str(e))
        st.stop()
    if not detectors and dataset.num_classes != ctx.num_classes:
        st.error(f"the dataset has {dataset.num_classes} classes, the models predict {ctx.num_classes}")
        st.stop()
    labels = [f"A·{name_a}", f"B·{name_b}"]
    entries = [ModelEntry(labels[0], models.LockedModel(ctx.a), ctx.a.card),
               ModelEntry(labels[1], models.LockedModel(ctx.b), ctx.b.card)]
    bar = st.progress(0.0, text="evaluating …")
    try:
        evaluate(entries, dataset, out, limit=int(limit), amp=ctx.amp, deadline_s=float(deadline),
                 progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done} / {total} images"))
        bar.progress(1.0, text="done")
    except EvaluationInterrupted as e:
        st.warning(f"Time limit reached: {e}. Press *Run evaluation* again to continue.")
    except (ValueError, OSError) as e:
        st.error(f"evaluation failed: {e}")
summary_path = out / "summary.json"
if summary_path.is_file():
    summary = json.loads(summary_path.read_text())
    st.success(f"{summary['n_images']} images evaluated, {len(summary['skipped'])} skipped, {summary['seconds']:.0f} s")
    titles = {"ablation": "Parameters and mIoU (%)", "boundary": "Boundary band mIoU (%)",
              "small_objects": "Small objects by size: found (at least half the pixels get the class) and mean IoU (%)"}
    table_file = "{}.csv".format
    if "coco" in summary:  # a detector run
        from fapn_core.evaluation import TABLE_TITLES as titles
        from fapn_core.evaluation import table_file
    for key, title in titles.items():
        if key not in summary["tables"] or not (out / table_file(key)).is_file():
            continue
        st.subheader(title)
        df = pd.DataFrame(summary["tables"][key])
        for part in ui.fit_width(df):
            ui.table(part)
        st.download_button(table_file(key), (out / table_file(key)).read_bytes(), file_name=table_file(key),
                           mime="text/csv", key=f"dl_{key}")
    if summary["skipped"]:
        with st.expander("skipped samples"):
            st.json(summary["skipped"])
    files = [("summary.json", "application/json"), ("per_image.jsonl", "application/json"),
             ("tables.md", "text/markdown"), ("objects.csv", "text/csv"), ("false_positives.csv", "text/csv")]
    coco = out / "coco"
    if coco.is_dir():
        files += [(f"coco/{p.name}", "application/json") for p in sorted(coco.glob("*.json"))]
    files = [(f, m) for f, m in files if (out / f).is_file()]
    st.subheader("Downloads")
    cols = st.columns(3)
    for k, (f, mime) in enumerate(files):
        cols[k % 3].download_button(f, (out / f).read_bytes(), file_name=Path(f).name, mime=mime,
                                    key=f"dl_file_{f}")
    if coco.is_dir():
        st.caption("coco/instances_gt.json is the ground truth in COCO format and coco/results_*.json each model's "
                   "detections: pycocotools' COCOeval on them gives the tables above.")
