"""One-call comparison of two predictions (A = FPN, B = FaPN) against GT, and a dataset accumulator."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from ._serialize import MAP, ToDictMixin, to_jsonable
from ._validate import (
    check_class_names, check_class_subset, check_num_classes, check_positive_int, masked_pred, prepare_gt,
    prepare_pred,
)
from .boundary import (
    DEFAULT_BAND_WIDTHS, BandScores, BoundaryFScores, BoundaryIoUScores, GTGeometry, _boundary,
    RegionCounter, boundary_dilation, boundary_f_counts, boundary_iou_counts, check_widths,
)
from .confusion import SegmentationScores
from .errors import DEFAULT_MAX_DISTANCE, ErrorProfile, FixBreak, _error_map, _fix_break
from .objects import (
    DEFAULT_OBJECT_MARGIN, GTObjects, InstanceIoUScores, ObjectRecord, SizeBinSummary,
    extract_objects_prepared, instance_iou_from_counts, object_records, resolve_avg_size,
    score_objects_prepared, summarize_objects,
)

MODELS = ("a", "b")


@dataclass
class ModelResult(ToDictMixin):
    """All metrics of one prediction (one image, or a dataset when built from summed counts)."""

    confusion: np.ndarray  # (C, C) rows GT, cols prediction
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray
    mean_class_accuracy: float
    band: BandScores
    boundary_iou: BoundaryIoUScores
    boundary_f: BoundaryFScores
    error_profile: ErrorProfile
    iiou: InstanceIoUScores
    void: np.ndarray | None = None  # (C,) labelled pixels of each GT class predicted void (allow_void)
    error_map: np.ndarray | None = field(default=None, metadata=MAP)

    def summary(self) -> dict[str, float | None]:
        """Headline numbers (JSON-safe)."""
        out: dict[str, Any] = {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy}
        for w, m in zip(self.band.widths, self.band.miou):
            out[f"band_miou_{w}px"] = m
        out["band_miou_mean"] = self.band.mean_miou
        out["boundary_iou"] = self.boundary_iou.mean
        out["boundary_f"] = self.boundary_f.mean_f
        out["miiou"] = self.iiou.mean
        return to_jsonable(out)


def _model_result(
    cm: np.ndarray, widths: Sequence[int], band_conf: np.ndarray, profile: ErrorProfile,
    biou: BoundaryIoUScores, bf: BoundaryFScores, iiou: InstanceIoUScores, err: np.ndarray | None,
    void: np.ndarray, band_void: np.ndarray,
) -> ModelResult:
    s = SegmentationScores.from_confusion(cm, void)
    return ModelResult(
        s.confusion, s.iou, s.miou, s.pixel_accuracy, s.class_accuracy, s.mean_class_accuracy,
        BandScores.from_confusions(widths, band_conf, band_void), biou, bf, profile, iiou,
        np.asarray(void, np.int64), err,
    )


class _SummaryMixin:
    a: ModelResult
    b: ModelResult
    objects: list[ObjectRecord]

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Headline numbers of A, B and B - A."""
        sa, sb = self.a.summary(), self.b.summary()
        delta = {k: (None if sa[k] is None or sb[k] is None else sb[k] - sa[k]) for k in sa}
        return {"a": sa, "b": sb, "delta": delta}

    def recovered_objects(self) -> list[ObjectRecord]:
        """GT objects B hits and A misses."""
        return [r for r in self.objects if r.outcome == "recovered"]

    def lost_objects(self) -> list[ObjectRecord]:
        """GT objects A hits and B misses."""
        return [r for r in self.objects if r.outcome == "lost"]


@dataclass
class ComparisonResult(_SummaryMixin, ToDictMixin):
    """Per-image comparison of predictions A and B. Maps are numpy attributes left out of ``to_dict``."""

    image_shape: tuple[int, int]
    num_classes: int
    class_names: list[str] | None
    params: dict[str, Any]
    a: ModelResult
    b: ModelResult
    fix_break: FixBreak
    objects: list[ObjectRecord]
    object_summary: dict[str, SizeBinSummary]
    image: Any = None
    distance_map: np.ndarray | None = field(default=None, metadata=MAP)  # float32 distance to GT boundary
    gt_objects: GTObjects | None = field(default=None, metadata=MAP)


