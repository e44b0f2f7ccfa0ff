"""detectron2's ``DefaultAnchorGenerator``: one size per level, aspect ratios h/w, centred on grid corners."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(len(sizes)·len(ratios), 4) XYXY anchors centred on 0: ``w = sqrt(s²/r)``, ``h = r·w``; not rounded."""
    out = []
    for size in sizes:
        area = float(size) ** 2
        for r in aspect_ratios:
            w = math.sqrt(area / r)
            h = r * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Anchors per level over the padded feature grid, flattened as ``(y·W + x)·A + a``.

    ``offset`` 0.0 (detectron2's default) puts cell (y, x)'s anchors at ``(x·stride, y·stride)``.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"{len(sizes)} anchor size groups for {len(strides)} feature levels")
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)
        for i, s in enumerate(sizes):
            self.register_buffer(f"cell{i}", cell_anchors(s, aspect_ratios), persistent=False)
        self.num_anchors = len(sizes[0]) * len(aspect_ratios)

    def cells(self) -> list[torch.Tensor]:
        return [getattr(self, f"cell{i}") for i in range(len(self.strides))]

    def forward(self, grid_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """One (Hi·Wi·A, 4) anchor tensor per level for feature maps of ``grid_sizes`` (Hi, Wi)."""
        out = []
        for (h, w), stride, base in zip(grid_sizes, self.strides, self.cells()):
            sx = torch.arange(self.offset * stride, w * stride, step=stride, dtype=torch.float32, device=base.device)
            sy = torch.arange(self.offset * stride, h * stride, step=stride, dtype=torch.float32, device=base.device)
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack((xx, yy, xx, yy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return out
