"""fapn evaluate for detectors: oracle detectors built from the ground truth (100 everywhere), a degraded one
(AP_S falls, only-B objects), resume after an interruption, skipped samples, COCO files written, and a real
(random, tiny) Mask R-CNN pair through the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fapn_core.data import coco as C
from fapn_core.data import open_dataset
from fapn_core.data.instances import objects_from_maps, panoptic_semantic_target
from fapn_core.evaluation import EvaluationInterrupted, evaluate
from fapn_core.models.rcnn.detector import DetectionResult

SPEC = "synthetic:n=4,seed=2,size=96x160"


class Oracle:
    """A detector that returns the ground truth (optionally without small objects) of the sample it is shown."""

    def __init__(self, dataset, task: str, drop_small: bool = False) -> None:
        self.ds, self.task, self.drop_small = dataset, task, drop_small
        self.things = list(dataset.thing_classes)
        self.stuff = [c for c in range(dataset.num_classes) if c not in self.things]
        self.by_image = {dataset[i]["image"].tobytes(): i for i in range(len(dataset))}

    def predict(self, image, amp=False):
        s = self.ds[self.by_image[np.asarray(image).tobytes()]]
        o = objects_from_maps(s["label"], s["instances"], self.things)
        keep = np.ones(len(o), bool) if not self.drop_small else o.areas >= 32**2
        h, w = s["label"].shape
        res = DetectionResult(
            (h, w), torch.as_tensor(o.boxes[keep]), torch.linspace(0.99, 0.5, int(keep.sum())),
            torch.as_tensor([self.things.index(int(c)) for c in o.classes[keep]], dtype=torch.int64),
            masks=torch.as_tensor(o.masks[keep]) if self.task != "detection" else None)
        if self.task == "panoptic":
            pan = np.zeros((h, w), np.int32)
            info = []
            for k in np.flatnonzero(keep):
                pan[o.masks[k]] = len(info) + 1
                info.append({"id": len(info) + 1, "isthing": True, "category_id": self.things.index(int(o.classes[k])),
                             "score": 0.9})
            for j, c in enumerate(self.stuff, start=1):
                m = s["label"] == c
                if m.any():
                    pan[m] = len(info) + 1
                    info.append({"id": len(info) + 1, "isthing": False, "category_id": j})
            sem = panoptic_semantic_target(s["label"], self.things, self.stuff)
            sem[sem == 255] = 0
            res.sem_seg = torch.nn.functional.one_hot(torch.as_tensor(sem), len(self.stuff) + 1).permute(2, 0, 1).float()
            res.panoptic_seg, res.segments_info = torch.as_tensor(pan), info
        return res


class Entry:
    def __init__(self, label, model, task, n_things, n_stuff):
        self.label, self.model = label, model
        self.card = {"name": label, "task": task, "classes": [f"t{i}" for i in range(n_things)],
                     "thing_category_ids": None}
        if task == "panoptic":
            self.card.update(stuff_classes=["things"] + [f"s{i}" for i in range(n_stuff)], stuff_category_ids=None)

    num_params = 1000


def entries(ds, task, drop_small_a=False):
    n_st = ds.num_classes - len(ds.thing_classes)
    return [Entry("A", Oracle(ds, task, drop_small=drop_small_a), task, len(ds.thing_classes), n_st),
            Entry("B", Oracle(ds, task), task, len(ds.thing_classes), n_st)]


@pytest.fixture(scope="module")
def ds():
    return open_dataset(SPEC)


def test_oracle_panoptic_is_100_everywhere_and_files_round_trip(ds, tmp_path):
    r = evaluate(entries(ds, "panoptic"), ds, tmp_path, progress=False)
    for t in ("box_ap", "mask_ap", "boundary_ap"):
        for row in r.tables[t]:
            assert row["AP"] == 100.0 and row["AP50"] == 100.0 and row["AP_S"] == 100.0, (t, row)
    for row in r.tables["panoptic"]:
        assert row["PQ"] == 100.0 and row["PQ_th"] == 100.0 and row["PQ_st"] == 100.0
    assert r.tables["semantic_ablation"][0]["mIoU"] == 100.0
    assert all(x.outcome == "both_hit" and x.iou_a == 1.0 and x.boundary_iou_b == 1.0
               for x in r.objects["A__vs__B"])
    assert not r.false_positives["A"]
    gt = C.read_instances(tmp_path / "coco" / "instances_gt.json")
    res = C.read_results(tmp_path / "coco" / "results_B.json", gt, need_masks=True)
    assert len(res) == sum(1 for a in gt["annotations"] if not a["iscrowd"])
    _, pans = C.read_panoptic(tmp_path / "coco" / "panoptic_B.json", tmp_path / "coco" / "panoptic_B")
    assert len(pans) == len(ds)
    md = (tmp_path / "tables.md").read_text()
    assert "## Box AP" in md and "## Panoptic quality" in md and "PQ_th" in md
    per_image = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert len(per_image) == len(ds) and per_image[0]["models"]["B"]["segm"]["AP"] == 100.0


def test_degraded_detector_moves_ap_s_and_objects_table_agrees(ds, tmp_path):
    r = evaluate(entries(ds, "instance", drop_small_a=True), ds, tmp_path, progress=False)
    a, b = r.coco["A"]["segm"], r.coco["B"]["segm"]
    assert a.stats["AP_S"] == 0.0 and b.stats["AP_S"] == 1.0 and a.stats["AP_M"] == b.stats["AP_M"] == 1.0
    recs = r.objects["A__vs__B"]
    small = [x for x in recs if x.size == "small"]
    assert small and all(x.outcome == "recovered" for x in small)
    assert all(x.outcome == "both_hit" for x in recs if x.size != "small")
    row_b = next(x for x in r.tables["objects"] if x["method"] == "B")
    # the by-size table and the per-object rows are separate files (the second does not overwrite the first)
    by_size = list(csv.DictReader(open(tmp_path / "objects_by_size.csv")))
    per_object = list(csv.DictReader(open(tmp_path / "objects.csv")))
    assert [x["method"] for x in by_size] == [x["method"] for x in r.tables["objects"]]
    assert len(per_object) == sum(len(v) for v in r.objects.values()) and "object_id" in per_object[0]
    assert row_b["only_B"] == len(small) and row_b["only_A"] == 0
    # recall at IoU 0.5 per size bin and class from the table = COCO's
    for size in ("small", "medium"):
        for c, v in a.recall50[size].items():
            rs = [x for x in recs if x.size == size and x.class_id == c]
            if rs:
                assert np.mean([x.hit_a for x in rs]) == pytest.approx(v)
    assert "mask_ap" in r.tables and "panoptic" not in r.tables


def test_resume_gives_the_same_numbers_and_skips_are_reported(ds, tmp_path):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(EvaluationInterrupted):
        evaluate(entries(ds, "instance", drop_small_a=True), ds, tmp_path / "r", progress=False, cancel=cancel,
                 snapshot_every=1)
    resumed = evaluate(entries(ds, "instance", drop_small_a=True), ds, tmp_path / "r", progress=False)
    straight = evaluate(entries(ds, "instance", drop_small_a=True), ds, tmp_path / "s", progress=False)
    assert resumed.tables == straight.tables and resumed.n_images == len(ds)

    class Broken:
        def __init__(self, base):
            self.base = base
            self.thing_classes, self.class_names = base.thing_classes, base.class_names
            self.num_classes, self.ignore_index = base.num_classes, base.ignore_index

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            if i == 1:
                raise OSError("unreadable sample")
            return self.base[i]

    r = evaluate(entries(ds, "detection"), Broken(ds), tmp_path / "b", progress=False)
    assert r.n_images == len(ds) - 1 and r.skipped[0]["index"] == 1 and "unreadable" in r.skipped[0]["error"]
    assert list(r.tables) == ["box_ap", "objects"]


def test_mixing_semantic_and_detectors_is_refused(ds, tmp_path):
    from fapn_core.evaluation import ModelEntry
    from fapn_core.models.zoo import build_model

    sem = ModelEntry("sem", build_model("fpn_r18_semfpn", num_classes=10, neck_channels=16), {"task": "semantic"})
    with pytest.raises(ValueError, match="cannot evaluate semantic models with detectors"):
        evaluate([sem, *entries(ds, "instance")], ds, tmp_path, progress=False)
    bad = entries(ds, "instance")
    bad[1].card["classes"] = ["x"]
    with pytest.raises(ValueError, match="thing_category_ids"):
        evaluate(bad, ds, tmp_path / "x", progress=False)


def test_cli_evaluates_random_maskrcnn_pair_and_exports_coco(tmp_path):
    from fapn_core.checkpoints import make_card, save_native
    from fapn_core.cli import main
    from fapn_core.models.zoo import build_model

    torch.manual_seed(0)
    paths = []
    for neck in ("fpn", "fapn"):
        m = build_model(f"{neck}_r18_maskrcnn", num_classes=4, neck_channels=32, box_fc_dim=64, mask_conv_dims=32)
        paths.append(str(save_native(m, tmp_path / f"{neck}.safetensors", make_card(m, name=neck))))
    spec = "synthetic:n=2,seed=2,size=64x96"
    assert main(["evaluate", "--models", *paths, "--data", spec, "--out", str(tmp_path / "ev"), "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["tasks"] == {"fpn": "instance", "fapn": "instance"}
    assert {"box_ap", "mask_ap", "boundary_ap", "objects"} <= set(summary["tables"])
    assert main(["make-synthetic", str(tmp_path / "syn"), "--n", "2", "--size", "64x96", "--coco", "--panoptic"]) == 0
    gt = C.read_instances(tmp_path / "syn" / "coco" / "instances.json")
    assert len(gt["images"]) == 2
    C.read_panoptic(tmp_path / "syn" / "coco" / "panoptic.json", tmp_path / "syn" / "coco" / "panoptic")
