"""Dataset evaluation of detectors (Faster R-CNN, Mask R-CNN, Panoptic FPN): COCO box/mask/Boundary AP, PQ,
the per-object A vs B table, and the semantic metrics of a Panoptic FPN's semantic head.

``fapn_core.evaluate.evaluate`` hands detector models here (task from the model card). The first model is the
baseline A. Per image: ground truth as COCO annotations (``data.coco.gt_annotations``), each model's detections
as COCO results, COCO's matching per model (``metrics.detection.image_matches``), per-object records and false
positives, per-image AP, PQ counts and (panoptic) the semantic comparison. Everything per image is appended to
``coco_parts.jsonl``; the counts are snapshotted every N images, so an interrupted run resumes where it stopped.
At the end the dataset numbers come from one COCO evaluation over all images (never a mean of per-image APs).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import coco as C
from .data.instances import panoptic_semantic_target
from .metrics import ComparisonAccumulator, compare
from .metrics._serialize import to_jsonable
from .metrics.detection import CocoScores, coco_evaluate, image_matches
from .metrics.objects import (
    DetectionObjectRecord, FalsePositive, detection_object_records, false_positives, summarize_objects,
)
from .metrics.panoptic import PanopticCounts, PanopticScores, panoptic_scores, pq_counts
from .resumable import ResumableLoop, atomic_write_text

STATE_FILE = "eval_state.json"
PER_IMAGE_FILE = "per_image.jsonl"
PARTS_FILE = "coco_parts.jsonl"
AP_COLUMNS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100")


def model_task(entry: Any) -> str:
    """'semantic', 'detection', 'instance' or 'panoptic' of a model entry (card first, then the model)."""
    card = getattr(entry, "card", None) or {}
    return str(card.get("task") or getattr(getattr(entry, "model", None), "task", "semantic"))


@dataclass
class DetectionReport:
    """Dataset-level results of detectors: COCO scores, PQ, per-object records, false positives and tables."""

    labels: list[str]
    n_images: int
    skipped: list[dict[str, Any]]
    params: dict[str, int | None]
    seconds: float
    tasks: dict[str, str]
    coco: dict[str, dict[str, CocoScores]]  # label -> iou_type -> scores
    panoptic: dict[str, PanopticScores]
    objects: dict[str, list[DetectionObjectRecord]]  # "<A>__vs__<B>" -> records
    false_positives: dict[str, list[FalsePositive]]
    semantic: Any = None  # EvaluationReport of the semantic heads (panoptic models)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def _pct(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(100.0 * float(x), 2)


class _Model:
    """A detector entry with its class maps (ROI class / semantic channel -> dataset class)."""

    def __init__(self, entry: Any, things: list[int], names: list[str]) -> None:
        self.entry, self.label, self.task = entry, entry.label, model_task(entry)
        self.thing_map, self.stuff_map = C.category_map(entry.card, things, names)
        self.masks = self.task in ("instance", "panoptic")

    def run(self, image: np.ndarray, amp: bool) -> Any:
        return self.entry.model.predict(image, amp=amp).to("cpu")


def _iou_types(models: Sequence[_Model]) -> list[str]:
    return ["bbox", "segm", "boundary"] if all(m.masks for m in models) else ["bbox"]


def evaluate_detectors(
    models: Sequence[Any],
    dataset,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    amp: bool = False,
    progress: bool | Callable[[int, int], None] = True,
    snapshot_every: int = 10,
    deadline_s: float | None = None,
    cancel: Callable[[], bool] | None = None,
    backend: str = "faster",
    per_image_ap: bool = True,
) -> DetectionReport:
    """Evaluate detector ``models`` (first = baseline) on ``dataset``; writes tables, COCO files and per-image JSONL.

    Raises ``ValueError`` when a model's classes cannot be mapped to the dataset's, or under ``torchrun``
    (detector evaluation runs in one process).
    """
    from .evaluate import EvaluationReport, _dist, build_tables

    if _dist()[1] > 1:
        raise ValueError("detector evaluation runs in one process; start it without torchrun")
    things = sorted(int(c) for c in (dataset.thing_classes or ()))
    if not things:
        raise ValueError("the dataset names no thing classes; detectors need them (dataset.thing_classes)")
    names = list(dataset.class_names)
    stuff = [c for c in range(len(names)) if c not in set(things)]
    ms = [_Model(e, things, names) for e in models]
    labels = [m.label for m in ms]
    iou_types = _iou_types(ms)
    match_type = "segm" if "segm" in iou_types else "bbox"
    inst_cats = C.categories(names, things)
    pan_cats = C.categories(names, things, stuff)
    pan_ids = [c["id"] for c in pan_cats]
    panoptic = [m for m in ms if m.task == "panoptic"]
    if panoptic and len({tuple(m.stuff_map) for m in panoptic}) != 1:
        raise ValueError("panoptic models predict different stuff classes; their semantic heads cannot be compared")
    sem_classes = [c for c in panoptic[0].stuff_map[1:]] if panoptic else []
    sem_names = ["things", *(names[c] for c in sem_classes)]
    pairs = [(labels[0], lab) for lab in labels[1:]] or [(labels[0], labels[0])]
    pair_keys = [f"{a}__vs__{b}" for a, b in pairs]
    sem_pairs = [(a, b) for a, b in pairs if a in {m.label for m in panoptic} and b in {m.label for m in panoptic}]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export = out / "coco"
    n_total = len(dataset) if limit is None else min(limit, len(dataset))
    counts = {m.label: PanopticCounts.zeros(pan_ids) for m in panoptic}
    sem_accs = {f"{a}__vs__{b}": ComparisonAccumulator(len(sem_names), class_names=sem_names) for a, b in sem_pairs}
    timing = {"infer_s": 0.0, "metric_s": 0.0}
    loop = ResumableLoop(out, STATE_FILE, identity={"kind": "detection", "models": labels, "n_total": n_total},
                         indices=range(n_total), jsonl=[PER_IMAGE_FILE, PARTS_FILE], progress=progress,
                         deadline_s=deadline_s, cancel=cancel, snapshot_every=snapshot_every,
                         extra_state=lambda: {**timing, "panoptic": {k: v.state_dict() for k, v in counts.items()},
                                              "semantic": {k: a.state_dict() for k, a in sem_accs.items()}})
    if loop.saved:
        counts = {k: PanopticCounts.from_state(v) for k, v in loop.saved["panoptic"].items()}
        for k, acc in sem_accs.items():
            acc.load_state_dict(loop.saved["semantic"][k])
        timing = {k: float(loop.saved[k]) for k in timing}
    with open(out / PER_IMAGE_FILE, "a") as per_image, open(out / PARTS_FILE, "a") as parts:
        for index in loop:
            try:
                item = dataset[index]
                image, label = np.asarray(item["image"]), np.asarray(item["label"])
                inst = np.asarray(item.get("instances", np.zeros(label.shape, np.int32)))
                if inst.shape != label.shape or image.shape[:2] != label.shape:
                    raise ValueError(f"image {image.shape[:2]}, label {label.shape} and instances {inst.shape} differ")
            except Exception as e:  # unreadable sample: report and go on
                loop.skip({"index": index, "error": f"{type(e).__name__}: {e}"})
                continue
            name = str(item.get("name", index))
            h, w = label.shape
            img = C.image_entry(index + 1, h, w, f"{name}.png")
            dets, latency, pan_out, sem_out, gt_info = {}, {}, {}, {}, None
            for m in ms:
                t = time.perf_counter()
                res = m.run(image, amp)
                latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
                timing["infer_s"] += time.perf_counter() - t
                masks = res.masks.numpy() if (m.masks and res.masks is not None) else None
                cats = np.asarray(m.thing_map, np.int64)[res.classes.numpy()] if len(res) else np.zeros(0, np.int64)
                dets[m.label] = C.detection_results(res.boxes.numpy(), res.scores.numpy(), cats, image_id=index + 1,
                                                    masks=masks)
                if m.task == "panoptic":
                    pan_out[m.label] = C.panoptic_prediction(res.panoptic_seg.numpy(), res.segments_info,
                                                             m.thing_map, m.stuff_map)
                    sem_out[m.label] = res.sem_seg.argmax(0).numpy().astype(np.int64)
            tm = time.perf_counter()
            gt = C.gt_annotations(label, inst, things, image_id=index + 1, first_id=1)
            matches = {lab: image_matches(gt, d, img, inst_cats, match_type) for lab, d in dets.items()}
            records, fps = {}, {}
            for (a, b), key in zip(pairs, pair_keys):
                records[key] = detection_object_records(gt, dets[a], dets[b], matches[a], matches[b],
                                                        class_names=names, boundary=match_type == "segm", image=name)
            for lab in labels:
                fps[lab] = false_positives(dets[lab], matches[lab], model=lab, class_names=names, image=name)
            rec: dict[str, Any] = {"index": index, "image": name, "latency_ms": latency, "models": {}}
            gt_ds = {"images": [img], "annotations": gt, "categories": inst_cats}
            for lab in labels:
                r: dict[str, Any] = {"detections": len(dets[lab]), "false_positives": len(fps[lab])}
                if per_image_ap and any(not a["iscrowd"] for a in gt):
                    for t in iou_types[:2]:
                        s = coco_evaluate(gt_ds, dets[lab], t, backend=backend)
                        r[t] = {k: _pct(s.stats[k]) for k in ("AP", "AP_S", "AP_M", "AP_L")}
                rec["models"][lab] = r
            if panoptic:
                gt_pan, gt_info = C.panoptic_gt(label, inst, things, stuff, dataset.ignore_index)
                C.write_panoptic_png(export / "panoptic_gt" / f"{name}.png", gt_pan)
                for lab, (pan, info) in pan_out.items():
                    c = pq_counts(gt_pan, gt_info, pan, info, pan_ids)
                    counts[lab] += c
                    C.write_panoptic_png(export / f"panoptic_{lab}" / f"{name}.png", pan)
                    rec["models"][lab]["PQ"] = _pct(panoptic_scores(c, pan_cats).pq)
                sem_gt = panoptic_semantic_target(label, things, sem_classes, dataset.ignore_index)
                for (a, b), key in zip(sem_pairs, sem_accs):
                    res_s = compare(sem_gt, sem_out[a], sem_out[b], len(sem_names), instances=inst,
                                    class_names=sem_names, thing_classes=[0], keep_maps=False, image=name)
                    sem_accs[key].add(res_s, image=name)
            timing["metric_s"] += time.perf_counter() - tm
            parts.write(json.dumps({
                "index": index, "image": img, "gt": gt, "results": dets,
                "panoptic": {lab: info for lab, (_, info) in pan_out.items()}, "panoptic_gt": gt_info,
                "records": {k: [to_jsonable(r) for r in v] for k, v in records.items()},
                "fps": {k: [to_jsonable(r) for r in v] for k, v in fps.items()}}) + "\n")
            per_image.write(json.dumps(rec) + "\n")
            parts.flush()
            per_image.flush()
            loop.done(index)
    loop.close()  # raises EvaluationInterrupted after a deadline / cancel (state saved)
    done, skipped, elapsed = loop.done_set, loop.skipped, loop.elapsed

    tf = time.perf_counter()
    gt_all = {"images": [], "annotations": [], "categories": inst_cats}
    results: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labels}
    objects: dict[str, list[DetectionObjectRecord]] = {k: [] for k in pair_keys}
    fps_all: dict[str, list[FalsePositive]] = {lab: [] for lab in labels}
    pan_json = {lab: [] for lab in ["gt", *counts]}
    for line in (out / PARTS_FILE).read_text().splitlines():
        part = json.loads(line)
        if part["index"] not in done:
            continue
        gt_all["images"].append(part["image"])
        for a in part["gt"]:
            gt_all["annotations"].append(dict(a, id=len(gt_all["annotations"]) + 1))
        for lab in labels:
            results[lab] += part["results"][lab]
            fps_all[lab] += [FalsePositive(**r) for r in part["fps"][lab]]
        for k in pair_keys:
            objects[k] += [DetectionObjectRecord(**{f: (float("nan") if v is None and f.startswith(("iou", "score",
                           "boundary")) else v) for f, v in r.items()}) for r in part["records"][k]]
        if counts:
            stem = Path(part["image"]["file_name"]).stem
            pan_json["gt"].append({"image_id": part["image"]["id"], "file_name": f"{stem}.png",
                                   "segments_info": part["panoptic_gt"]})
            for lab, info in part["panoptic"].items():
                pan_json[lab].append({"image_id": part["image"]["id"], "file_name": f"{stem}.png",
                                      "segments_info": info})
    gt_all["images"].sort(key=lambda im: im["id"])
    coco_scores = {}
    for m in ms:
        types = ["bbox", "segm", "boundary"] if m.masks else ["bbox"]
        coco_scores[m.label] = {t: coco_evaluate(gt_all, results[m.label], t, backend=backend) for t in types}
    C.write_json(export / "instances_gt.json", gt_all)
    for lab in labels:
        C.write_json(export / f"results_{lab}.json", results[lab])
    if counts:
        for lab, anns in pan_json.items():
            name = "panoptic_gt.json" if lab == "gt" else f"panoptic_{lab}.json"
            C.write_json(export / name, {"images": gt_all["images"], "annotations": anns, "categories": pan_cats})
    timing["metric_s"] += time.perf_counter() - tf
    pq = {lab: panoptic_scores(c, pan_cats) for lab, c in counts.items()}
    semantic = None
    if sem_accs:
        comps = {k: a.result() for k, a in sem_accs.items()}
        semantic = EvaluationReport([p for p in labels if p in {m.label for m in panoptic}], len(done), skipped,
                                    comps, {m.label: m.entry.num_params for m in panoptic}, elapsed,
                                    thing_classes=[0])
        semantic.tables = build_tables(semantic)
    report = DetectionReport(labels, len(done), skipped, {m.label: m.entry.num_params for m in ms}, elapsed,
                             {m.label: m.task for m in ms}, coco_scores, pq, objects, fps_all, semantic,
                             timing={"inference_s": round(timing["infer_s"], 2),
                                     "metrics_s": round(timing["metric_s"], 2)})
    report.tables = detection_tables(report)
    write_detection_outputs(report, out)
    return report


def object_summary_rows(report: DetectionReport) -> list[dict[str, Any]]:
    """Per model: objects found (COCO match at IoU 0.5, %) and mean IoU of the match, by COCO size bin."""
    rows = []
    first = report.labels[0]
    for k, recs in report.objects.items():
        a, b = k.split("__vs__")
        summ = summarize_objects(recs)
        for lab, side in ((a, "a"), (b, "b")):
            if lab == first and rows:
                continue
            row: dict[str, Any] = {"method": lab}
            for size in ("small", "medium", "large", "all"):
                s = summ[size]
                row[f"{size}_n"] = s.n_objects
                row[f"{size}_found"] = _pct(getattr(s, f"hit_rate_{side}"))
                row[f"{size}_IoU"] = _pct(getattr(s, f"mean_iou_{side}"))
            base = lab == first and len(report.labels) > 1
            row["only_B"] = None if base else summ["all"].recovered_by_b
            row["only_A"] = None if base else summ["all"].lost_by_b
            row["false_positives"] = len(report.false_positives[lab])
            rows.append(row)
    return rows


def detection_tables(report: DetectionReport) -> dict[str, list[dict[str, Any]]]:
    """Box AP, mask AP, Boundary AP (AP_S/M/L), PQ/SQ/RQ with things/stuff, objects by size; semantic tables."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for key, t in (("box_ap", "bbox"), ("mask_ap", "segm"), ("boundary_ap", "boundary")):
        rows = []
        for lab in report.labels:
            s = report.coco[lab].get(t)
            if s is None:
                continue
            n = report.params[lab]
            rows.append({"method": lab, "params_M": None if n is None else round(n / 1e6, 2),
                         **{c: _pct(s.stats[c]) for c in AP_COLUMNS}})
        if rows:
            tables[key] = rows
    if report.panoptic:
        tables["panoptic"] = [{"method": lab, **{k: _pct(v) for k, v in s.row().items()}}
                              for lab, s in report.panoptic.items()]
    tables["objects"] = object_summary_rows(report)
    if report.semantic is not None:
        for k, rows in report.semantic.tables.items():
            tables[f"semantic_{k}"] = rows
    return tables


