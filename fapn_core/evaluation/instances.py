"""The instance evaluator: detectors (Faster R-CNN, Mask R-CNN, Panoptic FPN) — COCO box/mask/Boundary AP, PQ, the
per-object A vs B table, and the semantic metrics of a Panoptic FPN's semantic head.

The first model is the baseline A. Per image: ground truth as COCO annotations (``data.coco.gt_annotations``),
each model's detections as COCO results, COCO's matching per model (``metrics.detection.image_matches``),
per-object records and false positives, per-image AP, PQ counts and (panoptic) the semantic comparison. Everything
per image is appended to ``coco_parts.jsonl``; the counts are snapshotted every N images, so an interrupted run
resumes where it stopped. At the end the dataset numbers come from one COCO evaluation over all images (never a
mean of per-image APs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import coco as C
from ..data.instances import panoptic_semantic_target
from ..metrics import ComparisonAccumulator, compare
from ..metrics._serialize import to_jsonable
from ..metrics.detection import coco_evaluate, image_matches
from ..metrics.objects import DetectionObjectRecord, FalsePositive, detection_object_records, false_positives
from ..metrics.panoptic import PanopticCounts, panoptic_scores, pq_counts
from .entries import model_task
from .outputs import write_detection_outputs
from .reports import DetectionReport, EvaluationReport
from .runner import PER_IMAGE_FILE, RunSettings, dist_info
from .tables import build_tables, detection_tables, pct

PARTS_FILE = "coco_parts.jsonl"
_NAN_FIELDS = ("iou", "score", "boundary")  # per-object record fields stored as null for NaN


class _Model:
    """A detector entry with its class maps (ROI class / semantic channel -> dataset class)."""

    def __init__(self, entry: Any, things: list[int], names: list[str]) -> None:
        self.entry, self.label, self.task = entry, entry.label, model_task(entry)
        self.thing_map, self.stuff_map = C.category_map(entry.card, things, names)
        self.masks = self.task in ("instance", "panoptic")

    def run(self, image: np.ndarray, amp: bool) -> Any:
        return self.entry.model.predict(image, amp=amp).to("cpu")


class _DetectionRun:
    """One detector evaluation's classes, categories, pairs and running counts (PQ, semantic heads, timing)."""

    def __init__(self, models: Sequence[Any], dataset, *, backend: str, per_image_ap: bool) -> None:
        self.dataset, self.backend, self.per_image_ap = dataset, backend, per_image_ap
        self.things = sorted(int(c) for c in (dataset.thing_classes or ()))
        if not self.things:
            raise ValueError("the dataset names no thing classes; detectors need them (dataset.thing_classes)")
        self.names = list(dataset.class_names)
        self.stuff = [c for c in range(len(self.names)) if c not in set(self.things)]
        self.models = [_Model(e, self.things, self.names) for e in models]
        self.labels = [m.label for m in self.models]
        self.iou_types = ["bbox", "segm", "boundary"] if all(m.masks for m in self.models) else ["bbox"]
        self.match_type = "segm" if "segm" in self.iou_types else "bbox"
        self.inst_cats = C.categories(self.names, self.things)
        self.pan_cats = C.categories(self.names, self.things, self.stuff)
        self.panoptic = [m for m in self.models if m.task == "panoptic"]
        if self.panoptic and len({tuple(m.stuff_map) for m in self.panoptic}) != 1:
            raise ValueError("panoptic models predict different stuff classes; their semantic heads cannot be "
                             "compared")
        self.sem_classes = list(self.panoptic[0].stuff_map[1:]) if self.panoptic else []
        self.sem_names = ["things", *(self.names[c] for c in self.sem_classes)]
        self.pairs = [(self.labels[0], lab) for lab in self.labels[1:]] or [(self.labels[0], self.labels[0])]
        self.pair_keys = [f"{a}__vs__{b}" for a, b in self.pairs]
        pan_labels = {m.label for m in self.panoptic}
        self.sem_pairs = [(a, b) for a, b in self.pairs if a in pan_labels and b in pan_labels]
        pan_ids = [c["id"] for c in self.pan_cats]
        self.counts = {m.label: PanopticCounts.zeros(pan_ids) for m in self.panoptic}
        self.sem_accs = {f"{a}__vs__{b}": ComparisonAccumulator(len(self.sem_names), class_names=self.sem_names)
                         for a, b in self.sem_pairs}
        self.timing = {"infer_s": 0.0, "metric_s": 0.0}

    def state(self) -> dict[str, Any]:
        return {**self.timing, "panoptic": {k: v.state_dict() for k, v in self.counts.items()},
                "semantic": {k: a.state_dict() for k, a in self.sem_accs.items()}}

    def restore(self, saved: dict[str, Any]) -> None:
        if not saved:
            return
        self.counts = {k: PanopticCounts.from_state(v) for k, v in saved["panoptic"].items()}
        for k, acc in self.sem_accs.items():
            acc.load_state_dict(saved["semantic"][k])
        self.timing = {k: float(saved[k]) for k in self.timing}

    def infer(self, image: np.ndarray, index: int, amp: bool):
        """Each model's detections as COCO results, its panoptic output and semantic labels, and its latency."""
        dets, latency, pan_out, sem_out = {}, {}, {}, {}
        for m in self.models:
            t = time.perf_counter()
            res = m.run(image, amp)
            latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
            self.timing["infer_s"] += time.perf_counter() - t
            masks = res.masks.numpy() if (m.masks and res.masks is not None) else None
            cats = np.asarray(m.thing_map, np.int64)[res.classes.numpy()] if len(res) else np.zeros(0, np.int64)
            dets[m.label] = C.detection_results(res.boxes.numpy(), res.scores.numpy(), cats, image_id=index + 1,
                                                masks=masks)
            if m.task == "panoptic":
                pan_out[m.label] = C.panoptic_prediction(res.panoptic_seg.numpy(), res.segments_info,
                                                         m.thing_map, m.stuff_map)
                sem_out[m.label] = res.sem_seg.argmax(0).numpy().astype(np.int64)
        return dets, latency, pan_out, sem_out

    def score(self, index: int, name: str, label: np.ndarray, inst: np.ndarray, dets, latency, pan_out, sem_out,
              export: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Match, count and score one image; its per-image record and its line of ``coco_parts.jsonl``."""
        h, w = label.shape
        img = C.image_entry(index + 1, h, w, f"{name}.png")
        gt = C.gt_annotations(label, inst, self.things, image_id=index + 1, first_id=1)
        matches = {lab: image_matches(gt, d, img, self.inst_cats, self.match_type) for lab, d in dets.items()}
        records = {key: detection_object_records(gt, dets[a], dets[b], matches[a], matches[b],
                                                 class_names=self.names, boundary=self.match_type == "segm",
                                                 image=name)
                   for (a, b), key in zip(self.pairs, self.pair_keys)}
        fps = {lab: false_positives(dets[lab], matches[lab], model=lab, class_names=self.names, image=name)
               for lab in self.labels}
        rec: dict[str, Any] = {"index": index, "image": name, "latency_ms": latency, "models": {}}
        gt_ds = {"images": [img], "annotations": gt, "categories": self.inst_cats}
        for lab in self.labels:
            r: dict[str, Any] = {"detections": len(dets[lab]), "false_positives": len(fps[lab])}
            if self.per_image_ap and any(not a["iscrowd"] for a in gt):
                for t in self.iou_types[:2]:
                    s = coco_evaluate(gt_ds, dets[lab], t, backend=self.backend)
                    r[t] = {k: pct(s.stats[k]) for k in ("AP", "AP_S", "AP_M", "AP_L")}
            rec["models"][lab] = r
        gt_info = None
        if self.panoptic:
            gt_info = self._score_panoptic(name, label, inst, pan_out, sem_out, rec, export)
        part = {"index": index, "image": img, "gt": gt, "results": dets,
                "panoptic": {lab: info for lab, (_, info) in pan_out.items()}, "panoptic_gt": gt_info,
                "records": {k: [to_jsonable(r) for r in v] for k, v in records.items()},
                "fps": {k: [to_jsonable(r) for r in v] for k, v in fps.items()}}
        return rec, part

    def _score_panoptic(self, name: str, label: np.ndarray, inst: np.ndarray, pan_out, sem_out,
                        rec: dict[str, Any], export: Path) -> list[dict[str, Any]]:
        """PQ counts and PNGs of the panoptic outputs, and the semantic heads' comparison; the GT segments."""
        gt_pan, gt_info = C.panoptic_gt(label, inst, self.things, self.stuff, self.dataset.ignore_index)
        C.write_panoptic_png(export / "panoptic_gt" / f"{name}.png", gt_pan)
        pan_ids = [c["id"] for c in self.pan_cats]
        for lab, (pan, info) in pan_out.items():
            c = pq_counts(gt_pan, gt_info, pan, info, pan_ids)
            self.counts[lab] += c
            C.write_panoptic_png(export / f"panoptic_{lab}" / f"{name}.png", pan)
            rec["models"][lab]["PQ"] = pct(panoptic_scores(c, self.pan_cats).pq)
        sem_gt = panoptic_semantic_target(label, self.things, self.sem_classes, self.dataset.ignore_index)
        for (a, b), key in zip(self.sem_pairs, self.sem_accs):
            res = compare(sem_gt, sem_out[a], sem_out[b], len(self.sem_names), instances=inst,
                          class_names=self.sem_names, thing_classes=[0], keep_maps=False, image=name)
            self.sem_accs[key].add(res, image=name)
        return gt_info

    def finish(self, out: Path, done: set[int], skipped: list[dict[str, Any]], elapsed: float) -> DetectionReport:
        """One COCO evaluation over every finished image's parts; the COCO/panoptic JSON files; the report."""
        tf = time.perf_counter()
        export = out / "coco"
        gt_all: dict[str, Any] = {"images": [], "annotations": [], "categories": self.inst_cats}
        results: dict[str, list[dict[str, Any]]] = {lab: [] for lab in self.labels}
        objects: dict[str, list[DetectionObjectRecord]] = {k: [] for k in self.pair_keys}
        fps_all: dict[str, list[FalsePositive]] = {lab: [] for lab in self.labels}
        pan_json: dict[str, list[dict[str, Any]]] = {lab: [] for lab in ["gt", *self.counts]}
        for line in (out / PARTS_FILE).read_text().splitlines():
            part = json.loads(line)
            if part["index"] not in done:
                continue
            gt_all["images"].append(part["image"])
            for a in part["gt"]:
                gt_all["annotations"].append(dict(a, id=len(gt_all["annotations"]) + 1))
            for lab in self.labels:
                results[lab] += part["results"][lab]
                fps_all[lab] += [FalsePositive(**r) for r in part["fps"][lab]]
            for k in self.pair_keys:
                objects[k] += [_object_record(r) for r in part["records"][k]]
            if self.counts:
                stem = Path(part["image"]["file_name"]).stem
                pan_json["gt"].append({"image_id": part["image"]["id"], "file_name": f"{stem}.png",
                                       "segments_info": part["panoptic_gt"]})
                for lab, info in part["panoptic"].items():
                    pan_json[lab].append({"image_id": part["image"]["id"], "file_name": f"{stem}.png",
                                          "segments_info": info})
        gt_all["images"].sort(key=lambda im: im["id"])
        coco_scores = {m.label: {t: coco_evaluate(gt_all, results[m.label], t, backend=self.backend)
                                 for t in (["bbox", "segm", "boundary"] if m.masks else ["bbox"])}
                       for m in self.models}
        C.write_json(export / "instances_gt.json", gt_all)
        for lab in self.labels:
            C.write_json(export / f"results_{lab}.json", results[lab])
        if self.counts:
            for lab, anns in pan_json.items():
                name = "panoptic_gt.json" if lab == "gt" else f"panoptic_{lab}.json"
                C.write_json(export / name, {"images": gt_all["images"], "annotations": anns,
                                             "categories": self.pan_cats})
        self.timing["metric_s"] += time.perf_counter() - tf
        pq = {lab: panoptic_scores(c, self.pan_cats) for lab, c in self.counts.items()}
        semantic = None
        if self.sem_accs:
            comps = {k: a.result() for k, a in self.sem_accs.items()}
            pan_labels = {m.label for m in self.panoptic}
            semantic = EvaluationReport([p for p in self.labels if p in pan_labels], len(done), skipped, comps,
                                        {m.label: m.entry.num_params for m in self.panoptic}, elapsed,
                                        thing_classes=[0])
            semantic.tables = build_tables(semantic)
        report = DetectionReport(self.labels, len(done), skipped, {m.label: m.entry.num_params for m in self.models},
                                 elapsed, {m.label: m.task for m in self.models}, coco_scores, pq, objects, fps_all,
                                 semantic, timing={"inference_s": round(self.timing["infer_s"], 2),
                                                   "metrics_s": round(self.timing["metric_s"], 2)})
        report.tables = detection_tables(report)
        return report


def _object_record(r: dict[str, Any]) -> DetectionObjectRecord:
    return DetectionObjectRecord(**{f: (float("nan") if v is None and f.startswith(_NAN_FIELDS) else v)
                                    for f, v in r.items()})


def _read_sample(dataset, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    item = dataset[index]
    image, label = np.asarray(item["image"]), np.asarray(item["label"])
    inst = np.asarray(item.get("instances", np.zeros(label.shape, np.int32)))
    if inst.shape != label.shape or image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]}, label {label.shape} and instances {inst.shape} differ")
    return image, label, inst, str(item.get("name", index))


