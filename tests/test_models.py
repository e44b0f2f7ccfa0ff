"""Backbones, necks, heads and the Segmentor: shapes, variants, training and inference contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fapn_core.models.backbones import build_resnet
from fapn_core.models.layers import FrozenBatchNorm2d
import torch.nn.functional as F

from fapn_core.models.necks import NECKS, ConcatPointwise, FeatureSelection
from fapn_core.models.zoo import build_model, count_parameters, get_model_config, list_models

# The seed's ablation table (R50 unless noted), in millions.
PAPER_PARAMS_M = {
    "fpn": 28.6, "fpn_extra_conv": 33.4, "fam": 31.7, "fam_se": 33.1, "fapn": 33.1,
    "deconv_fsm": 32.7, "fam_noref_fsm": 32.7,
}


@pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (34, [64, 128, 256, 512]),
                                            (50, [256, 512, 1024, 2048]), (101, [256, 512, 1024, 2048])])
def test_resnet_outputs_and_strides(depth, channels):
    net = build_resnet(depth, norm="BN")
    shapes = net.output_shape()
    assert [s.channels for s in shapes.values()] == channels
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f"res{i + 2}": (1, c, 64 // s, 96 // s) for i, (c, s) in enumerate(zip(channels, [4, 8, 16, 32]))
    }


def test_resnet_parameter_counts_match_known_values():
    # torchvision resnet18/50 trunks without fc: 11,176,512 and 23,508,032 (stride placement changes no count)
    assert count_parameters(build_resnet(18, norm="BN")) == 11_176_512
    assert count_parameters(build_resnet(50, norm="BN")) == 23_508_032
    # with FrozenBN the affine parameters become buffers: 23,454,912 (official manifest's bottom_up)
    assert count_parameters(build_resnet(50, norm="FrozenBN")) == 23_454_912


def test_stride_in_1x1_places_the_stride():
    a = build_resnet(50, stride_in_1x1=True)
    b = build_resnet(50, stride_in_1x1=False)
    assert a.res3[0].conv1.stride == (2, 2) and a.res3[0].conv2.stride == (1, 1)
    assert b.res3[0].conv1.stride == (1, 1) and b.res3[0].conv2.stride == (2, 2)


def test_frozen_bn_matches_eval_batchnorm_and_is_not_trained():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    fbn = FrozenBatchNorm2d(8)
    for k in ("weight", "bias", "running_mean", "running_var"):
        getattr(fbn, k).copy_(getattr(bn, k).detach())
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    torch.testing.assert_close(fbn(x), bn(x))
    with torch.no_grad():
        torch.testing.assert_close(fbn(x), bn(x))
    assert list(fbn.parameters()) == []


def test_fsm_attention_is_sigmoid_of_pooled_projection():
    torch.manual_seed(0)
    fsm = FeatureSelection(4, 3)
    x = torch.randn(1, 4, 3, 5)
    pooled = x.mean(dim=(2, 3))  # (1, 4)
    att = torch.sigmoid(pooled @ fsm.conv_atten.weight.view(4, 4).T).view(1, 4, 1, 1)
    torch.testing.assert_close(fsm.attention(x), att)
    expected = torch.einsum("oc,bchw->bohw", fsm.conv.weight.view(3, 4), x + x * att)
    torch.testing.assert_close(fsm(x), expected)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("mode", ["inference", "grad", "channels_last", "mixed"])
def test_fused_fsm_and_offset_conv_equal_their_unfused_definitions(residual, mode):
    # FSM: conv(x + x·att) (SE: conv(x·att)); FAM offset: conv1x1(cat[a, 2·b]) — the official forms, written out
    gen = torch.Generator().manual_seed(3)
    fsm = FeatureSelection(6, 5, residual=residual)
    off = ConcatPointwise(5, 5, 4, scale_b=2.0)
    x, a, b = (torch.randn(2, c, 7, 9, generator=gen) for c in (6, 5, 5))
    if mode == "channels_last":
        x, a, b = (t.contiguous(memory_format=torch.channels_last) for t in (x, a, b))
    if mode == "mixed":  # a channels-last, b NCHW, x a strided view: the F.conv2d fallback
        a = a.contiguous(memory_format=torch.channels_last)
        x = torch.randn(2, 6, 7, 18, generator=gen)[..., ::2]
    if mode == "grad":
        x.requires_grad_(True)
    att = fsm.attention(x)
    fsm_ref = F.conv2d(x + x * att if residual else x * att, fsm.conv.weight)
    off_ref = F.conv2d(torch.cat([a, b * 2], dim=1), off.weight)
    with torch.inference_mode(mode == "inference"):
        fsm_out, off_out = fsm(x), off(a, b)
    torch.testing.assert_close(fsm_out, fsm_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(off_out, off_ref, rtol=1e-5, atol=1e-6)
    if mode == "channels_last":
        assert off_out.is_contiguous(memory_format=torch.channels_last)
    if mode == "grad":
        g_ours = torch.autograd.grad(fsm_out.square().sum(), [x, fsm.conv.weight, fsm.conv_atten.weight])
        g_ref = torch.autograd.grad(fsm_ref.square().sum(), [x, fsm.conv.weight, fsm.conv_atten.weight])
        for g1, g2 in zip(g_ours, g_ref):
            torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_fapn_runs_under_autocast():
    # the fused 1×1 products take autocast's dtype as F.conv2d would (CPU bf16 here; the same code path as CUDA AMP)
    torch.manual_seed(0)
    model = build_model("fapn_r18_semfpn", num_classes=5, neck_channels=16, head_conv_dims=32).eval()
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert float((low.float() - ref).abs().max() / ref.abs().max()) < 0.1
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(x, torch.randint(0, 5, (1, 64, 96)))
    sum(losses.values()).backward()
    assert model.neck.align2.offset.weight.grad is not None


def test_registry_names_and_errors():
    names = list_models()
    # semfpn, pointrend + 4 R-CNN heads (pointrend_rcnn) + panopticfcn, every neck and ResNet
    assert len(names) == len(NECKS) * 4 * 7 + len(NECKS) * 8
    # + MaskFormer: every neck as a pixel decoder on r18, r34, r50, r101, swint, swins, swinb, swinl
    assert len(list_models("_maskformer")) == len(NECKS) * 8 and "fapn_swinl_maskformer" in names
    assert len(list_models("_panopticfcn")) == len(NECKS) * 4 and "fapn_r50_panopticfcn" in names
    assert "fapn_r50_pointrend" in names and "fpn_r18_semfpn" in names
    with pytest.raises(KeyError, match="unknown model"):
        build_model("fapn_r51_pointrend")
    with pytest.raises(TypeError, match="unknown model option"):
        build_model("fpn_r18_semfpn", neck_chanels=64)
    cfg = get_model_config("fapn_r18_semfpn", num_classes=7, neck_channels=64)
    assert cfg.name == "fapn_r18_semfpn" and cfg.num_classes == 7


@pytest.mark.parametrize("neck", NECKS)
@pytest.mark.parametrize("backbone", ["r18", "r50"])
def test_every_neck_variant_trains_and_infers(neck, backbone):
    torch.manual_seed(0)
    model = build_model(f"{neck}_{backbone}_semfpn", num_classes=5, backbone_norm="BN",
                        neck_channels=32, head_conv_dims=32)
    images = torch.randint(0, 256, (2, 3, 64, 96)).float()
    targets = torch.randint(0, 5, (2, 64, 96))
    targets[:, :4] = 255
    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    # zero-initialised offset predictors still receive gradients through the DCN's bilinear sampling
    assert missing == [], missing
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5, 64, 96)


@pytest.mark.parametrize("neck", NECKS)
def test_r50_parameter_counts_near_the_paper(neck):
    count = count_parameters(build_model(f"{neck}_r50_pointrend"))
    tolerance = 0.15 if neck == "deconv_fsm" else 0.1  # see README: the paper's deconv details are unspecified
    assert abs(count / 1e6 - PAPER_PARAMS_M[neck]) <= tolerance, count


def test_pointrend_training_and_subdivision_inference():
    torch.manual_seed(0)
    model = build_model("fapn_r18_pointrend", num_classes=4, neck_channels=32, head_conv_dims=32,
                        point_fc_dim=16, train_num_points=64, subdivision_num_points=100)
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    model.train()
    losses = model(images, torch.randint(0, 4, (2, 64, 64)))
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        feats = model.extract_features(images)
        logits, coarse, steps = model.head.inference(feats)
    assert coarse.shape == (2, 4, 16, 16) and logits.shape == (2, 4, 64, 64)
    assert [s.point_indices.shape for s in steps] == [(2, 100), (2, 100)]


@pytest.mark.parametrize("size", [(61, 83), (64, 64), (1, 1), (33, 100)])
def test_predict_pads_and_crops_to_input_size(size):
    model = build_model("fpn_r18_semfpn", num_classes=3, neck_channels=16, head_conv_dims=64).eval()
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    logits = model.predict(image)
    assert logits.shape == (3, *size) and logits.dtype == torch.float32


def test_bgr_model_flips_channels_and_normalises():
    model = build_model("fapn_r50_pointrend")
    assert model.input_format == "BGR"
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    x = model.normalize(rgb)
    expected = torch.tensor([30 - 103.53, 20 - 116.28, 10 - 123.675]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    with pytest.raises(ValueError, match="RGB"):
        model.normalize(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="H×W×3"):
        model.predict(np.zeros((8, 8), np.uint8))


def test_padding_does_not_change_predictions_inside_the_image():
    """Zero padding after normalisation (detectron2 ImageList) is what the crop removes."""
    torch.manual_seed(0)
    model = build_model("fapn_r18_semfpn", num_classes=3, neck_channels=16, head_conv_dims=32).eval()
    image = torch.randint(0, 256, (1, 3, 64, 64)).float()
    with torch.no_grad():
        a = model(image)
        padded = model.neck(model.backbone(model.pad(model.normalize(image))))
        b = model.head(padded)[..., :64, :64]
    torch.testing.assert_close(a, b)
