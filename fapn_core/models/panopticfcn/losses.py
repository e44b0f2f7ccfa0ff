"""PanopticFCN training losses (official ``PanopticFCN.losses`` / ``loss_single_level`` and ``loss.py``).

- ``loss_pos_th``: sigmoid focal loss (α 0.25, γ 2) of the centre logits against the Gaussian heatmaps, summed
  over cells, classes and levels, / max(#assigned instances, 1).
- ``loss_pos_st``: the same focal loss for the region logits against the stuff score maps, averaged over each
  (image, channel)'s cells, summed, / #images.
- ``loss_seg_th``: weighted dice. Per assigned instance the ``pos_num`` cells of its level with the highest
  σ(centre of its class) inside its mask (bilinear mask at the level > 0.1) each give a kernel; each kernel's
  dice loss ``1 − 2Σpt / max(Σp² + Σt², 1e-8)`` against the soft stride-4 mask is weighted by its centre
  probability (normalised over the ``pos_num``); summed, / max(#instances, 1).
- ``loss_seg_st``: dice of each assigned stuff class's kernel (the level's kernels summed over the class's cells /
  the level's cell count) against its stride-4 map, summed, / max(#stuff assignments, 1).
Position weight 1, segment weight 3 (``LOSS_WEIGHT``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .targets import LevelTargets, image_targets


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
                       per_map_mean: bool = False) -> torch.Tensor:
    """Summed focal loss with soft targets; ``per_map_mean``: average each (N, C) map's cells first (stuff)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if per_map_mean:
        loss = loss.flatten(2).mean(-1)
    return loss.sum()


def dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 − 2Σpt / max(Σp² + Σt², eps)`` over the last dimension."""
    denom = (probs * probs).sum(-1) + (targets * targets).sum(-1)
    return 1 - 2 * (probs * targets).sum(-1) / denom.clamp(min=eps)


def guided_kernels(centres: torch.Tensor, kernels: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor,
                   pos_num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image, one level: for each instance the ``pos_num`` cells of highest σ(centre of its class) inside its
    mask (mask bilinearly resized to the level > 0.1) → (kernels (n, pos_num, C), weights (n, pos_num)).

    Where the level has fewer cells than ``pos_num`` the missing ones get weight 0 (the official code fails there).
    """
    k, h, w = centres.shape
    guided = F.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0].flatten(1)
    prob = centres.sigmoid().flatten(1)[classes]  # (n, h·w)
    guidance = torch.where(guided > 0.1, prob, torch.zeros_like(prob))
    top = min(pos_num, h * w)
    weights, cells = guidance.topk(top, dim=1)
    picked = kernels.flatten(1).T[cells]  # (n, top, C)
    if top < pos_num:
        pad = pos_num - top
        weights = F.pad(weights, (0, pad))
        picked = F.pad(picked, (0, 0, 0, pad))
    return picked, weights


def panopticfcn_losses(model: torch.nn.Module, encode: torch.Tensor, centres: list[torch.Tensor],
                       regions: list[torch.Tensor], kernels: list[torch.Tensor],
                       targets: Sequence[dict[str, torch.Tensor]], padded_size: tuple[int, int]
                       ) -> dict[str, torch.Tensor]:
    """The four PanopticFCN losses for a batch (see module docstring); ``model`` is the PanopticFCN being trained
    (its options, generators and class counts are read, never its forward)."""
    opts = model.options
    dev = encode.device
    n_img = encode.shape[0]
    stride4 = tuple(encode.shape[-2:])
    shapes = [tuple(c.shape[-2:]) for c in centres]
    per_image: list[list[LevelTargets]] = [
        image_targets({k: v.to(dev) for k, v in t.items()}, num_thing_classes=model.num_classes,
                      num_stuff_channels=model.num_stuff_classes, padded_size=padded_size, stride4_shape=stride4,
                      level_shapes=shapes, instance_scales=opts.instance_scales, min_overlap=opts.min_overlap,
                      gaussian_sigma=opts.gaussian_sigma, center_type=opts.center_type,
                      common_stride=model.common_stride, ignore_index=model.ignore_index, tensor_dim=opts.tensor_dim)
        for t in targets]
    pos_th = encode.new_zeros(())
    pos_st = encode.new_zeros(())
    seg_th = encode.new_zeros(())
    seg_st = encode.new_zeros(())
    n_th = n_st = 0
    flat_encode = encode.flatten(2)  # (N, E, H4·W4)
    for lvl in range(len(centres)):
        gt_c = torch.stack([per_image[i][lvl].centres for i in range(n_img)])
        gt_r = torch.stack([per_image[i][lvl].regions for i in range(n_img)])
        pos_th = pos_th + sigmoid_focal_loss(centres[lvl], gt_c, alpha=opts.focal_alpha, gamma=opts.focal_gamma)
        pos_st = pos_st + sigmoid_focal_loss(regions[lvl], gt_r, alpha=opts.focal_alpha, gamma=opts.focal_gamma,
                                             per_map_mean=True)
        h, w = shapes[lvl]
        for i in range(n_img):
            t = per_image[i][lvl]
            if t.thing_classes.numel():
                picked, weights = guided_kernels(centres[lvl][i], kernels[lvl][i], t.thing_masks, t.thing_classes,
                                                 opts.pos_num)
                meta = model.thing_generator.embed(picked)  # (n, P, E)
                probs = (meta @ flat_encode[i]).sigmoid()  # (n, P, H4·W4)
                dice = dice_loss(probs, t.thing_masks.flatten(1)[:, None])
                norm = weights / weights.sum(-1, keepdim=True).clamp(min=1e-8)
                seg_th = seg_th + (dice * norm).sum()
                n_th += int(t.thing_classes.numel())
            if t.stuff_masks.shape[0]:
                pooled = t.stuff_masks.flatten(1).to(kernels[lvl].dtype) @ kernels[lvl][i].flatten(1).T / (h * w)
                probs = (model.stuff_generator.embed(pooled) @ flat_encode[i]).sigmoid()  # (m, H4·W4)
                seg_st = seg_st + dice_loss(probs, t.stuff_labels.flatten(1)).sum()
                n_st += int(t.stuff_masks.shape[0])
    if n_th == 0:  # keep every head in the graph (zero gradient), as the official loss does
        seg_th = seg_th + 0 * sum(k.sum() for k in kernels) + 0 * model.thing_generator.embed_extractor.weight.sum()
    if n_st == 0:
        seg_st = seg_st + 0 * model.stuff_generator.embed_extractor.weight.sum()
    return {
        "loss_pos_th": opts.position_loss_weight * pos_th / max(n_th, 1),
        "loss_pos_st": opts.position_loss_weight * pos_st / max(n_img, 1),
        "loss_seg_th": opts.segment_loss_weight * seg_th / max(n_th, 1),
        "loss_seg_st": opts.segment_loss_weight * seg_st / max(n_st, 1),
    }
