"""Shared test helpers: where the official reference fixtures live, and small model builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """``../shared/fixtures/reference`` beside the checkout (CI always has it), or ``$FAPN_FIXTURES``."""
    env = os.environ.get("FAPN_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "reference"


def write_official(folder: Path, state_dict: dict, fmt: str) -> Path:
    """An official-format checkpoint of ``state_dict`` in ``folder``: detectron2 ``.pth`` ({"model": tensors}) or
    model-zoo ``.pkl`` (numpy arrays under "model")."""
    import pickle

    import torch

    if fmt == "pth":
        path = folder / "model_final.pth"
        torch.save({"model": state_dict, "iteration": 1}, path)
    else:
        path = folder / "model_final.pkl"
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state_dict.items()}, "__author__": "test"}, f)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    d = fixtures_dir()
    if not (d / "README.md").is_file():
        pytest.skip(f"official reference fixtures not found at {d} (set FAPN_FIXTURES to their folder)")
    return d


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


# what a skipped test's reason says → the sentence that tells a reader what was not checked and how to check it
_NOT_CHECKED = (
    ("official reference fixtures not found",
     lambda n: f"{n} faithfulness tests against the official FaPN-full / detectron2 fixtures (not found at "
               f"{fixtures_dir()}): set FAPN_FIXTURES=/path/to/shared/fixtures/reference and run again"),
    ("chromium",
     lambda n: f"{n} browser end-to-end tests (no Debian chromium): run as root so scripts/run_tests.sh installs "
               "it, or 'apt-get install chromium'"),
    ("CUDA",
     lambda n: f"{n} GPU tests (no CUDA device here): run on a machine with one (benchmarks/gpu_check.sh)"),
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Close the run with one line per kind of check it did not make (skips, and tests left out by marker), after
    pytest's own short summary, so it stands right above the final count."""
    yield
    known: dict[str, int] = {}
    other: dict[str, int] = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        key = next((k for k, _ in _NOT_CHECKED if k in reason), None)
        if key is None:
            reason = reason.removeprefix("Skipped: ")
            other[reason] = other.get(reason, 0) + 1
        else:
            known[key] = known.get(key, 0) + 1
    lines = [say(known[key]) for key, say in _NOT_CHECKED if key in known]
    lines += [f"{n} skipped: {reason}" for reason, n in other.items()]
    slow = [i for i in terminalreporter.stats.get("deselected", []) if i.get_closest_marker("slow") is not None]
    if slow and "not slow" in (config.getoption("markexpr") or ""):
        lines.append(f"{len(slow)} slow test(s) left out by default (the 8-user load test, ~2 min): "
                     "bash scripts/run_tests.sh -m slow")
    if lines:
        terminalreporter.write_sep("-", "not checked in this run")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def r18_detectors(tmp_path_factory) -> dict[str, Path]:
    """The Mask R-CNN and Faster R-CNN inside the bundled R18 Panoptic FPN pair (same weights, no semantic head):
    real trained detectors for app tests, as native checkpoints ``{fpn,fapn}_{maskrcnn,fasterrcnn}``."""
    from fapn_core.checkpoints import bundled_models, detector_from_panoptic, load_checkpoint, save_native

    have = bundled_models()
    if not {"fpn_r18_panoptic", "fapn_r18_panoptic"} <= set(have):
        pytest.skip("bundled Panoptic FPN pair missing from assets/models (scripts/train_bundled_panoptic.sh)")
    out = tmp_path_factory.mktemp("detectors")
    paths = {}
    for neck in ("fpn", "fapn"):
        model, card = load_checkpoint(have[f"{neck}_r18_panoptic"])
        for head in ("maskrcnn", "fasterrcnn"):
            det, det_card = detector_from_panoptic(model, card, head)
            paths[f"{neck}_{head}"] = save_native(det, out / f"{neck}_r18_{head}.safetensors", det_card, half=True)
    return paths


@pytest.fixture
def one_thread():
    """Many tiny backward kernels (training smoke tests): one thread is several times faster than two when another
    process shares the 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
