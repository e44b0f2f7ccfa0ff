"""Multi-level ROI pooling (detectron2 ``ROIPooler`` with ``ROIAlignV2``)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

from .boxes import box_area


def assign_levels(boxes: torch.Tensor, min_level: int, max_level: int, canonical_size: float = 224.0,
                  canonical_level: int = 4) -> torch.Tensor:
    """Index (0-based from ``min_level``) of the pyramid level for each box:
    ``floor(4 + log2(sqrt(area)/224 + 1e-8))`` clamped to [min_level, max_level]."""
    lvl = torch.floor(canonical_level + torch.log2(torch.sqrt(box_area(boxes)) / canonical_size + 1e-8))
    return torch.clamp(lvl, min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Pool ``output_size``² features per box from its level; one batched ``roi_align`` per level.

    ROIAlignV2 = ``roi_align(aligned=True, sampling_ratio=0)``: boxes scaled by 1/stride and shifted by −0.5,
    an adaptive ceil(bin) sampling grid per ROI.
    """

    def __init__(self, output_size: int, strides: Sequence[int], sampling_ratio: int = 0) -> None:
        super().__init__()
        self.output_size = int(output_size)
        self.scales = [1.0 / s for s in strides]
        levels = [math.log2(s) for s in strides]
        if any(abs(lv - round(lv)) > 1e-6 for lv in levels) or any(
                round(b) - round(a) != 1 for a, b in zip(levels, levels[1:])):
            raise ValueError(f"pooler strides must be consecutive powers of two, got {list(strides)}")
        self.min_level, self.max_level = int(round(levels[0])), int(round(levels[-1]))
        self.sampling_ratio = sampling_ratio

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: one (N, C, Hi, Wi) per level; ``boxes``: per image (R_i, 4) → (ΣR_i, C, S, S)."""
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
        c, s = features[0].shape[1], self.output_size
        if len(rois) == 0:
            return features[0].new_zeros((0, c, s, s))
        if len(features) == 1:
            return roi_align(features[0], rois.to(features[0].dtype), s, self.scales[0], self.sampling_ratio, True)
        levels = assign_levels(rois[:, 1:], self.min_level, self.max_level)
        out = features[0].new_zeros((len(rois), c, s, s))
        for lvl, (x, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == lvl, as_tuple=True)[0]
            if idx.numel():
                out.index_put_((idx,), roi_align(x, rois[idx].to(x.dtype), s, scale, self.sampling_ratio, True))
        return out
