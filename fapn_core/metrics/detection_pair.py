"""Two detectors on one image: COCO's per-object matching of A and B against ground truth, per-image AP by
size, the objects only one of them finds (with or without ground truth) and the mask errors around an object.

Everything is in COCO terms: ground truth as COCO annotations, detections as COCO results (``category_id`` =
dataset category id, see :func:`detector_category_ids`), matching and AP from ``pycocotools`` /
``faster-coco-eval`` (:mod:`.detection`). The per-object records are :class:`.objects.DetectionObjectRecord`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ._serialize import ToDictMixin
from .detection import coco_evaluate, image_matches
from .objects import DetectionObjectRecord, FalsePositive, detection_object_records, false_positives

AP_KEYS = ("AP", "AP50", "AP_S", "AP_M", "AP_L")


def detector_category_ids(card: Mapping[str, Any]) -> list[int]:
    """Dataset category id of each ROI class of a detector card (``thing_category_ids``, else 0..K-1)."""
    n = len(card.get("classes") or [])
    ids = card.get("thing_category_ids")
    if ids is None:
        return list(range(n))
    if len(ids) != n:
        raise ValueError(f"model {card.get('name')!r}: {len(ids)} thing_category_ids for {n} classes")
    return [int(i) for i in ids]


def detector_categories(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """COCO ``categories`` of a detector card's thing classes (id = dataset category id)."""
    return [{"id": i, "name": str(n), "isthing": 1}
            for i, n in zip(detector_category_ids(card), card.get("classes") or [])]


