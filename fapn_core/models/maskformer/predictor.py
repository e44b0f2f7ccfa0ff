"""MaskFormer's ``TransformerPredictor``: queries → class logits (K+1) and mask embeddings dotted with the pixel
decoder's ``mask_features``.

The transformer sees only the **backbone's** ``res5`` (``TRANSFORMER_IN_FEATURE res5``) through ``input_proj``;
the pixel decoder changes ``pred_masks`` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import c2_xavier_fill
from .transformer import PositionEmbeddingSine, Transformer


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class TransformerPredictor(nn.Module):
    """``forward(res5, mask_features)`` → ``{"pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w)}`` at the
    stride of ``mask_features``, plus ``"aux_outputs"`` (one dict per earlier decoder layer) with deep
    supervision when ``with_aux``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dropout: float = 0.1,
        dim_feedforward: int = 2048,
        enc_layers: int = 0,
        dec_layers: int = 6,
        pre_norm: bool = False,
        deep_supervision: bool = True,
        mask_dim: int = 256,
        enforce_input_project: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim, nhead=nheads, num_encoder_layers=enc_layers, num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward, dropout=dropout, normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj: nn.Module = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder outputs ``hs`` (L, B, Q, C) for backbone features ``x`` (B, C_in, H, W)."""
        pos = self.pe_layer(x)
        hs, _ = self.transformer(self.input_proj(x), self.query_embed.weight, pos)
        return hs

    def forward(self, x: torch.Tensor, mask_features: torch.Tensor, *, with_aux: bool | None = None
                ) -> dict[str, object]:
        """``with_aux``: also return the earlier layers' outputs (default: in training with deep supervision)."""
        hs = self.decode(x)
        outputs_class = self.class_embed(hs)
        out: dict[str, object] = {"pred_logits": outputs_class[-1]}
        if with_aux is None:
            with_aux = self.training
        if self.aux_loss and with_aux:
            masks = torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(hs), mask_features)
            out["pred_masks"] = masks[-1]
            out["aux_outputs"] = [{"pred_logits": a, "pred_masks": b}
                                  for a, b in zip(outputs_class[:-1], masks[:-1])]
        else:
            out["pred_masks"] = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs[-1]), mask_features)
        return out
