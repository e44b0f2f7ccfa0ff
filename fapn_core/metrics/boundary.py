"""Boundary metrics: trimap band mIoU, Boundary IoU (Cheng et al. 2021) and boundary F-score.

Boundary pixel (used everywhere in this package): a pixel whose 8-neighbourhood
(inside the image) contains a different label. Both sides of a label transition
are boundary pixels, transitions to/from the ignore label count, the image border
does not (except for Boundary IoU, which follows its reference implementation and
treats the image border as mask contour).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import cv2
import numpy as np

from ._serialize import ToDictMixin
from ._validate import Prepared, check_map, check_positive_int, masked_pred, prepare_gt, prepare_pred
from .confusion import iou_from_confusion, nanmean, safe_div

DEFAULT_BAND_WIDTHS: tuple[int, ...] = (3, 5, 8, 12)
_K3 = np.ones((3, 3), dtype=np.uint8)
_EPS = 1e-4  # guards floor() of float32 distances that are exact square roots
_JOINT_MAX_BINS = 1 << 22  # largest (distance bin x C x C) histogram built in one bincount


# --------------------------------------------------------------------------- primitives
def _cv_labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype in (np.uint8, np.uint16, np.int16):
        return np.ascontiguousarray(labels)
    return np.ascontiguousarray(labels, dtype=np.float64)  # exact for any practical int id


def _boundary(labels: np.ndarray) -> np.ndarray:
    lab = _cv_labels(labels)
    return cv2.dilate(lab, _K3) != cv2.erode(lab, _K3)


def _euclidean_distance(boundary: np.ndarray) -> np.ndarray:
    if not boundary.any():
        return np.full(boundary.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~boundary).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _distance_bins(dist: np.ndarray, kmax: int) -> np.ndarray:
    dtype = np.uint8 if kmax < 255 else np.uint16
    return np.minimum(dist + _EPS, kmax).astype(dtype)


def label_boundary(labels: np.ndarray) -> np.ndarray:
    """Bool HxW: pixels with a differently labelled 8-neighbour (image border excluded)."""
    return _boundary(check_map(labels, "labels"))


def distance_to_boundary(gt: np.ndarray) -> np.ndarray:
    """float32 HxW Euclidean distance of each pixel to the nearest GT boundary pixel (inf if none).

    The ignore label is treated as a label: transitions into it are boundaries.
    """
    return _euclidean_distance(_boundary(check_map(gt, "gt")))


def band_mask(gt: np.ndarray, width: int) -> np.ndarray:
    """Bool HxW trimap band: pixels at Euclidean distance ``< width`` from a GT boundary pixel."""
    width = check_positive_int(width, "width")
    return distance_to_boundary(gt) < width


def boundary_dilation(shape: Sequence[int], dilation_ratio: float = 0.02) -> int:
    """Boundary-IoU width d in px: ``max(1, int(round(dilation_ratio * diag)))`` as in the reference code."""
    if isinstance(dilation_ratio, bool) or not isinstance(dilation_ratio, numbers.Real) or not dilation_ratio > 0:
        raise ValueError(f"dilation_ratio must be a positive number, got {dilation_ratio!r}")
    h, w = int(shape[0]), int(shape[1])
    return max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))


# --------------------------------------------------------------------------- GT geometry cache
class GTGeometry:
    """Lazily computed GT-derived maps, shared by all metrics of one image (internal)."""

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        self._biou: dict[int, np.ndarray] = {}
        self._bins: dict[int, np.ndarray] = {}

    @cached_property
    def boundary(self) -> np.ndarray:
        return _boundary(self.prep.gt)

    @cached_property
    def distance(self) -> np.ndarray:
        return _euclidean_distance(self.boundary)

    def bins(self, kmax: int) -> np.ndarray:
        if kmax not in self._bins:
            self._bins[kmax] = _distance_bins(self.distance, kmax)
        return self._bins[kmax]

    def biou_region(self, dilation: int) -> np.ndarray:
        if dilation not in self._biou:
            self._biou[dilation] = _biou_region(self.prep.gt, self.prep.ign, dilation, self.boundary)
        return self._biou[dilation]

    @cached_property
    def bf_points(self) -> tuple[np.ndarray, np.ndarray]:
        return _boundary_points(self.prep.gt, self.boundary, self.prep.ign)


# --------------------------------------------------------------------------- trimap bands
@dataclass
class BandScores(ToDictMixin):
    """Trimap band mIoU: per width w, IoU restricted to pixels within distance < w of a GT boundary."""

    widths: list[int]
    pixels: np.ndarray  # (W,) valid pixels in each band
    iou: np.ndarray  # (W, C)
    miou: np.ndarray  # (W,)
    mean_miou: float  # mean over widths of the band mIoUs
    confusions: np.ndarray  # (W, C, C) int64
    void: np.ndarray | None = None  # (W, C) int64: band pixels of each GT class predicted void

    @classmethod
    def from_confusions(
        cls, widths: Sequence[int], confusions: np.ndarray, void: np.ndarray | None = None
    ) -> "BandScores":
        confusions = np.asarray(confusions, dtype=np.int64)
        void = np.zeros(confusions.shape[:2], np.int64) if void is None else np.asarray(void, dtype=np.int64)
        iou = (np.stack([iou_from_confusion(cm, v) for cm, v in zip(confusions, void)]) if len(confusions)
               else np.zeros((0, 0)))
        miou = np.array([nanmean(r) for r in iou], dtype=np.float64)
        pixels = confusions.sum((1, 2)) + void.sum(1)
        return cls(list(map(int, widths)), pixels, iou, miou, nanmean(miou), confusions, void)


def check_widths(widths: Sequence[int]) -> list[int]:
    ws = [check_positive_int(w, "band width") for w in widths]
    if not ws:
        raise ValueError("widths must contain at least one band width")
    if sorted(set(ws)) != ws:
        raise ValueError(f"band widths must be strictly increasing, got {list(widths)}")
    return ws


@dataclass
class RegionCounts:
    """Per-image counts behind the region, band and error-vs-distance metrics (internal)."""

    confusion: np.ndarray  # (C, C)
    band_confusions: np.ndarray  # (W, C, C)
    pixels: np.ndarray  # (N+1,) valid pixels per distance bin (last bin >= N)
    errors: np.ndarray  # (N+1,)
    void: np.ndarray  # (C,) labelled pixels of each GT class predicted void (no class)
    band_void: np.ndarray  # (W, C)


def _fold(per_bin: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n + 1, dtype=np.int64)
    out[:n] = per_bin[:n]
    out[n] = per_bin[n:].sum()
    return out


class RegionCounter:
    """Confusion matrix, nested band confusions (band w = distance bin < w) and error counts per
    distance bin for predictions of one image, in one pass over the valid pixels (internal).

    ``bins`` = floor(distance to GT boundary) clipped at ``max(max(widths), max_distance)``.
    The GT part of the histogram key is computed once and shared by all predictions.
    """

    def __init__(self, prep: Prepared, bins: np.ndarray, widths: Sequence[int], max_distance: int) -> None:
        self.prep, self.widths, self.n = prep, list(widths), max_distance
        self.kmax = max(max(widths), max_distance)
        c = prep.num_classes
        if prep.all_valid:
            b, g = bins.ravel(), prep.gt.ravel()
        else:
            b, g = bins[prep.valid], prep.gt[prep.valid]
        self.joint = (self.kmax + 1) * c * c <= _JOINT_MAX_BINS
        if self.joint:
            self.base = (b.astype(np.int32) * c + g) * c
        else:
            self.b, self.g = b, g

    def __call__(self, pred: np.ndarray) -> RegionCounts:
        prep, c, kmax, n = self.prep, self.prep.num_classes, self.kmax, self.n
        p = pred.ravel() if prep.all_valid else pred[prep.valid]
        void = p == prep.ign if p.size and int(p.max()) == prep.ign else None  # only with allow_void
        if self.joint:  # one bincount over (distance bin, GT, prediction)
            size = (kmax + 1) * c * c
            base = self.base
            if void is None:
                vcount = np.zeros((kmax + 1, c), np.int64)
            else:  # void pixels: counted per (distance bin, GT class) beside the confusion
                vcount = np.bincount(base[void] // c, minlength=(kmax + 1) * c).reshape(kmax + 1, c)
                base, p = base[~void], p[~void]
            vcum = np.cumsum(vcount, axis=0)
            counts = np.bincount(base + p, minlength=size).reshape(kmax + 1, c, c).astype(np.int64)
            cum = np.cumsum(counts, axis=0)
            pix = counts.sum((1, 2)) + vcount.sum(1)
            err = pix - np.trace(counts, axis1=1, axis2=2)
            bands = np.stack([cum[w - 1] for w in self.widths])
            band_void = np.stack([vcum[w - 1] for w in self.widths]).astype(np.int64)
            return RegionCounts(cum[-1], bands, _fold(pix, n), _fold(err, n), vcum[-1].astype(np.int64), band_void)
        b, g = self.b, self.g  # many classes: one bincount per band instead
        pix = np.bincount(b, minlength=kmax + 1)
        err = np.bincount(b[g != p], minlength=kmax + 1)  # a void prediction is an error
        if void is None:
            vb, vg = b[:0], g[:0]
        else:
            vb, vg, b, g, p = b[void], g[void], b[~void], g[~void], p[~void]
        key = g.astype(np.int64) * c + p
        cm = np.bincount(key, minlength=c * c).reshape(c, c).astype(np.int64)
        bands = np.stack([np.bincount(key[b < w], minlength=c * c).reshape(c, c) for w in self.widths])
        vcm = np.bincount(vg, minlength=c)[:c].astype(np.int64)
        band_void = np.stack([np.bincount(vg[vb < w], minlength=c)[:c] for w in self.widths]).astype(np.int64)
        return RegionCounts(cm, bands.astype(np.int64), _fold(pix, n), _fold(err, n), vcm, band_void)


def region_counts(
    prep: Prepared, pred: np.ndarray, bins: np.ndarray, widths: Sequence[int], max_distance: int
) -> RegionCounts:
    """``RegionCounter(prep, bins, widths, max_distance)(pred)`` (internal)."""
    return RegionCounter(prep, bins, widths, max_distance)(pred)


def trimap_scores(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    widths: Sequence[int] = DEFAULT_BAND_WIDTHS,
    ignore_index: int = 255,
) -> BandScores:
    """Per-width band IoU / mIoU (trimap evaluation) of one image."""
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    ws = check_widths(widths)
    geo = GTGeometry(prep)
    rc = region_counts(prep, p, geo.bins(ws[-1]), ws, ws[-1])
    return BandScores.from_confusions(ws, rc.band_confusions)


# --------------------------------------------------------------------------- boundary IoU
def _biou_region(lab: np.ndarray, ign: int, dilation: int, interior: np.ndarray | None = None) -> np.ndarray:
    """Bool HxW: valid pixels within chessboard distance ``dilation`` of their own class mask's contour.

    Equals, for every class c at once, ``mask_c - erode(pad0(mask_c), 3x3, iterations=dilation)``
    of the reference implementation (distance to the nearest pixel of another label or outside
    the image <= d  <=>  distance to the nearest boundary pixel incl. the image frame <= d - 1).
    """
    b = (_boundary(lab) if interior is None else interior).copy()
    b[0, :] = b[-1, :] = True
    b[:, 0] = b[:, -1] = True
    if dilation > 1:
        d = cv2.distanceTransform((~b).view(np.uint8), cv2.DIST_C, 3)
        b = d <= (dilation - 1)
    b &= lab != ign
    return b


def _masked_hist(lab: np.ndarray, mask: np.ndarray, c: int) -> np.ndarray:
    """int64 counts of labels 0..c-1 under a bool mask (cv2.calcHist for uint8, else bincount)."""
    if lab.dtype == np.uint8 and lab.size < (1 << 24):  # float32 histogram counts stay exact
        h = cv2.calcHist([lab], [0], mask.view(np.uint8), [256], [0, 256]).ravel()
        return h[:c].astype(np.int64)
    return np.bincount(lab[mask], minlength=c)[:c].astype(np.int64)


@dataclass
class BoundaryIoUScores(ToDictMixin):
    """Boundary IoU per class: |(G_d∩G)∩(P_d∩P)| / |(G_d∩G)∪(P_d∩P)| (Cheng et al., CVPR 2021)."""

    dilation: int | None  # px; None for a dataset mixing image sizes
    intersection: np.ndarray  # (C,) int64
    union: np.ndarray  # (C,) int64
    iou: np.ndarray  # (C,)
    mean: float

    @classmethod
    def from_counts(cls, dilation: int | None, intersection: np.ndarray, union: np.ndarray) -> "BoundaryIoUScores":
        iou = safe_div(intersection, union)
        d = None if dilation is None else int(dilation)
        return cls(d, np.asarray(intersection, np.int64), np.asarray(union, np.int64), iou, nanmean(iou))


def boundary_iou_counts(
    prep: Prepared,
    pm: np.ndarray,
    dilation: int,
    gt_region: np.ndarray | None = None,
    pred_interior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (intersection, union) of GT and predicted boundary regions (internal).

    ``pm`` is the prediction already masked with the GT ignore region (``masked_pred``).
    """
    c = prep.num_classes
    g_reg = _biou_region(prep.gt, prep.ign, dilation) if gt_region is None else gt_region
    p_reg = _biou_region(pm, prep.ign, dilation, pred_interior)
    both = g_reg & p_reg
    both &= prep.gt == pm
    inter = _masked_hist(prep.gt, both, c)
    return inter, _masked_hist(prep.gt, g_reg, c) + _masked_hist(pm, p_reg, c) - inter


