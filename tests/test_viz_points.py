"""PointRend's refinement per object (issue #29): coarse mask, pixels added / removed, points per step and the
drawings, on constructed captures whose numbers are computed here independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fapn_core.models.rcnn.detector import DetectionResult
from fapn_core.models.rcnn.point_rend import PointRendCapture
from fapn_core.viz import NothingToShow
from fapn_core.viz.points import (
    ADDED, REMOVED, coarse_masks, crop_around, match_instance, points_key, points_view, refinement_view,
    refinements, step_colour,
)

H, W = 40, 60
SIDES = (4, 8, 16)


def _grid_sample_paste(logits: torch.Tensor, box: list[float]) -> np.ndarray:
    """detectron2's ``_do_paste_mask`` for one mask over the whole image: pixel centres j + 0.5 mapped onto the box,
    ``grid_sample`` (bilinear, zeros outside, align_corners=False) of the probabilities, ≥ 0.5."""
    x0, y0, x1, y1 = box
    xs = (torch.arange(W, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    ys = (torch.arange(H, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    probs = logits.sigmoid()[None, None]
    return (F.grid_sample(probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
            >= 0.5).numpy()


def _detections(n_points=(16, 5, 7)) -> tuple[DetectionResult, list[np.ndarray], list[np.ndarray]]:
    """Two PointRend instances: initial logits with a known pattern, final masks drawn by hand, points at known
    places. Also the coarse masks computed here and the points."""
    boxes = torch.tensor([[10.0, 8.0, 38.0, 30.0], [40.5, 20.25, 57.0, 39.0]])
    init = torch.full((2, 4, 4), -6.0)
    init[0, :, :2] = 6.0  # object 0: the left half of its box before refinement
    init[1, 1:3, 1:3] = 6.0  # object 1: a blob in the middle
    final = np.zeros((2, H, W), bool)
    final[0, 8:30, 10:30] = True  # object 0: refinement grew it to the right (and fills the border pixels)
    final[1, 25:33, 45:52] = True
    rng = np.random.default_rng(0)
    points = []
    for p in n_points:
        pts = np.stack([np.stack([rng.uniform(b[0], b[2], p), rng.uniform(b[1], b[3], p)], -1)
                        for b in boxes.tolist()])
        points.append(pts.astype(np.float32))
    cap = PointRendCapture([torch.from_numpy(p) for p in points], SIDES, torch.zeros(2, 7, 7), init)
    det = DetectionResult((H, W), boxes, torch.tensor([0.9, 0.6]), torch.tensor([0, 1]), torch.from_numpy(final),
                          point_rend=cap)
    coarse = [_grid_sample_paste(init[i], boxes[i].tolist()) for i in range(2)]
    return det, coarse, points


def test_coarse_mask_is_the_initial_grid_pasted_like_the_final_mask():
    det, coarse, _ = _detections()
    got = coarse_masks(det)
    assert got.shape == (2, H, W) and got.dtype == bool
    for i in range(2):
        np.testing.assert_array_equal(got[i], coarse[i])
    assert coarse[0][:, 10:24].any() and not coarse[0][:, 25:].any()  # the left half of box 0 only
    np.testing.assert_array_equal(coarse_masks(det, [1])[0], coarse[1])


def test_added_removed_and_points_per_step_equal_independent_counts():
    det, coarse, points = _detections()
    final = det.masks.numpy()
    rs = refinements(det)
    assert [r.index for r in rs] == [0, 1]
    for i, r in enumerate(rs):
        assert r.points_per_step == (16, 5, 7) and r.grid_sides == SIDES
        assert r.coarse_area == int(coarse[i].sum()) and r.final_area == int(final[i].sum())
        assert r.added == int((final[i] & ~coarse[i]).sum())
        assert r.removed == int((coarse[i] & ~final[i]).sum())
        assert r.added_share == pytest.approx(r.added / final[i].sum())
        assert r.removed_share == pytest.approx(r.removed / coarse[i].sum())
        for s in range(3):
            np.testing.assert_array_equal(r.points[s], points[s][i])
        # the crop holds the whole of both masks: the counts in the crop are the image's
        assert int((r.final & ~r.coarse).sum()) == r.added and int((r.coarse & ~r.final).sum()) == r.removed
    assert rs[0].added > 100 and rs[1].removed > 0  # the hand-made masks really differ
    assert rs[0].cell_px(0) == pytest.approx((28 / 4, 22 / 4)) and rs[0].cell_px(2) == pytest.approx((28 / 16, 22 / 16))
    assert [(r.added, r.removed) for r in refinements(det, chunk=1)] == [(r.added, r.removed) for r in rs]
    only = refinements(det, [1])
    assert len(only) == 1 and only[0].added == rs[1].added and only[0].crop == rs[1].crop


def test_crop_around_one_or_several_boxes():
    assert crop_around([[10, 8, 38, 30]], (H, W)) == (2, 0, 46, 38)  # pad = max(8, 0.25·28) = 8, clamped at y = 0
    assert crop_around([[10, 8, 38, 30]], (H, W), pad=0.5) == (0, 0, 52, 40)  # pad 14
    assert crop_around([[10, 8, 20, 18], [30, 12, 44.5, 20]], (H, W), pad=0.0, min_pad=2) == (8, 6, 47, 22)
    with pytest.raises(ValueError):
        crop_around([], (H, W))
    det, _, _ = _detections()
    r = refinements(det, [0], crops=[(0, 0, W, H)])[0]
    assert r.crop == (0, 0, W, H) and r.final.shape == (H, W)


def test_zero_instances_and_models_without_points():
    empty_cap = PointRendCapture([torch.zeros(0, 16, 2), torch.zeros(0, 5, 2)], (4, 8), torch.zeros(0, 7, 7),
                                 torch.zeros(0, 4, 4))
    det = DetectionResult((H, W), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                          torch.zeros(0, H, W, dtype=torch.bool), point_rend=empty_cap)
    assert refinements(det) == []
    assert coarse_masks(det).shape == (0, H, W)
    mask_rcnn = DetectionResult((H, W), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                                torch.zeros(0, H, W, dtype=torch.bool))
    with pytest.raises(NothingToShow, match="PointRend"):
        refinements(mask_rcnn)


def test_match_instance_picks_the_highest_mask_iou():
    m = np.zeros((10, 10), bool)
    m[2:6, 2:6] = True  # 16 px
    others = np.zeros((4, 10, 10), bool)
    others[0, 0:2, 0:2] = True  # disjoint
    others[1, 2:6, 4:8] = True  # 8 ∩, 24 ∪: 1/3
    others[2, 2:6, 2:5] = True  # 12 ∩, 16 ∪: 3/4
    others[3, 2:6, 2:6] = True  # identical, but left out below
    assert match_instance(m, others) == (3, 1.0)
    j, iou = match_instance(m, others, [0, 1, 2])
    assert j == 2 and iou == pytest.approx(0.75)
    assert match_instance(m, others, [0]) == (None, 0.0)
    assert match_instance(m, others, []) == (None, 0.0)


def test_refinement_view_colours_added_removed_and_kept_pixels():
    det, coarse, _ = _detections()
    r = refinements(det, [0])[0]
    image = np.full((H, W, 3), 120, np.uint8)
    out = refinement_view(image, r, size=200, alpha=1.0, brightness=1.0)
    x0, y0, x1, y1 = r.crop
    s = 200 // max(x1 - x0, y1 - y0)
    assert out.shape == ((y1 - y0) * s, (x1 - x0) * s, 3) and out.dtype == np.uint8
    final = det.masks[0].numpy()
    added = np.argwhere(final & ~coarse[0])[0]
    kept = np.argwhere(final & coarse[0])[0]
    outside = (y0, x0)  # the crop's corner: in neither mask
    at = lambda yx: out[(yx[0] - y0) * s + s // 2, (yx[1] - x0) * s + s // 2]  # noqa: E731
    np.testing.assert_array_equal(at(added), ADDED)
    np.testing.assert_array_equal(at(kept), [round(120 * 0.4 + 255 * 0.6)] * 3)  # kept: white at 0.6 · alpha
    np.testing.assert_array_equal(at(outside), [120, 120, 120])
    r1 = refinements(det, [1])[0]
    removed = np.argwhere(coarse[1] & ~det.masks[1].numpy())[0]
    out1 = refinement_view(image, r1, size=200, alpha=1.0, brightness=1.0)
    s1 = 200 // max(r1.crop[2] - r1.crop[0], r1.crop[3] - r1.crop[1])
    np.testing.assert_array_equal(out1[(removed[0] - r1.crop[1]) * s1 + s1 // 2,
                                       (removed[1] - r1.crop[0]) * s1 + s1 // 2], REMOVED)


def test_points_view_draws_each_step_in_its_colour():
    det, _, points = _detections(n_points=(16, 1, 1))
    det.point_rend.points[2][0, 0] = det.point_rend.points[0][0, 3]  # step 2 re-predicts where a grid point was
    r = refinements(det, [0])[0]
    image = np.zeros((H, W, 3), np.uint8)
    x0, y0 = r.crop[:2]
    out_all = points_view(image, r, size=200)
    s = 200 // max(r.crop[2] - r.crop[0], r.crop[3] - r.crop[1])
    assert out_all.shape == ((r.crop[3] - y0) * s, (r.crop[2] - x0) * s, 3)
    x, y = r.points[2][0]
    at = (int(np.floor((y - y0) * s)), int(np.floor((x - x0) * s)))
    np.testing.assert_array_equal(out_all[at], step_colour(2, 3))  # the last step is drawn on top
    only_0 = points_view(image, r, [0], size=200)
    assert not np.array_equal(only_0[at], step_colour(2, 3))
    grid = (np.floor((points[0][0] - [x0, y0]) * s)).astype(int)
    assert all(tuple(only_0[v, u]) == step_colour(0, 3) for u, v in grid)
    assert tuple(only_0[at]) == step_colour(0, 3)  # under the step-2 dot: grid point 3
    # a step the model does not have (the other model's selector) draws no points
    none = points_view(image, r, [5], size=200)
    assert not any(tuple(none[v, u]) == step_colour(0, 3) for u, v in grid)
    # distinct colours per step, and a legend entry for each shown step after the two mask entries
    assert len({step_colour(k, 4) for k in range(4)}) == 4
    key = points_key(SIDES, [0, 2])
    assert [t for _, _, t in key][2:] == ["step 0: the 4² grid", "step 2: points re-predicted on the 16² map"]
