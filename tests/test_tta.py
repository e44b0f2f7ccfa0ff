"""Multi-scale + flip test-time augmentation (detectron2's SemanticSegmentorWithTTA rules), on a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fapn_core.data.synthetic import make_sample
from fapn_core.models.tta import TTASettings, predict_tta, shortest_edge_size, tta_views
from fapn_core.models.zoo import build_model


def test_resize_rule_is_detectron2s():
    assert shortest_edge_size(512, 1024, 320, 4480) == (320, 640)
    assert shortest_edge_size(333, 500, 480, 4480) == (480, 721)  # 720.72 → 721 (half up)
    assert shortest_edge_size(100, 2000, 640, 4480) == (224, 4480)  # long side capped: 12800 → 4480
    assert shortest_edge_size(1000, 300, 800, 4480) == (2667, 800)
    views = tta_views(512, 1024, TTASettings(min_sizes=(320, 640), flip=True))
    assert views == [((320, 640), False), ((320, 640), True), ((640, 1280), False), ((640, 1280), True)]


@pytest.fixture(scope="module")
def model_and_image():
    torch.manual_seed(0)
    model = build_model("fapn_r18_maskformer", num_classes=10).eval()
    return model, make_sample(0, seed=2, size=(96, 160)).image


def test_identity_view_equals_single_scale(model_and_image):
    model, image = model_and_image
    one = predict_tta(model, image, TTASettings(min_sizes=(96,), max_size=4480, flip=False))
    assert torch.equal(one, model.predict(image))


def test_views_are_resized_back_unflipped_and_averaged_in_order(model_and_image):
    model, image = model_and_image
    out = predict_tta(model, image, TTASettings(min_sizes=(64, 128), flip=True))
    views = []
    for short in (64, 128):
        nh, nw = shortest_edge_size(96, 160, short, 4480)
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        for flip in (False, True):
            v = np.ascontiguousarray(resized[:, ::-1]) if flip else resized
            p = F.interpolate(model.predict(v)[None], size=(96, 160), mode="bilinear", align_corners=False)[0]
            views.append(p.flip(-1) if flip else p)
    ref = (views[0] + views[1] + views[2] + views[3]) / 4
    assert out.shape == (10, 96, 160)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert not torch.allclose(views[0], views[1], atol=1e-3)  # the flip matters for this model: the test can fail


def test_bad_images_are_refused(model_and_image):
    model, _ = model_and_image
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        predict_tta(model, np.zeros((8, 8), np.uint8))


def test_evaluate_reports_single_scale_and_tta_rows(tmp_path):
    """``fapn evaluate --tta``: each semantic model gets a second row scored with TTA, in every table."""
    from fapn_core.checkpoints import bundled_models
    from fapn_core.data import open_dataset
    from fapn_core.evaluation import evaluate, load_models

    if "fapn_r18_semfpn" not in bundled_models():
        pytest.skip("bundled semantic pair missing from assets/models")
    entries = load_models(["fapn_r18_semfpn"], tta=TTASettings(min_sizes=(64, 96), flip=True))
    assert [e.label for e in entries] == ["fapn_r18_semfpn", "fapn_r18_semfpn (TTA)"]
    assert entries[0].has_fam and not entries[1].has_fam  # alignment is measured on the single-scale forward
    report = evaluate(entries, open_dataset("synthetic:n=2,seed=2,size=96x160"), tmp_path, progress=False,
                      alignment=True)
    rows = {r["method"]: r for r in report.tables["ablation"]}
    assert set(rows) == {"fapn_r18_semfpn", "fapn_r18_semfpn (TTA)"}
    assert rows["fapn_r18_semfpn"]["mIoU"] != rows["fapn_r18_semfpn (TTA)"]["mIoU"]
    assert [r["method"] for r in report.tables["alignment"]] == ["fapn_r18_semfpn"] * len(report.tables["alignment"])
