"""MaskFormer parts without the reference fixtures: Swin padding/shift rules, position embedding, semantic
inference order, Hungarian matching, the criterion, a tiny overfit, odd input sizes, cards and captures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fapn_core.checkpoints import load_native, save_native
from fapn_core.introspect import predict_with_captures
from fapn_core.models.maskformer import scores_to_probabilities, semantic_inference, semantic_targets
from fapn_core.models.maskformer.criterion import SetCriterion
from fapn_core.models.maskformer.matcher import HungarianMatcher
from fapn_core.models.maskformer.transformer import PositionEmbeddingSine
from fapn_core.models.swin import SwinTransformer, shift_attention_mask, window_partition
from fapn_core.models.zoo import ModelConfig, build_model, get_model_config

TINY = dict(num_classes=3, neck_channels=64, mask_dim=32, hidden_dim=32, nheads=2, dim_feedforward=64,
            dec_layers=2, num_queries=6)


def _tiny(name: str = "fapn_r50_maskformer", **kw):
    torch.manual_seed(0)
    if "swin" in name:
        kw = {"swin_embed_dim": 8, "swin_depths": (2, 2, 2, 2), "swin_num_heads": (1, 1, 2, 2),
              "swin_window_size": 7, **kw}
    else:
        kw = {"depth": 18, "backbone_norm": "BN", "stem_out_channels": 16, "res2_out_channels": 16, **kw}
    return build_model(name, **{**TINY, **kw})


def test_registry_defaults_follow_the_official_configs():
    for name, classes in (("fapn_r50_maskformer", 150), ("fpn_r101_maskformer", 171), ("fapn_swinl_maskformer", 150)):
        cfg = get_model_config(name)
        assert cfg.task == "semantic" and cfg.num_classes == classes and cfg.num_queries == 100
        assert cfg.input_format == "RGB" and cfg.pixel_mean == (123.675, 116.28, 103.53)
        assert cfg.pixel_std == (58.395, 57.12, 57.375) and not cfg.stride_in_1x1
        assert (cfg.hidden_dim, cfg.nheads, cfg.dec_layers, cfg.enc_layers, cfg.dim_feedforward) == (256, 8, 6, 0, 2048)
    swin = get_model_config("fapn_swinl_maskformer")
    assert (swin.swin_embed_dim, swin.swin_depths, swin.swin_num_heads, swin.swin_window_size) == (
        192, (2, 2, 18, 2), (6, 12, 24, 48), 12)
    # existing configs keep their fields and defaults
    assert ModelConfig().backbone == "resnet" and get_model_config("fapn_r50_pointrend").head == "pointrend"
    with pytest.raises(ValueError, match="only available with the maskformer head"):
        build_model("fpn_r18_semfpn", backbone="swin")


# ---------------------------------------------------------------------------------------------------- Swin
def test_shift_mask_regions_on_the_padded_grid():
    ws, s = 7, 3
    mask = shift_attention_mask(14, 21, ws, s)
    assert mask.shape == (6, 49, 49) and set(mask.unique().tolist()) <= {0.0, -100.0}
    assert torch.all(mask[0] == 0)  # the top-left window lies inside one region
    # region ids built independently: rows/cols split at Hp-ws and Hp-s
    def region(i: int, n: int) -> int:
        return 0 if i < n - ws else (1 if i < n - s else 2)
    ids = torch.tensor([[3 * region(i, 14) + region(j, 21) for j in range(21)] for i in range(14)], dtype=torch.float32)
    win = window_partition(ids[None, :, :, None], ws).view(-1, ws * ws)
    want = torch.where(win[:, None, :] == win[:, :, None], 0.0, -100.0)
    assert torch.equal(mask, want)


@pytest.mark.parametrize("hw", [(32, 32), (64, 96), (96, 128)])
def test_swin_stage_grids_not_multiples_of_the_window(hw):
    """Grids smaller than or not divisible by the window (8×8 … 1×1): no clamping, outputs at every stride."""
    torch.manual_seed(0)
    swin = SwinTransformer(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=7).eval()
    with torch.no_grad():
        out = swin(torch.randn(1, 3, *hw))
    for i, (name, t) in enumerate(out.items()):
        assert t.shape == (1, 8 * 2**i, hw[0] // 2 ** (i + 2), hw[1] // 2 ** (i + 2)) and torch.isfinite(t).all()
    # padding happens inside the blocks: the same content padded further changes the result near the border only
    # through attention, so a batch with the same image gives identical outputs per image
    with torch.no_grad():
        x = torch.randn(1, 3, *hw)
        two = swin(torch.cat([x, x]))
        one = swin(x)
    assert all(torch.allclose(two[k][1:], one[k], atol=1e-5) for k in one)


def test_swin_padded_tokens_attend_with_their_qkv_bias():
    """Padded tokens are exact zeros after norm1 (pad after the norm), so their keys/values are the qkv bias; masking
    them out would change the result."""
    torch.manual_seed(0)
    swin = SwinTransformer(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=7).eval()
    blk = swin.layers[0].blocks[1]
    x = torch.randn(1, 5 * 6, 8)
    seen = {}
    h = blk.attn.register_forward_hook(lambda m, a, o: seen.__setitem__("windows", a[0]))
    with torch.no_grad():
        blk(x, (5, 6), shift_attention_mask(7, 7, 7, 3))
    h.remove()
    windows = seen["windows"].view(7, 7, 8)
    rolled_back = torch.roll(windows, shifts=(3, 3), dims=(0, 1))
    assert torch.all(rolled_back[5:] == 0) and torch.all(rolled_back[:, 6:] == 0)
    assert torch.allclose(rolled_back[:5, :6], blk.norm1(x).view(5, 6, 8), atol=1e-6)


# -------------------------------------------------------------------------------------- transformer parts
def test_position_embedding_layout():
    pe = PositionEmbeddingSine(4, normalize=True)(torch.zeros(1, 8, 2, 3))
    assert pe.shape == (1, 8, 2, 3)
    i, j = 2, 3  # last row / column: normalised to ~2π
    y, x = i / (2 + 1e-6) * 2 * math.pi, j / (3 + 1e-6) * 2 * math.pi
    dim_t = [10000 ** (2 * (k // 2) / 4) for k in range(4)]
    want_y = [math.sin(y / dim_t[0]), math.cos(y / dim_t[1]), math.sin(y / dim_t[2]), math.cos(y / dim_t[3])]
    want_x = [math.sin(x / dim_t[0]), math.cos(x / dim_t[1]), math.sin(x / dim_t[2]), math.cos(x / dim_t[3])]
    assert torch.allclose(pe[0, :, 1, 2], torch.tensor(want_y + want_x), atol=1e-6)


def test_semantic_inference_order_and_crop():
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 5, 4), torch.randn(2, 5, 8, 8) * 3
    out = semantic_inference(logits, masks, (32, 32), (27, 30), (54, 60))
    assert out.shape == (2, 3, 54, 60)
    for b in range(2):  # the official per-image rule
        up = F.interpolate(masks[b:b + 1], size=(32, 32), mode="bilinear", align_corners=False)[0]
        sem = torch.einsum("qc,qhw->chw", F.softmax(logits[b], -1)[:, :-1], up.sigmoid())[:, :27, :30]
        sem = F.interpolate(sem[None], size=(54, 60), mode="bilinear", align_corners=False)[0]
        assert torch.allclose(out[b], sem, atol=1e-6)
    assert out.min() >= 0 and out.sum(1).max() <= 5
    probs = scores_to_probabilities(out, 1)
    assert torch.allclose(probs.sum(1), torch.ones(2, 54, 60), atol=1e-5)


def test_semantic_targets_from_label_maps():
    t = torch.tensor([[[0, 0, 2], [255, 2, 2]]])
    (tgt,) = semantic_targets(t, 3)
    assert tgt["labels"].tolist() == [0, 2]
    assert tgt["masks"].tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]
    with pytest.raises(ValueError, match="labels must be"):
        semantic_targets(torch.tensor([[[5]]]), 3)


# ------------------------------------------------------------------------------------------------- losses
def test_hungarian_matching_recovers_a_constructed_assignment():
    torch.manual_seed(0)
    q, k, h, w = 6, 4, 16, 16
    gt_masks = torch.zeros(3, h, w)
    gt_masks[0, :8], gt_masks[1, 8:, :8], gt_masks[2, 8:, 8:] = 1, 1, 1
    labels = torch.tensor([2, 0, 3])
    owner = {4: 0, 1: 1, 3: 2}  # query → target
    pred_masks = torch.full((1, q, h // 4, w // 4), -8.0) + torch.randn(1, q, h // 4, w // 4) * 0.1
    logits = torch.zeros(1, q, k + 1)
    small = F.interpolate(gt_masks[:, None], size=(h // 4, w // 4), mode="nearest")[:, 0]
    for qi, ti in owner.items():
        pred_masks[0, qi] = torch.where(small[ti] > 0, 8.0, -8.0)
        logits[0, qi, labels[ti]] = 5.0
    (src, tgt), = HungarianMatcher()({"pred_logits": logits, "pred_masks": pred_masks},
                                     [{"labels": labels, "masks": gt_masks}])
    assert dict(zip(src.tolist(), tgt.tolist())) == owner


def test_criterion_losses_and_empty_weight():
    torch.manual_seed(0)
    crit = SetCriterion(3, no_object_weight=0.1)
    assert crit.empty_weight.tolist() == pytest.approx([1, 1, 1, 0.1])
    assert "empty_weight" in crit.state_dict()  # persistent, as in official checkpoints
    out = {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8),
           "aux_outputs": [{"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}]}
    masks = torch.zeros(2, 16, 16)
    masks[0, :8], masks[1, 8:] = 1, 1
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks}]
    losses = crit(out, targets)
    assert sorted(losses) == sorted(["loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"])
    (src, tgt), = crit.matcher(out, targets)
    cls = torch.full((1, 4), 3)
    cls[0, src] = targets[0]["labels"][tgt]
    want_ce = F.cross_entropy(out["pred_logits"].transpose(1, 2), cls, crit.empty_weight)
    assert torch.allclose(losses["loss_ce"], want_ce)
    up = F.interpolate(out["pred_masks"][0, src][:, None], size=(16, 16), mode="bilinear", align_corners=False)
    p, t = up[:, 0].flatten(1).sigmoid(), masks[tgt].flatten(1)
    dice = (1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)).sum() / 2
    assert torch.allclose(losses["loss_dice"], dice, atol=1e-6)
    assert losses["loss_mask"] > 0  # weighted ×20


def test_training_loss_decreases_on_a_tiny_overfit(one_thread):
    model = _tiny("fapn_r50_maskformer").train()
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64) * 255
    targets = torch.zeros(2, 64, 64, dtype=torch.long)
    targets[0, :, 32:] = 1
    targets[1, 20:50, 10:40] = 2
    targets[1, :5] = 255
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert set(losses) >= {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0"}
    assert np.mean(history[-3:]) < 0.6 * np.mean(history[:3]), history
    with pytest.raises(ValueError, match="needs targets"):
        model(images)


# --------------------------------------------------------------------------------------------- inputs & I/O
@pytest.mark.parametrize("name", ["fapn_r50_maskformer", "fpn_swinl_maskformer"])
@pytest.mark.parametrize("hw", [(5, 7), (33, 47)])
def test_any_image_size_gives_scores_at_the_input_size(name, hw):
    model = _tiny(name).eval()
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    out = model.predict(image)
    assert out.shape == (3, *hw) and torch.isfinite(out).all() and out.min() >= 0


def test_native_card_round_trip_and_captures(tmp_path):
    model = _tiny("fapn_swinl_maskformer").eval()
    path = save_native(model, tmp_path / "mf.safetensors")
    loaded, card = load_native(path)
    assert card["task"] == "semantic" and card["config"]["swin_depths"] == [2, 2, 2, 2]
    assert loaded.config == model.config and loaded.config.swin_depths == (2, 2, 2, 2)
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert torch.equal(loaded.predict(image), model.predict(image))
    pred = predict_with_captures(loaded, image, ("offsets", "fam_features", "queries"))
    assert sorted(pred.captures.fam) == ["p2", "p3", "p4"] and pred.captures.explain_missing() is not None
    fam = pred.captures.fam["p2"]
    assert fam.offsets.shape == (8, 9, 2, 10, 13) and fam.lateral.shape == (64, 10, 13)
    q = pred.captures.queries
    assert q.class_probs.shape == (6, 4) and q.mask_logits.shape == (6, 10, 13)
    assert np.allclose(pred.probabilities_max, scores_to_probabilities(torch.from_numpy(pred.logits)).max(0).values)
    plain = predict_with_captures(_tiny("fpn_r50_maskformer").eval(), image)
    assert plain.captures.fam == {} and plain.captures.queries is None


@pytest.mark.gpu
def test_cuda_matches_cpu_and_trains():
    model = _tiny("fapn_swinl_maskformer").eval()
    image = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    cpu = model.predict(image)
    model.cuda()
    assert torch.allclose(model.predict(image).cpu(), cpu, atol=1e-4)
    model.train()
    images = torch.rand(2, 3, 64, 64, device="cuda") * 255
    targets = torch.randint(0, 3, (2, 64, 64), device="cuda")
    sum(model(images, targets).values()).backward()
    assert model.neck.align_1.offset.weight.grad is not None
