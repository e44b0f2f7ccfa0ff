"""MaskFormer's Hungarian matcher (``memory_efficient_forward``): one query per ground-truth segment.

Cost = ``cost_class · (−p[target class]) + cost_mask · focal + cost_dice · dice``, with the ground-truth masks
downsampled (nearest) to the predicted masks' resolution; solved per image by scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M) dice loss between every prediction (N, P) logits and target (M, P) in {0, 1}."""
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * torch.einsum("nc,mc->nm", inputs, targets)
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_focal_cost(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                     ) -> torch.Tensor:
    """(N, M) mean sigmoid focal loss between every prediction (N, P) logits and target (M, P)."""
    hw = inputs.shape[1]
    prob = inputs.sigmoid()
    focal_pos = ((1 - prob) ** gamma) * F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none")
    focal_neg = (prob ** gamma) * F.binary_cross_entropy_with_logits(
        inputs, torch.zeros_like(inputs), reduction="none")
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    loss = torch.einsum("nc,mc->nm", focal_pos, targets) + torch.einsum("nc,mc->nm", focal_neg, 1 - targets)
    return loss / hw


class HungarianMatcher(nn.Module):
    """``forward(outputs, targets)`` → per image ``(query_idx, target_idx)`` int64 tensors (len = min(Q, M))."""

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 20.0, cost_dice: float = 1.0) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs can't be 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice

    def cost_matrix(self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                    tgt_masks: torch.Tensor) -> torch.Tensor:
        """(Q, M) matching cost of one image: ``logits`` (Q, K+1), ``masks`` (Q, h, w) logits, ``labels`` (M,),
        ``tgt_masks`` (M, H, W)."""
        out_prob = logits.softmax(-1)
        cost_class = -out_prob[:, labels]
        tgt = F.interpolate(tgt_masks[:, None].to(masks), size=masks.shape[-2:], mode="nearest")[:, 0].flatten(1)
        out = masks.flatten(1)
        c = self.cost_mask * batch_focal_cost(out, tgt) + self.cost_class * cost_class
        return c + self.cost_dice * batch_dice_cost(out, tgt)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from scipy.optimize import linear_sum_assignment  # lazy: importing the model zoo must not load scipy

        indices = []
        for b, target in enumerate(targets):
            c = self.cost_matrix(outputs["pred_logits"][b].float(), outputs["pred_masks"][b].float(),
                                 target["labels"], target["masks"])
            i, j = linear_sum_assignment(c.cpu().numpy())
            indices.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
        return indices
