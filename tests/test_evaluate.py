"""Dataset evaluation: numbers against an independent computation, resume, skipping, and DDP equivalence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fapn_core.checkpoints import make_card, save_native
from fapn_core.data import open_dataset
from fapn_core.evaluation import EvaluationInterrupted, ModelEntry, evaluate, load_models
from fapn_core.metrics import confusion_matrix, iou_from_confusion
from fapn_core.models.zoo import build_model

DATA = "synthetic:n=6,seed=5,size=64x128"


def _models(tmp_path: Path) -> list[str]:
    paths = []
    for i, name in enumerate(("fpn_r18_semfpn", "fapn_r18_semfpn")):
        torch.manual_seed(i)
        m = build_model(name, num_classes=10, neck_channels=32, head_conv_dims=64).eval()
        with torch.no_grad():  # make predictions vary across classes (a fresh head predicts one class)
            m.head.predictor.bias.copy_(torch.linspace(-1, 1, 10))
        p = save_native(m, tmp_path / f"{name}.safetensors", make_card(m))
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    return _models(tmp_path_factory.mktemp("models"))


def test_tables_match_an_independent_confusion(tmp_path, model_paths):
    models = load_models(model_paths)
    data = open_dataset(DATA)
    report = evaluate(models, data, tmp_path / "eval", progress=False)
    assert report.labels == ["fpn_r18_semfpn", "fapn_r18_semfpn"] and report.n_images == 6
    for entry in models:
        cm = np.zeros((10, 10), np.int64)
        for i in range(len(data)):
            item = data[i]
            pred = entry.model.predict(item["image"]).argmax(0).numpy()
            cm += confusion_matrix(item["label"], pred, 10)
        miou = np.nanmean(iou_from_confusion(cm))
        row = next(r for r in report.tables["ablation"] if r["method"] == entry.label)
        assert row["mIoU"] == pytest.approx(100 * miou, abs=0.01)
        assert row["params_M"] == pytest.approx(entry.num_params / 1e6, abs=0.01)
    out = tmp_path / "eval"
    assert {p.name for p in out.iterdir()} >= {"per_image.jsonl", "summary.json", "tables.md", "ablation.csv",
                                              "boundary.csv", "small_objects.csv"}
    lines = (out / "per_image.jsonl").read_text().splitlines()
    assert [json.loads(ln)["index"] for ln in lines] == list(range(6))
    assert "| method | 3px | 5px | 8px | 12px | mean |" in (out / "tables.md").read_text()


def test_interrupted_evaluation_resumes_without_recomputing(tmp_path, model_paths):
    models = load_models(model_paths)
    data = open_dataset(DATA)
    full = evaluate(models, data, tmp_path / "full", progress=False)
    calls = {"n": 0}

    def cancel_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(EvaluationInterrupted, match="stopped after 3 of 6"):
        evaluate(models, data, tmp_path / "part", progress=False, snapshot_every=2, cancel=cancel_after_three)
    # a line written after the last snapshot but before the stop is dropped and recomputed on resume
    seen = []

    class Spy:
        def __init__(self, ds):
            self.ds, self.num_classes, self.class_names = ds, ds.num_classes, ds.class_names
            self.thing_classes = ds.thing_classes

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            seen.append(i)
            return self.ds[i]

    resumed = evaluate(models, Spy(data), tmp_path / "part", progress=False)
    assert seen == [3, 4, 5]
    assert resumed.tables == full.tables
    lines = (tmp_path / "part" / "per_image.jsonl").read_text().splitlines()
    assert sorted(json.loads(ln)["index"] for ln in lines) == list(range(6))


def test_unreadable_samples_are_skipped_and_reported(tmp_path, model_paths):
    models = load_models(model_paths)
    data = open_dataset(DATA)

    class Flaky:
        num_classes, class_names, thing_classes = data.num_classes, data.class_names, data.thing_classes

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            if i == 2:
                raise OSError("broken PNG: images/x.png")
            return data[i]

    report = evaluate(models, Flaky(), tmp_path / "e", progress=False)
    assert report.n_images == 5
    assert report.skipped == [{"index": 2, "error": "OSError: broken PNG: images/x.png"}]
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["skipped"][0]["index"] == 2


def test_class_count_mismatch_is_refused(tmp_path):
    m = build_model("fpn_r18_semfpn", num_classes=3, neck_channels=32, head_conv_dims=64).eval()
    with pytest.raises(ValueError, match="predicts 3 classes, the dataset has 10"):
        evaluate([ModelEntry("m", m, {})], open_dataset(DATA), tmp_path, progress=False)


def test_torchrun_two_processes_give_the_same_numbers(tmp_path, model_paths):
    single = tmp_path / "single"
    cmd = [sys.executable, "-m", "fapn_core.cli", "evaluate", "--models", *model_paths, "--data", DATA,
           "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*cmd, "--out", str(single)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = tmp_path / "ddp"
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "fapn_core.cli", *cmd[3:], "--out", str(ddp)]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((single / "summary.json").read_text())
    b = json.loads((ddp / "summary.json").read_text())
    assert a["tables"] == b["tables"] and a["n_images"] == b["n_images"] == 6
    assert a["comparisons"] == b["comparisons"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ablation_table_script_means_seeds_and_reports_their_spread(tmp_path):
    import importlib.util

    script = Path(__file__).parents[1] / "scripts" / "ablation_table.py"
    spec = importlib.util.spec_from_file_location("ablation_table", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    necks = [neck for neck, _, _ in mod.ROWS]
    for seed, bump in ((0, 0.0), (1, 2.0)):
        tables = {"ablation": [], "boundary": [], "small_objects": []}
        for i, neck in enumerate(necks):
            method = f"runs/ablation/seed{seed}/{neck}_r18_semfpn/{neck}_r18_semfpn.safetensors"
            tables["ablation"].append({"method": method, "params_M": 13.0 + i, "mIoU": 40.0 + i + bump,
                                       "boundary_IoU": 30.0, "iIoU": 20.0})
            tables["boundary"].append({"method": method, "mean": 33.0 + bump, "3px": 28.0})
            tables["small_objects"].append({"method": method, "small_IoU": 5.0})
        out = tmp_path / f"seed{seed}" / "eval"
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"tables": tables}))
    text = mod.main(tmp_path)
    fapn_row = next(line for line in text.splitlines() if line.startswith("| 5 | `fapn`"))
    # mIoU mean of 44 and 46, per-seed values, +4 over FPN's mean (41), the paper's 80.0
    assert "| 45.00 [44.0 / 46.0] |" in fapn_row and "| +4.00 | 80.0 |" in fapn_row
    spread = text.splitlines()[-1]
    assert spread.startswith("| | seed-to-seed spread")
    assert "2.00 (max 2.00)" in spread and "0.00 (max 0.00)" in spread
    with pytest.raises(SystemExit, match="no evaluated seeds"):
        mod.main(tmp_path / "nothing")


def test_saved_predictions_score_like_the_models_that_made_them(tmp_path, model_paths):
    """PNG class ids written from each model, read back with --predictions: the same tables and summaries."""
    from PIL import Image

    from fapn_core.evaluation import load_predictions

    models = load_models(model_paths)
    data = open_dataset(DATA)
    full = evaluate(models, data, tmp_path / "models", progress=False)
    specs = []
    for k, entry in enumerate(models):
        d = tmp_path / f"pngs{k}"
        d.mkdir()
        for i in range(len(data)):
            pred = entry.model.predict(data[i]["image"]).argmax(0).numpy().astype(np.uint8)
            Image.fromarray(pred).save(d / f"{data.sample_name(i)}_pred.png")
        specs.append(f"{entry.label}={d}")
    entries = load_predictions(specs, data)
    assert [e.predictions.ids for e in entries] == ["trainIds", "trainIds"]  # the dataset's class ids
    saved = evaluate(entries, data, tmp_path / "saved", progress=False)
    assert saved.comparisons.keys() == full.comparisons.keys()
    for key in full.comparisons:
        assert saved.comparisons[key].summary() == full.comparisons[key].summary()
    strip = [{k: v for k, v in r.items() if k != "params_M"} for r in full.tables["ablation"]]
    assert [{k: v for k, v in r.items() if k != "params_M"} for r in saved.tables["ablation"]] == strip
    assert saved.tables["boundary"] == full.tables["boundary"]
    assert saved.tables["small_objects"] == full.tables["small_objects"]
    assert all(r["params_M"] is None for r in saved.tables["ablation"])
    # the synthetic dataset's thing classes are used, and no standard instance sizes exist for it
    s = json.loads((tmp_path / "saved" / "summary.json").read_text())
    assert s["thing_classes"] == [5, 7, 8, 9] and s["avg_instance_size"] is None
    assert s["predictions"][models[0].label]["matched"] == 6


def test_saved_predictions_and_models_together_on_the_command_line(tmp_path, model_paths):
    from PIL import Image

    from fapn_core.cli import main

    data = open_dataset(DATA)
    d = tmp_path / "pngs"
    d.mkdir()
    for i in range(len(data) - 1):  # the last one is missing
        Image.fromarray(data[i]["label"].astype(np.uint8)).save(d / f"{data.sample_name(i)}.png")
    out = tmp_path / "out"
    assert main(["evaluate", "--models", model_paths[0], "--predictions", f"oracle={d}", "--data", DATA,
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["models"] == ["fpn_r18_semfpn", "oracle"] and s["n_images"] == 5
    assert s["skipped"][0]["kind"] == "missing" and s["skipped"][0]["index"] == 5
    oracle = next(r for r in s["tables"]["ablation"] if r["method"] == "oracle")
    assert oracle["mIoU"] == 100.0 and oracle["boundary_IoU"] == 100.0


def test_alignment_table_equals_the_per_image_library_numbers(tmp_path, model_paths):
    from fapn_core.alignment import AlignmentAccumulator, align_level
    from fapn_core.introspect import predict_with_captures

    models = load_models(model_paths)
    data = open_dataset(DATA)
    report = evaluate(models, data, tmp_path / "ev", limit=3, progress=False, alignment=True)
    rows = report.tables["alignment"]
    assert {r["method"] for r in rows} == {"fapn_r18_semfpn"}  # FPN has no FAM
    acc = AlignmentAccumulator()
    for i in range(3):
        s = data[i]
        fams = predict_with_captures(models[1].model, s["image"], ("offsets", "fam_features")).captures.fam
        acc.add(align_level(f, gt=s["label"]) for f in fams.values())
    expected = acc.rows()
    assert [r["level"] for r in rows] == [r["level"] for r in expected] == ["p2", "p3", "p4"]
    for ours, ref in zip(rows, expected):
        for k in ("epe", "cosine", "learned_px", "sim_before", "sim_after", "confident"):
            if k in ref:
                assert ours[k] == pytest.approx(ref[k], abs=1e-4, nan_ok=True), k
    md = (tmp_path / "ev" / "tables.md").read_text()
    assert "Does the FAM align?" in md and (tmp_path / "ev" / "alignment.csv").is_file()
    # the semantic tables are the same with and without the alignment pass
    plain = evaluate(models, data, tmp_path / "plain", limit=3, progress=False)
    assert plain.tables["ablation"] == report.tables["ablation"]
