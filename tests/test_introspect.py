"""Capture hooks: decoded offsets against a known shift, FSM importances against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fapn_core.introspect import CaptureHooks, predict_with_captures
from fapn_core.models.zoo import build_model


def _tiny(name: str = "fapn_r18_semfpn"):
    torch.manual_seed(0)
    return build_model(name, num_classes=4, neck_channels=32, head_conv_dims=64).eval()


def _set_constant_offsets(model, dy: float, dx: float) -> None:
    for lvl in (2, 3, 4):
        conv = getattr(model.neck, f"align{lvl}").dcn.conv_offset_mask
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            conv.bias[0:144:2] = dy
            conv.bias[1:144:2] = dx
            conv.bias[144:] = 2.0  # mask = sigmoid(2)


def test_known_constant_shift_is_decoded_in_feature_and_image_pixels():
    model = _tiny()
    _set_constant_offsets(model, dy=1.5, dx=-0.5)
    image = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    pred = predict_with_captures(model, image)
    caps = pred.captures
    assert caps.has_fam and caps.has_fsm and caps.explain_missing() is None
    assert sorted(caps.fam) == ["p2", "p3", "p4"]
    for level, stride in (("p2", 4), ("p3", 8), ("p4", 16)):
        fam = caps.fam[level]
        h, w = -(-70 // stride), -(-100 // stride)  # valid region, padding cropped away
        assert fam.offsets.shape == (8, 9, 2, h, w) and fam.mask.shape == (8, 9, h, w)
        np.testing.assert_allclose(fam.offsets[:, :, 0], 1.5, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fam.offsets[:, :, 1], -0.5, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fam.mask, 1 / (1 + np.exp(-2.0)), atol=1e-6)
        field = fam.field()  # image pixels, mean over groups and points
        np.testing.assert_allclose(field[0], 1.5 * stride, atol=1e-5)
        np.testing.assert_allclose(field[1], -0.5 * stride, atol=1e-5)
        np.testing.assert_allclose(fam.magnitude(image_px=False), np.hypot(1.5, 0.5), atol=1e-6)
        np.testing.assert_allclose(fam.field(group=3, point=4, weighted=True), field, atol=1e-5)
    assert pred.logits.shape == (4, 70, 100) and pred.labels.shape == (70, 100)


def _backbone_features(model, image: np.ndarray) -> dict[str, torch.Tensor]:
    """The backbone's outputs for an RGB uint8 image, computed by hand (normalise, pad, backbone)."""
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        return model.backbone(model.pad(model.normalize(x)))


def test_fsm_importance_equals_hand_computation():
    model = _tiny()
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    caps = predict_with_captures(model, image, what=("attention",)).captures
    res = _backbone_features(model, image)
    for lvl in (2, 3, 4):
        fsm = model.neck.__getattr__(f"align{lvl}").lateral
        feat = res[f"res{lvl}"][0].double()
        pooled = feat.mean(dim=(1, 2))
        expected = torch.sigmoid(fsm.conv_atten.weight.detach().double().flatten(1) @ pooled).numpy()
        got = caps.fsm[f"p{lvl}"].attention
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert list(caps.fsm[f"p{lvl}"].top_k(3)) == list(np.argsort(-expected)[:3])
    assert caps.fam == {}  # only what was asked for


def test_hooks_do_not_change_outputs_and_are_removed():
    model = _tiny()
    for lvl in (2, 3, 4):  # offset predictors start at zero (official init): give them something to say
        torch.nn.init.normal_(getattr(model.neck, f"align{lvl}").dcn.conv_offset_mask.weight, std=0.01)
    images = torch.randint(0, 256, (2, 3, 64, 96)).float()
    with torch.no_grad():
        plain = model(images)
        with CaptureHooks(model, ("offsets", "attention", "features", "fam_features")) as hooks:
            hooked = model(images)
        caps = hooks.captures((64, 96))
    assert torch.equal(plain, hooked)
    assert len(caps) == 2 and not np.allclose(caps[0].fam["p2"].offsets, caps[1].fam["p2"].offsets)
    assert caps[0].features["p2"].shape == (32, 16, 24)
    assert caps[0].fam["p3"].feat_up.shape == caps[0].fam["p3"].aligned.shape == (32, 8, 12)
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("neck,has_fam,has_fsm", [("fpn", False, False), ("fam", True, False),
                                                   ("deconv_fsm", False, True), ("fam_se", True, True)])
def test_variants_say_what_they_lack(neck, has_fam, has_fsm):
    model = _tiny(f"{neck}_r18_semfpn")
    caps = predict_with_captures(model, np.zeros((32, 32, 3), np.uint8)).captures
    assert (caps.has_fam, caps.has_fsm) == (has_fam, has_fsm)
    assert bool(caps.fam) == has_fam and bool(caps.fsm) == has_fsm
    if not (has_fam and has_fsm):
        assert neck in caps.explain_missing()


def test_bad_requests():
    model = _tiny()
    with pytest.raises(ValueError, match="cannot capture"):
        CaptureHooks(model, ("gradients",))
    with pytest.raises(ValueError, match="uint8 RGB"):
        predict_with_captures(model, np.zeros((8, 8, 3), np.float32))


def test_fsm_inputs_are_the_backbone_features_from_the_same_pass():
    model = _tiny()
    image = np.random.default_rng(2).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    caps = predict_with_captures(model, image, what=("fsm_inputs",)).captures
    res = _backbone_features(model, image)
    for lvl, stride in ((2, 4), (3, 8), (4, 16)):
        got = caps.fsm[f"p{lvl}"].inputs
        expected = res[f"res{lvl}"][0, :, : -(-70 // stride), : -(-100 // stride)].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert caps.fsm[f"p{lvl}"].attention.shape == (got.shape[0],)
