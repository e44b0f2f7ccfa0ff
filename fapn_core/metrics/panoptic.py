"""PQ / SQ / RQ (Kirillov et al., *Panoptic Segmentation*, CVPR 2019) with the COCO panoptic reference rules.

``panopticapi``'s ``pq_compute`` (github.com/cocodataset/panopticapi, ``evaluation.py``) is not on PyPI, so this
is a small implementation of its rules, line for line (``docs/metrics.md``, "Panoptic quality"):

* segment id 0 is void; a segment's area is its pixel count in the PNG;
* a (ground truth, prediction) pair of the same category matches when IoU > 0.5, with
  IoU = |g ∩ p| / (|p| + |g| − |g ∩ p| − |void ∩ p|); crowd ground truth (``iscrowd=1``) never matches;
* every unmatched non-crowd ground-truth segment is a false negative;
* an unmatched prediction is a false positive unless more than half of it lies on void plus the crowd region of
  its category;
* PQ_c = Σ IoU / (TP + ½FP + ½FN), SQ_c = Σ IoU / TP (0 without TP), RQ_c = TP / (TP + ½FP + ½FN); the
  averages (all, things, stuff) are means over the categories with TP + FP + FN > 0 (NaN when there are none).

Counts are summed over a dataset before PQ is taken, as the reference does. ``torchmetrics``' ``PanopticQuality``
implements the same matching but has no crowd regions and also drops ground truth that the prediction leaves
mostly void; the tests check that both give the same numbers where those differences cannot arise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ._serialize import ToDictMixin

VOID = 0
OFFSET = 256 * 256 * 256


@dataclass
class PanopticCounts(ToDictMixin):
    """Per-category TP, FP, FN and the sum of matched IoUs (``category ids`` order)."""

    category_ids: list[int]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou_sum: np.ndarray

    @classmethod
    def zeros(cls, category_ids: Sequence[int]) -> "PanopticCounts":
        n = len(category_ids)
        z = np.zeros(n, np.int64)
        return cls([int(c) for c in category_ids], z, z.copy(), z.copy(), np.zeros(n))

    def __iadd__(self, other: "PanopticCounts") -> "PanopticCounts":
        if other.category_ids != self.category_ids:
            raise ValueError("cannot add panoptic counts over different categories")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_sum += other.iou_sum
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"category_ids": self.category_ids, "tp": self.tp.tolist(), "fp": self.fp.tolist(),
                "fn": self.fn.tolist(), "iou_sum": self.iou_sum.tolist()}

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> "PanopticCounts":
        return cls([int(c) for c in d["category_ids"]], np.asarray(d["tp"], np.int64), np.asarray(d["fp"], np.int64),
                   np.asarray(d["fn"], np.int64), np.asarray(d["iou_sum"], np.float64))


@dataclass
class PanopticScores(ToDictMixin):
    """PQ, SQ, RQ (fractions) overall, for things and for stuff, with the category counts ``n_*``; per class."""

    pq: float
    sq: float
    rq: float
    n: int
    pq_things: float
    sq_things: float
    rq_things: float
    n_things: int
    pq_stuff: float
    sq_stuff: float
    rq_stuff: float
    n_stuff: int
    per_class: dict[int, dict[str, float]]
    counts: PanopticCounts

    def row(self) -> dict[str, float]:
        """The paper's layout: PQ SQ RQ, PQ^Th SQ^Th RQ^Th, PQ^St SQ^St RQ^St."""
        return {"PQ": self.pq, "SQ": self.sq, "RQ": self.rq, "PQ_th": self.pq_things, "SQ_th": self.sq_things,
                "RQ_th": self.rq_things, "PQ_st": self.pq_stuff, "SQ_st": self.sq_stuff, "RQ_st": self.rq_stuff}


def _segment_areas(ids: np.ndarray, segments: Sequence[Mapping[str, Any]], what: str) -> dict[int, dict[str, Any]]:
    segs = {int(s["id"]): dict(s) for s in segments}
    labels, cnt = np.unique(ids, return_counts=True)
    listed = set(segs)
    for lab, n in zip(labels.tolist(), cnt.tolist()):
        if lab == VOID:
            continue
        if lab not in segs:
            raise ValueError(f"{what}: segment id {lab} is in the map but not in segments_info")
        segs[lab]["area"] = int(n)
        listed.discard(lab)
    if listed and what == "prediction":
        raise ValueError(f"prediction: segments {sorted(listed)[:10]} are in segments_info but not in the map")
    for s in listed:  # ground truth listed but absent: area as given (the reference reads it from the JSON)
        segs[s].setdefault("area", 0)
    return segs


