"""Offset quiver against a known constant shift: decoded field, arrow direction/length in image px, density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fapn_core.introspect import predict_with_captures
from fapn_core.models.zoo import build_model
from fapn_core.viz import (
    HAS_NATIVE_QUIVER,
    arrow_set,
    cell_step_for,
    magnitude_map,
    offset_histogram,
    offset_magnitude_figure,
    offset_quiver,
)

H, W = 70, 100
DY, DX = 1.5, -0.5  # feature pixels
STRIDES = {"p2": 4, "p3": 8, "p4": 16}


def _tiny():
    torch.manual_seed(0)
    return build_model("fapn_r18_semfpn", num_classes=4, neck_channels=32, head_conv_dims=64).eval()


def _set_offsets(model, dy, dx, mask_logit) -> None:
    """Offset conv outputs its bias only: ``dy``/``dx``/``mask_logit`` scalars or (8, 9) arrays (group, point)."""
    dy, dx, ml = (np.broadcast_to(np.asarray(v, np.float32), (8, 9)).ravel() for v in (dy, dx, mask_logit))
    for lvl in (2, 3, 4):
        conv = getattr(model.neck, f"align{lvl}").dcn.conv_offset_mask
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias[0:144:2] = torch.from_numpy(dy.copy())
            conv.bias[1:144:2] = torch.from_numpy(dx.copy())
            conv.bias[144:] = torch.from_numpy(ml.copy())


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def constant(image):
    model = _tiny()
    _set_offsets(model, DY, DX, 2.0)
    return predict_with_captures(model, image).captures


@pytest.fixture(scope="module")
def per_group(image):
    """Group g shifts by dy = g, dx = point/10; only group 2's mask is on (logit +30 vs -30)."""
    model = _tiny()
    g = np.arange(8, dtype=np.float32)[:, None]
    k = np.arange(9, dtype=np.float32)[None]
    _set_offsets(model, g + 0 * k, k / 10 + 0 * g, np.where(g == 2, 30.0, -30.0) + 0 * k)
    return predict_with_captures(model, image).captures


