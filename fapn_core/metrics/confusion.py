"""Confusion matrix, per-class IoU, mIoU and pixel accuracy (+ a streaming accumulator).

Conventions: rows = ground truth, columns = prediction; pixels whose GT is
``ignore_index`` are excluded. A class absent from both GT and prediction has
IoU NaN (not 0); means are NaN-means. ``void`` (optional, (C,)) counts labelled pixels
of each GT class that a prediction left void (no class, as the Cityscapes script's void
label ids): they are false negatives of that class and never false positives.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._serialize import ToDictMixin
from ._validate import Prepared, check_num_classes, prepare_gt, prepare_pred


def nanmean(x: Any) -> float:
    """Mean over finite entries; NaN when there are none (no RuntimeWarning)."""
    a = np.asarray(x, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def safe_div(num: Any, den: Any) -> np.ndarray:
    """Element-wise ``num / den`` with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _confusion_prepared(prep: Prepared, pred: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    c = prep.num_classes
    sel = prep.valid if mask is None else (prep.valid & mask)
    if mask is None and prep.all_valid:
        g, p = prep.gt.ravel(), pred.ravel()
    else:
        g, p = prep.gt[sel], pred[sel]
    key = g.astype(np.int64) * c + p
    return np.bincount(key, minlength=c * c).reshape(c, c).astype(np.int64)


def confusion_matrix(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """(C, C) int64 confusion matrix, rows = GT, cols = prediction, ignore pixels excluded.

    ``mask`` (bool HxW) optionally restricts the pixels counted.
    """
    prep = prepare_gt(gt, num_classes, ignore_index)
    p = prepare_pred(pred, prep)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != prep.shape:
            raise ValueError(f"shape mismatch: gt has shape {prep.shape} but mask has shape {mask.shape}")
        mask = mask.astype(bool, copy=False)
    return _confusion_prepared(prep, p, mask)


def _gt_totals(cm: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    rows = cm.sum(1)
    return rows if void is None else rows + np.asarray(void, dtype=np.int64)


def iou_from_confusion(cm: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN where the class is absent from GT and prediction.

    ``void[c]``: pixels of GT class c predicted as no class (added to FN).
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    return safe_div(tp, cm.sum(0) + _gt_totals(cm, void) - tp)


def class_accuracy_from_confusion(cm: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Per-class recall TP / (TP + FN); NaN where the class is absent from GT."""
    cm = np.asarray(cm)
    return safe_div(np.diag(cm), _gt_totals(cm, void))


def pixel_accuracy_from_confusion(cm: np.ndarray, void: np.ndarray | None = None) -> float:
    """Correct / counted pixels; NaN when no pixel is counted."""
    cm = np.asarray(cm)
    return float(safe_div(np.trace(cm), _gt_totals(cm, void).sum()))


@dataclass
class SegmentationScores(ToDictMixin):
    """Region metrics derived from one confusion matrix."""

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray
    mean_class_accuracy: float

    @classmethod
    def from_confusion(cls, cm: np.ndarray, void: np.ndarray | None = None) -> "SegmentationScores":
        cm = np.asarray(cm, dtype=np.int64)
        iou = iou_from_confusion(cm, void)
        acc = class_accuracy_from_confusion(cm, void)
        return cls(cm, iou, nanmean(iou), pixel_accuracy_from_confusion(cm, void), acc, nanmean(acc))


def segmentation_scores(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, *, ignore_index: int = 255
) -> SegmentationScores:
    """Confusion matrix, per-class IoU, mIoU and pixel accuracy of one image."""
    return SegmentationScores.from_confusion(confusion_matrix(gt, pred, num_classes, ignore_index=ignore_index))


class ConfusionAccumulator:
    """Streaming dataset confusion matrix: ``update(gt, pred)`` per image, then read the scores."""

    def __init__(self, num_classes: int, *, ignore_index: int = 255) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.n_images = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's confusion matrix."""
        cm = confusion_matrix(gt, pred, self.num_classes, ignore_index=self.ignore_index)
        self.add(cm)
        return cm

    def add(self, cm: np.ndarray) -> None:
        """Add a precomputed (C, C) confusion matrix."""
        cm = np.asarray(cm)
        if cm.shape != self.matrix.shape:
            raise ValueError(f"confusion matrix shape {cm.shape} does not match {self.matrix.shape}")
        self.matrix += cm.astype(np.int64)
        self.n_images += 1

    def merge(self, other: "ConfusionAccumulator") -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge accumulators with {other.num_classes} and {self.num_classes} classes")
        self.matrix += other.matrix
        self.n_images += other.n_images

    def reset(self) -> None:
        self.matrix[:] = 0
        self.n_images = 0

    def iou(self) -> np.ndarray:
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        return nanmean(self.iou())

    def pixel_accuracy(self) -> float:
        return pixel_accuracy_from_confusion(self.matrix)

    def scores(self) -> SegmentationScores:
        return SegmentationScores.from_confusion(self.matrix.copy())
