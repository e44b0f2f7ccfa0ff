"""Dataset evaluation of several models with every metric of :mod:`fapn_core.metrics`.

The first model is the baseline ("A"); each other model is compared with it image by image (``compare``),
and counts are summed over the dataset (never per-image means). A "model" may also be a set of saved
prediction PNGs (``PredictionEntry``); a sample whose prediction file is missing or unusable in any set
is skipped for all and reported. Thing classes and average instance sizes (iIoU) come from the dataset
(Cityscapes: the official evaluator's) unless given. Results are appended per image as they are
computed; an interrupted run resumes from its last snapshot without recomputing finished images. Unreadable
samples are skipped and reported. Under ``torchrun`` each process takes every ``world``-th image and rank 0
merges the counts, which gives the same numbers as one process.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .checkpoints import resolve_model
from .data.predictions import PredictionError, PredictionSet, open_predictions
from .metrics import ComparisonAccumulator, compare
from .metrics.compare import DatasetComparison
from .models.zoo import count_parameters
from .resumable import SKIPPED_FILE, EvaluationInterrupted, ResumableLoop, atomic_write_text  # noqa: F401

STATE_FILE = "eval_state.json"
PER_IMAGE_FILE = "per_image.jsonl"


@dataclass
class ModelEntry:
    label: str
    model: torch.nn.Module
    card: dict[str, Any]

    @property
    def num_params(self) -> int:
        return count_parameters(self.model)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def labels(self, image: np.ndarray, index: int, amp: bool) -> np.ndarray:
        return self.model.predict(image, amp=amp).argmax(0).cpu().numpy().astype(np.int64)

    @property
    def has_fam(self) -> bool:
        from .introspect import neck_modules

        return bool(neck_modules(self.model)[0])

    def labels_and_fams(self, image: np.ndarray, amp: bool) -> tuple[np.ndarray, dict]:
        """Labels and the FAM captures (offsets, feat_up, lateral, output) of one forward."""
        from .introspect import predict_with_captures

        pred = predict_with_captures(self.model, image, ("offsets", "fam_features"), amp=amp)
        return pred.labels.astype(np.int64), pred.captures.fam


@dataclass
class PredictionEntry:
    """Saved prediction PNGs of one method, scored like a model (``fapn_core.data.predictions``)."""

    label: str
    predictions: PredictionSet
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> None:
        return None

    @property
    def num_classes(self) -> int:
        return self.predictions.num_classes

    def labels(self, image: np.ndarray, index: int, amp: bool) -> np.ndarray:
        return self.predictions.read(index, image.shape[:2])


@dataclass
class EvaluationReport:
    """Dataset-level results: per model summaries, per pair comparisons, and the seed-shaped tables."""

    labels: list[str]
    n_images: int
    skipped: list[dict[str, Any]]
    comparisons: dict[str, DatasetComparison]  # "<baseline>__vs__<model>" → comparison
    params: dict[str, int | None]  # None for saved predictions
    seconds: float
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)  # label → PredictionSet.report()
    thing_classes: list[int] | None = None
    avg_instance_size: dict[str, float] | None = None

    def model_result(self, label: str):
        first = next(iter(self.comparisons.values()))
        if label == self.labels[0]:
            return first.a
        return self.comparisons[f"{self.labels[0]}__vs__{label}"].b


def _pct(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(100.0 * float(x), 2)


def build_tables(report: EvaluationReport) -> dict[str, list[dict[str, Any]]]:
    """The seed's ablation (params + mIoU), boundary (3/5/8/12 px + mean) and small-object tables."""
    ablation, boundary, objects = [], [], []
    first = next(iter(report.comparisons.values()))
    for label in report.labels:
        r = report.model_result(label)
        n_params = report.params[label]
        ablation.append({"method": label, "params_M": None if n_params is None else round(n_params / 1e6, 2),
                         "mIoU": _pct(r.miou), "pixel_acc": _pct(r.pixel_accuracy), "iIoU": _pct(r.iiou.mean),
                         "boundary_IoU": _pct(r.boundary_iou.mean), "boundary_F": _pct(r.boundary_f.mean_f)})
        row = {"method": label}
        for w, m in zip(r.band.widths, r.band.miou):
            row[f"{w}px"] = _pct(m)
        row["mean"] = _pct(r.band.mean_miou)
        boundary.append(row)
        comp = first if label == report.labels[0] else report.comparisons[f"{report.labels[0]}__vs__{label}"]
        side = "a" if label == report.labels[0] else "b"
        orow: dict[str, Any] = {"method": label}
        for size in ("small", "medium", "large", "all"):
            s = comp.object_summary.get(size)
            if s is None:
                continue
            orow[f"{size}_n"] = s.n_objects
            orow[f"{size}_hit"] = _pct(getattr(s, f"hit_rate_{side}"))
            orow[f"{size}_IoU"] = _pct(getattr(s, f"mean_iou_{side}"))
        orow["iIoU"] = _pct(r.iiou.mean)
        objects.append(orow)
    return {"ablation": ablation, "boundary": boundary, "small_objects": objects}


