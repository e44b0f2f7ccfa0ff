"""Point sampling for PointRend's instance head, with detectron2's ``point_rend/point_features.py`` numerics.

Points live in two frames: **box-normalised** (x, y) in [0, 1] (what the head selects and what the coarse logits
are sampled at) and **image pixels** (``u·(x1−x0) + x0``, what the fine-grained features and the ground-truth
masks are sampled at). Sampling is ``grid_sample`` (bilinear, zero padding, ``align_corners=False``) everywhere.
The generic pieces shared with the semantic head (:func:`point_sample`, the top-k on a grid, the training-time
oversampling) are in :mod:`fapn_core.models.heads`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..heads import point_sample, uncertain_points_on_grid, uncertain_points_with_randomness

__all__ = [
    "box_points_to_image", "instance_uncertainty", "point_sample", "regular_grid", "sample_image_features",
    "sample_mask_labels", "subdivision_schedule", "uncertain_points_on_grid", "uncertain_points_with_randomness",
]


def regular_grid(num_boxes: int, side: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Cell centres of a ``side``×``side`` grid, box-normalised (x, y), row-major: (R, side², 2) (an expanded view).

    Built with ``affine_grid`` of ``[[0.5, 0, 0.5], [0, 0.5, 0.5]]`` as detectron2 does, so the values equal
    ``((j + 0.5)/side, (i + 0.5)/side)`` to the last bit the official code has.
    """
    theta = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]], device=device)
    grid = F.affine_grid(theta, [1, 1, side, side], align_corners=False)
    return grid.view(1, -1, 2).expand(num_boxes, -1, -1)


def box_points_to_image(boxes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Box-normalised points (R, P, 2) of boxes (R, 4) XYXY → image pixels (multiply by the size, then add)."""
    x = coords[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    y = coords[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    return torch.stack((x + boxes[:, None, 0], y + boxes[:, None, 1]), dim=-1)


def sample_image_features(
    features: Sequence[torch.Tensor], scales: Sequence[float], boxes: Sequence[torch.Tensor], coords: torch.Tensor,
) -> torch.Tensor:
    """Fine-grained features at box-normalised points: (ΣR_i, ΣC, P).

    ``features``: maps (N, C_l, H_l, W_l) of the padded batch; ``scales``: 1/stride of each; ``boxes``: per image
    (R_i, 4) in input pixels; ``coords``: (ΣR_i, P, 2). Pixels are divided by the **padded** map size ×
    stride (``[W_l, H_l] / scale``); the maps' features are concatenated along channels. One ``grid_sample``
    per image and map, over all its boxes and points at once.
    """
    counts = [len(b) for b in boxes]
    channels = sum(int(f.shape[1]) for f in features)
    if sum(counts) == 0:
        return features[0].new_zeros((0, channels, coords.shape[1]))
    points = box_points_to_image(torch.cat(boxes).to(coords.dtype), coords)
    out = []
    for i, pts in enumerate(points.split(counts)):
        if not len(pts):
            continue
        per_map = []
        for fmap, scale in zip(features, scales):
            h, w = fmap.shape[-2:]
            size = torch.tensor([w, h], device=pts.device) / scale
            grid = (2.0 * (pts / size) - 1.0).to(fmap.dtype)
            per_map.append(F.grid_sample(fmap[i:i + 1], grid[None], align_corners=False)[0].transpose(0, 1))
        out.append(per_map[0] if len(per_map) == 1 else torch.cat(per_map, dim=1))
    return out[0] if len(out) == 1 else torch.cat(out)  # one image, one map: the view, not a copy


def instance_uncertainty(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """PointRend's instance uncertainty: ``−|logit|`` of each mask's own class, (R, 1, …) (higher = less sure).

    ``logits`` (R, K, …) class-specific or (R, 1, …) class-agnostic; ``classes`` (R,) predicted or gt classes.
    """
    if logits.shape[1] == 1:
        own = logits.clone()
    else:
        own = logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)
    return -own.abs()


def subdivision_schedule(init_resolution: int, steps: int, num_points: int) -> tuple[int, int]:
    """(initial grid side, refinement steps): double the side and drop a step while a step would select every
    cell anyway (``4·side² ≤ num_points``). 784 points, 5 steps, side 7 → (28, 3); 196/3 → (14, 2)."""
    while 4 * init_resolution ** 2 <= num_points:
        init_resolution *= 2
        steps -= 1
    return init_resolution, steps


def sample_mask_labels(masks: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Ground-truth labels at image-pixel points: (R, P) in [0, 1].

    ``masks`` (M, H, W) bool (zero-padded to a common size), ``index`` (R,) which mask each row samples,
    ``points`` (R, P, 2) (x, y) in pixels. Bilinear with zeros outside the mask, ``align_corners=False`` (pixel
    ``j`` is centred at ``j + 0.5``): what ``grid_sample`` of each row's own mask gives (detectron2's
    ``sample_point_labels``), gathered from the M masks instead of copying one mask per row.
    """
    m, h, w = masks.shape
    flat = masks.reshape(-1)
    px, py = points[..., 0] - 0.5, points[..., 1] - 0.5
    x0, y0 = torch.floor(px), torch.floor(py)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    base = index.to(torch.int64)[:, None] * (h * w)
    out = torch.zeros_like(px)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            flat_idx = base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
            out = out + wy * wx * (flat[flat_idx] & inside).to(out.dtype)
    return out
