"""Error analysis: per-pixel error map, error rate vs. distance to the GT boundary, fixed/broken maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._serialize import MAP, ToDictMixin
from ._validate import Prepared, check_positive_int, prepare_gt, prepare_pred
from .boundary import GTGeometry, _fold, region_counts
from .confusion import safe_div

DEFAULT_MAX_DISTANCE = 20


def _error_map(prep: Prepared, pred: np.ndarray) -> np.ndarray:
    err = pred != prep.gt
    if not prep.all_valid:
        err &= prep.valid
    return err


def error_map(gt: np.ndarray, pred: np.ndarray, num_classes: int, *, ignore_index: int = 255) -> np.ndarray:
    """Bool HxW: True where the prediction is wrong; ignore pixels are always False."""
    prep = prepare_gt(gt, num_classes, ignore_index)
    return _error_map(prep, prepare_pred(pred, prep))


def distance_bin_labels(max_distance: int) -> list[str]:
    """Bin labels ``["0", "1", ..., ">=N"]``; bin k holds pixels with floor(distance) == k."""
    return [str(k) for k in range(max_distance)] + [f">={max_distance}"]


@dataclass
class ErrorProfile(ToDictMixin):
    """Error rate by distance to the nearest GT boundary pixel (integer bins, last bin ``>= N``)."""

    max_distance: int
    bins: list[str]
    pixels: np.ndarray  # (N+1,) valid pixels per bin
    errors: np.ndarray  # (N+1,) wrong pixels per bin
    rate: np.ndarray  # (N+1,) errors / pixels, NaN for empty bins

    @classmethod
    def from_counts(cls, max_distance: int, pixels: np.ndarray, errors: np.ndarray) -> "ErrorProfile":
        pixels, errors = np.asarray(pixels, np.int64), np.asarray(errors, np.int64)
        return cls(int(max_distance), distance_bin_labels(max_distance), pixels, errors, safe_div(errors, pixels))


def error_vs_distance(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    ignore_index: int = 255,
) -> ErrorProfile:
    """Pixel error rate as a function of Euclidean distance to the nearest GT boundary pixel."""
    n = check_positive_int(max_distance, "max_distance")
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    geo = GTGeometry(prep)
    rc = region_counts(prep, p, geo.bins(n), [n], n)
    return ErrorProfile.from_counts(n, rc.pixels, rc.errors)


@dataclass
class FixBreak(ToDictMixin):
    """Pixels model B fixes (A wrong, B right: +1) and breaks (A right, B wrong: -1)."""

    fixed: int
    broken: int
    both_wrong: int
    both_right: int
    net: int  # fixed - broken
    max_distance: int
    fixed_by_distance: np.ndarray  # (N+1,) same bins as ErrorProfile
    broken_by_distance: np.ndarray
    map: np.ndarray | None = field(default=None, metadata=MAP)  # int8 HxW


def _fix_break(err_a: np.ndarray, err_b: np.ndarray, prep: Prepared, bins: np.ndarray, n: int) -> FixBreak:
    fixed = err_a & ~err_b
    broken = err_b & ~err_a
    both_wrong = int(np.count_nonzero(err_a & err_b))
    nf, nb = int(np.count_nonzero(fixed)), int(np.count_nonzero(broken))
    m = fixed.view(np.int8) - broken.view(np.int8)
    fb = np.bincount(bins[fixed], minlength=n + 1)
    bb = np.bincount(bins[broken], minlength=n + 1)
    return FixBreak(
        nf, nb, both_wrong, prep.n_valid - nf - nb - both_wrong, nf - nb, n, _fold(fb, n), _fold(bb, n), m
    )


def fix_break(
    gt: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    num_classes: int,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    ignore_index: int = 255,
) -> FixBreak:
    """Map (+1 fixed by B, -1 broken by B, 0 other) and counts for two predictions of one image."""
    n = check_positive_int(max_distance, "max_distance")
    prep = prepare_gt(gt, num_classes, ignore_index)
    a = prepare_pred(pred_a, prep, "pred_a")
    b = prepare_pred(pred_b, prep, "pred_b")
    geo = GTGeometry(prep)
    return _fix_break(_error_map(prep, a), _error_map(prep, b), prep, geo.bins(n), n)
