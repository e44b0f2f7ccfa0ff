"""MaskFormer semantic inference (``SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE False``), in the official order:

1. upsample the mask **logits** bilinearly (``align_corners=False``) to the **padded** input size;
2. class probabilities = softmax over all K+1 entries, then drop "no object" (no renormalisation);
3. ``sem_seg[c] = Σ_q p[q, c] · sigmoid(m_q)`` — a score in [0, Q], not a logit (its argmax is the label);
4. crop to the unpadded image size, then resize bilinearly to the requested output size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_scores(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """``einsum("bqc,bqhw->bchw", softmax(logits)[..., :-1], sigmoid(masks))`` at the masks' resolution."""
    cls = F.softmax(pred_logits, dim=-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", cls, pred_masks.sigmoid())


def semantic_inference(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """(B, K, H_out, W_out) semantic scores from ``pred_logits`` (B, Q, K+1) and mask logits (B, Q, h, w).

    ``padded_size``: the batch tensor's (Hp, Wp); ``image_size``: the unpadded (H, W) shared by the batch;
    ``output_size``: requested size (default ``image_size``).
    """
    masks = F.interpolate(pred_masks, size=tuple(padded_size), mode="bilinear", align_corners=False)
    out = semantic_scores(pred_logits, masks)[..., : image_size[0], : image_size[1]]
    if output_size is not None and tuple(output_size) != tuple(out.shape[-2:]):
        out = F.interpolate(out, size=tuple(output_size), mode="bilinear", align_corners=False)
    return out


def scores_to_probabilities(sem_seg: torch.Tensor, dim: int = 0, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel class distribution from MaskFormer scores: the scores normalised to sum to 1 over classes.

    (A softmax would be wrong: the scores are sums of probabilities, not logits.)
    """
    return sem_seg / sem_seg.sum(dim, keepdim=True).clamp_min(eps)