def pair_categories(card_a: Mapping[str, Any], card_b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The categories two detectors share by id; ``ValueError`` when an id means different classes."""
    a = {c["id"]: c for c in detector_categories(card_a)}
    b = {c["id"]: c for c in detector_categories(card_b)}
    clash = [(i, a[i]["name"], b[i]["name"]) for i in sorted(set(a) & set(b)) if a[i]["name"] != b[i]["name"]]
    if clash:
        i, na, nb = clash[0]
        raise ValueError(f"A and B name category {i} differently ({na!r} vs {nb!r}, {len(clash)} such ids): "
                         "their detections cannot be compared")
    if not set(a) & set(b):
        raise ValueError("A and B share no category ids: their detections cannot be compared")
    return [a.get(i) or b[i] for i in sorted(set(a) | set(b))]


def names_by_id(categories: Sequence[Mapping[str, Any]]) -> list[str]:
    """A list indexed by category id (gaps named ``class_<id>``)."""
    n = max((int(c["id"]) for c in categories), default=-1) + 1
    out = [f"class_{i}" for i in range(n)]
    for c in categories:
        out[int(c["id"])] = str(c["name"])
    return out


# --------------------------------------------------------------------------------------- ground truth
def _to_rle(seg: Any, h: int, w: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, h, w)
    return {"size": list(seg["size"]), "counts": seg["counts"].encode() if isinstance(seg["counts"], str)
            else seg["counts"]}


def parse_json_bytes(raw: bytes, src: str, max_bytes: int = 256 << 20) -> Any:
    """JSON from uploaded bytes; empty, oversized or unparsable input raises ``CocoFormatError``."""
    import json

    from ..data.coco import CocoFormatError

    if not raw:
        raise CocoFormatError(f"{src}: empty file")
    if len(raw) > max_bytes:
        raise CocoFormatError(f"{src}: {len(raw) / 2**20:.0f} MiB, over the {max_bytes >> 20} MiB limit")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CocoFormatError(f"{src}: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None


def image_ground_truth(data: Mapping[str, Any], image_hw: tuple[int, int], file_name: str | None = None, *,
                       src: str = "COCO JSON") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(annotations, categories) of one image from a COCO instances dict, checked against the image.

    The image entry is the one whose ``file_name`` matches ``file_name`` (base names), else the only one. Its
    height × width must equal ``image_hw``. Segmentations come back as compressed RLE with string counts;
    annotations get ``image_id`` 1 (the app's single image). ``CocoFormatError`` for every mismatch.
    """
    from ..data.coco import CocoFormatError, check_instances

    data = check_instances(data, src)
    images = data["images"]
    if not images:
        raise CocoFormatError(f"{src} lists no images")
    base = None if file_name is None else str(file_name).replace("\\", "/").rsplit("/", 1)[-1]
    named = [im for im in images if base is not None
             and str(im.get("file_name", "")).replace("\\", "/").rsplit("/", 1)[-1] == base]
    if named:
        img = named[0]
    elif len(images) == 1:
        img = images[0]
    else:
        raise CocoFormatError(f"{src} lists {len(images)} images and none is named {base!r}: upload the JSON of "
                              "this image (or one whose file_name matches the uploaded image)")
    h, w = int(img["height"]), int(img["width"])
    if (h, w) != tuple(int(v) for v in image_hw):
        raise CocoFormatError(f"{src}: image {img.get('file_name', img['id'])!r} is {w}×{h} px, the uploaded image "
                              f"{image_hw[1]}×{image_hw[0]}: this JSON does not belong to this image")
    anns = []
    for a in data["annotations"]:
        if a["image_id"] != img["id"]:
            continue
        a = dict(a, image_id=1)
        if "segmentation" in a:
            rle = _to_rle(a["segmentation"], h, w)
            a["segmentation"] = dict(size=list(rle["size"]), counts=rle["counts"].decode()
                                     if isinstance(rle["counts"], bytes) else rle["counts"])
        anns.append(a)
    return anns, [dict(c, isthing=1) for c in data["categories"]]


def annotations_from_maps(label: np.ndarray, instances: np.ndarray,
                          thing_classes: Sequence[int]) -> list[dict[str, Any]]:
    """COCO annotations of one image's class + instance maps (``data.coco.gt_annotations``) whose ``id`` is the
    object's instance id, so an object has the same id here as in the label-map object table
    (:func:`.objects.extract_objects`); crowd regions are numbered after the largest instance id."""
    from pycocotools import mask as mask_utils

    from ..data.coco import gt_annotations

    inst = np.asarray(instances)
    anns = gt_annotations(label, inst, thing_classes, image_id=1)
    h, w = inst.shape[:2]
    top = 0
    for a in anns:
        if a.get("iscrowd", 0):
            continue
        m = mask_utils.decode(_to_rle(a["segmentation"], h, w)).astype(bool)
        a["id"] = int(inst[m][0])
        top = max(top, a["id"])
    for a in anns:
        if a.get("iscrowd", 0):
            top += 1
            a["id"] = top
    return anns


def resize_annotations(anns: Sequence[Mapping[str, Any]], from_hw: tuple[int, int],
                       to_hw: tuple[int, int]) -> list[dict[str, Any]]:
    """Annotations of an image resized from ``from_hw`` to ``to_hw``: masks resized (nearest), boxes scaled,
    areas recomputed from the masks (box area for box-only annotations)."""
    from pycocotools import mask as mask_utils

    from ..data.coco import encode_mask

    (h0, w0), (h1, w1) = from_hw, to_hw
    if (h0, w0) == (h1, w1):
        return [dict(a) for a in anns]
    sx, sy = w1 / w0, h1 / h0
    out = []
    for a in anns:
        x, y, bw, bh = a["bbox"]
        b = dict(a, bbox=[x * sx, y * sy, bw * sx, bh * sy])
        if "segmentation" in a:
            m = mask_utils.decode(_to_rle(a["segmentation"], h0, w0))
            m = cv2.resize(m, (w1, h1), interpolation=cv2.INTER_NEAREST)
            b["segmentation"] = encode_mask(m.astype(bool))
            b["area"] = float(m.sum())
        else:
            b["area"] = b["bbox"][2] * b["bbox"][3]
        out.append(b)
    return out


def annotation_arrays(anns: Sequence[Mapping[str, Any]], image_hw: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(boxes XYXY (N, 4), category ids (N,), masks (N, H, W) bool or None when any lacks one, crowd (N,))."""
    from pycocotools import mask as mask_utils

    h, w = image_hw
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns], np.float32).reshape(-1, 4)
    cats = np.array([int(a["category_id"]) for a in anns], np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    masks = None
    if anns and all("segmentation" in a for a in anns):
        masks = np.stack([mask_utils.decode(_to_rle(a["segmentation"], h, w)).astype(bool) for a in anns])
    elif not anns:
        masks = np.zeros((0, h, w), bool)
    return boxes, cats, masks, crowd


# --------------------------------------------------------------------------------------- A vs B
@dataclass
class Agreement(ToDictMixin):
    """A's and B's detections paired without ground truth: same category, IoU ≥ ``iou_thresh`` (mask IoU when
    both have masks, else box IoU), greedy in A's score order. ``matched``: (index in A, index in B, IoU)."""

    iou_type: str
    iou_thresh: float
    score_thresh: float
    matched: list[tuple[int, int, float]]
    only_a: list[int]
    only_b: list[int]


def _ious(dts: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], iou_type: str) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    if iou_type == "segm":
        d = [_to_rle(r["segmentation"], *r["segmentation"]["size"]) for r in dts]
        g = [_to_rle(r["segmentation"], *r["segmentation"]["size"]) for r in gts]
    else:
        d, g = [list(r["bbox"]) for r in dts], [list(r["bbox"]) for r in gts]
    return np.asarray(mask_utils.iou(d, g, [0] * len(g)), np.float64).reshape(len(dts), len(gts))


def agree_detections(results_a: Sequence[Mapping[str, Any]], results_b: Sequence[Mapping[str, Any]], *,
                     iou_thresh: float = 0.5, score_thresh: float = 0.0) -> Agreement:
    """Pair A's and B's detections (scores ≥ ``score_thresh``) of one image: see :class:`Agreement`."""
    masks = all("segmentation" in r for r in [*results_a, *results_b])
    iou_type = "segm" if masks else "bbox"
    ia = [i for i, r in enumerate(results_a) if r["score"] >= score_thresh]
    ib = [i for i, r in enumerate(results_b) if r["score"] >= score_thresh]
    matched: list[tuple[int, int, float]] = []
    used_b: set[int] = set()
    for c in sorted({results_a[i]["category_id"] for i in ia} | {results_b[i]["category_id"] for i in ib}):
        ca = sorted((i for i in ia if results_a[i]["category_id"] == c), key=lambda i: -results_a[i]["score"])
        cb = [i for i in ib if results_b[i]["category_id"] == c]
        m = _ious([results_a[i] for i in ca], [results_b[i] for i in cb], iou_type)
        for r, i in enumerate(ca):
            best, best_j = iou_thresh, None
            for j, k in enumerate(cb):
                if k not in used_b and m[r, j] >= best:
                    best, best_j = m[r, j], k
            if best_j is not None:
                used_b.add(best_j)
                matched.append((i, best_j, float(best)))
    in_a = {i for i, _, _ in matched}
    return Agreement(iou_type, iou_thresh, score_thresh, sorted(matched),
                     [i for i in ia if i not in in_a], [i for i in ib if i not in used_b])


@dataclass
class DetectionComparison(ToDictMixin):
    """Detectors A and B on one image against its ground truth (COCO matching at IoU 0.5, 100 detections).

    ``iou_type``: "segm" when A, B and the ground truth all have masks, else "bbox". ``ap``: per model ("a",
    "b") and IoU type, COCO's AP / AP50 / AP_S / AP_M / AP_L on this image (fractions; NaN where the image has no
    ground truth in that size range)."""

    iou_type: str
    categories: list[dict[str, Any]]
    gt: list[dict[str, Any]]
    results_a: list[dict[str, Any]]
    results_b: list[dict[str, Any]]
    records: list[DetectionObjectRecord]
    false_positives_a: list[FalsePositive]
    false_positives_b: list[FalsePositive]
    ap: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return len(self.records)

    def counts_at(self, score_thresh: float = 0.0) -> dict[str, int]:
        """Objects found and false positives of A and B among the detections scoring ≥ ``score_thresh``
        (``found_a``, ``found_b``, ``fp_a``, ``fp_b``). COCO matches in descending score, so this equals matching
        only those detections."""
        out = {}
        for t in ("a", "b"):
            out[f"found_{t}"] = sum(bool(getattr(r, f"hit_{t}")) and getattr(r, f"score_{t}") >= score_thresh
                                    for r in self.records)
            out[f"fp_{t}"] = sum(f.score >= score_thresh for f in getattr(self, f"false_positives_{t}"))
        return out


def compare_detections(gt: Sequence[Mapping[str, Any]], results_a: Sequence[Mapping[str, Any]],
                       results_b: Sequence[Mapping[str, Any]], categories: Sequence[Mapping[str, Any]],
                       image_hw: tuple[int, int], *, boundary: bool = True) -> DetectionComparison:
    """Per-object records, false positives and per-image AP of A and B on one image (``image_id`` 1).

    Objects keep their annotation ``id`` (the uploaded JSON's, or the instance id of
    :func:`annotations_from_maps`) when those are distinct positive integers; otherwise they are numbered 1..N."""
    h, w = image_hw
    image = {"id": 1, "height": int(h), "width": int(w), "file_name": "image"}
    ids = [a.get("id") for a in gt]
    own = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i > 0 for i in ids) and \
        len(set(ids)) == len(ids)
    gt = [dict(a, image_id=1, id=int(a["id"]) if own else k + 1) for k, a in enumerate(gt)]
    cats = [dict(c) for c in categories]
    known = {c["id"] for c in cats}
    stray = sorted({a["category_id"] for a in gt} - known)
    if stray:
        raise ValueError(f"ground truth uses category ids {stray[:8]} that neither model predicts")
    masks = all("segmentation" in r for r in [*gt, *results_a, *results_b])
    iou_type = "segm" if masks else "bbox"
    ra = [dict(r, image_id=1) for r in results_a]
    rb = [dict(r, image_id=1) for r in results_b]
    names = names_by_id(cats)
    ma = image_matches(gt, ra, image, cats, iou_type)
    mb = image_matches(gt, rb, image, cats, iou_type)
    records = detection_object_records(gt, ra, rb, ma, mb, class_names=names, boundary=boundary and masks)
    fps_a = false_positives(ra, ma, model="A", class_names=names)
    fps_b = false_positives(rb, mb, model="B", class_names=names)
    ap: dict[str, dict[str, dict[str, float]]] = {}
    ds = {"images": [image], "annotations": gt, "categories": cats}
    for tag, res in (("a", ra), ("b", rb)):
        ap[tag] = {}
        if not any(not a.get("iscrowd", 0) for a in gt):
            continue
        for t in (["bbox", "segm"] if masks else ["bbox"]):
            s = coco_evaluate(ds, res, t)
            ap[tag][t] = {k: float(s.stats[k]) for k in AP_KEYS}
    return DetectionComparison(iou_type, cats, gt, ra, rb, records, fps_a, fps_b, ap)


