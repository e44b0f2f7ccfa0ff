"""Kernel head: one kernel per cell of p3..p7, shared over the levels (official ``KernelHead``).

coord-conv → ``num_convs`` × (conv3×3 without bias → GroupNorm → ReLU) → ``out_conv`` (3×3 with bias, no
activation). The thing and stuff generators turn the kernels at selected cells into mask kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoder import ConvTower


class KernelHead(ConvTower):
    """``forward(p) -> kernels (N, conv_dims, h, w)``."""

    def __init__(self, in_channels: int, conv_dims: int = 256, num_convs: int = 3, *, norm: str = "GN") -> None:
        super().__init__(in_channels, conv_dims, num_convs, norm=norm, coord=True)
        self.out_conv = nn.Conv2d(conv_dims, conv_dims, 3, padding=1)
        nn.init.normal_(self.out_conv.weight, std=0.01)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_conv(super().forward(x))
