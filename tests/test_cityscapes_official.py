"""Cityscapes numbers against the official evaluator (cityscapesScripts) as the oracle.

Twelve generated Cityscapes-style scenes (``cityscapes_scenes``): all 19 classes, void label ids, thing
instances from a few pixels to thousands, group regions, caravan / trailer. Class IoU, mIoU, class iIoU,
mean iIoU and the confusion matrix must equal the official values through ``fapn evaluate --predictions``,
through models, and through the metrics API.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cityscapesscripts")

from cityscapes_scenes import (  # noqa: E402
    GROUP_IDS, IGNORED_THING_IDS, VOID_IDS, official, to_train_ids, write_cityscapes, write_predictions,
)
from fapn_core import metrics as M  # noqa: E402
from fapn_core.checkpoints import make_card, save_native  # noqa: E402
from fapn_core.cli import main  # noqa: E402
from fapn_core.data import open_dataset  # noqa: E402
from fapn_core.data.cityscapes import (  # noqa: E402
    LABEL_ID_TO_TRAIN_ID, THING_CLASSES, TRAIN_ID_TO_LABEL_ID, cityscapes_card_fields, official_instances,
    train_ids_to_label_ids,
)
from fapn_core.data.palettes import CITYSCAPES_CLASSES  # noqa: E402
from fapn_core.evaluation import ModelEntry, evaluate, load_models  # noqa: E402
from fapn_core.models.zoo import build_model  # noqa: E402

TOL = 1e-9


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    base = tmp_path_factory.mktemp("cityscapes")
    root = base / "cs"
    made = write_cityscapes(root, n=12, seed=0)
    bases, (pa, pb) = made["bases"], made["preds"]
    dirs = {
        "A": write_predictions(base / "A", bases, pa),  # detectron2 naming, label ids
        "B": write_predictions(base / "B", bases, pb, suffix="_leftImg8bit", city_dirs=True),  # official naming
        "At": write_predictions(base / "At", bases, pa, train_ids=True),  # train ids, 255 = void
    }
    return {"root": root, "base": base, "bases": bases, "preds": {"A": pa, "B": pb}, "dirs": dirs,
            "official": {k: official(root, dirs[k]) for k in ("A", "B")}}


def _assert_equals_official(off: dict, iou: dict, iiou: dict, miou: float, miiou: float) -> None:
    for name in CITYSCAPES_CLASSES:
        o, v = off["classScores"][name], iou[name]
        assert (np.isnan(o) and v is None) or abs(o - v) <= TOL, (name, o, v)
    things = [CITYSCAPES_CLASSES[c] for c in THING_CLASSES]
    assert sorted(iiou) == sorted(things)
    for name in things:
        o, v = off["classInstScores"][name], iiou[name]
        assert (np.isnan(o) and v is None) or abs(o - v) <= TOL, (name, o, v)
    assert abs(off["averageScoreClasses"] - miou) <= TOL
    assert abs(off["averageScoreInstClasses"] - miiou) <= TOL


def _official_confusion(off: dict) -> tuple[np.ndarray, np.ndarray]:
    """19x19 confusion (trainIds) and per-class void predictions from the official 34x34 matrix."""
    cm = np.asarray(off["confMatrix"], np.int64)
    ids = [TRAIN_ID_TO_LABEL_ID[t] for t in range(19)]
    void_cols = [lid for lid in range(34) if lid not in LABEL_ID_TO_TRAIN_ID]
    return cm[np.ix_(ids, ids)], cm[np.ix_(ids, void_cols)].sum(1)


def test_generated_scenes_cover_what_the_evaluator_distinguishes(scenes):
    labs, insts = [], []
    for city, b in scenes["bases"]:
        gt = scenes["root"] / "gtFine" / "val" / city
        labs.append(np.asarray(Image.open(gt / f"{b}_gtFine_labelIds.png")))
        insts.append(np.asarray(Image.open(gt / f"{b}_gtFine_instanceIds.png")).astype(np.int64))
    lab, inst = np.concatenate([x.ravel() for x in labs]), np.concatenate([x.ravel() for x in insts])
    assert set(LABEL_ID_TO_TRAIN_ID) <= set(np.unique(lab))  # all 19 evaluated classes
    assert set(VOID_IDS) <= set(np.unique(lab))
    assert set(GROUP_IDS) <= set(np.unique(inst))  # group regions: instance id = labelId
    assert set(IGNORED_THING_IDS) <= set(np.unique(inst // 1000))  # caravan, trailer instances
    areas = np.concatenate([np.unique(x[x >= 24000], return_counts=True)[1] for x in insts])  # per image
    assert len(areas) > 100 and areas.min() <= 10 and areas.max() >= 2000
    evaluated = list(LABEL_ID_TO_TRAIN_ID)  # void label ids predicted on labelled pixels:
    voids = sum(int((np.isin(p, VOID_IDS) & np.isin(g, evaluated)).sum()) for p, g in zip(scenes["preds"]["A"], labs))
    assert voids > 100
    _, void_a = _official_confusion(scenes["official"]["A"])
    assert void_a.sum() > 100  # ... and the official evaluator counts them (as false negatives)


def test_evaluate_saved_predictions_equals_the_official_evaluator(scenes, tmp_path):
    d = scenes["dirs"]
    rc = main(["evaluate", "--data", f"cityscapes:{scenes['root']}", "--predictions", f"A={d['A']}",
               f"B={d['B']}", f"At={d['At']}", "--out", str(tmp_path)])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["n_images"] == 12 and s["skipped"] == []
    assert s["thing_classes"] == list(THING_CLASSES)
    assert s["predictions"]["A"]["ids"] == "labelIds" and s["predictions"]["B"]["ids"] == "labelIds"
    assert s["predictions"]["At"]["ids"] == "trainIds"  # decided from the files (255 = void)
    for label, key in (("A", "A"), ("B", "B"), ("At", "A")):
        pair = "A__vs__B" if label in ("A", "B") else f"A__vs__{label}"
        side = "b" if label != "A" else "a"
        summ = s["comparisons"][pair]["summary"][side]
        pc = s["per_class"][label]
        _assert_equals_official(scenes["official"][key], pc["iou"], pc["iiou"], summ["miou"], summ["miiou"])
    assert s["tables"]["ablation"][0]["params_M"] is None
    assert {r["method"] for r in s["tables"]["boundary"]} == {"A", "B", "At"}
    assert "## Prediction files" in (tmp_path / "tables.md").read_text()


def test_confusion_and_void_counts_equal_the_official_matrix(scenes, tmp_path):
    ds = open_dataset(f"cityscapes:{scenes['root']}")
    from fapn_core.evaluation import load_predictions

    report = evaluate(load_predictions([f"A={scenes['dirs']['A']}", f"B={scenes['dirs']['B']}"], ds), ds,
                      tmp_path, progress=False)
    comp = report.comparisons["A__vs__B"]
    for side, key in (("a", "A"), ("b", "B")):
        cm, void = _official_confusion(scenes["official"][key])
        r = getattr(comp, side)
        assert np.array_equal(r.confusion, cm) and np.array_equal(r.void, void)


def test_metrics_api_equals_the_official_evaluator_and_group_regions(scenes):
    """compare + ComparisonAccumulator on raw files; raw instanceIds count group regions, the official rule not."""
    acc = M.ComparisonAccumulator(19, class_names=CITYSCAPES_CLASSES, avg_instance_size=M.CITYSCAPES_AVG_INSTANCE_SIZE)
    raw_acc = M.ComparisonAccumulator(19, class_names=CITYSCAPES_CLASSES,
                                      avg_instance_size=M.CITYSCAPES_AVG_INSTANCE_SIZE)
    kw = dict(class_names=CITYSCAPES_CLASSES, thing_classes=THING_CLASSES,
              avg_instance_size=M.CITYSCAPES_AVG_INSTANCE_SIZE, allow_void=True, keep_maps=False)
    for (city, b), pa, pb in zip(scenes["bases"], scenes["preds"]["A"], scenes["preds"]["B"]):
        gt_dir = scenes["root"] / "gtFine" / "val" / city
        gt = to_train_ids(np.asarray(Image.open(gt_dir / f"{b}_gtFine_labelIds.png")))
        raw = np.asarray(Image.open(gt_dir / f"{b}_gtFine_instanceIds.png")).astype(np.int32)
        a, bb = to_train_ids(pa), to_train_ids(pb)
        acc.add(M.compare(gt, a, bb, 19, instances=official_instances(raw), **kw), image=b)
        raw_acc.add(M.compare(gt, a, bb, 19, instances=raw, **kw), image=b)
    res, raw_res = acc.result(), raw_acc.result()
    for side, key in (("a", "A"), ("b", "B")):
        r = getattr(res, side)
        iou = {n: (None if np.isnan(v) else v) for n, v in zip(CITYSCAPES_CLASSES, r.iou)}
        iiou = {CITYSCAPES_CLASSES[c]: (None if np.isnan(r.iiou.iiou[c]) else r.iiou.iiou[c]) for c in r.iiou.classes}
        _assert_equals_official(scenes["official"][key], iou, iiou, r.miou, r.iiou.mean)
    # the raw ids hold group regions (26 = cars, 24 = persons, 33 = bicycles): they become extra "instances"
    assert len(raw_res.objects) > len(res.objects)
    assert abs(raw_res.a.iiou.mean - scenes["official"]["A"]["averageScoreInstClasses"]) > 1e-3


def test_iiou_without_the_dataset_conventions_differs(scenes, tmp_path):
    """What the lab reported before: no thing classes (all 19 in the mean) and the data's own mean sizes."""
    ds = open_dataset(f"cityscapes:{scenes['root']}")
    from fapn_core.evaluation import load_predictions

    class Plain:  # the dataset without its evaluation conventions
        num_classes, class_names, label_id_to_class = ds.num_classes, ds.class_names, ds.label_id_to_class

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

        def sample_name(self, i):
            return ds.sample_name(i)

    off = scenes["official"]["A"]["averageScoreInstClasses"]
    fixed = evaluate(load_predictions([f"A={scenes['dirs']['A']}"], ds), ds, tmp_path / "fixed", progress=False)
    old = evaluate(load_predictions([f"A={scenes['dirs']['A']}"], Plain()), Plain(), tmp_path / "old",
                   progress=False)
    assert abs(fixed.model_result("A").iiou.mean - off) <= TOL
    assert abs(old.model_result("A").iiou.mean - off) > 0.05


