"""Dataset evaluation: one entry point, ``evaluate(models, dataset, out_dir)``, and the one place that says which
evaluator scores which task.

Layout (dependencies run one way: evaluators → runner / tables / outputs, never back)::

    runner.py     RunSettings and the resumable per-image loop every evaluator runs on, DDP rank/world
    entries.py    what is scored: ModelEntry (a loaded model), PredictionEntry (saved PNGs), model_task
    reports.py    EvaluationReport (label maps), DetectionReport (instances / panoptic)
    tables.py     the rows of every table; outputs.py the CSV / summary.json / tables.md files
    semantic.py   evaluate_semantic: label-map models and saved predictions
    instances.py  evaluate_detectors: Faster / Mask R-CNN, Panoptic FPN

A new task adds an evaluator module and one :class:`Evaluator` line in :data:`EVALUATORS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .entries import ModelEntry, PredictionEntry, load_models, load_predictions, model_task
from .instances import evaluate_detectors
from .reports import DetectionReport, EvaluationReport
from .runner import SKIPPED_FILE, EvaluationInterrupted, ResumableLoop, RunSettings, atomic_write_text
from .semantic import evaluate_semantic
from .tables import TABLE_TITLES, markdown_table, table_file


@dataclass(frozen=True)
class Evaluator:
    """An evaluator, the model tasks it scores, and the keyword options of :func:`evaluate` only it takes."""

    name: str
    tasks: frozenset[str]
    run: Callable[..., Any]
    options: tuple[str, ...] = ()


EVALUATORS: tuple[Evaluator, ...] = (
    Evaluator("label maps", frozenset({"semantic"}), evaluate_semantic,
              ("thing_classes", "avg_instance_size", "alignment")),
    Evaluator("instances", frozenset({"detection", "instance", "panoptic"}), evaluate_detectors),
)


def evaluator_for(tasks: dict[str, str]) -> Evaluator:
    """The evaluator that scores every model's task (``tasks``: label → task); ``ValueError`` when none does."""
    wanted = set(tasks.values())
    for ev in EVALUATORS:
        if wanted <= ev.tasks:
            return ev
    if "semantic" in wanted:
        raise ValueError(f"cannot evaluate semantic models with detectors in one run: {tasks}")
    raise ValueError(f"no evaluator scores the tasks {sorted(wanted)} together: {tasks}")


def evaluate(
    models: Sequence[ModelEntry | PredictionEntry],
    dataset,
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    amp: bool = False,
    progress: bool | Callable[[int, int], None] = True,
    snapshot_every: int = 10,
    deadline_s: float | None = None,
    cancel: Callable[[], bool] | None = None,
    **options: Any,
) -> EvaluationReport | DetectionReport:
    """Evaluate ``models`` (first = baseline) on ``dataset`` with the evaluator of their task; writes per-image
    JSONL and CSV/JSON/Markdown tables to ``out_dir``.

    Semantic models and saved predictions → :func:`evaluate_semantic` (options ``thing_classes``,
    ``avg_instance_size``, ``alignment``); detectors → :func:`evaluate_detectors` (COCO box/mask/Boundary AP, PQ,
    objects A vs B; it ignores those options). ``progress``: ``True`` for a tqdm bar, or a callback
    ``(done, total)``. ``deadline_s``/``cancel`` stop early with a snapshot (:class:`EvaluationInterrupted`; call
    again to resume). Raises ``ValueError`` for no models, duplicate labels, mixed tasks or class mismatches.
    """
    if not models:
        raise ValueError("no models to evaluate")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {labels}")
    known = {o for ev in EVALUATORS for o in ev.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"evaluate() got unknown option(s) {unknown}; known: {sorted(known)}")
    ev = evaluator_for({m.label: model_task(m) for m in models})
    settings = RunSettings(limit, amp, progress, snapshot_every, deadline_s, cancel)
    return ev.run(models, dataset, out_dir, settings, **{k: v for k, v in options.items() if k in ev.options})


__all__ = [
    "EVALUATORS", "SKIPPED_FILE", "DetectionReport", "EvaluationInterrupted", "EvaluationReport", "Evaluator",
    "ModelEntry", "PredictionEntry", "ResumableLoop", "RunSettings", "TABLE_TITLES", "atomic_write_text", "evaluate",
    "evaluate_detectors", "evaluate_semantic", "evaluator_for", "load_models", "load_predictions", "markdown_table",
    "model_task", "table_file",
]
