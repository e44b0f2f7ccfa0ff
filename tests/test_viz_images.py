"""Numpy figures: overlays and legends, fixed/broken and disagreement maps, shared PCA, motivation residuals,
error heatmaps and charts, PNG export. No model needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fapn_core.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from fapn_core.metrics import error_map, error_vs_distance, fix_break
from fapn_core.viz import (
    apply_colormap,
    class_legend,
    disagreement_view,
    error_density,
    error_heatmap,
    error_profile_figure,
    figure_bytes,
    fix_break_view,
    greyed,
    legend_figure,
    motivation_figure,
    overlay_labels,
    pca_pair_figure,
    pca_rgb_pair,
    report_grid,
    resampling_residuals,
    residual_images,
    side_by_side,
    to_png_bytes,
)
from fapn_core.viz.overlays import BROKEN_COLOR, FIXED_COLOR

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def _labels(h=40, w=60, n=5):
    lab = RNG.integers(0, n, (h, w)).astype(np.uint8)
    lab[:5] = 255
    return lab


def test_overlay_alpha_one_is_the_palette_and_ignore_keeps_the_image():
    lab = _labels()
    lab[6, :3] = 200  # outside the palette: treated like ignore
    out = overlay_labels(IMG, lab, CITYSCAPES_PALETTE, alpha=1.0)
    valid = lab < len(CITYSCAPES_PALETTE)
    np.testing.assert_array_equal(out[valid], CITYSCAPES_PALETTE[lab[valid]])
    np.testing.assert_array_equal(out[~valid], IMG[~valid])
    np.testing.assert_array_equal(overlay_labels(IMG, lab, CITYSCAPES_PALETTE, alpha=0.0), IMG)
    half = overlay_labels(IMG, lab, CITYSCAPES_PALETTE, alpha=0.5)
    expect = np.rint(0.5 * IMG[valid].astype(float) + 0.5 * CITYSCAPES_PALETTE[lab[valid]].astype(float))
    assert np.abs(half[valid].astype(float) - expect).max() <= 1
    with pytest.raises(ValueError, match="sizes differ"):
        overlay_labels(IMG, lab[:-1], CITYSCAPES_PALETTE)


def test_legend_lists_present_classes_by_frequency():
    a = np.full((10, 10), 255, np.uint8)
    a[:6] = 13
    a[6:8] = 0
    b = np.full((10, 10), 0, np.uint8)
    entries = class_legend([a, b], CITYSCAPES_PALETTE, CITYSCAPES_CLASSES)
    assert [(e.index, e.name, e.pixels) for e in entries] == [(0, "road", 120), (13, "car", 60)]
    assert entries[0].color == (128, 64, 128) and entries[0].hex == "#804080"
    assert sum(e.fraction for e in entries) == pytest.approx(1.0)
    fig = legend_figure(entries)
    assert list(fig.data[0].customdata) == [0, 13]


def test_side_by_side_and_png_roundtrip():
    tall = np.zeros((50, 20, 3), np.uint8)
    out = side_by_side(IMG, tall, gap=4)
    assert out.shape == (50, 84, 3)
    np.testing.assert_array_equal(out[:40, :60], IMG)
    assert (out[40:, :60] == 255).all() and (out[:, 60:64] == 255).all()
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(to_png_bytes(IMG), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, IMG)
    grey = to_png_bytes(IMG[:, :, 0])
    assert grey[:8] == b"\x89PNG\r\n\x1a\n"


def test_fix_break_and_disagreement_views():
    gt = _labels()
    a, b = gt.copy(), gt.copy()
    a[10:20] = (gt[10:20] + 1) % 5  # A wrong, B right: fixed by B
    b[30:33] = (gt[30:33] + 1) % 5  # B wrong: broken by B
    fb = fix_break(gt, a, b, 5)
    view = fix_break_view(IMG, fb)
    assert (view.fixed, view.broken, view.net) == (fb.fixed, fb.broken, fb.net) == (600, 180, 420)
    np.testing.assert_array_equal(view.image[fb.map > 0], np.broadcast_to(FIXED_COLOR, (600, 3)))
    np.testing.assert_array_equal(view.image[fb.map < 0], np.broadcast_to(BROKEN_COLOR, (180, 3)))
    np.testing.assert_array_equal(view.image[fb.map == 0], greyed(IMG)[fb.map == 0])
    assert "+420" in view.caption("FaPN")
    diff = disagreement_view(IMG, a, b)
    assert diff.pixels == 780 and diff.fraction == pytest.approx(780 / 2400)
    np.testing.assert_array_equal(diff.image[diff.mask], np.broadcast_to((255, 0, 255), (780, 3)))


def test_shared_pca_identical_inputs_give_identical_images():
    f = RNG.normal(size=(16, 12, 18)).astype(np.float32)
    pair = pca_rgb_pair(f, f.copy())
    np.testing.assert_array_equal(pair.before, pair.after)
    ev = pair.explained_variance_ratio
    assert ev.shape == (3,) and (ev >= 0).all() and ev.sum() <= 1 + 1e-6 and (np.diff(ev) <= 1e-7).all()
    assert pair.before.shape == (12, 18, 3) and pair.before.dtype == np.uint8
    fig = pca_pair_figure(pair)
    assert [t.type for t in fig.data] == ["image", "image"]


def test_shared_pca_maps_a_changed_copy_consistently():
    f = RNG.normal(size=(16, 12, 18)).astype(np.float32)
    g = f.copy()
    changed = np.zeros((12, 18), bool)
    changed[:, 9:] = True
    g[4][changed] += 6.0  # one channel changed in the right half
    pair = pca_rgb_pair(f, g)
    same = np.abs(pair.before.astype(int) - pair.after.astype(int)).max(axis=2)
    assert same[~changed].max() == 0  # unchanged feature vectors → unchanged colours: one projection
    assert (same[changed] > 0).mean() > 0.9
    # the projection is that of the pooled pixels: reproject and renormalise by hand
    x = np.concatenate([f.reshape(16, -1).T, g.reshape(16, -1).T])
    proj = (x - pair.mean) @ pair.components.T
    rgb = np.clip(np.rint((proj - pair.lo) / (pair.hi - pair.lo) * 255), 0, 255)
    assert np.abs(rgb[: 12 * 18].reshape(12, 18, 3) - pair.before).max() <= 1
    assert np.abs(rgb[12 * 18:].reshape(12, 18, 3) - pair.after).max() <= 1


def test_pca_explained_variance_of_rank_three_data_is_one():
    z = RNG.normal(size=(3, 200)) * np.array([[5.0], [2.0], [1.0]])
    f = (RNG.normal(size=(10, 3)) @ z).reshape(10, 10, 20).astype(np.float32)
    pair = pca_rgb_pair(f[:, :, :10], f[:, :, 10:], size=(40, 40))
    assert pair.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-5)
    assert pair.before.shape == (40, 40, 3)


def test_motivation_constant_image_is_zero_and_shapes_are_kept():
    const = np.full((37, 53, 3), 117, np.uint8)
    res = resampling_residuals(const)
    assert sorted(res) == [4, 8, 16, 32]
    for r in res.values():
        assert r.shape == (37, 53) and r.dtype == np.float32
        np.testing.assert_allclose(r, 0.0, atol=1e-3)
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 30:] = 255
    res = resampling_residuals(edge)
    assert res[4][:, :20].max() < 1e-3 and res[4][:, 26:34].max() > 10  # lost detail sits at the edge
    assert res[32].mean() > res[4].mean()
    imgs = residual_images(res)
    assert all(i.shape == (64, 64, 3) and i.dtype == np.uint8 for i in imgs.values())
    grey = residual_images(res, cmap=None, vmax=255.0)
    assert (grey[4][:, :, 0] == grey[4][:, :, 1]).all()
    fig = motivation_figure(edge)
    assert [t.type for t in fig.data] == ["heatmap"] * 4 and fig.layout.yaxis3.scaleanchor == "x3"


def test_error_views():
    gt = _labels()
    pred = gt.copy()
    pred[20:25, 10:30] = (gt[20:25, 10:30] + 1) % 5
    err = error_map(gt, pred, 5)
    dens = error_density(err, sigma=2.0)
    assert dens.shape == err.shape and 0 <= dens.min() and dens.max() <= 1
    assert dens[22, 20] > 0.5 and dens[35, 50] == 0
    np.testing.assert_array_equal(error_density(np.zeros((5, 5), bool)), 0)
    px = error_heatmap(IMG, err, mode="pixels")
    np.testing.assert_array_equal(px[err], np.broadcast_to((255, 40, 40), (int(err.sum()), 3)))
    np.testing.assert_array_equal(px[~err], greyed(IMG)[~err])
    heat = error_heatmap(IMG, err, sigma=2.0)
    far = dens == 0
    np.testing.assert_array_equal(heat[far], greyed(IMG)[far])  # error-free areas stay grey
    fig = error_profile_figure({"FPN": error_vs_distance(gt, pred, 5, max_distance=8),
                                "FaPN": error_vs_distance(gt, gt, 5, max_distance=8)})
    assert [t.name for t in fig.data] == ["pixels per bin", "FPN", "FaPN"]
    assert list(fig.data[1].x)[-1] == ">=8" and np.nanmax(fig.data[2].y) == 0
    with pytest.raises(ValueError, match="mode"):
        error_heatmap(IMG, err, mode="blur")


def test_colormap_and_report_helpers():
    ramp = apply_colormap(np.array([[0.0, 0.5, 1.0, np.nan]]), 0.0, 1.0, "viridis", nan_color=(1, 2, 3))
    assert ramp.shape == (1, 4, 3) and tuple(ramp[0, 3]) == (1, 2, 3)
    assert tuple(ramp[0, 0]) != tuple(ramp[0, 2])
    with pytest.raises(ValueError, match="colormap"):
        apply_colormap(np.zeros((2, 2)), cmap="nope")
    fig = report_grid([("image", IMG), ("grey", greyed(IMG)), ("diff", IMG)], ncols=2, suptitle="x")
    png = figure_bytes(fig)
    assert png[:4] == b"\x89PNG"
