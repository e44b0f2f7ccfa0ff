"""The dense parts around the pyramid: P6/P7 from p5, the semantic FPN, coord-convs and the feature encoder.

Module names follow the official ``panopticfcn`` package where they can (``semantic_fpn.p4.2``, ``top_block.p6``);
conv stacks name their layers ``conv1..convN`` (official ``<name>_head_1..N``, see :mod:`.convert`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Conv2dNorm, ShapeSpec, c2_msra_fill, c2_xavier_fill


def with_coords(feat: torch.Tensor) -> torch.Tensor:
    """``cat[feat, rows, cols]`` (official ``coord_conv``): the first added channel runs −1 → 1 down the rows
    (constant along a row), the second −1 → 1 across the columns; both include the end points."""
    n, _, h, w = feat.shape
    rows = torch.linspace(-1, 1, h, device=feat.device, dtype=feat.dtype)
    cols = torch.linspace(-1, 1, w, device=feat.device, dtype=feat.dtype)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))  # (2, h, w): rows first
    return torch.cat([feat, grid.unsqueeze(0).expand(n, -1, -1, -1)], dim=1)


class TopBlockP6P7(nn.Module):
    """``p6 = conv3×3/2(p5)``, ``p7 = conv3×3/2(relu(p6))`` (official ``LastLevelP6P7fromP5``; from the neck's p5)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        c2_xavier_fill(self.p6)
        c2_xavier_fill(self.p7)

    def forward(self, p5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p6 = self.p6(p5)
        return p6, self.p7(F.relu(p6))


class SemanticFPN(nn.Module):
    """Per level ``max(1, log2(stride / common_stride))`` × (conv3×3 → norm → ReLU [→ bilinear ×2]); summed; no
    predictor (official ``SemanticFPN``)."""

    def __init__(self, input_shape: dict[str, ShapeSpec], conv_dims: int, *, common_stride: int = 4,
                 norm: str = "GN", in_features: tuple[str, ...] = ("p2", "p3", "p4", "p5")) -> None:
        super().__init__()
        self.in_features = tuple(in_features)
        self.out_channels = conv_dims
        for name in self.in_features:
            spec = input_shape[name]
            ops: list[nn.Module] = []
            for k in range(max(1, int(math.log2(spec.stride) - math.log2(common_stride)))):
                conv = Conv2dNorm(spec.channels if k == 0 else conv_dims, conv_dims, 3, padding=1, bias=not norm,
                                  norm=norm, activation=F.relu)
                c2_msra_fill(conv)
                ops.append(conv)
                if spec.stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*ops))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = None
        for name in self.in_features:
            y = getattr(self, name)(features[name])
            out = y if out is None else out + y
        assert out is not None
        return out


class ConvTower(nn.Module):
    """[coord-conv →] ``num_convs`` × (conv3×3 → norm → ReLU) named ``conv1..convN`` (official ``SingleHead``
    without deformable convs). Bias only without a norm, as the official code."""

    def __init__(self, in_channels: int, conv_dims: int, num_convs: int, *, norm: str = "", coord: bool = False
                 ) -> None:
        super().__init__()
        self.coord = coord
        self.num_convs = num_convs
        first = in_channels + 2 if coord else in_channels
        for k in range(num_convs):
            self.add_module(f"conv{k + 1}", Conv2dNorm(first if k == 0 else conv_dims, conv_dims, 3, padding=1,
                                                       bias=not norm, norm=norm, activation=F.relu))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coord:
            x = with_coords(x)
        for k in range(self.num_convs):
            x = getattr(self, f"conv{k + 1}")(x)
        return x


class FeatureEncoder(ConvTower):
    """coord-conv → 3 × (conv3×3 with bias → ReLU): the stride-4 ``encode_feat`` (≥ 0) the kernels multiply."""

    def __init__(self, in_channels: int, conv_dims: int = 64, num_convs: int = 3, *, norm: str = "") -> None:
        super().__init__(in_channels, conv_dims, num_convs, norm=norm, coord=True)
        self.out_channels = conv_dims