# --------------------------------------------------------------------------------------- one object's band
def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels closer than ``width`` px to the contour of ``mask`` (inside and outside)."""
    m = np.asarray(mask, np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(m, k) > 0) & ~(cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)


def band_errors(gt_mask: np.ndarray, pred_mask: np.ndarray | None, width: int) -> dict[str, Any]:
    """Mask errors of one object within ``width`` px of its ground-truth contour: missed (GT, not predicted) and
    extra (predicted, not GT) pixels, and the band's error rate (NaN for an empty band)."""
    gt_mask = np.asarray(gt_mask, bool)
    pred = np.zeros_like(gt_mask) if pred_mask is None else np.asarray(pred_mask, bool)
    if pred.shape != gt_mask.shape:
        raise ValueError(f"prediction mask {pred.shape} and ground-truth mask {gt_mask.shape} differ")
    band = boundary_band(gt_mask, width)
    missed, extra = band & gt_mask & ~pred, band & pred & ~gt_mask
    n = int(band.sum())
    return {"band": band, "missed": missed, "extra": extra, "band_pixels": n,
            "error_rate": float((missed.sum() + extra.sum()) / n) if n else math.nan}


def mask_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """The inner boundary band of a mask as in the Boundary IoU reference (``mask_to_boundary``): mask pixels
    within ``d`` px of its contour, the image border counting as contour."""
    m = np.asarray(mask, np.uint8)
    if d < 1:
        raise ValueError(f"d must be at least 1 px, got {d}")
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=int(d))[1:-1, 1:-1]
    return (m - eroded).astype(bool)


