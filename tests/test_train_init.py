"""Fine-tuning from a checkpoint (``fapn train --init … --train-only …``): matching weights are copied, the rest is
frozen and keeps its batch-norm statistics, and a checkpoint that cannot fit is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from fapn_core.checkpoints import CheckpointError, load_checkpoint, make_card, save_native
from fapn_core.models.zoo import build_model
from fapn_core.train import TrainConfig, freeze_except, initialise_from, train, train_mode

DATA = "synthetic:n=8,seed=3,size=64x128"
TINY = {"neck_channels": 16, "head_conv_dims": 32, "box_fc_dim": 32, "mask_conv_dims": 16, "stem_out_channels": 16,
        "rpn_post_nms_topk_train": 200, "roi_batch_size_per_image": 64, "backbone_norm": "BN"}


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory):
    """A tiny Panoptic FPN (BatchNorm backbone with non-trivial statistics) as a native file."""
    torch.manual_seed(0)
    model = build_model("fapn_r18_panoptic", num_classes=4, sem_seg_num_classes=7, **TINY).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("init") / "panoptic.safetensors"
    return save_native(model, path, make_card(model, classes=["a", "b", "c", "d"]), half=False)


def test_init_copies_what_fits_and_reports_the_rest(panoptic):
    source, _ = load_checkpoint(panoptic)
    model = build_model("fapn_r18_pointrend_rcnn", num_classes=4, **TINY)
    report = initialise_from(model, str(panoptic))
    mine, theirs = model.state_dict(), source.state_dict()
    assert report["loaded"] and all(torch.equal(mine[k], theirs[k]) for k in report["loaded"])
    tops = {k.split(".")[0] for k in report["loaded"]}
    assert tops == {"backbone", "neck", "proposal_generator", "roi_heads"}
    assert all(k.startswith("roi_heads.mask_head.") for k in report["kept"])  # PointRend's head is new
    assert any(k.startswith("head.") for k in report["skipped"])  # the semantic head has no place here


def test_init_refuses_a_checkpoint_that_cannot_fit(panoptic):
    with pytest.raises(CheckpointError, match=r"its backbone does not fit fpn_r50_maskrcnn's \(\d+ of its weights"):
        initialise_from(build_model("fpn_r50_maskrcnn", num_classes=4, neck_channels=8, box_fc_dim=8), str(panoptic))
    # the same widths but another input normalisation: equal shapes, other meaning
    other = build_model("fapn_r18_maskrcnn", num_classes=4, pixel_std=(1.0, 1.0, 1.0), **TINY)
    with pytest.raises(CheckpointError, match=r"its backbone was trained with other pixel_std"):
        initialise_from(other, str(panoptic))


def test_freeze_except_names_unknown_paths_and_keeps_frozen_norms_in_eval():
    model = build_model("fapn_r18_pointrend_rcnn", num_classes=4, **TINY)
    with pytest.raises(ValueError, match=r"--train-only roi_heads\.mask_had: no parameter .* backbone, neck"):
        freeze_except(model, ["roi_heads.mask_had"])
    n = freeze_except(model, ["roi_heads.mask_head"])
    assert n == sum(p.numel() for p in model.roi_heads.mask_head.parameters()) > 0
    train_mode(model)
    assert model.training and model.roi_heads.training and model.roi_heads.mask_head.training
    assert not model.backbone.training and not model.neck.training and not model.proposal_generator.training
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fine_tuning_trains_only_the_named_head(panoptic, tmp_path):
    cfg = TrainConfig(model="fapn_r18_pointrend_rcnn", data=DATA, out_dir=str(tmp_path), steps=3, batch_size=2,
                      crop=(64, 96), lr=1e-2, warmup=1, workers=0, threads=1, ckpt_every=3, half=False,
                      model_overrides=TINY, init=str(panoptic), train_only=("roi_heads.mask_head",))
    tuned, card = load_checkpoint(train(cfg, progress=False))
    source, _ = load_checkpoint(panoptic)
    before, after = source.state_dict(), tuned.state_dict()
    # the frozen body is the checkpoint's, batch-norm statistics included
    for k, v in after.items():
        if k.startswith(("backbone.", "neck.", "proposal_generator.", "roi_heads.box")):
            assert torch.equal(v, before[k]), k
    # the PointRend head learned: its predictors' biases start at 0 (detectron2's init)
    for k in ("roi_heads.mask_head.point_head.predictor.bias", "roi_heads.mask_head.coarse_head.prediction.bias"):
        assert after[k].abs().sum() > 0, k
    assert card["recipe"]["init"] == str(panoptic) and card["recipe"]["train_only"] == ["roi_heads.mask_head"]
