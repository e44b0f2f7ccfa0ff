"""Position head: object centres (one heatmap per thing class) and stuff regions (one per stuff channel).

Official ``PositionHead``: 3 × ``ModulatedDeformConvWithOff`` (3×3, one deformable group, no bias, GroupNorm,
ReLU; offsets and masks predicted from the layer's own input) → ``out_inst`` (K centre logits) and ``out_sem``
(S+1 region logits, channel 0 = "things"), shared over p3..p7. The deformable convs run through the project's
:class:`~fapn_core.models.deform.ModulatedDeformConv` (reference / fast / compiled paths): offset channel ``2k`` is
dy and ``2k+1`` dx of kernel point ``k``, mask ``sigmoid(raw[18 + k])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..deform import ModulatedDeformConv, modulated_deform_conv2d
from ..layers import make_norm
from .encoder import ConvTower


class DeformConvNorm(ModulatedDeformConv):
    """DCNv2 3×3 without bias whose ``conv_offset_mask`` reads the layer's input, then norm and ReLU.

    Parameters: ``weight``, ``conv_offset_mask.{weight,bias}``, ``norm.*`` (official ``offset_mask_conv`` and
    ``dcnv2.{weight,norm}``). Unlike FaPN's DCN, the offset conv keeps PyTorch's default init (official).
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "GN", impl: str = "auto") -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, deformable_groups=1, impl=impl)
        del self.bias
        self.register_parameter("bias", None)
        self.norm = make_norm(norm, out_channels)

    def reset_parameters(self) -> None:
        # detectron2's ModulatedDeformConv: kaiming-uniform weight; offset conv: nn.Conv2d's default init
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)
        self.conv_offset_mask.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        offset, mask = self.split_offset_mask(self.conv_offset_mask(x))
        y = modulated_deform_conv2d(x, offset, mask, self.weight, None, stride=self.stride, padding=self.padding,
                                    dilation=self.dilation, impl=self.impl)
        if self.norm is not None:
            y = self.norm(y)
        return F.relu(y)


class PositionHead(nn.Module):
    """``forward(p) -> (centre_logits (N, K, h, w), region_logits (N, S+1, h, w))``."""

    def __init__(self, in_channels: int, num_thing_classes: int, num_stuff_channels: int, *, conv_dims: int = 256,
                 num_convs: int = 3, norm: str = "GN", deform: bool = True, bias_value: float = -2.19,
                 dcn_impl: str = "auto") -> None:
        super().__init__()
        self.num_convs = num_convs
        if deform:
            for k in range(num_convs):
                self.add_module(f"conv{k + 1}", DeformConvNorm(in_channels if k == 0 else conv_dims, conv_dims,
                                                               norm=norm, impl=dcn_impl))
        else:
            tower = ConvTower(in_channels, conv_dims, num_convs, norm=norm)
            for k in range(num_convs):
                self.add_module(f"conv{k + 1}", getattr(tower, f"conv{k + 1}"))
        self.out_inst = nn.Conv2d(conv_dims, num_thing_classes, 3, padding=1)
        self.out_sem = nn.Conv2d(conv_dims, num_stuff_channels, 3, padding=1)
        for layer in (self.out_inst, self.out_sem):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, bias_value)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for k in range(self.num_convs):
            x = getattr(self, f"conv{k + 1}")(x)
        return self.out_inst(x), self.out_sem(x)

