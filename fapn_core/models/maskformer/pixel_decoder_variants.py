"""MaskFormer pixel decoders after FaPN's ablation table: one :class:`DecoderSpec` per neck name of
:data:`fapn_core.models.necks.NECKS`.

A variant changes only how a level's lateral is made (``adapter_N``) and how it meets the coarser level
(``align_N`` / ``extra_N``); the rest is the official decoder: ``layer_4`` on res5, ``layer_N`` = 3×3 conv + norm +
ReLU, a norm after every conv but ``mask_features`` (GN in the official configs), outputs ``p2..p5`` and
``mask_features``; the transformer reads the backbone's res5 whatever the decoder.

=================  ==========  ==========================================================================
name               lateral     coarse level meets the lateral by
=================  ==========  ==========================================================================
``fpn``            conv        nearest ×2 + sum (official ``BasePixelDecoder``)
``fapn``           conv        FAM (FaPN-full's ``BasePixelFANDecoder``: FAM without FSM, GN shared with layer_N)
``fpn_extra_conv`` conv        nearest ×2 + sum, then 2 × (3×3 conv + norm + ReLU) before ``layer_N``
``fam``            conv        FAM: the same network as ``fapn`` (FaPN-full's MaskFormer decoder *is* FPN + FAM)
``fam_se``         SE          FAM
``deconv_fsm``     FSM         4×4 stride-2 transposed conv (bilinear resize to odd sizes) + sum
``fam_noref_fsm``  FSM         FAM† (offsets predicted from the upsampled feature alone: no ``offset`` conv)
=================  ==========  ==========================================================================

Laterals: ``conv`` = 1×1 conv + norm (the official ``adapter_N``); ``fsm``/``se`` = FaPN's FSM (``conv(x + x·att)``)
or SE (``conv(x·att)``) in place of the adapter's 1×1 conv, followed by the adapter's norm
(:class:`NormedFeatureSelection`); as in FaPN's ``fan.py`` the attention conv has no norm, and as the adapter there
is no activation. The extra convs count as in ``necks.build_neck`` (two per level), here on the three fused levels.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Conv2dNorm, c2_xavier_fill, make_norm
from ..necks import FeatureSelection, Resize

EXTRA_CONVS = 2  # per fused level, as necks.build_neck's "fpn_extra_conv"


class DecoderSpec(NamedTuple):
    """``lateral``: ``conv`` | ``fsm`` | ``se``; ``fuse``: ``sum`` | ``fam`` | ``fam_noref`` | ``deconv``."""

    lateral: str
    fuse: str
    extra_convs: int = 0


# the releases first: decoder_from_keys names a structure by its first entry here
DECODER_SPECS: dict[str, DecoderSpec] = {
    "fpn": DecoderSpec("conv", "sum"),
    "fapn": DecoderSpec("conv", "fam"),
    "fpn_extra_conv": DecoderSpec("conv", "sum", EXTRA_CONVS),
    "fam": DecoderSpec("conv", "fam"),
    "fam_se": DecoderSpec("se", "fam"),
    "deconv_fsm": DecoderSpec("fsm", "deconv"),
    "fam_noref_fsm": DecoderSpec("fsm", "fam_noref"),
}


class NormedFeatureSelection(FeatureSelection):
    """FSM (or SE with ``residual=False``) as a MaskFormer adapter: ``norm(FSM(x))``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, *, residual: bool = True) -> None:
        super().__init__(in_channels, out_channels, residual=residual)
        self.norm = make_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class MaskFormerDeconvFuse(nn.Module):
    """``forward(feat_l, feat_s)`` = ``resize(deconv(feat_s) → size of feat_l) + feat_l`` (learnable ×2 upsampling:
    4×4 stride-2 transposed conv with bias, as ``necks.DeconvFuse`` without its lateral)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.upsample = Resize()

    def forward(self, feat_l: torch.Tensor, feat_s: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.up(feat_s), tuple(feat_l.shape[-2:])) + feat_l


def make_adapter(kind: str, in_channels: int, conv_dim: int, norm: str) -> nn.Module:
    """The lateral of one level: ``conv`` (official ``adapter_N``: 1×1 conv + norm), ``fsm`` or ``se``."""
    if kind == "conv":
        adapter = Conv2dNorm(in_channels, conv_dim, 1, bias=norm == "", norm=norm)
        c2_xavier_fill(adapter)
        return adapter
    if kind in ("fsm", "se"):
        return NormedFeatureSelection(in_channels, conv_dim, norm, residual=kind == "fsm")
    raise ValueError(f"unknown lateral kind {kind!r}")


def make_extra_convs(n: int, conv_dim: int, norm: str) -> nn.Sequential:
    """``n`` × (3×3 conv + norm + ReLU), convs without bias under a norm."""
    convs = [Conv2dNorm(conv_dim, conv_dim, 3, padding=1, bias=norm == "", norm=norm, activation=F.relu)
             for _ in range(n)]
    for conv in convs:
        c2_xavier_fill(conv)
    return nn.Sequential(*convs)


def decoder_from_keys(keys: Iterable[str]) -> str | None:
    """The decoder name whose modules a native MaskFormer state dict holds (``neck.*`` keys), or ``None``.

    Keys cannot tell FSM from SE (same parameters) nor ``fam`` from ``fapn``: the first registered match is named.
    """
    keys = set(keys)
    attention = "neck.adapter_1.conv_atten.weight" in keys
    if "neck.align_1.up.weight" in keys:
        fuse = "deconv"
    elif "neck.align_1.offset.weight" in keys:
        fuse = "fam"
    elif "neck.align_1.dcn.weight" in keys:
        fuse = "fam_noref"
    else:
        fuse = "sum"
    extra = len({k.split(".")[2] for k in keys if k.startswith("neck.extra_1.")})
    return next((name for name, s in DECODER_SPECS.items()
                 if (s.lateral != "conv") == attention and s.fuse == fuse and s.extra_convs == extra), None)
