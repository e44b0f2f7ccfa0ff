"""Feature pyramids: detectron2's FPN, FaPN (official FAN) and the ablation variants of the paper's table.

All necks take ``{"res2": …, "res5": …}`` and return ``{"p2": …, "p5": …}`` (+ ``"p6"`` when
``top_block=True``), with ``p<L>`` at stride ``2**L``.

Variant names (the paper's ablation table, rows in order):

===================  ==========================================================================================
``fpn``              FPN (detectron2): 1×1 laterals, nearest ×2 top-down sum, 3×3 output convs.
``fpn_extra_conv``   FPN + two extra 3×3 conv+ReLU per level on the fused feature (+4.72 M params at 256 ch).
``fam``              FPN + FAM: FaPN with a plain 1×1 lateral conv instead of the FSM.
``fam_se``           FPN + FAM + SE: the FSM replaced by squeeze-excitation ``conv(x·att)`` (no residual).
``fapn``             FPN + FAM + FSM: the official FaPN (``FeatureAlign_V2`` of FaPN-full).
``deconv_fsm``       FPN + deconv + FSM: learnable ×2 upsampling (4×4 transposed conv) instead of the FAM.
``fam_noref_fsm``    FPN + FAM† + FSM: offsets predicted from the upsampled feature alone (no lateral reference).
===================  ==========================================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform import ModulatedDeformConv
from .layers import ShapeSpec, c2_xavier_fill

NECKS = ("fpn", "fpn_extra_conv", "fam", "fam_se", "fapn", "deconv_fsm", "fam_noref_fsm")
_LEVELS = (2, 3, 4, 5)


def _in_levels(input_shape: dict[str, ShapeSpec]) -> list[int]:
    missing = [f"res{lvl}" for lvl in _LEVELS if f"res{lvl}" not in input_shape]
    if missing:
        raise ValueError(f"neck needs backbone outputs res2..res5; missing {missing}")
    return list(_LEVELS)


def _pyramid_shapes(channels: int, strides: dict[str, int], top_block: bool) -> dict[str, ShapeSpec]:
    """``p2..p5`` (+ ``p6`` at twice p5's stride) with ``channels`` each."""
    shapes = {k: ShapeSpec(channels, s) for k, s in strides.items()}
    if top_block:
        shapes["p6"] = ShapeSpec(channels, strides["p5"] * 2)
    return shapes


def pointwise_sum(terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum_i conv1x1(x_i, w_i)`` without bias; ``w_i`` is (C_out, C_i) or per image (N, C_out, C_i).

    For inputs that are all NCHW- or all channels-last-contiguous this is one (batched) matrix product per term,
    accumulated — no concatenation, no scaled copy of an input, and 2–4× faster than ``F.conv2d`` on a concatenation
    on CPU; the output has the inputs' layout. Mixed layouts go through ``F.conv2d``. Differentiable either way; the
    FLOPs are those of the 1×1 convs.
    """
    # one dtype for all operands: autocast's where it is on (as F.conv2d would run), else the promoted one
    device = terms[0][1].device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = terms[0][1].dtype
        for wt, x in terms:
            dtype = torch.promote_types(torch.promote_types(dtype, wt.dtype), x.dtype)
    terms = [(wt.to(dtype), x.to(dtype)) for wt, x in terms]
    x0 = terms[0][1]
    n, _, h, w = x0.shape
    weights = [wt.expand(n, -1, -1) if wt.dim() == 2 else wt for wt, _ in terms]
    cout = weights[0].shape[1]
    if all(x.is_contiguous() for _, x in terms):  # out (N, C_out, HW) = W (N, C_out, C) @ X (N, C, HW)
        pairs = [(wt, x.flatten(2)) for wt, (_, x) in zip(weights, terms)]
        shape_out, finish = (n, cout, h * w), lambda o: o.view(n, cout, h, w)
    elif all(x.is_contiguous(memory_format=torch.channels_last) for _, x in terms):
        # out (N, HW, C_out) = X (N, HW, C) @ W^T (N, C, C_out), X a view of the NHWC storage
        pairs = [(x.permute(0, 2, 3, 1).reshape(n, h * w, -1), wt.transpose(1, 2)) for wt, (_, x) in zip(weights, terms)]
        shape_out, finish = (n, h * w, cout), lambda o: o.view(n, h, w, cout).permute(0, 3, 1, 2)
    else:
        out = None
        for wt, (_, x) in zip(weights, terms):  # mixed layouts: one grouped conv over the batch (per-image weights)
            y = F.conv2d(x.reshape(1, -1, h, w), wt.reshape(-1, wt.shape[-1], 1, 1), groups=n).view(n, -1, h, w)
            out = y if out is None else out + y
        assert out is not None
        return out
    if torch.is_grad_enabled() and any(t.requires_grad for pair in pairs for t in pair):
        out = torch.bmm(*pairs[0])
        for a, b in pairs[1:]:
            out = torch.baddbmm(out, a, b)
        return finish(out)
    # inference: one GEMM per image and term, accumulated in place (measured faster than batched baddbmm_)
    out = x0.new_empty(shape_out)
    for i in range(n):
        torch.mm(pairs[0][0][i], pairs[0][1][i], out=out[i])
        for a, b in pairs[1:]:
            out[i].addmm_(a[i], b[i])
    return finish(out)


class ConcatPointwise(nn.Conv2d):
    """The FAM's ``offset`` conv: a 1×1 conv (no bias) over ``cat[a, scale·b]``, called as ``forward(a, b)``.

    Computed as ``W_a·a + (scale·W_b)·b`` (:func:`pointwise_sum`) — no concatenated or scaled copy of the inputs;
    scaling by 2 is exact in floating point. An ``nn.Conv2d`` of ``in_a + in_b`` channels, so parameters, state
    dict and initialisation are the official ones.
    """

    def __init__(self, in_a: int, in_b: int, out_channels: int, *, scale_b: float = 2.0) -> None:
        super().__init__(in_a + in_b, out_channels, 1, bias=False)
        self.in_a, self.scale_b = in_a, scale_b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        w = self.weight[:, :, 0, 0]
        return pointwise_sum([(w[:, : self.in_a], a), (w[:, self.in_a:] * self.scale_b, b)])


class FeatureSelection(nn.Module):
    """FSM: ``att = sigmoid(conv_atten(avgpool(x)))``; output ``conv(x + x·att)`` (``residual=False``: SE,
    ``conv(x·att)``). Both 1×1 convs have no bias; ``sigmoid`` is a module so hooks can capture ``att``."""

    def __init__(self, in_channels: int, out_channels: int, *, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv_atten = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        c2_xavier_fill(self.conv_atten)
        c2_xavier_fill(self.conv)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        # avg_pool2d with a full-size kernel, as the official code (x.mean differs by ~3e-7).
        return self.sigmoid(self.conv_atten(F.avg_pool2d(x, x.shape[-2:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.attention(x)
        # conv(x + x·att) = conv with its input channels scaled by (1 + att): a per-image 1×1 weight, no
        # full-resolution products (same math; float32 rounding differs by ~1e-7)
        scale = (1 + att if self.residual else att).flatten(1)  # (N, C_in)
        return pointwise_sum([(self.conv.weight[:, :, 0, 0] * scale[:, None, :], x)])


class Resize(nn.Module):
    """Bilinear resize to a target size (``align_corners=False``); a module so hooks can capture its output."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FeatureAlign(nn.Module):
    """FAM (+FSM) of one pyramid level: official ``FeatureAlign_V2``.

    ``feat_arm = lateral(lateral_feat)``; ``up = resize(top_down)``;
    ``offset_feat = offset(cat[feat_arm, 2·up])`` (or ``up`` alone without location reference);
    output ``relu(DCN(up, offset_feat)) + feat_arm``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        lateral: str = "fsm",
        reference: bool = True,
        deformable_groups: int = 8,
        dcn_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.lateral = _make_lateral(lateral, in_channels, out_channels)
        self.upsample = Resize()
        self.reference = reference
        if reference:
            self.offset = ConcatPointwise(out_channels, out_channels, out_channels, scale_b=2.0)
            c2_xavier_fill(self.offset)
        self.dcn = ModulatedDeformConv(
            out_channels, out_channels, 3, padding=1, deformable_groups=deformable_groups, impl=dcn_impl
        )

    def forward(self, lateral_feat: torch.Tensor, top_down: torch.Tensor) -> torch.Tensor:
        feat_arm = self.lateral(lateral_feat)
        feat_up = self.upsample(top_down, tuple(lateral_feat.shape[-2:]))
        if self.reference:
            offset_feat = self.offset(feat_arm, feat_up)  # conv1x1(cat[feat_arm, 2·up]), fused
        else:
            offset_feat = feat_up
        out = F.relu(self.dcn(feat_up, offset_feat))
        if torch.is_grad_enabled() and (out.requires_grad or feat_arm.requires_grad):
            return out + feat_arm
        return out.add_(feat_arm)  # inference: in place into relu's fresh output (what hooks saw is untouched)


class DeconvFuse(nn.Module):
    """Ablation "FPN + deconv + FSM": a learnable ×2 upsampling (4×4 stride-2 transposed conv) + FSM lateral."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lateral = _make_lateral("fsm", in_channels, out_channels)
        self.up = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1)
        self.upsample = Resize()

    def forward(self, lateral_feat: torch.Tensor, top_down: torch.Tensor) -> torch.Tensor:
        feat_arm = self.lateral(lateral_feat)
        up = self.upsample(self.up(top_down), tuple(lateral_feat.shape[-2:]))
        return up + feat_arm


def _make_lateral(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    if kind == "fsm":
        return FeatureSelection(in_channels, out_channels, residual=True)
    if kind == "se":
        return FeatureSelection(in_channels, out_channels, residual=False)
    if kind == "conv":
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        c2_xavier_fill(conv)
        return conv
    raise ValueError(f"unknown lateral kind {kind!r}")


class FPN(nn.Module):
    """detectron2's FPN (``NORM=""``, ``FUSE_TYPE=sum``), optionally with extra 3×3 convs per level."""

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        out_channels: int = 256,
        *,
        extra_convs: int = 0,
        top_block: bool = True,
    ) -> None:
        super().__init__()
        self.levels = _in_levels(input_shape)
        self.out_channels = out_channels
        self.top_block = top_block
        for lvl in self.levels:
            lateral = nn.Conv2d(input_shape[f"res{lvl}"].channels, out_channels, 1)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"lateral{lvl}", lateral)
            self.add_module(f"output{lvl}", output)
            if extra_convs:
                layers: list[nn.Module] = []
                for _ in range(extra_convs):
                    conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
                    c2_xavier_fill(conv)
                    layers += [conv, nn.ReLU(inplace=True)]
                self.add_module(f"extra{lvl}", nn.Sequential(*layers))
        self.extra_convs = extra_convs
        self._strides = {f"p{lvl}": input_shape[f"res{lvl}"].stride for lvl in self.levels}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return _pyramid_shapes(self.out_channels, self._strides, self.top_block)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        prev = None
        for lvl in reversed(self.levels):
            lat = getattr(self, f"lateral{lvl}")(feats[f"res{lvl}"])
            prev = lat if prev is None else lat + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            fused = getattr(self, f"extra{lvl}")(prev) if self.extra_convs else prev
            out[f"p{lvl}"] = getattr(self, f"output{lvl}")(fused)
        if self.top_block:
            out["p6"] = F.max_pool2d(out["p5"], kernel_size=1, stride=2)
        return {k: out[k] for k in sorted(out)}


