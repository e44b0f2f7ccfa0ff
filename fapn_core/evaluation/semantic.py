"""The label-map evaluator: semantic models and saved prediction PNGs, with every metric of :mod:`fapn_core.metrics`.

The first model is the baseline ("A"); each other model is compared with it image by image (``compare``), and
counts are summed over the dataset (never per-image means). A sample whose prediction file is missing or unusable
in any set is skipped for all and reported. Thing classes and average instance sizes (iIoU) come from the dataset
(Cityscapes: the official evaluator's) unless given. Results are appended per image as they are computed; an
interrupted run resumes from its last snapshot without recomputing finished images. Under ``torchrun`` each
process takes every ``world``-th image and rank 0 merges the counts, which gives the same numbers as one process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..alignment import AlignmentAccumulator, align_level
from ..data.predictions import PredictionError
from ..metrics import ComparisonAccumulator, compare
from .entries import ModelEntry, PredictionEntry
from .outputs import write_outputs
from .reports import EvaluationReport
from .runner import PER_IMAGE_FILE, RunSettings, SkipSample, dist_info
from .tables import build_tables


class _SemanticRun:
    """One evaluation's settings and running counts: the pairs compared, their accumulators, FAM alignment."""

    def __init__(self, models: Sequence[ModelEntry | PredictionEntry], dataset, *,
                 thing_classes: Sequence[int] | None, avg_instance_size: Mapping[Any, float] | None,
                 alignment: bool) -> None:
        self.models, self.dataset = list(models), dataset
        self.num_classes = int(dataset.num_classes)
        for m in models:
            if m.num_classes != self.num_classes:
                raise ValueError(f"model {m.label} predicts {m.num_classes} classes, "
                                 f"the dataset has {self.num_classes}")
        self.labels = [m.label for m in models]
        self.pairs = [(self.labels[0], lab) for lab in self.labels[1:]] or [(self.labels[0], self.labels[0])]
        self.names = list(getattr(dataset, "class_names", [])) or None
        things = thing_classes if thing_classes is not None else getattr(dataset, "thing_classes", None)
        self.things = None if things is None else [int(c) for c in things]
        avg = avg_instance_size if avg_instance_size is not None else getattr(dataset, "avg_instance_size", None)
        self.avg = None if avg is None else {k: float(v) for k, v in avg.items()}
        self.allow_void = any(isinstance(m, PredictionEntry) for m in models)  # saved files may hold void ids
        self.accs = {f"{a}__vs__{b}": self.new_acc() for a, b in self.pairs}
        self.aligned = {m.label: AlignmentAccumulator() for m in models
                        if alignment and isinstance(m, ModelEntry) and m.has_fam}

    def new_acc(self) -> ComparisonAccumulator:
        return ComparisonAccumulator(self.num_classes, class_names=self.names, avg_instance_size=self.avg)

    def state(self) -> dict[str, Any]:
        return {"accumulators": {k: a.state_dict() for k, a in self.accs.items()},
                "alignment": {k: a.state_dict() for k, a in self.aligned.items()}}

    def restore(self, saved: dict[str, Any]) -> None:
        if not saved:
            return
        for k, acc in self.accs.items():
            acc.load_state_dict(saved["accumulators"][k])
        for k, acc in self.aligned.items():
            acc.load_state_dict(saved.get("alignment", {}).get(k, {"sums": {}, "counts": {}}))

    def predict(self, image: np.ndarray, gt: np.ndarray, index: int, amp: bool
                ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every model's labels (and, where measured, its FAM alignment) with its latency in ms."""
        preds, latency = {}, {}
        for m in self.models:
            t = time.perf_counter()
            if m.label in self.aligned:  # one forward gives the labels and the FAM captures
                preds[m.label], fams = m.labels_and_fams(image, amp)
                latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
                self.aligned[m.label].add(align_level(f, gt=gt) for f in fams.values())
                continue
            try:
                preds[m.label] = m.labels(image, index, amp)
            except PredictionError as e:  # missing / unusable prediction file: the sample is skipped for all
                raise SkipSample({"predictions": m.label, "kind": e.kind, "error": str(e)}) from e
            latency[m.label] = round((time.perf_counter() - t) * 1000, 1)
        return preds, latency

    def score(self, gt: np.ndarray, preds: dict[str, np.ndarray], inst: np.ndarray | None, name: str
              ) -> dict[str, Any]:
        """Compare each pair on one image, add it to the counts; the pairs' part of the per-image record."""
        out: dict[str, Any] = {}
        for (a, b), (key, acc) in zip(self.pairs, self.accs.items()):
            res = compare(gt, preds[a], preds[b], self.num_classes, instances=inst, class_names=self.names,
                          thing_classes=self.things, avg_instance_size=self.avg, allow_void=self.allow_void,
                          keep_maps=False, image=name)
            acc.add(res, image=name)
            out[key] = {"summary": res.summary(), "fixed": res.fix_break.fixed, "broken": res.fix_break.broken,
                        "recovered": len(res.recovered_objects()), "lost": len(res.lost_objects())}
        return out

    def merge(self, gathered: list[dict[str, Any]]) -> None:
        """Replace the counts with the sum of every rank's (``gathered``: each rank's :meth:`state`)."""
        self.accs = {k: self.new_acc() for k in self.accs}
        self.aligned = {k: AlignmentAccumulator() for k in self.aligned}
        for g in gathered:
            for k, st in g["accumulators"].items():
                part = self.new_acc()
                part.load_state_dict(st)
                self.accs[k].merge(part)
            for k, st in g["alignment"].items():
                part = AlignmentAccumulator()
                part.load_state_dict(st)
                self.aligned[k].merge(part)

    def report(self, skipped: list[dict[str, Any]], elapsed: float) -> EvaluationReport:
        for acc in self.accs.values():  # order-independent object lists (same output for any process count)
            acc.objects.sort(key=lambda r: (str(r.image), r.object_id))
        comparisons = {k: acc.result() for k, acc in self.accs.items()}
        n_images = sum(a.n_images for a in self.accs.values()) // len(self.accs)
        report = EvaluationReport(self.labels, n_images, skipped, comparisons,
                                  {m.label: m.num_params for m in self.models}, elapsed, thing_classes=self.things,
                                  avg_instance_size=self.avg)
        report.predictions = {m.label: m.predictions.report(skipped) for m in self.models
                              if isinstance(m, PredictionEntry)}
        report.tables = build_tables(report)
        if self.aligned:
            report.tables["alignment"] = [{"method": k, **row} for k, acc in self.aligned.items() for row in acc.rows()]
        return report


def evaluate_semantic(
    models: Sequence[ModelEntry | PredictionEntry],
    dataset,
    out_dir: str | os.PathLike,
    settings: RunSettings = RunSettings(),
    *,
    thing_classes: Sequence[int] | None = None,
    avg_instance_size: Mapping[Any, float] | None = None,
    alignment: bool = False,
) -> EvaluationReport:
    """Evaluate label-map ``models`` (first = baseline) on ``dataset``; writes per-image JSONL, CSV/JSON/Markdown.

    ``thing_classes`` / ``avg_instance_size`` default to the dataset's. ``alignment``: also measure, for every model
    with a FAM, whether it aligns (``fapn_core.alignment``; table ``alignment``). Raises ``ValueError`` on
    class-count mismatches. Under ``torchrun`` returns the report on rank 0 and None elsewhere.
    """
    run = _SemanticRun(models, dataset, thing_classes=thing_classes, avg_instance_size=avg_instance_size,
                       alignment=alignment)
    rank, world = dist_info()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard = out if world == 1 else out / f"rank{rank}"
    shard.mkdir(parents=True, exist_ok=True)
    n_total = settings.n_total(dataset)
    loop = settings.loop(shard, identity={"models": run.labels, "n_total": n_total},
                         indices=list(range(rank, n_total, world)), jsonl=[PER_IMAGE_FILE], extra_state=run.state,
                         show_bar=rank == 0)
    run.restore(loop.saved)
    with open(shard / PER_IMAGE_FILE, "a") as per_image:
        for index in loop:
            try:
                item = dataset[index]
                image, gt = np.asarray(item["image"]), np.asarray(item["label"])
            except Exception as e:  # unreadable sample: report and go on
                loop.skip({"index": index, "error": f"{type(e).__name__}: {e}"})
                continue
            name = str(item.get("name", index))
            try:
                preds, latency = run.predict(image, gt, index, settings.amp)
            except SkipSample as s:
                loop.skip({"index": index, "image": name, **s.entry})
                continue
            record = {"index": index, "image": name, "latency_ms": latency,
                      "pairs": run.score(gt, preds, item.get("instances"), name)}
            per_image.write(json.dumps(record) + "\n")
            per_image.flush()
            loop.done(index)
    loop.close()  # raises EvaluationInterrupted after a deadline / cancel (state saved)
    skipped, elapsed = loop.skipped, loop.elapsed
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, {**run.state(), "skipped": skipped, "elapsed": elapsed})
        if rank != 0:
            return None  # type: ignore[return-value]
        run.merge(gathered)
        skipped = [s for g in gathered for s in g["skipped"]]
        elapsed = max(g["elapsed"] for g in gathered)
    report = run.report(skipped, elapsed)
    write_outputs(report, out)
    return report