def object_boundary_iou(gt_mask: np.ndarray, pred_mask: np.ndarray | None, d: int) -> dict[str, Any]:
    """Boundary IoU of one mask pair at width ``d`` px, with its parts: ``both`` (in both boundary bands),
    ``gt_only`` / ``pred_only`` (in one band) and ``iou`` = |both| / |both ∪ gt_only ∪ pred_only| (NaN for two
    empty bands). At d = 2 % of the image diagonal it equals :func:`.detection.boundary_ious`."""
    g = mask_boundary(gt_mask, d)
    p = np.zeros_like(g) if pred_mask is None else mask_boundary(pred_mask, d)
    if p.shape != g.shape:
        raise ValueError(f"prediction mask {p.shape} and ground-truth mask {g.shape} differ")
    both, union = g & p, g | p
    n = int(union.sum())
    return {"both": both, "gt_only": g & ~p, "pred_only": p & ~g, "d": int(d),
            "iou": float(both.sum() / n) if n else math.nan}


def object_band_width(bbox_xywh: Sequence[float], ratio: float = 0.02, max_d: int | None = None) -> int:
    """A boundary width for one object: ``ratio`` × its box diagonal (Boundary IoU's 2 % rule applied to the
    object instead of the image), at least 1 px and at most ``max_d``."""
    d = max(1, int(round(ratio * math.hypot(float(bbox_xywh[2]), float(bbox_xywh[3])))))
    return d if max_d is None else min(d, int(max_d))


def select_detections(results: Sequence[Mapping[str, Any]], *, score_thresh: float = 0.0, top_n: int | None = None,
                      category_ids: Sequence[int] | None = None, sizes: Sequence[str] | None = None) -> list[int]:
    """Indices of the detections to show: score ≥ ``score_thresh``, of ``category_ids`` and COCO ``sizes``
    (mask area when the result has a mask, else box area), the ``top_n`` best of those, in descending score."""
    from pycocotools import mask as mask_utils

    from .objects import size_bin, size_thresholds

    th = size_thresholds((0, 0))
    cats = None if category_ids is None else {int(c) for c in category_ids}
    keep = []
    for i, r in enumerate(results):
        if r["score"] < score_thresh or (cats is not None and int(r["category_id"]) not in cats):
            continue
        if sizes is not None:
            seg = r.get("segmentation")
            area = float(mask_utils.area(_to_rle(seg, *seg["size"]))) if seg else r["bbox"][2] * r["bbox"][3]
            if size_bin(area, th) not in sizes:
                continue
        keep.append(i)
    keep.sort(key=lambda i: (-results[i]["score"], i))
    return keep if top_n is None else keep[:int(top_n)]