class AlignedFPN(nn.Module):
    """FaPN and its FAM/FSM/deconv ablations.

    Official structure: ``lateral5`` (1×1 with bias) gives p5 directly (no output conv); for L = 4, 3, 2
    ``fused_L = align{L}(res_L, fused_{L+1})`` and ``pL = output{L}(fused_L)``; the top-down path carries the
    fused (FAM) output, not ``pL``. ``p6 = max_pool(p5, 1, 2)``.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        out_channels: int = 256,
        *,
        lateral: str = "fsm",
        align: str = "fam",
        deformable_groups: int = 8,
        top_block: bool = True,
        dcn_impl: str = "auto",
    ) -> None:
        super().__init__()
        if align not in ("fam", "fam_noref", "deconv"):
            raise ValueError(f"unknown align kind {align!r}")
        self.levels = _in_levels(input_shape)
        self.out_channels = out_channels
        self.top_block = top_block
        self.align_kind, self.lateral_kind = align, lateral
        top = self.levels[-1]
        self.add_module(f"lateral{top}", nn.Conv2d(input_shape[f"res{top}"].channels, out_channels, 1))
        for lvl in self.levels[:-1]:
            in_ch = input_shape[f"res{lvl}"].channels
            if align == "deconv":
                module: nn.Module = DeconvFuse(in_ch, out_channels)
            else:
                module = FeatureAlign(
                    in_ch, out_channels, lateral=lateral, reference=(align == "fam"),
                    deformable_groups=deformable_groups, dcn_impl=dcn_impl,
                )
            self.add_module(f"align{lvl}", module)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            c2_xavier_fill(output)
            self.add_module(f"output{lvl}", output)
        self._strides = {f"p{lvl}": input_shape[f"res{lvl}"].stride for lvl in self.levels}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return _pyramid_shapes(self.out_channels, self._strides, self.top_block)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        top = self.levels[-1]
        prev = getattr(self, f"lateral{top}")(feats[f"res{top}"])
        out = {f"p{top}": prev}
        for lvl in reversed(self.levels[:-1]):
            prev = getattr(self, f"align{lvl}")(feats[f"res{lvl}"], prev)
            out[f"p{lvl}"] = getattr(self, f"output{lvl}")(prev)
        if self.top_block:
            out["p6"] = F.max_pool2d(out[f"p{top}"], kernel_size=1, stride=2)
        return {k: out[k] for k in sorted(out)}


def build_neck(
    kind: str, input_shape: dict[str, ShapeSpec], out_channels: int = 256, *, top_block: bool = True,
    dcn_impl: str = "auto",
) -> nn.Module:
    """Neck by ablation name (see module docstring)."""
    if kind == "fpn":
        return FPN(input_shape, out_channels, top_block=top_block)
    if kind == "fpn_extra_conv":
        return FPN(input_shape, out_channels, extra_convs=2, top_block=top_block)
    variants = {
        "fam": ("conv", "fam"),
        "fam_se": ("se", "fam"),
        "fapn": ("fsm", "fam"),
        "deconv_fsm": ("fsm", "deconv"),
        "fam_noref_fsm": ("fsm", "fam_noref"),
    }
    if kind not in variants:
        raise ValueError(f"unknown neck {kind!r}; expected one of {NECKS}")
    lateral, align = variants[kind]
    return AlignedFPN(input_shape, out_channels, lateral=lateral, align=align, top_block=top_block,
                      dcn_impl=dcn_impl)
