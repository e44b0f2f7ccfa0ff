"""Object-level (small-object) metrics: GT objects, per-object IoU/recall, size bins, iIoU.

GT objects are the instances of an instance-id map when one is given, otherwise the
8-connected components of each class mask. Per-object work is done on bbox crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ._serialize import MAP, ToDictMixin
from ._validate import (
    Prepared, check_class_subset, check_positive_int, prepare_gt, prepare_instances, prepare_pred,
)
from .confusion import nanmean, safe_div

#: COCO area ranges (px²): small < 32², medium < 96², large >= 96²
COCO_SMALL_MAX = 32**2
COCO_MEDIUM_MAX = 96**2
COCO_REFERENCE_SHAPE = (480, 640)
SIZE_BINS = ("small", "medium", "large")

#: Average instance size (px) per Cityscapes class over the train set, from the official
#: cityscapesScripts ``evalPixelLevelSemanticLabeling.py`` (``args.avgClassSize``).
CITYSCAPES_AVG_INSTANCE_SIZE: dict[str, float] = {
    "bicycle": 4672.3249222261,
    "caravan": 36771.8241758242,
    "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "car": 12794.0202738185,
    "person": 3462.4756337644,
    "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}

DEFAULT_OBJECT_MARGIN = 8


# --------------------------------------------------------------------------- extraction
@dataclass
class GTObjects(ToDictMixin):
    """Ground-truth objects of one image. Object k (0-based) has pixels ``label_map == k + 1``."""

    source: str  # "instances" or "components"
    num_classes: int
    image_shape: tuple[int, int]
    object_ids: np.ndarray  # (K,) instance id, or 1..K for connected components
    class_ids: np.ndarray  # (K,)
    areas: np.ndarray  # (K,) valid pixels
    bboxes: np.ndarray  # (K, 4) x, y, w, h (tight, of the object's pixels)
    label_map: np.ndarray = field(metadata=MAP)  # int32 HxW, 0 = no object

    def __len__(self) -> int:
        return int(self.class_ids.size)


def _empty_objects(prep: Prepared, source: str, label_map: np.ndarray) -> GTObjects:
    z = np.zeros(0, dtype=np.int64)
    return GTObjects(source, prep.num_classes, prep.shape, z, z.copy(), z.copy(), np.zeros((0, 4), np.int64), label_map)


def _components(prep: Prepared, classes: np.ndarray, min_area: int) -> GTObjects:
    h, w = prep.shape
    label_map = np.zeros((h, w), dtype=np.int32)
    present = np.flatnonzero(np.bincount(prep.gt.ravel(), minlength=prep.ign + 1)[: prep.num_classes])
    cls_l, area_l, box_l = [], [], []
    n = 0
    for c in np.intersect1d(present, classes):
        mask = (prep.gt == c).view(np.uint8)
        x, y, bw, bh = cv2.boundingRect(mask)
        crop = np.ascontiguousarray(mask[y : y + bh, x : x + bw])
        k, lab, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(crop, 8, cv2.CV_32S, cv2.CCL_GRANA)
        stats = stats[1:].astype(np.int64)
        keep = stats[:, 4] >= min_area
        if not keep.any():
            continue
        sub = label_map[y : y + bh, x : x + bw]
        if keep.all():  # component j -> global id n + j
            np.add(lab, n, out=sub, where=crop.view(bool))
        else:
            lut = np.zeros(k, dtype=np.int32)
            lut[1:][keep] = n + 1 + np.arange(int(keep.sum()), dtype=np.int32)
            np.copyto(sub, lut[lab], where=crop.view(bool))
        st = stats[keep]
        box = st[:, :4].copy()
        box[:, 0] += x
        box[:, 1] += y
        cls_l.append(np.full(len(st), c, dtype=np.int64))
        area_l.append(st[:, 4])
        box_l.append(box)
        n += len(st)
    if n == 0:
        return _empty_objects(prep, "components", label_map)
    return GTObjects(
        "components", prep.num_classes, prep.shape, np.arange(1, n + 1, dtype=np.int64),
        np.concatenate(cls_l), np.concatenate(area_l), np.concatenate(box_l), label_map,
    )


def _instances(prep: Prepared, inst: np.ndarray, classes: np.ndarray, min_area: int) -> GTObjects:
    h, w = prep.shape
    c = prep.num_classes
    label_map = np.zeros((h, w), dtype=np.int32)
    sel = inst != 0
    if not prep.all_valid:
        sel &= prep.valid
    flat = np.flatnonzero(sel)
    if flat.size == 0:
        return _empty_objects(prep, "instances", label_map)
    ids, inv = np.unique(inst.ravel()[flat], return_inverse=True)
    inv = inv.ravel()
    gcls = prep.gt.ravel()[flat].astype(np.int64)
    # majority GT class per instance (ties -> lowest class id)
    keys, counts = np.unique(inv.astype(np.int64) * c + gcls, return_counts=True)
    obj, kcls = keys // c, keys % c
    order = np.lexsort((kcls, -counts, obj))
    first = order[np.r_[True, obj[order][1:] != obj[order][:-1]]]
    cls_of = kcls[first]
    area = counts[first]
    keep = np.isin(cls_of, classes) & (area >= min_area)
    if not keep.any():
        return _empty_objects(prep, "instances", label_map)
    new = np.full(ids.size, -1, dtype=np.int64)
    new[keep] = np.arange(int(keep.sum()))
    px = (gcls == cls_of[inv]) & keep[inv]
    flat, o = flat[px], new[inv[px]]
    label_map.ravel()[flat] = (o + 1).astype(np.int32)
    ys, xs = np.divmod(flat, w)
    k = int(keep.sum())
    big = np.iinfo(np.int64).max
    y0 = np.full(k, big); x0 = np.full(k, big)
    y1 = np.full(k, -1); x1 = np.full(k, -1)
    np.minimum.at(y0, o, ys); np.minimum.at(x0, o, xs)
    np.maximum.at(y1, o, ys); np.maximum.at(x1, o, xs)
    boxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1).astype(np.int64)
    return GTObjects(
        "instances", c, prep.shape, ids[keep].astype(np.int64), cls_of[keep], area[keep].astype(np.int64),
        boxes, label_map,
    )


def extract_objects_prepared(
    prep: Prepared, instances: np.ndarray | None, thing_classes: Sequence[int] | None, min_area: int
) -> GTObjects:
    classes = check_class_subset(thing_classes, prep.num_classes, "thing_classes")
    if classes is None:
        classes = np.arange(prep.num_classes)
    min_area = check_positive_int(min_area, "min_area")
    if instances is None:
        return _components(prep, classes, min_area)
    return _instances(prep, prepare_instances(instances, prep), classes, min_area)


def extract_objects(
    gt: np.ndarray,
    num_classes: int,
    *,
    instances: np.ndarray | None = None,
    ignore_index: int = 255,
    thing_classes: Sequence[int] | None = None,
    min_area: int = 1,
) -> GTObjects:
    """GT objects: instances (id != 0) when ``instances`` is given, else 8-connected components per class.

    An instance's class is the majority GT class of its non-ignored pixels; its mask is those
    pixels carrying that class. ``thing_classes`` restricts the classes considered.
    """
    prep = prepare_gt(gt, num_classes, ignore_index)
    return extract_objects_prepared(prep, instances, thing_classes, min_area)


# --------------------------------------------------------------------------- scoring
@dataclass
class ObjectScores(ToDictMixin):
    """Per-object scores of one prediction (arrays aligned with ``GTObjects``)."""

    tp: np.ndarray  # object pixels predicted as the object's class
    fp: np.ndarray  # neighbourhood pixels of other (non-ignored) GT classes predicted as the object's class
    recall: np.ndarray  # tp / area
    iou: np.ndarray  # tp / (area + fp)
    hit: np.ndarray  # recall >= 0.5


def score_objects_prepared(
    prep: Prepared, preds: Sequence[np.ndarray], objs: GTObjects, margin: int
) -> list[ObjectScores]:
    k = len(objs)
    h, w = prep.shape
    gt, lm, ign = prep.gt, objs.label_map, prep.ign
    tp = np.zeros((len(preds), k), dtype=np.int64)
    fp = np.zeros((len(preds), k), dtype=np.int64)
    for i in range(k):
        x, y, bw, bh = (int(v) for v in objs.bboxes[i])
        c = int(objs.class_ids[i])
        own = lm[y : y + bh, x : x + bw] == i + 1
        y0, y1, x0, x1 = max(0, y - margin), min(h, y + bh + margin), max(0, x - margin), min(w, x + bw + margin)
        g = gt[y0:y1, x0:x1]
        other = (g != c) & (g != ign)
        for j, p in enumerate(preds):
            tp[j, i] = np.count_nonzero(own & (p[y : y + bh, x : x + bw] == c))
            fp[j, i] = np.count_nonzero(other & (p[y0:y1, x0:x1] == c))
    out = []
    area = objs.areas.astype(np.float64)
    for j in range(len(preds)):
        rec = safe_div(tp[j], area)
        out.append(ObjectScores(tp[j], fp[j], rec, safe_div(tp[j], area + fp[j]), rec >= 0.5))
    return out


def score_objects(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    objects: GTObjects,
    *,
    margin: int = DEFAULT_OBJECT_MARGIN,
    ignore_index: int = 255,
) -> ObjectScores:
    """Per-object tp, fp, recall, IoU and hit of one prediction.

    IoU = |M ∩ P| / |M ∪ (P ∩ N)|, M = object mask, P = pixels predicted as the object's class,
    N = the object's bbox grown by ``margin`` px (clipped to the image) minus ignore pixels and
    minus every other GT pixel of the same class (other objects of the class never count as FP).
    """
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    if objects.image_shape != prep.shape:
        raise ValueError(
            f"shape mismatch: gt has shape {prep.shape} but objects were extracted from {objects.image_shape}"
        )
    m = check_positive_int(margin, "margin", minimum=0)
    return score_objects_prepared(prep, [p], objects, m)[0]


# --------------------------------------------------------------------------- size bins
def size_thresholds(image_shape: Sequence[int], scale_to: Sequence[int] | None = None) -> tuple[float, float]:
    """Area thresholds (small_max, medium_max) in px².

    COCO ranges (32², 96²). With ``scale_to=(h_ref, w_ref)`` (e.g. COCO's (480, 640)), the side
    thresholds are multiplied by sqrt(H*W / (h_ref*w_ref)), i.e. the areas by H*W / (h_ref*w_ref).
    """
    if scale_to is None:
        return float(COCO_SMALL_MAX), float(COCO_MEDIUM_MAX)
    h_ref, w_ref = (int(v) for v in scale_to)
    if h_ref <= 0 or w_ref <= 0:
        raise ValueError(f"scale_to must be a positive (height, width), got {tuple(scale_to)}")
    f = (int(image_shape[0]) * int(image_shape[1])) / float(h_ref * w_ref)
    return COCO_SMALL_MAX * f, COCO_MEDIUM_MAX * f


def size_bin(area: float, thresholds: tuple[float, float]) -> str:
    """'small' (< t0), 'medium' (< t1) or 'large'."""
    return "small" if area < thresholds[0] else ("medium" if area < thresholds[1] else "large")


# --------------------------------------------------------------------------- records & summaries
@dataclass
class ObjectRecord(ToDictMixin):
    """One GT object scored against predictions A and B."""

    object_id: int
    class_id: int
    class_name: str | None
    area: int
    bbox: list[int]  # x, y, w, h
    size: str
    tp_a: int
    tp_b: int
    recall_a: float
    recall_b: float
    iou_a: float
    iou_b: float
    hit_a: bool
    hit_b: bool
    outcome: str  # "recovered" (B hits, A misses) | "lost" | "both_hit" | "both_missed"
    image: Any = None


def _outcome(hit_a: bool, hit_b: bool) -> str:
    if hit_b and not hit_a:
        return "recovered"
    if hit_a and not hit_b:
        return "lost"
    return "both_hit" if hit_a else "both_missed"


def object_records(
    objects: GTObjects,
    scores_a: ObjectScores,
    scores_b: ObjectScores,
    *,
    class_names: Sequence[str] | None = None,
    scale_to: Sequence[int] | None = None,
    image: Any = None,
) -> list[ObjectRecord]:
    """Per-object table joining the scores of predictions A and B."""
    th = size_thresholds(objects.image_shape, scale_to)
    recs = []
    for i in range(len(objects)):
        c = int(objects.class_ids[i])
        ha, hb = bool(scores_a.hit[i]), bool(scores_b.hit[i])
        recs.append(
            ObjectRecord(
                int(objects.object_ids[i]), c, None if class_names is None else str(class_names[c]),
                int(objects.areas[i]), [int(v) for v in objects.bboxes[i]], size_bin(objects.areas[i], th),
                int(scores_a.tp[i]), int(scores_b.tp[i]), float(scores_a.recall[i]), float(scores_b.recall[i]),
                float(scores_a.iou[i]), float(scores_b.iou[i]), ha, hb, _outcome(ha, hb), image,
            )
        )
    return recs


@dataclass
class SizeBinSummary(ToDictMixin):
    """Aggregate object scores of one size bin."""

    size: str
    n_objects: int
    hits_a: int
    hits_b: int
    hit_rate_a: float
    hit_rate_b: float
    mean_recall_a: float
    mean_recall_b: float
    mean_iou_a: float
    mean_iou_b: float
    recovered_by_b: int
    lost_by_b: int


def summarize_objects(records: Sequence[Any]) -> dict[str, SizeBinSummary]:
    """Summaries for 'small', 'medium', 'large' and 'all' objects (NaN rates for empty bins).

    Takes :class:`ObjectRecord` or :class:`DetectionObjectRecord` lists (the latter have no recall: NaN)."""
    out = {}
    for name in (*SIZE_BINS, "all"):
        rs = [r for r in records if name == "all" or r.size == name]
        n = len(rs)
        ha = sum(r.hit_a for r in rs)
        hb = sum(r.hit_b for r in rs)
        out[name] = SizeBinSummary(
            name, n, ha, hb, ha / n if n else float("nan"), hb / n if n else float("nan"),
            nanmean([getattr(r, "recall_a", np.nan) for r in rs]), nanmean([getattr(r, "recall_b", np.nan) for r in rs]),
            nanmean([r.iou_a for r in rs]), nanmean([r.iou_b for r in rs]),
            sum(r.outcome == "recovered" for r in rs), sum(r.outcome == "lost" for r in rs),
        )
    return out


# --------------------------------------------------------------------------- detections: A vs B per object
@dataclass
class DetectionObjectRecord(ToDictMixin):
    """One GT object against detectors A and B: COCO's match at IoU 0.5 in the object's own area range.

    ``hit_*``: COCO matched a detection of the object's class to it (pycocotools ``evaluateImg``, 100 detections,
    IoU threshold 0.5). ``det_*``/``iou_*``/``score_*``: that detection, or, when unmatched, the detection of the
    same class with the highest IoU; when no detection of its class overlaps it, det None, IoU 0 and score NaN. ``boundary_iou_*``: Boundary IoU of the mask
    pair (NaN without masks or detection). ``outcome`` as :class:`ObjectRecord`: "recovered" = only B found it,
    "lost" = only A, "both_hit", "both_missed"."""

    object_id: int
    class_id: int
    class_name: str | None
    area: int
    bbox: list[float]  # x, y, w, h
    size: str
    det_a: int | None
    det_b: int | None
    iou_a: float
    iou_b: float
    score_a: float
    score_b: float
    boundary_iou_a: float
    boundary_iou_b: float
    hit_a: bool
    hit_b: bool
    outcome: str
    image: Any = None


@dataclass
class FalsePositive(ToDictMixin):
    """A detection COCO matched to nothing at IoU 0.5 (area range "all"; crowd-matched ones are not false
    positives). ``best_iou``: its highest IoU with a GT object of its class (0 when there is none)."""

    model: str
    det: int
    class_id: int
    class_name: str | None
    score: float
    bbox: list[float]
    size: str
    best_iou: float
    image: Any = None


_COCO_AREA = {"small": "small", "medium": "medium", "large": "large"}


def _best(matches: Any, gid: int, area: str, n_dets: int) -> tuple[int | None, float, bool]:
    d = matches.gt_match.get(gid, {}).get(area)
    if d is not None:
        return d, matches.iou.get((d, gid), float("nan")), True
    cand = [(v, i) for (i, g), v in matches.iou.items() if g == gid and i < n_dets]
    v, i = max(cand, key=lambda t: (t[0], -t[1])) if cand else (0.0, None)
    if v <= 0.0:  # no detection of its class overlaps it: IoU 0, and no detection to show or score
        return None, 0.0, False
    return i, v, False


def detection_object_records(
    gt_anns: Sequence[Mapping[str, Any]],
    results_a: Sequence[Mapping[str, Any]],
    results_b: Sequence[Mapping[str, Any]],
    matches_a: Any,
    matches_b: Any,
    *,
    class_names: Sequence[str] | None = None,
    boundary: bool = True,
    boundary_dilation_ratio: float = 0.02,
    image: Any = None,
) -> list[DetectionObjectRecord]:
    """Per-object table of one image from COCO's matching of A and B (``metrics.detection.image_matches``).

    Crowd annotations are not objects. Size bins are COCO's (area = mask pixels): small < 32², medium < 96².
    """
    from .detection import boundary_ious

    th = size_thresholds((0, 0))
    recs = []
    for g in gt_anns:
        if g.get("iscrowd", 0):
            continue
        gid, area = int(g["id"]), float(g["area"])
        size = size_bin(area, th)
        side = []
        for res, m in ((results_a, matches_a), (results_b, matches_b)):
            d, iou, hit = _best(m, gid, _COCO_AREA[size], len(res))
            score = float(res[d]["score"]) if d is not None else float("nan")
            biou = float("nan")
            if boundary and d is not None and "segmentation" in res[d] and "segmentation" in g:
                biou = float(boundary_ious([g["segmentation"]], [res[d]["segmentation"]], boundary_dilation_ratio)[0])
            side.append((d, iou, score, biou, hit))
        (da, ia, sa, ba, ha), (db, ib, sb, bb, hb) = side
        c = int(g["category_id"])
        recs.append(DetectionObjectRecord(
            gid, c, None if class_names is None else str(class_names[c]), int(round(area)),
            [float(v) for v in g["bbox"]], size, da, db, ia, ib, sa, sb, ba, bb, ha, hb, _outcome(ha, hb), image))
    return recs


def false_positives(results: Sequence[Mapping[str, Any]], matches: Any, *, model: str,
                    class_names: Sequence[str] | None = None, image: Any = None) -> list[FalsePositive]:
    """The detections of one image that COCO left unmatched at IoU 0.5 (area range "all")."""
    th = size_thresholds((0, 0))
    best: dict[int, float] = {}
    for (i, _g), v in matches.iou.items():
        best[i] = max(best.get(i, 0.0), v)
    out = []
    for i, g in sorted(matches.dt_match["all"].items()):
        if g is not None:
            continue
        r = results[i]
        c = int(r["category_id"])
        bx = [float(v) for v in r["bbox"]]
        out.append(FalsePositive(model, i, c, None if class_names is None else str(class_names[c]), float(r["score"]),
                                 bx, size_bin(bx[2] * bx[3], th), best.get(i, 0.0), image))
    return out


# --------------------------------------------------------------------------- instance-level IoU
@dataclass
class InstanceIoUScores(ToDictMixin):
    """Cityscapes iIoU per class: TP and FN weighted by avg_size / instance size, FP unweighted."""

    classes: list[int]  # evaluated classes
    avg_size: np.ndarray  # (C,) weight numerator used per class (NaN if none)
    tp_weighted: np.ndarray  # (C,)
    fn_weighted: np.ndarray  # (C,)
    fp: np.ndarray  # (C,) pixels of other non-ignored GT classes predicted as the class
    iiou: np.ndarray  # (C,) NaN for classes not evaluated or with empty denominator
    mean: float


def resolve_avg_size(
    avg_instance_size: Mapping[Any, float] | Sequence[float] | None,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray | None:
    """(C,) array of per-class average instance sizes (NaN where unknown) from a mapping or sequence.

    Mapping keys may be class ids or, when ``class_names`` is given, class names
    (e.g. ``CITYSCAPES_AVG_INSTANCE_SIZE``).
    """
    if avg_instance_size is None:
        return None
    out = np.full(num_classes, np.nan)
    if isinstance(avg_instance_size, Mapping):
        names = {n: i for i, n in enumerate(class_names or [])}
        for k, v in avg_instance_size.items():
            if isinstance(k, str):
                if k in names:
                    out[names[k]] = float(v)
            elif 0 <= int(k) < num_classes:
                out[int(k)] = float(v)
            else:
                raise ValueError(f"avg_instance_size has class id {k} outside 0..{num_classes - 1}")
    else:
        arr = np.asarray(avg_instance_size, dtype=np.float64)
        if arr.shape != (num_classes,):
            raise ValueError(f"avg_instance_size has {arr.size} entries but num_classes={num_classes}")
        out[:] = arr
    if np.any(out <= 0):
        raise ValueError("avg_instance_size values must be positive")
    return out


def instance_iou_from_counts(
    class_ids: np.ndarray,
    areas: np.ndarray,
    tp: np.ndarray,
    confusion: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    avg_size: np.ndarray | None = None,
) -> InstanceIoUScores:
    """iIoU_c = TPw / (TPw + FNw + FP) as in cityscapesScripts (``getInstanceIouScoreForLabel``).

    For each instance i of class c: w_i = avg_size[c] / area_i, TPw += w_i * tp_i,
    FNw += w_i * (area_i - tp_i). FP = column sum of c over the other GT classes (unweighted).
    ``avg_size`` defaults to the mean instance area of each class over the given instances.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    c = cm.shape[0]
    class_ids = np.asarray(class_ids, dtype=np.int64)
    areas = np.asarray(areas, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.float64)
    eval_cls = np.arange(c) if classes is None else np.asarray(sorted(set(int(v) for v in classes)), dtype=np.int64)
    n_obj = np.bincount(class_ids, minlength=c)[:c]
    mean_area = safe_div(np.bincount(class_ids, weights=areas, minlength=c)[:c], n_obj)
    avg = mean_area if avg_size is None else np.asarray(avg_size, dtype=np.float64)
    missing = np.flatnonzero((n_obj > 0) & np.isnan(avg))
    if missing.size:
        raise ValueError(f"avg_instance_size is missing classes {missing.tolist()} that have instances")
    wts = avg[class_ids] / areas if class_ids.size else np.zeros(0)
    tpw = np.bincount(class_ids, weights=tp * wts, minlength=c)[:c]
    fnw = np.bincount(class_ids, weights=(areas - tp) * wts, minlength=c)[:c]
    fp = (cm.sum(0) - np.diag(cm)).astype(np.int64)
    iiou = np.full(c, np.nan)
    iiou[eval_cls] = safe_div(tpw, tpw + fnw + fp)[eval_cls]
    return InstanceIoUScores([int(v) for v in eval_cls], avg, tpw, fnw, fp, iiou, nanmean(iiou))


def instance_iou(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    instances: np.ndarray | None = None,
    ignore_index: int = 255,
    thing_classes: Sequence[int] | None = None,
    avg_instance_size: Mapping[Any, float] | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> InstanceIoUScores:
    """Cityscapes-style instance-weighted IoU (iIoU) of one image."""
    from .confusion import _confusion_prepared

    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    objs = extract_objects_prepared(prep, instances, thing_classes, 1)
    sc = score_objects_prepared(prep, [p], objs, 0)[0]
    avg = resolve_avg_size(avg_instance_size, prep.num_classes, class_names)
    return instance_iou_from_counts(
        objs.class_ids, objs.areas, sc.tp, _confusion_prepared(prep, p), classes=thing_classes, avg_size=avg
    )
