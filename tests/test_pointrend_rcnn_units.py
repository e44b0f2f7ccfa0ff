"""Unit tests for PointRend's instance head: point sampling at borders, the subdivision schedule, the uncertainty
top-k with ties, the scatter between steps, zero detections, very small boxes, ground-truth point labels, and a
training smoke test whose loss falls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fapn_core.checkpoints import CheckpointError, detectron2_to_native, export_detectron2_state_dict, infer_config
from fapn_core.models.layers import ShapeSpec
from fapn_core.models.rcnn.boxes import nonempty
from fapn_core.models.rcnn.point_features import (
    box_points_to_image, instance_uncertainty, regular_grid, sample_image_features, sample_mask_labels,
    subdivision_schedule, uncertain_points_on_grid,
)
from fapn_core.models.rcnn.point_rend import PointRendMaskHead
from fapn_core.models.zoo import build_model

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster, and immune to the oversubscription of a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(neck_channels=16, box_fc_dim=32, mask_conv_dims=16, mask_fc_dim=32, point_fc_dim=16,
            stem_out_channels=16, subdivision_num_points=49, subdivision_steps=3)


def test_regular_grid_is_cell_centres_row_major():
    g = regular_grid(2, 3)
    assert g.shape == (2, 9, 2)
    c = (torch.arange(3) + 0.5) / 3
    expect = torch.stack(torch.meshgrid(c, c, indexing="ij")[::-1], -1).reshape(9, 2)  # (x, y), row-major
    torch.testing.assert_close(g[1], expect, atol=6e-8, rtol=0)


def test_point_sample_on_p2_at_pixel_centres_and_at_borders():
    """Points are pixels of the padded image; p2 pixel j is centred at image x = 4j + 2; outside the outermost
    centres ``grid_sample`` fades towards 0 (zero padding), unlike ROIAlign which clamps."""
    fmap = torch.arange(1.0, 13.0).view(1, 1, 3, 4)  # p2 of a 12×16 padded image
    box = torch.tensor([[0.0, 0.0, 16.0, 12.0]])
    # box-normalised (u, v) → image (16u, 12v): p2 pixel (row 1, col 2) centre = image (10, 6)
    coords = torch.tensor([[[10 / 16, 6 / 12], [0.0, 6 / 12], [2 / 16, 2 / 12], [1.0, 1.0], [1 / 16, 2 / 12]]])
    out = sample_image_features([fmap], [0.25], [box], coords)[0, 0]
    assert out[0] == pytest.approx(7.0)  # exactly the pixel
    assert out[1] == pytest.approx(0.5 * 5.0)  # image x = 0 is half a p2 pixel outside: half faded
    assert out[2] == pytest.approx(1.0)  # the corner pixel centre
    assert out[3] == pytest.approx(0.25 * 12.0)  # the far corner: half outside in x and y
    assert out[4] == pytest.approx(0.75 * 1.0)  # a quarter pixel outside the first centre
    # the divisor is the padded map (here p2 3×4 = 12×16 px), whatever the box
    torch.testing.assert_close(box_points_to_image(box, coords)[0, 0], torch.tensor([10.0, 6.0]))


def test_subdivision_schedule():
    assert subdivision_schedule(7, 5, 784) == (28, 3)  # official: 28² then 56², 112², 224²
    assert subdivision_schedule(7, 3, 196) == (14, 2)  # the minis: 14² then 28², 56²
    assert subdivision_schedule(7, 3, 150) == (7, 3)  # 4·49 > 150: no doubling
    head = PointRendMaskHead({"p2": ShapeSpec(8, 4)}, 2, conv_dim=8, fc_dim=8, point_fc_dim=8,
                             subdivision_steps=3, subdivision_num_points=150)
    assert (head.init_resolution, head.refine_steps, head.output_resolution) == (7, 3, 56)


def test_uncertainty_is_minus_abs_logit_of_the_own_class():
    logits = torch.tensor([[[1.0, -3.0]], [[0.5, 2.0]]]).view(1, 2, 1, 2).expand(2, -1, -1, -1)
    u = instance_uncertainty(logits, torch.tensor([1, 0]))
    assert u.shape == (2, 1, 1, 2)
    assert u[0, 0, 0].tolist() == [-0.5, -2.0] and u[1, 0, 0].tolist() == [-1.0, -3.0]
    assert instance_uncertainty(-logits[:, :1], torch.tensor([1, 0])).tolist() == (-logits[:, :1].abs()).tolist()


def test_top_k_with_ties_selects_a_valid_set_and_its_cell_centres():
    """Ties at the cut may be broken either way (detectron2 leaves it to ``torch.topk``); what holds is that every
    selected cell is at least as uncertain as every other one, and each point is its cell's centre."""
    u = torch.tensor([[0.0, -1.0, -1.0, -1.0], [-2.0, -1.0, -1.0, -3.0], [-5.0, -5.0, -5.0, -5.0],
                      [-4.0, -1.0, -2.0, -3.0]]).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    u[1] = -u[1]
    idx, coords = uncertain_points_on_grid(u, 5)
    flat = u.view(2, 16)
    for r in range(2):
        chosen = torch.zeros(16, dtype=torch.bool)
        chosen[idx[r]] = True
        assert chosen.sum() == 5 and flat[r][chosen].min() >= flat[r][~chosen].max()
        assert torch.equal(coords[r, :, 0], (idx[r] % 4).float() * 0.25 + 0.125)
        assert torch.equal(coords[r, :, 1], (idx[r] // 4).float() * 0.25 + 0.125)
    assert idx[0, 0] == 0 and len(set(idx[0].tolist()[1:]) & {1, 2, 3, 5, 6, 13}) == 4  # 4 of 6 tied at −1
    assert set(idx[1].tolist()) == {8, 9, 10, 11, 12}  # four tied at 5 inside the selection, then 4


def _head(num_classes: int = 3, **kw) -> PointRendMaskHead:
    torch.manual_seed(0)
    opts = dict(conv_dim=8, fc_dim=16, point_fc_dim=8, subdivision_steps=3, subdivision_num_points=20)
    opts.update(kw)
    return PointRendMaskHead({"p2": ShapeSpec(8, 4)}, num_classes, **opts).eval()


def test_each_step_upsamples_then_replaces_exactly_the_most_uncertain_cells():
    """detectron2's procedure, all K channels: upsample ×2, pick the cells whose own-class |logit| is smallest,
    write the point logits of every class there, keep the bilinear values elsewhere. The head carries only each
    detection's class and must give exactly that channel."""
    head = _head()
    feats = {"p2": torch.randn(1, 8, 10, 12)}
    boxes = [torch.tensor([[4.0, 3.0, 30.0, 35.0], [0.0, 0.0, 48.0, 40.0]])]
    classes = torch.tensor([2, 0])
    with torch.no_grad():
        out = head(feats, boxes, classes)
    assert head.init_resolution == 7 and [s.grid_side for s in out.steps] == [7, 14, 28, 56]
    logits = out.steps[0].point_logits.view(2, 3, 7, 7)
    for step in out.steps[1:]:
        up = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False).flatten(2)
        u = -up[torch.arange(2), classes].abs()
        assert step.point_indices.shape == (2, 20)
        cut = u.gather(1, step.point_indices).min(1).values
        rest = torch.ones_like(u, dtype=torch.bool).scatter(1, step.point_indices, False)
        assert (u.masked_fill(~rest, -float("inf")).max(1).values <= cut).all()  # the most uncertain cells
        new = up.scatter(2, step.point_indices[:, None].expand(-1, 3, -1), step.point_logits)
        keep = rest[:, None].expand(-1, 3, -1)
        assert torch.equal(new[keep], up[keep])
        logits = new.view(2, 3, step.grid_side, step.grid_side)
    assert out.mask_logits.shape == (2, 1, 56, 56)
    torch.testing.assert_close(logits[torch.arange(2), classes][:, None], out.mask_logits, atol=0, rtol=0)


def test_zero_detections_and_very_small_boxes():
    head = _head()
    feats = {"p2": torch.randn(2, 8, 10, 12)}
    with torch.no_grad():
        out = head(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], torch.zeros(0, dtype=torch.int64))
        assert out.mask_logits.shape == (0, 1, 7, 7) and out.coarse_logits.shape == (0, 3, 7, 7)
        assert len(out.steps) == 1  # detectron2 returns right after the initial step
        cap = head.capture(out, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        assert len(cap) == 0 and cap.points[0].shape == (0, 49, 2)
        tiny = [torch.tensor([[5.0, 5.0, 5.0, 9.0]]), torch.tensor([[0.0, 39.5, 0.25, 40.0], [47.0, 1.0, 48.0, 1.5]])]
        out = head(feats, tiny, torch.tensor([0, 1, 2]))
    assert out.mask_logits.shape == (3, 1, 56, 56) and torch.isfinite(out.mask_logits).all()
    # in a model: nothing passes the score threshold → an empty result with an empty capture
    model = build_model("fpn_r18_pointrend_rcnn", num_classes=2, **TINY).eval()
    model.roi_heads.box_predictor.score_thresh = 1.0
    res = model.predict(np.full((40, 56, 3), 90, np.uint8))
    assert len(res) == 0 and res.masks.shape == (0, 40, 56) and res.mask_probs.shape == (0, 1, 7, 7)
    assert len(res.point_rend) == 0 and res.point_rend.grid_sides == (7,)


def test_postprocess_keeps_the_capture_aligned_and_in_output_pixels():
    torch.manual_seed(1)
    model = build_model("fapn_r18_pointrend_rcnn", num_classes=2, **TINY).eval()
    model.roi_heads.box_predictor.score_thresh = 0.0
    raw = {}
    hook = model.roi_heads.register_forward_hook(lambda m, i, o: raw.__setitem__("det", o[0][0]))
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 64, 96))).float()
    with torch.no_grad():
        res = model([image], output_sizes=[(32, 144)])[0]
    hook.remove()
    assert len(res) > 0 and res.mask_probs.shape[-1] == 56 and res.point_rend.grid_sides == (7, 14, 28, 56)
    cap, det = res.point_rend, raw["det"]["point_rend"]
    assert [p.shape[1] for p in cap.points] == [49, 49, 49, 49]
    keep = nonempty(raw["det"]["boxes"] * torch.tensor([1.5, 0.5, 1.5, 0.5]))  # what postprocess keeps
    assert len(res) == int(keep.sum())
    torch.testing.assert_close(cap.points[2], det.points[2][keep] * torch.tensor([1.5, 0.5]))
    inside = [(p[..., 0] >= b[0] - 1e-3) & (p[..., 0] <= b[2] + 1e-3) & (p[..., 1] >= b[1] - 1e-3)
              & (p[..., 1] <= b[3] + 1e-3) for p, b in zip(cap.points[-1], res.boxes)]
    assert all(bool(x.all()) for x in inside)  # every point lies in its instance's box