def _bases(ds) -> list[tuple[str, str]]:
    """(city, base) of the dataset's samples, in its order (sorted by city, unlike generation order)."""
    return [(ds.sample_name(i).split("_")[0], ds.sample_name(i)) for i in range(len(ds))]


def _cityscapes_model(tmp_path: Path) -> str:
    torch.manual_seed(1)
    m = build_model("fpn_r18_semfpn", num_classes=19, neck_channels=32, head_conv_dims=64).eval()
    with torch.no_grad():  # spread the predictions over the classes (a fresh head predicts one class)
        m.head.predictor.bias.copy_(torch.linspace(-1, 1, 19))
    return str(save_native(m, tmp_path / "fpn_cs.safetensors", make_card(m, **cityscapes_card_fields())))


def test_models_equal_the_official_evaluator(scenes, tmp_path):
    """fapn evaluate --models on Cityscapes vs the official evaluator on the same model's label-id PNGs."""
    ckpt = _cityscapes_model(tmp_path)
    (model_entry,) = load_models([ckpt])
    assert model_entry.card["thing_classes"] == list(THING_CLASSES)
    assert model_entry.card["avg_instance_size"] == M.CITYSCAPES_AVG_INSTANCE_SIZE
    ds = open_dataset(f"cityscapes:{scenes['root']}")
    model = model_entry.model
    preds = [train_ids_to_label_ids(model.predict(ds[i]["image"]).argmax(0).numpy()) for i in range(len(ds))]
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) >= 8  # not a constant prediction
    pred_dir = write_predictions(tmp_path / "model_pngs", _bases(ds), preds)
    off = official(scenes["root"], pred_dir)
    assert off["averageScoreInstClasses"] > 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--models", ckpt, "--data", f"cityscapes:{scenes['root']}", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    summ = s["comparisons"]["fpn_r18_semfpn__vs__fpn_r18_semfpn"]["summary"]["a"]
    pc = s["per_class"]["fpn_r18_semfpn"]
    _assert_equals_official(off, pc["iou"], pc["iiou"], summ["miou"], summ["miiou"])