def boundary_iou(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    dilation_ratio: float = 0.02,
    ignore_index: int = 255,
) -> BoundaryIoUScores:
    """Per-class Boundary IoU of one image; d = max(1, round(dilation_ratio * diagonal)) px."""
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    dil = boundary_dilation(prep.shape, dilation_ratio)
    inter, union = boundary_iou_counts(prep, masked_pred(p, prep), dil)
    return BoundaryIoUScores.from_counts(dil, inter, union)


# --------------------------------------------------------------------------- boundary F-score
def _boundary_points(lab: np.ndarray, interior: np.ndarray, ign: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and classes of valid boundary pixels (inner contours of every class mask)."""
    idx = np.flatnonzero(interior)
    cls = lab.ravel()[idx]
    keep = cls != ign
    return idx[keep], cls[keep]


def _disk_offsets(tol: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-tol, tol + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    inside = dy**2 + dx**2 <= tol**2
    dy, dx = dy[inside], dx[inside]
    order = np.argsort(dy**2 + dx**2, kind="stable")
    return dy[order], dx[order]


def _match_gather(
    src_idx: np.ndarray, src_cls: np.ndarray, dst_idx: np.ndarray, dst_cls: np.ndarray,
    shape: tuple[int, int], tol: int, ign: int,
) -> np.ndarray:
    """For each src point: is a dst point of the same class within Euclidean distance <= tol?"""
    h, w = shape
    pw = w + 2 * tol
    dtype = np.uint8 if ign == 255 else np.uint16
    padded = np.full((h + 2 * tol) * pw, ign, dtype=dtype)
    ys, xs = np.divmod(dst_idx, w)
    padded[(ys + tol) * pw + xs + tol] = dst_cls
    sy, sx = np.divmod(src_idx, w)
    pidx = (sy + tol) * pw + sx + tol
    matched = padded[pidx] == src_cls  # offset (0, 0)
    todo = np.flatnonzero(~matched)
    if todo.size and tol > 0:
        dy, dx = _disk_offsets(tol)
        off = (dy * pw + dx)[1:]
        chunk = max(1, (1 << 22) // off.size)
        for s in range(0, todo.size, chunk):
            sel = todo[s : s + chunk]
            vals = padded[pidx[sel, None] + off[None, :]]
            matched[sel] = (vals == src_cls[sel, None]).any(1)
    return matched


def _match_dt(
    a_idx: np.ndarray, a_cls: np.ndarray, b_idx: np.ndarray, b_cls: np.ndarray,
    shape: tuple[int, int], tol: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Same as two ``_match_gather`` calls (a->b, b->a) via per-class distance transforms on crops."""
    w = shape[1]
    ma = np.zeros(a_idx.size, dtype=bool)
    mb = np.zeros(b_idx.size, dtype=bool)
    ay, ax = np.divmod(a_idx, w)
    by, bx = np.divmod(b_idx, w)
    for c in np.intersect1d(np.unique(a_cls), np.unique(b_cls)):
        sa, sb = np.flatnonzero(a_cls == c), np.flatnonzero(b_cls == c)
        y0 = min(ay[sa].min(), by[sb].min())
        x0 = min(ax[sa].min(), bx[sb].min())
        y1 = max(ay[sa].max(), by[sb].max()) + 1
        x1 = max(ax[sa].max(), bx[sb].max()) + 1
        for src, dst, sy, sx, dy, dx, out in (
            (sa, sb, ay, ax, by, bx, ma),
            (sb, sa, by, bx, ay, ax, mb),
        ):
            free = np.ones((y1 - y0, x1 - x0), dtype=np.uint8)
            free[dy[dst] - y0, dx[dst] - x0] = 0
            d = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            out[src] = d[sy[src] - y0, sx[src] - x0] <= tol + _EPS
    return ma, mb


@dataclass
class BoundaryFScores(ToDictMixin):
    """Per-class boundary precision / recall / F-score at a pixel tolerance."""

    tolerance: int
    pred_total: np.ndarray  # (C,) predicted boundary pixels
    pred_matched: np.ndarray  # (C,) ... with a GT boundary pixel of the class within tolerance
    gt_total: np.ndarray
    gt_matched: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f: np.ndarray
    mean_f: float

    @classmethod
    def from_counts(
        cls, tolerance: int, pred_total: np.ndarray, pred_matched: np.ndarray,
        gt_total: np.ndarray, gt_matched: np.ndarray,
    ) -> "BoundaryFScores":
        pt, pm = np.asarray(pred_total, np.int64), np.asarray(pred_matched, np.int64)
        gt_, gm = np.asarray(gt_total, np.int64), np.asarray(gt_matched, np.int64)
        prec, rec = safe_div(pm, pt), safe_div(gm, gt_)
        f = safe_div(2 * prec * rec, prec + rec)
        f = np.where((pt > 0) & (gt_ > 0) & np.isnan(f), 0.0, f)  # P = R = 0
        f = np.where((pt > 0) != (gt_ > 0), 0.0, f)  # boundary on one side only
        return cls(int(tolerance), pt, pm, gt_, gm, prec, rec, f, nanmean(f))


def boundary_f_counts(
    prep: Prepared,
    pm: np.ndarray,
    tolerance: int,
    gt_points: tuple[np.ndarray, np.ndarray] | None = None,
    pred_interior: np.ndarray | None = None,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred_total, pred_matched, gt_total, gt_matched) per class (internal; ``pm`` is masked)."""
    c = prep.num_classes
    g_idx, g_cls = gt_points if gt_points is not None else _boundary_points(prep.gt, _boundary(prep.gt), prep.ign)
    p_idx, p_cls = _boundary_points(pm, _boundary(pm) if pred_interior is None else pred_interior, prep.ign)
    if method == "auto":
        m = _disk_offsets(tolerance)[0].size
        # measured crossover on 1024x2048 street scenes: ~60 offset-gathers per pixel of the image
        method = "gather" if m * (g_idx.size + p_idx.size) <= 48 * prep.gt.size else "dt"
    if method == "gather":
        p_ok = _match_gather(p_idx, p_cls, g_idx, g_cls, prep.shape, tolerance, prep.ign)
        g_ok = _match_gather(g_idx, g_cls, p_idx, p_cls, prep.shape, tolerance, prep.ign)
    elif method == "dt":
        p_ok, g_ok = _match_dt(p_idx, p_cls, g_idx, g_cls, prep.shape, tolerance)
    else:
        raise ValueError(f"method must be 'auto', 'gather' or 'dt', got {method!r}")

    def count(cls_: np.ndarray) -> np.ndarray:
        return np.bincount(cls_, minlength=c)[:c].astype(np.int64)

    return count(p_cls), count(p_cls[p_ok]), count(g_cls), count(g_cls[g_ok])


def boundary_f_score(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    tolerance: int = 3,
    ignore_index: int = 255,
) -> BoundaryFScores:
    """Per-class boundary F-score: predicted boundary pixels within ``tolerance`` px (Euclidean)
    of a GT boundary pixel of the same class (precision) and vice versa (recall)."""
    tol = check_positive_int(tolerance, "tolerance", minimum=0)
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    return BoundaryFScores.from_counts(tol, *boundary_f_counts(prep, masked_pred(p, prep), tol))