def test_point_labels_equal_grid_sample_of_each_rows_mask():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 9, 13, generator=g) > 0.5
    index = torch.tensor([2, 0, 2, 1])
    points = torch.rand(4, 50, 2, generator=g) * torch.tensor([15.0, 11.0]) - 1.0  # some outside the image
    ours = sample_mask_labels(masks, index, points)
    grid = 2.0 * (points / torch.tensor([13.0, 9.0])) - 1.0
    theirs = F.grid_sample(masks[index, None].float(), grid[:, :, None], align_corners=False)[:, 0, :, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_checkpoint_with_a_foreign_coarse_head_is_refused_with_a_reason():
    model = build_model("fpn_r18_maskrcnn", num_classes=2, neck_channels=16, box_fc_dim=16, mask_conv_dims=16)
    sd = {k.replace("roi_heads.mask_head.", "roi_heads.mask_head.coarse_head."): v
          for k, v in export_detectron2_state_dict(model).items()}
    with pytest.raises(CheckpointError, match="PointRend instance-segmentation checkpoint .* key .* is missing"):
        infer_config({n: v for k, v in sd.items() if (n := detectron2_to_native(k))}, native=True)


def _toy(n: int, size: tuple[int, int]):
    g = torch.Generator().manual_seed(n)
    images, targets = [], []
    for _ in range(n):
        img = torch.full((3, *size), 40.0)
        boxes, masks = [], []
        for k in range(2):
            y0 = int(torch.randint(0, size[0] - 26, (1,), generator=g))
            x0 = int(torch.randint(0, size[1] - 26, (1,), generator=g))
            yy, xx = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
            m = ((yy - y0 - 11) ** 2 + (xx - x0 - 11) ** 2) <= 110  # discs: boundaries for the points to find
            img[:, m] = torch.tensor([220.0, 60.0 + 100 * k, 30.0])[:, None]
            ys, xs = torch.nonzero(m, as_tuple=True)
            masks.append(m)
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "classes": torch.tensor([0, 1]),
                        "masks": torch.stack(masks)})
    return images, targets


