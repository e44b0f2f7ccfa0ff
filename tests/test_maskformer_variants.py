"""MaskFormer pixel decoders after FaPN's ablation table (``<neck>_<backbone>_maskformer`` for every neck): the
registry, shapes at odd sizes, an independent functional re-implementation of every variant, parameter counts from
layer shapes, FAM/FSM captures, key-based config inference and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from fapn_core.checkpoints.configs import infer_config
from fapn_core.introspect import FAMCapture, predict_with_captures
from fapn_core.models.config import MASKFORMER_BACKBONES
from fapn_core.models.layers import ShapeSpec
from fapn_core.models.maskformer import PIXEL_DECODERS, PixelDecoder
from fapn_core.models.maskformer.pixel_decoder_variants import DECODER_SPECS
from fapn_core.models.necks import NECKS
from fapn_core.models.zoo import build_model, count_parameters, get_model_config, list_models

TINY = dict(num_classes=3, neck_channels=64, mask_dim=32, hidden_dim=32, nheads=2, dim_feedforward=64,
            dec_layers=2, num_queries=6)
TINY_BACKBONE = {
    "r18": dict(stem_out_channels=16, res2_out_channels=16),
    "r50": dict(stem_out_channels=16, res2_out_channels=32, width_per_group=8),
    "swint": dict(swin_embed_dim=16, swin_num_heads=(1, 2, 2, 4)),  # Swin-T depths (2, 2, 6, 2), window 7
}
FAM_NECKS = ("fapn", "fam", "fam_se", "fam_noref_fsm")
ATTENTION_NECKS = ("fam_se", "deconv_fsm", "fam_noref_fsm")


def _tiny(neck: str, backbone: str = "r18", **kw):
    torch.manual_seed(0)
    return build_model(f"{neck}_{backbone}_maskformer", **{**TINY, **TINY_BACKBONE[backbone], **kw})


def test_every_ablation_neck_is_a_pixel_decoder_on_every_backbone():
    assert set(PIXEL_DECODERS) == set(NECKS)
    names = set(list_models("_maskformer"))
    assert len(names) == len(NECKS) * len(MASKFORMER_BACKBONES)
    for neck in NECKS:
        for backbone in MASKFORMER_BACKBONES:
            cfg = get_model_config(f"{neck}_{backbone}_maskformer")
            assert cfg.neck == neck and cfg.name == f"{neck}_{backbone}_maskformer"
            assert cfg == get_model_config(f"fapn_{backbone}_maskformer").replace(neck=neck)
    with pytest.raises(ValueError, match="unknown MaskFormer pixel decoder"):
        PixelDecoder({f"res{i}": ShapeSpec(8, 2**i) for i in (2, 3, 4, 5)}, kind="fam_dcn")


@pytest.mark.parametrize("backbone", ["r18", "r50", "swint"])
@pytest.mark.parametrize("neck", NECKS)
def test_variants_give_scores_at_odd_input_sizes(neck, backbone):
    model = _tiny(neck, backbone).eval()
    hw = (33, 47)
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    hooks = [model.neck.register_forward_hook(lambda m, i, o: seen.__setitem__("levels", o)),
             model.head.register_forward_hook(lambda m, i, o: seen.__setitem__("outputs", o))]
    out = model.predict(image)
    for h in hooks:
        h.remove()
    assert out.shape == (3, *hw) and torch.isfinite(out).all() and out.min() >= 0
    levels, outputs = seen["levels"], seen["outputs"]  # padded to 64×64
    assert outputs["pred_masks"].shape == (1, 6, 16, 16) and outputs["pred_logits"].shape == (1, 6, 4)
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        f"p{lvl}": (1, 64, 64 // 2**lvl, 64 // 2**lvl) for lvl in (2, 3, 4, 5)}


# ------------------------------------------------------------------------- an independent re-implementation
def _gn(x: torch.Tensor, norm) -> torch.Tensor:
    return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def _conv_gn(x: torch.Tensor, conv, *, padding: int = 0, relu: bool = False) -> torch.Tensor:
    y = _gn(F.conv2d(x, conv.weight, conv.bias, padding=padding), conv.norm)
    return F.relu(y) if relu else y


def _ref_lateral(adapter, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "conv":
        return _conv_gn(x, adapter)
    att = torch.sigmoid(F.conv2d(x.mean((2, 3), keepdim=True), adapter.conv_atten.weight))
    return _gn(F.conv2d(x + x * att if kind == "fsm" else x * att, adapter.conv.weight), adapter.norm)


def _ref_fuse(align, lat: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    size = lat.shape[-2:]
    if kind == "sum":
        return lat + F.interpolate(y, size=size, mode="nearest")
    if kind == "deconv":
        up = F.conv_transpose2d(y, align.up.weight, align.up.bias, stride=2, padding=1)
        return F.interpolate(up, size=size, mode="bilinear", align_corners=False) + lat
    up = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    offset_in = up if kind == "fam_noref" else _gn(F.conv2d(torch.cat([lat, 2 * up], 1), align.offset.weight),
                                                     align.offset.norm)
    o1, o2, m = F.conv2d(offset_in, align.dcn.conv_offset_mask.weight, align.dcn.conv_offset_mask.bias,
                         padding=1).chunk(3, 1)
    dcn = deform_conv2d(up, torch.cat([o1, o2], 1), align.dcn.weight, align.dcn.bias, padding=1, mask=m.sigmoid())
    return F.relu(dcn) + lat


def _ref_decoder(neck: PixelDecoder, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    spec = DECODER_SPECS[neck.kind]
    y = _conv_gn(feats["res5"], neck.layer_4, padding=1, relu=True)
    levels = {"p5": y}
    for n in (3, 2, 1):
        lat = _ref_lateral(getattr(neck, f"adapter_{n}"), feats[f"res{n + 1}"], spec.lateral)
        fused = _ref_fuse(getattr(neck, f"align_{n}", None), lat, y, spec.fuse)
        for conv in getattr(neck, f"extra_{n}", []):
            fused = _conv_gn(fused, conv, padding=1, relu=True)
        y = levels[f"p{n + 1}"] = _conv_gn(fused, getattr(neck, f"layer_{n}"), padding=1, relu=True)
    mask = F.conv2d(y, neck.mask_features.weight, neck.mask_features.bias, padding=1)
    return mask, levels


@pytest.mark.parametrize("neck", NECKS)
def test_each_variant_matches_an_independent_functional_forward(neck):
    """Feature sizes that are not 2× of each other (bilinear/nearest resizes, deconv + resize), random norms and
    offset predictors (so offsets and masks are far from their zero init)."""
    torch.manual_seed(1)
    shapes = {f"res{i}": ShapeSpec(c, 2**i) for i, c in zip((2, 3, 4, 5), (16, 32, 48, 64))}
    decoder = PixelDecoder(shapes, kind=neck, conv_dim=64, mask_dim=32).eval()
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if "conv_offset_mask" in name or ".norm." in name:
                p.copy_(torch.randn_like(p) * (0.05 if "conv_offset_mask.weight" in name else 0.5) + (
                    1.0 if name.endswith("norm.weight") else 0.0))
        feats = {k: torch.randn(2, s.channels, h, w) for (k, s), (h, w) in
                 zip(shapes.items(), ((13, 11), (7, 6), (4, 3), (2, 2)))}
        mask, levels = decoder.forward_features(feats)
        want_mask, want_levels = _ref_decoder(decoder, feats)
    for k in want_levels:
        assert levels[k].shape[-2:] == feats[f"res{k[1:]}"].shape[-2:]
        torch.testing.assert_close(levels[k], want_levels[k], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(mask, want_mask, atol=2e-5, rtol=1e-4)


def test_fam_is_the_released_fapn_decoder_and_norm_sharing_follows_the_offset_conv():
    fam, fapn = _tiny("fam").eval(), _tiny("fapn").eval()
    assert {k: v.shape for k, v in fam.state_dict().items()} == {k: v.shape for k, v in fapn.state_dict().items()}
    fam.load_state_dict(fapn.state_dict())
    image = np.random.default_rng(2).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert torch.equal(fam.predict(image), fapn.predict(image))
    se, noref = _tiny("fam_se").neck, _tiny("fam_noref_fsm").neck
    for n in (1, 2, 3):
        # one GroupNorm object, as in FaPN-full's decoder; FAM† has no offset conv and layer_N keeps its own
        assert getattr(se, f"align_{n}").offset.norm is getattr(se, f"layer_{n}").norm
        assert not hasattr(getattr(noref, f"align_{n}"), "offset") and getattr(noref, f"layer_{n}").norm is not None


# ---------------------------------------------------------------------------------------- parameter counts
def _expected_extra(neck: str, cins: tuple[int, int, int], c: int, groups: int = 8) -> int:
    """Parameters a variant adds to the plain decoder, from its layer shapes (GN shared by a FAM's offset conv and
    layer_N is counted once)."""
    dcn = 9 * c * c + c + 27 * groups * 9 * c + 27 * groups  # DCN weight+bias, conv_offset_mask weight+bias
    per_level = {
        "fpn": 0, "fapn": 2 * c * c + dcn, "fam": 2 * c * c + dcn,
        "fpn_extra_conv": 2 * (9 * c * c + 2 * c),
        "fam_se": 2 * c * c + dcn, "fam_noref_fsm": dcn, "deconv_fsm": 16 * c * c + c,
    }[neck]
    attention = sum(cin * cin for cin in cins) if neck in ATTENTION_NECKS else 0  # conv_atten (no bias, no norm)
    return 3 * per_level + attention


R50_TOTALS = {"fpn": 41_254_743, "fapn": 44_911_839, "fpn_extra_conv": 44_796_759, "fam": 44_911_839,
              "fam_se": 46_288_095, "deconv_fsm": 45_777_495, "fam_noref_fsm": 45_894_879}


def test_r50_parameter_counts_from_layer_shapes():
    counts = {}
    for neck in NECKS:
        with torch.device("meta"):  # shapes only: no init cost
            counts[neck] = count_parameters(build_model(f"{neck}_r50_maskformer"))
    assert counts == R50_TOTALS
    assert counts["fapn"] - counts["fpn"] == 3_657_096  # the official manifests' difference
    for neck in NECKS:
        assert counts[neck] - counts["fpn"] == _expected_extra(neck, (256, 512, 1024), 256), neck


@pytest.mark.parametrize("backbone, cins, conv_dim", [
    ("r18", (64, 128, 256), 128), ("r101", (256, 512, 1024), 256), ("swint", (96, 192, 384), 256),
    ("swinl", (192, 384, 768), 256)])
def test_decoder_parameter_differences_on_other_backbones(backbone, cins, conv_dim):
    cfg = get_model_config(f"fpn_{backbone}_maskformer")
    assert cfg.neck_channels == conv_dim
    shapes = {f"res{i}": ShapeSpec(c, 2**i) for i, c in zip((2, 3, 4, 5), (*cins, 2 * cins[-1]))}
    with torch.device("meta"):
        plain = count_parameters(PixelDecoder(shapes, kind="fpn", conv_dim=conv_dim, mask_dim=cfg.mask_dim))
        for neck in NECKS:
            decoder = PixelDecoder(shapes, kind=neck, conv_dim=conv_dim, mask_dim=cfg.mask_dim)
            assert count_parameters(decoder) - plain == _expected_extra(neck, cins, conv_dim), neck


# ---------------------------------------------------------------------------------------------- captures
@pytest.mark.parametrize("neck", NECKS)
def test_captures_fam_levels_and_fsm_attention(neck):
    model = _tiny(neck).eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    caps = predict_with_captures(model, image, ("offsets", "attention", "fsm_inputs", "fam_features")).captures
    sizes = {"p2": (10, 13), "p3": (5, 7), "p4": (3, 4)}
    cins = {"p2": 16, "p3": 32, "p4": 64}
    assert caps.neck == neck
    assert caps.has_fam == (neck in FAM_NECKS) and caps.has_fsm == (neck in ATTENTION_NECKS)
    assert (caps.explain_missing() is None) == (neck in ("fam_se", "fam_noref_fsm"))
    assert sorted(caps.fam) == (sorted(sizes) if neck in FAM_NECKS else [])
    for lvl, fam in caps.fam.items():
        assert isinstance(fam, FAMCapture) and fam.stride == 2 ** int(lvl[1:])
        assert fam.offsets.shape == (8, 9, 2, *sizes[lvl]) and fam.mask.shape == (8, 9, *sizes[lvl])
        assert fam.lateral.shape == fam.feat_up.shape == fam.aligned.shape == (64, *sizes[lvl])
    assert sorted(caps.fsm) == (sorted(sizes) if neck in ATTENTION_NECKS else [])
    for lvl, fsm in caps.fsm.items():
        assert fsm.attention.shape == (cins[lvl],) and ((fsm.attention > 0) & (fsm.attention < 1)).all()
        assert fsm.inputs.shape == (cins[lvl], *sizes[lvl])


def test_noref_offsets_ignore_the_lateral_and_referenced_ones_do_not():
    for neck, depends in (("fam_noref_fsm", False), ("fam_se", True)):
        align = _tiny(neck).neck.align_1
        with torch.no_grad():
            align.dcn.conv_offset_mask.weight.normal_(0, 0.05)
            raw = []
            y = torch.randn(1, 64, 4, 5)
            for seed in (0, 1):
                lat = torch.randn(1, 64, 8, 10, generator=torch.Generator().manual_seed(seed))
                handle = align.dcn.conv_offset_mask.register_forward_hook(lambda m, i, o: raw.append(o))
                align(lat, y)
                handle.remove()
        assert torch.equal(raw[0], raw[1]) != depends, neck


# ---------------------------------------------------------------------------------- checkpoints and training
@pytest.mark.parametrize("neck", NECKS)
def test_config_inferred_from_native_keys(neck):
    model = _tiny(neck)
    cfg = infer_config(model.state_dict(), native=True)
    # keys cannot tell fam from fapn (the same network): the release's name is given
    assert cfg.neck == ("fapn" if neck == "fam" else neck) and cfg.depth == 18 and cfg.neck_channels == 64
    rebuilt = build_model(f"{cfg.neck}_r18_maskformer", **{**TINY, **TINY_BACKBONE["r18"]})
    rebuilt.load_state_dict(model.state_dict())


def test_training_reduces_the_loss_of_an_fsm_and_fam_variant(one_thread):
    model = _tiny("fam_noref_fsm").train()
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64) * 255
    targets = torch.zeros(2, 64, 64, dtype=torch.long)
    targets[0, :, 32:] = 1
    targets[1, 20:50, 10:40] = 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert model.neck.adapter_1.conv_atten.weight.grad.abs().sum() > 0
    assert model.neck.align_1.dcn.conv_offset_mask.weight.grad.abs().sum() > 0
    assert np.mean(history[-3:]) < 0.6 * np.mean(history[:3]), history
