"""Swin Transformer backbone as MaskFormer builds it (``D2SwinTransformer``), returning ``res2..res5``.

Module and parameter names are the official ones (``patch_embed``, ``layers.i.blocks.j.attn.qkv``, ``norm0..3`` …),
so MaskFormer checkpoints load without renaming. The rules that matter at sizes that are not multiples of the
window (checked bit-exactly against the official code on ``reference/maskformer/mini_fapn_swin_maskformer.pt``):

- each block zero-pads ``norm1(x)`` at the bottom/right to a multiple of the window **before** the cyclic shift,
  and the padded tokens take part in attention (they are not masked out);
- the shift mask is built on the padded grid (regions ``[0, Hp-ws)``, ``[Hp-ws, Hp-s)``, ``[Hp-s, Hp)``, −100
  across regions), once per stage;
- the window is never clamped to a small grid and the shift is always ``ws // 2`` in odd blocks;
- a stage's output (``res{i+2}`` through ``norm{i}``) is taken before its PatchMerging.

timm's ``SwinTransformer`` rolls before padding and clamps windows, so it differs at such sizes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ShapeSpec

# (embed_dim, depths, num_heads, window_size) of the official MaskFormer Swin configs
SWIN_VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], int]] = {
    "swint": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swins": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swinb": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swinl": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval or with ``p = 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1 → GELU (erf) → fc2`` (dropouts of the official module are 0 in every MaskFormer config)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, ws, ws, C), windows row-major over the window grid."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, ws, ws, C) → (B, H, W, C)."""
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) int64 index into the (2ws−1)² bias table: ``(dy + ws−1)·(2ws−1) + (dx + ws−1)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def shift_attention_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """(nW, ws², ws²) mask of the shifted windows on the padded grid: 0 within a region, −100 across regions."""
    img_mask = torch.zeros((1, hp, wp, 1), device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)
    mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative-position bias (official ``WindowAttention``)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, *, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        n_ws = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n_ws, n_ws, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class SwinBlock(nn.Module):
    """One Swin block: ``x + attn(window(pad(norm1(x)) rolled))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, *, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], attn_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B, H·W, C) tokens of an H×W grid; ``attn_mask``: the stage's shift mask."""
        b, length, c = x.shape
        h, w = hw
        if length != h * w:
            raise ValueError(f"input has {length} tokens, expected {h}×{w}")
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # pad first, then roll (official order)
        hp, wp = x.shape[1:3]
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=attn_mask if s > 0 else None)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, hp, wp)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        if pad_r > 0 or pad_b > 0:
            x = x[:, :h, :w, :].contiguous()
        x = shortcut + self.drop_path(x.view(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (``x0..x3`` at (0,0), (1,0), (0,1), (1,1)) → LayerNorm(4C) → Linear(4C→2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 == 1 or w % 2 == 1:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``blocks`` (shift 0 in even, ``ws // 2`` in odd blocks) and an optional PatchMerging ``downsample``."""

    def __init__(self, dim: int, depth: int, num_heads: int, *, window_size: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: float | None, drop: float, attn_drop: float,
                 drop_path: Sequence[float], downsample: bool) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size=window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                      drop_path=drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """→ (stage output before merging, next stage's input, its grid size)."""
        h, w = hw
        ws = self.window_size
        mask = shift_attention_mask(math.ceil(h / ws) * ws, math.ceil(w / ws) * ws, ws, self.shift_size, x.device)
        mask = mask.to(x.dtype)
        for blk in self.blocks:
            x = blk(x, hw, mask)
        if self.downsample is None:
            return x, x, hw
        return x, self.downsample(x, hw), ((h + 1) // 2, (w + 1) // 2)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv (input zero-padded to a multiple), then LayerNorm over channels."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, patch_norm: bool = True) -> None:
        super().__init__()
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if w % p:
            x = F.pad(x, (0, p - w % p))
        if h % p:
            x = F.pad(x, (0, 0, 0, p - h % p))
        x = self.proj(x)
        if self.norm is not None:
            wh, ww = x.shape[-2:]
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(-1, self.embed_dim, wh, ww)
        return x


class SwinTransformer(nn.Module):
    """MaskFormer's ``D2SwinTransformer`` (APE off, as in every MaskFormer config): ``forward(x) -> res2..res5``.

    Official initialisation: PyTorch defaults for Linear/LayerNorm/Conv (the official ``init_weights`` builds an
    init function but never applies it) and trunc-normal(0.02) bias tables; stochastic depth rises linearly from 0
    to ``drop_path_rate`` over all blocks.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        patch_norm: bool = True,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages (res2..res5); got depths {depths}, heads {num_heads}")
        for i, heads in enumerate(num_heads):
            if (embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i}: {embed_dim * 2**i} channels not divisible by {heads} heads")
        self.embed_dim, self.window_size, self.patch_size = embed_dim, window_size, patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(SwinStage(
                embed_dim * 2**i, depth, num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]): sum(depths[: i + 1])], downsample=i < len(depths) - 1,
            ))
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        for i, c in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(c))
        self.stage_names = tuple(f"res{i + 2}" for i in range(len(depths)))
        self._shapes = {name: ShapeSpec(c, patch_size * 2**i)
                        for i, (name, c) in enumerate(zip(self.stage_names, self.num_features))}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"Swin takes (N, C, H, W); got {tuple(x.shape)}")
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs: dict[str, torch.Tensor] = {}
        for i, (name, layer) in enumerate(zip(self.stage_names, self.layers)):
            out, x, next_hw = layer(x, hw)
            out = getattr(self, f"norm{i}")(out)
            outs[name] = out.view(-1, hw[0], hw[1], self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            hw = next_hw
        return outs


def build_swin(variant: str | None = None, **kwargs) -> SwinTransformer:
    """A Swin backbone by variant (``swint``, ``swins``, ``swinb``, ``swinl``) and/or explicit sizes."""
    if variant is not None:
        if variant not in SWIN_VARIANTS:
            raise ValueError(f"unknown Swin variant {variant!r}; expected one of {sorted(SWIN_VARIANTS)}")
        dim, depths, heads, ws = SWIN_VARIANTS[variant]
        kwargs = {"embed_dim": dim, "depths": depths, "num_heads": heads, "window_size": ws, **kwargs}
    return SwinTransformer(**kwargs)


def swin_variant(embed_dim: int, depths: Sequence[int], num_heads: Sequence[int]) -> str | None:
    """The variant name (``swinl`` …) of these sizes, ignoring the window; ``None`` if none fits."""
    for name, (dim, d, h, _) in SWIN_VARIANTS.items():
        if dim == embed_dim and tuple(d) == tuple(depths) and tuple(h) == tuple(num_heads):
            return name
    return None