def test_training_smoke_the_head_learns_masks_at_points():
    """The PointRend losses on fixed p2 features (the images through a fixed projection) and fixed proposals:
    both the coarse mask loss and the point loss (points drawn anew every step) fall."""
    torch.manual_seed(0)
    head = PointRendMaskHead({"p2": ShapeSpec(16, 4)}, 2, conv_dim=16, fc_dim=32, point_fc_dim=16).train()
    images, targets = _toy(2, (64, 96))
    p2 = torch.einsum("oc,nchw->nohw", torch.randn(16, 3) / 50, F.avg_pool2d(torch.stack(images) - 100, 4))
    boxes = [t["boxes"] + torch.tensor([-3.0, -2.0, 2.0, 3.0]) for t in targets]  # proposals around the objects
    classes = torch.cat([t["classes"] for t in targets])
    masks, matched = torch.cat([t["masks"] for t in targets]), torch.arange(4)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = head.losses({"p2": p2}, boxes, classes, masks, matched)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert set(history[0]) == {"loss_mask", "loss_mask_point"}
    for key in history[0]:
        first, last = np.mean([h[key] for h in history[:3]]), np.mean([h[key] for h in history[-3:]])
        assert last < 0.6 * first, (key, first, last)


def test_training_a_model_gives_pointrends_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model("fpn_r18_pointrend_rcnn", num_classes=2, **TINY).train()
    assert model.roi_heads.train_on_pred_boxes
    images, targets = _toy(2, (64, 96))
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_mask_point"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.roi_heads.mask_head
    assert head.point_head.fc1.weight.grad.abs().sum() > 0 and head.coarse_head.fc1.weight.grad.abs().sum() > 0
    empty = [{"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
              "masks": torch.zeros(0, 64, 96, dtype=torch.bool)}]
    out = model(images[:1], empty)  # no foreground: zero mask losses that still backpropagate
    assert float(out["loss_mask_point"].detach()) == 0.0 and float(out["loss_mask"].detach()) == 0.0
    sum(out.values()).backward()