class NearestColour(torch.nn.Module):
    """A 1x1-conv "model" that classifies each pixel by the nearest class colour of the generated scenes."""

    def __init__(self) -> None:
        super().__init__()
        lut = np.random.default_rng(7).integers(0, 256, (256, 3)).astype(np.float64)  # cityscapes_scenes._colour
        cols = torch.tensor(lut[[TRAIN_ID_TO_LABEL_ID[t] for t in range(19)]], dtype=torch.float64)
        self.conv = torch.nn.Conv2d(3, 19, 1).double()
        with torch.no_grad():
            self.conv.weight.copy_(2 * cols[:, :, None, None])
            self.conv.bias.copy_(-(cols ** 2).sum(1))
        self.num_classes = 19

    def predict(self, image: np.ndarray, amp: bool = False) -> torch.Tensor:
        x = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]
        return self.conv(x)[0]


def test_model_entries_with_a_good_model_equal_the_official_evaluator(scenes, tmp_path):
    """The evaluate() model path on predictions that find most objects (iIoU well above 0)."""
    model = NearestColour()
    ds = open_dataset(f"cityscapes:{scenes['root']}")
    preds = [train_ids_to_label_ids(model.predict(ds[i]["image"]).argmax(0).numpy()) for i in range(len(ds))]
    off = official(scenes["root"], write_predictions(tmp_path / "pngs", _bases(ds), preds))
    assert off["averageScoreInstClasses"] > 0.5
    report = evaluate([ModelEntry("nearest", model, {})], ds, tmp_path / "eval", progress=False)
    r = report.model_result("nearest")
    iou = {n: (None if np.isnan(v) else v) for n, v in zip(CITYSCAPES_CLASSES, r.iou)}
    iiou = {CITYSCAPES_CLASSES[c]: (None if np.isnan(r.iiou.iiou[c]) else r.iiou.iiou[c]) for c in r.iiou.classes}
    _assert_equals_official(off, iou, iiou, r.miou, r.iiou.mean)


