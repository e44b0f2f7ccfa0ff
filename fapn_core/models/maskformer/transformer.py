"""MaskFormer's DETR-style transformer: sine position embedding, (optional) encoder and the query decoder.

Numerics follow the official code: ``nn.MultiheadAttention`` (sequence-first; ``need_weights=False``, so PyTorch
runs it through ``scaled_dot_product_attention``: the fixtures still match within their tolerances), post-norm layers by default, queries starting at zero with the learned query
embedding as their position, positions on queries/keys only, and the shared final ``decoder.norm`` applied to
every intermediate output (deep supervision).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """DETR's normalised sine embedding: channels ``[0, C/2)`` encode y, ``[C/2, C)`` x, sin/cos interleaved.

    ``i = 1..H`` (cumsum), ``ŷ = i / (H + 1e-6) · 2π``; ``dim_t[k] = T^(2⌊k/2⌋ / (C/2))``.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats, self.temperature, self.normalize = num_pos_feats, temperature, normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def _with_pos(t: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return t if pos is None else t + pos


class EncoderLayer(nn.Module):
    """Self-attention + FFN over the flattened feature map (post-norm unless ``normalize_before``)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalize_before:
            s = self.norm1(src)
            q = k = _with_pos(s, pos)
            src = src + self.dropout1(self.self_attn(q, k, value=s, need_weights=False)[0])
            s = self.norm2(src)
            return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(s)))))
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, need_weights=False)[0]))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the memory, FFN; each followed by add & LayerNorm (post-norm)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None = None,
                query_pos: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalize_before:
            t = self.norm1(tgt)
            q = k = _with_pos(t, query_pos)
            tgt = tgt + self.dropout1(self.self_attn(q, k, value=t, need_weights=False)[0])
            t = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(
                query=_with_pos(t, query_pos), key=_with_pos(memory, pos), value=memory, need_weights=False)[0])
            t = self.norm3(tgt)
            return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t)))))
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, need_weights=False)[0]))
        tgt2 = self.multihead_attn(query=_with_pos(tgt, query_pos), key=_with_pos(memory, pos), value=memory,
                                   need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class TransformerEncoder(nn.Module):
    """``num_layers`` encoder layers (0 in every MaskFormer release: then the memory is the input)."""

    def __init__(self, layer: EncoderLayer, num_layers: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class TransformerDecoder(nn.Module):
    """Decoder layers and the shared final ``norm``; returns (L, Q, B, C): every layer's normed output when
    ``return_intermediate`` (deep supervision), else the last one only (L = 1)."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.Module, return_intermediate: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None = None,
                query_pos: torch.Tensor | None = None) -> torch.Tensor:
        out = tgt
        intermediate = []
        for layer in self.layers:
            out = layer(out, memory, pos=pos, query_pos=query_pos)
            if self.return_intermediate:
                intermediate.append(self.norm(out))
        if not self.return_intermediate:
            return self.norm(out).unsqueeze(0)
        # the official code recomputes norm(out) for the last layer: identical values
        return torch.stack(intermediate)


class Transformer(nn.Module):
    """DETR transformer as MaskFormer modifies it; ``forward`` → (hs (L, B, Q, C), memory (B, C, H, W)).

    Initialisation: Xavier-uniform for every parameter with more than one dimension (official ``_reset_parameters``).
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 0, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, normalize_before: bool = False,
                 return_intermediate_dec: bool = True) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"hidden dim {d_model} is not divisible by {nhead} heads")
        if num_decoder_layers < 1:
            raise ValueError("the transformer decoder needs at least one layer")
        enc = EncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.encoder = TransformerEncoder(enc, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None)
        dec = DecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.decoder = TransformerDecoder(dec, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate_dec)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model, self.nhead = d_model, nhead

    def forward(self, src: torch.Tensor, query_embed: torch.Tensor, pos_embed: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        bs, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, pos=pos_embed)
        hs = self.decoder(tgt, memory, pos=pos_embed, query_pos=query_embed)
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(bs, c, h, w)