def evaluate_detectors(
    models: Sequence[Any],
    dataset,
    out_dir: str | Path,
    settings: RunSettings = RunSettings(),
    *,
    backend: str = "faster",
    per_image_ap: bool = True,
) -> DetectionReport:
    """Evaluate detector ``models`` (first = baseline) on ``dataset``; writes tables, COCO files and per-image JSONL.

    Raises ``ValueError`` when a model's classes cannot be mapped to the dataset's, or under ``torchrun``
    (detector evaluation runs in one process).
    """
    if dist_info()[1] > 1:
        raise ValueError("detector evaluation runs in one process; start it without torchrun")
    run = _DetectionRun(models, dataset, backend=backend, per_image_ap=per_image_ap)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_total = settings.n_total(dataset)
    loop = settings.loop(out, identity={"kind": "detection", "models": run.labels, "n_total": n_total},
                         indices=range(n_total), jsonl=[PER_IMAGE_FILE, PARTS_FILE], extra_state=run.state)
    run.restore(loop.saved)
    with open(out / PER_IMAGE_FILE, "a") as per_image, open(out / PARTS_FILE, "a") as parts:
        for index in loop:
            try:
                image, label, inst, name = _read_sample(dataset, index)
            except Exception as e:  # unreadable sample: report and go on
                loop.skip({"index": index, "error": f"{type(e).__name__}: {e}"})
                continue
            dets, latency, pan_out, sem_out = run.infer(image, index, settings.amp)
            tm = time.perf_counter()
            rec, part = run.score(index, name, label, inst, dets, latency, pan_out, sem_out, out / "coco")
            run.timing["metric_s"] += time.perf_counter() - tm
            parts.write(json.dumps(part) + "\n")
            per_image.write(json.dumps(rec) + "\n")
            parts.flush()
            per_image.flush()
            loop.done(index)
    loop.close()  # raises EvaluationInterrupted after a deadline / cancel (state saved)
    report = run.finish(out, loop.done_set, loop.skipped, loop.elapsed)
    write_detection_outputs(report, out)
    return report