TABLE_TITLES = {"box_ap": "Box AP (COCO, %)", "mask_ap": "Mask AP (COCO, %)",
           "boundary_ap": "Boundary AP (Cheng et al. 2021, dilation 0.02, %)",
           "panoptic": "Panoptic quality (PQ/SQ/RQ, things/stuff, %)",
           "objects": "Objects by COCO size: found = COCO match at IoU 0.5 (%), mean IoU of the matched (else best) "
                      "detection (%); only_B / only_A: found by B (A) alone",
           "semantic_ablation": "Semantic head (stuff + 'things'): mIoU (%)",
           "semantic_boundary": "Semantic head: boundary band mIoU (%)",
           "semantic_small_objects": "Semantic head: thing pixels by object size (%)"}


def table_file(key: str) -> str:
    """The CSV file of table ``key`` (the by-size objects table is ``objects_by_size.csv``: ``objects.csv`` holds
    one row per object)."""
    return "objects_by_size.csv" if key == "objects" else f"{key}.csv"


def write_detection_outputs(report: DetectionReport, out: Path) -> None:
    """CSV per table (:func:`table_file`), ``objects.csv`` / ``false_positives.csv`` (one row per object /
    detection), ``summary.json``, ``tables.md``."""
    from .evaluate import markdown_table

    for name, rows in report.tables.items():
        _write_csv(out / table_file(name), rows)
    _write_csv(out / "objects.csv", [dict(pair=k, **to_jsonable(r)) for k, rs in report.objects.items() for r in rs])
    _write_csv(out / "false_positives.csv", [to_jsonable(r) for rs in report.false_positives.values() for r in rs])
    summary = {
        "models": report.labels, "tasks": report.tasks, "n_images": report.n_images, "skipped": report.skipped,
        "params": report.params, "seconds": round(report.seconds, 1), "timing": report.timing,
        "tables": report.tables,
        "coco": {lab: {t: to_jsonable(s) for t, s in v.items()} for lab, v in report.coco.items()},
        "panoptic": {lab: to_jsonable(replace(s, counts=None)) for lab, s in report.panoptic.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    md = [f"# Evaluation: {', '.join(report.labels)}", "",
          f"{report.n_images} images, {len(report.skipped)} skipped, {report.seconds:.0f} s "
          f"(inference {report.timing.get('inference_s', 0):.0f} s, metrics {report.timing.get('metrics_s', 0):.0f} s).",
          ""]
    for key, rows in report.tables.items():
        md += [f"## {TABLE_TITLES.get(key, key)}", "", markdown_table(rows), ""]
    atomic_write_text(out / "tables.md", "\n".join(md))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        if rows:
            cols = list(dict.fromkeys(k for r in rows for k in r))
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])
