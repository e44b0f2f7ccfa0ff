"""The one task dispatch of ``fapn_core.evaluation``: which evaluator scores which models, and what it refuses."""

from __future__ import annotations

import pytest

from fapn_core.evaluation import EVALUATORS, evaluate, evaluate_detectors, evaluate_semantic, evaluator_for


def test_each_task_has_exactly_one_evaluator():
    tasks = [t for ev in EVALUATORS for t in ev.tasks]
    assert sorted(tasks) == sorted({"semantic", "detection", "instance", "panoptic"})
    assert evaluator_for({"a": "semantic", "b": "semantic"}).run is evaluate_semantic
    assert evaluator_for({"a": "instance", "b": "panoptic"}).run is evaluate_detectors


def test_mixed_or_unknown_tasks_are_refused_by_name():
    with pytest.raises(ValueError, match="cannot evaluate semantic models with detectors in one run"):
        evaluator_for({"a": "semantic", "b": "panoptic"})
    with pytest.raises(ValueError, match=r"no evaluator scores the tasks \['mask_classification'\]"):
        evaluator_for({"a": "mask_classification"})


class _Entry:
    def __init__(self, label: str, task: str) -> None:
        self.label, self.card = label, {"task": task}


def test_evaluate_checks_labels_and_options_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="no models to evaluate"):
        evaluate([], None, tmp_path)
    with pytest.raises(ValueError, match="model labels must be unique"):
        evaluate([_Entry("x", "semantic"), _Entry("x", "semantic")], None, tmp_path)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['alignmnet'\]"):
        evaluate([_Entry("x", "semantic")], None, tmp_path, alignmnet=True)
    assert not any(tmp_path.iterdir())  # nothing written
