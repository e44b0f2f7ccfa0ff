"""Instance metrics cost vs inference: 500 synthetic street scenes (~15 objects each), two detectors.

Metric time is measured on the real code path (``evaluate_detectors``) with predictions that look like a trained
Mask R-CNN's: every ground-truth object found with a jittered mask most of the time, plus false positives, up to
``--dets`` detections per image with masks. Inference time is the median of the two R18 Mask R-CNN models
(FPN and FaPN, random weights, 256x512) on ``--infer-images`` scenes, times the number of predictions. It also
compares faster-coco-eval with pycocotools on the same predictions (agreement and time).

    .venv/bin/python benchmarks/bench_metrics_instances.py [--images 500] [--infer-images 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from fapn_core.data import open_dataset
from fapn_core.data.instances import objects_from_maps
from fapn_core.evaluation import RunSettings, evaluate_detectors
from fapn_core.metrics.detection import STAT_NAMES, coco_evaluate
from fapn_core.models.rcnn.detector import DetectionResult
from fapn_core.models.zoo import build_model


class Synthetic:
    """Detections for a scene: GT objects kept with p=0.85, masks shifted by up to ``jitter`` px, plus FPs."""

    task = "instance"

    def __init__(self, ds, seed: int, jitter: int, dets: int) -> None:
        self.ds, self.seed, self.jitter, self.dets = ds, seed, jitter, dets
        self.things = list(ds.thing_classes)
        self.index = {}

    def predict(self, image, amp=False):
        i = self._find(image)
        s = self.ds[i]
        rng = np.random.default_rng((self.seed, i))
        o = objects_from_maps(s["label"], s["instances"], self.things)
        h, w = s["label"].shape
        masks, cls = [], []
        for k in range(len(o)):
            if rng.random() < 0.85:
                dy, dx = rng.integers(-self.jitter, self.jitter + 1, 2)
                masks.append(np.roll(o.masks[k], (int(dy), int(dx)), (0, 1)))
                cls.append(self.things.index(int(o.classes[k])))
        while len(masks) < self.dets:  # false positives: random boxes
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            m = np.zeros((h, w), bool)
            m[y:y + int(rng.integers(4, 40)), x:x + int(rng.integers(4, 40))] = True
            masks.append(m)
            cls.append(int(rng.integers(0, len(self.things))))
        masks = [m for m in masks if m.any()]
        mk = np.stack(masks)
        boxes = np.array([[np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0],
                           np.flatnonzero(m.any(0))[-1] + 1, np.flatnonzero(m.any(1))[-1] + 1] for m in masks], float)
        scores = np.sort(rng.random(len(masks)))[::-1].copy()
        return DetectionResult((h, w), torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores),
                               torch.as_tensor(cls[:len(masks)]), masks=torch.as_tensor(mk))

    def _find(self, image):
        key = hash(np.asarray(image)[::16, ::16].tobytes())
        if not self.index:
            for j in range(len(self.ds)):
                self.index[hash(self.ds[j]["image"][::16, ::16].tobytes())] = j
        return self.index[key]


class Entry:
    def __init__(self, label, model):
        self.label, self.model, self.num_params = label, model, None
        self.card = {"name": label, "task": "instance", "classes": ["pole", "sign", "person", "car"],
                     "thing_category_ids": None}


def inference_ms(n: int, size: tuple[int, int]) -> dict[str, float]:
    ds = open_dataset(f"synthetic:n={n},seed=2,size={size[0]}x{size[1]}")
    out = {}
    for neck in ("fpn", "fapn"):
        torch.manual_seed(0)
        m = build_model(f"{neck}_r18_maskrcnn", num_classes=4).eval()
        m.predict(ds[0]["image"])  # warm-up
        ts = []
        for i in range(n):
            t = time.perf_counter()
            m.predict(ds[i]["image"])
            ts.append((time.perf_counter() - t) * 1000)
        out[neck] = statistics.median(ts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--infer-images", type=int, default=8)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = (256, 512)
    ds = open_dataset(f"synthetic:n={args.images},seed=2,size={size[0]}x{size[1]}")
    n_obj = [len(objects_from_maps(ds[i]["label"], ds[i]["instances"], ds.thing_classes)) for i in range(min(50, len(ds)))]
    print(f"# {args.images} scenes {size[0]}x{size[1]}, {statistics.mean(n_obj):.1f} objects per scene (first 50), "
          f"up to {args.dets} detections per image, torch threads {args.threads}")
    models = [Entry("A", Synthetic(ds, 1, 3, args.dets)), Entry("B", Synthetic(ds, 2, 1, args.dets))]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rep = evaluate_detectors(models, ds, tmp, RunSettings(progress=False, snapshot_every=50))
        wall = time.perf_counter() - t
        import json
        from pathlib import Path

        gt = json.loads((Path(tmp) / "coco" / "instances_gt.json").read_text())
        res = {k: json.loads((Path(tmp) / "coco" / f"results_{k}.json").read_text()) for k in ("A", "B")}
    metric_s = rep.timing["metrics_s"]
    print(f"metrics (evaluate_detectors, everything but predict): {metric_s:.1f} s for {args.images} images x 2 "
          f"models ({1000 * metric_s / args.images:.1f} ms per image); whole run {wall:.1f} s")
    agree = {}
    for t in ("bbox", "segm"):
        ts = {}
        for b in ("faster", "pycocotools"):
            t0 = time.perf_counter()
            sc = {k: coco_evaluate(gt, res[k], t, backend=b) for k in ("A", "B")}
            ts[b] = time.perf_counter() - t0
            agree[(t, b)] = sc
        diff = max(abs(agree[(t, "faster")][k].stats[s] - agree[(t, "pycocotools")][k].stats[s])
                   for k in ("A", "B") for s in STAT_NAMES)
        print(f"{t}: faster-coco-eval {ts['faster']:.2f} s, pycocotools {ts['pycocotools']:.2f} s (2 models); "
              f"max |difference| over the 12 stats {diff:.2e}")
    t0 = time.perf_counter()
    for k in ("A", "B"):
        coco_evaluate(gt, res[k], "boundary")
    print(f"boundary AP (faster-coco-eval): {time.perf_counter() - t0:.2f} s (2 models)")
    for k in ("A", "B"):
        s = rep.coco[k]
        print(f"model {k}: box AP {100 * s['bbox'].stats['AP']:.2f}, mask AP {100 * s['segm'].stats['AP']:.2f}, "
              f"boundary AP {100 * s['boundary'].stats['AP']:.2f}, AP_S {100 * s['segm'].stats['AP_S']:.2f}")
    inf = inference_ms(args.infer_images, size)
    total_inf = args.images * sum(inf.values()) / 1000
    print(f"inference (R18 Mask R-CNN, median of {args.infer_images}): FPN {inf['fpn']:.0f} ms, FaPN "
          f"{inf['fapn']:.0f} ms per image -> {total_inf:.0f} s for {args.images} images x 2 models")
    print(f"metric time / inference time: {100 * metric_s / total_inf:.1f} %")


if __name__ == "__main__":
    main()