def pq_counts(gt_ids: np.ndarray, gt_segments: Sequence[Mapping[str, Any]], pred_ids: np.ndarray,
              pred_segments: Sequence[Mapping[str, Any]], category_ids: Sequence[int]) -> PanopticCounts:
    """TP/FP/FN/IoU sums of one image with the reference rules (module docstring).

    ``*_ids``: (H, W) segment ids (0 = void); ``*_segments``: ``segments_info`` dicts with ``id``,
    ``category_id`` and (ground truth) ``iscrowd``. Raises ``ValueError`` for ids and segment lists that do not
    agree, unknown categories, or maps of different sizes.
    """
    gt_ids, pred_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
    if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 2:
        raise ValueError(f"panoptic maps must be (H, W) of one size, got {gt_ids.shape} and {pred_ids.shape}")
    if gt_ids.size and (min(gt_ids.min(), pred_ids.min()) < 0 or max(gt_ids.max(), pred_ids.max()) >= OFFSET):
        raise ValueError("panoptic segment ids must lie in 0..256^3-1")
    cats = [int(c) for c in category_ids]
    index = {c: k for k, c in enumerate(cats)}
    out = PanopticCounts.zeros(cats)
    gt = _segment_areas(gt_ids, gt_segments, "ground truth")
    pred = _segment_areas(pred_ids, pred_segments, "prediction")
    for what, segs in (("ground truth", gt), ("prediction", pred)):
        for s in segs.values():
            if int(s["category_id"]) not in index:
                raise ValueError(f"{what}: segment {s['id']} has unknown category_id {s['category_id']}")
    joint, inter = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
    pairs = {(int(j // OFFSET), int(j % OFFSET)): int(n) for j, n in zip(joint.tolist(), inter.tolist())}
    gt_matched, pred_matched = set(), set()
    for (g, p), n in pairs.items():
        if g not in gt or p not in pred:
            continue
        gs, ps = gt[g], pred[p]
        if gs.get("iscrowd", 0) == 1 or int(gs["category_id"]) != int(ps["category_id"]):
            continue
        union = ps["area"] + gs["area"] - n - pairs.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            k = index[int(gs["category_id"])]
            out.tp[k] += 1
            out.iou_sum[k] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd: dict[int, int] = {}
    for g, gs in gt.items():
        if g in gt_matched:
            continue
        if gs.get("iscrowd", 0) == 1:
            crowd[int(gs["category_id"])] = g
            continue
        out.fn[index[int(gs["category_id"])]] += 1
    for p, ps in pred.items():
        if p in pred_matched:
            continue
        c = int(ps["category_id"])
        n = pairs.get((VOID, p), 0)
        if c in crowd:
            n += pairs.get((crowd[c], p), 0)
        if n / ps["area"] > 0.5:
            continue
        out.fp[index[c]] += 1
    return out


def panoptic_scores(counts: PanopticCounts, categories: Sequence[Mapping[str, Any]]) -> PanopticScores:
    """PQ/SQ/RQ from summed counts; ``categories`` are COCO category dicts with ``id`` and ``isthing``."""
    isthing = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
    per_class: dict[int, dict[str, float]] = {}
    sums = {None: [0.0, 0.0, 0.0, 0], True: [0.0, 0.0, 0.0, 0], False: [0.0, 0.0, 0.0, 0]}
    for k, c in enumerate(counts.category_ids):
        tp, fp, fn, iou = int(counts.tp[k]), int(counts.fp[k]), int(counts.fn[k]), float(counts.iou_sum[k])
        if tp + fp + fn == 0:
            per_class[c] = {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "tp": 0, "fp": 0, "fn": 0}
            continue
        den = tp + 0.5 * fp + 0.5 * fn
        pq, sq, rq = iou / den, (iou / tp if tp else 0.0), tp / den
        per_class[c] = {"pq": pq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
        for key in (None, isthing.get(c, True)):
            s = sums[key]
            s[0] += pq
            s[1] += sq
            s[2] += rq
            s[3] += 1

    def avg(key: Any) -> tuple[float, float, float, int]:
        pq, sq, rq, n = sums[key]
        return (pq / n, sq / n, rq / n, n) if n else (float("nan"),) * 3 + (0,)  # type: ignore[return-value]

    return PanopticScores(*avg(None), *avg(True), *avg(False), per_class, counts)
