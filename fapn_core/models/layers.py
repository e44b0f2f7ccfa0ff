"""Small building blocks shared by backbones, necks and heads.

``Conv2dNorm`` mirrors detectron2's ``Conv2d`` wrapper (conv → norm → activation) so that parameter names
(``<conv>.weight``, ``<conv>.norm.weight`` …) line up with official checkpoints without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ShapeSpec:
    """What a feature map looks like: channels and stride relative to the input (detectron2's contract)."""

    channels: int
    stride: int


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers (detectron2 semantics)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            bias = self.bias - self.running_mean * scale
            return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)
        # Same kernel as detectron2 in inference, so official checkpoints reproduce bit-for-bit.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


NORMS = ("FrozenBN", "BN", "GN", "")


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """Norm layer by detectron2-style name: ``FrozenBN``, ``BN``, ``GN`` (32 groups) or ``""`` for none."""
    if norm == "":
        return None
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` with an optional ``norm`` submodule and activation applied after it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        norm: str = "",
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.norm = make_norm(norm, out_channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2 MSRA init (kaiming normal, fan_out, relu) with zero bias, as detectron2."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 Xavier init (kaiming uniform, a=1) with zero bias, as detectron2."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)
