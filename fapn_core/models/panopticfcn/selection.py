"""Per-level candidate selection (official ``inference_single_level`` and ``topk_score``), one image at a time.

Things: ``s = (σ(c) + avgpool_k(σ(c))) / 2`` (zero padding counted), exact-equality 3×3 max-pool NMS (every cell
tied with its window maximum survives), two-stage top-k with ``K = min(h·w, top_num // 2)``, class = stage-2 index
// K, kept iff ``score > thresh`` (strict); kernels gathered at the kept cells in top-k order.
Stuff: ``cate = argmax σ(r)`` (first on ties); per class present, score = mean of its σ over its argmax cells, kept
iff ``> thresh`` (strict); its kernel = (sum of the kernels over its cells) / (h·w of the whole level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LevelSelection:
    """One level's candidates of one image (kernels are the kernel head's, before the generators' embedding).

    ``centres`` (K, h, w): the smoothed centre map before NMS; ``peaks`` (K, h, w): the map handed to top-k
    (suppressed cells exactly 0). Thing candidates in top-k order: ``thing_scores`` (n,), ``thing_classes`` (n,),
    ``thing_cells`` (n,) flat ``y·w + x``, ``thing_kernels`` (n, C). Stuff candidates by ascending class:
    ``stuff_classes`` (m,), ``stuff_scores`` (m,), ``stuff_kernels`` (m, C). ``regions`` (S+1, h, w) = σ(region
    logits).
    """

    centres: torch.Tensor
    peaks: torch.Tensor
    topk_scores: torch.Tensor
    topk_cells: torch.Tensor
    topk_classes: torch.Tensor
    thing_scores: torch.Tensor
    thing_classes: torch.Tensor
    thing_cells: torch.Tensor
    thing_kernels: torch.Tensor
    regions: torch.Tensor
    stuff_classes: torch.Tensor
    stuff_scores: torch.Tensor
    stuff_kernels: torch.Tensor


def smooth_centres(center_logits: torch.Tensor, pool_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, h, w) logits → (smoothed map, map after max-pool NMS by exact equality)."""
    c = center_logits.sigmoid()[None]
    s = (c + F.avg_pool2d(c, pool_size, stride=1, padding=(pool_size - 1) // 2, count_include_pad=True)) / 2.0
    keep = F.max_pool2d(s, 3, stride=1, padding=1) == s
    return s[0], (s * keep)[0]


def two_stage_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official ``topk_score`` on (C, h, w): top ``k`` cells per class, then top ``k`` of those C·k.

    Returns (scores (k,), flat cells (k,), classes (k,) = stage-2 index // k).
    """
    c = scores.shape[0]
    s1, cells1 = scores.reshape(c, -1).topk(k)
    s2, idx = s1.reshape(-1).topk(k)
    return s2, cells1.reshape(-1)[idx], torch.div(idx, k, rounding_mode="floor")


def select_level(center_logits: torch.Tensor, region_logits: torch.Tensor, kernels: torch.Tensor, *,
                 pool_size: int, center_thresh: float, stuff_thresh: float, top_num: int) -> LevelSelection:
    """Thing and stuff candidates of one level: ``center_logits`` (K, h, w), ``region_logits`` (S+1, h, w),
    ``kernels`` (C, h, w)."""
    h, w = center_logits.shape[-2:]
    centres, peaks = smooth_centres(center_logits, pool_size)
    k = min(h * w, top_num // 2)
    scores, cells, classes = two_stage_topk(peaks, k)
    keep = scores > center_thresh
    flat = kernels.reshape(kernels.shape[0], -1)  # (C, h·w)
    thing_cells = cells[keep]
    regions = region_logits.sigmoid()
    s1 = regions.shape[0]
    cate = regions.argmax(0).reshape(-1)
    onehot = F.one_hot(cate, s1).T.to(regions.dtype)  # (S+1, h·w)
    counts = onehot.sum(1)
    stuff_score = (regions.reshape(s1, -1) * onehot).sum(1) / counts.clamp_min(1)
    stuff_keep = (counts > 0) & (stuff_score > stuff_thresh)
    stuff_classes = stuff_keep.nonzero()[:, 0]
    stuff_kernels = onehot[stuff_classes] @ flat.T / float(h * w)
    return LevelSelection(
        centres=centres, peaks=peaks, topk_scores=scores, topk_cells=cells, topk_classes=classes,
        thing_scores=scores[keep], thing_classes=classes[keep], thing_cells=thing_cells,
        thing_kernels=flat[:, thing_cells].T, regions=regions, stuff_classes=stuff_classes,
        stuff_scores=stuff_score[stuff_classes], stuff_kernels=stuff_kernels,
    )