def compare(
    gt: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    num_classes: int,
    *,
    instances: np.ndarray | None = None,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    band_widths: Sequence[int] = DEFAULT_BAND_WIDTHS,
    boundary_dilation_ratio: float = 0.02,
    boundary_tolerance: int = 3,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    thing_classes: Sequence[int] | None = None,
    object_margin: int = DEFAULT_OBJECT_MARGIN,
    min_object_area: int = 1,
    scale_to: Sequence[int] | None = None,
    avg_instance_size: Mapping[Any, float] | Sequence[float] | None = None,
    allow_void: bool = False,
    keep_maps: bool = True,
    image: Any = None,
) -> ComparisonResult:
    """Compare predictions A (e.g. FPN) and B (e.g. FaPN) of one image against ground truth.

    Returns region IoU, trimap band mIoU, Boundary IoU, boundary F-score, error-vs-distance,
    iIoU and per-object records for both models, plus the fixed/broken map. ``keep_maps=False``
    drops the per-pixel maps (error maps, fix/break map, distance map, object label map).
    ``instances``: 0 = no instance; every other id is one object (for raw Cityscapes ``instanceIds``
    keep only ids >= 1000 first: ``fapn_core.data.cityscapes.official_instances``). ``allow_void``:
    ``ignore_index`` at a labelled pixel is a void prediction (no class): a false negative of the GT
    class and a wrong pixel, never a false positive, as the Cityscapes script's void label ids.
    """
    prep = prepare_gt(gt, num_classes, ignore_index)
    preds = [prepare_pred(pred_a, prep, "pred_a", allow_void=allow_void),
             prepare_pred(pred_b, prep, "pred_b", allow_void=allow_void)]
    names = check_class_names(class_names, prep.num_classes)
    ws = check_widths(band_widths)
    n = check_positive_int(max_distance, "max_distance")
    tol = check_positive_int(boundary_tolerance, "boundary_tolerance", minimum=0)
    margin = check_positive_int(object_margin, "object_margin", minimum=0)
    things = check_class_subset(thing_classes, prep.num_classes, "thing_classes")
    kmax = max(n, ws[-1])
    dil = boundary_dilation(prep.shape, boundary_dilation_ratio)

    geo = GTGeometry(prep)
    bins = geo.bins(kmax)
    g_reg = geo.biou_region(dil)
    g_pts = geo.bf_points
    objs = extract_objects_prepared(prep, instances, things, min_object_area)
    obj_scores = score_objects_prepared(prep, preds, objs, margin)
    avg = resolve_avg_size(avg_instance_size, prep.num_classes, names)

    counter = RegionCounter(prep, bins, ws, n)
    results, errs = [], []
    for p, sc in zip(preds, obj_scores):
        rc = counter(p)
        pm = masked_pred(p, prep)
        p_int = _boundary(pm)
        biou = BoundaryIoUScores.from_counts(dil, *boundary_iou_counts(prep, pm, dil, g_reg, p_int))
        bf = BoundaryFScores.from_counts(tol, *boundary_f_counts(prep, pm, tol, g_pts, p_int))
        iiou = instance_iou_from_counts(objs.class_ids, objs.areas, sc.tp, rc.confusion, classes=things, avg_size=avg)
        err = _error_map(prep, p)
        errs.append(err)
        results.append(
            _model_result(rc.confusion, ws, rc.band_confusions, ErrorProfile.from_counts(n, rc.pixels, rc.errors),
                          biou, bf, iiou, err if keep_maps else None, rc.void, rc.band_void)
        )
    fb = _fix_break(errs[0], errs[1], prep, bins, n)
    if not keep_maps:
        fb.map = None
    records = object_records(objs, obj_scores[0], obj_scores[1], class_names=names, scale_to=scale_to, image=image)
    params = {
        "ignore_index": prep.ignore_index,
        "band_widths": ws,
        "max_distance": n,
        "boundary_dilation_ratio": float(boundary_dilation_ratio),
        "boundary_dilation": dil,
        "boundary_tolerance": tol,
        "object_margin": margin,
        "min_object_area": int(min_object_area),
        "thing_classes": None if things is None else things.tolist(),
        "scale_to": None if scale_to is None else [int(v) for v in scale_to],
        "object_source": objs.source,
        "allow_void": bool(allow_void),
    }
    return ComparisonResult(
        prep.shape, prep.num_classes, names, params, results[0], results[1], fb, records,
        summarize_objects(records), image,
        geo.distance if keep_maps else None, objs if keep_maps else None,
    )


@dataclass
class DatasetComparison(_SummaryMixin, ToDictMixin):
    """Dataset-level comparison built from summed per-image counts."""

    n_images: int
    num_classes: int
    class_names: list[str] | None
    params: dict[str, Any]
    a: ModelResult
    b: ModelResult
    fix_break: FixBreak
    objects: list[ObjectRecord]
    object_summary: dict[str, SizeBinSummary]


