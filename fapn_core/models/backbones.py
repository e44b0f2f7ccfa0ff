"""ResNet-18/34/50/101 backbones returning ``res2..res5`` (strides 4, 8, 16, 32).

Module names follow detectron2's ResNet (``stem.conv1``, ``res3.0.conv2.norm`` …) so that detectron2 and
FaPN-full checkpoints map onto this module by dropping the ``backbone.bottom_up.`` prefix only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conv2dNorm, ShapeSpec, c2_msra_fill

DEPTH_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class BasicStem(nn.Module):
    """7×7 stride-2 conv (no bias) → norm → ReLU → 3×3 stride-2 max-pool."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN") -> None:
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=norm)
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "FrozenBN") -> None:
        super().__init__()
        self.shortcut = (
            Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=norm)
            if in_channels != out_channels else None
        )
        self.conv1 = Conv2dNorm(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=norm)
        self.conv2 = Conv2dNorm(out_channels, out_channels, 3, padding=1, bias=False, norm=norm)
        for m in (self.shortcut, self.conv1, self.conv2):
            if m is not None:
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu_(out)


class BottleneckBlock(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck with a residual (ResNet-50/101).

    ``stride_in_1x1=True`` puts the stride on the first 1×1 conv (MSRA/detectron2 checkpoints);
    ``False`` puts it on the 3×3 conv (torchvision/"ResNet v1.5").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "FrozenBN",
        stride_in_1x1: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.shortcut = (
            Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=norm)
            if in_channels != out_channels else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2dNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False, norm=norm)
        self.conv2 = Conv2dNorm(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
            dilation=dilation, groups=num_groups, bias=False, norm=norm,
        )
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1, bias=False, norm=norm)
        for m in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if m is not None:
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu_(out)


class ResNet(nn.Module):
    """ResNet trunk: ``forward(x) -> {"res2": …, "res5": …}``; ``output_shape()`` describes each output."""

    def __init__(
        self,
        depth: int = 50,
        *,
        norm: str = "FrozenBN",
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        width_per_group: int = 64,
        num_groups: int = 1,
        stride_in_1x1: bool = True,
        res5_dilation: int = 1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth not in DEPTH_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTH_BLOCKS)}, got {depth}")
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation}")
        self.depth = depth
        self.stem = BasicStem(in_channels, stem_out_channels, norm)
        basic = depth in (18, 34)
        if basic and res2_out_channels != stem_out_channels:
            # detectron2 requires this for R18/R34: res2's first block has no shortcut.
            res2_out_channels = stem_out_channels
        in_ch = stem_out_channels
        out_ch = res2_out_channels
        bottleneck = num_groups * width_per_group
        self._shapes: dict[str, ShapeSpec] = {}
        stride = 4
        for idx, n_blocks in enumerate(DEPTH_BLOCKS[depth]):
            name = f"res{idx + 2}"
            dilation = res5_dilation if idx == 3 else 1
            first_stride = 1 if (idx == 0 or (idx == 3 and dilation == 2)) else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                s = first_stride if b == 0 else 1
                if basic:
                    blocks.append(BasicBlock(in_ch, out_ch, stride=s, norm=norm))
                else:
                    blocks.append(
                        BottleneckBlock(
                            in_ch, out_ch, bottleneck_channels=bottleneck, stride=s, num_groups=num_groups,
                            norm=norm, stride_in_1x1=stride_in_1x1, dilation=dilation,
                        )
                    )
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*blocks))
            stride = stride * first_stride
            self._shapes[name] = ShapeSpec(channels=out_ch, stride=stride)
            out_ch *= 2
            bottleneck *= 2
        self.stage_names = tuple(self._shapes)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out: dict[str, torch.Tensor] = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def freeze_stages(backbone: ResNet, freeze_at: int) -> ResNet:
    """detectron2's ``FREEZE_AT``: 1 freezes the stem, 2 the stem and res2, … (``requires_grad=False``)."""
    if not 0 <= freeze_at <= 5:
        raise ValueError(f"freeze_at must be 0..5, got {freeze_at}")
    stages = [backbone.stem] + [getattr(backbone, n) for n in backbone.stage_names]
    for stage in stages[:freeze_at]:
        for p in stage.parameters():
            p.requires_grad_(False)
    return backbone


def build_resnet(depth: int, **kwargs) -> ResNet:
    """ResNet-``depth`` with detectron2's defaults; R18/R34 use 64 res2 channels, R50/R101 256."""
    if depth in (18, 34):
        kwargs.setdefault("res2_out_channels", kwargs.get("stem_out_channels", 64))
    return ResNet(depth, **kwargs)
