"""Every figure builds for every neck variant; views a neck cannot have raise NothingToShow with the reason.
FSM bars and channel grid against the captured importances and the FSM input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fapn_core.introspect import predict_with_captures
from fapn_core.models.necks import NECKS
from fapn_core.models.zoo import build_model
from fapn_core.viz import (
    NothingToShow,
    alignment_pca,
    apply_colormap,
    arrow_set,
    fsm_channel_grid,
    fsm_importance_figure,
    fsm_inputs,
    offset_histogram,
    offset_magnitude_figure,
    offset_quiver,
    pca_pair_figure,
)

# 64×96 is a multiple of 32: no padding, so the FSM means run over exactly the cropped feature
IMAGE = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)


def _tiny(neck: str):
    torch.manual_seed(0)
    model = build_model(f"{neck}_r18_semfpn", num_classes=4, neck_channels=32, head_conv_dims=64).eval()
    for lvl in (2, 3, 4):  # official init predicts zero offsets: give the FAMs something to draw
        align = getattr(model.neck, f"align{lvl}", None)
        if hasattr(align, "dcn"):
            torch.nn.init.normal_(align.dcn.conv_offset_mask.weight, std=0.05)
    return model


@pytest.fixture(scope="module")
def fapn():
    model = _tiny("fapn")
    return model, predict_with_captures(model, IMAGE).captures


def _fam_views(caps):
    fig, arrows = offset_quiver(IMAGE, caps, "p2")
    assert len(arrows) > 0 and fig.data[0].type == "image" and len(fig.data) >= 2  # image + arrow traces
    offset_quiver(IMAGE, caps, "p4", native=False, group=1, point=4, weighted=True)
    offset_magnitude_figure(caps, "p3", image=IMAGE)
    offset_histogram(caps)
    pair = alignment_pca(caps, "p2", size=IMAGE.shape[:2])
    assert pair.before.shape == IMAGE.shape
    pca_pair_figure(pair)


def _fsm_views(caps):
    fsm_importance_figure(caps)
    c = caps.fsm["p3"].attention.size  # the real FSM input is checked in the fapn test below
    fsm_channel_grid(np.random.default_rng(0).normal(size=(c, 8, 12)), caps, "p3", k=4)


@pytest.mark.parametrize("neck", NECKS)
def test_all_views_build_or_say_why_not(neck):
    model = _tiny(neck)
    caps = predict_with_captures(model, IMAGE).captures
    if caps.has_fam:
        _fam_views(caps)
    else:
        for view in (lambda: offset_quiver(IMAGE, caps), lambda: offset_histogram(caps),
                     lambda: alignment_pca(caps), lambda: arrow_set(caps)):
            with pytest.raises(NothingToShow, match=neck) as info:
                view()
            assert str(info.value) == caps.explain_missing()
    if caps.has_fsm:
        _fsm_views(caps)
    else:
        with pytest.raises(NothingToShow, match=neck):
            fsm_importance_figure(caps)
        with pytest.raises(NothingToShow, match="no FSM"):
            fsm_inputs(model, IMAGE)


def test_uncaptured_parts_say_what_to_capture():
    model = _tiny("fapn")
    only_att = predict_with_captures(model, IMAGE, what=("attention",)).captures
    with pytest.raises(NothingToShow, match="'offsets'"):
        offset_quiver(IMAGE, only_att)
    only_off = predict_with_captures(model, IMAGE, what=("offsets",)).captures
    with pytest.raises(NothingToShow, match="fam_features"):
        alignment_pca(only_off)
    with pytest.raises(NothingToShow, match="'attention'"):
        fsm_importance_figure(only_off)
    assert isinstance(NothingToShow("x"), ValueError)


def test_fsm_bars_are_sorted_and_labelled(fapn):
    _, caps = fapn
    fig = fsm_importance_figure(caps, label_top=3)
    assert [t.name for t in fig.data] == ["p2", "p3", "p4"]
    for bar in fig.data:
        att = caps.fsm[bar.name].attention
        order = np.argsort(-att, kind="stable")
        np.testing.assert_array_equal(bar.customdata, order)
        np.testing.assert_allclose(bar.y, att[order])
        assert list(bar.text[:4]) == [f"#{c}" for c in order[:3]] + [""]


def test_fsm_inputs_are_what_the_fsm_weighs_and_the_grid_shows_them(fapn):
    model, caps = fapn
    inputs = fsm_inputs(model, IMAGE)
    for lvl, stride in (("p2", 4), ("p3", 8), ("p4", 16)):
        x = inputs[lvl]
        assert x.shape[1:] == (64 // stride, 96 // stride)
        fsm = getattr(model.neck, f"align{lvl[1]}").lateral
        # attention = sigmoid(W · mean(x)): the captured tensor is the FSM input 
        expected = torch.sigmoid(fsm.conv_atten.weight.detach().flatten(1) @ torch.from_numpy(x).mean((1, 2)))
        np.testing.assert_allclose(caps.fsm[lvl].attention, expected.numpy(), atol=1e-5)
    grid = fsm_channel_grid(inputs["p2"], caps, "p2", k=5, ncols=3, tile_height=32, gap=2)
    top = caps.fsm["p2"].top_k(5)
    np.testing.assert_array_equal(grid.channels, top)
    assert grid.tile_size == (32, 48) and grid.image.shape == (2 * 32 + 2, 3 * 48 + 4, 3)
    c = top[4]  # tile 4: row 1, col 1
    tile = grid.image[34:66, 50:98]
    m = inputs["p2"][c]
    expect = apply_colormap(m, float(m.min()), float(m.max()), "viridis")
    np.testing.assert_array_equal(tile[::2, ::2], expect)  # nearest ×2 upscale
    assert (grid.image[34:66, 100:] == 255).all()  # empty sixth slot stays white
    with pytest.raises(ValueError, match="channels"):
        fsm_channel_grid(caps.features.get("p2", np.zeros((32, 16, 24))), caps, "p2")
