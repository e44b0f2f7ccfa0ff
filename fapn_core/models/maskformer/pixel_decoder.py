"""MaskFormer pixel decoders: the official plain one (``fpn``), FaPN-full's (``fapn``: FAM without FSM) and the
other necks of FaPN's ablation table (:mod:`.pixel_decoder_variants`).

All take ``res2..res5`` and return the decoder levels ``{"p2": y1, …, "p5": y4}`` (``conv_dim`` channels at
strides 4…32); ``mask_features(levels["p2"])`` gives the per-pixel embeddings the queries are dotted with. Module
names follow the official ``BasePixelDecoder`` / ``BasePixelFANDecoder`` (``adapter_N``, ``layer_N``,
``mask_features``, ``align_N.offset``; only ``align_N.dcpack_L2`` is called ``align_N.dcn`` here, as in the
other FaPN necks), N = 1, 2, 3 for res2, res3, res4 and ``layer_4`` on res5.

- ``layer_4`` = 3×3 conv + GN + ReLU on res5 (no lateral); ``adapter_N`` = 1×1 conv + GN (no activation);
  ``layer_N`` = 3×3 conv + GN + ReLU; ``mask_features`` = 3×3 conv with bias; convs have no bias under a norm.
- plain: ``yN = layer_N(adapter_N(res) + nearest(y(N+1)))``.
- FaPN: ``yN = layer_N(align_N(adapter_N(res), y(N+1)))`` with ``align_N`` = :class:`MaskFormerFeatureAlign`.
  One GroupNorm **object** is ``align_N.offset.norm`` and ``layer_N.norm`` (two state-dict keys, one parameter).
- variants: ``yN = layer_N(extra_N(fuse(adapter_N(res), y(N+1))))`` with the lateral, fuse and extra convs of
  :data:`~.pixel_decoder_variants.DECODER_SPECS` (an FSM/SE lateral is ``adapter_N``; a fuse module ``align_N``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..deform import ModulatedDeformConv
from ..layers import Conv2dNorm, ShapeSpec, c2_xavier_fill, make_norm
from ..necks import ConcatPointwise, Resize
from .pixel_decoder_variants import DECODER_SPECS, MaskFormerDeconvFuse, make_adapter, make_extra_convs

PIXEL_DECODERS = tuple(DECODER_SPECS)
_IN_FEATURES = ("res2", "res3", "res4", "res5")


class NormedConcatPointwise(ConcatPointwise):
    """FAM ``offset``: ``norm(conv1x1(cat[a, 2·b]))`` (bias-free 1×1 conv, then a norm, no activation)."""

    def __init__(self, in_a: int, in_b: int, out_channels: int, norm: nn.Module | None) -> None:
        super().__init__(in_a, in_b, out_channels, scale_b=2.0)
        self.norm = norm

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = super().forward(a, b)
        return self.norm(x) if self.norm is not None else x


class MaskFormerFeatureAlign(nn.Module):
    """FaPN-full's MaskFormer ``FeatureAlign`` ("Without FSM").

    ``forward(feat_l, feat_s)``: ``feat_up = bilinear(feat_s → size of feat_l)`` (skipped when equal);
    ``offset_feat = offset(feat_l, feat_up)`` = GN(conv1x1(cat[feat_l, 2·feat_up])); output
    ``relu(DCN(feat_up; offsets from offset_feat)) + feat_l``. ``feat_l`` is the adapter's output.
    ``reference=False`` (FAM† of the ablation): no ``offset`` conv, ``offset_feat = feat_up``.
    """

    def __init__(self, channels: int, norm: nn.Module | None, *, reference: bool = True,
                 deformable_groups: int = 8, dcn_impl: str = "auto") -> None:
        super().__init__()
        self.upsample = Resize()
        self.reference = reference
        if reference:
            self.offset = NormedConcatPointwise(channels, channels, channels, norm)
            c2_xavier_fill(self.offset)
        self.dcn = ModulatedDeformConv(channels, channels, 3, padding=1, deformable_groups=deformable_groups,
                                       impl=dcn_impl)

    def forward(self, feat_l: torch.Tensor, feat_s: torch.Tensor) -> torch.Tensor:
        feat_up = self.upsample(feat_s, tuple(feat_l.shape[-2:]))
        out = F.relu(self.dcn(feat_up, self.offset(feat_l, feat_up) if self.reference else feat_up))
        if torch.is_grad_enabled() and (out.requires_grad or feat_l.requires_grad):
            return out + feat_l
        return out.add_(feat_l)  # inference: in place into relu's fresh output


class PixelDecoder(nn.Module):
    """``BasePixelDecoder`` (``kind="fpn"``), ``BasePixelFANDecoder`` (``kind="fapn"``) or an ablation variant
    (``kind`` in :data:`PIXEL_DECODERS`); see module docstring."""

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        kind: str = "fapn",
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        deformable_groups: int = 8,
        dcn_impl: str = "auto",
    ) -> None:
        super().__init__()
        if kind not in PIXEL_DECODERS:
            raise ValueError(f"unknown MaskFormer pixel decoder {kind!r}; expected one of {PIXEL_DECODERS}")
        missing = [f for f in _IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(f"pixel decoder needs backbone outputs res2..res5; missing {missing}")
        self.kind, self.spec, self.conv_dim, self.mask_dim = kind, DECODER_SPECS[kind], conv_dim, mask_dim
        use_bias = norm == ""
        n_levels = len(_IN_FEATURES)
        for idx, name in enumerate(_IN_FEATURES):
            cin = input_shape[name].channels
            if idx == n_levels - 1:
                layer = Conv2dNorm(cin, conv_dim, 3, padding=1, bias=use_bias, norm=norm, activation=F.relu)
                c2_xavier_fill(layer)
                self.add_module(f"layer_{idx + 1}", layer)
                continue
            self.add_module(f"adapter_{idx + 1}", make_adapter(self.spec.lateral, cin, conv_dim, norm))
            layer = Conv2dNorm(conv_dim, conv_dim, 3, padding=1, bias=use_bias, norm="", activation=F.relu)
            c2_xavier_fill(layer)
            output_norm = make_norm(norm, conv_dim)
            # registered before layer_N: the shared GN's canonical name is align_N.offset.norm
            self._add_fuse(idx + 1, output_norm, deformable_groups, dcn_impl)
            if self.spec.extra_convs:
                self.add_module(f"extra_{idx + 1}", make_extra_convs(self.spec.extra_convs, conv_dim, norm))
            layer.norm = output_norm
            self.add_module(f"layer_{idx + 1}", layer)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        c2_xavier_fill(self.mask_features)
        self._strides = {f"p{i + 2}": input_shape[name].stride for i, name in enumerate(_IN_FEATURES)}

    def _add_fuse(self, n: int, output_norm: nn.Module | None, deformable_groups: int, dcn_impl: str) -> None:
        """``align_N`` of a FAM (sharing ``output_norm`` through its ``offset``) or deconv variant."""
        fuse = self.spec.fuse
        if fuse in ("fam", "fam_noref"):
            reference = fuse == "fam"
            self.add_module(f"align_{n}", MaskFormerFeatureAlign(
                self.conv_dim, output_norm if reference else None, reference=reference,
                deformable_groups=deformable_groups, dcn_impl=dcn_impl))
        elif fuse == "deconv":
            self.add_module(f"align_{n}", MaskFormerDeconvFuse(self.conv_dim))

    def output_shape(self) -> dict[str, ShapeSpec]:
        """The decoder levels ``p2..p5`` (``conv_dim`` channels each)."""
        return {k: ShapeSpec(self.conv_dim, s) for k, s in self._strides.items()}

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decoder levels ``{"p2": y1, …, "p5": y4}`` (top-down, coarsest first)."""
        y = self.layer_4(feats["res5"])
        out = {"p5": y}
        for n in (3, 2, 1):
            lat = getattr(self, f"adapter_{n}")(feats[f"res{n + 1}"])
            if self.spec.fuse == "sum":
                fused = lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")
            else:
                fused = getattr(self, f"align_{n}")(lat, y)
            if self.spec.extra_convs:
                fused = getattr(self, f"extra_{n}")(fused)
            y = getattr(self, f"layer_{n}")(fused)
            out[f"p{n + 1}"] = y
        return {k: out[k] for k in sorted(out)}

    def forward_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(mask_features, levels)``: the official ``forward_features`` plus the levels."""
        levels = self(feats)
        return self.mask_features(levels["p2"]), levels
