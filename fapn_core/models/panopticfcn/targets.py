"""Training targets (official ``GenerateGT``), per image and level, vectorised over instances and classes.

Stuff: the semantic map (0 = things, ``ignore`` dropped) one-hot → bilinear to ``int(H/4 + 0.5)`` ×
``int(W/4 + 0.5)`` into a zero stride-4 map of the padded input (``labels``); per level, bilinear to the level,
clamped at 1, values < 0.5 zeroed (``scores``, the region heatmap target); a class is assigned at a level iff its
score map is non-zero there, and its ``mask`` at that level is where the score is > 0.
Things: masks bilinear to stride 4 (soft values kept); centre = mean (x, y) of the mask's non-zero stride-4 cells
(``center_type="mass"``) or the box centre / 4; an instance goes to every level whose ``instance_scales`` range
holds sqrt(box area) (inclusive); on that level its centre cell (truncated) gets a Gaussian of radius
``CornerNet-radius(box size in cells, min_overlap)`` (truncated to int) and sigma ``(2r + 1) / gaussian_sigma``,
max-merged into its class channel (values below eps·max zeroed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LevelTargets:
    """One image, one level. ``centres`` (K, h, w) Gaussian heatmaps; ``thing_masks`` (n, H4, W4) soft masks on
    the padded stride-4 map; ``thing_classes`` (n,); ``regions`` (S+1, h, w) stuff score targets; ``stuff_masks``
    (m, h, w) bool cells of each assigned stuff class; ``stuff_labels`` (m, H4, W4) their stride-4 targets."""

    centres: torch.Tensor
    thing_masks: torch.Tensor
    thing_classes: torch.Tensor
    regions: torch.Tensor
    stuff_masks: torch.Tensor
    stuff_labels: torch.Tensor


def gaussian_radius(wh: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CornerNet's radius for boxes (n, 2) = (w, h): the smallest of its three overlap cases."""
    w, h = wh[..., 0], wh[..., 1]
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(r1, torch.minimum(r2, r3))


def draw_gaussians(num_classes: int, size: tuple[int, int], centres: torch.Tensor, radii: torch.Tensor,
                   classes: torch.Tensor, sigma_factor: float) -> torch.Tensor:
    """(K, h, w) heatmap: per instance a (2r+1)² Gaussian at its integer centre (x, y), max-merged per class."""
    h, w = size
    out = torch.zeros((num_classes, h * w), device=centres.device)
    if centres.shape[0] == 0:
        return out.view(num_classes, h, w)
    r = radii.to(torch.float64)[:, None, None]
    sigma = (2 * r + 1) / sigma_factor
    dy = torch.arange(h, device=centres.device, dtype=torch.float64)[None, :, None] - centres[:, 1, None, None]
    dx = torch.arange(w, device=centres.device, dtype=torch.float64)[None, None, :] - centres[:, 0, None, None]
    g = torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    inside = (dx.abs() <= r) & (dy.abs() <= r) & (g >= torch.finfo(torch.float64).eps)
    g = (g * inside).to(torch.float32).reshape(centres.shape[0], -1)
    index = classes.long()[:, None].expand(-1, h * w)
    return out.scatter_reduce_(0, index, g, "amax", include_self=True).view(num_classes, h, w)


def stride4_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """Official ``int(h / stride + 0.5)``, ``int(w / stride + 0.5)``."""
    return int(h / stride + 0.5), int(w / stride + 0.5)


def image_targets(
    target: dict[str, torch.Tensor], *, num_thing_classes: int, num_stuff_channels: int, padded_size: tuple[int, int],
    stride4_shape: tuple[int, int], level_shapes: list[tuple[int, int]], instance_scales, min_overlap: float,
    gaussian_sigma: float, center_type: str = "mass", common_stride: int = 4, ignore_index: int = 255,
    tensor_dim: int = 100,
) -> list[LevelTargets]:
    """Targets of one image for every head level (see module docstring)."""
    sem = target["sem_seg"].long()
    dev = sem.device
    h_img, w_img = sem.shape
    nh, nw = stride4_size(h_img, w_img, common_stride)
    s1 = num_stuff_channels
    labels = torch.where(sem == ignore_index, s1, sem).clamp(0, s1)
    onehot = F.one_hot(labels, s1 + 1).permute(2, 0, 1)[:s1].float()
    small = F.interpolate(onehot[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    stuff4 = torch.zeros((s1, *stride4_shape), device=dev)
    stuff4[:, :nh, :nw] = small

    masks = target.get("masks")
    n = 0 if masks is None else int(masks.shape[0])
    if n:
        m4 = F.interpolate(masks.float()[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        boxes = target["boxes"].float().to(dev)
        classes = target["classes"].long().to(dev)
        if center_type == "mass":
            on = (m4 > 0).float()
            cnt = on.sum(dim=(1, 2)).clamp_min(1)
            ys = torch.arange(nh, device=dev, dtype=torch.float32)
            xs = torch.arange(nw, device=dev, dtype=torch.float32)
            centres = torch.stack([(on.sum(1) * xs).sum(1) / cnt, (on.sum(2) * ys).sum(1) / cnt], dim=1)
        else:
            centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / common_stride
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0))
    out = []
    for (h, w), (lo, hi) in zip(level_shapes, instance_scales):
        regions = F.interpolate(stuff4[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(max=1.0)
        regions = torch.where(regions < 0.5, torch.zeros_like(regions), regions)
        assigned = regions.flatten(1).sum(1) > 0
        stuff_masks, stuff_labels = regions[assigned] > 0, stuff4[assigned]
        centres_map = torch.zeros((num_thing_classes, h, w), device=dev)
        thing_masks = torch.zeros((0, *stride4_shape), device=dev)
        thing_classes = torch.zeros(0, dtype=torch.long, device=dev)
        if n:
            pick = ((sizes >= lo) & (sizes <= hi)).nonzero()[:, 0][:tensor_dim]
            if pick.numel():
                c = centres[pick] * torch.tensor([w / stride4_shape[1], h / stride4_shape[0]], device=dev)
                c_int = c.to(torch.int64)
                c_int[:, 0].clamp_(0, w)
                c_int[:, 1].clamp_(0, h)
                b = boxes[pick]
                wh = torch.stack([(b[:, 2] - b[:, 0]) * (w / padded_size[1]),
                                  (b[:, 3] - b[:, 1]) * (h / padded_size[0])], dim=1)
                radii = gaussian_radius(wh, min_overlap).clamp_min(0).to(torch.int64)
                on_map = (c_int[:, 0] < w) & (c_int[:, 1] < h)  # a centre clamped onto the far edge draws nothing
                centres_map = draw_gaussians(num_thing_classes, (h, w), c_int[on_map].double(), radii[on_map],
                                             classes[pick][on_map], gaussian_sigma)
                thing_masks = torch.zeros((pick.numel(), *stride4_shape), device=dev)
                thing_masks[:, :nh, :nw] = m4[pick]
                thing_classes = classes[pick]
        out.append(LevelTargets(centres_map, thing_masks, thing_classes, regions, stuff_masks, stuff_labels))
    return out
