"""COCO box, mask and Boundary AP through the reference tools, and their per-image matching.

Dataset numbers come from ``faster-coco-eval`` (default; C++ port of ``pycocotools``' ``COCOeval``, equal to it
to 1e-4 on the lab's benchmark, see ``docs/performance.md``) or from ``pycocotools`` itself
(``backend="pycocotools"``): AP over IoU 0.50:0.95, AP50, AP75, AP_S/AP_M/AP_L, AR1/AR10/AR100 and AR_S/AR_M/AR_L,
with COCO's own area ranges, crowd handling and 100 detections per image. Boundary AP (Cheng et al., CVPR 2021)
is ``faster-coco-eval``'s ``boundary`` IoU type: min(mask IoU, Boundary IoU) with dilation ratio 0.02, crowd
regions matched by mask IoU. Nothing here re-implements AP: this module builds the inputs, calls the library and
reads its arrays. :func:`image_matches` runs ``pycocotools``' own ``evaluateImg`` on one image to tell which
detection COCO matched to which ground-truth object (the per-object view in :mod:`.objects`).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._serialize import ToDictMixin

STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
IOU_TYPES = ("bbox", "segm", "boundary")
AREA_NAMES = ("all", "small", "medium", "large")
BACKENDS = ("faster", "pycocotools")


@dataclass
class CocoScores(ToDictMixin):
    """COCO summary numbers (fractions 0..1; NaN where COCO reports -1: no ground truth in that range).

    ``per_class_ap``: AP (IoU .50:.95, all areas, 100 dets) per category id; ``recall50``: recall at IoU 0.5 with
    100 detections per area range and category (the quantity the per-object table reproduces)."""

    iou_type: str
    backend: str
    stats: dict[str, float]
    per_class_ap: dict[int, float]
    recall50: dict[str, dict[int, float]]
    n_images: int
    n_gt: int
    n_dt: int
    params: dict[str, Any] = field(default_factory=dict)


def _nan(v: float) -> float:
    v = float(v)
    return float("nan") if v < 0 else v


def _check_iou_type(iou_type: str, backend: str) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if iou_type == "boundary" and backend != "faster":
        raise ValueError("Boundary AP needs backend='faster' (faster-coco-eval's boundary IoU type); "
                         "pycocotools has no boundary IoU")


def _results_dataset(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The detections as a COCO dataset, the way ``COCO.loadRes`` builds it (so empty result lists work too)."""
    anns = []
    for k, r in enumerate(results):
        a = dict(r)
        a["id"] = k + 1
        a["iscrowd"] = 0
        if "bbox" in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])  # loadRes: box area when a bbox is given
        anns.append(a)
    return {"images": list(gt["images"]), "categories": copy.deepcopy(list(gt["categories"])), "annotations": anns}


def _fill_result_areas(ds: dict[str, Any], mask_utils) -> None:
    for a in ds["annotations"]:
        if "bbox" not in a:  # mask-only results: loadRes takes the mask's area and box
            seg = _rle_bytes(a["segmentation"])
            a["area"] = float(mask_utils.area(seg))
            a["bbox"] = [float(v) for v in mask_utils.toBbox(seg)]


def _rle_bytes(seg: Mapping[str, Any]) -> dict[str, Any]:
    c = seg["counts"]
    if isinstance(c, list):
        from pycocotools import mask as mask_utils

        return mask_utils.frPyObjects(dict(seg), *seg["size"])
    return {"size": list(seg["size"]), "counts": c.encode("ascii") if isinstance(c, str) else c}


def _copy_ds(ds: Mapping[str, Any]) -> dict[str, Any]:
    """A copy the COCO tools may write into (they add keys to annotation dicts, never change nested values)."""
    return {k: ([dict(x) if isinstance(x, dict) else x for x in v] if isinstance(v, list) else v)
            for k, v in ds.items()}


def _pycoco(ds: Mapping[str, Any]):
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = _copy_ds(ds)
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def coco_evaluate(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], iou_type: str = "bbox", *,
                  backend: str = "faster", boundary_dilation_ratio: float = 0.02,
                  image_ids: Sequence[int] | None = None) -> CocoScores:
    """COCO evaluation of ``results`` (COCO result dicts) against ``gt`` (a COCO instances dict).

    ``iou_type``: ``bbox`` (box AP), ``segm`` (mask AP) or ``boundary`` (Boundary AP, faster-coco-eval only).
    ``image_ids``: evaluate only these images (default: every image of ``gt``). Validate files first with
    :func:`fapn_core.data.coco.read_instances` / ``read_results``.
    """
    _check_iou_type(iou_type, backend)
    dt_ds = _results_dataset(gt, results)
    ids = sorted(int(i["id"]) for i in gt["images"]) if image_ids is None else sorted(int(i) for i in image_ids)
    sink = io.StringIO()
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster
        from faster_coco_eval.core import mask as fmask

        _fill_result_areas(dt_ds, fmask)
        cg = COCO(_copy_ds(gt), print_function=lambda *a, **k: None)
        cd = COCO(dt_ds, print_function=lambda *a, **k: None)
        ev = COCOeval_faster(cg, cd, iou_type, print_function=lambda *a, **k: None,
                             boundary_dilation_ratio=boundary_dilation_ratio, boundary_cpu_count=1)
    else:
        from pycocotools import mask as mask_utils
        from pycocotools.cocoeval import COCOeval

        _fill_result_areas(dt_ds, mask_utils)
        cg, cd = _pycoco(gt), _pycoco(dt_ds)
        ev = COCOeval(cg, cd, iou_type)
    ev.params.imgIds = ids
    with contextlib.redirect_stdout(sink):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {k: _nan(v) for k, v in zip(STAT_NAMES, list(ev.stats)[:12])}
    prec = np.asarray(ev.eval["precision"])  # T, R, K, A, M
    rec = np.asarray(ev.eval["recall"])  # T, K, A, M
    cat_ids = [int(c) for c in ev.params.catIds]
    per_class = {}
    for k, c in enumerate(cat_ids):
        p = prec[:, :, k, 0, -1]
        per_class[c] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    t50 = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))
    recall50 = {a: {c: _nan(rec[t50, k, j, -1]) for k, c in enumerate(cat_ids)} for j, a in enumerate(AREA_NAMES)}
    sel = set(ids)
    return CocoScores(
        iou_type, backend, stats, per_class, recall50, len(ids),
        sum(1 for a in gt["annotations"] if a["image_id"] in sel and not a.get("iscrowd", 0)),
        sum(1 for r in results if r["image_id"] in sel),
        {"boundary_dilation_ratio": boundary_dilation_ratio if iou_type == "boundary" else None, "max_dets": 100},
    )