def per_class_scores(report: EvaluationReport, label: str) -> dict[str, dict[str, float | None]]:
    """Full-precision class IoU and class iIoU (evaluated thing classes only) of one model, by class name."""
    r = report.model_result(label)
    first = next(iter(report.comparisons.values()))
    names = first.class_names or [str(i) for i in range(first.num_classes)]

    def value(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"iou": {n: value(v) for n, v in zip(names, r.iou)},
            "iiou": {names[c]: value(r.iiou.iiou[c]) for c in r.iiou.classes}}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write_outputs(report: EvaluationReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tables = report.tables
    for name, rows in tables.items():
        with open(out / f"{name}.csv", "w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    summary = {
        "models": report.labels, "n_images": report.n_images, "skipped": report.skipped,
        "params": report.params, "seconds": round(report.seconds, 1), "tables": tables,
        "thing_classes": report.thing_classes, "avg_instance_size": report.avg_instance_size,
        "comparisons": {k: {"summary": v.summary(), "fix_break": {
            "fixed": v.fix_break.fixed, "broken": v.fix_break.broken, "net": v.fix_break.net},
            "objects_recovered": len(v.recovered_objects()), "objects_lost": len(v.lost_objects())}
            for k, v in report.comparisons.items()},
        "per_class": {label: per_class_scores(report, label) for label in report.labels},
    }
    if report.predictions:
        summary["predictions"] = report.predictions
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    md = [f"# Evaluation: {', '.join(report.labels)}", "",
          f"{report.n_images} images, {len(report.skipped)} skipped, {report.seconds:.0f} s.", ""]
    for title, key in (("Ablation (params + mIoU, %)", "ablation"), ("Boundary band mIoU (%)", "boundary"),
                       ("Small objects (hit rate and mean IoU by COCO size bin, %)", "small_objects")):
        md += [f"## {title}", "", markdown_table(tables[key]), ""]
    if report.predictions:
        md += ["## Prediction files", "", markdown_table(prediction_rows(report.predictions)), ""]
    if tables.get("alignment"):
        md += ["## Does the FAM align? (feature px; means over images, fapn_core/alignment.py)", "",
               markdown_table(tables["alignment"]), ""]
    atomic_write_text(out / "tables.md", "\n".join(md))


def prediction_rows(predictions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prediction set: folder, id format and the count of each kind of problem."""
    keys = ("matched", "missing", "ambiguous", "extra", "unreadable", "size", "values")
    return [{"method": k, "dir": r["dir"], "ids": r["ids"], **{c: r[c] for c in keys}} for k, r in predictions.items()]


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def evaluate(
    models: Sequence[ModelEntry | PredictionEntry],
    dataset,
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    amp: bool = False,
    progress: bool | Callable[[int, int], None] = True,
    snapshot_every: int = 10,
    deadline_s: float | None = None,
    cancel: Callable[[], bool] | None = None,
    thing_classes: Sequence[int] | None = None,
    avg_instance_size: Mapping[Any, float] | None = None,
    alignment: bool = False,
) -> EvaluationReport:
    """Evaluate ``models`` (first = baseline) on ``dataset``; writes per-image JSONL, CSV/JSON/Markdown tables.

    Detectors (card task detection/instance/panoptic) go to ``evaluate_detection.evaluate_detectors`` and return
    its ``DetectionReport`` (COCO box/mask/Boundary AP, PQ, objects A vs B).

    ``models``: ``ModelEntry`` or ``PredictionEntry`` items. ``thing_classes`` / ``avg_instance_size``
    default to the dataset's. ``progress``: ``True`` for a tqdm bar, or a callback ``(done, total)``.
    ``deadline_s``/``cancel`` stop early with a snapshot (call again to resume). ``alignment``: also measure, for
    every model with a FAM, whether it aligns (``fapn_core.alignment``; table ``alignment``). Raises
    ``ValueError`` on class-count mismatches.
    """
    if not models:
        raise ValueError("no models to evaluate")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {labels}")
    from .evaluate_detection import evaluate_detectors, model_task

    tasks = {m.label: model_task(m) for m in models}
    if set(tasks.values()) != {"semantic"}:  # detectors: COCO AP, PQ, per-object A vs B (evaluate_detection)
        if "semantic" in tasks.values():
            raise ValueError(f"cannot evaluate semantic models with detectors in one run: {tasks}")
        return evaluate_detectors(models, dataset, out_dir, limit=limit, amp=amp, progress=progress,  # type: ignore
                                  snapshot_every=snapshot_every, deadline_s=deadline_s, cancel=cancel)
    num_classes = int(dataset.num_classes)
    for m in models:
        if m.num_classes != num_classes:
            raise ValueError(f"model {m.label} predicts {m.num_classes} classes, "
                             f"the dataset has {num_classes}")
    rank, world = _dist()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard = out if world == 1 else out / f"rank{rank}"
    shard.mkdir(parents=True, exist_ok=True)
    n_total = len(dataset) if limit is None else min(limit, len(dataset))
    mine = list(range(rank, n_total, world))
    pairs = [(labels[0], lab) for lab in labels[1:]] or [(labels[0], labels[0])]
    names = list(getattr(dataset, "class_names", [])) or None
    things = thing_classes if thing_classes is not None else getattr(dataset, "thing_classes", None)
    things = None if things is None else [int(c) for c in things]
    avg = avg_instance_size if avg_instance_size is not None else getattr(dataset, "avg_instance_size", None)
    avg = None if avg is None else {k: float(v) for k, v in avg.items()}
    allow_void = any(isinstance(m, PredictionEntry) for m in models)  # saved files may hold void ids

    def new_acc() -> ComparisonAccumulator:
        return ComparisonAccumulator(num_classes, class_names=names, avg_instance_size=avg)

    accs = {f"{a}__vs__{b}": new_acc() for a, b in pairs}
    from .alignment import AlignmentAccumulator, align_level

    aligned = {m.label: AlignmentAccumulator() for m in models
               if alignment and isinstance(m, ModelEntry) and m.has_fam}
    loop = ResumableLoop(shard, STATE_FILE, identity={"models": labels, "n_total": n_total}, indices=mine,
                         jsonl=[PER_IMAGE_FILE], progress=progress, show_bar=rank == 0, deadline_s=deadline_s,
                         cancel=cancel, snapshot_every=snapshot_every,
                         extra_state=lambda: {"accumulators": {k: a.state_dict() for k, a in accs.items()},
                                              "alignment": {k: a.state_dict() for k, a in aligned.items()}})
    for k, acc in accs.items():
        if loop.saved:
            acc.load_state_dict(loop.saved["accumulators"][k])
    for k, acc in aligned.items():
        if loop.saved:
            acc.load_state_dict(loop.saved.get("alignment", {}).get(k, {"sums": {}, "counts": {}}))
    with open(shard / PER_IMAGE_FILE, "a") as per_image:
        for index in loop:
            try:
                item = dataset[index]
                image, gt = np.asarray(item["image"]), np.asarray(item["label"])
            except Exception as e:  # unreadable sample: report and go on
                loop.skip({"index": index, "error": f"{type(e).__name__}: {e}"})
                continue
            name = str(item.get("name", index))
            preds, latency = {}, {}
            try:
                for m in models:
                    t = time.perf_counter()
                    if m.label in aligned:  # one forward gives the labels and the FAM captures
                        preds[m.label], fams = m.labels_and_fams(image, amp)
                        latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
                        aligned[m.label].add(align_level(f, gt=gt) for f in fams.values())
                        continue
                    preds[m.label] = m.labels(image, index, amp)
                    latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
            except PredictionError as e:  # missing / unusable prediction file: skip the sample for all
                loop.skip({"index": index, "image": name, "predictions": m.label, "kind": e.kind, "error": str(e)})
                continue
            record: dict[str, Any] = {"index": index, "image": name, "latency_ms": latency, "pairs": {}}
            inst = item.get("instances")
            for (a, b), (key, acc) in zip(pairs, accs.items()):
                res = compare(gt, preds[a], preds[b], num_classes, instances=inst, class_names=names,
                              thing_classes=things, avg_instance_size=avg, allow_void=allow_void,
                              keep_maps=False, image=name)
                acc.add(res, image=name)
                record["pairs"][key] = {"summary": res.summary(), "fixed": res.fix_break.fixed,
                                        "broken": res.fix_break.broken,
                                        "recovered": len(res.recovered_objects()), "lost": len(res.lost_objects())}
            per_image.write(json.dumps(record) + "\n")
            per_image.flush()
            loop.done(index)
    loop.close()  # raises EvaluationInterrupted after a deadline / cancel (state saved)
    skipped, elapsed = loop.skipped, loop.elapsed
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, {"acc": {k: a.state_dict() for k, a in accs.items()},
                                          "align": {k: a.state_dict() for k, a in aligned.items()},
                                          "skipped": skipped, "elapsed": elapsed})
        if rank != 0:
            return None  # type: ignore[return-value]
        merged = {k: new_acc() for k in accs}
        skipped, elapsed = [], 0.0
        for g in gathered:
            for k, st in g["acc"].items():
                part = new_acc()
                part.load_state_dict(st)
                merged[k].merge(part)
            skipped += g["skipped"]
            elapsed = max(elapsed, g["elapsed"])
        accs = merged
        merged_align = {k: AlignmentAccumulator() for k in aligned}
        for g in gathered:
            for k, st in g["align"].items():
                part = AlignmentAccumulator()
                part.load_state_dict(st)
                merged_align[k].merge(part)
        aligned = merged_align
    for acc in accs.values():  # order-independent object lists (same output for any process count)
        acc.objects.sort(key=lambda r: (str(r.image), r.object_id))
    comparisons = {k: acc.result() for k, acc in accs.items()}
    report = EvaluationReport(labels, sum(a.n_images for a in accs.values()) // len(accs), skipped, comparisons,
                              {m.label: m.num_params for m in models}, elapsed, thing_classes=things,
                              avg_instance_size=avg)
    report.predictions = {m.label: m.predictions.report(skipped) for m in models if isinstance(m, PredictionEntry)}
    report.tables = build_tables(report)
    if aligned:
        report.tables["alignment"] = [{"method": k, **row} for k, acc in aligned.items() for row in acc.rows()]
    write_outputs(report, out)
    return report




def load_models(specs: Sequence[str], *, device: str = "cpu") -> list[ModelEntry]:
    """Model entries from names of bundled models or checkpoint paths (labels: card name or file stem)."""
    entries: list[ModelEntry] = []
    for spec in specs:
        model, card = resolve_model(spec, device=device)
        label = card.get("name", Path(spec).stem)
        if label in {e.label for e in entries}:
            label = Path(spec).stem
        entries.append(ModelEntry(label, model, card))
    return entries


def load_predictions(specs: Sequence[str], dataset, *, ids: str = "auto",
                     taken: Sequence[str] = ()) -> list[PredictionEntry]:
    """Entries for ``LABEL=DIR`` specs (a bare ``DIR`` is labelled by its folder name).

    Raises ``ValueError`` for a duplicate label and what ``open_predictions`` raises for a folder.
    """
    entries: list[PredictionEntry] = []
    used = set(taken)
    for spec in specs:
        label, eq, root = spec.partition("=")
        if not eq:
            label, root = Path(spec.rstrip("/\\")).name or spec, spec
        if not label or not root:
            raise ValueError(f"bad --predictions item {spec!r}: expected LABEL=DIR")
        if label in used:
            raise ValueError(f"duplicate label {label!r} in --predictions (labels must be unique)")
        used.add(label)
        entries.append(PredictionEntry(label, open_predictions(dataset, label, root, ids)))
    return entries
