"""What an evaluation returns: the dataset-level results of label-map models and of detectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..metrics.compare import DatasetComparison
from ..metrics.detection import CocoScores
from ..metrics.objects import DetectionObjectRecord, FalsePositive
from ..metrics.panoptic import PanopticScores


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

    def comparison_of(self, label: str) -> tuple[DatasetComparison, str]:
        """The comparison holding model ``label`` and its side in it (``"a"`` for the baseline)."""
        if label == self.labels[0]:
            return next(iter(self.comparisons.values())), "a"
        return self.comparisons[f"{self.labels[0]}__vs__{label}"], "b"

    def model_result(self, label: str):
        comp, side = self.comparison_of(label)
        return getattr(comp, side)


@dataclass
class DetectionReport:
    """Dataset-level results of detectors: COCO scores, PQ, per-object records, false positives and tables."""

    labels: list[str]
    n_images: int
    skipped: list[dict[str, Any]]
    params: dict[str, int | None]
    seconds: float
    tasks: dict[str, str]
    coco: dict[str, dict[str, CocoScores]]  # label -> iou_type -> scores
    panoptic: dict[str, PanopticScores]
    objects: dict[str, list[DetectionObjectRecord]]  # "<A>__vs__<B>" -> records
    false_positives: dict[str, list[FalsePositive]]
    semantic: EvaluationReport | None = None  # the semantic heads of panoptic models
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
