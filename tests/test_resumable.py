"""The resumable per-image loop both evaluations run on (``fapn_core.evaluation.runner``)."""

from __future__ import annotations

import json

import pytest

from fapn_core.evaluation.runner import EvaluationInterrupted, ResumableLoop


def _run(folder, stop_after=None, snapshot_every=2, identity=None):
    seen = []
    loop = ResumableLoop(folder, "state.json", identity=identity or {"models": ["a"], "n_total": 7},
                         indices=range(7), jsonl=["rows.jsonl"], progress=False, snapshot_every=snapshot_every,
                         cancel=lambda: stop_after is not None and len(seen) >= stop_after,
                         extra_state=lambda: {"sum": sum(seen)})
    with open(folder / "rows.jsonl", "a") as f:
        for i in loop:
            if i == 3:
                loop.skip({"index": i, "error": "unreadable"})
                continue
            seen.append(i)
            f.write(json.dumps({"index": i}) + "\n")
            f.flush()
            loop.done(i)
    loop.close()
    return loop, seen


def test_interrupted_loop_resumes_without_counting_an_image_twice(tmp_path):
    with pytest.raises(EvaluationInterrupted, match="stopped after 3 of 7"):
        _run(tmp_path, stop_after=3, snapshot_every=2)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["done"] == [0, 1, 2] and state["sum"] == 3  # the final snapshot holds what finished
    # simulate a crash after image 5 was written but before any snapshot recorded it
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write(json.dumps({"index": 5}) + "\n" + '{"index": 6')  # and a line cut in half
    loop, seen = _run(tmp_path)
    rows = [json.loads(line)["index"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted(rows) == [0, 1, 2, 4, 5, 6] and len(rows) == len(set(rows))
    assert sorted(loop.done_set) == [0, 1, 2, 4, 5, 6] and [s["index"] for s in loop.skipped] == [3]
    assert json.loads((tmp_path / "skipped.jsonl").read_text().splitlines()[0])["error"] == "unreadable"
    assert loop.saved["sum"] == 0 + 1 + 2  # the previous run's extra state, for the caller to restore


def test_another_evaluations_folder_is_refused(tmp_path):
    _run(tmp_path)
    with pytest.raises(ValueError, match="belongs to another evaluation .*use another output folder"):
        _run(tmp_path, identity={"models": ["b"], "n_total": 7})