def test_bad_prediction_files_are_reported_and_the_rest_evaluated(scenes, tmp_path):
    src = scenes["dirs"]["A"]
    bad = tmp_path / "bad"
    bad.mkdir()
    files = sorted(src.glob("*.png"))
    for f in files[3:]:
        (bad / f.name).write_bytes(f.read_bytes())
    # files[0]: missing; files[1]: too small; files[2]: RGB; [3]: an id outside 0..33; an extra file; an ambiguous one
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(bad / files[1].name)
    Image.fromarray(np.zeros((128, 256, 3), np.uint8)).save(bad / files[2].name)
    arr = np.asarray(Image.open(files[3])).copy()
    arr[0, 0] = 40
    Image.fromarray(arr).save(bad / files[3].name)
    Image.fromarray(arr).save(bad / "munich_000000_000001_pred.png")
    amb = files[4].name.replace("_pred.png", "_leftImg8bit.png")
    (bad / amb).write_bytes(files[4].read_bytes())
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", f"cityscapes:{scenes['root']}", "--predictions", f"A={scenes['dirs']['A']}",
               f"X={bad}", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    kinds = sorted(k["kind"] for k in s["skipped"])
    assert kinds == ["ambiguous", "missing", "size", "unreadable", "values"]
    assert s["n_images"] == 7
    rep = s["predictions"]["X"]
    assert (rep["missing"], rep["ambiguous"], rep["extra"], rep["size"], rep["unreadable"], rep["values"]) == \
        (1, 1, 1, 1, 1, 1)
    assert rep["extra_files"] == ["munich_000000_000001_pred.png"]
    assert "[40]" in rep["values_files"][0] and "mode 'RGB'" in rep["unreadable_files"][0]
    assert "is 20x10, the image is 256x128" in rep["size_files"][0]


def test_prediction_folder_errors(scenes, tmp_path, capsys):
    root = f"cityscapes:{scenes['root']}"
    assert main(["evaluate", "--data", root, "--out", str(tmp_path / "o")]) == 2
    assert "give --models and/or --predictions" in capsys.readouterr().err
    assert main(["evaluate", "--data", root, "--predictions", f"A={tmp_path / 'nope'}", "--out", str(tmp_path)]) == 2
    assert "prediction folder of A not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty" / "other.png")
    assert main(["evaluate", "--data", root, "--predictions", f"A={tmp_path / 'empty'}", "--out", str(tmp_path)]) == 2
    assert "matches a sample of the dataset" in capsys.readouterr().err
    d = scenes["dirs"]["A"]
    assert main(["evaluate", "--data", root, "--predictions", f"A={d}", f"A={d}", "--out", str(tmp_path)]) == 2
    assert "duplicate label 'A'" in capsys.readouterr().err
    # only ids both formats share: auto cannot decide, an explicit format can
    amb = tmp_path / "amb"
    amb.mkdir()
    for f in sorted(d.glob("*.png")):
        Image.fromarray(np.full((128, 256), 7, np.uint8)).save(amb / f.name)
    assert main(["evaluate", "--data", root, "--predictions", f"A={amb}", "--out", str(tmp_path / "x")]) == 2
    assert "cannot tell whether" in capsys.readouterr().err
    out = tmp_path / "y"
    assert main(["evaluate", "--data", root, "--predictions", f"A={amb}", "--prediction-ids", "labelIds",
                 "--out", str(out)]) == 0
    road = json.loads((out / "summary.json").read_text())["per_class"]["A"]["iou"]
    assert road["road"] > 0 and road["sky"] == 0.0  # label id 7 = road everywhere