# --------------------------------------------------------------------------- per-image matching (pycocotools)
@dataclass
class ImageMatches:
    """COCO's matching at IoU 0.5 (100 detections) in one image, from ``pycocotools``' ``evaluateImg``.

    ``gt_match[gt_id][area]`` is the detection index (into the image's result list) COCO matched to that
    ground-truth annotation when evaluating area range ``area`` (None: unmatched; absent: ignored there, e.g.
    crowd). ``dt_match[area][i]`` is the ground-truth id matched to detection i (None: false positive; absent:
    ignored, e.g. matched to a crowd region or outside the area range). ``iou[(i, gt_id)]`` is the IoU of the pair."""

    gt_match: dict[int, dict[str, int | None]]
    dt_match: dict[str, dict[int, int | None]]
    iou: dict[tuple[int, int], float]


def image_matches(gt_anns: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]], image: Mapping[str, Any],
                  categories: Sequence[Mapping[str, Any]], iou_type: str = "segm") -> ImageMatches:
    """COCO's matching of ``results`` to ``gt_anns`` in one image (IoU threshold 0.5, every area range)."""
    from pycocotools import mask as mask_utils
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"image_matches: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    gt = {"images": [dict(image)], "categories": list(categories), "annotations": [dict(a) for a in gt_anns]}
    dt_ds = _results_dataset(gt, results)
    _fill_result_areas(dt_ds, mask_utils)
    ev = COCOeval(_pycoco(gt), _pycoco(dt_ds), iou_type)
    iid = int(image["id"])
    ev.params.imgIds = [iid]
    with contextlib.redirect_stdout(io.StringIO()):
        ev._prepare()
    t50 = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))
    gt_match: dict[int, dict[str, int | None]] = {}
    dt_match: dict[str, dict[int, int | None]] = {a: {} for a in AREA_NAMES}
    ious: dict[tuple[int, int], float] = {}
    max_det = ev.params.maxDets[-1]
    ev.ious = {}
    for c in ev.params.catIds:
        m = ev.ious[iid, c] = ev.computeIoU(iid, c)
        gts, dts = ev._gts[iid, c], ev._dts[iid, c]
        if len(m) and len(gts) and len(dts):
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")[:max_det]
            for r, di in enumerate(order):
                for j, g in enumerate(gts):
                    ious[(int(dts[di]["id"]) - 1, int(g["id"]))] = float(np.asarray(m)[r, j])
        for a, rng in zip(AREA_NAMES, ev.params.areaRng):
            e = ev.evaluateImg(iid, c, rng, max_det)
            if e is None:
                continue
            for j, g in enumerate(e["gtIds"]):
                if e["gtIgnore"][j]:
                    continue
                d = int(e["gtMatches"][t50, j])
                gt_match.setdefault(int(g), {})[a] = d - 1 if d > 0 else None
            for i, d in enumerate(e["dtIds"]):
                if e["dtIgnore"][t50, i]:
                    continue
                g = int(e["dtMatches"][t50, i])
                dt_match[a][int(d) - 1] = g if g > 0 else None
    return ImageMatches(gt_match, dt_match, ious)


def boundary_ious(gt_rles: Sequence[Mapping[str, Any]], dt_rles: Sequence[Mapping[str, Any]],
                  dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary IoU (Cheng et al. 2021) of each (gt, dt) mask pair, via faster-coco-eval's ``toBoundary``
    (the reference ``mask_to_boundary``: d = max(1, round(ratio · image diagonal)), image border = boundary)."""
    from faster_coco_eval.core import mask as fmask

    if len(gt_rles) != len(dt_rles):
        raise ValueError(f"boundary_ious: {len(gt_rles)} ground-truth masks but {len(dt_rles)} detections")
    out = np.full(len(gt_rles), np.nan)
    for k, (g, d) in enumerate(zip(gt_rles, dt_rles)):
        gb = fmask.rleToBoundary(_rle_bytes(g), dilation_ratio)
        db = fmask.rleToBoundary(_rle_bytes(d), dilation_ratio)
        out[k] = float(np.asarray(fmask.iou([db], [gb], [0])).reshape(-1)[0])
    return out