_CONSISTENT = ("band_widths", "max_distance", "boundary_tolerance", "thing_classes", "ignore_index")


class ComparisonAccumulator:
    """Merges per-image ``ComparisonResult``s: sums confusion matrices (also per band width),
    Boundary-IoU and boundary-F counts, error-vs-distance and fix/break counts, and collects
    object records. Dataset scores are computed from the sums, not as means of per-image scores.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_names: Sequence[str] | None = None,
        avg_instance_size: Mapping[Any, float] | Sequence[float] | None = None,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.class_names = check_class_names(class_names, self.num_classes)
        self.avg_size = resolve_avg_size(avg_instance_size, self.num_classes, self.class_names)
        self.params: dict[str, Any] | None = None
        self.n_images = 0
        self.objects: list[ObjectRecord] = []
        self._sums: dict[str, dict[str, np.ndarray]] = {}
        self._fb: dict[str, Any] = {}
        self._dilations: set[int] = set()

    def _init_sums(self, r: ComparisonResult) -> None:
        self.params = {k: r.params[k] for k in _CONSISTENT}
        self.params["boundary_dilation_ratio"] = r.params["boundary_dilation_ratio"]
        for m in MODELS:
            mr: ModelResult = getattr(r, m)
            self._sums[m] = {
                "confusion": np.zeros_like(mr.confusion),
                "band": np.zeros_like(mr.band.confusions),
                "void": np.zeros(self.num_classes, np.int64),
                "band_void": np.zeros(mr.band.confusions.shape[:2], np.int64),
                "biou_inter": np.zeros_like(mr.boundary_iou.intersection),
                "biou_union": np.zeros_like(mr.boundary_iou.union),
                "bf_pt": np.zeros_like(mr.boundary_f.pred_total),
                "bf_pm": np.zeros_like(mr.boundary_f.pred_matched),
                "bf_gt": np.zeros_like(mr.boundary_f.gt_total),
                "bf_gm": np.zeros_like(mr.boundary_f.gt_matched),
                "prof_pix": np.zeros_like(mr.error_profile.pixels),
                "prof_err": np.zeros_like(mr.error_profile.errors),
            }
        fb = r.fix_break
        self._fb = {
            "fixed": 0, "broken": 0, "both_wrong": 0, "both_right": 0,
            "fixed_by_distance": np.zeros_like(fb.fixed_by_distance),
            "broken_by_distance": np.zeros_like(fb.broken_by_distance),
        }

    def add(self, result: ComparisonResult, image: Any = None) -> None:
        """Add one image's result; ``image`` (e.g. a file name) labels its object records."""
        if not isinstance(result, ComparisonResult):
            raise TypeError(f"expected a ComparisonResult, got {type(result).__name__}")
        if result.num_classes != self.num_classes:
            raise ValueError(f"result has num_classes={result.num_classes}, accumulator has {self.num_classes}")
        if self.params is None:
            self._init_sums(result)
        else:
            for k in _CONSISTENT:
                if result.params[k] != self.params[k]:
                    raise ValueError(f"inconsistent {k}: {result.params[k]!r} vs {self.params[k]!r} of earlier images")
        for m in MODELS:
            mr: ModelResult = getattr(result, m)
            s = self._sums[m]
            s["confusion"] += mr.confusion
            s["band"] += mr.band.confusions
            if mr.void is not None:
                s["void"] += mr.void
            if mr.band.void is not None:
                s["band_void"] += mr.band.void
            s["biou_inter"] += mr.boundary_iou.intersection
            s["biou_union"] += mr.boundary_iou.union
            s["bf_pt"] += mr.boundary_f.pred_total
            s["bf_pm"] += mr.boundary_f.pred_matched
            s["bf_gt"] += mr.boundary_f.gt_total
            s["bf_gm"] += mr.boundary_f.gt_matched
            s["prof_pix"] += mr.error_profile.pixels
            s["prof_err"] += mr.error_profile.errors
        fb = result.fix_break
        for k in ("fixed", "broken", "both_wrong", "both_right"):
            self._fb[k] += getattr(fb, k)
        self._fb["fixed_by_distance"] += fb.fixed_by_distance
        self._fb["broken_by_distance"] += fb.broken_by_distance
        self._dilations.add(result.a.boundary_iou.dilation)
        tag = image if image is not None else (result.image if result.image is not None else self.n_images)
        self.objects.extend(replace(r, image=tag) for r in result.objects)
        self.n_images += 1

    def merge(self, other: "ComparisonAccumulator") -> None:
        """Fold another accumulator (e.g. from a worker process) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge accumulators with {other.num_classes} and {self.num_classes} classes")
        if other.params is None:
            return
        if self.params is None:
            self.params = dict(other.params)
            self._sums = {m: {k: v.copy() for k, v in s.items()} for m, s in other._sums.items()}
            self._fb = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in other._fb.items()}
        else:
            for k in _CONSISTENT:
                if other.params[k] != self.params[k]:
                    raise ValueError(f"inconsistent {k}: {other.params[k]!r} vs {self.params[k]!r}")
            for m in MODELS:
                for k, v in other._sums[m].items():
                    self._sums[m][k] += v
            for k, v in other._fb.items():
                self._fb[k] = self._fb[k] + v
        self._dilations |= other._dilations
        self.objects.extend(other.objects)
        self.n_images += other.n_images

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of the accumulated counts (for resumable dataset evaluation)."""
        def arr(a: np.ndarray) -> dict[str, Any]:
            return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}

        return {
            "num_classes": self.num_classes,
            "n_images": self.n_images,
            "params": self.params,
            "sums": {m: {k: arr(v) for k, v in s.items()} for m, s in self._sums.items()},
            "fix_break": {k: (arr(v) if isinstance(v, np.ndarray) else int(v)) for k, v in self._fb.items()},
            "dilations": sorted(int(d) for d in self._dilations),
            "objects": [to_jsonable(r) for r in self.objects],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counts saved by :meth:`state_dict` (same ``num_classes`` required)."""
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(f"state has num_classes={state['num_classes']}, accumulator has {self.num_classes}")

        def arr(d: Mapping[str, Any]) -> np.ndarray:
            return np.asarray(d["data"], dtype=d["dtype"]).reshape(d["shape"])

        self.n_images = int(state["n_images"])
        self.params = state["params"]
        self._sums = {m: {k: arr(v) for k, v in s.items()} for m, s in state["sums"].items()}
        for s in self._sums.values():  # states written before void predictions were counted
            s.setdefault("void", np.zeros(self.num_classes, np.int64))
            s.setdefault("band_void", np.zeros(s["band"].shape[:2], np.int64))
        self._fb = {k: (arr(v) if isinstance(v, Mapping) else int(v)) for k, v in state["fix_break"].items()}
        self._dilations = set(int(d) for d in state["dilations"])
        floats = ("recall_a", "recall_b", "iou_a", "iou_b")  # NaN was written as null
        self.objects = [ObjectRecord(**{k: (float("nan") if v is None and k in floats else v) for k, v in r.items()})
                        for r in state["objects"]]

    def result(self) -> DatasetComparison:
        """Dataset-level scores from the accumulated counts."""
        if self.params is None:
            raise ValueError("no images added")
        ws, n = self.params["band_widths"], self.params["max_distance"]
        things = self.params["thing_classes"]
        cls = np.array([r.class_id for r in self.objects], dtype=np.int64)
        area = np.array([r.area for r in self.objects], dtype=np.int64)
        tol = self.params["boundary_tolerance"]
        # Boundary-IoU width in px; None when images of different sizes were mixed
        dil = next(iter(self._dilations)) if len(self._dilations) == 1 else None
        models = []
        for m in MODELS:
            s = self._sums[m]
            tp = np.array([getattr(r, f"tp_{m}") for r in self.objects], dtype=np.int64)
            iiou = instance_iou_from_counts(cls, area, tp, s["confusion"], classes=things, avg_size=self.avg_size)
            profile = ErrorProfile.from_counts(n, s["prof_pix"], s["prof_err"])
            biou = BoundaryIoUScores.from_counts(dil, s["biou_inter"], s["biou_union"])
            bf = BoundaryFScores.from_counts(tol, s["bf_pt"], s["bf_pm"], s["bf_gt"], s["bf_gm"])
            models.append(
                _model_result(s["confusion"].copy(), ws, s["band"].copy(), profile, biou, bf, iiou, None,
                              s["void"].copy(), s["band_void"].copy())
            )
        f = self._fb
        fb = FixBreak(
            f["fixed"], f["broken"], f["both_wrong"], f["both_right"], f["fixed"] - f["broken"], n,
            f["fixed_by_distance"].copy(), f["broken_by_distance"].copy(), None,
        )
        params = dict(self.params, boundary_dilation=dil)
        return DatasetComparison(
            self.n_images, self.num_classes, self.class_names, params, models[0], models[1], fb,
            list(self.objects), summarize_objects(self.objects),
        )