def _expected_count(h, w, k):
    return len(range(k // 2, h, k)) * len(range(k // 2, w, k))


@pytest.mark.parametrize("level", ["p2", "p3", "p4"])
def test_constant_shift_arrows_have_the_offset_direction_and_length_in_image_px(constant, image, level):
    s = STRIDES[level]
    fam = constant.fam[level]
    np.testing.assert_allclose(fam.field()[0], DY * s, atol=1e-5)  # decoded (dy, dx) in image px
    np.testing.assert_allclose(fam.field()[1], DX * s, atol=1e-5)
    fig, arrows = offset_quiver(image, constant, level, step=2 * s, scale=1.0)
    h, w = -(-H // s), -(-W // s)
    assert arrows.cell_step == 2 and arrows.spacing_px == 2 * s
    assert len(arrows) == _expected_count(h, w, 2) == arrows.grid_shape[0] * arrows.grid_shape[1]
    np.testing.assert_allclose(arrows.u, DX * s, atol=1e-5)  # x component = dx
    np.testing.assert_allclose(arrows.v, DY * s, atol=1e-5)  # y component = dy, positive = down the image
    np.testing.assert_allclose(np.hypot(arrows.u, arrows.v), math.hypot(DX, DY) * s, atol=1e-5)
    np.testing.assert_allclose(np.arctan2(arrows.v, arrows.u), math.atan2(DY, DX), atol=1e-6)
    np.testing.assert_allclose(arrows.magnitude, math.hypot(DX, DY) * s, atol=1e-5)
    # tails at the sampled cells' centres: rows/cols 1, 3, 5, … → (j + 0.5)·s − 0.5
    cols, rows = np.arange(1, w, 2), np.arange(1, h, 2)
    np.testing.assert_allclose(np.unique(arrows.x), (cols + 0.5) * s - 0.5)
    np.testing.assert_allclose(np.unique(arrows.y), (rows + 0.5) * s - 0.5)
    # the y axis runs downward with a locked aspect
    assert tuple(fig.layout.yaxis.range) == (H - 0.5, -0.5) and fig.layout.yaxis.scaleanchor == "x"
    assert tuple(fig.layout.xaxis.range) == (-0.5, W - 0.5)


@pytest.mark.skipif(not HAS_NATIVE_QUIVER, reason="installed plotly has no go.Quiver")
def test_native_quiver_draws_the_arrow_set_raw_in_data_units(constant, image):
    fig, arrows = offset_quiver(image, constant, "p2", max_arrows=50, scale=2.5, native=True)
    img, quiver = fig.data
    assert img.type == "image" and quiver.type == "quiver"
    assert (quiver.anchor, quiver.arrowref, quiver.lengthmode, quiver.lengthfactor) == ("tail", "data", "raw", 1.0)
    np.testing.assert_array_equal(quiver.x, arrows.x)
    np.testing.assert_array_equal(quiver.u, arrows.u)
    np.testing.assert_allclose(quiver.u, DX * 4 * 2.5, atol=1e-5)
    np.testing.assert_allclose(quiver.v, DY * 4 * 2.5, atol=1e-5)
    np.testing.assert_array_equal(quiver.marker.color, arrows.magnitude)  # colour = unscaled |offset|
    assert quiver.marker.showscale and len(arrows) <= 50
    # the background spans the image in pixel coordinates
    assert img.x0 == pytest.approx(0.0) and img.dx == pytest.approx(1.0) and img.source.startswith("data:image/")


def test_fallback_polyline_tips_and_heads(constant, image):
    fig, arrows = offset_quiver(image, constant, "p3", step=8, native=False, scale=1.0)
    lines = [t for t in fig.data if t.type == "scatter" and t.mode == "lines"]  # SVG lines, null breaks
    markers = [t for t in fig.data if t.type == "scattergl" and t.mode == "markers"]
    assert len(lines) == 1 and len(markers) == 1  # constant field: one colour bin
    xs = np.asarray(lines[0].x, dtype=float).reshape(-1, 7)
    ys = np.asarray(lines[0].y, dtype=float).reshape(-1, 7)
    assert len(xs) == len(arrows) == _expected_count(-(-H // 8), -(-W // 8), 1)
    np.testing.assert_allclose(xs[:, 0], arrows.x, atol=0.005)  # drawn coordinates are rounded to 0.01 px
    np.testing.assert_allclose(xs[:, 1] - xs[:, 0], DX * 8, atol=0.011)
    np.testing.assert_allclose(ys[:, 1] - ys[:, 0], DY * 8, atol=0.011)
    assert np.isnan(xs[:, 2]).all() and np.isnan(xs[:, 6]).all()
    head = np.hypot(xs[:, 3] - xs[:, 4], ys[:, 3] - ys[:, 4])
    np.testing.assert_allclose(head, 0.3 * math.hypot(DX, DY) * 8, atol=0.015)
    np.testing.assert_allclose(xs[:, 4], xs[:, 1])  # heads meet at the tip


@pytest.mark.parametrize("max_arrows", [1, 7, 40, 100, 10_000])
def test_max_arrows_gives_the_densest_grid_within_budget(constant, max_arrows):
    arrows = arrow_set(constant, "p2", max_arrows=max_arrows)
    h, w = -(-H // 4), -(-W // 4)
    k = arrows.cell_step
    assert len(arrows) == _expected_count(h, w, k) <= max_arrows
    if k > 1:
        assert _expected_count(h, w, k - 1) > max_arrows
    assert cell_step_for(h, w, 4, step=13) == 3 and cell_step_for(h, w, 4, step=1) == 1
    assert len(arrow_set(constant, "p2", max_arrows=None)) == h * w


def test_group_point_weighted_selection_and_tap_origin(per_group):
    fam = per_group.fam["p2"]
    a = arrow_set(per_group, "p2", group=5, point=7, step=4)
    np.testing.assert_allclose(a.v, 5 * 4, atol=1e-5)
    np.testing.assert_allclose(a.u, 0.7 * 4, atol=1e-5)
    mean = arrow_set(per_group, "p2", step=4)
    np.testing.assert_allclose(mean.v, 3.5 * 4, atol=1e-5)  # mean over groups 0..7
    np.testing.assert_allclose(mean.u, 0.4 * 4, atol=1e-5)  # mean over points 0..8
    weighted = arrow_set(per_group, "p2", weighted=True, step=4)  # only group 2 has its mask on
    np.testing.assert_allclose(weighted.v, 2 * 4, atol=1e-4)
    tap = arrow_set(per_group, "p2", group=0, point=0, step=4, origin="tap")
    np.testing.assert_allclose(tap.x, a.x - 4)  # point 0 = top-left tap: one cell up and left
    np.testing.assert_allclose(tap.y, a.y - 4)
    assert fam.groups == 8
    with pytest.raises(ValueError, match="group"):
        arrow_set(per_group, "p2", group=8)
    with pytest.raises(ValueError, match="origin='tap'"):
        arrow_set(per_group, "p2", origin="tap")
    with pytest.raises(ValueError, match="no FAM at level"):
        arrow_set(per_group, "p5")


def test_magnitude_views(constant, image):
    mag = magnitude_map(constant, "p3")
    assert mag.shape == (-(-H // 8), -(-W // 8))
    np.testing.assert_allclose(mag, math.hypot(DX, DY) * 8, atol=1e-5)
    assert magnitude_map(constant, "p3", size=(H, W)).shape == (H, W)
    fig = offset_magnitude_figure(constant, "p3", image=image)
    heat = fig.data[-1]
    assert heat.type == "heatmap" and heat.x0 == 3.5 and heat.dx == 8  # cell (0, 0) centred at (3.5, 3.5)
    hist = offset_histogram(constant)
    assert [t.name for t in hist.data] == ["p2", "p3", "p4"]
    for t in hist.data:
        assert np.asarray(t.y).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="does not match"):
        offset_quiver(image[:40], constant, "p2")
